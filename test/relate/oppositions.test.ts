import type { Bundle, Consent, Resource } from '@medplum/fhirtypes';
import { describe, expect, it } from 'vitest';
import { ProxyError } from '../../src/http/errors.js';
import { careRelationshipsSchema } from '../../src/relate/config.js';
import { invalidateAfterWrite } from '../../src/relate/invalidate.js';
import { applying, createOppositionStore, oppositionsOf, opposableRefs } from '../../src/relate/oppositions.js';
import { createBreakGlassStore } from '../../src/relate/breakglass.js';
import { createMemoryState } from '../../src/shared/state.js';
import type { CareSetResolver } from '../../src/relate/careset.js';
import { createCareSets } from '../../src/relate/profiles.js';
import type { StaySets } from '../../src/relate/stays.js';
import type { CareSet } from '../../src/relate/types.js';
import type { FhirClient } from '../../src/upstream/client.js';
import { interaction, practitioner } from '../audit/fixtures.js';

/** relate/oppositions.ts: what a Consent opposes, to whom, when; cached per patient; fail closed. */
const NOW = Date.UTC(2026, 0, 15, 12);
const TYPES = 'http://hl7.org/fhir/resource-types';
const actor = (reference: string) => ({ role: { text: 'recipient' }, reference: { reference } });

function consent(provision: NonNullable<Consent['provision']>, extra: Partial<Consent> = {}): Consent {
  return {
    resourceType: 'Consent',
    id: 'c1',
    status: 'active',
    scope: { coding: [{ system: 'http://terminology.hl7.org/CodeSystem/consentscope', code: 'patient-privacy' }] },
    category: [{ text: 'x' }],
    patient: { reference: 'Patient/p1' },
    provision,
    ...extra,
  };
}

describe('oppositionsOf: what a Consent opposes', () => {
  it('reads a deny provision naming practitioners, roles, services and care teams', () => {
    const o = oppositionsOf(consent({ type: 'deny', actor: [actor('Practitioner/x'), actor('PractitionerRole/r'), actor('Organization/o'), actor('CareTeam/t')] }));
    expect(o).toEqual([{ consent: 'Consent/c1', actors: ['Practitioner/x', 'PractitionerRole/r', 'Organization/o', 'CareTeam/t'], periods: [], classes: [], labels: [] }]);
  });

  it('reads a deny nested in a permit (an exception to a general agreement), inside the permit’s period', () => {
    const period = { start: '2026-01-01' };
    const o = oppositionsOf(consent({ type: 'permit', period, provision: [{ type: 'deny', actor: [actor('Practitioner/x')], class: [{ system: TYPES, code: 'Observation' }] }] }));
    expect(o).toEqual([{ consent: 'Consent/c1', actors: ['Practitioner/x'], periods: [period], classes: ['Observation'], labels: [] }]);
  });

  it('ignores a permit (a mandate), an inactive Consent, and actors it cannot recognise', () => {
    expect(oppositionsOf(consent({ type: 'permit', actor: [actor('RelatedPerson/rp')] }))).toEqual([]);
    expect(oppositionsOf(consent({ type: 'deny', actor: [actor('Practitioner/x')] }, { status: 'inactive' }))).toEqual([]);
    expect(oppositionsOf(consent({ type: 'deny', actor: [{ role: { text: 'x' }, reference: { identifier: { value: '99700000013' } } }, actor('#contained')] }))).toEqual([]);
  });

  it('widens an opposition whose kinds of data it cannot read to every kind (never narrower than written)', () => {
    const [o] = oppositionsOf(consent({ type: 'deny', actor: [actor('Practitioner/x')], class: [{ system: 'urn:oid:1.2.3', code: 'psy-notes' }], securityLabel: [{ code: 'PSY' }] }));
    expect(o).toMatchObject({ classes: [], labels: [] });
    const [l] = oppositionsOf(consent({ type: 'deny', actor: [actor('Practitioner/x')], securityLabel: [{ system: 'http://terminology.hl7.org/CodeSystem/v3-ActCode', code: 'PSY' }] }));
    expect(l!.labels).toEqual(['http://terminology.hl7.org/CodeSystem/v3-ActCode|PSY']);
  });
});

