import { sign } from 'node:crypto';
import type { Bundle, BundleEntry, CareTeam, Encounter, Practitioner, Resource } from '@medplum/fhirtypes';
import { IDNPS_SYSTEM, RPPS_SYSTEM, luhnKey } from '../src/demo/seed.js';
import { demoClaims, ensureDemoSigningKey } from '../src/demo/tokens.js';

/**
 * Synthetic users the benchmark creates on the upstream before it measures, through the FHIR API
 * (batch Bundles of PUTs, so that their ids are known): practitioners whose care sets hold exactly
 * 1, 10, 100 or 1,000 of the demo hospital's generated patients, and a crowd of practitioners for
 * the distinct-users measure. Tokens for them come from the demo issuer (the clinician persona's
 * claims, with their own subject, idNatPs and fhirUser).
 */

const pad = (n: number, width: number) => String(n).padStart(width, '0');

/** A test-range RPPS (997…, valid Luhn key) for the bench's n-th practitioner; none collides with the demo's. */
function benchRpps(n: number): string {
  const payload = `9979${pad(n, 6)}`;
  return payload + luhnKey(payload);
}

export interface BenchUser {
  practitioner: string;
  rpps: string;
  /** The patients of the user's care set (generated patients of the demo hospital). */
  patients: string[];
}

function practitioner(id: string, n: number, family: string): Practitioner {
  const rpps = benchRpps(n);
  return {
    resourceType: 'Practitioner',
    id,
    active: true,
    identifier: [
      { system: IDNPS_SYSTEM, value: `8${rpps}` },
      { system: RPPS_SYSTEM, value: rpps },
    ],
    name: [{ family, given: [`U${n}`] }],
  };
}

/** The k-th of `count` distinct generated patients, spread over the hospital (7 is prime to its size). */
function spreadPatient(k: number, hospitalPatients: number): string {
  return `pat-${pad(1 + ((k * 7 + 3) % hospitalPatients), 5)}`;
}

async function putAll(baseUrl: string, resources: Resource[], batchSize = 1000): Promise<void> {
  for (let i = 0; i < resources.length; i += batchSize) {
    const entry: BundleEntry[] = resources.slice(i, i + batchSize).map((r) => ({ resource: r, request: { method: 'PUT', url: `${r.resourceType}/${r.id}` } }));
    const res = await fetch(baseUrl, { method: 'POST', headers: { 'content-type': 'application/fhir+json' }, body: JSON.stringify({ resourceType: 'Bundle', type: 'batch', entry }) });
    const bundle = (await res.json()) as Bundle;
    const failed = (bundle.entry ?? []).filter((e) => !/^20[01]/.test(e.response?.status ?? ''));
    if (!res.ok || failed.length > 0) throw new Error(`loading the bench population: ${res.status}, ${failed.length} entries failed`);
  }
}

/**
 * Practitioners whose care set holds exactly `size` patients, for each size: through active
 * CareTeams naming them (`via: 'careteam'`, how a ward physician's set is made), or through
 * in-progress Encounters they attend (`via: 'encounter'`, an emergency physician's).
 */
export async function createCareSetUsers(
  baseUrl: string,
  sizes: readonly number[],
  hospitalPatients: number,
  via: 'careteam' | 'encounter',
): Promise<Map<number, BenchUser>> {
  const out = new Map<number, BenchUser>();
  const resources: Resource[] = [];
  sizes.forEach((size, i) => {
    if (size > hospitalPatients) throw new Error(`a care set of ${size} needs as many patients (${hospitalPatients})`);
    const n = (via === 'careteam' ? 0 : 100) + i;
    const id = `prat-bench-${via}-${size}`;
    resources.push(practitioner(id, n, via === 'careteam' ? 'BENCH-EQUIPE' : 'BENCH-SEJOUR'));
    const patients = Array.from({ length: size }, (_, k) => spreadPatient(k, hospitalPatients));
    patients.forEach((patient, k) => {
      if (via === 'careteam') {
        resources.push({
          resourceType: 'CareTeam',
          id: `ct-bench-${size}-${k}`,
          status: 'active',
          subject: { reference: `Patient/${patient}` },
          participant: [{ member: { reference: `Practitioner/${id}` } }],
        } satisfies CareTeam);
      } else {
        resources.push({
          resourceType: 'Encounter',
          id: `enc-bench-${size}-${k}`,
          status: 'in-progress',
          class: { system: 'http://terminology.hl7.org/CodeSystem/v3-ActCode', code: 'EMER' },
          subject: { reference: `Patient/${patient}` },
          participant: [{ individual: { reference: `Practitioner/${id}` } }],
          period: { start: '2020-01-01T00:00:00Z' },
        } satisfies Encounter);
      }
    });
    out.set(size, { practitioner: `Practitioner/${id}`, rpps: benchRpps(n), patients });
  });
  await putAll(baseUrl, resources);
  return out;
}

/**
 * `count` practitioners for the distinct-users measure, in teams of ten: each team is one active
 * CareTeam of one patient, so every user's care set holds one patient and its resolution costs
 * what any user's first request costs (principal, CareTeam and Encounter lookups) without the
 * size of the set weighing in (that is the care-set curve's business).
 */
export async function createCrowd(baseUrl: string, count: number, hospitalPatients: number): Promise<BenchUser[]> {
  const users: BenchUser[] = [];
  const resources: Resource[] = [];
  for (let team = 0; team * 10 < count; team++) {
    const patient = spreadPatient(team, hospitalPatients);
    const members: string[] = [];
    for (let i = team * 10; i < Math.min(count, team * 10 + 10); i++) {
      const id = `prat-bench-u${pad(i, 6)}`;
      resources.push(practitioner(id, 1000 + i, 'BENCH-FOULE'));
      users.push({ practitioner: `Practitioner/${id}`, rpps: benchRpps(1000 + i), patients: [patient] });
      members.push(id);
    }
    resources.push({
      resourceType: 'CareTeam',
      id: `ct-bench-crowd-${team}`,
      status: 'active',
      subject: { reference: `Patient/${patient}` },
      participant: members.map((m) => ({ member: { reference: `Practitioner/${m}` } })),
    } satisfies CareTeam);
  }
  await putAll(baseUrl, resources);
  return users;
}

/** A demo-issuer token for a bench user (the clinician persona's claims, the user's identity). */
export function tokenMinter(keysDir: string): (user: BenchUser) => string {
  // The key is read once: the crowd needs up to 100,000 tokens.
  const key = ensureDemoSigningKey(keysDir);
  const header = Buffer.from(JSON.stringify({ alg: 'ES256', typ: 'JWT', kid: key.kid })).toString('base64url');
  return (user) => {
    const id = user.practitioner.slice('Practitioner/'.length);
    const claims = demoClaims('clinician', {
      claims: {
        sub: `bench-${id}`,
        idnat_ps: `8${user.rpps}`,
        preferred_username: `8${user.rpps}`,
        fhirUser: user.practitioner,
        name: `Bench ${id}`,
        given_name: 'Bench',
        family_name: id,
      },
    });
    const input = `${header}.${Buffer.from(JSON.stringify(claims)).toString('base64url')}`;
    return `${input}.${sign('sha256', Buffer.from(input), { key: key.privateKey, dsaEncoding: 'ieee-p1363' }).toString('base64url')}`;
  };
}
