import { ProxyError } from '../http/errors.js';

/**
 * Strict JSON, for request bodies and for upstream answers alike.
 *
 * Why hand-written: `JSON.parse` silently keeps the last of two duplicate keys, while other parsers
 * keep the first, merge, or fail. A body such as `{"type":"batch", ..., "type":"transaction"}` or a
 * resource with two `subject` keys is then read one way by the proxy and another way by the FHIR
 * server behind it, or by the client in front of it (threats.md, "Batch and transaction", "Upstream
 * output is untrusted input"). So every body caregate judges goes through this scanner first: it
 * validates the whole text against RFC 8259, compares the *decoded* keys of each object (so `"type"`
 * and `"\u0074ype"` are the same key), refuses lone UTF-16 surrogates (which parsers replace or
 * reject differently, making distinct keys equal elsewhere), and caps nesting depth. Only then is
 * the text handed to the native `JSON.parse`, which is much faster at building values than
 * JavaScript code; the scan itself allocates nothing but one Set per object.
 *
 * The same scan serves both directions; only the error differs: a client's body is the client's
 * fault (400), an upstream body is the upstream's (502, never the body itself).
 */

/** Maximum nesting depth of objects and arrays. FHIR resources are far shallower. */
export const MAX_JSON_DEPTH = 256;

/** What is wrong with a text that is not strict JSON. Never quotes a value. */
export type JsonProblem =
  | { kind: 'not-utf8' }
  | { kind: 'duplicate-key'; pointer: string }
  | { kind: 'syntax'; reason: string; offset: number };

/** Parses strict JSON, or says what is wrong with it. */
export function tryParseJsonStrict(input: string | Buffer): { ok: true; value: unknown } | { ok: false; problem: JsonProblem } {
  let text: string;
  if (typeof input === 'string') text = input;
  else {
    try {
      text = UTF8.decode(input);
    } catch {
      return { ok: false, problem: { kind: 'not-utf8' } };
    }
  }
  const fast = parseWhenPlain(text);
  if (fast !== undefined) return { ok: true, value: fast.value };
  try {
    const dup = scan(text);
    if (dup !== undefined) return { ok: false, problem: { kind: 'duplicate-key', pointer: dup } };
  } catch (err) {
    if (err instanceof NotJson) return { ok: false, problem: { kind: 'syntax', reason: err.reason, offset: err.offset } };
    throw err;
  }
  return { ok: true, value: JSON.parse(text) as unknown };
}

