import { ProxyError } from '../http/errors.js';
import type { BatchEntry, FhirInteraction, InteractionKind, SearchParam } from './interaction.js';
import { decodeUtf8Strict, parseJsonStrict } from './json.js';
import { parseQuery } from './query.js';
import { FHIR_ID, RESOURCE_TYPES, isObject } from './types.js';

/** A request as it reached the proxy, still raw. */
export interface ClassifyInput {
  method: string;
  /** Raw path after the proxy's FHIR base, still percent-encoded (`/Patient/123`). */
  path: string;
  /** Raw query string, without the `?`. */
  query: string;
  headers: Record<string, string | string[] | undefined>;
  /**
   * Raw header list (`IncomingMessage.rawHeaders`), when available: Node silently drops repeated
   * `Content-Type`/`Content-Length` and joins others, so repeated framing headers are only visible here.
   */
  rawHeaders?: readonly string[];
  body?: Buffer | string;
}

export interface ClassifyOptions {
  /** Larger request bodies are refused with 413. */
  maxBodyBytes: number;
  /** Resource types accepted in URLs and bodies (default: every FHIR R4 resource type). */
  knownTypes?: ReadonlySet<string>;
  /**
   * Accept `.` in logical ids and version ids (FHIR allows it). Off by default: some servers and
   * frameworks read `Patient/123.json` as `Patient/123` with a format suffix, so a dotted id can
   * mean two resources. Turn on only for an upstream that keeps dots and has dotted ids.
   */
  allowDotInId?: boolean;
}

type Method = FhirInteraction['method'];

/** Compartments that may be searched as `Compartment/id/Type`. */
export const COMPARTMENT_TYPES: ReadonlySet<string> = new Set([
  'Patient',
  'Encounter',
  'Practitioner',
  'RelatedPerson',
  'Device',
]);

const METHODS: ReadonlySet<string> = new Set(['GET', 'HEAD', 'POST', 'PUT', 'PATCH', 'DELETE']);
const METHOD_OVERRIDE_HEADERS = ['x-http-method-override', 'x-http-method', 'x-method-override'];
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
const OPERATION = /^\$[A-Za-z][A-Za-z0-9\-_]{0,63}$/;
/** Characters allowed in a raw path: unreserved, `%` escapes, `$` (operations), `*` (compartment) and `/`. */
const RAW_PATH = /^[A-Za-z0-9\-._~%$*/]*$/;
/** Characters allowed in a decoded path segment. */
const SEGMENT = /^[A-Za-z0-9\-._$*]+$/;

/** Body as read, before routing decides whether it fits the interaction. */
type Body =
  | { kind: 'none' }
  | { kind: 'json'; media: 'fhir' | 'json-patch'; value: unknown }
  | { kind: 'form'; params: SearchParam[] };

/** Everything routing needs, from a top-level request or from a batch entry. */
interface Request {
  method: Method;
  head: boolean;
  segments: string[];
  params: SearchParam[];
  body: Body;
  ifNoneExist: SearchParam[] | undefined;
  format: 'json' | 'xml';
  prefer: FhirInteraction['prefer'];
  inEntry: boolean;
}

interface Ctx {
  types: ReadonlySet<string>;
  id: RegExp;
}

/**
 * Turns a raw HTTP request into the canonical {@link FhirInteraction} the policy decides on, or
 * throws a {@link ProxyError}. Default deny: every method, path form, header combination, content
 * type and body shape not listed here is refused (threats.md: path tricks, HTTP tricks, search
 * parameters, duplicate JSON keys). Batch and transaction entries are classified recursively.
 */
