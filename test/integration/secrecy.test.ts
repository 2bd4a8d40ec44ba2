import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import request from 'supertest';
import { DEMO_FIXTURES } from '../../src/demo/seed.js';
import type { PersonaName } from '../../src/demo/personas.js';
import { startStack, type Stack } from '../helpers/stack.js';

/**
 * Issue 4: medical secrecy. Each persona of the demo hospital sees exactly the patients its care
 * relationships give, through every route; the rest is refused or filtered out.
 */
let stack: Stack;
beforeAll(async () => {
  stack = await startStack();
});
afterAll(async () => stack?.close());

const path = (p: string) => new URL(stack.url).pathname + p;
const as = (persona: PersonaName) => ({
  get: (p: string) => request(stack.gate.server).get(path(p)).set(stack.auth(persona)),
  post: (p: string, body: unknown, type = 'application/fhir+json') =>
    request(stack.gate.server).post(path(p)).set(stack.auth(persona)).set('content-type', type).send(body as object),
  put: (p: string, body: unknown) => request(stack.gate.server).put(path(p)).set(stack.auth(persona)).set('content-type', 'application/fhir+json').send(body as object),
});

type Entry = { resource: { resourceType: string; id: string; subject?: { reference?: string }; patient?: { reference?: string } }; search?: { mode?: string } };
const entries = (b: { entry?: Entry[] }) => b.entry ?? [];

const practitionerPersonas = ['clinician', 'nurse', 'colleague', 'surgeon', 'emergency'] as const;

describe('care relationships: each clinician sees exactly their patients', () => {
  for (const persona of practitionerPersonas) {
    const fx = DEMO_FIXTURES[persona];
    for (const f of fx.mustSee) {
      it(`${persona} reads Patient/${f.patient} (${f.why})`, async () => {
        const res = await as(persona).get(`/Patient/${f.patient}`);
        expect(res.status).toBe(200);
        expect(res.body.id).toBe(f.patient);
      });
    }
    for (const f of fx.mustNotSee) {
      it(`${persona} is refused Patient/${f.patient} (${f.why})`, async () => {
        const res = await as(persona).get(`/Patient/${f.patient}`);
        expect(res.status).toBe(403);
        expect(res.body.resourceType).toBe('OperationOutcome');
        expect(res.text).not.toContain(f.patient.replace('pat-', 'Patient '));
      });
      it(`${persona} finds no Observation of ${f.patient} by search, whatever the reference form`, async () => {
        for (const q of [`subject=Patient/${f.patient}`, `patient=${f.patient}`, `subject=${stack.gate.publicBaseUrl}/Patient/${f.patient}`]) {
          const res = await as(persona).get(`/Observation?${q}`);
          expect(res.status, q).toBe(200);
          expect(entries(res.body).filter((e) => e.search?.mode !== 'outcome'), q).toHaveLength(0);
        }
      });
      it(`${persona} is refused the compartment of ${f.patient}`, async () => {
        expect((await as(persona).get(`/Patient/${f.patient}/Observation`)).status).toBe(403);
        expect((await as(persona).get(`/Patient/${f.patient}/$everything`)).status).toBe(403);
      });
    }
  }

  it('a clinician’s unrestricted search returns only resources of her care set, without an inexact total', async () => {
    const forbidden = new Set(DEMO_FIXTURES.clinician.mustNotSee.map((f) => `Patient/${f.patient}`));
    const res = await as('clinician').get('/Observation?_count=200');
    expect(res.status).toBe(200);
    const subjects = entries(res.body).map((e) => e.resource.subject?.reference);
    expect(subjects.length).toBeGreaterThan(0);
    expect(subjects.filter((s) => forbidden.has(s!))).toEqual([]);
    // Every patient answered is one she may open directly.
    for (const s of new Set(subjects)) expect((await as('clinician').get(`/${s}`)).status, s).toBe(200);
    if (res.body.total !== undefined) expect(res.body.total).toBeLessThanOrEqual(subjects.length);
  });
});

describe('reads that need the upstream answer to decide', () => {
  it('answers a hidden Observation read with a 404 identical to a real miss', async () => {
    const dim = await as('dim').get(`/Observation?patient=pat-fx-ortho&_count=1`);
    const id = entries(dim.body)[0]!.resource.id;
    const hidden = await as('clinician').get(`/Observation/${id}`);
    const missing = await as('clinician').get(`/Observation/no-such-observation`);
    expect(hidden.status).toBe(404);
    expect(missing.status).toBe(404);
    expect(hidden.text).toBe(missing.text);
  });
});

