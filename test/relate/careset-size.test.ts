import type { CareTeam } from '@medplum/fhirtypes';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startDemoFhir } from '../../src/demo/server.js';
import type { PractitionerPrincipal } from '../../src/identity/principal.js';
import { careRelationshipsSchema } from '../../src/relate/config.js';
import { createCareSetResolver } from '../../src/relate/careset.js';
import { createFhirClient } from '../../src/upstream/client.js';

let fhir: Awaited<ReturnType<typeof startDemoFhir>>;
const TEAMS = 1000;

beforeAll(async () => {
  fhir = await startDemoFhir({ seed: false });
  const team = (id: string, patient: string, member: string): CareTeam => ({
    resourceType: 'CareTeam',
    id,
    status: 'active',
    subject: { reference: `Patient/${patient}` },
    participant: [{ member: { reference: member } }],
  });
  const teams = Array.from({ length: TEAMS }, (_, k) => team(`ct-${k}`, `p-${k}`, 'Practitioner/busy'));
  // A team nested in the last of hers: found only if the last slice of the frontier is searched.
  teams.push(team('ct-outer', 'p-outer', `CareTeam/ct-${TEAMS - 1}`));
  const entry = teams.map((r) => ({ resource: r, request: { method: 'PUT', url: `CareTeam/${r.id}` } }));
  const res = await fetch(fhir.url, { method: 'POST', headers: { 'content-type': 'application/fhir+json' }, body: JSON.stringify({ resourceType: 'Bundle', type: 'batch', entry }) });
  expect(res.status).toBe(200);
});

afterAll(async () => {
  await fhir.close();
});

describe('care-set resolution of a large care set', () => {
  it('resolves a practitioner in a thousand care teams, and the teams nested in them, in searches of bounded length', async () => {
    const client = createFhirClient({ baseUrl: fhir.url, timeoutMs: 30_000 });
    const participants: number[] = [];
    const counting = {
      ...client,
      searchAll: (type: string, params: Record<string, string> | URLSearchParams, maxPages?: number) => {
        const p = new URLSearchParams(params as Record<string, string>);
        if (type === 'CareTeam') participants.push((p.get('participant') ?? '').split(',').length);
        return client.searchAll(type, params, maxPages);
      },
    } as typeof client;
    const resolver = createCareSetResolver({ client: counting, config: () => careRelationshipsSchema.parse({}) });
    const principal = { kind: 'practitioner', practitioner: 'Practitioner/busy', practitionerRoles: [], organizations: [] } as unknown as PractitionerPrincipal;
    const set = await resolver.get(principal);
    expect(set.patients.size).toBe(TEAMS + 1);
    expect(set.patients.has('p-outer')).toBe(true);
    expect(Math.max(...participants)).toBeLessThanOrEqual(100);
  });
});

describe('care-set cache memory', () => {
  const principal = (id: string) => ({ kind: 'practitioner', practitioner: `Practitioner/${id}`, practitionerRoles: [`PractitionerRole/${id}-role`], organizations: [] }) as unknown as PractitionerPrincipal;

  it('forgets the members of sets evicted from the cache, so that many distinct users hold bounded memory', async () => {
    const client = createFhirClient({ baseUrl: fhir.url, timeoutMs: 30_000 });
    const config = careRelationshipsSchema.parse({ cache: { ttlSeconds: 60, maxEntries: 50 } });
    const resolver = createCareSetResolver({ client, config: () => config });
    for (let k = 0; k < 400; k++) await resolver.get(principal(`crowd-${k}`));
    const stats = resolver.cacheStats();
    expect(stats.entries).toBe(50);
    // Two member refs per cached user (the practitioner and her role), none of the evicted users'.
    expect(stats.memberIndex).toBe(100);
  });

  it('still drops a cached set when one of its members is written, after others were evicted', async () => {
    const client = createFhirClient({ baseUrl: fhir.url, timeoutMs: 30_000 });
    const config = careRelationshipsSchema.parse({ cache: { ttlSeconds: 60, maxEntries: 5 } });
    const resolver = createCareSetResolver({ client, config: () => config });
    await resolver.get(principal('busy'));
    for (let k = 0; k < 4; k++) await resolver.get(principal(`other-${k}`));
    const before = resolver.lookups;
    await resolver.get(principal('busy'));
    expect(resolver.lookups).toBe(before);
    resolver.invalidate(['PractitionerRole/busy-role']);
    await resolver.get(principal('busy'));
    expect(resolver.lookups).toBeGreaterThan(before);
    expect(resolver.cacheStats().memberIndex).toBe(10);
  });

  it('bounds the patients held across cached sets: a large set makes room by evicting others, and is resolved again once evicted', async () => {
    const client = createFhirClient({ baseUrl: fhir.url, timeoutMs: 30_000 });
    const config = careRelationshipsSchema.parse({ cache: { ttlSeconds: 60, maxEntries: 100, maxPatients: TEAMS + 10 } });
    const resolver = createCareSetResolver({ client, config: () => config });
    for (let k = 0; k < 20; k++) await resolver.get(principal(`small-${k}`));
    expect(resolver.cacheStats().entries).toBe(20);
    // Her thousand and one patients fit only with at most nine of the small sets beside them.
    await resolver.get(principal('busy'));
    expect(resolver.cacheStats().entries).toBeLessThanOrEqual(10);
    const before = resolver.lookups;
    await resolver.get(principal('busy'));
    expect(resolver.lookups).toBe(before);
    for (let k = 0; k < 20; k++) await resolver.get(principal(`late-${k}`));
    await resolver.get(principal('busy'));
    expect(resolver.lookups).toBeGreaterThan(before);
  });
});
