import { evalFhirPathTyped, getSearchParameterDetails, globalSchema, parseSearchRequest, toTypedValue } from '@medplum/core';
import { MemoryRepository } from '@medplum/fhir-router';
import type { Bundle, CareTeam, Observation, Resource } from '@medplum/fhirtypes';
import { beforeAll, describe, expect, it } from 'vitest';
import { DemoRepository, applyJsonPatch, compileSimplePath, dateRange } from '../../src/demo/engine.js';
import { IPP_SYSTEM, PERSONAS } from '../../src/demo/personas.js';
import { buildHospital } from '../../src/demo/seed.js';

const NOW = Date.UTC(2026, 0, 15, 12);
let resources: Resource[];
let indexed: DemoRepository;
let scanned: DemoRepository;
let medplum: MemoryRepository;

beforeAll(async () => {
  resources = buildHospital({ patients: 30, practitioners: 20, now: NOW });
  indexed = new DemoRepository();
  scanned = new DemoRepository({ indexing: false });
  indexed.load(structuredClone(resources), new Date(NOW));
  scanned.load(structuredClone(resources), new Date(NOW));
  medplum = new MemoryRepository();
  for (const r of resources) await medplum.createResource(structuredClone(r));
});

const ids = (bundle: Bundle): string[] =>
  (bundle.entry ?? []).map((e) => `${e.search?.mode ?? 'match'}:${e.resource?.resourceType}/${e.resource?.id}`);

async function both(query: string): Promise<{ indexed: string[]; scanned: string[]; total: number | undefined }> {
  const a = await indexed.search(parseSearchRequest(query));
  const b = await scanned.search(parseSearchRequest(query));
  expect(a.total).toBe(b.total);
  return { indexed: ids(a), scanned: ids(b), total: a.total };
}

const firstCode = (patient: string): string =>
  (resources.find((r) => r.resourceType === 'Observation' && (r as Observation).subject?.reference === `Patient/${patient}`) as Observation)
    .code.coding?.[0]?.code ?? '';

const someIpp = (): string => {
  const p = resources.find((r) => r.id === 'pat-00007') as { identifier: { system: string; value: string }[] };
  return p.identifier.find((i) => i.system === IPP_SYSTEM)?.value ?? '';
};

