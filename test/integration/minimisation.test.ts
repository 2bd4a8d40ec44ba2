import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import request from 'supertest';
import { join } from 'node:path';
import type { AuditEvent, Bundle, DocumentReference } from '@medplum/fhirtypes';
import { readSpoolDir } from '../../src/audit/spool.js';
import { MINIMISATION_FIXTURES as F } from '../../src/demo/minimisation.js';
import type { PersonaName } from '../../src/demo/personas.js';
import { startStack, type Stack } from '../helpers/stack.js';

/**
 * Issue 14, points 1 and 2, end to end in the demo hospital: Mathilde Roche's care team holds the
 * cardiologist, the nurse, the liaison psychiatrist and the service's secretary. The psychiatric
 * note carries the PSY label: only the psychiatrist (and the DIM) read it; the secretary reads the
 * stay, no clinical data. Every withholding names its rule in the AuditEvent.
 */
let stack: Stack;
beforeAll(async () => {
  stack = await startStack({ patients: 40 });
}, 60_000);
afterAll(async () => stack?.close());

const path = (p: string) => new URL(stack.url).pathname + p;
const as = (persona: PersonaName) => ({
  get: (p: string, id: string) => request(stack.gate.server).get(path(p)).set(stack.auth(persona)).set('x-request-id', id),
  put: (p: string, body: unknown, id: string) =>
    request(stack.gate.server).put(path(p)).set(stack.auth(persona)).set('x-request-id', id).set('content-type', 'application/fhir+json').send(body as object),
});

const requestIdOf = (e: AuditEvent) => e.entity?.find((en) => en.type?.code === 'XrequestId')?.what?.identifier?.value;
async function eventsOf(requestId: string): Promise<AuditEvent[]> {
  for (let i = 0; i < 50; i++) {
    const found = (await readSpoolDir(join(stack.dir, 'audit'))).events.filter((e) => requestIdOf(e) === requestId);
    if (found.length > 0) return found;
    await new Promise((r) => setTimeout(r, 100));
  }
  return [];
}
const details = (e: AuditEvent) => (e.entity ?? []).flatMap((en) => en.detail ?? []).map((d) => `${d.type}: ${d.valueString ?? ''}`);

