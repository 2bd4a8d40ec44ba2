import type { Patient, Resource } from '@medplum/fhirtypes';
import type { FhirInteraction } from '../fhir/interaction.js';
import { resolvePatientLink, type PatientLink } from '../fhir/patients.js';
import { notFound } from '../http/errors.js';
import { patchedCopy } from '../fhir/json-patch.js';

/**
 * What a write changes, read before deciding it: the resource as it is now (update, patch, delete),
 * as it would be after (the body, or the current version with the JSON Patch applied locally), and
 * the patients of each. decide() judges both sides; relate/invalidate.ts drops the caches both name.
 */
export interface WriteFacts {
  before: Resource | undefined;
  after: Resource | undefined;
  patients: { before: readonly string[] | 'undetermined' | 'none'; after: readonly string[] | 'undetermined' | 'none' };
  /** For writes to Patient: whether `Patient.link` changes. */
  linkChanged: boolean;
  /**
   * An error that depends on the current content of the resource (a PATCH on a missing resource, a
   * JSON Patch `test` that fails or a path that does not exist): raised only once the write is
   * permitted, so that a refused caller learns nothing from it (threats.md, "Writes used as reads").
   */
  deferred?: unknown;
}

export interface WriteFactsDeps {
  read(type: string, id: string): Promise<Resource | undefined>;
  linkOf(resource: Resource): PatientLink;
  localBases: readonly string[];
}

/** The facts of a write by id (conditional writes are refused to listed care sets, and need none for the others). */
export async function writeFacts(it: FhirInteraction, deps: WriteFactsDeps): Promise<WriteFacts> {
  const readRef = (ref: string) => {
    const [type, id] = ref.split('/');
    return deps.read(type!, id!);
  };
  const side = async (r: Resource | undefined): Promise<readonly string[] | 'undetermined' | 'none'> => {
    if (!r) return 'none';
    const l = await resolvePatientLink(deps.linkOf(r), readRef, { localBases: deps.localBases });
    if (l.kind === 'none') return 'none';
    if (l.kind === 'patients') return l.ids;
    return 'undetermined';
  };
  let before: Resource | undefined;
  if ((it.kind === 'update' || it.kind === 'patch' || it.kind === 'delete') && it.resourceType && it.id) {
    before = await deps.read(it.resourceType, it.id);
  }
  let after: Resource | undefined;
  let deferred: unknown;
  if (it.kind === 'create' || it.kind === 'update') after = it.body as Resource;
  if (it.kind === 'patch') {
    if (!before) {
      // Nothing to patch: a miss, told only to a caller whose patch would be allowed anyway.
      deferred = notFound('patch of a missing resource');
    } else {
      try {
        after = patchedCopy(before, it.body);
      } catch (err) {
        // Judged as a patch that changes nothing: the outcome of the patch is the hidden content.
        deferred = err;
        after = before;
      }
    }
  }
  const linkChanged =
    it.resourceType === 'Patient' &&
    it.kind !== 'delete' &&
    JSON.stringify((before as Patient | undefined)?.link ?? []) !== JSON.stringify((after as Patient | undefined)?.link ?? []);
  return {
    before,
    after,
    patients: { before: await side(before), after: await side(after) },
    linkChanged,
    ...(deferred === undefined ? {} : { deferred }),
  };
}