export function classify(input: ClassifyInput, opts: ClassifyOptions): FhirInteraction {
  const ctx: Ctx = {
    types: opts.knownTypes ?? RESOURCE_TYPES,
    id: opts.allowDotInId ? FHIR_ID : ID_WITHOUT_DOT,
  };
  if (!METHODS.has(input.method)) throw methodNotAllowed(input.method);
  const headers = lowerHeaders(input.headers);
  checkRawHeaders(input.rawHeaders);
  for (const h of METHOD_OVERRIDE_HEADERS) {
    if (headers.has(h)) throw bad('Method-override headers are not accepted.');
  }
  const bodyBytes = checkFraming(input.body, headers, opts.maxBodyBytes);

  const head = input.method === 'HEAD';
  const method = (head ? 'GET' : input.method) as Method;
  const segments = parsePath(input.path);
  let params = parseQuery(input.query);
  const consumed = consumeFormatParams(params);
  params = consumed.params;
  const format = consumed.format ?? formatFromAccept(header(headers, 'accept'));
  const prefer = parsePrefer(headers.get('prefer'));

  const ifNoneExistRaw = header(headers, 'if-none-exist');
  const ifNoneExist = ifNoneExistRaw === undefined ? undefined : parseCriteria(ifNoneExistRaw);
  const body = readBody(input.body, bodyBytes, headers, method);
  return route(
    { method, head, segments, params, body, ifNoneExist, format, prefer, inEntry: false },
    ctx,
  );
}

const ID_WITHOUT_DOT = /^[A-Za-z0-9-]{1,64}$/;

// ---------------------------------------------------------------------------------------------
// Routing

function route(req: Request, ctx: Ctx): FhirInteraction {
  const { method, segments: s } = req;
  const n = s.length;
  const [s0, s1, s2, s3] = s;
  const base = {
    method,
    head: req.head,
    resourceType: undefined as string | undefined,
    id: undefined as string | undefined,
    versionId: undefined as string | undefined,
    operation: undefined as string | undefined,
    operationLevel: undefined as FhirInteraction['operationLevel'],
    compartment: undefined as FhirInteraction['compartment'],
    params: req.params,
    conditional: undefined as SearchParam[] | undefined,
    body: undefined as unknown,
    entries: undefined as BatchEntry[] | undefined,
    path: s.join('/'),
    prefer: req.prefer,
    format: req.format,
  };
  const make = (kind: InteractionKind, extra: Partial<FhirInteraction> = {}): FhirInteraction => {
    const out: FhirInteraction = { ...base, kind, ...extra };
    if (out.head && out.kind !== 'read' && out.kind !== 'vread' && out.kind !== 'capabilities') {
      throw methodNotAllowed('HEAD');
    }
    if (req.ifNoneExist !== undefined && !(out.kind === 'create')) {
      throw bad('If-None-Exist applies to create only.');
    }
    checkTypeParam(out.params, ctx);
    return out;
  };

  // [base]
  if (s0 === undefined) {
    if (method === 'GET') {
      noBody(req);
      return make('search-system');
    }
    if (method === 'POST') return batch(req, ctx, make);
    throw methodNotAllowed(method);
  }
  if (n === 1 && s0 === 'metadata') {
    allow(method, ['GET']);
    noBody(req);
    return make('capabilities');
  }
  if (n === 1 && s0 === '_history') {
    allow(method, ['GET']);
    noBody(req);
    return make('history-system');
  }
  if (n === 1 && s0 === '_search') {
    allow(method, ['POST']);
    return make('search-system', { params: searchBody(req) });
  }
  if (n === 1 && s0.startsWith('$')) {
    return operation(req, make, { operation: opName(s0), operationLevel: 'system' });
  }

  const type = resourceType(s0, ctx);
  if (n === 1) {
    switch (method) {
      case 'GET':
        noBody(req);
        return make('search-type', { resourceType: type });
      case 'POST': {
        noParams(req);
        const body = resourceBody(req, type, undefined, ctx);
        return make('create', { resourceType: type, body, conditional: req.ifNoneExist });
      }
      case 'PUT':
      case 'PATCH':
      case 'DELETE': {
        // Conditional update/patch/delete: the query is the criteria; without one, refused
        // (a criteria-less conditional delete would empty the type).
        if (req.params.length === 0) throw bad(`${method} on a type needs search criteria.`);
        const kind = method === 'PUT' ? 'update' : method === 'PATCH' ? 'patch' : 'delete';
        const body =
          kind === 'update' ? resourceBody(req, type, undefined, ctx) : kind === 'patch' ? patchBody(req) : noBody(req);
        return make(kind, { resourceType: type, body, params: [], conditional: req.params });
      }
    }
  }

  if (n === 2 && s1 === '_search') {
    allow(method, ['POST']);
    return make('search-type', { resourceType: type, params: searchBody(req) });
  }
  if (n === 2 && s1 === '_history') {
    allow(method, ['GET']);
    noBody(req);
    return make('history-type', { resourceType: type });
  }
  if (n === 2 && s1 !== undefined && s1.startsWith('$')) {
    return operation(req, make, { resourceType: type, operation: opName(s1), operationLevel: 'type' });
  }

  const id = logicalId(s1, ctx);
  if (n === 2) {
    switch (method) {
      case 'GET':
        noBody(req);
        return make('read', { resourceType: type, id });
      case 'PUT':
        noParams(req);
        return make('update', { resourceType: type, id, body: resourceBody(req, type, id, ctx) });
      case 'PATCH':
        noParams(req);
        return make('patch', { resourceType: type, id, body: patchBody(req) });
      case 'DELETE':
        noParams(req);
        noBody(req);
        return make('delete', { resourceType: type, id });
      default:
        throw methodNotAllowed(method);
    }
  }

  if (s2 === '_history') {
    allow(method, ['GET']);
    noBody(req);
    if (n === 3) return make('history-instance', { resourceType: type, id });
    if (n === 4) return make('vread', { resourceType: type, id, versionId: logicalId(s3, ctx) });
    throw notFhirPath();
  }
  if (n === 3 && s2 !== undefined && s2.startsWith('$')) {
    return operation(req, make, { resourceType: type, id, operation: opName(s2), operationLevel: 'instance' });
  }
  if (COMPARTMENT_TYPES.has(type) && s2 !== undefined && (n === 3 || (n === 4 && s3 === '_search'))) {
    const searched = s2 === '*' ? '*' : resourceType(s2, ctx);
    const compartment = { type, id };
    if (n === 3) {
      allow(method, ['GET']);
      noBody(req);
      return make('search-compartment', { resourceType: searched, compartment });
    }
    allow(method, ['POST']);
    return make('search-compartment', { resourceType: searched, compartment, params: searchBody(req) });
  }
  throw notFhirPath();
}

