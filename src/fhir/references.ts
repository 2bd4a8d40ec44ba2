import { ProxyError } from '../http/errors.js';
import { FHIR_ID, TYPE_NAME, isObject } from './types.js';

/** A literal reference to a resource on the local server. */
export interface ParsedReference {
  type: string;
  id: string;
  version?: string;
}

/** The fields of a FHIR `Reference`. */
export interface ReferenceLike {
  id?: unknown;
  extension?: unknown;
  reference?: unknown;
  type?: unknown;
  identifier?: unknown;
  display?: unknown;
}

/** What a `Reference` points at, as far as the proxy can tell without fetching anything. */
export type ReferenceTarget =
  /** `Type/id[/_history/v]`, relative or under one of the local bases. */
  | ({ kind: 'local' } & ParsedReference)
  /** `#id` (or `#` for the container itself): a contained resource. */
  | { kind: 'contained'; id: string }
  /** `urn:uuid:` / `urn:oid:`: another entry of the same transaction. */
  | { kind: 'urn'; value: string }
  /** An absolute URL that is not under a local base: another server, unknown content. */
  | { kind: 'external' }
  /** No literal reference: identifier-only or display-only. */
  | { kind: 'logical'; type: string | undefined }
  /** Anything else: conditional references, malformed strings, `type` contradicting the reference. */
  | { kind: 'invalid' };

const RELATIVE = /^([A-Z][A-Za-z]{1,63})\/([A-Za-z0-9\-.]{1,64})(?:\/_history\/([A-Za-z0-9\-.]{1,64}))?$/;

/**
 * Parses a literal reference: `Type/id`, `Type/id/_history/vid`, or the same under one of
 * `localBases` (absolute URLs, compared exactly, trailing slash ignored). Returns undefined for
 * everything else: other servers, contained (`#x`), `urn:`, conditional or malformed references.
 *
 * Why exact string comparison of bases: URL normalisation (case, default ports, dot segments,
 * percent-encoding) is where two components disagree; a base that is not byte-identical is simply
 * not local, and callers treat it as undetermined.
 */
export function parseReference(ref: string, localBases: readonly string[]): ParsedReference | undefined {
  let rel = ref;
  if (!RELATIVE_START.test(ref)) {
    rel = '';
    for (const base of localBases) {
      const b = base.endsWith('/') ? base.slice(0, -1) : base;
      if (b !== '' && ref.length > b.length + 1 && ref.startsWith(b) && ref.charCodeAt(b.length) === 0x2f) {
        rel = ref.slice(b.length + 1);
        break;
      }
    }
    if (rel === '') return undefined;
  }
  const m = RELATIVE.exec(rel);
  if (!m) return undefined;
  const [, type, id, version] = m as unknown as [string, string, string, string | undefined];
  if (isDots(id) || (version !== undefined && isDots(version))) return undefined;
  return version === undefined ? { type, id } : { type, id, version };
}

const RELATIVE_START = /^[A-Z][A-Za-z]{1,63}\//;

function isDots(s: string): boolean {
  return /^\.+$/.test(s);
}

/**
 * Says what a Reference object points at. A `type` element that contradicts the literal reference
 * makes it invalid (two readers could follow different ones).
 */
export function classifyReference(ref: ReferenceLike, localBases: readonly string[]): ReferenceTarget {
  const declared = ref.type;
  if (declared !== undefined && (typeof declared !== 'string' || !TYPE_NAME.test(declared))) return { kind: 'invalid' };
  const literal = ref.reference;
  if (literal === undefined) return { kind: 'logical', type: declared };
  if (typeof literal !== 'string') return { kind: 'invalid' };
  if (literal.startsWith('#')) {
    const id = literal.slice(1);
    return id === '' || FHIR_ID.test(id) ? { kind: 'contained', id } : { kind: 'invalid' };
  }
  if (/^urn:(uuid|oid):[A-Za-z0-9\-.]+$/.test(literal)) return { kind: 'urn', value: literal };
  const parsed = parseReference(literal, localBases);
  if (parsed) {
    if (declared !== undefined && declared !== parsed.type) return { kind: 'invalid' };
    return { kind: 'local', ...parsed };
  }
  if (/^https?:\/\//i.test(literal)) return { kind: 'external' };
  return { kind: 'invalid' };
}

const REFERENCE_KEYS = new Set(['id', 'extension', 'reference', 'type', 'identifier', 'display']);

/**
 * Whether `value` has the shape of a FHIR Reference: only Reference fields, and a literal
 * `reference`, an `identifier` object or a string `type`. Display-only objects are not counted:
 * they cannot be told apart from a Coding with only a display, and point at nothing.
 */
export function isReferenceLike(value: unknown): value is ReferenceLike {
  if (!isObject(value)) return false;
  let hasTarget = false;
  for (const k in value) {
    if (!REFERENCE_KEYS.has(k)) return false;
    if (k === 'reference' || (k === 'type' && typeof value.type === 'string') || (k === 'identifier' && isObject(value.identifier))) {
      hasTarget = true;
    }
  }
  return hasTarget;
}

/** Deeper than this, walking stops with an error: no FHIR resource nests that far. */
const MAX_WALK_DEPTH = 512;

/** Path from the walked root to a node: object keys and array indexes. Valid only during the callback. */
export type JsonPath = readonly (string | number)[];

/**
 * Calls `visit` for every Reference-shaped object in `node` at any depth (contained resources,
 * extensions, bundle entries, and references nested in references such as `identifier.assigner`).
 * `path` is the live path from `node`; copy it if you keep it.
 */
export function walkReferences(node: unknown, visit: (ref: ReferenceLike, path: JsonPath) => void): void {
  walkObjects(node, (obj, path) => {
    if (isReferenceLike(obj)) visit(obj, path);
  });
}

/** Calls `visit` for every object (not array) in `node`, parents before children. */
function walkObjects(node: unknown, visit: (obj: Record<string, unknown>, path: JsonPath) => void): void {
  const path: (string | number)[] = [];
  const walk = (v: unknown): void => {
    if (typeof v !== 'object' || v === null) return;
    if (path.length > MAX_WALK_DEPTH) {
      throw new ProxyError('ERR_UNSUPPORTED', 'A resource is nested too deeply to be judged.', { issue: 'too-costly' });
    }
    if (Array.isArray(v)) {
      for (let i = 0; i < v.length; i++) {
        path.push(i);
        walk(v[i]);
        path.pop();
      }
      return;
    }
    const obj = v as Record<string, unknown>;
    visit(obj, path);
    for (const k in obj) {
      path.push(k);
      walk(obj[k]);
      path.pop();
    }
  };
  walk(node);
}

/**
 * Deletes `display` from every Reference-shaped object, and every display-only object
 * (`{display}` with at most `id`/`extension`, which may be a display-only Reference), for which
 * `predicate` says so: a display text names the person referred to. Removing the display of a
 * display-only Coding by mistake loses a label, never data, so the wider net is the safe side.
 * Mutates `node` in place; returns how many displays were removed.
 */
export function removeDisplays(node: unknown, predicate: (ref: ReferenceLike, path: JsonPath) => boolean): number {
  let removed = 0;
  walkObjects(node, (obj, path) => {
    if (obj.display !== undefined && (isReferenceLike(obj) || isDisplayOnly(obj)) && predicate(obj, path)) {
      delete obj.display;
      removed++;
    }
  });
  return removed;
}

function isDisplayOnly(obj: Record<string, unknown>): boolean {
  for (const k in obj) {
    if (k !== 'display' && k !== 'id' && k !== 'extension') return false;
  }
  return true;
}
