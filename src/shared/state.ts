import { hkdfSync, randomBytes } from 'node:crypto';
import { LRUCache } from 'lru-cache';
import { Counter, Gauge, type Registry } from 'prom-client';
import { ProxyError } from '../http/errors.js';

/**
 * The state several caregate instances share (`state.mode: redis`), or that one instance keeps in
 * its process (`memory`): break-the-glass grants, the invalidations that relationship writes cause,
 * the key paging links are sealed with, and the contractor pseudonyms issued.
 *
 * What a request reads on the way is always local (a mirror of the grants, the caches, the key):
 * a warm read never waits for Redis. What is written (a grant) goes to Redis first, and reaches the
 * other instances' mirrors by pub/sub. When the mirror cannot be known current, what depends on it
 * fails closed (docs/SHARED-STATE.md).
 */
export interface SharedState {
  readonly mode: 'memory' | 'redis';
  readonly grants: GrantTable;
  readonly bus: InvalidationBus;
  readonly pseudonyms: PseudonymTable;
  /** The key paging links are sealed with, the same on every instance. Throws a 503 while it is not known. */
  pagingKey(): Buffer;
  /** For /readyz. */
  health(): { ok: boolean; reason?: string };
  close(): Promise<void>;
}

/** A break-the-glass grant: one user, one patient, a reason, an end. */
export interface GrantRecord {
  /** `Practitioner/<id>`. */
  user: string;
  /** Patient id (without `Patient/`). */
  patient: string;
  reason: string;
  /** Epoch ms. */
  grantedAt: number;
  /** Epoch ms. */
  until: number;
}

export interface GrantTable {
  /** Stores a grant where every instance sees it. Rejects with a 503 when it cannot: then no grant is open. */
  put(g: GrantRecord): Promise<void>;
  /**
   * The open grants of a user known to this instance. Never more than were opened (grants are only
   * ever added, and end on their own `until`); possibly fewer while the shared state is unreachable.
   */
  open(user: string, now: number): GrantRecord[];
  /** The open grants of a user, known to hold every grant opened anywhere; throws a 503 when they cannot be. */
  confirmed(user: string, now: number): GrantRecord[];
  /** Throws a 503 when a grant cannot be stored now (checked before its alert is recorded). */
  assertWritable(): void;
  /** Every open grant known to this instance (the DIM's "who can see this patient"). */
  all(now: number): GrantRecord[];
}

/**
 * What a write made stale, sent to every instance (local caches are dropped at once, the other
 * instances' on receipt). A cache subscribes to the bus and drops what a message names.
 */
export interface Invalidation {
  /** Every cache is dropped: messages may have been missed (a reconnection, an outage). */
  all?: boolean;
  /** Care-set members: `Practitioner/x`, `PractitionerRole/y`, `Organization/z`. */
  members?: readonly string[];
  /** Principals whose resolution is dropped: `Practitioner/x`. */
  principals?: readonly string[];
  /** Patients (ids) whose cached facts are dropped (e.g. Consent oppositions). */
  patients?: readonly string[];
  /** Caches dropped whole, by name (e.g. `stays`). */
  caches?: readonly string[];
}

export interface InvalidationBus {
  /** Applies at once to this instance's subscribers, then sends to the other instances (never rejects). */
  publish(m: Invalidation): void;
  /** `handler` sees every invalidation, this instance's and the others'. Returns the unsubscribe. */
  subscribe(handler: (m: Invalidation) => void): () => void;
}

/**
 * The contractor pseudonyms issued by every instance (`Type/pseudo` → real id, per engagement), so
 * that one instance can map back a pseudonym another gave. In memory: nothing beyond the process.
 */
export interface PseudonymTable {
  /** Stores issued pseudonyms; rejects with a 503 when it cannot. */
  put(engagement: string, entries: readonly (readonly [key: string, realId: string])[]): Promise<void>;
  /** The real id behind `Type/pseudo`, or undefined when never issued; rejects with a 503 when it cannot be read. */
  get(engagement: string, key: string): Promise<string | undefined>;
}

/** What needs the shared state when it cannot be read or written: counted, and named in the log detail. */
export type SharedNeed = 'grant' | 'confirm' | 'paging' | 'pseudonyms';

const MESSAGES: Record<SharedNeed, string> = {
  grant: 'The break-the-glass grant cannot be opened now: the state caregate instances share is unreachable. No grant was opened; retry shortly.',
  confirm:
    'Access cannot be decided now: break-the-glass grants opened on other caregate instances cannot be read. Retry shortly.',
  paging: 'Paging links cannot be sealed or opened now: the key caregate instances share is not available. Retry shortly.',
  pseudonyms: 'De-identified ids cannot be shared or mapped back now: the state caregate instances share is unreachable. Retry shortly.',
};

/** The metrics of the shared state (the same names in both modes). */
export interface SharedStateMetrics {
  /** 1 while the shared state is reachable and this instance's mirror is current. */
  up: Gauge;
  /** Requests answered 503 because the shared state was needed and not available, by need. */
  unavailable: Counter<'need'>;
  /** Failed Redis operations, by operation. */
  errors: Counter<'operation'>;
  /** Invalidations applied, by origin (`local`, `remote`, `resync`, `outage`). */
  invalidations: Counter<'origin'>;
}