function operation(
  req: Request,
  make: (kind: InteractionKind, extra?: Partial<FhirInteraction>) => FhirInteraction,
  extra: Partial<FhirInteraction>,
): FhirInteraction {
  allow(req.method, ['GET', 'POST']);
  if (req.method === 'GET') {
    noBody(req);
    return make('operation', extra);
  }
  let body: unknown;
  if (req.body.kind === 'form') throw unsupportedMedia('Operation parameters are accepted as JSON only.');
  if (req.body.kind === 'json') {
    if (req.body.media !== 'fhir' || !isObject(req.body.value)) throw bad('An operation body must be a JSON resource.');
    rejectNestedBatch(req.body.value);
    body = req.body.value;
  }
  return make('operation', { ...extra, body });
}

function batch(
  req: Request,
  ctx: Ctx,
  make: (kind: InteractionKind, extra?: Partial<FhirInteraction>) => FhirInteraction,
): FhirInteraction {
  if (req.inEntry) throw bad('A batch or transaction cannot be nested in another one.');
  noParams(req);
  if (req.body.kind !== 'json' || req.body.media !== 'fhir') throw bad('POST to the base needs a Bundle.');
  const bundle = req.body.value;
  if (!isObject(bundle) || bundle.resourceType !== 'Bundle') throw bad('POST to the base needs a Bundle.');
  if (bundle.type !== 'batch' && bundle.type !== 'transaction') {
    throw bad('Only batch and transaction Bundles can be posted to the base.');
  }
  const raw = bundle.entry ?? [];
  if (!Array.isArray(raw)) throw bad('Bundle.entry must be an array.');
  const entries = raw.map((entry, index) => classifyEntry(entry, index, req, ctx));
  return make(bundle.type as 'batch' | 'transaction', { body: bundle, entries });
}

const ENTRY_REQUEST_KEYS = new Set(['id', 'extension', 'method', 'url', 'ifNoneExist', 'ifMatch']);

