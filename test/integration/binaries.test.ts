import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import request from 'supertest';
import { startStack, type Stack } from '../helpers/stack.js';

/**
 * Attachments stored as most servers store them: Binaries without securityContext, attributed to
 * their patient through the DocumentReference (or DiagnosticReport) that points at them.
 */
let s: Stack;
beforeAll(async () => {
  s = await startStack({ upstreamYaml: '' });
});
afterAll(async () => s?.close());

const path = (p: string) => new URL(s.url).pathname + p;
const get = (p: string, persona: Parameters<Stack['auth']>[0], accept = 'application/fhir+json') => request(s.gate.server).get(path(p)).set(s.auth(persona)).set('accept', accept);

describe('a Binary without securityContext', () => {
  it('is shown to the care team of the patient whose DocumentReference points at it', async () => {
    const res = await get('/Binary/bin-fx-dupont-letter', 'clinician');
    expect(res.status).toBe(200);
    expect(res.body.resourceType).toBe('Binary');
    expect(res.body.contentType).toBe('application/pdf');
  });

  it('is refused to a clinician outside that care team like a miss, and to everyone for a Binary nobody points at', async () => {
    const refused = await get('/Binary/bin-fx-dupont-letter', 'surgeon');
    const missing = await get('/Binary/does-not-exist', 'surgeon');
    expect(refused.status).toBe(404);
    expect(refused.body).toEqual(missing.body);
    const ortho = await get('/Binary/bin-fx-ortho-letter', 'clinician');
    expect(ortho.status).toBe(404);
  });

  it('is shown to the DIM', async () => {
    expect((await get('/Binary/bin-fx-ortho-letter', 'dim')).status).toBe(200);
  });

  it('is served as its own bytes and content type when the client asks for something other than FHIR', async () => {
    for (const accept of ['application/pdf', '*/*']) {
      const res = await get('/Binary/bin-fx-dupont-letter', 'clinician', accept).buffer(true);
      expect(res.status).toBe(200);
      expect(res.headers['content-type']).toBe('application/pdf');
      expect(res.headers['content-security-policy']).toContain('sandbox');
      expect(Buffer.from(res.body as Buffer).toString('utf8')).toMatch(/^%PDF-1\.4 Lettre de liaison/);
    }
  });

  it('serves nothing of a refused Binary whatever the client accepts', async () => {
    const res = await get('/Binary/bin-fx-dupont-letter', 'surgeon', 'application/pdf');
    expect(res.status).toBe(404);
    expect(res.text).not.toContain('%PDF');
  });

  it('is found through a DiagnosticReport once the report has passed through caregate', async () => {
    // No standard search parameter reads presentedForm: until the report is seen, the Binary's owner is unknown.
    expect((await get('/Binary/bin-fx-dupont-echo', 'clinician')).status).toBe(404);
    expect((await get('/DiagnosticReport/dr-fx-dupont-echo', 'clinician')).status).toBe(200);
    const res = await get('/Binary/bin-fx-dupont-echo', 'clinician', 'text/plain');
    expect(res.status).toBe(200);
    expect(res.text).toContain('Echocardiographie');
  });

  it('cannot be claimed by attaching it to a patient of one’s own care set', async () => {
    const claim = await request(s.gate.server)
      .post(path('/DocumentReference'))
      .set(s.auth('surgeon'))
      .set('content-type', 'application/fhir+json')
      .send({
        resourceType: 'DocumentReference',
        status: 'current',
        subject: { reference: 'Patient/pat-fx-ortho' },
        content: [{ attachment: { contentType: 'application/pdf', url: 'Binary/bin-fx-dupont-letter' } }],
      });
    expect(claim.status).toBe(403);
    // Nor by pointing at a Binary whose owner nobody knows.
    const orphan = await fetch(`${s.upstreamUrl}/Binary`, {
      method: 'POST',
      headers: { 'content-type': 'application/fhir+json' },
      body: JSON.stringify({ resourceType: 'Binary', contentType: 'text/plain', data: Buffer.from('secret').toString('base64') }),
    });
    const id = ((await orphan.json()) as { id: string }).id;
    const attach = await request(s.gate.server)
      .post(path('/DocumentReference'))
      .set(s.auth('surgeon'))
      .set('content-type', 'application/fhir+json')
      .send({ resourceType: 'DocumentReference', status: 'current', subject: { reference: 'Patient/pat-fx-ortho' }, content: [{ attachment: { contentType: 'text/plain', url: `Binary/${id}` } }] });
    expect(attach.status).toBe(404);
    expect((await get(`/Binary/${id}`, 'surgeon')).status).toBe(404);
  });

  it('is shown to the care team once the DIM attaches it to a DocumentReference through caregate', async () => {
    const stored = await fetch(`${s.upstreamUrl}/Binary`, {
      method: 'POST',
      headers: { 'content-type': 'application/fhir+json' },
      body: JSON.stringify({ resourceType: 'Binary', contentType: 'text/plain', data: Buffer.from('scan').toString('base64') }),
    });
    const id = ((await stored.json()) as { id: string }).id;
    expect((await get(`/Binary/${id}`, 'surgeon')).status).toBe(404);
    const doc = await request(s.gate.server)
      .post(path('/DocumentReference'))
      .set(s.auth('dim'))
      .set('content-type', 'application/fhir+json')
      .send({ resourceType: 'DocumentReference', status: 'current', subject: { reference: 'Patient/pat-fx-ortho' }, content: [{ attachment: { contentType: 'text/plain', url: `Binary/${id}` } }] });
    expect(doc.status).toBe(201);
    expect((await get(`/Binary/${id}`, 'surgeon')).status).toBe(200);
    expect((await get(`/Binary/${id}`, 'clinician')).status).toBe(404);
  });
});
