import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import request from 'supertest';
import type { PersonaName } from '../../src/demo/personas.js';
import { startStack, type Stack } from '../helpers/stack.js';

/**
 * A clinician's everyday workflows with an unchanged client, against the embedded engine: linked
 * records, stored documents, break-the-glass searches, a relationship just added, and searches that
 * need no narrowing.
 */
let s: Stack;
beforeAll(async () => {
  s = await startStack();
});
afterAll(async () => s?.close());

const path = (p: string) => new URL(s.url).pathname + p;
const as = (persona: PersonaName) => ({
  get: (p: string) => request(s.gate.server).get(path(p)).set(s.auth(persona)),
});
const category = 'http://terminology.hl7.org/CodeSystem/v3-ActReason#BTG; scheme="http://hl7.org/fhir/tag/security"';

type Event = { entity?: { type?: { code?: string }; detail?: { type: string; valueString: string }[]; what?: { reference?: string; identifier?: { value?: string } } }[] };

/** The AuditEvents of one request id, once shipped to the engine. */
async function auditOf(requestId: string): Promise<Event[]> {
  for (let i = 0; i < 100; i++) {
    const found: Event[] = [];
    let url: string | undefined = `${s.upstreamUrl}/AuditEvent?_count=1000`;
    while (url) {
      const b = (await (await fetch(url)).json()) as { entry?: { resource: Event }[]; link?: { relation: string; url: string }[] };
      for (const e of b.entry ?? []) {
        if (e.resource.entity?.some((en) => en.type?.code === 'XrequestId' && en.what?.identifier?.value === requestId)) found.push(e.resource);
      }
      url = b.link?.find((l) => l.relation === 'next')?.url;
    }
    if (found.length) return found;
    await new Promise((r) => setTimeout(r, 100));
  }
  return [];
}

describe('a patient whose record links to records the clinician may not see', () => {
  it('is shown without the links she may not follow, and the removal is audited', async () => {
    const res = await as('clinician').get('/Patient/pat-fx-linked').set('x-request-id', 'linked-read-1');
    expect(res.status).toBe(200);
    expect(res.body.link).toEqual([{ other: { reference: 'Patient/pat-fx-direct' }, type: 'seealso' }]);
    expect(JSON.stringify(res.body)).not.toContain('pat-fx-linked-relative');
    const events = await auditOf('linked-read-1');
    const details = events.flatMap((e) => e.entity ?? []).flatMap((en) => en.detail ?? []);
    expect(details.some((d) => d.type === 'redaction' && /Patient\.link: 1 link/.test(d.valueString))).toBe(true);
  });

  it('keeps every link for the DIM', async () => {
    const res = await as('dim').get('/Patient/pat-fx-linked');
    expect(res.body.link).toHaveLength(2);
  });

  it('is shown in searches without the hidden link, too', async () => {
    const res = await as('clinician').get('/Patient?_id=pat-fx-linked');
    expect(res.status).toBe(200);
    expect(res.body.entry[0].resource.link).toHaveLength(1);
  });
});

describe('stored documents and collections', () => {
  it('answers a stored collection whole when the caller may see all it holds', async () => {
    const res = await as('clinician').get('/Bundle/bundle-fx-dupont-document');
    expect(res.status).toBe(200);
    expect(res.body.entry).toHaveLength(1);
  });

  it('answers a collection that also holds another patient’s data with the 404 of a miss, not a document with holes', async () => {
    const mixed = await as('clinician').get('/Bundle/bundle-fx-mixed-collection');
    const missing = await as('clinician').get('/Bundle/does-not-exist');
    expect(mixed.status).toBe(404);
    expect(mixed.body).toEqual(missing.body);
    expect((await as('surgeon').get('/Bundle/bundle-fx-dupont-document')).status).toBe(404);
    expect((await as('dim').get('/Bundle/bundle-fx-mixed-collection')).status).toBe(200);
  });
});

describe('break-the-glass on a search naming one patient', () => {
  const reason = 'Patient inconscient au SAU, antécédents inconnus';

  it('is refused on a search naming several patients or none, while no grant is open', async () => {
    for (const q of ['/Observation?patient=pat-fx-direct,pat-fx-ortho', '/Observation?code=8867-4']) {
      const res = await as('emergency').get(q).set('category', category).set('x-btg-reason', reason);
      expect(res.status, q).toBe(400);
      expect(res.body.issue[0].details.text).toMatch(/exactly one patient/);
    }
  });

  it('opens the grant for that patient, like a read, and the answers are marked', async () => {
    expect((await as('emergency').get('/Observation?patient=pat-fx-ortho')).body.entry).toBeUndefined();
    const res = await as('emergency').get('/Observation?patient=pat-fx-ortho').set('category', category).set('x-btg-reason', reason);
    expect(res.status).toBe(200);
    expect(res.headers['x-caregate-break-glass']).toBe('active');
    expect(res.body.entry.length).toBeGreaterThan(0);
    for (const e of res.body.entry) expect(e.resource.subject.reference).toBe('Patient/pat-fx-ortho');
    // The grant covers the patient's record in every form, for its duration.
    expect((await as('emergency').get('/Patient/pat-fx-ortho/Condition')).status).toBe(200);
    expect((await as('emergency').get('/Condition?subject=Patient/pat-fx-ortho')).headers['x-caregate-break-glass']).toBe('active');
  });

  it('opens it by subject=Patient/<id> and by the compartment as well', async () => {
    const bySubject = await as('emergency').get('/Observation?subject=Patient/pat-fx-enc-old').set('category', category).set('x-btg-reason', reason);
    expect(bySubject.status).toBe(200);
    expect(bySubject.headers['x-caregate-break-glass']).toBe('active');
    const byCompartment = await as('emergency').get('/Patient/pat-fx-ended/Observation').set('category', category).set('x-btg-reason', reason);
    expect(byCompartment.status).toBe(200);
    expect(byCompartment.headers['x-caregate-break-glass']).toBe('active');
  });

  it('keeps working when the EHR sends the header again on every request while a grant is open', async () => {
    const withHeader = (p: string) => as('emergency').get(p).set('category', category);
    // No reason on these: the grant is already open, or the request names no single patient.
    expect((await withHeader('/Patient/pat-fx-ortho')).status).toBe(200);
    expect((await withHeader('/Practitioner/prat-girard')).status).toBe(200);
    expect((await withHeader('/Observation?code=8867-4')).status).toBe(200);
  });
});

describe('a relationship just added', () => {
  it('works at once for a search naming the new patient, not only for a read', async () => {
    const patient = 'pat-fx-enc-old';
    expect((await as('nurse').get(`/Observation?patient=${patient}`)).body.entry).toBeUndefined();
    const team = { resourceType: 'CareTeam', status: 'active', subject: { reference: `Patient/${patient}` }, participant: [{ member: { reference: 'Practitioner/prat-bernard' } }] };
    const created = await fetch(`${s.upstreamUrl}/CareTeam`, { method: 'POST', headers: { 'content-type': 'application/fhir+json' }, body: JSON.stringify(team) });
    expect(created.status).toBe(201);
    const res = await as('nurse').get(`/Observation?patient=${patient}`);
    expect(res.status).toBe(200);
    expect(res.body.entry?.length).toBeGreaterThan(0);
  });
});
