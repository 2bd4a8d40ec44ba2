import type { Bundle, BundleEntry, Observation, Resource } from '@medplum/fhirtypes';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startDemoFhir, type DemoFhirServer } from '../../src/demo/server.js';
import { PATIENT_COMPARTMENT } from '../../src/fhir/generated/patient-compartment.js';

/**
 * The engine's Patient compartment search (`Patient/<id>/<Type>`, `Patient/<id>/*`, POST `_search`)
 * and `Patient/<id>/$everything`, over HTTP, checked against the engine's own plain searches.
 */
let fhir: DemoFhirServer;
/** An Observation of another patient that pat-dupont performed: in her compartment through `performer` only. */
let performedByDupont: Observation;

beforeAll(async () => {
  fhir = await startDemoFhir({ seed: { patients: 30, practitioners: 15, now: Date.UTC(2026, 0, 15, 12) } });
  performedByDupont = await fhir.repo.createResource<Observation>({
    resourceType: 'Observation',
    status: 'final',
    code: { coding: [{ system: 'http://loinc.org', code: '72166-2' }] },
    subject: { reference: 'Patient/pat-fx-direct' },
    performer: [{ reference: 'Patient/pat-dupont' }],
  });
});
afterAll(async () => {
  await fhir.close();
});

async function call(method: string, path: string, body?: string, type?: string): Promise<{ status: number; json: any }> {
  const headers: Record<string, string> = { accept: 'application/fhir+json' };
  if (type) headers['content-type'] = type;
  const res = await fetch(path.startsWith('http') ? path : `${fhir.url}/${path}`, { method, headers, ...(body !== undefined ? { body } : {}) });
  const text = await res.text();
  return { status: res.status, json: text ? JSON.parse(text) : undefined };
}

const keys = (b: Bundle, mode?: string): string[] =>
  (b.entry ?? []).filter((e) => !mode || e.search?.mode === mode).map((e) => `${e.resource?.resourceType}/${e.resource?.id}`);
const link = (b: Bundle, relation: string): string | undefined => b.link?.find((l) => l.relation === relation)?.url;

/** Follows `next` links from a first page, returning every entry. */
async function allPages(path: string): Promise<BundleEntry[]> {
  const out: BundleEntry[] = [];
  let url: string | undefined = path;
  for (let i = 0; url && i < 50; i++) {
    const page = await call('GET', url);
    expect(page.status).toBe(200);
    out.push(...(page.json.entry ?? []));
    url = link(page.json, 'next');
  }
  return out;
}

/** Whether `resource` holds the literal reference `Patient/<id>` somewhere. */
const mentions = (resource: Resource | undefined, id: string): boolean => JSON.stringify(resource).includes(`"Patient/${id}"`);

