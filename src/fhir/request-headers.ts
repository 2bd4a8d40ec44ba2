/**
 * Request headers for classification: one map of lower-case names, single-valued and repeated
 * framing headers, body framing (Content-Length, Transfer-Encoding, Content-Encoding), media
 * types, the response format (`_format`, Accept), `Prefer`, and `If-None-Exist` criteria.
 */

import { ProxyError } from '../http/errors.js';
import type { FhirInteraction, SearchParam } from './interaction.js';
import { parseQuery } from './query.js';
import { bad, notAcceptable, unsupportedMedia } from './request-errors.js';

/** Headers that must appear at most once: two copies are read differently by different components. */
const SINGLE_HEADERS = new Set([
  'content-type',
  'content-length',
  'content-encoding',
  'transfer-encoding',
  'if-none-exist',
  'host',
  'authorization',
]);

/** Request headers by lower-case name, every value kept. */
export type Headers = Map<string, string[]>;

/** The headers as one map of lower-case names (repeated names merged, nothing dropped). */
export function lowerHeaders(h: Record<string, string | string[] | undefined>): Headers {
  const out: Headers = new Map();
  for (const [k, v] of Object.entries(h)) {
    if (v === undefined) continue;
    const key = k.toLowerCase();
    const list = out.get(key) ?? [];
    if (Array.isArray(v)) list.push(...v);
    else list.push(v);
    out.set(key, list);
  }
  return out;
}

/** A single-valued header; two different values (or two copies of a framing header) are refused. */
export function header(headers: Headers, name: string): string | undefined {
  const values = headers.get(name);
  if (values === undefined || values.length === 0) return undefined;
  if (values.length > 1) throw bad(`The ${name} header is repeated.`);
  return values[0];
}

/** Refuses a repeated framing header that Node would have dropped or joined. */
export function checkRawHeaders(raw: readonly string[] | undefined): void {
  if (raw === undefined) return;
  const seen = new Set<string>();
  for (let i = 0; i < raw.length; i += 2) {
    const name = (raw[i] ?? '').toLowerCase();
    if (SINGLE_HEADERS.has(name)) {
      if (seen.has(name)) throw bad(`The ${name} header is repeated.`);
      seen.add(name);
    }
  }
}

/** Checks framing headers against the body actually received; returns the body size in bytes. */
export function checkFraming(body: Buffer | string | undefined, headers: Headers, max: number): number {
  const bytes = body === undefined ? 0 : typeof body === 'string' ? Buffer.byteLength(body) : body.length;
  if (bytes > max) {
    throw new ProxyError('ERR_REQUEST_TOO_LARGE', `The request body is larger than the ${max} bytes caregate accepts.`, {
      issue: 'too-costly',
    });
  }
  const cl = header(headers, 'content-length');
  const te = header(headers, 'transfer-encoding');
  if (cl !== undefined && te !== undefined) throw bad('Content-Length and Transfer-Encoding together are ambiguous.');
  if (te !== undefined && te.trim().toLowerCase() !== 'chunked') throw bad('Only chunked transfer encoding is accepted.');
  if (cl !== undefined && (!/^\d{1,15}$/.test(cl) || Number(cl) !== bytes)) {
    throw bad('Content-Length does not match the body.');
  }
  const ce = header(headers, 'content-encoding');
  if (ce !== undefined && ce.trim().toLowerCase() !== 'identity') {
    throw unsupportedMedia('Compressed request bodies are not accepted.');
  }
  return bytes;
}

/** A media type, lower case, with its parameters. */
interface MediaType {
  type: string;
  params: Map<string, string>;
}

