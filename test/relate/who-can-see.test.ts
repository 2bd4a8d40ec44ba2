import { resolve } from 'node:path';
import type { Practitioner } from '@medplum/fhirtypes';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { OVERSIGHT_FIXTURES } from '../../src/demo/oversight.js';
import { DEMO_FIXTURES } from '../../src/demo/seed.js';
import { startDemoFhir, type DemoFhirServer } from '../../src/demo/server.js';
import type { Claims, PractitionerPrincipal } from '../../src/identity/principal.js';
import { createPrincipalResolver } from '../../src/identity/resolve.js';
import { loadPolicy } from '../../src/policy/load.js';
import { createCareSetResolver } from '../../src/relate/careset.js';
import { whoCanSee } from '../../src/relate/who-can-see.js';
import { createFhirClient, type FhirClient } from '../../src/upstream/client.js';

/**
 * "Who can see this patient now" is care-set resolution in reverse: on the demo hospital, for every
 * fixture patient and a sample of generated ones, the practitioners it lists are exactly those
 * whose own care set, resolved forwards as on a request, holds the patient.
 */
const cfg = loadPolicy(resolve(import.meta.dirname, '../../config/policy.yaml')).policy.careRelationships;
let demo: DemoFhirServer;
let client: FhirClient;
let now: number;
/** Practitioner → the patients of her care set. */
const forward = new Map<string, Set<string>>();

function claims(ref: string): Claims {
  return { issuer: 't', subject: ref, idNatPs: undefined, professionCodes: [], roles: [], groups: [], fhirUser: ref, patientContext: undefined, scopes: undefined, clientId: undefined, jti: undefined, displayName: undefined, expiresAt: undefined };
}

beforeAll(async () => {
  now = Date.now();
  demo = await startDemoFhir({ port: 0, host: '127.0.0.1', seed: { seed: 42, patients: 60, now } });
  client = createFhirClient({ baseUrl: demo.url, timeoutMs: 10_000 });
  const careSets = createCareSetResolver({ client, config: () => cfg, now: () => now });
  const principals = createPrincipalResolver({ client, practitionerIdentifierSystems: [], ttlSeconds: 0, max: 1, now: () => now });
  const practitioners = await client.searchAll<Practitioner>('Practitioner', { _count: '1000' }, 5);
  for (const p of practitioners) {
    if (p.active === false) continue;
    const ref = `Practitioner/${p.id}`;
    const r = await principals.resolve({ claims: claims(ref), staff: undefined, certificate: undefined });
    if (r.kind !== 'practitioner') continue;
    const principal: PractitionerPrincipal = { ...r, method: 'jwt', claims: claims(ref), certificate: undefined, policyRoles: [] };
    forward.set(ref, new Set((await careSets.get(principal)).patients.keys()));
  }
}, 120_000);
afterAll(async () => demo?.close());

const reach = (patient: string, grants: { user: string; reason: string; until: number }[] = []) => whoCanSee({ client, config: cfg, patient, now, grants });

describe('who can see a patient now (care sets in reverse)', () => {
  it('lists exactly the practitioners whose care set holds the patient, for every fixture and a sample of patients', async () => {
    const fixtures = Object.values(DEMO_FIXTURES).flatMap((f) => [...f.mustSee, ...f.mustNotSee].map((c) => c.patient));
    const patients = [...new Set([...fixtures, OVERSIGHT_FIXTURES.staffPatient, OVERSIGHT_FIXTURES.flaggedPatient, OVERSIGHT_FIXTURES.namesakePatient, ...Array.from({ length: 25 }, (_, i) => `pat-${String(i * 2 + 1).padStart(5, '0')}`)])];
    let pairs = 0;
    for (const p of patients) {
      const listed = [...(await reach(p)).practitioners.keys()].filter((u) => forward.has(u)).sort();
      const expected = [...forward].filter(([, set]) => set.has(p)).map(([u]) => u).sort();
      expect(listed, p).toEqual(expected);
      pairs += expected.length;
    }
    // Not a comparison of empty sets: dozens of practitioners, and the service-level team alone gives several.
    expect(forward.size).toBeGreaterThan(40);
    expect(pairs).toBeGreaterThan(30);
  }, 120_000);

  it('names the staff member’s care team, the nurse through her role and the physician of the stay, with their evidence', async () => {
    const F = OVERSIGHT_FIXTURES;
    const r = await reach(F.staffPatient);
    expect([...r.practitioners.keys()].sort()).toEqual(['Practitioner/prat-bernard', 'Practitioner/prat-martin', 'Practitioner/prat-roux']);
    expect(r.practitioners.get('Practitioner/prat-bernard')).toEqual([{ source: 'careteam', reference: `CareTeam/${F.staffCareTeam}`, through: ['PractitionerRole/role-bernard-cardio'] }]);
    expect(r.practitioners.get('Practitioner/prat-martin')).toEqual([
      { source: 'careteam', reference: `CareTeam/${F.staffCareTeam}` },
      { source: 'encounter', reference: `Encounter/${F.staffStay}` },
    ]);
    expect(r.practitioners.get('Practitioner/prat-roux')).toEqual([{ source: 'encounter', reference: `Encounter/${F.staffStay}` }]);
    // He is a practitioner of the hospital himself, but not of his own care.
    expect(r.practitioners.has('Practitioner/prat-girard')).toBe(false);
  });

  it('follows nested teams and services, and adds open break-the-glass grants and written mandates', async () => {
    const nested = await reach('pat-fx-nested');
    expect(nested.practitioners.get('Practitioner/prat-martin')).toEqual([{ source: 'careteam', reference: 'CareTeam/ct-fx-nested-outer', through: ['CareTeam/ct-fx-nested-inner'] }]);
    const service = await reach('pat-fx-service');
    expect(service.practitioners.get('Practitioner/prat-bernard')?.[0]).toMatchObject({ source: 'careteam', reference: 'CareTeam/ct-fx-service', through: ['Organization/org-cardio'] });
    const until = now + 3_600_000;
    const granted = await reach('pat-dupont', [{ user: 'Practitioner/prat-roux', reason: 'unconscious patient', until }, { user: 'Practitioner/prat-girard', reason: 'ended', until: now - 1 }]);
    expect(granted.practitioners.get('Practitioner/prat-roux')).toEqual([{ source: 'break-glass', reference: undefined, until: new Date(until).toISOString(), reason: 'unconscious patient' }]);
    expect(granted.practitioners.has('Practitioner/prat-girard')).toBe(false);
    expect([...granted.mandated.keys()]).toEqual(['RelatedPerson/rp-dupont']);
    expect((await reach('pat-fx-mandate-expired')).mandated.size).toBe(0);
  });
});
