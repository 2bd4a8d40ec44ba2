import { describe, expect, it } from 'vitest';
import { ProxyError, type ErrorCode } from '../../src/http/errors.js';
import { classify, type ClassifyInput, type ClassifyOptions } from '../../src/fhir/classify.js';
import type { FhirInteraction } from '../../src/fhir/interaction.js';

const OPTS: ClassifyOptions = { maxBodyBytes: 100_000 };
const FHIR_JSON = { 'content-type': 'application/fhir+json' };

interface Row {
  method: string;
  url: string;
  headers?: ClassifyInput['headers'];
  rawHeaders?: string[];
  body?: unknown;
  opts?: Partial<ClassifyOptions>;
}

function input(r: Row): ClassifyInput {
  const q = r.url.indexOf('?');
  const body = r.body === undefined ? undefined : typeof r.body === 'string' || Buffer.isBuffer(r.body) ? r.body : JSON.stringify(r.body);
  return {
    method: r.method,
    path: q === -1 ? r.url : r.url.slice(0, q),
    query: q === -1 ? '' : r.url.slice(q + 1),
    headers: r.headers ?? (body === undefined ? {} : FHIR_JSON),
    ...(r.rawHeaders ? { rawHeaders: r.rawHeaders } : {}),
    ...(body === undefined ? {} : { body }),
  };
}

function run(r: Row): FhirInteraction {
  return classify(input(r), { ...OPTS, ...r.opts });
}

function refusal(r: Row): ErrorCode | 'accepted' {
  try {
    run(r);
    return 'accepted';
  } catch (err) {
    if (err instanceof ProxyError) return err.code;
    throw err;
  }
}

const obs = { resourceType: 'Observation', status: 'final', code: { text: 'x' }, subject: { reference: 'Patient/p1' } };
const bundle = (type: string, entry: unknown[]) => ({ resourceType: 'Bundle', type, entry });

// ------------------------------------------------------------------------------------------------
// Refusals: every path trick, HTTP trick and search-parameter trick of threats.md has a row.