describe('Patient compartment search', () => {
  it('returns the patient’s resources of the type with a total, on its own base and compartment path', async () => {
    const res = await call('GET', 'Patient/pat-dupont/Observation');
    expect(res.status).toBe(200);
    expect(res.json.type).toBe('searchset');
    const bySubject = await call('GET', 'Observation?subject=Patient/pat-dupont');
    // Her own Observations, plus the one she performed for someone else.
    expect(keys(res.json).sort()).toEqual([...keys(bySubject.json), `Observation/${performedByDupont.id}`].sort());
    expect(res.json.total).toBe(bySubject.json.total + 1);
    for (const e of res.json.entry as BundleEntry[]) {
      expect(e.fullUrl).toBe(`${fhir.url}/Observation/${e.resource!.id}`);
      expect(e.search?.mode).toBe('match');
    }
    expect(link(res.json, 'self')).toBe(`${fhir.url}/Patient/pat-dupont/Observation?_count=20`);
  });

  it('puts a resource in the compartment when any compartment parameter references the patient', async () => {
    expect(PATIENT_COMPARTMENT['Observation']!.map((l) => l.param)).toContain('performer');
    const dupont = await call('GET', 'Patient/pat-dupont/Observation?_count=100');
    const direct = await call('GET', 'Patient/pat-fx-direct/Observation?_count=100');
    expect(keys(dupont.json)).toContain(`Observation/${performedByDupont.id}`);
    expect(keys(direct.json)).toContain(`Observation/${performedByDupont.id}`);
    const team = await call('GET', 'Patient/pat-dupont/CareTeam');
    expect(keys(team.json)).toContain('CareTeam/ct-dupont');
  });

  it('ANDs the compartment with the other parameters', async () => {
    const all = await call('GET', 'Patient/pat-dupont/Observation?_count=100');
    const observations = (all.json.entry as BundleEntry<Observation>[]).map((e) => e.resource!);
    const code = observations[0]!.code.coding![0]!.code!;
    const expected = observations.filter((o) => o.code.coding?.some((c) => c.code === code)).map((o) => `Observation/${o.id}`);
    const byCode = await call('GET', `Patient/pat-dupont/Observation?code=${code}`);
    expect(keys(byCode.json)).toEqual(expected);
    expect(byCode.json.total).toBe(expected.length);
    // The same code exists for other patients: the compartment is what restricts it.
    const everyone = await call('GET', `Observation?code=${code}&_total=accurate`);
    expect(everyone.json.total).toBeGreaterThan(expected.length);
    expect(link(byCode.json, 'self')).toBe(`${fhir.url}/Patient/pat-dupont/Observation?code=${code}&_count=20`);

    const none = await call('GET', `Patient/pat-dupont/Observation?_id=${everyone.json.entry.find((e: BundleEntry) => !mentions(e.resource, 'pat-dupont')).resource.id}`);
    expect(none.json.total).toBe(0);
  });

  it('pages with _count: total of the whole set, next links on the compartment path that can be followed', async () => {
    const whole = await call('GET', 'Patient/pat-dupont/Observation?_count=100');
    const first = await call('GET', 'Patient/pat-dupont/Observation?_count=2');
    expect(first.json.entry).toHaveLength(2);
    expect(first.json.total).toBe(whole.json.total);
    expect(link(first.json, 'next')).toBe(`${fhir.url}/Patient/pat-dupont/Observation?_count=2&_offset=2`);
    const entries = await allPages('Patient/pat-dupont/Observation?_count=2');
    expect(entries.map((e) => `${e.resource!.resourceType}/${e.resource!.id}`)).toEqual(keys(whole.json));
  });

  it('answers POST Patient/<id>/<Type>/_search like the GET, URL and form parameters both counting', async () => {
    const get = await call('GET', 'Patient/pat-dupont/Observation?status=final&_count=2');
    const post = await call('POST', 'Patient/pat-dupont/Observation/_search?status=final', '_count=2', 'application/x-www-form-urlencoded');
    expect(post.status).toBe(200);
    expect(keys(post.json)).toEqual(keys(get.json));
    expect(post.json.total).toBe(get.json.total);
    expect(link(post.json, 'next')).toBe(link(get.json, 'next'));
  });

  it('searches every compartment type with Patient/<id>/*, the patient included, narrowed by _type', async () => {
    const all = await call('GET', 'Patient/pat-dupont/*?_count=200');
    expect(all.status).toBe(200);
    const found = keys(all.json);
    expect(found[0]).toBe('Patient/pat-dupont');
    expect(found).toEqual(expect.arrayContaining(['CareTeam/ct-dupont', 'Encounter/enc-dupont', 'Provenance/prov-fx-two-patients']));
    for (const e of (all.json.entry as BundleEntry[]).slice(1)) expect(mentions(e.resource, 'pat-dupont'), e.resource!.id).toBe(true);
    expect(found.some((k) => k.startsWith('Practitioner/') || k.startsWith('Organization/'))).toBe(false);
    const two = await call('GET', 'Patient/pat-dupont/*?_type=Observation,Condition&_count=200');
    expect(new Set(keys(two.json).map((k) => k.split('/')[0]))).toEqual(new Set(['Observation', 'Condition']));
    expect(link(two.json, 'self')).toBe(`${fhir.url}/Patient/pat-dupont/*?_type=Observation%2CCondition&_count=200`);
  });

  it('refuses a type outside the compartment with 400, an unknown type with 404, and gives an unknown patient an empty set', async () => {
    const outside = await call('GET', 'Patient/pat-dupont/Practitioner');
    expect(outside.status).toBe(400);
    expect(outside.json.resourceType).toBe('OperationOutcome');
    expect((await call('GET', 'Patient/pat-dupont/*?_type=Organization')).status).toBe(400);
    const unknownType = await call('GET', 'Patient/pat-dupont/NotAType');
    expect(unknownType.status).toBe(404);
    expect(unknownType.json.resourceType).toBe('OperationOutcome');
    const unknownPatient = await call('GET', 'Patient/no-such-patient/Observation');
    expect(unknownPatient.status).toBe(200);
    expect(unknownPatient.json.total).toBe(0);
    expect(unknownPatient.json.entry).toBeUndefined();
    expect((await call('GET', 'Patient/pat-dupont/Observation?not-a-param=1')).status).toBe(400);
  });

  it('keeps Patient/<id>/_history the instance history', async () => {
    const res = await call('GET', 'Patient/pat-dupont/_history');
    expect(res.status).toBe(200);
    expect(res.json.type).toBe('history');
  });
});

