import type { Resource } from '@medplum/fhirtypes';
import type { FhirInteraction } from '../fhir/interaction.js';
import { walkReferences } from '../fhir/references.js';

/**
 * After a write that changes who may see whom has succeeded upstream, the cached care sets and
 * principals it touches are dropped, so that what it grants or removes applies at once for them
 * (and a refusal is never confirmed against a stale cache).
 *
 * Which writes count is the policy's list of relationship types (`isRelationship`); what each names
 * is read from its body and from the version it replaced (a participant removed by an update, or
 * by a delete, is named only there): every Practitioner, PractitionerRole and Organization it
 * references, and the Practitioner itself when one is written (its identifiers and `active` are
 * how a credential without `fhirUser` is resolved).
 */
export interface RelationshipCaches {
  /** Drops the cached care sets of these members. */
  careSets(members: ReadonlySet<string>): void;
  /** Drops the cached resolution of `Practitioner/<id>`. */
  principal(practitioner: string): void;
  /** Drops the cached stays of engagements (Group and Encounter writes). */
  stays(): void;
  /** Drops the cached oppositions of these patients (a Consent about them was written: it takes effect at once). */
  oppositions(patients: ReadonlySet<string>): void;
}

const MEMBER = /^(Practitioner|PractitionerRole|Organization)\/[A-Za-z0-9\-.]+$/;
const PATIENT = /^Patient\/[A-Za-z0-9\-.]{1,64}$/;

export function invalidateAfterWrite(
  it: FhirInteraction,
  replaced: readonly Resource[],
  isRelationship: (type: string | undefined) => boolean,
  caches: RelationshipCaches,
): void {
  const writes = it.kind === 'batch' || it.kind === 'transaction' ? (it.entries ?? []).map((e) => e.interaction) : [it];
  for (const w of writes) {
    if (w.method === 'GET' || !isRelationship(w.resourceType)) continue;
    const refs = new Set<string>();
    const collect = (node: unknown) =>
      walkReferences(node, (ref) => {
        if (typeof ref.reference === 'string' && MEMBER.test(ref.reference)) refs.add(ref.reference);
      });
    collect(w.body);
    const before = replaced.find((r) => r.resourceType === w.resourceType && r.id === w.id);
    if (before) collect(before);
    if (w.resourceType === 'Practitioner' && w.id) refs.add(`Practitioner/${w.id}`);
    caches.careSets(refs);
    for (const r of refs) if (r.startsWith('Practitioner/')) caches.principal(r);
    if (w.resourceType === 'Group' || w.resourceType === 'Encounter') caches.stays();
    if (w.resourceType === 'Consent') {
      // An opposition (or its end) applies to the patient the Consent is about, before and after.
      const patients = new Set<string>();
      for (const c of [w.body, before]) {
        const ref = (c as { patient?: { reference?: unknown } } | undefined)?.patient?.reference;
        if (typeof ref === 'string' && PATIENT.test(ref)) patients.add(ref.slice('Patient/'.length));
      }
      caches.oppositions(patients);
    }
  }
}
