import type { FhirInteraction } from '../fhir/interaction.js';
import { isSearchOrHistory } from '../fhir/interaction.js';
import { ProxyError } from '../http/errors.js';

/**
 * The structure of an upstream answer, checked before anything reads it: an upstream body is
 * untrusted input (threats.md invariant 5), and code that judges it must not meet a `null` entry,
 * an entry that is a string, a `resource` without a type, or the answer to another request. What
 * is wrong is the upstream's fault: a 502 that quotes nothing of the body.
 *
 * Checked: the body is a resource (an object with a `resourceType`); a Bundle's `entry` is an
 * array of objects whose `resource`, `search`, `request`, `response` are objects and whose
 * resource has a type; its `link` an array of objects; its `total` a number; nested Bundles
 * likewise; a read answers the type and the id asked for.
 */
export function checkUpstreamShape(body: unknown, it: FhirInteraction): void {
  if (!isResource(body)) throw broken('not a resource');
  if (body.resourceType === 'OperationOutcome') return;
  if ((it.kind === 'read' || it.kind === 'vread') && it.resourceType !== undefined) {
    if (body.resourceType !== it.resourceType) throw broken(`answered a ${typeName(body.resourceType)} for a read of ${it.resourceType}`);
    if (body.id !== undefined && body.id !== it.id) throw broken('answered another id than the one read');
  }
  if ((isSearchOrHistory(it) || it.kind === 'batch' || it.kind === 'transaction') && body.resourceType !== 'Bundle') {
    throw broken(`answered a ${typeName(body.resourceType)} where a Bundle was expected`);
  }
  checkResource(body, 0);
}

const MAX_NESTING = 8;

function checkResource(r: Record<string, unknown>, depth: number): void {
  if (r.resourceType !== 'Bundle') return;
  if (depth > MAX_NESTING) throw broken('Bundles nested too deeply');
  if (r.total !== undefined && typeof r.total !== 'number') throw broken('Bundle.total is not a number');
  if (r.link !== undefined && (!Array.isArray(r.link) || !r.link.every(isObject))) throw broken('Bundle.link is not a list of links');
  if (r.entry === undefined) return;
  if (!Array.isArray(r.entry)) throw broken('Bundle.entry is not a list');
  for (const e of r.entry) {
    if (!isObject(e)) throw broken('a Bundle entry is not an object');
    for (const k of ['search', 'request', 'response'] as const) {
      if (e[k] !== undefined && !isObject(e[k])) throw broken(`Bundle.entry.${k} is not an object`);
    }
    if (e.resource === undefined) continue;
    if (!isResource(e.resource)) throw broken('a Bundle entry holds something that is not a resource');
    checkResource(e.resource, depth + 1);
  }
}

function isObject(v: unknown): v is Record<string, unknown> {
  return v !== null && typeof v === 'object' && !Array.isArray(v);
}

function isResource(v: unknown): v is Record<string, unknown> & { resourceType: string; id?: unknown } {
  return isObject(v) && typeof v.resourceType === 'string' && /^[A-Z][A-Za-z]{1,63}$/.test(v.resourceType);
}

/** A resource type as it may be logged (an unexpected value is not echoed). */
function typeName(t: string): string {
  return /^[A-Z][A-Za-z]{1,63}$/.test(t) ? t : 'resource';
}

function broken(why: string): ProxyError {
  return new ProxyError('ERR_UPSTREAM_BAD_RESPONSE', 'The FHIR server answered with a body caregate cannot judge.', { expose: true, detail: `upstream answer ${why}` });
}