describe('indexed search', () => {
  it('returns what medplum returns for reference and identifier/code searches', async () => {
    const queries = [
      'Observation?subject=Patient/pat-00005',
      'Observation?patient=Patient/pat-dupont',
      `Observation?subject=Patient/pat-00005&code=http://loinc.org|${firstCode('pat-00005')}`,
      'CareTeam?participant=Practitioner/prat-martin',
      'CareTeam?participant=CareTeam/ct-fx-nested-inner',
      'CareTeam?subject=Patient/pat-fx-direct',
      'Encounter?participant=PractitionerRole/role-bernard-cardio',
      'Encounter?practitioner=Practitioner/prat-martin',
      'Encounter?patient=Patient/pat-00011',
      'PractitionerRole?practitioner=Practitioner/prat-martin',
      'Provenance?target=DocumentReference/doc-000001',
      'Consent?actor=RelatedPerson/rp-dupont',
      `Patient?identifier=${IPP_SYSTEM}|${someIpp()}`,
      `Practitioner?identifier=https://rpps.esante.gouv.fr|${PERSONAS.clinician.rpps}`,
      `Practitioner?identifier=urn:oid:1.2.250.1.71.4.2.1|${PERSONAS.nurse.idNatPs}`,
      'Condition?code=http://hl7.org/fhir/sid/icd-10|I10',
      'Condition?code=I10',
      'PractitionerRole?role=https://chu-demo.example/fhir/CodeSystem/role|dim',
      'Organization?identifier=https://finess.esante.gouv.fr|990000001',
    ];
    for (const query of queries) {
      const q = `${query}&_count=1000`;
      const ours = await indexed.search(parseSearchRequest(q));
      const theirs = await medplum.search(parseSearchRequest(q));
      expect(ids(ours), query).toEqual(ids(theirs));
      expect(ours.total, query).toBe(theirs.total);
      expect(ours.total, query).toBeGreaterThan(0);
    }
  });

  it('returns the same with and without indexes, for every kind of filter', async () => {
    const queries = [
      'Observation?patient=pat-00005',
      'Observation?subject=pat-00005&_count=3&_offset=2',
      'CareTeam?participant=Practitioner/prat-martin&status=active',
      'CareTeam?status:not=active',
      'CareTeam?subject:missing=true',
      'Encounter?status=in-progress,arrived,triaged,onleave',
      'Encounter?participant=Practitioner/prat-martin&date=ge2026-01-01',
      'Encounter?date=lt2020',
      'Patient?name=dup',
      'Patient?name:exact=DUPONT',
      'Patient?birthdate=1958-04-12',
      'Patient?_has:Condition:patient:code=B20',
      'Observation?subject:Patient.name=dupont',
      `Observation?patient.identifier=${IPP_SYSTEM}|${someIpp()}`,
      'Observation?patient=pat-dupont&_sort=-date',
      'PractitionerRole?active=false',
      'Patient?_id=pat-dupont,pat-fx-direct',
      'CareTeam?participant:identifier=https://rpps.esante.gouv.fr|99700000013',
    ];
    for (const query of queries) {
      const r = await both(query);
      expect(r.indexed, query).toEqual(r.scanned);
    }
  });

  it('keeps indexes right through create, update, delete and a rolled-back transaction', async () => {
    const obs: Observation = { resourceType: 'Observation', status: 'final', code: { text: 'x' }, subject: { reference: 'Patient/pat-00003' } };
    const created = await indexed.createResource(obs);
    await scanned.createResource({ ...obs, id: created.id }, { assignedId: true });
    await indexed.updateResource({ ...created, subject: { reference: 'Patient/pat-00004' } });
    await scanned.updateResource({ ...created, subject: { reference: 'Patient/pat-00004' } });
    for (const q of ['Observation?patient=pat-00003', 'Observation?patient=pat-00004']) {
      const r = await both(q);
      expect(r.indexed, q).toEqual(r.scanned);
    }
    expect((await both('Observation?patient=pat-00004')).indexed).toContain(`match:Observation/${created.id}`);

    await expect(
      indexed.withTransaction(async () => {
        await indexed.deleteResource('Observation', created.id);
        await indexed.createResource({ ...obs, subject: { reference: 'Patient/pat-00003' } });
        throw new Error('abort');
      }),
    ).rejects.toThrow('abort');
    expect((await indexed.readResource('Observation', created.id)).meta?.versionId).toBe('2');
    for (const q of ['Observation?patient=pat-00003', 'Observation?patient=pat-00004']) {
      const r = await both(q);
      expect(r.indexed, q).toEqual(r.scanned);
    }

    await indexed.deleteResource('Observation', created.id);
    await scanned.deleteResource('Observation', created.id);
    const after = await both('Observation?patient=pat-00004');
    expect(after.indexed).toEqual(after.scanned);
    expect(after.indexed).not.toContain(`match:Observation/${created.id}`);
  });

  it('matches a code token exactly: status=active does not return inactive teams (medplum does)', async () => {
    const ours = ids(await indexed.search(parseSearchRequest('CareTeam?status=active&_count=1000')));
    const theirs = ids(await medplum.search(parseSearchRequest('CareTeam?status=active&_count=1000')));
    expect(ours).not.toContain('match:CareTeam/ct-fx-inactive');
    expect(theirs).toContain('match:CareTeam/ct-fx-inactive');
    const teams = resources.filter((r): r is CareTeam => r.resourceType === 'CareTeam');
    expect(ours).toHaveLength(teams.filter((t) => t.status === 'active').length);
  });

  it('accepts a bare id for a reference parameter, like Type/id', async () => {
    const bare = ids(await indexed.search(parseSearchRequest('Observation?patient=pat-dupont')));
    const typed = ids(await indexed.search(parseSearchRequest('Observation?patient=Patient/pat-dupont')));
    const absolute = ids(await indexed.search(parseSearchRequest(`Observation?patient=${indexed.baseUrl}/Patient/pat-dupont`)));
    expect(bare).toEqual(typed);
    expect(absolute).toEqual(typed);
    expect(bare.length).toBeGreaterThan(0);
  });

  it('follows chains and reverse chains', async () => {
    const chained = ids(await indexed.search(parseSearchRequest('Observation?subject:Patient.name=dupont&_count=100')));
    const direct = [
      ...ids(await indexed.search(parseSearchRequest('Observation?patient=pat-dupont,pat-fx-mandate-expired&_count=100'))),
    ];
    expect(chained.sort()).toEqual(direct.sort());
    const has = await indexed.search(parseSearchRequest('Patient?_has:CareTeam:patient:_id=ct-fx-direct'));
    expect(ids(has)).toEqual(['match:Patient/pat-fx-direct']);
  });

  it('includes, iterates and never counts includes in the total', async () => {
    const b = await indexed.search(
      parseSearchRequest('CareTeam?_id=ct-fx-nested-outer&_include:iterate=CareTeam:participant'),
    );
    expect(b.total).toBe(1);
    const found = ids(b);
    expect(found).toContain('include:CareTeam/ct-fx-nested-inner');
    expect(found).toContain('include:Practitioner/prat-martin');
    const rev = ids(await indexed.search(parseSearchRequest('Patient?_id=pat-dupont&_revinclude=Consent:patient')));
    expect(rev).toContain('include:Consent/consent-dupont-mandate');
  });

  it('refuses what it does not implement with 400 rather than an empty result', async () => {
    for (const query of ['Observation?value-quantity=gt5', 'Observation?code:below=8867', 'Patient?_text=x', 'Patient?foo=bar', 'Patient?_sort=nope']) {
      await expect(indexed.search(parseSearchRequest(query)), query).rejects.toMatchObject({
        outcome: { issue: [{ code: 'invalid' }] },
      });
    }
  });

  it('pages with a default of 20 and caps _count at 1000', async () => {
    const page = await indexed.search(parseSearchRequest('Observation'));
    expect(page.entry).toHaveLength(20);
    const big = await indexed.search(parseSearchRequest('Observation?_count=5000'));
    expect(big.entry?.length).toBe(Math.min(1000, big.total ?? 0));
  });
});