const REFUSED: [string, Row, ErrorCode][] = [
  // Path tricks: //, %2F, dot segments, case variants, ; matrix parameters, suffixes
  ['leading double slash', { method: 'GET', url: '//Patient/p1' }, 'ERR_BAD_REQUEST'],
  ['empty segment', { method: 'GET', url: '/Patient//p1' }, 'ERR_BAD_REQUEST'],
  ['trailing slash', { method: 'GET', url: '/Patient/p1/' }, 'ERR_BAD_REQUEST'],
  ['encoded slash', { method: 'GET', url: '/Patient%2Fp1' }, 'ERR_BAD_REQUEST'],
  ['encoded slash, lower case', { method: 'GET', url: '/Patient/p1%2f_history' }, 'ERR_BAD_REQUEST'],
  ['encoded backslash', { method: 'GET', url: '/Patient/p1%5C' }, 'ERR_BAD_REQUEST'],
  ['raw backslash', { method: 'GET', url: '/Patient\\p1' }, 'ERR_BAD_REQUEST'],
  ['double-encoded slash', { method: 'GET', url: '/Patient%252Fp1' }, 'ERR_BAD_REQUEST'],
  ['dot segment', { method: 'GET', url: '/Patient/./p1' }, 'ERR_BAD_REQUEST'],
  ['dot-dot segment', { method: 'GET', url: '/Observation/../Patient/vic' }, 'ERR_BAD_REQUEST'],
  ['encoded dot-dot segment', { method: 'GET', url: '/Patient/%2e%2e/vic' }, 'ERR_BAD_REQUEST'],
  ['half-encoded dot-dot segment', { method: 'GET', url: '/Patient/.%2E/vic' }, 'ERR_BAD_REQUEST'],
  ['encoded dot segment first', { method: 'GET', url: '/%2E/metadata' }, 'ERR_BAD_REQUEST'],
  ['id made of dots', { method: 'GET', url: '/Patient/...', opts: { allowDotInId: true } }, 'ERR_BAD_REQUEST'],
  ['matrix parameter on id', { method: 'GET', url: '/Patient/p1;jsessionid=x' }, 'ERR_BAD_REQUEST'],
  ['matrix parameter on type', { method: 'GET', url: '/Patient;x=y/p1' }, 'ERR_BAD_REQUEST'],
  ['encoded semicolon', { method: 'GET', url: '/Patient/p1%3Bx' }, 'ERR_BAD_REQUEST'],
  ['lower-case type', { method: 'GET', url: '/patient/p1' }, 'ERR_BAD_REQUEST'],
  ['upper-case type', { method: 'GET', url: '/PATIENT/p1' }, 'ERR_BAD_REQUEST'],
  ['case variant of _history', { method: 'GET', url: '/Patient/p1/_History' }, 'ERR_BAD_REQUEST'],
  ['case variant of metadata', { method: 'GET', url: '/Metadata' }, 'ERR_BAD_REQUEST'],
  ['format suffix on id', { method: 'GET', url: '/Patient/vic.json' }, 'ERR_BAD_REQUEST'],
  ['format suffix on type', { method: 'GET', url: '/Patient.json/vic' }, 'ERR_BAD_REQUEST'],
  ['format suffix on metadata', { method: 'GET', url: '/metadata.xml' }, 'ERR_BAD_REQUEST'],
  ['encoded dot suffix', { method: 'GET', url: '/Patient/vic%2Ejson' }, 'ERR_BAD_REQUEST'],
  ['extra segment after vread', { method: 'GET', url: '/Patient/p1/_history/2/x' }, 'ERR_BAD_REQUEST'],
  ['extra segment after read', { method: 'GET', url: '/Observation/o1/x/y' }, 'ERR_BAD_REQUEST'],
  ['unknown type', { method: 'GET', url: '/Foo/1' }, 'ERR_BAD_REQUEST'],
  ['abstract type', { method: 'GET', url: '/DomainResource/1' }, 'ERR_BAD_REQUEST'],
  ['search of a non-compartment', { method: 'GET', url: '/Observation/o1/Patient' }, 'ERR_BAD_REQUEST'],
  ['compartment search of unknown type', { method: 'GET', url: '/Patient/p1/Foo' }, 'ERR_BAD_REQUEST'],
  ['NUL in path', { method: 'GET', url: '/Patient/p1%00' }, 'ERR_BAD_REQUEST'],
  ['raw control character', { method: 'GET', url: '/Patient/p1\t' }, 'ERR_BAD_REQUEST'],
  ['raw non-ASCII', { method: 'GET', url: '/Patient/é' }, 'ERR_BAD_REQUEST'],
  ['encoded non-ASCII', { method: 'GET', url: '/Patient/%C3%A9' }, 'ERR_BAD_REQUEST'],
  ['malformed percent escape', { method: 'GET', url: '/Patient/p%zz' }, 'ERR_BAD_REQUEST'],
  ['id too long', { method: 'GET', url: `/Patient/${'a'.repeat(65)}` }, 'ERR_BAD_REQUEST'],
  ['absolute URL as path', { method: 'GET', url: 'http://evil/Patient/p1' }, 'ERR_BAD_REQUEST'],
  ['fragment in path', { method: 'GET', url: '/Patient/p1#x' }, 'ERR_BAD_REQUEST'],
  ['empty operation name', { method: 'GET', url: '/Patient/p1/$' }, 'ERR_BAD_REQUEST'],
  ['operation on a version', { method: 'GET', url: '/Patient/p1/_history/1/$meta' }, 'ERR_BAD_REQUEST'],

  // HTTP tricks: unusual methods, method overrides, ambiguous framing, bodies where none belongs
  ['OPTIONS', { method: 'OPTIONS', url: '/Patient/p1' }, 'ERR_METHOD_NOT_ALLOWED'],
  ['TRACE', { method: 'TRACE', url: '/Patient/p1' }, 'ERR_METHOD_NOT_ALLOWED'],
  ['CONNECT', { method: 'CONNECT', url: '/Patient/p1' }, 'ERR_METHOD_NOT_ALLOWED'],
  ['WebDAV method', { method: 'PROPFIND', url: '/Patient/p1' }, 'ERR_METHOD_NOT_ALLOWED'],
  ['lower-case method', { method: 'get', url: '/Patient/p1' }, 'ERR_METHOD_NOT_ALLOWED'],
  ['X-HTTP-Method-Override', { method: 'POST', url: '/Patient/_search', headers: { 'x-http-method-override': 'DELETE' } }, 'ERR_BAD_REQUEST'],
  ['X-HTTP-Method', { method: 'GET', url: '/Patient/p1', headers: { 'X-HTTP-Method': 'DELETE' } }, 'ERR_BAD_REQUEST'],
  ['X-Method-Override', { method: 'GET', url: '/Patient/p1', headers: { 'x-method-override': 'GET' } }, 'ERR_BAD_REQUEST'],
  ['method override only in raw headers', { method: 'GET', url: '/Patient/p1', headers: { 'x-http-method-override': undefined, 'X-Http-Method-Override': 'PUT' } }, 'ERR_BAD_REQUEST'],
  ['HEAD on a search', { method: 'HEAD', url: '/Observation?subject=Patient/p1' }, 'ERR_METHOD_NOT_ALLOWED'],
  ['HEAD on history', { method: 'HEAD', url: '/Patient/p1/_history' }, 'ERR_METHOD_NOT_ALLOWED'],
  ['POST on an instance', { method: 'POST', url: '/Patient/p1', body: { resourceType: 'Patient' } }, 'ERR_METHOD_NOT_ALLOWED'],
  ['GET _search', { method: 'GET', url: '/Observation/_search?subject=Patient/p1' }, 'ERR_METHOD_NOT_ALLOWED'],
  ['GET system _search', { method: 'GET', url: '/_search' }, 'ERR_METHOD_NOT_ALLOWED'],
  ['PUT metadata', { method: 'PUT', url: '/metadata', body: { resourceType: 'CapabilityStatement' } }, 'ERR_METHOD_NOT_ALLOWED'],
  ['DELETE base', { method: 'DELETE', url: '/' }, 'ERR_METHOD_NOT_ALLOWED'],
  ['POST history', { method: 'POST', url: '/_history' }, 'ERR_METHOD_NOT_ALLOWED'],
  ['PUT on an operation', { method: 'PUT', url: '/Patient/p1/$everything' }, 'ERR_METHOD_NOT_ALLOWED'],
  ['POST _search with a JSON body', { method: 'POST', url: '/Observation/_search', body: { subject: 'Patient/vic' } }, 'ERR_UNSUPPORTED_MEDIA'],
  ['POST _search with an XML body', { method: 'POST', url: '/Observation/_search', headers: { 'content-type': 'application/xml' }, body: '<x/>' }, 'ERR_UNSUPPORTED_MEDIA'],
  ['POST _search with a multipart body', { method: 'POST', url: '/Observation/_search', headers: { 'content-type': 'multipart/form-data; boundary=x' }, body: '--x--' }, 'ERR_UNSUPPORTED_MEDIA'],
  ['GET with a body', { method: 'GET', url: '/Patient/p1', headers: { 'content-type': 'application/x-www-form-urlencoded' }, body: '_id=vic' }, 'ERR_BAD_REQUEST'],
  ['DELETE with a body', { method: 'DELETE', url: '/Patient/p1', body: { resourceType: 'Patient', id: 'p1' } }, 'ERR_BAD_REQUEST'],
  ['gzip request body', { method: 'POST', url: '/Observation', headers: { ...FHIR_JSON, 'content-encoding': 'gzip' }, body: obs }, 'ERR_UNSUPPORTED_MEDIA'],
  ['brotli request body', { method: 'POST', url: '/Observation', headers: { ...FHIR_JSON, 'Content-Encoding': 'br' }, body: obs }, 'ERR_UNSUPPORTED_MEDIA'],
  ['Content-Length with Transfer-Encoding', { method: 'POST', url: '/Observation', headers: { ...FHIR_JSON, 'content-length': '10', 'transfer-encoding': 'chunked' }, body: obs }, 'ERR_BAD_REQUEST'],
  ['Content-Length not matching the body', { method: 'POST', url: '/Observation', headers: { ...FHIR_JSON, 'content-length': '3' }, body: obs }, 'ERR_BAD_REQUEST'],
  ['odd transfer coding', { method: 'POST', url: '/Observation', headers: { ...FHIR_JSON, 'transfer-encoding': 'gzip, chunked' }, body: obs }, 'ERR_BAD_REQUEST'],
  ['repeated Content-Type', { method: 'POST', url: '/Observation', rawHeaders: ['Content-Type', 'application/fhir+json', 'content-type', 'text/plain'], body: obs }, 'ERR_BAD_REQUEST'],
  ['repeated Content-Length', { method: 'POST', url: '/Observation', rawHeaders: ['Content-Length', '1', 'Content-Length', '2'], body: obs }, 'ERR_BAD_REQUEST'],
  ['two Authorization headers', { method: 'GET', url: '/Patient/p1', rawHeaders: ['Authorization', 'Bearer a', 'authorization', 'Bearer b'] }, 'ERR_BAD_REQUEST'],
  ['Content-Type as two values', { method: 'POST', url: '/Observation', headers: { 'content-type': ['application/fhir+json', 'application/xml'] }, body: obs }, 'ERR_BAD_REQUEST'],
  ['body too large', { method: 'POST', url: '/Observation', body: { ...obs, note: [{ text: 'x'.repeat(200_000) }] } }, 'ERR_REQUEST_TOO_LARGE'],
  ['body without Content-Type', { method: 'POST', url: '/Observation', headers: {}, body: obs }, 'ERR_UNSUPPORTED_MEDIA'],
  ['non-UTF-8 charset', { method: 'POST', url: '/Observation', headers: { 'content-type': 'application/fhir+json; charset=iso-8859-1' }, body: obs }, 'ERR_UNSUPPORTED_MEDIA'],
  ['XML resource body', { method: 'POST', url: '/Observation', headers: { 'content-type': 'application/fhir+xml' }, body: '<Observation xmlns="http://hl7.org/fhir"/>' }, 'ERR_UNSUPPORTED_MEDIA'],
  ['text/plain body', { method: 'POST', url: '/Observation', headers: { 'content-type': 'text/plain' }, body: JSON.stringify(obs) }, 'ERR_UNSUPPORTED_MEDIA'],
  ['malformed Content-Type', { method: 'POST', url: '/Observation', headers: { 'content-type': 'json' }, body: obs }, 'ERR_UNSUPPORTED_MEDIA'],
  ['JSON Patch content type on POST', { method: 'POST', url: '/Observation', headers: { 'content-type': 'application/json-patch+json' }, body: [] }, 'ERR_UNSUPPORTED_MEDIA'],
  ['invalid UTF-8 body', { method: 'POST', url: '/Observation', body: Buffer.from([0x7b, 0x22, 0xff, 0x22, 0x3a, 0x31, 0x7d]) }, 'ERR_BAD_REQUEST'],
  ['body that is not JSON', { method: 'POST', url: '/Observation', body: '{"resourceType":"Observation",}' }, 'ERR_BAD_REQUEST'],
  ['duplicate keys in a resource', { method: 'POST', url: '/Observation', body: '{"resourceType":"Observation","subject":{"reference":"Patient/ok"},"subject":{"reference":"Patient/vic"}}' }, 'ERR_DUPLICATE_KEYS'],
  ['duplicate Bundle.type', { method: 'POST', url: '/', body: '{"resourceType":"Bundle","type":"batch","type":"transaction","entry":[]}' }, 'ERR_DUPLICATE_KEYS'],
  ['create of another type than the URL', { method: 'POST', url: '/Observation', body: { resourceType: 'Patient' } }, 'ERR_BAD_REQUEST'],
  ['create without resourceType', { method: 'POST', url: '/Observation', body: { status: 'final' } }, 'ERR_BAD_REQUEST'],
  ['create with an array body', { method: 'POST', url: '/Observation', body: [obs] }, 'ERR_BAD_REQUEST'],
  ['create with an empty body', { method: 'POST', url: '/Observation', headers: FHIR_JSON, body: '' }, 'ERR_BAD_REQUEST'],
  ['create with query parameters', { method: 'POST', url: '/Observation?subject=Patient/vic', body: obs }, 'ERR_BAD_REQUEST'],
  ['update with another id', { method: 'PUT', url: '/Observation/o1', body: { ...obs, id: 'o2' } }, 'ERR_BAD_REQUEST'],
  ['update without id in body', { method: 'PUT', url: '/Observation/o1', body: obs }, 'ERR_BAD_REQUEST'],
  ['update of another type', { method: 'PUT', url: '/Observation/o1', body: { resourceType: 'Patient', id: 'o1' } }, 'ERR_BAD_REQUEST'],
  ['update with a query', { method: 'PUT', url: '/Observation/o1?subject=Patient/vic', body: { ...obs, id: 'o1' } }, 'ERR_BAD_REQUEST'],
  ['create of a transaction Bundle', { method: 'POST', url: '/Bundle', body: bundle('transaction', []) }, 'ERR_BAD_REQUEST'],
  ['PATCH with a resource', { method: 'PATCH', url: '/Observation/o1', body: obs }, 'ERR_BAD_REQUEST'],
  ['PATCH with an empty JSON Patch', { method: 'PATCH', url: '/Observation/o1', headers: { 'content-type': 'application/json-patch+json' }, body: [] }, 'ERR_BAD_REQUEST'],
  ['PATCH with an unknown op', { method: 'PATCH', url: '/Observation/o1', headers: { 'content-type': 'application/json-patch+json' }, body: [{ op: 'merge', path: '/x' }] }, 'ERR_BAD_REQUEST'],
  ['PATCH with XML', { method: 'PATCH', url: '/Observation/o1', headers: { 'content-type': 'application/xml-patch+xml' }, body: '<diff/>' }, 'ERR_UNSUPPORTED_MEDIA'],
  ['conditional delete without criteria', { method: 'DELETE', url: '/Observation' }, 'ERR_BAD_REQUEST'],
  ['conditional update without criteria', { method: 'PUT', url: '/Observation', body: obs }, 'ERR_BAD_REQUEST'],
  ['If-None-Exist on a read', { method: 'GET', url: '/Patient/p1', headers: { 'if-none-exist': 'identifier=x' } }, 'ERR_BAD_REQUEST'],
  ['If-None-Exist on an update', { method: 'PUT', url: '/Observation/o1', headers: { ...FHIR_JSON, 'if-none-exist': 'identifier=x' }, body: { ...obs, id: 'o1' } }, 'ERR_BAD_REQUEST'],
  ['empty If-None-Exist', { method: 'POST', url: '/Observation', headers: { ...FHIR_JSON, 'if-none-exist': '' }, body: obs }, 'ERR_BAD_REQUEST'],
  ['operation with a form body', { method: 'POST', url: '/Patient/p1/$everything', headers: { 'content-type': 'application/x-www-form-urlencoded' }, body: '_since=2020' }, 'ERR_UNSUPPORTED_MEDIA'],
  ['operation with a transaction body', { method: 'POST', url: '/$process', body: bundle('transaction', []) }, 'ERR_BAD_REQUEST'],

  // Formats
  ['Accept HTML only', { method: 'GET', url: '/Patient/p1', headers: { accept: 'text/html' } }, 'ERR_NOT_ACCEPTABLE'],
  ['Accept turtle only', { method: 'GET', url: '/Patient/p1', headers: { accept: 'text/turtle, application/x-turtle;q=0.5' } }, 'ERR_NOT_ACCEPTABLE'],
  ['Accept JSON with q=0', { method: 'GET', url: '/Patient/p1', headers: { accept: 'application/fhir+json;q=0' } }, 'ERR_NOT_ACCEPTABLE'],
  ['_format html', { method: 'GET', url: '/Patient/p1?_format=html' }, 'ERR_NOT_ACCEPTABLE'],
  ['_format ttl', { method: 'GET', url: '/Patient/p1?_format=ttl' }, 'ERR_NOT_ACCEPTABLE'],
  ['conflicting _format', { method: 'GET', url: '/Patient/p1?_format=json&_format=xml' }, 'ERR_BAD_REQUEST'],
  ['Prefer with an unknown return', { method: 'POST', url: '/Observation', headers: { ...FHIR_JSON, prefer: 'return=everything' }, body: obs }, 'ERR_BAD_REQUEST'],
  ['conflicting Prefer', { method: 'POST', url: '/Observation', headers: { ...FHIR_JSON, prefer: 'return=minimal, return=representation' }, body: obs }, 'ERR_BAD_REQUEST'],

  // Search parameters
  ['access token in the query', { method: 'GET', url: '/Patient/p1?access_token=eyJ' }, 'ERR_TOKEN_IN_QUERY'],
  ['double-encoded value', { method: 'GET', url: '/Observation?subject=Patient%252Fvic' }, 'ERR_BAD_REQUEST'],
  ['double-encoded name', { method: 'GET', url: '/Observation?subject%253Anot=Patient/ok' }, 'ERR_BAD_REQUEST'],
  ['malformed escape in a value', { method: 'GET', url: '/Observation?code=%zz' }, 'ERR_BAD_REQUEST'],
  ['invalid UTF-8 in a value', { method: 'GET', url: '/Observation?code=%C3' }, 'ERR_BAD_REQUEST'],
  ['NUL in a value', { method: 'GET', url: '/Observation?subject=Patient/ok%00vic' }, 'ERR_BAD_REQUEST'],
  ['newline in a value', { method: 'GET', url: '/Observation?code=a%0Ab' }, 'ERR_BAD_REQUEST'],
  ['empty parameter name', { method: 'GET', url: '/Observation?=x' }, 'ERR_BAD_REQUEST'],
  ['space in a name', { method: 'GET', url: '/Observation?sub+ject=x' }, 'ERR_BAD_REQUEST'],
  ['two modifiers', { method: 'GET', url: '/Observation?code:not:missing=x' }, 'ERR_BAD_REQUEST'],
  ['empty modifier', { method: 'GET', url: '/Observation?code:=x' }, 'ERR_BAD_REQUEST'],
  ['bracket name', { method: 'GET', url: '/Observation?subject[0]=x' }, 'ERR_BAD_REQUEST'],
  ['malformed chain', { method: 'GET', url: '/Observation?subject..name=x' }, 'ERR_BAD_REQUEST'],
  ['fragment in query', { method: 'GET', url: '/Observation?code=x#y' }, 'ERR_BAD_REQUEST'],
  ['unknown _type', { method: 'GET', url: '/?_type=Patient,Foo' }, 'ERR_BAD_REQUEST'],
  ['unknown _type in a compartment search', { method: 'GET', url: '/Patient/p1/*?_type=Foo' }, 'ERR_BAD_REQUEST'],
  ['_type with a modifier', { method: 'GET', url: '/?_type:not=Patient' }, 'ERR_BAD_REQUEST'],
  ['too many parameters', { method: 'GET', url: `/Observation?${Array.from({ length: 1001 }, () => 'code=x').join('&')}` }, 'ERR_BAD_REQUEST'],
  ['access token in a _search form body', { method: 'POST', url: '/Observation/_search', headers: { 'content-type': 'application/x-www-form-urlencoded' }, body: 'access_token=x' }, 'ERR_TOKEN_IN_QUERY'],
  ['conflicting _format in query and form body', { method: 'POST', url: '/Observation/_search?_format=json', headers: { 'content-type': 'application/x-www-form-urlencoded' }, body: '_format=xml' }, 'ERR_BAD_REQUEST'],

  // Batch and transaction
  ['Bundle of another type at the base', { method: 'POST', url: '/', body: bundle('document', []) }, 'ERR_BAD_REQUEST'],
  ['collection Bundle at the base', { method: 'POST', url: '/', body: bundle('collection', []) }, 'ERR_BAD_REQUEST'],
  ['non-Bundle at the base', { method: 'POST', url: '/', body: obs }, 'ERR_BAD_REQUEST'],
  ['form body at the base', { method: 'POST', url: '/', headers: { 'content-type': 'application/x-www-form-urlencoded' }, body: '_id=x' }, 'ERR_BAD_REQUEST'],
  ['batch with a query', { method: 'POST', url: '/?_type=Patient', body: bundle('batch', []) }, 'ERR_BAD_REQUEST'],
  ['entries not an array', { method: 'POST', url: '/', body: { resourceType: 'Bundle', type: 'batch', entry: {} } }, 'ERR_BAD_REQUEST'],
  ['entry without request', { method: 'POST', url: '/', body: bundle('batch', [{ resource: obs }]) }, 'ERR_BAD_REQUEST'],
  ['entry with an absolute URL', { method: 'POST', url: '/', body: bundle('batch', [{ request: { method: 'GET', url: 'https://fhir.example/Patient/vic' } }]) }, 'ERR_BAD_REQUEST'],
  ['entry with a scheme-relative URL', { method: 'POST', url: '/', body: bundle('batch', [{ request: { method: 'GET', url: '//evil/Patient/vic' } }]) }, 'ERR_BAD_REQUEST'],
  ['entry with a root-relative URL', { method: 'POST', url: '/', body: bundle('batch', [{ request: { method: 'GET', url: '/Patient/vic' } }]) }, 'ERR_BAD_REQUEST'],
  ['entry with a urn URL', { method: 'POST', url: '/', body: bundle('batch', [{ request: { method: 'GET', url: 'urn:uuid:1' } }]) }, 'ERR_BAD_REQUEST'],
  ['entry with dot segments', { method: 'POST', url: '/', body: bundle('batch', [{ request: { method: 'GET', url: 'Observation/../Patient/vic' } }]) }, 'ERR_BAD_REQUEST'],
  ['entry with an encoded slash', { method: 'POST', url: '/', body: bundle('batch', [{ request: { method: 'GET', url: 'Patient%2Fvic' } }]) }, 'ERR_BAD_REQUEST'],
  ['entry with a lower-case type', { method: 'POST', url: '/', body: bundle('batch', [{ request: { method: 'GET', url: 'patient/vic' } }]) }, 'ERR_BAD_REQUEST'],
  ['entry with an empty URL', { method: 'POST', url: '/', body: bundle('batch', [{ request: { method: 'POST', url: '' }, resource: bundle('batch', []) }]) }, 'ERR_BAD_REQUEST'],
  ['nested batch posted to the base of an entry', { method: 'POST', url: '/', body: bundle('transaction', [{ request: { method: 'POST', url: '?' }, resource: bundle('batch', []) }]) }, 'ERR_BAD_REQUEST'],
  ['nested transaction created as a Bundle', { method: 'POST', url: '/', body: bundle('batch', [{ request: { method: 'POST', url: 'Bundle' }, resource: bundle('transaction', []) }]) }, 'ERR_BAD_REQUEST'],
  ['nested batch in an operation entry', { method: 'POST', url: '/', body: bundle('batch', [{ request: { method: 'POST', url: '$process' }, resource: bundle('batch', []) }]) }, 'ERR_BAD_REQUEST'],
  ['entry with an unknown method', { method: 'POST', url: '/', body: bundle('batch', [{ request: { method: 'OPTIONS', url: 'Patient/vic' } }]) }, 'ERR_BAD_REQUEST'],
  ['entry with a lower-case method', { method: 'POST', url: '/', body: bundle('batch', [{ request: { method: 'get', url: 'Patient/vic' } }]) }, 'ERR_BAD_REQUEST'],
  ['entry GET with a resource', { method: 'POST', url: '/', body: bundle('batch', [{ request: { method: 'GET', url: 'Patient/vic' }, resource: obs }]) }, 'ERR_BAD_REQUEST'],
  ['entry ifNoneMatch (existence oracle)', { method: 'POST', url: '/', body: bundle('batch', [{ request: { method: 'GET', url: 'Patient/vic', ifNoneMatch: 'W/"1"' } }]) }, 'ERR_BAD_REQUEST'],
  ['entry ifModifiedSince', { method: 'POST', url: '/', body: bundle('batch', [{ request: { method: 'GET', url: 'Patient/vic', ifModifiedSince: '2020-01-01' } }]) }, 'ERR_BAD_REQUEST'],
  ['entry ifNoneExist on a read', { method: 'POST', url: '/', body: bundle('batch', [{ request: { method: 'GET', url: 'Patient/vic', ifNoneExist: 'x=1' } }]) }, 'ERR_BAD_REQUEST'],
  ['entry asking for XML', { method: 'POST', url: '/', body: bundle('batch', [{ request: { method: 'GET', url: 'Patient/vic?_format=xml' } }]) }, 'ERR_BAD_REQUEST'],
  ['entry with a double-encoded query', { method: 'POST', url: '/', body: bundle('batch', [{ request: { method: 'GET', url: 'Observation?subject=Patient%252Fvic' } }]) }, 'ERR_BAD_REQUEST'],
  ['entry with an access token', { method: 'POST', url: '/', body: bundle('batch', [{ request: { method: 'GET', url: 'Patient/vic?access_token=x' } }]) }, 'ERR_TOKEN_IN_QUERY'],
  ['entry create of another type', { method: 'POST', url: '/', body: bundle('transaction', [{ request: { method: 'POST', url: 'Observation' }, resource: { resourceType: 'Patient' } }]) }, 'ERR_BAD_REQUEST'],
  ['entry update with another id', { method: 'POST', url: '/', body: bundle('transaction', [{ request: { method: 'PUT', url: 'Observation/o1' }, resource: { ...obs, id: 'o2' } }]) }, 'ERR_BAD_REQUEST'],
  ['entry PATCH Binary with bad base64', { method: 'POST', url: '/', body: bundle('transaction', [{ request: { method: 'PATCH', url: 'Observation/o1' }, resource: { resourceType: 'Binary', contentType: 'application/json-patch+json', data: 'not base64!' } }]) }, 'ERR_BAD_REQUEST'],
  ['entry PATCH Binary with duplicate keys', { method: 'POST', url: '/', body: bundle('transaction', [{ request: { method: 'PATCH', url: 'Observation/o1' }, resource: { resourceType: 'Binary', contentType: 'application/json-patch+json', data: Buffer.from('[{"op":"test","op":"remove","path":"/subject"}]').toString('base64') } }]) }, 'ERR_DUPLICATE_KEYS'],
  ['entry PATCH Binary of another type', { method: 'POST', url: '/', body: bundle('transaction', [{ request: { method: 'PATCH', url: 'Observation/o1' }, resource: { resourceType: 'Binary', contentType: 'application/xml', data: '' } }]) }, 'ERR_UNSUPPORTED_MEDIA'],
  ['entry HEAD on a search', { method: 'POST', url: '/', body: bundle('batch', [{ request: { method: 'HEAD', url: 'Observation?code=x' } }]) }, 'ERR_METHOD_NOT_ALLOWED'],
  ['entry with a non-string fullUrl', { method: 'POST', url: '/', body: bundle('batch', [{ fullUrl: 1, request: { method: 'GET', url: 'Patient/p1' } }]) }, 'ERR_BAD_REQUEST'],
];

