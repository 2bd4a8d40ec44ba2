/**
 * Minimal `Reflect` metadata polyfill (the subset of the `reflect-metadata` API that tsyringe
 * uses). `@peculiar/x509` depends on tsyringe, which refuses to load without it; the project has no
 * `reflect-metadata` package, so this module supplies the five functions on the global `Reflect`.
 * Imported for its side effect by `x509.ts` only, before `@peculiar/x509` is evaluated.
 *
 * It only adds functions that are missing, so a real polyfill loaded earlier wins.
 */

type Key = unknown;
type Target = object;
type Prop = string | symbol | undefined;

interface ReflectMetadataApi {
  defineMetadata(key: Key, value: unknown, target: Target, prop?: Prop): void;
  getOwnMetadata(key: Key, target: Target, prop?: Prop): unknown;
  hasOwnMetadata(key: Key, target: Target, prop?: Prop): boolean;
  getMetadata(key: Key, target: Target, prop?: Prop): unknown;
  hasMetadata(key: Key, target: Target, prop?: Prop): boolean;
  metadata(key: Key, value: unknown): (target: Target, prop?: Prop) => void;
}

const store = new WeakMap<Target, Map<Prop, Map<Key, unknown>>>();

function table(target: Target, prop: Prop, create: boolean): Map<Key, unknown> | undefined {
  let byProp = store.get(target);
  if (!byProp) {
    if (!create) return undefined;
    byProp = new Map();
    store.set(target, byProp);
  }
  let byKey = byProp.get(prop);
  if (!byKey) {
    if (!create) return undefined;
    byKey = new Map();
    byProp.set(prop, byKey);
  }
  return byKey;
}

const api: ReflectMetadataApi = {
  defineMetadata(key, value, target, prop) {
    table(target, prop, true)!.set(key, value);
  },
  getOwnMetadata(key, target, prop) {
    return table(target, prop, false)?.get(key);
  },
  hasOwnMetadata(key, target, prop) {
    return table(target, prop, false)?.has(key) ?? false;
  },
  getMetadata(key, target, prop) {
    for (let o: Target | null = target; o; o = Object.getPrototypeOf(o) as Target | null) {
      const t = table(o, prop, false);
      if (t?.has(key)) return t.get(key);
    }
    return undefined;
  },
  hasMetadata(key, target, prop) {
    for (let o: Target | null = target; o; o = Object.getPrototypeOf(o) as Target | null) {
      if (table(o, prop, false)?.has(key)) return true;
    }
    return false;
  },
  metadata(key, value) {
    return (target, prop) => api.defineMetadata(key, value, target, prop);
  },
};

const reflect = Reflect as unknown as Partial<ReflectMetadataApi>;
for (const name of Object.keys(api) as (keyof ReflectMetadataApi)[]) {
  if (typeof reflect[name] !== 'function') Object.assign(reflect, { [name]: api[name] });
}