describe('date ranges', () => {
  it('gives each precision its implicit range', () => {
    expect(dateRange('2024')).toEqual({ lo: Date.UTC(2024, 0, 1), hi: Date.UTC(2025, 0, 1) });
    expect(dateRange('2024-02')).toEqual({ lo: Date.UTC(2024, 1, 1), hi: Date.UTC(2024, 2, 1) });
    expect(dateRange('2024-02-29')).toEqual({ lo: Date.UTC(2024, 1, 29), hi: Date.UTC(2024, 2, 1) });
    expect(dateRange('2024-02-29T10:00:00+01:00')).toEqual({ lo: Date.UTC(2024, 1, 29, 9), hi: Date.UTC(2024, 1, 29, 9, 0, 1) });
    expect(dateRange('yesterday')).toBeUndefined();
  });

  it('treats an open Period as still running', async () => {
    const running = ids(await indexed.search(parseSearchRequest('CareTeam?_id=ct-fx-direct&date=ge2030-01-01')));
    const ended = ids(await indexed.search(parseSearchRequest('CareTeam?_id=ct-fx-ended&date=ge2030-01-01')));
    expect(running).toEqual(['match:CareTeam/ct-fx-direct']);
    expect(ended).toEqual([]);
  });
});

describe('JSON Patch', () => {
  it('applies RFC 6902 operations to a copy', () => {
    const doc = { a: [1, 2], b: { c: 'x' } };
    const out = applyJsonPatch(doc, [
      { op: 'add', path: '/a/-', value: 3 },
      { op: 'replace', path: '/b/c', value: 'y' },
      { op: 'move', from: '/b/c', path: '/d' },
      { op: 'copy', from: '/a/0', path: '/a/0' },
      { op: 'remove', path: '/b' },
      { op: 'test', path: '/d', value: 'y' },
    ]);
    expect(out).toEqual({ a: [1, 1, 2, 3], d: 'y' });
    expect(doc).toEqual({ a: [1, 2], b: { c: 'x' } });
  });

  it('refuses a failed test, a missing path and an unknown op', () => {
    expect(() => applyJsonPatch({ a: 1 }, [{ op: 'test', path: '/a', value: 2 }])).toThrow();
    expect(() => applyJsonPatch({ a: 1 }, [{ op: 'remove', path: '/b' }])).toThrow();
    expect(() => applyJsonPatch({ a: 1 }, [{ op: 'frobnicate', path: '/a' }])).toThrow();
  });
});

describe('compiled search parameter paths', () => {
  it('give the same values as the FHIRPath interpreter on every seeded resource', () => {
    let compared = 0;
    for (const type of new Set(resources.map((r) => r.resourceType))) {
      const of = resources.filter((r) => r.resourceType === type);
      for (const param of Object.values(globalSchema.types[type]?.searchParams ?? {})) {
        let atom;
        try {
          atom = getSearchParameterDetails(type, param).parsedExpression;
        } catch {
          continue;
        }
        const fast = compileSimplePath(type, atom.toString());
        if (!fast) continue;
        for (const r of of) {
          const expected = evalFhirPathTyped(atom, [toTypedValue(r)]).map((tv) => JSON.stringify(tv.value));
          expect(fast(r).map((tv) => JSON.stringify(tv.value)), `${type}.${param.code} on ${r.id}`).toEqual(expected);
          compared++;
        }
      }
    }
    expect(compared).toBeGreaterThan(10_000);
  });
});