describe('classify refuses', () => {
  it.each(REFUSED)('%s', (_name, row, code) => {
    expect(refusal(row)).toBe(code);
  });

  it('names the batch entry that was refused', () => {
    try {
      run({ method: 'POST', url: '/', body: bundle('batch', [{ request: { method: 'GET', url: 'Patient/p1' } }, { request: { method: 'GET', url: 'http://x/Patient/1' } }]) });
      expect.unreachable();
    } catch (err) {
      expect((err as ProxyError).message).toMatch(/^Bundle\.entry\[1\]:/);
    }
  });

  it('accepts dotted ids only when configured', () => {
    expect(refusal({ method: 'GET', url: '/Patient/1.2.3' })).toBe('ERR_BAD_REQUEST');
    expect(run({ method: 'GET', url: '/Patient/1.2.3', opts: { allowDotInId: true } }).id).toBe('1.2.3');
  });
});

// ------------------------------------------------------------------------------------------------
// Legitimate interactions, with the expected canonical form.

const P = (name: string, value: string, modifier?: string) => ({ name, modifier, value });

const ACCEPTED: [string, Row, Partial<FhirInteraction>][] = [
  ['capabilities', { method: 'GET', url: '/metadata' }, { kind: 'capabilities', path: 'metadata', method: 'GET', head: false }],
  ['HEAD capabilities', { method: 'HEAD', url: 'metadata' }, { kind: 'capabilities', method: 'GET', head: true }],
  ['read', { method: 'GET', url: '/Patient/p1' }, { kind: 'read', resourceType: 'Patient', id: 'p1', path: 'Patient/p1', params: [] }],
  ['HEAD read', { method: 'HEAD', url: '/Patient/p1' }, { kind: 'read', method: 'GET', head: true }],
  ['read with percent-encoded letters', { method: 'GET', url: '/Pat%69ent/p%31' }, { kind: 'read', resourceType: 'Patient', id: 'p1', path: 'Patient/p1' }],
  ['read with _summary, _format and _pretty', { method: 'GET', url: '/Patient/p1?_summary=true&_format=json&_pretty=true' }, { kind: 'read', params: [P('_summary', 'true')], format: 'json' }],
  ['read asking XML by _format', { method: 'GET', url: '/Patient/p1?_format=xml' }, { kind: 'read', format: 'xml', params: [] }],
  ['read asking XML by _format media type', { method: 'GET', url: '/Patient/p1?_format=application/fhir%2Bxml' }, { format: 'xml' }],
  ['read asking XML by Accept', { method: 'GET', url: '/Patient/p1', headers: { accept: 'application/fhir+xml' } }, { format: 'xml' }],
  ['read with browser Accept', { method: 'GET', url: '/Patient/p1', headers: { accept: 'text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8' } }, { format: 'xml' }],
  ['read with Accept */*', { method: 'GET', url: '/Patient/p1', headers: { accept: '*/*' } }, { format: 'json' }],
  ['read with Accept JSON and fhirVersion', { method: 'GET', url: '/Patient/p1', headers: { accept: 'application/fhir+json; fhirVersion=4.0' } }, { format: 'json' }],
  ['_format wins over Accept', { method: 'GET', url: '/Patient/p1?_format=json', headers: { accept: 'application/fhir+xml' } }, { format: 'json' }],
  ['vread', { method: 'GET', url: '/Observation/o1/_history/3' }, { kind: 'vread', resourceType: 'Observation', id: 'o1', versionId: '3', path: 'Observation/o1/_history/3' }],
  ['HEAD vread', { method: 'HEAD', url: '/Observation/o1/_history/3' }, { kind: 'vread', head: true }],
  ['history of an instance', { method: 'GET', url: '/Patient/p1/_history?_since=2020-01-01' }, { kind: 'history-instance', id: 'p1', params: [P('_since', '2020-01-01')] }],
  ['history of a type', { method: 'GET', url: '/Observation/_history' }, { kind: 'history-type', resourceType: 'Observation', path: 'Observation/_history' }],
  ['history of the system', { method: 'GET', url: '/_history' }, { kind: 'history-system', resourceType: undefined, path: '_history' }],
  [
    'search with repeated parameters and OR lists',
    { method: 'GET', url: '/Observation?subject=Patient/p1&code=a,b&code=c&&' },
    { kind: 'search-type', resourceType: 'Observation', path: 'Observation', params: [P('subject', 'Patient/p1'), P('code', 'a,b'), P('code', 'c')] },
  ],
  ['search with modifiers', { method: 'GET', url: '/Observation?code:not=x&subject:missing=true&subject:Patient=p1' }, { params: [P('code', 'x', 'not'), P('subject', 'true', 'missing'), P('subject', 'p1', 'Patient')] }],
  ['search with an encoded colon', { method: 'GET', url: '/Observation?subject%3Anot=Patient/ok' }, { params: [P('subject', 'Patient/ok', 'not')] }],
  ['search with a chain', { method: 'GET', url: '/Observation?subject.name=dupont' }, { params: [P('subject.name', 'dupont')] }],
  ['search with a typed chain', { method: 'GET', url: '/Observation?subject:Patient.name=dupont' }, { params: [P('subject:Patient.name', 'dupont')] }],
  ['search with a chain and a final modifier', { method: 'GET', url: '/Observation?subject:Patient.name:exact=Dupont' }, { params: [P('subject:Patient.name', 'Dupont', 'exact')] }],
  ['search with _has', { method: 'GET', url: '/Patient?_has:Observation:patient:code=1234-5' }, { params: [P('_has', '1234-5', 'Observation:patient:code')] }],
  ['search with nested _has', { method: 'GET', url: '/Patient?_has:Observation:patient:_has:AuditEvent:entity:agent=Practitioner/x' }, { params: [P('_has', 'Practitioner/x', 'Observation:patient:_has:AuditEvent:entity:agent')] }],
  ['search with _include:iterate', { method: 'GET', url: '/Observation?_include:iterate=Observation:subject' }, { params: [P('_include', 'Observation:subject', 'iterate')] }],
  ['search decoding + as space and %2B as plus', { method: 'GET', url: '/Observation?note=a+b&date=ge2020-01-01T00:00:00%2B01:00' }, { params: [P('note', 'a b'), P('date', 'ge2020-01-01T00:00:00+01:00')] }],
  ['search keeping a literal percent sign', { method: 'GET', url: '/Observation?note=100%25' }, { params: [P('note', '100%')] }],
  ['parameter without value', { method: 'GET', url: '/Observation?_total' }, { params: [P('_total', '')] }],
  [
    'POST _search merging query and form body',
    { method: 'POST', url: '/Observation/_search?subject=Patient/p1', headers: { 'content-type': 'application/x-www-form-urlencoded; charset=UTF-8' }, body: 'code=a%2Cb&_format=json&_count=10' },
    { kind: 'search-type', method: 'POST', path: 'Observation/_search', params: [P('subject', 'Patient/p1'), P('code', 'a,b'), P('_count', '10')] },
  ],
  ['POST _search without body', { method: 'POST', url: '/Observation/_search?code=x' }, { kind: 'search-type', params: [P('code', 'x')] }],
  ['system search', { method: 'GET', url: '/?_type=Patient,Observation&_lastUpdated=gt2020' }, { kind: 'search-system', path: '', resourceType: undefined, params: [P('_type', 'Patient,Observation'), P('_lastUpdated', 'gt2020')] }],
  ['system search with empty path', { method: 'GET', url: '?_type=Patient' }, { kind: 'search-system', path: '' }],
  ['system POST _search', { method: 'POST', url: '/_search', headers: { 'content-type': 'application/x-www-form-urlencoded' }, body: '_type=Patient' }, { kind: 'search-system', path: '_search', params: [P('_type', 'Patient')] }],
  ['compartment search', { method: 'GET', url: '/Patient/p1/Observation?code=x' }, { kind: 'search-compartment', compartment: { type: 'Patient', id: 'p1' }, resourceType: 'Observation', path: 'Patient/p1/Observation', params: [P('code', 'x')] }],
  ['compartment search of every type', { method: 'GET', url: '/Patient/p1/*' }, { kind: 'search-compartment', compartment: { type: 'Patient', id: 'p1' }, resourceType: '*', path: 'Patient/p1/*' }],
  ['Encounter compartment', { method: 'GET', url: '/Encounter/e1/Observation' }, { kind: 'search-compartment', compartment: { type: 'Encounter', id: 'e1' } }],
  ['Practitioner compartment', { method: 'GET', url: '/Practitioner/pr1/Encounter' }, { kind: 'search-compartment', compartment: { type: 'Practitioner', id: 'pr1' } }],
  ['RelatedPerson compartment', { method: 'GET', url: '/RelatedPerson/rp1/Observation' }, { kind: 'search-compartment', compartment: { type: 'RelatedPerson', id: 'rp1' } }],
  ['Device compartment', { method: 'GET', url: '/Device/d1/Observation' }, { kind: 'search-compartment', compartment: { type: 'Device', id: 'd1' } }],
  ['compartment POST _search', { method: 'POST', url: '/Patient/p1/Observation/_search', headers: { 'content-type': 'application/x-www-form-urlencoded' }, body: 'code=x' }, { kind: 'search-compartment', method: 'POST', params: [P('code', 'x')] }],
  ['create', { method: 'POST', url: '/Observation', body: obs }, { kind: 'create', resourceType: 'Observation', id: undefined, body: obs, conditional: undefined, path: 'Observation' }],
  ['create with application/json and charset', { method: 'POST', url: '/Observation', headers: { 'content-type': 'application/json; charset=utf-8' }, body: obs }, { kind: 'create', body: obs }],
  ['create from a Buffer', { method: 'POST', url: '/Observation', body: Buffer.from(JSON.stringify(obs)) }, { kind: 'create', body: obs }],
  ['create with Content-Length and identity encoding', { method: 'POST', url: '/Observation', headers: { ...FHIR_JSON, 'content-length': String(Buffer.byteLength(JSON.stringify(obs))), 'content-encoding': 'identity' }, body: obs }, { kind: 'create' }],
  ['conditional create', { method: 'POST', url: '/Observation', headers: { ...FHIR_JSON, 'if-none-exist': 'identifier=http://x|1' }, body: obs }, { kind: 'create', conditional: [P('identifier', 'http://x|1')] }],
  ['update', { method: 'PUT', url: '/Observation/o1', body: { ...obs, id: 'o1' } }, { kind: 'update', id: 'o1', body: { ...obs, id: 'o1' }, path: 'Observation/o1' }],
  ['conditional update', { method: 'PUT', url: '/Observation?identifier=http://x|1', body: obs }, { kind: 'update', id: undefined, params: [], conditional: [P('identifier', 'http://x|1')], path: 'Observation' }],
  ['JSON Patch', { method: 'PATCH', url: '/Observation/o1', headers: { 'content-type': 'application/json-patch+json' }, body: [{ op: 'replace', path: '/status', value: 'amended' }] }, { kind: 'patch', id: 'o1', body: [{ op: 'replace', path: '/status', value: 'amended' }] }],
  ['FHIRPath Patch', { method: 'PATCH', url: '/Observation/o1', body: { resourceType: 'Parameters', parameter: [] } }, { kind: 'patch', body: { resourceType: 'Parameters', parameter: [] } }],
  ['conditional patch', { method: 'PATCH', url: '/Observation?identifier=x', headers: { 'content-type': 'application/json-patch+json' }, body: [{ op: 'remove', path: '/note' }] }, { kind: 'patch', conditional: [P('identifier', 'x')] }],
  ['delete', { method: 'DELETE', url: '/Observation/o1' }, { kind: 'delete', id: 'o1', body: undefined }],
  ['conditional delete', { method: 'DELETE', url: '/Observation?identifier=x' }, { kind: 'delete', id: undefined, conditional: [P('identifier', 'x')], params: [] }],
  ['instance operation', { method: 'GET', url: '/Patient/p1/$everything?_since=2020' }, { kind: 'operation', operation: 'everything', operationLevel: 'instance', resourceType: 'Patient', id: 'p1', path: 'Patient/p1/$everything', params: [P('_since', '2020')] }],
  ['type operation by POST', { method: 'POST', url: '/Patient/$match', body: { resourceType: 'Parameters', parameter: [] } }, { kind: 'operation', operation: 'match', operationLevel: 'type', body: { resourceType: 'Parameters', parameter: [] } }],
  ['system operation', { method: 'GET', url: '/$export' }, { kind: 'operation', operation: 'export', operationLevel: 'system', path: '$export' }],
  ['encoded $ in operation', { method: 'GET', url: '/Observation/%24lastn' }, { kind: 'operation', operation: 'lastn', operationLevel: 'type', path: 'Observation/$lastn' }],
  ['operation POST without body', { method: 'POST', url: '/Patient/p1/$everything' }, { kind: 'operation', body: undefined }],
  ['Prefer header', { method: 'POST', url: '/Observation', headers: { ...FHIR_JSON, prefer: 'return=representation, handling=strict, respond-async' }, body: obs }, { prefer: { return: 'representation', handling: 'strict', respondAsync: true } }],
  ['Prefer with quoted value and unknown preference', { method: 'PUT', url: '/Observation/o1', headers: { ...FHIR_JSON, prefer: ['return="minimal"', 'wait=10'] }, body: { ...obs, id: 'o1' } }, { prefer: { return: 'minimal' } }],
  ['known types override', { method: 'GET', url: '/Bot/b1', opts: { knownTypes: new Set(['Bot']) } }, { kind: 'read', resourceType: 'Bot' }],
  ['raw headers without repetition', { method: 'GET', url: '/Patient/p1', rawHeaders: ['Host', 'x', 'Accept', 'a', 'Accept', 'b'] }, { kind: 'read' }],
];

