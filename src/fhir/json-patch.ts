import type { Resource } from '@medplum/fhirtypes';
import { applyPatch, type Operation } from 'rfc6902';
import { ProxyError } from '../http/errors.js';

const OPS = new Set(['add', 'remove', 'replace', 'move', 'copy', 'test']);

/**
 * Applies a JSON Patch to a copy of the current resource so that the result can be judged before
 * the write is forwarded (a patch that moves a resource to another patient is refused). rfc6902 is
 * the implementation the medplum engine itself uses. Only JSON Patch is accepted: FHIRPath Patch
 * and XML patch would need a second evaluator that could disagree with the server's.
 */
export function patchedCopy(current: Resource, patch: unknown): Resource {
  if (!Array.isArray(patch) || patch.length === 0 || patch.length > 1000) {
    throw new ProxyError('ERR_BAD_REQUEST', 'A PATCH body must be a non-empty JSON Patch array.', { issue: 'structure' });
  }
  for (const op of patch) {
    if (!op || typeof op !== 'object' || !OPS.has((op as Operation).op) || typeof (op as Operation).path !== 'string') {
      throw new ProxyError('ERR_BAD_REQUEST', 'A JSON Patch operation is malformed.', { issue: 'structure' });
    }
  }
  const copy = structuredClone(current);
  const results = applyPatch(copy, patch as Operation[]);
  if (results.some((r) => r !== null)) {
    // A failed `test` must look the same whatever the hidden value was: answered as a conflict without details.
    throw new ProxyError('ERR_BAD_REQUEST', 'The JSON Patch could not be applied.', { issue: 'processing' });
  }
  return copy;
}