/** Parses `type/subtype; k=v`; `undefined` when malformed or a parameter repeats. */
export function parseMediaType(value: string): MediaType | undefined {
  const parts = value.split(';');
  const type = (parts[0] ?? '').trim().toLowerCase();
  if (!/^[a-z0-9!#$&^_.+-]+\/[a-z0-9!#$&^_.+*-]+$/.test(type) && type !== '*/*') return undefined;
  const params = new Map<string, string>();
  for (const p of parts.slice(1)) {
    const eq = p.indexOf('=');
    if (eq === -1) {
      if (p.trim() === '') continue;
      return undefined;
    }
    const k = p.slice(0, eq).trim().toLowerCase();
    let v = p.slice(eq + 1).trim();
    if (v.length >= 2 && v.startsWith('"') && v.endsWith('"')) v = v.slice(1, -1);
    if (params.has(k)) return undefined;
    params.set(k, v);
  }
  return { type, params };
}

const JSON_FORMATS = new Set(['json', 'application/json', 'application/fhir+json', 'application/json+fhir']);
const XML_FORMATS = new Set(['xml', 'text/xml', 'application/xml', 'application/fhir+xml', 'application/xml+fhir']);

/** Removes `_format` and `_pretty` from the parameters; returns the format `_format` asked for. */
export function consumeFormatParams(params: SearchParam[]): { params: SearchParam[]; format: 'json' | 'xml' | undefined } {
  let format: 'json' | 'xml' | undefined;
  const rest: SearchParam[] = [];
  for (const p of params) {
    if (p.name === '_pretty' && p.modifier === undefined) continue;
    if (p.name !== '_format') {
      rest.push(p);
      continue;
    }
    if (p.modifier !== undefined) throw bad('_format takes no modifier.');
    const f = formatOf(p.value);
    if (f === undefined) throw notAcceptable();
    if (format !== undefined && format !== f) throw bad('Conflicting _format parameters.');
    format = f;
  }
  return { params: rest, format };
}

function formatOf(value: string): 'json' | 'xml' | undefined {
  // `+` in `application/fhir+json` arrives as a space when the client did not encode it.
  const v = (value.split(';')[0] ?? '').trim().toLowerCase().replace(' ', '+');
  if (JSON_FORMATS.has(v)) return 'json';
  if (XML_FORMATS.has(v)) return 'xml';
  return undefined;
}

/**
 * Whether Accept names a FHIR format (JSON or XML) itself, rather than only other types or
 * wildcards: a Binary asked for without one is answered in its own content type.
 */
export function acceptNamesFhirFormat(accept: string | undefined): boolean {
  if (accept === undefined || accept.trim() === '') return true;
  return accept.split(',').some((range) => {
    const media = parseMediaType(range);
    return media !== undefined && media.params.get('q') !== '0' && formatOf(media.type) !== undefined;
  });
}

/** Picks the response format from Accept: the supported range with the highest q, JSON on ties. */
export function formatFromAccept(accept: string | undefined): 'json' | 'xml' {
  if (accept === undefined || accept.trim() === '') return 'json';
  let best: { format: 'json' | 'xml'; q: number } | undefined;
  for (const range of accept.split(',')) {
    if (range.trim() === '') continue;
    const media = parseMediaType(range);
    if (media === undefined) continue;
    const qs = media.params.get('q');
    const q = qs === undefined ? 1 : /^(0(\.\d{0,3})?|1(\.0{0,3})?)$/.test(qs) ? Number(qs) : 0;
    if (q === 0) continue;
    const f =
      media.type === '*/*' || media.type === 'application/*' ? 'json' : formatOf(media.type);
    if (f === undefined) continue;
    if (best === undefined || q > best.q) best = { format: f, q };
  }
  if (best === undefined) throw notAcceptable();
  return best.format;
}

const PREFER_RETURN = new Set(['minimal', 'representation', 'OperationOutcome']);
const PREFER_HANDLING = new Set(['strict', 'lenient']);

/** The `Prefer` values caregate acts on; a known preference with an unknown value is refused. */
export function parsePrefer(values: string[] | undefined): FhirInteraction['prefer'] {
  const prefer: FhirInteraction['prefer'] = {};
  for (const token of (values ?? []).flatMap((v) => v.split(','))) {
    const t = token.trim();
    if (t === '') continue;
    const eq = t.indexOf('=');
    const key = (eq === -1 ? t : t.slice(0, eq)).trim().toLowerCase();
    let value = eq === -1 ? '' : t.slice(eq + 1).trim();
    if (value.length >= 2 && value.startsWith('"') && value.endsWith('"')) value = value.slice(1, -1);
    if (key === 'return') {
      if (!PREFER_RETURN.has(value)) throw bad('Prefer: return takes minimal, representation or OperationOutcome.');
      if (prefer.return !== undefined && prefer.return !== value) throw bad('Conflicting Prefer: return values.');
      prefer.return = value;
    } else if (key === 'handling') {
      if (!PREFER_HANDLING.has(value)) throw bad('Prefer: handling takes strict or lenient.');
      if (prefer.handling !== undefined && prefer.handling !== value) throw bad('Conflicting Prefer: handling values.');
      prefer.handling = value;
    } else if (key === 'respond-async') {
      prefer.respondAsync = true;
    }
    // Other preferences are not forwarded (the upstream request is rebuilt), so they are ignored.
  }
  return prefer;
}

/** Conditional criteria (`If-None-Exist`, `ifNoneExist`): a non-empty query. */
export function parseCriteria(raw: string): SearchParam[] {
  const q = raw.startsWith('?') ? raw.slice(1) : raw;
  const params = parseQuery(q);
  if (params.length === 0) throw bad('Conditional criteria are empty.');
  return params;
}