describe('search features that reach other patients', () => {
  for (const q of [
    'Patient?_has:Observation:subject:status=final',
    'Observation?_include=*',
    'Observation?subject.name=Dupont',
    'Observation?_filter=status eq final',
    'Observation?_list=42',
    'Observation?subject:missing=true',
  ]) {
    it(`refuses ${q} for a clinician`, async () => {
      const res = await as('clinician').get(`/${q}`);
      expect(res.status).toBeGreaterThanOrEqual(400);
      expect(res.status).toBeLessThan(500);
      expect(res.body.resourceType).toBe('OperationOutcome');
    });
  }

  it('refuses system-level search and history, and type-level $everything', async () => {
    expect((await as('clinician').get('/?_type=Observation')).status).toBeGreaterThanOrEqual(400);
    expect((await as('clinician').get('/_history')).status).toBe(403);
    expect((await as('clinician').get('/Patient/$everything')).status).toBe(403);
  });

  it('filters what a reverse include pulls in', async () => {
    const res = await as('clinician').get('/Practitioner?_id=prat-martin&_revinclude=Encounter:participant');
    expect(res.status).toBe(200);
    const forbidden = new Set(DEMO_FIXTURES.clinician.mustNotSee.map((f) => `Patient/${f.patient}`));
    const encounters = entries(res.body).filter((e) => e.resource.resourceType === 'Encounter');
    for (const e of encounters) {
      expect(forbidden.has(e.resource.subject!.reference!)).toBe(false);
      expect((await as('clinician').get(`/${e.resource.subject!.reference}`)).status).toBe(200);
    }
  });
});

describe('paging links', () => {
  it('refuses a paging link replayed by another user, or edited', async () => {
    const first = await as('dim').get('/Patient?_count=5');
    const next = (first.body.link as { relation: string; url: string }[]).find((l) => l.relation === 'next')!.url;
    const nextPath = new URL(next).pathname;
    expect((await as('dim').get(nextPath.slice(new URL(stack.url).pathname.length))).status).toBe(200);
    expect((await as('clinician').get(nextPath.slice(new URL(stack.url).pathname.length))).status).toBe(403);
    const cut = nextPath.length - 20;
    const edited = nextPath.slice(0, cut) + (nextPath[cut] === 'A' ? 'B' : 'A') + nextPath.slice(cut + 1);
    expect((await as('dim').get(edited.slice(new URL(stack.url).pathname.length))).status).toBe(403);
  });
});

describe('batch and transaction', () => {
  it('answers forbidden batch entries with their own refusal while the others run', async () => {
    const res = await as('clinician').post('/', {
      resourceType: 'Bundle',
      type: 'batch',
      entry: [
        { request: { method: 'GET', url: 'Patient/pat-dupont' } },
        { request: { method: 'GET', url: 'Patient/pat-fx-ortho' } },
      ],
    });
    expect(res.status).toBe(200);
    expect(res.body.entry[0].response.status).toMatch(/^200/);
    expect(res.body.entry[0].resource.id).toBe('pat-dupont');
    expect(res.body.entry[1].response.status).toMatch(/^403/);
    expect(res.body.entry[1].resource).toBeUndefined();
  });

  it('refuses a transaction whole when one entry is forbidden', async () => {
    const res = await as('clinician').post('/', {
      resourceType: 'Bundle',
      type: 'transaction',
      entry: [
        { request: { method: 'POST', url: 'Observation' }, resource: { resourceType: 'Observation', status: 'final', code: { text: 'a' }, subject: { reference: 'Patient/pat-dupont' } } },
        { request: { method: 'POST', url: 'Observation' }, resource: { resourceType: 'Observation', status: 'final', code: { text: 'b' }, subject: { reference: 'Patient/pat-fx-ortho' } } },
      ],
    });
    expect(res.status).toBe(403);
  });

  it('refuses JSON with duplicate keys', async () => {
    const res = await request(stack.gate.server)
      .post(path('/'))
      .set(stack.auth('clinician'))
      .set('content-type', 'application/fhir+json')
      .send('{"resourceType":"Bundle","type":"batch","entry":[{"request":{"method":"GET","url":"Patient/pat-dupont","url":"Patient/pat-fx-ortho"}}]}');
    expect(res.status).toBe(400);
  });
});

