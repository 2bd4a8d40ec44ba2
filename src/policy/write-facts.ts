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
  /** Who points at a Binary stored without securityContext (relate/binary-owners.ts). */
  binaryOwners?: { of(binaryId: string): Promise<string[]> };
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
  let afterPatients = await side(after);
  if (after && afterPatients !== 'undetermined') {
    // A Binary attached by this write joins the record it is attached to: the writer must be able
    // to see it already, or anyone could read another patient's document by attaching it to one
    // of their own patients (threats.md, "Resource types that carry patient data indirectly").
    const attached = await attachedPatients(after, before, it, deps, side);
    if (attached === 'undetermined') afterPatients = 'undetermined';
    else if (attached.length > 0) afterPatients = [...new Set([...(afterPatients === 'none' ? [] : afterPatients), ...attached])];
  }
  return {
    before,
    after,
    patients: { before: await side(before), after: afterPatients },
    linkChanged,
    ...(deferred === undefined ? {} : { deferred }),
  };
}

const BINARY = /^(?:(.*)\/)?Binary\/([A-Za-z0-9\-.]{1,64})$/;

/** The Binary ids of the attachments of a resource (objects with a `url` and a `contentType`), local ones only. */
function attachedBinaries(resource: Resource, localBases: readonly string[]): Set<string> {
  const out = new Set<string>();
  const walk = (node: unknown, depth: number): void => {
    if (depth > 64 || node === null || typeof node !== 'object') return;
    if (Array.isArray(node)) {
      for (const v of node) walk(v, depth + 1);
      return;
    }
    const o = node as Record<string, unknown>;
    if (typeof o.url === 'string' && 'contentType' in o) {
      const m = BINARY.exec(o.url);
      if (m && (m[1] === undefined || localBases.includes(m[1]))) out.add(m[2]!);
    }
    for (const k in o) walk(o[k], depth + 1);
  };
  walk(resource, 0);
  return out;
}

/**
 * The patients of the Binaries this write attaches that its current version did not: from their
 * securityContext, or from the other resources pointing at them; undetermined when a Binary has
 * neither (nobody can tell whose it is).
 */
async function attachedPatients(
  after: Resource,
  before: Resource | undefined,
  it: FhirInteraction,
  deps: WriteFactsDeps,
  side: (r: Resource | undefined) => Promise<readonly string[] | 'undetermined' | 'none'>,
): Promise<readonly string[] | 'undetermined'> {
  const already = before ? attachedBinaries(before, deps.localBases) : new Set<string>();
  const self = it.resourceType && it.id ? `${it.resourceType}/${it.id}` : undefined;
  const out: string[] = [];
  for (const id of attachedBinaries(after, deps.localBases)) {
    if (already.has(id)) continue;
    const binary = await deps.read('Binary', id);
    if (!binary) continue;
    let patients: readonly string[] | 'undetermined' | 'none';
    if ((binary as { securityContext?: unknown }).securityContext !== undefined) patients = await side(binary);
    else {
      const owners = (await deps.binaryOwners?.of(id))?.filter((o) => o !== self) ?? [];
      if (owners.length === 0) return 'undetermined';
      patients = [];
      for (const owner of owners) {
        const [type, oid] = owner.split('/');
        const p = await side(await deps.read(type!, oid!));
        if (p === 'undetermined') return 'undetermined';
        if (p !== 'none') patients = [...patients, ...p];
      }
    }
    if (patients === 'undetermined') return 'undetermined';
    if (patients !== 'none') out.push(...patients);
  }
  return out;
}
