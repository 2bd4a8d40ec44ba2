import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import request from 'supertest';
import { join } from 'node:path';
import type { AuditEvent, Bundle, BundleEntry, Resource } from '@medplum/fhirtypes';
import { readSpoolDir } from '../../src/audit/spool.js';
import { DEMO_FIXTURES } from '../../src/demo/seed.js';
import type { PersonaName } from '../../src/demo/personas.js';
import { startStack, type Stack } from '../helpers/stack.js';

/**
 * The permit side of Patient compartment search and `Patient/<id>/$everything`, end to end: the
 * demo engine answers them, caregate lets through only what the caller may see, judging every
 * entry (including resources linked to the patient only indirectly), and audits the patient.
 */
let stack: Stack;
/** A report of pat-dupont with two attachments: its own Binary, and one whose securityContext is another patient. */
const doc = { id: '', ownBinary: '', foreignBinary: '' };

async function upstream(method: string, path: string, body: unknown): Promise<Resource> {
  const res = await fetch(`${stack.upstreamUrl}/${path}`, { method, headers: { 'content-type': 'application/fhir+json' }, body: JSON.stringify(body) });
  expect(res.status).toBeLessThan(300);
  return (await res.json()) as Resource;
}

beforeAll(async () => {
  stack = await startStack({ patients: 50 });
  const text = Buffer.from('report').toString('base64');
  doc.foreignBinary = (await upstream('POST', 'Binary', { resourceType: 'Binary', contentType: 'text/plain', data: text, securityContext: { reference: 'Patient/pat-fx-ortho' } })).id!;
  doc.ownBinary = (await upstream('POST', 'Binary', { resourceType: 'Binary', contentType: 'text/plain', data: text })).id!;
  doc.id = (
    await upstream('POST', 'DocumentReference', {
      resourceType: 'DocumentReference',
      status: 'current',
      subject: { reference: 'Patient/pat-dupont' },
      content: [
        { attachment: { contentType: 'text/plain', url: `Binary/${doc.ownBinary}` } },
        { attachment: { contentType: 'text/plain', url: `Binary/${doc.foreignBinary}` } },
      ],
    })
  ).id!;
  // Linked to the patient only through the DocumentReference: caregate must resolve it.
  await upstream('PUT', `Binary/${doc.ownBinary}`, {
    resourceType: 'Binary',
    id: doc.ownBinary,
    contentType: 'text/plain',
    data: text,
    securityContext: { reference: `DocumentReference/${doc.id}` },
  });
});
afterAll(async () => stack?.close());

const base = () => new URL(stack.url).pathname;
const as = (persona: PersonaName, requestId?: string) => ({
  get: (p: string) => {
    const r = request(stack.gate.server).get(p.startsWith('/') ? base() + p : new URL(p).pathname + new URL(p).search).set(stack.auth(persona));
    return requestId ? r.set('x-request-id', requestId) : r;
  },
  post: (p: string, body: string, type: string) => {
    const r = request(stack.gate.server).post(base() + p).set(stack.auth(persona)).set('content-type', type).send(body);
    return requestId ? r.set('x-request-id', requestId) : r;
  },
});