describe('applying: to whom an opposition applies, now', () => {
  const p = practitioner({ practitionerRoles: ['PractitionerRole/r'], organizations: ['Organization/o'] });
  const refs = opposableRefs(p, { teams: new Set(['CareTeam/t']) });
  const recorded = (actors: string[], periods = [] as { start?: string; end?: string }[]) => [{ consent: 'Consent/c1', actors, periods, classes: [], labels: [] }];

  it('applies to her, one of her roles, her service or one of her care teams', () => {
    for (const a of ['Practitioner/prat-martin', 'PractitionerRole/r', 'Organization/o', 'CareTeam/t']) {
      expect(applying(recorded([a]), refs, NOW), a).toHaveLength(1);
    }
    expect(applying(recorded(['Practitioner/other', 'Organization/other']), refs, NOW)).toEqual([]);
  });

  it('applies only while its periods cover now', () => {
    expect(applying(recorded(['Practitioner/prat-martin'], [{ start: '2026-02-01' }]), refs, NOW)).toEqual([]);
    expect(applying(recorded(['Practitioner/prat-martin'], [{ end: '2026-01-01' }]), refs, NOW)).toEqual([]);
    expect(applying(recorded(['Practitioner/prat-martin'], [{ start: '2026-01-01' }, { end: '2026-12-31' }]), refs, NOW)).toHaveLength(1);
  });
});

/** A FHIR client answering Consent searches from a list, counting lookups. */
function fakeClient(consents: Consent[], fail = false) {
  const searches: Record<string, string>[] = [];
  const client = {
    baseUrl: 'http://fhir.test',
    async searchAll<T extends Resource>(_type: string, params: Record<string, string>): Promise<T[]> {
      searches.push(params);
      if (fail) throw new ProxyError('ERR_LOOKUP_FAILED', 'A lookup on the FHIR server failed; access cannot be decided.');
      const wanted = new Set(params.patient!.split(','));
      return consents.filter((c) => wanted.has(c.patient!.reference!)) as unknown as T[];
    },
    search: async () => ({ resourceType: 'Bundle', type: 'searchset' }) as Bundle,
    read: async () => undefined,
    batch: async () => ({ resourceType: 'Bundle', type: 'batch-response' }) as Bundle,
    capabilities: async () => ({ resourceType: 'CapabilityStatement' }) as Resource,
    update: async <T extends Resource>(r: T) => r,
  } satisfies FhirClient;
  return { client, searches };
}