describe('writes', () => {
  it('lets a clinician write an Observation of her patient and refuses one of another patient', async () => {
    const ok = await as('clinician').post('/Observation', { resourceType: 'Observation', status: 'final', code: { text: 'bp' }, subject: { reference: 'Patient/pat-dupont' } });
    expect(ok.status).toBe(201);
    const no = await as('clinician').post('/Observation', { resourceType: 'Observation', status: 'final', code: { text: 'bp' }, subject: { reference: 'Patient/pat-fx-ortho' } });
    expect(no.status).toBe(403);
  });

  it('refuses moving a resource to another patient', async () => {
    const created = await as('clinician').post('/Observation', { resourceType: 'Observation', status: 'final', code: { text: 'x' }, subject: { reference: 'Patient/pat-dupont' } });
    const id = (created.headers.location as string).split('/Observation/')[1]!.split('/')[0]!;
    const res = await as('clinician').put(`/Observation/${id}`, { resourceType: 'Observation', id, status: 'final', code: { text: 'x' }, subject: { reference: 'Patient/pat-fx-direct' } });
    expect(res.status).toBe(403);
  });

  it('refuses a clinician who adds herself to a care team', async () => {
    const res = await as('surgeon').post('/CareTeam', {
      resourceType: 'CareTeam',
      status: 'active',
      subject: { reference: 'Patient/pat-dupont' },
      participant: [{ member: { reference: 'Practitioner/prat-girard' } }],
    });
    expect(res.status).toBe(403);
  });

  it('refuses Subscription writes', async () => {
    const res = await as('clinician').post('/Subscription', { resourceType: 'Subscription', status: 'requested', criteria: 'Observation', reason: 'x', channel: { type: 'rest-hook', endpoint: 'https://evil.example/hook' } });
    expect(res.status).toBe(403);
  });

  it('gives a newly added care-team member access at once', async () => {
    expect((await as('surgeon').get('/Patient/pat-fx-direct')).status).toBe(403);
    const team = await as('dim').post('/CareTeam', {
      resourceType: 'CareTeam',
      status: 'active',
      subject: { reference: 'Patient/pat-fx-direct' },
      participant: [{ member: { reference: 'Practitioner/prat-girard' } }],
    });
    expect(team.status).toBe(201);
    expect((await as('surgeon').get('/Patient/pat-fx-direct')).status).toBe(200);
  });
});