function classifyEntry(entry: unknown, index: number, parent: Request, ctx: Ctx): BatchEntry {
  const where = `Bundle.entry[${index}]`;
  try {
    if (!isObject(entry)) throw bad('is not an object');
    const { fullUrl, request, resource } = entry;
    if (fullUrl !== undefined && typeof fullUrl !== 'string') throw bad('fullUrl is not a string');
    if (!isObject(request)) throw bad('has no request');
    for (const k in request) {
      // Why: ifNoneMatch / ifModifiedSince turn a read into a 304 existence oracle; anything else
      // unknown is refused by default.
      if (!ENTRY_REQUEST_KEYS.has(k)) throw bad(`request.${k} is not accepted`);
    }
    const { method, url, ifNoneExist, ifMatch } = request;
    if (typeof method !== 'string' || !METHODS.has(method)) throw bad('request.method is not accepted');
    if (typeof url !== 'string' || url === '') throw bad('request.url is missing');
    if (url.startsWith('/') || /^[A-Za-z][A-Za-z0-9+.-]*:/.test(url)) {
      throw bad('request.url must be relative to the base');
    }
    const q = url.indexOf('?');
    const path = q === -1 ? url : url.slice(0, q);
    const head = method === 'HEAD';
    const m = (head ? 'GET' : method) as Method;
    const consumed = consumeFormatParams(parseQuery(q === -1 ? '' : url.slice(q + 1)));
    if (consumed.format !== undefined && consumed.format !== parent.format) {
      throw bad('request.url asks for another format than the Bundle');
    }
    if (ifNoneExist !== undefined && (typeof ifNoneExist !== 'string' || m !== 'POST')) {
      throw bad('request.ifNoneExist applies to create only');
    }
    if (ifMatch !== undefined && (typeof ifMatch !== 'string' || (m !== 'PUT' && m !== 'PATCH' && m !== 'DELETE'))) {
      throw bad('request.ifMatch applies to writes only');
    }
    const interaction = route(
      {
        method: m,
        head,
        segments: parsePath(path),
        params: consumed.params,
        body: entryBody(m, resource),
        ifNoneExist: ifNoneExist === undefined ? undefined : parseCriteria(ifNoneExist),
        format: parent.format,
        prefer: parent.prefer,
        inEntry: true,
      },
      ctx,
    );
    if (interaction.kind === 'batch' || interaction.kind === 'transaction') {
      throw bad('a batch or transaction cannot be nested');
    }
    return { index, fullUrl, interaction };
  } catch (err) {
    if (err instanceof ProxyError) {
      throw new ProxyError(err.code, `${where}: ${err.message}`, { issue: err.issue, cause: err });
    }
    throw err;
  }
}

/** An entry's `resource` as a body: JSON, except JSON Patch carried in a Binary for PATCH entries. */
function entryBody(method: Method, resource: unknown): Body {
  if (resource === undefined) return { kind: 'none' };
  if (method === 'PATCH' && isObject(resource) && resource.resourceType === 'Binary') {
    if (resource.contentType !== 'application/json-patch+json' || typeof resource.data !== 'string') {
      throw unsupportedMedia('A PATCH entry carries JSON Patch in a Binary, or a Parameters resource.');
    }
    const data = resource.data;
    if (data.length % 4 !== 0 || !/^[A-Za-z0-9+/]*={0,2}$/.test(data)) throw bad('Binary.data is not base64.');
    return { kind: 'json', media: 'json-patch', value: parseJsonStrict(decodeUtf8Strict(Buffer.from(data, 'base64'))) };
  }
  return { kind: 'json', media: 'fhir', value: resource };
}

// ---------------------------------------------------------------------------------------------
// Bodies

function noBody(req: Request): undefined {
  if (req.body.kind !== 'none') throw bad(`This interaction takes no body.`);
  return undefined;
}

function noParams(req: Request): void {
  if (req.params.length > 0) throw bad('This interaction takes no query parameters.');
}

/** POST `_search`: query parameters and form-body parameters, merged (query first). */
function searchBody(req: Request): SearchParam[] {
  if (req.body.kind === 'json') {
    throw unsupportedMedia('Search parameters in a body must be application/x-www-form-urlencoded.');
  }
  if (req.body.kind === 'none') return req.params;
  const body = consumeFormatParams(req.body.params);
  if (body.format !== undefined && body.format !== req.format) throw bad('Conflicting _format parameters.');
  return [...req.params, ...body.params];
}