const entries = (b: Bundle): BundleEntry[] => b.entry ?? [];
const key = (r: Resource | undefined) => `${r?.resourceType}/${r?.id}`;
/** Every `Patient/<id>` a resource refers to, anywhere in it. */
const patientRefs = (r: Resource | undefined): Set<string> =>
  new Set([...JSON.stringify(r).matchAll(/"(?:[^"]*\/)?Patient\/([A-Za-z0-9\-.]+)"/g)].map((m) => m[1]!));

/** The entries of every page, following caregate's (signed) next links. */
async function allPages(persona: PersonaName, first: string): Promise<BundleEntry[]> {
  const out: BundleEntry[] = [];
  let url: string | undefined = first;
  for (let i = 0; url && i < 20; i++) {
    const res = await as(persona).get(url);
    expect(res.status, url).toBe(200);
    out.push(...entries(res.body));
    url = (res.body as Bundle).link?.find((l) => l.relation === 'next')?.url;
  }
  return out;
}

async function auditOf(requestId: string): Promise<AuditEvent[]> {
  // strict audit mode: the event is durable before the answer leaves.
  return (await readSpoolDir(join(stack.dir, 'audit'))).events.filter((e) =>
    e.entity?.some((en) => en.what?.identifier?.value === requestId && en.type?.code === 'XrequestId'),
  );
}
const auditedPatients = (events: AuditEvent[]): string[] =>
  [...new Set(events.flatMap((e) => (e.entity ?? []).filter((en) => en.role?.code === '1').map((en) => en.what?.reference ?? '')))].sort();

const OWN = 'pat-dupont';
const OUTSIDE = 'pat-fx-ortho';

describe('a clinician in the care team', () => {
  it('the fixtures hold: pat-dupont is hers, pat-fx-ortho is not', () => {
    expect(DEMO_FIXTURES.clinician.mustSee.map((f) => f.patient)).toContain(OWN);
    expect(DEMO_FIXTURES.clinician.mustNotSee.map((f) => f.patient)).toContain(OUTSIDE);
  });

  it('gets Patient/<own patient>/Observation with only that patient’s Observations', async () => {
    const res = await as('clinician').get(`/Patient/${OWN}/Observation?_count=100`);
    expect(res.status).toBe(200);
    const list = entries(res.body);
    expect(list.length).toBeGreaterThan(0);
    for (const e of list) {
      expect(e.resource?.resourceType).toBe('Observation');
      expect((e.resource as { subject?: { reference?: string } }).subject?.reference).toBe(`Patient/${OWN}`);
    }
    // Same answer as the type-level search the proxy already served.
    const bySubject = await as('clinician').get(`/Observation?subject=Patient/${OWN}&_count=100`);
    expect(list.map((e) => key(e.resource)).sort()).toEqual(entries(bySubject.body).map((e) => key(e.resource)).sort());
  });

  it('pages the compartment through signed links, each page judged again', async () => {
    const whole = await as('clinician').get(`/Patient/${OWN}/Observation?_count=100`);
    const first = await as('clinician').get(`/Patient/${OWN}/Observation?_count=1`);
    const next = (first.body as Bundle).link?.find((l) => l.relation === 'next')?.url;
    expect(next).toBeDefined();
    expect(next).not.toContain(stack.upstreamUrl);
    const paged = await allPages('clinician', `/Patient/${OWN}/Observation?_count=1`);
    expect(paged.map((e) => key(e.resource))).toEqual(entries(whole.body).map((e) => key(e.resource)));
    // Another user cannot replay her paging link.
    expect((await as('nurse').get(next!)).status).toBeGreaterThanOrEqual(400);
  });

  it('answers POST Patient/<own patient>/Observation/_search like the GET', async () => {
    const get = await as('clinician').get(`/Patient/${OWN}/Observation?_count=100`);
    const post = await as('clinician').post(`/Patient/${OWN}/Observation/_search`, '_count=100', 'application/x-www-form-urlencoded');
    expect(post.status).toBe(200);
    expect(entries(post.body).map((e) => key(e.resource))).toEqual(entries(get.body).map((e) => key(e.resource)));
  });

  it('gets Patient/<own patient>/* with every compartment type of that patient only', async () => {
    const res = await as('clinician').get(`/Patient/${OWN}/*?_count=200`);
    expect(res.status).toBe(200);
    const keys = entries(res.body).map((e) => key(e.resource));
    expect(keys[0]).toBe(`Patient/${OWN}`);
    expect(keys).toEqual(expect.arrayContaining(['CareTeam/ct-dupont', 'Encounter/enc-dupont', `DocumentReference/${doc.id}`]));
    expect(keys).not.toContain('Provenance/prov-fx-two-patients');
    for (const e of entries(res.body)) expect([...patientRefs(e.resource)].every((p) => p === OWN), key(e.resource)).toBe(true);
    expect((await as('clinician').get(`/Patient/${OUTSIDE}/*`)).status).toBe(403);
  });

  it('gets Patient/<own patient>/$everything with her record only: the two-patient Provenance is withheld', async () => {
    const res = await as('clinician').get(`/Patient/${OWN}/$everything?_count=200`);
    expect(res.status).toBe(200);
    const list = entries(res.body);
    const keys = list.map((e) => key(e.resource));
    expect(keys[0]).toBe(`Patient/${OWN}`);
    expect(keys).toEqual(expect.arrayContaining([`CareTeam/ct-dupont`, `Encounter/enc-dupont`]));
    expect(keys.some((k) => k.startsWith('Observation/'))).toBe(true);
    // prov-fx-two-patients targets her and pat-fx-ortho: the engine returns it, caregate must not.
    expect(keys).not.toContain('Provenance/prov-fx-two-patients');
    // Her report's Binary is judged through its DocumentReference; the one of another patient is withheld.
    expect(keys).toEqual(expect.arrayContaining([`DocumentReference/${doc.id}`, `Binary/${doc.ownBinary}`]));
    expect(keys).not.toContain(`Binary/${doc.foreignBinary}`);
    for (const e of list) {
      const refs = patientRefs(e.resource);
      expect([...refs].every((p) => p === OWN), `${key(e.resource)} names ${[...refs].join(',')}`).toBe(true);
    }
    // No other patient's resource and no Bundle.total computed over unfiltered data.
    expect(res.body.total).toBeUndefined();
    expect(res.text).not.toContain(stack.upstreamUrl);
  });

  it('pages $everything through signed links without ever leaving her record', async () => {
    const whole = await as('clinician').get(`/Patient/${OWN}/$everything?_count=200`);
    const paged = await allPages('clinician', `/Patient/${OWN}/$everything?_count=4`);
    expect(paged.map((e) => key(e.resource))).toEqual(entries(whole.body).map((e) => key(e.resource)));
  });

  it('is not shown the patient’s audit trail that the FHIR server returns in $everything', async () => {
    // caregate ships its AuditEvents to this server; they are in the patient's compartment.
    const upstreamAudit = async () => {
      const res = await fetch(`${stack.upstreamUrl}/Patient/${OWN}/*?_type=AuditEvent&_count=1`);
      return ((await res.json()) as Bundle).total ?? 0;
    };
    const end = Date.now() + 5000;
    while ((await upstreamAudit()) === 0 && Date.now() < end) await new Promise((r) => setTimeout(r, 50));
    expect(await upstreamAudit()).toBeGreaterThan(0);
    const res = await as('clinician').get(`/Patient/${OWN}/$everything?_count=500`);
    expect(res.status).toBe(200);
    expect(entries(res.body).filter((e) => e.resource?.resourceType === 'AuditEvent')).toEqual([]);
    expect(entries(res.body).length).toBeGreaterThan(1);
  });

  it('is refused the compartment and $everything of a patient outside her care', async () => {
    for (const p of [`/Patient/${OUTSIDE}/Observation`, `/Patient/${OUTSIDE}/$everything`, `/Patient/${OUTSIDE}/Provenance`]) {
      const res = await as('clinician').get(p);
      expect(res.status, p).toBe(403);
      expect(res.body.resourceType).toBe('OperationOutcome');
    }
    const post = await as('clinician').post(`/Patient/${OUTSIDE}/Observation/_search`, '_count=10', 'application/x-www-form-urlencoded');
    expect(post.status).toBe(403);
  });
});

describe('the DIM', () => {
  it('sees any patient’s compartment and $everything, the two-patient Provenance included', async () => {
    const obs = await as('dim').get(`/Patient/${OUTSIDE}/Observation?_count=100`);
    expect(obs.status).toBe(200);
    expect(entries(obs.body).length).toBeGreaterThan(0);
    for (const e of entries(obs.body)) expect((e.resource as { subject?: { reference?: string } }).subject?.reference).toBe(`Patient/${OUTSIDE}`);
    const all = await as('dim').get(`/Patient/${OUTSIDE}/$everything?_count=200`);
    expect(all.status).toBe(200);
    const keys = entries(all.body).map((e) => key(e.resource));
    expect(keys[0]).toBe(`Patient/${OUTSIDE}`);
    expect(keys).toContain('Provenance/prov-fx-two-patients');
    const dupont = await as('dim').get(`/Patient/${OWN}/$everything?_count=200`);
    expect(entries(dupont.body).map((e) => key(e.resource))).toEqual(
      expect.arrayContaining(['Provenance/prov-fx-two-patients', `Binary/${doc.ownBinary}`, `Binary/${doc.foreignBinary}`]),
    );
  });
});

describe('the audit trail through the FHIR API', () => {
  it('is read by the DIM: the AuditEvents of a patient, by search and in $everything', async () => {
    await as('clinician').get(`/Patient/${OWN}`);
    const end = Date.now() + 5000;
    let found: BundleEntry[] = [];
    while (found.length === 0 && Date.now() < end) {
      const res = await as('dim').get(`/AuditEvent?patient=${OWN}&_count=50`);
      expect(res.status).toBe(200);
      found = entries(res.body);
      if (found.length === 0) await new Promise((r) => setTimeout(r, 50));
    }
    expect(found.length).toBeGreaterThan(0);
    for (const e of found) {
      expect(e.resource?.resourceType).toBe('AuditEvent');
      expect(auditedPatients([e.resource as AuditEvent])).toContain(`Patient/${OWN}`);
    }
    const everything = await as('dim').get(`/Patient/${OWN}/$everything?_count=1000`);
    expect(entries(everything.body).some((e) => e.resource?.resourceType === 'AuditEvent')).toBe(true);
  });

  it('is refused to a clinician, even for her own patient', async () => {
    const res = await as('clinician').get(`/AuditEvent?patient=${OWN}`);
    expect(res.status).toBe(403);
  });
});

describe('audit', () => {
  it('records the patient of a permitted compartment search and $everything, and no one else', async () => {
    expect((await as('clinician', 'cmp-obs').get(`/Patient/${OWN}/Observation`)).status).toBe(200);
    expect((await as('clinician', 'cmp-everything').get(`/Patient/${OWN}/$everything?_count=200`)).status).toBe(200);
    for (const id of ['cmp-obs', 'cmp-everything']) {
      const events = await auditOf(id);
      expect(events.length, id).toBeGreaterThan(0);
      expect(events.every((e) => e.outcome === '0'), id).toBe(true);
      expect(auditedPatients(events), id).toEqual([`Patient/${OWN}`]);
    }
  });

  it('records the patient of a refused one, and every patient the DIM was shown', async () => {
    expect((await as('clinician', 'cmp-refused').get(`/Patient/${OUTSIDE}/$everything`)).status).toBe(403);
    const refused = await auditOf('cmp-refused');
    expect(refused.map((e) => e.outcome)).toEqual(['4']);
    expect(auditedPatients(refused)).toEqual([`Patient/${OUTSIDE}`]);

    expect((await as('dim', 'cmp-dim').get(`/Patient/${OUTSIDE}/$everything?_count=200`)).status).toBe(200);
    // The Provenance shown to the DIM also names pat-dupont: she is audited too.
    expect(auditedPatients(await auditOf('cmp-dim'))).toEqual([`Patient/${OWN}`, `Patient/${OUTSIDE}`].sort());
  });
});