describe('sensitive records inside the care team', () => {
  it('refuses the nurse the psychiatric note her team’s psychiatrist reads, as a miss, and names the rule in the trail', async () => {
    const read = await as('psychiatrist').get(`/DocumentReference/${F.psychiatricNote}`, 'min-psy-read');
    expect(read.status).toBe(200);
    expect((read.body as DocumentReference).meta?.security).toContainEqual(expect.objectContaining({ code: 'PSY' }));

    const refused = await as('nurse').get(`/DocumentReference/${F.psychiatricNote}`, 'min-nurse-psy');
    const missing = await as('nurse').get('/DocumentReference/doc-that-does-not-exist', 'min-nurse-missing');
    expect(refused.status).toBe(404);
    // The same answer as for a document that does not exist: that a psychiatric note exists is itself sensitive.
    expect(refused.body).toEqual(missing.body);
    const [event] = await eventsOf('min-nurse-psy');
    expect(event?.outcome).not.toBe('0');
    expect(event?.outcomeDesc).toContain('withheld by sensitivity.psychiatry');
  });

  it('leaves the psychiatric note and its content out of the nurse’s answers, and counts nothing she does not get', async () => {
    const search = await as('nurse').get(`/DocumentReference?patient=${F.patient}`, 'min-nurse-search');
    expect(search.status).toBe(200);
    const ids = ((search.body as Bundle).entry ?? []).map((e) => e.resource?.id);
    expect(ids).toContain(F.cardiologyNote);
    expect(ids).not.toContain(F.psychiatricNote);
    expect((search.body as Bundle).total ?? ids.length).toBe(ids.length);
    const [event] = await eventsOf('min-nurse-search');
    expect(details(event!)).toContainEqual(expect.stringMatching(/^redaction: sensitivity\.psychiatry: 1 resource/));

    const binary = await as('nurse').get(`/Binary/${F.psychiatricBinary}`, 'min-nurse-binary');
    expect(binary.status).toBe(404);
    expect((await as('nurse').get(`/Binary/${F.cardiologyBinary}`, 'min-nurse-cardio-binary')).status).toBe(200);
  });

  it('withholds an unlabelled Binary whose labelled document points at it, and shows the psychiatrist both', async () => {
    // As a server stores attachments: the Binary names the patient, only the document carries the label.
    const put = (type: string, id: string, body: object) =>
      fetch(`${stack.upstreamUrl}/${type}/${id}`, { method: 'PUT', headers: { 'content-type': 'application/fhir+json' }, body: JSON.stringify({ resourceType: type, id, ...body }) });
    expect((await put('Binary', 'bin-min-psy-letter', { contentType: 'text/plain', securityContext: { reference: `Patient/${F.patient}` }, data: Buffer.from('Lettre de liaison').toString('base64') })).ok).toBe(true);
    expect(
      (
        await put('DocumentReference', 'doc-min-psy-letter', {
          status: 'current',
          meta: { security: [{ system: 'http://terminology.hl7.org/CodeSystem/v3-ActCode', code: 'PSY' }] },
          subject: { reference: `Patient/${F.patient}` },
          content: [{ attachment: { contentType: 'text/plain', url: 'Binary/bin-min-psy-letter' } }],
        })
      ).ok,
    ).toBe(true);
    expect((await as('nurse').get('/Binary/bin-min-psy-letter', 'min-nurse-letter')).status).toBe(404);
    const [event] = await eventsOf('min-nurse-letter');
    expect(event?.outcomeDesc).toContain('withheld by sensitivity.psychiatry');
    expect((await as('psychiatrist').get('/Binary/bin-min-psy-letter', 'min-psy-letter')).status).toBe(200);
  });

  it('hides the note from the cardiologist of the same team too, and shows it to the DIM', async () => {
    expect((await as('clinician').get(`/DocumentReference/${F.psychiatricNote}`, 'min-martin-psy')).status).toBe(404);
    expect((await as('dim').get(`/DocumentReference/${F.psychiatricNote}`, 'min-dim-psy')).status).toBe(200);
  });

  it('refuses the nurse an update of the psychiatric note as a miss, and the note is unchanged', async () => {
    const current = (await as('psychiatrist').get(`/DocumentReference/${F.psychiatricNote}`, 'min-psy-before')).body as DocumentReference;
    const res = await as('nurse').put(`/DocumentReference/${F.psychiatricNote}`, { ...current, description: 'changed', meta: undefined }, 'min-nurse-put');
    expect(res.status).toBe(404);
    const after = (await as('psychiatrist').get(`/DocumentReference/${F.psychiatricNote}`, 'min-psy-after')).body as DocumentReference;
    expect(after.description).toBe(current.description);
    expect(after.meta?.versionId).toBe(current.meta?.versionId);
  });
});

describe('the profession × data-category matrix', () => {
  it('shows the service’s secretary the stay and refuses her the notes, naming the rule', async () => {
    expect((await as('secretary').get(`/Encounter/${F.stay}`, 'min-sec-stay')).status).toBe(200);
    expect((await as('secretary').get(`/Patient/${F.patient}`, 'min-sec-patient')).status).toBe(200);

    const note = await as('secretary').get(`/DocumentReference/${F.cardiologyNote}`, 'min-sec-note');
    expect(note.status).toBe(403);
    expect(JSON.stringify(note.body)).toContain('minimisation.service-secretary');
    const vital = await as('secretary').get(`/Observation/${F.heartRate}`, 'min-sec-vital');
    expect(vital.status).toBe(403);
    expect(JSON.stringify(vital.body)).toContain('minimisation.service-secretary');
  });

  it('answers the secretary’s search of observations without the vital signs and results it holds', async () => {
    const res = await as('secretary').get(`/Observation?patient=${F.patient}`, 'min-sec-obs');
    expect(res.status).toBe(200);
    expect((res.body as Bundle).entry ?? []).toHaveLength(0);
    const [event] = await eventsOf('min-sec-obs');
    expect(details(event!)).toContainEqual(expect.stringMatching(/^redaction: minimisation\.service-secretary: 2 resource/));
  });

  it('lets the nurse read the vital signs, results and diagnoses of her patient', async () => {
    for (const p of [`/Observation/${F.heartRate}`, `/Observation/${F.troponin}`, `/Condition/${F.diagnosis}`]) {
      expect((await as('nurse').get(p, `min-nurse-${p}`)).status, p).toBe(200);
    }
  });
});