/** A resource body for create/update: a JSON object whose type (and id, for update) match the URL. */
function resourceBody(req: Request, type: string, id: string | undefined, ctx: Ctx): Record<string, unknown> {
  if (req.body.kind === 'none') throw bad('This interaction needs a resource in the body.');
  if (req.body.kind !== 'json' || req.body.media !== 'fhir') {
    throw unsupportedMedia('A resource body must be application/fhir+json.');
  }
  const value = req.body.value;
  if (!isObject(value)) throw bad('The body is not a resource.');
  if (value.resourceType !== type || !ctx.types.has(type)) {
    throw bad('The resourceType of the body does not match the URL.');
  }
  if (id !== undefined && value.id !== id) throw bad('The id of the body does not match the URL.');
  if (id === undefined && value.id !== undefined && (typeof value.id !== 'string' || !ctx.id.test(value.id))) {
    throw bad('The id of the body is not a valid id.');
  }
  rejectNestedBatch(value);
  return value;
}

const JSON_PATCH_OPS = new Set(['add', 'remove', 'replace', 'move', 'copy', 'test']);

/** A PATCH body: JSON Patch (an array of operations) or FHIRPath Patch (a Parameters resource). */
function patchBody(req: Request): unknown {
  if (req.body.kind !== 'json') throw unsupportedMedia('PATCH takes application/json-patch+json or a Parameters resource.');
  const value = req.body.value;
  if (req.body.media === 'json-patch') {
    if (!Array.isArray(value) || value.length === 0) throw bad('A JSON Patch is a non-empty array of operations.');
    for (const op of value) {
      if (!isObject(op) || typeof op.op !== 'string' || !JSON_PATCH_OPS.has(op.op) || typeof op.path !== 'string') {
        throw bad('A JSON Patch operation is malformed.');
      }
    }
    return value;
  }
  if (!isObject(value) || value.resourceType !== 'Parameters') {
    throw bad('A FHIRPath Patch is a Parameters resource.');
  }
  return value;
}

/** A batch or transaction hidden as the body of another interaction is refused wherever it sits at the root. */
function rejectNestedBatch(value: Record<string, unknown>): void {
  if (value.resourceType === 'Bundle' && (value.type === 'batch' || value.type === 'transaction')) {
    throw bad('A batch or transaction Bundle is only accepted as a POST to the base.');
  }
}

/** Reads the top-level body according to its headers (routing later checks it fits the interaction). */
function readBody(raw: Buffer | string | undefined, bytes: number, headers: Headers, method: Method): Body {
  if (raw === undefined || bytes === 0) return { kind: 'none' };
  if (method === 'GET' || method === 'DELETE') throw bad(`A ${method} request takes no body.`);
  const ct = header(headers, 'content-type');
  if (ct === undefined) throw unsupportedMedia('A request body needs a Content-Type.');
  const media = parseMediaType(ct);
  if (media === undefined) throw unsupportedMedia('The Content-Type is malformed.');
  const charset = media.params.get('charset');
  if (charset !== undefined && charset.toLowerCase() !== 'utf-8') throw unsupportedMedia('Only UTF-8 bodies are accepted.');
  const text = typeof raw === 'string' ? raw : decodeUtf8Strict(raw);
  switch (media.type) {
    case 'application/fhir+json':
    case 'application/json':
      return { kind: 'json', media: 'fhir', value: parseJsonStrict(text) };
    case 'application/json-patch+json':
      if (method !== 'PATCH') throw unsupportedMedia('application/json-patch+json is for PATCH only.');
      return { kind: 'json', media: 'json-patch', value: parseJsonStrict(text) };
    case 'application/x-www-form-urlencoded':
      if (method !== 'POST') throw unsupportedMedia('Form bodies are for POST _search only.');
      return { kind: 'form', params: parseQuery(text) };
    default:
      // XML, multipart, text...: the proxy only reads JSON on the way in.
      throw unsupportedMedia('The request body must be JSON (application/fhir+json).');
  }
}

// ---------------------------------------------------------------------------------------------
// Headers and framing

type Headers = Map<string, string[]>;

