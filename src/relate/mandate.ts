import type { Consent } from '@medplum/fhirtypes';
import type { FhirClient } from '../upstream/client.js';
import { literalRef, periodCovers } from './careset.js';
import type { Evidence } from './types.js';

/**
 * A person mandated by the patient (order of 5 March 2004: an express, written mandate) sees that
 * patient's record while an active Consent names them: `Consent.patient` is the patient,
 * `provision.type` permit, the RelatedPerson among `provision.actor`, and `provision.period`
 * covering now. Anything less (draft, rejected, expired, identifier-only actor) gives nothing.
 */
export async function mandatedPatients(client: FhirClient, relatedPerson: string, now = Date.now()): Promise<Map<string, Evidence[]>> {
  const consents = await client.searchAll<Consent>('Consent', { actor: relatedPerson, status: 'active', _count: '100' }, 5);
  const out = new Map<string, Evidence[]>();
  for (const c of consents) {
    if (c.status !== 'active' || c.provision?.type !== 'permit') continue;
    if (!periodCovers(c.provision.period, now)) continue;
    if (!(c.provision.actor ?? []).some((a) => literalRef(a.reference) === relatedPerson)) continue;
    const patient = literalRef(c.patient);
    if (!patient?.startsWith('Patient/')) continue;
    const id = patient.slice(8);
    out.set(id, [...(out.get(id) ?? []), { source: 'mandate', reference: `Consent/${c.id}` }]);
  }
  return out;
}