/** A JSON string token (the unrolled form: no backtracking point but at escapes). */
const STRING_TOKEN = /"[^"\\]*(?:\\.[^"\\]*)*"/g;
/** An escaped high or low surrogate: parsers disagree on lone ones (the scanner decides). */
const ESCAPED_SURROGATE = /\\u[dD][89a-fA-F]/;

/**
 * The fast path, taken by every well-formed body: the native parser builds the value, and the text
 * is proven to hold no duplicate key by counting its key separators (the colons outside strings)
 * against the members of the value built (a duplicate key leaves one member for two colons). Any
 * doubt (a syntax error, a duplicate, an escaped surrogate, `__proto__`, excessive depth) returns
 * undefined, and the scanner below decides and says what is wrong. Both give the same answer; this
 * one costs about half as much on a resource and a tenth as much on a large Bundle.
 *
 * The separators are counted in one of two ways:
 * - a text without any `\u` escape: every colon of the text, less the colons of the strings of the
 *   value built. Without `\u`, no escape decodes to a colon, so each colon of a decoded string is
 *   one literal colon of the text. When the text has no duplicate, the value holds every string of
 *   the text and the difference is the separators, one per member. A duplicate drops a member (one
 *   separator or more, with its nested members) and its strings, whose colons are then left in the
 *   difference too: it exceeds the members of the value, and the check fails. No copy of the
 *   text is made (this one costs about a third of the other on a 100-entry page);
 * - otherwise, the strings are stripped from a copy of the text and its colons are counted.
 */
function parseWhenPlain(text: string): { value: unknown } | undefined {
  if (!isWellFormed(text) || ESCAPED_SURROGATE.test(text)) return undefined;
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch {
    return undefined;
  }
  if (text.indexOf('\\u') === -1) {
    const tally = { colons: 0 };
    const members = tallyMembers(value, 0, tally);
    return members >= 0 && colonsIn(text) - tally.colons === members ? { value } : undefined;
  }
  const members = tallyMembers(value, 0, undefined);
  if (members < 0) return undefined;
  return colonsIn(text.replace(STRING_TOKEN, '')) === members ? { value } : undefined;
}

function colonsIn(s: string): number {
  let n = 0;
  for (let i = s.indexOf(':'); i !== -1; i = s.indexOf(':', i + 1)) n++;
  return n;
}

/**
 * Members of every object in `v`, and when `tally` is given, the colons of its keys and strings
 * added to `tally.colons`; -1 when it is nested too deeply or has a `__proto__` key.
 */
function tallyMembers(v: unknown, depth: number, tally: { colons: number } | undefined): number {
  if (typeof v === 'string') {
    if (tally) tally.colons += colonsIn(v);
    return 0;
  }
  if (v === null || typeof v !== 'object') return 0;
  if (depth >= MAX_JSON_DEPTH) return -1;
  let n = 0;
  if (Array.isArray(v)) {
    for (let i = 0; i < v.length; i++) {
      const c = tallyMembers(v[i], depth + 1, tally);
      if (c < 0) return -1;
      n += c;
    }
    return n;
  }
  const o = v as Record<string, unknown>;
  for (const k in o) {
    if (k === '__proto__') return -1;
    if (tally) tally.colons += colonsIn(k);
    const c = tallyMembers(o[k], depth + 1, tally);
    if (c < 0) return -1;
    n += c + 1;
  }
  return n;
}

/**
 * Parses a client's `text` as JSON, refusing duplicate keys at any depth (`ERR_DUPLICATE_KEYS`, 400)
 * and anything that is not JSON (`ERR_BAD_REQUEST`, 400). Messages name the problem and where it is
 * (a JSON pointer made of key names and indexes), never a value.
 */
export function parseJsonStrict(text: string): unknown {
  const r = tryParseJsonStrict(text);
  if (r.ok) return r.value;
  const p = r.problem;
  if (p.kind === 'duplicate-key') {
    throw new ProxyError('ERR_DUPLICATE_KEYS', `The JSON body has a duplicate key at ${p.pointer}.`, {
      issue: 'structure',
      detail: 'duplicate JSON key',
    });
  }
  if (p.kind === 'not-utf8') throw new ProxyError('ERR_BAD_REQUEST', 'The request body is not valid UTF-8.', { issue: 'structure' });
  throw new ProxyError('ERR_BAD_REQUEST', `The request body is not valid JSON (${p.reason} at offset ${p.offset}).`, {
    issue: 'structure',
  });
}

/**
 * Parses an upstream body with the same strictness as a client's: invalid UTF-8, duplicate keys
 * (a resource with two `subject`s is judged on one patient while the client reads the other),
 * syntax errors and excessive nesting are an upstream fault, `ERR_UPSTREAM_BAD_RESPONSE` (502).
 * `what` names the answer in the log detail (no data).
 */
export function parseUpstreamJson(body: Buffer | string, what = 'upstream body'): unknown {
  const r = tryParseJsonStrict(body);
  if (r.ok) return r.value;
  const p = r.problem;
  const detail =
    p.kind === 'not-utf8' ? `${what}: invalid UTF-8` : p.kind === 'duplicate-key' ? `${what}: duplicate JSON key at ${p.pointer}` : `${what}: not JSON (${p.reason})`;
  throw new ProxyError('ERR_UPSTREAM_BAD_RESPONSE', 'The FHIR server answered with a body caregate cannot read unambiguously.', {
    expose: true,
    detail,
  });
}

/**
 * Whether `text` has an object with a duplicate key at any depth: nested bundles, batch entries,
 * contained resources and extensions included (they are all just objects inside the one text).
 * Throws `ERR_BAD_REQUEST` when `text` is not JSON.
 */
export function hasDuplicateKeys(text: string): boolean {
  try {
    parseJsonStrict(text);
    return false;
  } catch (err) {
    if (err instanceof ProxyError && err.code === 'ERR_DUPLICATE_KEYS') return true;
    throw err;
  }
}

/** Decodes a UTF-8 body, refusing invalid byte sequences (replacement characters differ between parsers). */
export function decodeUtf8Strict(body: Buffer): string {
  try {
    return UTF8.decode(body);
  } catch {
    throw new ProxyError('ERR_BAD_REQUEST', 'The request body is not valid UTF-8.', { issue: 'structure' });
  }
}

const UTF8 = new TextDecoder('utf-8', { fatal: true, ignoreBOM: false });

class NotJson extends Error {
  constructor(
    readonly reason: string,
    readonly offset: number,
  ) {
    super(reason);
  }
}

function notJson(reason: string, at: number): NotJson {
  return new NotJson(reason, at);
}

// Character codes.
const QUOTE = 0x22;
const BACKSLASH = 0x5c;
const COMMA = 0x2c;
const COLON = 0x3a;
const LBRACE = 0x7b;
const RBRACE = 0x7d;
const LBRACKET = 0x5b;
const RBRACKET = 0x5d;
const MINUS = 0x2d;
const PLUS = 0x2b;
const DOT = 0x2e;
const ZERO = 0x30;
const NINE = 0x39;

/** One open container: an object (its keys so far, and the current key) or an array (the current index). */
interface Frame {
  keys: Set<string> | undefined;
  key: string;
  index: number;
}

/**
 * Validates `s` as one JSON text. Returns a JSON pointer to the first duplicate key, or undefined
 * when there is none. Throws `NotJson` on any syntax error.
 */
function scan(s: string): string | undefined {
  if (!isWellFormed(s)) throw notJson('lone surrogate', 0);
  const n = s.length;
  const stack: Frame[] = [];
  let i = skipWs(s, 0);

  // The loop alternates between "a value starts at i" and "a value just ended before i".
  for (;;) {
    // --- a value starts at i
    if (i >= n) throw notJson('unexpected end', i);
    const c = s.charCodeAt(i);
    let opened = false;
    if (c === LBRACE) {
      if (stack.length >= MAX_JSON_DEPTH) throw notJson('nested too deeply', i);
      const frame: Frame = { keys: new Set(), key: '', index: 0 };
      stack.push(frame);
      i = skipWs(s, i + 1);
      if (s.charCodeAt(i) === RBRACE) {
        stack.pop();
        i++;
      } else {
        const r = readKey(s, i, frame);
        if (r < 0) return pointer(stack);
        i = r;
        opened = true;
      }
    } else if (c === LBRACKET) {
      if (stack.length >= MAX_JSON_DEPTH) throw notJson('nested too deeply', i);
      stack.push({ keys: undefined, key: '', index: 0 });
      i = skipWs(s, i + 1);
      if (s.charCodeAt(i) === RBRACKET) {
        stack.pop();
        i++;
      } else {
        opened = true;
      }
    } else if (c === QUOTE) {
      i = skipString(s, i);
    } else if (c === MINUS || (c >= ZERO && c <= NINE)) {
      i = skipNumber(s, i);
    } else if (s.startsWith('true', i)) {
      i += 4;
    } else if (s.startsWith('false', i)) {
      i += 5;
    } else if (s.startsWith('null', i)) {
      i += 4;
    } else {
      throw notJson('unexpected character', i);
    }
    if (opened) continue;

    // --- a value ended before i: close containers or move to the next member
    for (;;) {
      i = skipWs(s, i);
      const top = stack[stack.length - 1];
      if (top === undefined) {
        if (i !== n) throw notJson('trailing characters', i);
        return undefined;
      }
      const d = s.charCodeAt(i);
      if (d === COMMA) {
        i = skipWs(s, i + 1);
        if (top.keys !== undefined) {
          const r = readKey(s, i, top);
          if (r < 0) return pointer(stack);
          i = r;
        } else {
          top.index++;
        }
        break;
      }
      if ((d === RBRACE && top.keys !== undefined) || (d === RBRACKET && top.keys === undefined)) {
        stack.pop();
        i++;
        continue;
      }
      throw notJson(i >= n ? 'unexpected end' : 'unexpected character', i);
    }
  }
}

/**
 * Reads `"key" :` at i into the frame. Returns the index after the colon (and whitespace), or -1
 * when the key is already in the object.
 */
function readKey(s: string, i: number, frame: Frame): number {
  if (s.charCodeAt(i) !== QUOTE) throw notJson('expected a key', i);
  const end = skipString(s, i);
  const raw = s.slice(i + 1, end - 1);
  const key = raw.indexOf('\\') === -1 ? raw : (JSON.parse(s.slice(i, end)) as string);
  // `__proto__` is an own property after JSON.parse, but becomes the prototype as soon as some code
  // copies the object with Object.assign: no FHIR element has that name, so it is simply refused.
  if (key === '__proto__') throw notJson('forbidden key', i);
  const keys = frame.keys as Set<string>;
  frame.key = key;
  if (keys.has(key)) return -1;
  keys.add(key);
  const j = skipWs(s, end);
  if (s.charCodeAt(j) !== COLON) throw notJson('expected a colon', j);
  return skipWs(s, j + 1);
}

/** Backslashes and characters that must be escaped in a JSON string. */
// eslint-disable-next-line no-control-regex
const SPECIAL_IN_STRING = /[\u0000-\u001f\\]/;

/**
 * Returns the index after the closing quote of the string starting at i (which is a quote).
 * Plain runs are skipped with native searches (indexOf, a regex); only escapes are read one by one.
 */
function skipString(s: string, i: number): number {
  let j = i + 1;
  for (;;) {
    const quote = s.indexOf('"', j);
    if (quote === -1) throw notJson('unterminated string', i);
    // Searched within the run only (a search over the rest of the text would make scanning quadratic).
    const k = s.slice(j, quote).search(SPECIAL_IN_STRING);
    if (k === -1) return quote + 1;
    const at = j + k;
    if (s.charCodeAt(at) !== BACKSLASH) throw notJson('control character in string', at);
    j = skipEscape(s, at);
  }
}

/** Validates the escape at i (a backslash); returns the index after it, surrogate pairs included. */
function skipEscape(s: string, i: number): number {
  const e = s.charCodeAt(i + 1);
  if (e !== 0x75 /* u */) {
    if (
      e !== QUOTE &&
      e !== BACKSLASH &&
      e !== 0x2f /* / */ &&
      e !== 0x62 /* b */ &&
      e !== 0x66 /* f */ &&
      e !== 0x6e /* n */ &&
      e !== 0x72 /* r */ &&
      e !== 0x74 /* t */
    ) {
      throw notJson('bad escape', i);
    }
    return i + 2;
  }
  const cp = hex4(s, i + 2);
  if (cp >= 0xdc00 && cp <= 0xdfff) throw notJson('lone surrogate', i);
  if (cp >= 0xd800 && cp <= 0xdbff) {
    // A high surrogate must be followed by an escaped low surrogate: parsers disagree on lone ones.
    const low = s.charCodeAt(i + 6) === BACKSLASH && s.charCodeAt(i + 7) === 0x75 ? hex4(s, i + 8) : -1;
    if (low < 0xdc00 || low > 0xdfff) throw notJson('lone surrogate', i);
    return i + 12;
  }
  return i + 6;
}

function hex4(s: string, i: number): number {
  const h = s.slice(i, i + 4);
  if (!/^[0-9A-Fa-f]{4}$/.test(h)) throw notJson('bad unicode escape', i);
  return parseInt(h, 16);
}

/** Returns the index after the number starting at i. */
function skipNumber(s: string, i: number): number {
  let j = i;
  if (s.charCodeAt(j) === MINUS) j++;
  const first = s.charCodeAt(j);
  if (first === ZERO) {
    j++;
  } else if (first > ZERO && first <= NINE) {
    j = digits(s, j);
  } else {
    throw notJson('bad number', i);
  }
  if (s.charCodeAt(j) === DOT) {
    const k = digits(s, j + 1);
    if (k === j + 1) throw notJson('bad number', i);
    j = k;
  }
  const e = s.charCodeAt(j);
  if (e === 0x65 || e === 0x45) {
    j++;
    const sign = s.charCodeAt(j);
    if (sign === PLUS || sign === MINUS) j++;
    const k = digits(s, j);
    if (k === j) throw notJson('bad number', i);
    j = k;
  }
  return j;
}

function digits(s: string, i: number): number {
  let j = i;
  for (;;) {
    const c = s.charCodeAt(j);
    // Written so that NaN (past the end) stops the loop too.
    if (!(c >= ZERO && c <= NINE)) return j;
    j++;
  }
}

function skipWs(s: string, i: number): number {
  let j = i;
  for (;;) {
    const c = s.charCodeAt(j);
    if (c !== 0x20 && c !== 0x0a && c !== 0x0d && c !== 0x09) return j;
    j++;
  }
}

/** `String.prototype.isWellFormed` (Node 20), not yet in the ES2023 lib typings. */
function isWellFormed(s: string): boolean {
  return (s as unknown as { isWellFormed(): boolean }).isWellFormed();
}

const SAFE_KEY = /^[A-Za-z_$][A-Za-z0-9_\-$]{0,63}$/;

/** A JSON pointer to the current position, with unusual keys masked (they could carry data). */
function pointer(stack: readonly Frame[]): string {
  if (stack.length === 0) return '/';
  return stack
    .map((f) => `/${f.keys === undefined ? String(f.index) : SAFE_KEY.test(f.key) ? f.key : '~'}`)
    .join('');
}