function lowerHeaders(h: ClassifyInput['headers']): Headers {
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
function header(headers: Headers, name: string): string | undefined {
  const values = headers.get(name);
  if (values === undefined || values.length === 0) return undefined;
  if (values.length > 1) throw bad(`The ${name} header is repeated.`);
  return values[0];
}

function checkRawHeaders(raw: readonly string[] | undefined): void {
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
function checkFraming(body: Buffer | string | undefined, headers: Headers, max: number): number {
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

interface MediaType {
  type: string;
  params: Map<string, string>;
}

function parseMediaType(value: string): MediaType | undefined {
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

// ---------------------------------------------------------------------------------------------
// Format and Prefer

const JSON_FORMATS = new Set(['json', 'application/json', 'application/fhir+json', 'application/json+fhir']);
const XML_FORMATS = new Set(['xml', 'text/xml', 'application/xml', 'application/fhir+xml', 'application/xml+fhir']);

/** Removes `_format` and `_pretty` from the parameters; returns the format `_format` asked for. */
function consumeFormatParams(params: SearchParam[]): { params: SearchParam[]; format: 'json' | 'xml' | undefined } {
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

/** Picks the response format from Accept: the supported range with the highest q, JSON on ties. */
function formatFromAccept(accept: string | undefined): 'json' | 'xml' {
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

function parsePrefer(values: string[] | undefined): FhirInteraction['prefer'] {
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

function parseCriteria(raw: string): SearchParam[] {
  const q = raw.startsWith('?') ? raw.slice(1) : raw;
  const params = parseQuery(q);
  if (params.length === 0) throw bad('Conditional criteria are empty.');
  return params;
}

// ---------------------------------------------------------------------------------------------
// Path

/**
 * Splits and decodes the raw path. Refused: characters outside a strict set (so `;` matrix
 * parameters, backslashes, control and non-ASCII characters), encoded slashes and backslashes,
 * empty segments (`//`, trailing `/`), dot segments raw or encoded, and segments that decode to
 * anything but `[A-Za-z0-9\-._$*]`.
 */
function parsePath(raw: string): string[] {
  const path = raw.startsWith('/') ? raw.slice(1) : raw;
  if (path === '') return [];
  if (!RAW_PATH.test(path)) throw bad('The path contains characters that are not accepted.');
  if (/%(2f|5c)/i.test(path)) throw bad('The path contains an encoded slash.');
  return path.split('/').map((seg) => {
    if (seg === '') throw bad('The path contains an empty segment.');
    let d: string;
    try {
      d = decodeURIComponent(seg);
    } catch {
      throw bad('The path has a malformed percent escape.');
    }
    if (d === '.' || d === '..') throw bad('The path contains a dot segment.');
    if (!SEGMENT.test(d)) throw bad('The path contains characters that are not accepted.');
    return d;
  });
}

function resourceType(seg: string, ctx: Ctx): string {
  if (!ctx.types.has(seg)) throw notFhirPath();
  return seg;
}

function logicalId(seg: string | undefined, ctx: Ctx): string {
  // An id made only of dots is a dot segment somewhere (`...` on some servers).
  if (seg === undefined || !ctx.id.test(seg) || /^\.+$/.test(seg)) throw bad('The path contains an invalid id.');
  return seg;
}

function opName(seg: string): string {
  if (!OPERATION.test(seg)) throw bad('The operation name is not valid.');
  return seg.slice(1);
}

function checkTypeParam(params: readonly SearchParam[], ctx: Ctx): void {
  for (const p of params) {
    if (p.name !== '_type') continue;
    if (p.modifier !== undefined) throw bad('_type takes no modifier.');
    for (const t of p.value.split(',')) {
      if (!ctx.types.has(t)) throw bad('_type names an unknown resource type.');
    }
  }
}

function allow(method: Method, allowed: readonly Method[]): void {
  if (!allowed.includes(method)) throw methodNotAllowed(method);
}

// ---------------------------------------------------------------------------------------------
// Errors

function bad(message: string): ProxyError {
  return new ProxyError('ERR_BAD_REQUEST', message, { issue: 'invalid' });
}

function notFhirPath(): ProxyError {
  return new ProxyError('ERR_BAD_REQUEST', 'The path is not a FHIR interaction caregate accepts.', { issue: 'not-supported' });
}

function methodNotAllowed(method: string): ProxyError {
  const safe = /^[A-Z]{1,16}$/.test(method) ? method : 'This method';
  return new ProxyError('ERR_METHOD_NOT_ALLOWED', `${safe} is not allowed here.`, { issue: 'not-supported' });
}

function unsupportedMedia(message: string): ProxyError {
  return new ProxyError('ERR_UNSUPPORTED_MEDIA', message, { issue: 'not-supported' });
}

function notAcceptable(): ProxyError {
  return new ProxyError('ERR_NOT_ACCEPTABLE', 'caregate answers in FHIR JSON or XML only.', { issue: 'not-supported' });
}