describe('classify accepts', () => {
  it.each(ACCEPTED)('%s', (_name, row, expected) => {
    expect(run(row)).toMatchObject(expected);
  });

  it('refuses standard types missing from a custom type set', () => {
    expect(refusal({ method: 'GET', url: '/Patient/p1', opts: { knownTypes: new Set(['Bot']) } })).toBe('ERR_BAD_REQUEST');
  });
});

describe('classify batch and transaction', () => {
  const patch = [{ op: 'replace', path: '/status', value: 'cancelled' }];
  const body = bundle('batch', [
    { request: { method: 'GET', url: 'Patient/p1' } },
    { fullUrl: 'urn:uuid:1', request: { method: 'POST', url: 'Observation', ifNoneExist: 'identifier=x|1' }, resource: obs },
    { request: { method: 'PUT', url: 'Observation/o2', ifMatch: 'W/"2"' }, resource: { ...obs, id: 'o2' } },
    { request: { method: 'DELETE', url: 'Observation?identifier=x|2' } },
    { request: { method: 'GET', url: 'Observation?subject=Patient/p1&_format=json&code=a,b' } },
    {
      request: { method: 'PATCH', url: 'Observation/o3' },
      resource: { resourceType: 'Binary', contentType: 'application/json-patch+json', data: Buffer.from(JSON.stringify(patch)).toString('base64') },
    },
    { request: { method: 'GET', url: 'Patient/p1/$everything' } },
    { request: { method: 'HEAD', url: 'Patient/p2' } },
    { request: { method: 'POST', url: 'Observation/_search?code=x' } },
  ]);

  it('classifies every entry as a standalone request', () => {
    const i = run({ method: 'POST', url: '/', headers: { ...FHIR_JSON, prefer: 'return=minimal' }, body });
    expect(i).toMatchObject({ kind: 'batch', path: '', body });
    const e = i.entries ?? [];
    expect(e.map((x) => [x.index, x.interaction.kind, x.interaction.path])).toEqual([
      [0, 'read', 'Patient/p1'],
      [1, 'create', 'Observation'],
      [2, 'update', 'Observation/o2'],
      [3, 'delete', 'Observation'],
      [4, 'search-type', 'Observation'],
      [5, 'patch', 'Observation/o3'],
      [6, 'operation', 'Patient/p1/$everything'],
      [7, 'read', 'Patient/p2'],
      [8, 'search-type', 'Observation/_search'],
    ]);
    expect(e[1]).toMatchObject({ fullUrl: 'urn:uuid:1', interaction: { conditional: [P('identifier', 'x|1')], body: obs } });
    expect(e[3]?.interaction.conditional).toEqual([P('identifier', 'x|2')]);
    expect(e[4]?.interaction.params).toEqual([P('subject', 'Patient/p1'), P('code', 'a,b')]);
    expect(e[5]?.interaction.body).toEqual(patch);
    expect(e[7]?.interaction.head).toBe(true);
    expect(e.every((x) => x.interaction.prefer.return === 'minimal' && x.interaction.format === 'json')).toBe(true);
  });

  it('classifies a transaction', () => {
    const i = run({ method: 'POST', url: '/', body: bundle('transaction', [{ request: { method: 'POST', url: 'Patient' }, resource: { resourceType: 'Patient' } }]) });
    expect(i.kind).toBe('transaction');
    expect(i.entries?.[0]?.interaction.kind).toBe('create');
  });

  it('accepts an empty batch', () => {
    expect(run({ method: 'POST', url: '/', body: { resourceType: 'Bundle', type: 'batch' } }).entries).toEqual([]);
  });
});
