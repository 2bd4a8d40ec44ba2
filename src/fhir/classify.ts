import { ProxyError } from '../http/errors.js';
import type { BatchEntry, FhirInteraction, InteractionKind, SearchParam } from './interaction.js';
import { parseQuery } from './query.js';
import {
  entryBody,
  noBody,
  noParams,
  patchBody,
  readBody,
  rejectNestedBatch,
  resourceBody,
  searchBody,
  type Method,
  type Request,
} from './request-body.js';
import { bad, methodNotAllowed, notFhirPath, unsupportedMedia } from './request-errors.js';
import {
  checkFraming,
  checkRawHeaders,
  consumeFormatParams,
  acceptNamesFhirFormat,
  formatFromAccept,
  header,
  lowerHeaders,
  parseCriteria,
  parsePrefer,
} from './request-headers.js';
import { checkTypeParam, logicalId, opName, parsePath, resourceType, type Ctx } from './request-path.js';
import { FHIR_ID, RESOURCE_TYPES, isObject } from './types.js';

/**
 * Request classification: the route table from a raw HTTP request (or a batch entry) to a
 * {@link FhirInteraction}. Paths, headers and bodies are read by request-path.ts,
 * request-headers.ts and request-body.ts.
 */

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
  const accept = header(headers, 'accept');
  // A Binary read without a FHIR format in Accept is answered in its own content type (raw bytes);
  // everything else in JSON or XML, and any other Accept is refused (406).
  const rawBinary = consumed.format === undefined && !acceptNamesFhirFormat(accept) && isBinaryRead(method, segments);
  const format = rawBinary ? 'binary' : (consumed.format ?? formatFromAccept(accept));
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

/** `GET Binary/<id>` or `GET Binary/<id>/_history/<vid>`. */
function isBinaryRead(method: string, segments: readonly string[]): boolean {
  return method === 'GET' && segments[0] === 'Binary' && (segments.length === 2 || (segments.length === 4 && segments[2] === '_history'));
}

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

function allow(method: Method, allowed: readonly Method[]): void {
  if (!allowed.includes(method)) throw methodNotAllowed(method);
}