describe('Patient/<id>/$everything', () => {
  it('returns the patient first, every resource of her compartment, then what they reference', async () => {
    const res = await call('GET', 'Patient/pat-dupont/$everything?_count=1000');
    expect(res.status).toBe(200);
    expect(res.json.type).toBe('searchset');
    const matches = keys(res.json, 'match');
    expect(matches[0]).toBe('Patient/pat-dupont');
    const compartment = await call('GET', 'Patient/pat-dupont/*?_count=1000');
    expect(matches).toEqual(keys(compartment.json));
    expect(res.json.total).toBe(res.json.entry.length);
    const included = keys(res.json, 'include');
    // Referenced resources that are not patient data: staff, services, the report's Binary.
    expect(included).toEqual(expect.arrayContaining(['Practitioner/prat-martin', 'Organization/org-cardio']));
    expect(included.some((k) => k.startsWith('Binary/'))).toBe(true);
    // prov-fx-two-patients also targets pat-fx-ortho: that patient and her record are not pulled in.
    expect(keys(res.json).filter((k) => k.startsWith('Patient/'))).toEqual(['Patient/pat-dupont']);
    expect(included.every((k) => !PATIENT_COMPARTMENT[k.split('/')[0]!])).toBe(true);
    for (const e of res.json.entry as BundleEntry[]) expect(e.fullUrl).toBe(`${fhir.url}/${e.resource!.resourceType}/${e.resource!.id}`);
  });

  it('pages with _count and next links on the operation’s path', async () => {
    const whole = await call('GET', 'Patient/pat-dupont/$everything?_count=1000');
    const first = await call('GET', 'Patient/pat-dupont/$everything?_count=5');
    expect(first.json.entry).toHaveLength(5);
    expect(first.json.total).toBe(whole.json.total);
    expect(link(first.json, 'next')).toBe(`${fhir.url}/Patient/pat-dupont/$everything?_count=5&_offset=5`);
    const entries = await allPages('Patient/pat-dupont/$everything?_count=5');
    expect(entries.map((e) => `${e.resource!.resourceType}/${e.resource!.id}`)).toEqual(keys(whole.json));
  });

  it('lists the patient’s AuditEvents last, so that the audit of each page does not shift the next', async () => {
    const before = await call('GET', 'Patient/pat-dupont/$everything?_count=1000');
    const event = await fhir.repo.createResource({
      resourceType: 'AuditEvent',
      type: { system: 'http://terminology.hl7.org/CodeSystem/audit-event-type', code: 'rest' },
      recorded: '2026-01-15T12:30:00Z',
      agent: [{ requestor: true, who: { reference: 'Practitioner/prat-martin' } }],
      source: { observer: { display: 'test' } },
      entity: [{ what: { reference: 'Patient/pat-dupont' } }],
    });
    try {
      const after = await call('GET', 'Patient/pat-dupont/$everything?_count=1000');
      expect(keys(after.json)).toEqual([...keys(before.json), `AuditEvent/${event.id}`]);
      const star = await call('GET', 'Patient/pat-dupont/*?_count=1000');
      expect(keys(star.json).at(-1)).toBe(`AuditEvent/${event.id}`);
    } finally {
      await fhir.repo.deleteResource('AuditEvent', event.id);
    }
  });

  it('keeps the listed types with _type and the recently updated with _since', async () => {
    const obs = await call('GET', 'Patient/pat-dupont/$everything?_type=Observation,Condition&_count=100');
    expect(new Set(keys(obs.json).map((k) => k.split('/')[0]))).toEqual(new Set(['Observation', 'Condition']));
    expect(link(obs.json, 'self')).toContain('_type=Observation%2CCondition');
    // Seeded resources were last updated at the seed's "now" (12:00); only the Observation created by this test is newer.
    const since = await call('GET', 'Patient/pat-dupont/$everything?_since=2026-01-15T12:00:01Z');
    expect(keys(since.json)).toEqual([`Observation/${performedByDupont.id}`]);
  });

  it('answers POST with or without a Parameters body', async () => {
    const get = await call('GET', 'Patient/pat-dupont/$everything?_count=3&_type=Observation');
    const post = await call(
      'POST',
      'Patient/pat-dupont/$everything',
      JSON.stringify({ resourceType: 'Parameters', parameter: [{ name: '_count', valueInteger: 3 }, { name: '_type', valueString: 'Observation' }] }),
      'application/fhir+json',
    );
    expect(post.status).toBe(200);
    expect(keys(post.json)).toEqual(keys(get.json));
    expect(post.json.total).toBe(get.json.total);
    const bare = await call('POST', 'Patient/pat-dupont/$everything');
    expect(bare.status).toBe(200);
    expect(keys(bare.json)[0]).toBe('Patient/pat-dupont');
  });

  it('answers 404 for an unknown patient and 400 for a parameter it does not implement', async () => {
    const unknown = await call('GET', 'Patient/no-such-patient/$everything');
    expect(unknown.status).toBe(404);
    expect(unknown.json.resourceType).toBe('OperationOutcome');
    expect((await call('GET', 'Patient/pat-dupont/$everything?start=2020-01-01')).status).toBe(400);
    expect((await call('GET', 'Patient/pat-dupont/$everything?_type=NotAType')).status).toBe(400);
    expect((await call('POST', 'Patient/pat-dupont/$everything', JSON.stringify({ resourceType: 'Patient' }), 'application/fhir+json')).status).toBe(400);
  });

  it('is advertised in the CapabilityStatement, with the Patient compartment', async () => {
    const cs = await call('GET', 'metadata');
    const rest = cs.json.rest[0];
    expect(rest.compartment).toEqual(['http://hl7.org/fhir/CompartmentDefinition/patient']);
    const patient = rest.resource.find((r: { type: string }) => r.type === 'Patient');
    expect(patient.operation).toEqual([expect.objectContaining({ name: 'everything', definition: 'http://hl7.org/fhir/OperationDefinition/Patient-everything' })]);
    const observation = rest.resource.find((r: { type: string }) => r.type === 'Observation');
    expect(observation.operation).toBeUndefined();
  });
});