export function sharedStateMetrics(registry: Registry | undefined): SharedStateMetrics {
  const registers = registry ? [registry] : [];
  const m: SharedStateMetrics = {
    up: new Gauge({
      name: 'caregate_shared_state_up',
      help: '1 while the shared state (state.mode) is reachable and this instance holds a current copy; 0 during an outage.',
      registers,
    }),
    unavailable: new Counter({
      name: 'caregate_shared_state_unavailable_total',
      help: 'Requests answered 503 because they needed the shared state and it was unavailable, by need (grant, confirm, paging, pseudonyms).',
      labelNames: ['need'],
      registers,
    }),
    errors: new Counter({
      name: 'caregate_shared_state_errors_total',
      help: 'Failed operations on the shared state (Redis), by operation.',
      labelNames: ['operation'],
      registers,
    }),
    invalidations: new Counter({
      name: 'caregate_cache_invalidations_total',
      help: 'Cache invalidations applied, by origin: local (a write through this instance), remote (another instance), resync and outage (every cache dropped).',
      labelNames: ['origin'],
      registers,
    }),
  };
  for (const need of ['grant', 'confirm', 'paging', 'pseudonyms'] as const) m.unavailable.inc({ need }, 0);
  return m;
}

/** The 503 of a request that needs the shared state and cannot have it (counted). */
export function sharedStateUnavailable(metrics: SharedStateMetrics, need: SharedNeed, detail: string): ProxyError {
  metrics.unavailable.inc({ need });
  return new ProxyError('ERR_SHARED_STATE_UNAVAILABLE', MESSAGES[need], { expose: true, detail, headers: { 'retry-after': '1' } });
}

/** This instance's copy of the open grants: a bounded map, user → patient → the latest grant. */
export interface GrantMirror {
  add(g: GrantRecord): void;
  open(user: string, now: number): GrantRecord[];
  /** Replaces every grant (a resynchronisation). */
  replace(gs: Iterable<GrantRecord>): void;
  /** Every open grant. */
  all(now: number): GrantRecord[];
  readonly size: number;
}

export function createGrantMirror(maxUsers = 50_000): GrantMirror {
  const byUser = new LRUCache<string, Map<string, GrantRecord>>({ max: maxUsers });
  const add = (g: GrantRecord) => {
    let m = byUser.get(g.user);
    if (!m) byUser.set(g.user, (m = new Map()));
    const had = m.get(g.patient);
    // Messages and a resynchronisation may arrive in any order: the grant that ends last wins.
    if (!had || had.until <= g.until) m.set(g.patient, g);
  };
  return {
    add,
    open(user, now) {
      const m = byUser.get(user);
      if (!m) return [];
      for (const [p, g] of m) if (g.until <= now) m.delete(p);
      return [...m.values()];
    },
    replace(gs) {
      byUser.clear();
      for (const g of gs) add(g);
    },
    all(now) {
      const out: GrantRecord[] = [];
      for (const m of byUser.values()) for (const g of m.values()) if (g.until > now) out.push(g);
      return out;
    },
    get size() {
      let n = 0;
      for (const m of byUser.values()) n += m.size;
      return n;
    },
  };
}

/** A grant read from outside the process (Redis), checked field by field; undefined when malformed. */
export function grantFrom(v: unknown): GrantRecord | undefined {
  if (!v || typeof v !== 'object') return undefined;
  const g = v as Record<string, unknown>;
  const ok =
    typeof g.user === 'string' &&
    /^Practitioner\/[A-Za-z0-9\-.]{1,64}$/.test(g.user) &&
    typeof g.patient === 'string' &&
    /^[A-Za-z0-9\-.]{1,64}$/.test(g.patient) &&
    typeof g.reason === 'string' &&
    typeof g.grantedAt === 'number' &&
    typeof g.until === 'number' &&
    Number.isFinite(g.until);
  return ok ? { user: g.user as string, patient: g.patient as string, reason: g.reason as string, grantedAt: g.grantedAt as number, until: g.until as number } : undefined;
}

/** The local bus: handlers called in order, a failing handler does not stop the others. */
export function createLocalBus(onError: (err: unknown) => void): { bus: InvalidationBus; deliver(m: Invalidation): void } {
  const handlers = new Set<(m: Invalidation) => void>();
  const deliver = (m: Invalidation) => {
    for (const h of handlers) {
      try {
        h(m);
      } catch (err) {
        onError(err);
      }
    }
  };
  return {
    deliver,
    bus: {
      publish: deliver,
      subscribe(h) {
        handlers.add(h);
        return () => handlers.delete(h);
      },
    },
  };
}

/**
 * The paging key derived from a configured secret (`state.pagingSecretEnv`): every instance given
 * the same secret seals and opens the same links, and links outlive a restart.
 */
export function pagingKeyFromSecret(secret: Buffer): Buffer {
  return Buffer.from(hkdfSync('sha256', secret, Buffer.alloc(0), 'caregate paging links v1', 32));
}

/** `state.mode: memory`: one instance; grants, invalidations and the paging key live in this process. */
export function createMemoryState(opts: { pagingKey?: Buffer; metrics?: SharedStateMetrics; onError?: (err: unknown) => void } = {}): SharedState {
  const mirror = createGrantMirror();
  const key = opts.pagingKey ?? randomBytes(32);
  const { bus } = createLocalBus(opts.onError ?? (() => undefined));
  opts.metrics?.up.set(1);
  return {
    mode: 'memory',
    grants: {
      async put(g) {
        mirror.add(g);
      },
      open: (user, now) => mirror.open(user, now),
      confirmed: (user, now) => mirror.open(user, now),
      assertWritable() {},
      all: (now) => mirror.all(now),
    },
    bus: {
      publish(m) {
        opts.metrics?.invalidations.inc({ origin: 'local' });
        bus.publish(m);
      },
      subscribe: bus.subscribe,
    },
    pseudonyms: {
      async put() {},
      async get() {
        return undefined;
      },
    },
    pagingKey: () => key,
    health: () => ({ ok: true, reason: 'memory (one instance)' }),
    async close() {},
  };
}