describe('break-the-glass', () => {
  const BTG = 'http://terminology.hl7.org/CodeSystem/v3-ActReason#BTG; scheme="http://hl7.org/fhir/tag/security"; label="break the glass"';

  it('grants an emergency physician one named patient with a reason, and marks the answers', async () => {
    expect((await as('emergency').get('/Patient/pat-dupont')).status).toBe(403);
    const res = await as('emergency').get('/Patient/pat-dupont').set('category', BTG).set('x-btg-reason', 'Unconscious patient in resuscitation bay');
    expect(res.status).toBe(200);
    expect(res.headers['x-caregate-break-glass']).toBe('active');
    const after = await as('emergency').get('/Observation?subject=Patient/pat-dupont');
    expect(after.status).toBe(200);
    expect(entries(after.body).length).toBeGreaterThan(0);
    // Reaching the opened patient by search is a break-the-glass use too.
    expect(after.headers['x-caregate-break-glass']).toBe('active');
  });

  it('opens break-the-glass through the $break-glass operation the page uses', async () => {
    expect((await as('emergency').get('/Patient/pat-fx-enc-current')).status).toBe(403);
    const open = await as('emergency').post('/Patient/pat-fx-enc-current/$break-glass', {
      resourceType: 'Parameters',
      parameter: [{ name: 'reason', valueString: 'Cardiac arrest, no relative reachable' }],
    });
    expect(open.status).toBe(200);
    expect(open.body.issue[0].severity).toBe('information');
    expect((await as('emergency').get('/Patient/pat-fx-enc-current')).status).toBe(200);
    const short = await as('emergency').post('/Patient/pat-fx-ortho/$break-glass', { resourceType: 'Parameters', parameter: [{ name: 'reason', valueString: 'x' }] });
    expect(short.status).toBe(400);
    const notAllowed = await as('nurse').post('/Patient/pat-fx-ortho/$break-glass', {
      resourceType: 'Parameters',
      parameter: [{ name: 'reason', valueString: 'I would like to see this record' }],
    });
    expect(notAllowed.status).toBe(403);
  });

  it('serves the break-the-glass page, with no data and a strict content security policy', async () => {
    const res = await request(stack.gate.server).get('/caregate/break-glass');
    expect(res.status).toBe(200);
    expect(res.headers['content-security-policy']).toMatch(/default-src 'none'; script-src 'nonce-/);
    expect(res.text).toContain('$break-glass');
  });

  it('refuses break-the-glass without a reason, or to a role without the privilege', async () => {
    expect((await as('emergency').get('/Patient/pat-fx-direct').set('category', BTG)).status).toBe(400);
    expect((await as('clinician').get('/Patient/pat-fx-ortho').set('category', BTG).set('x-btg-reason', 'I would like to see it')).status).toBe(403);
  });
});

describe('other roles', () => {
  it('shows a patient her own record only', async () => {
    expect((await as('patient').get('/Patient/pat-dupont')).status).toBe(200);
    expect((await as('patient').get('/Patient/pat-fx-direct')).status).toBe(403);
    const obs = await as('patient').get('/Observation?_count=50');
    for (const e of entries(obs.body)) expect(e.resource.subject?.reference).toBe('Patient/pat-dupont');
  });

  it('shows a mandated person the record of the patient who mandated them, not an expired mandate', async () => {
    expect((await as('mandated').get('/Patient/pat-dupont')).status).toBe(200);
    expect((await as('mandated').get('/Patient/pat-fx-mandate-expired')).status).toBe(403);
  });

  it('refuses the director everything clinical', async () => {
    expect((await as('director').get('/Patient/pat-dupont')).status).toBe(403);
    expect((await as('director').get('/Observation?_count=1')).status).toBe(403);
  });

  it('lets the DIM read any record and the audit trail, which no one may write', async () => {
    expect((await as('dim').get('/Patient/pat-fx-ortho')).status).toBe(200);
    expect((await as('dim').get('/AuditEvent?_count=1')).status).toBe(200);
    expect((await as('clinician').get('/AuditEvent?_count=1')).status).toBe(403);
    expect((await as('dim').post('/AuditEvent', { resourceType: 'AuditEvent' })).status).toBe(403);
  });
});

describe('request vocabulary', () => {
  it('applies _elements itself, after judging whole resources', async () => {
    const res = await as('clinician').get('/Observation?patient=pat-dupont&_elements=code');
    expect(res.status).toBe(200);
    const list = entries(res.body);
    expect(list.length).toBeGreaterThan(0);
    for (const e of list) {
      expect(Object.keys(e.resource).sort()).toEqual(['code', 'id', 'meta', 'resourceType']);
      expect(JSON.stringify(e.resource)).toContain('SUBSETTED');
    }
  });

  it('refuses asynchronous requests, whose answer it could not judge', async () => {
    const res = await as('clinician').get('/Observation?patient=pat-dupont').set('prefer', 'respond-async');
    expect(res.status).toBe(403);
  });

  it('refuses a search parameter the FHIR server does not define (it might ignore it and widen the search)', async () => {
    const res = await as('clinician').get('/Observation?patient=pat-dupont&subjekt=Patient/pat-fx-ortho');
    expect(res.status).toBe(403);
    expect(res.body.issue[0].details.text).toMatch(/subjekt/);
  });

  it('never grants more than the token’s SMART scopes', async () => {
    const token = stack.token('clinician', { scope: 'openid fhirUser user/Patient.rs' });
    const ok = await request(stack.gate.server).get(path('/Patient/pat-dupont')).set('authorization', `Bearer ${token}`);
    expect(ok.status).toBe(200);
    const no = await request(stack.gate.server).get(path('/Observation?patient=pat-dupont')).set('authorization', `Bearer ${token}`);
    expect(no.status).toBe(403);
    const write = await request(stack.gate.server)
      .post(path('/Patient'))
      .set('authorization', `Bearer ${token}`)
      .set('content-type', 'application/fhir+json')
      .send({ resourceType: 'Patient' });
    expect(write.status).toBe(403);
  });
});