describe('the opposition store', () => {
  const config = careRelationshipsSchema.parse({ cache: { ttlSeconds: 60 } });
  const c1 = consent({ type: 'deny', actor: [actor('Practitioner/x')] });

  it('reads the oppositions of many patients in one search, and caches them per patient for the care-set lifetime', async () => {
    let clock = NOW;
    const { client, searches } = fakeClient([c1]);
    const store = createOppositionStore({ client, config: () => config, now: () => clock });
    const first = await store.of(['p1', 'p2'], { fresh: false });
    expect(first.get('p1')).toHaveLength(1);
    expect(first.get('p2')).toEqual([]);
    expect(searches).toEqual([{ patient: 'Patient/p1,Patient/p2', status: 'active', _count: '1000' }]);
    await store.of(['p1', 'p2'], { fresh: false });
    expect(searches).toHaveLength(1);
    clock += 61_000;
    await store.of(['p1'], { fresh: false });
    expect(searches).toHaveLength(2);
    await store.of(['p1'], { fresh: true });
    expect(searches).toHaveLength(3);
  });

  it('drops a patient’s oppositions when a Consent about her is written through caregate', async () => {
    const { client, searches } = fakeClient([c1]);
    const store = createOppositionStore({ client, config: () => config, now: () => NOW });
    await store.of(['p1', 'p2'], { fresh: false });
    const dropped: string[] = [];
    invalidateAfterWrite(interaction('update', { resourceType: 'Consent', id: 'c1', body: { ...c1, patient: { reference: 'Patient/p2' } } }), [c1], () => true, {
      careSets: () => {},
      principal: () => {},
      stays: () => {},
      oppositions: (patients) => {
        dropped.push(...patients);
        store.invalidatePatients(patients);
      },
    });
    expect(dropped.sort()).toEqual(['p1', 'p2']);
    await store.of(['p1', 'p2'], { fresh: false });
    expect(searches).toHaveLength(2);
  });

  it('does not cache what a lookup read while a Consent about the patient was being written', async () => {
    const { client, searches } = fakeClient([c1]);
    const store = createOppositionStore({ client, config: () => config, now: () => NOW });
    const racing = store.of(['p1'], { fresh: false });
    store.invalidatePatients(['p1']);
    await racing;
    await store.of(['p1'], { fresh: false });
    expect(searches).toHaveLength(2);
  });

  it('fails closed: a failed lookup is an error, never an empty set of oppositions', async () => {
    const store = createOppositionStore({ client: fakeClient([], true).client, config: () => config, now: () => NOW });
    await expect(store.of(['p1'], { fresh: false })).rejects.toMatchObject({ code: 'ERR_LOOKUP_FAILED' });
  });
});

describe('care sets with oppositions', () => {
  const config = careRelationshipsSchema.parse({ cache: { ttlSeconds: 60 } });
  const opposed = consent({ type: 'deny', actor: [actor('Practitioner/prat-martin')] });
  const other = { ...opposed, id: 'c2', patient: { reference: 'Patient/p9' } };
  const base: CareSet = { scope: 'listed', patients: new Map([['p1', [{ source: 'careteam', reference: 'CareTeam/t' }]], ['p2', []]]), resolvedAt: NOW };
  const resolver = { get: async () => base, refresh: async () => base, invalidate: () => {}, clear: () => {}, lookups: 0, cacheStats: () => ({ hits: 0, misses: 0, entries: 0, memberIndex: 0 }) } satisfies CareSetResolver;
  const stays = { careSet: async () => base, clear: () => {} } satisfies StaySets;

  function sets() {
    const { client, searches } = fakeClient([opposed, other]);
    const store = createOppositionStore({ client, config: () => config, now: () => NOW });
    const careSets = createCareSets({
      relationships: resolver,
      mandates: async () => new Map(),
      breakGlass: createBreakGlassStore(createMemoryState().grants, () => NOW),
      stays,
      oppositions: { store, enabled: () => true },
      ttlMs: () => 60_000,
      now: () => NOW,
    });
    return { careSets, store, searches };
  }

  it('carries the oppositions that name the caller, matched once per cached care set until the store changes', async () => {
    const { careSets, store, searches } = sets();
    const of = () => careSets.of({ principal: practitioner(), kind: 'care-relationships', fresh: false });
    expect([...(await of()).opposed!.keys()]).toEqual(['p1']);
    await of();
    expect(searches).toHaveLength(1);
    store.invalidatePatients(['p1']);
    await of();
    expect(searches).toHaveLength(2);
  });

  it('reads the oppositions of the patient a pending break-the-glass grant would open', async () => {
    const { careSets } = sets();
    const set = await careSets.of({ principal: practitioner(), kind: 'care-relationships', fresh: false, pending: [{ patient: 'p9', reason: 'unconscious patient', until: NOW + 1 }] });
    expect(set.opposed?.get('p9')).toEqual([{ consent: 'Consent/c2', classes: [], labels: [] }]);
  });
});
