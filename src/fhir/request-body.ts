/**
 * Request bodies for classification: reading a body by its Content-Type (FHIR JSON, JSON Patch,
 * form parameters) or from a batch entry, and checking that it fits the interaction routed
 * (no body, a resource matching the URL, a patch, search parameters).
 */

import type { FhirInteraction, SearchParam } from './interaction.js';
import { decodeUtf8Strict, parseJsonStrict } from './json.js';
import { parseQuery } from './query.js';
import { bad, unsupportedMedia } from './request-errors.js';
import { consumeFormatParams, header, parseMediaType, type Headers } from './request-headers.js';
import type { Ctx } from './request-path.js';
import { isObject } from './types.js';

/** A request method as routing sees it (HEAD is read as GET). */
export type Method = FhirInteraction['method'];

/** Body as read, before routing decides whether it fits the interaction. */
export type Body =
  | { kind: 'none' }
  | { kind: 'json'; media: 'fhir' | 'json-patch'; value: unknown }
  | { kind: 'form'; params: SearchParam[] };

/** Everything routing needs, from a top-level request or from a batch entry. */
export interface Request {
  method: Method;
  head: boolean;
  segments: string[];
  params: SearchParam[];
  body: Body;
  ifNoneExist: SearchParam[] | undefined;
  format: FhirInteraction['format'];
  prefer: FhirInteraction['prefer'];
  inEntry: boolean;
}

/** Reads the top-level body according to its headers (routing later checks it fits the interaction). */
export function readBody(raw: Buffer | string | undefined, bytes: number, headers: Headers, method: Method): Body {
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

/** An entry's `resource` as a body: JSON, except JSON Patch carried in a Binary for PATCH entries. */
export function entryBody(method: Method, resource: unknown): Body {
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

/** Refuses a body where the interaction takes none. */
export function noBody(req: Request): undefined {
  if (req.body.kind !== 'none') throw bad(`This interaction takes no body.`);
  return undefined;
}

/** Refuses query parameters where the interaction takes none. */
export function noParams(req: Request): void {
  if (req.params.length > 0) throw bad('This interaction takes no query parameters.');
}

/** POST `_search`: query parameters and form-body parameters, merged (query first). */
export function searchBody(req: Request): SearchParam[] {
  if (req.body.kind === 'json') {
    throw unsupportedMedia('Search parameters in a body must be application/x-www-form-urlencoded.');
  }
  if (req.body.kind === 'none') return req.params;
  const body = consumeFormatParams(req.body.params);
  if (body.format !== undefined && body.format !== req.format) throw bad('Conflicting _format parameters.');
  return [...req.params, ...body.params];
}

/** A resource body for create/update: a JSON object whose type (and id, for update) match the URL. */
export function resourceBody(req: Request, type: string, id: string | undefined, ctx: Ctx): Record<string, unknown> {
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
export function patchBody(req: Request): unknown {
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
export function rejectNestedBatch(value: Record<string, unknown>): void {
  if (value.resourceType === 'Bundle' && (value.type === 'batch' || value.type === 'transaction')) {
    throw bad('A batch or transaction Bundle is only accepted as a POST to the base.');
  }
}
