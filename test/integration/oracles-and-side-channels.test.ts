import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import request from 'supertest';
import type { Bundle, BundleEntry } from '@medplum/fhirtypes';
import { join } from 'node:path';
import type { PersonaName } from '../../src/demo/personas.js';
import { demoToken } from '../../src/demo/tokens.js';
import { startStack, type Stack } from '../helpers/stack.js';

/**
 * Attacks found in a review against threats.md, end to end through the FHIR API: each closes a
 * way to learn something about a patient outside the caller's rights (pat-fx-ortho for the
 * cardiologist, the patient and the coding contractor).
 */
let stack: Stack;
/** An Observation of pat-fx-ortho, outside the clinician's care set. */
let hiddenObs: { id: string; status: string };

beforeAll(async () => {
  stack = await startStack({ patients: 50 });
  const dim = await as('dim').get('/Observation?patient=pat-fx-ortho&_count=1');
  const r = (dim.body as Bundle).entry![0]!.resource as { id: string; status: string };
  hiddenObs = { id: r.id, status: r.status };
});
afterAll(async () => stack?.close());

const path = (p: string) => new URL(stack.url).pathname + p;
const as = (persona: PersonaName) => ({
  get: (p: string) => request(stack.gate.server).get(path(p)).set(stack.auth(persona)),
  head: (p: string) => request(stack.gate.server).head(path(p)).set(stack.auth(persona)),
  post: (p: string, body: unknown) =>
    request(stack.gate.server).post(path(p)).set(stack.auth(persona)).set('content-type', 'application/fhir+json').send(JSON.stringify(body)),
  put: (p: string, body: unknown) =>
    request(stack.gate.server).put(path(p)).set(stack.auth(persona)).set('content-type', 'application/fhir+json').send(JSON.stringify(body)),
  patch: (p: string, ops: unknown) =>
    request(stack.gate.server).patch(path(p)).set(stack.auth(persona)).set('content-type', 'application/json-patch+json').send(JSON.stringify(ops)),
});

/** Writes straight to the FHIR server (test set-up, as the hospital's own systems would). */
async function upstreamCreate(resource: Record<string, unknown>): Promise<string> {
  const res = await fetch(`${stack.upstreamUrl}/${resource.resourceType as string}`, {
    method: 'POST',
    headers: { 'content-type': 'application/fhir+json' },
    body: JSON.stringify(resource),
  });
  expect(res.status).toBe(201);
  return ((await res.json()) as { id: string }).id;
}

const matches = (b: Bundle): BundleEntry[] => (b.entry ?? []).filter((e) => (e.search?.mode ?? 'match') === 'match');
const patchAsBinary = (ops: unknown) => ({
  resourceType: 'Binary',
  contentType: 'application/json-patch+json',
  data: Buffer.from(JSON.stringify(ops)).toString('base64'),
});

describe('writes used as reads', () => {
  it('answers a JSON Patch on another patient’s resource identically whether its test holds, fails or the resource is missing', async () => {
    const holds = await as('clinician').patch(`/Observation/${hiddenObs.id}`, [{ op: 'test', path: '/status', value: hiddenObs.status }]);
    const fails = await as('clinician').patch(`/Observation/${hiddenObs.id}`, [{ op: 'test', path: '/status', value: 'not-' + hiddenObs.status }]);
    const noPath = await as('clinician').patch(`/Observation/${hiddenObs.id}`, [{ op: 'add', path: '/no/such/element', value: 1 }]);
    const missing = await as('clinician').patch('/Observation/no-such-observation', [{ op: 'test', path: '/status', value: 'final' }]);
    for (const res of [holds, fails, noPath]) {
      expect(res.status).toBe(missing.status);
      expect(res.text).toBe(missing.text);
    }
    expect(missing.status).toBe(404);
  });

  it('answers the same JSON Patch entries of a batch identically whether their test holds or fails', async () => {
    const res = await as('clinician').post('/', {
      resourceType: 'Bundle',
      type: 'batch',
      entry: [
        { request: { method: 'PATCH', url: `Observation/${hiddenObs.id}` }, resource: patchAsBinary([{ op: 'test', path: '/status', value: hiddenObs.status }]) },
        { request: { method: 'PATCH', url: `Observation/${hiddenObs.id}` }, resource: patchAsBinary([{ op: 'test', path: '/status', value: 'x' }]) },
        { request: { method: 'PATCH', url: 'Observation/no-such-observation' }, resource: patchAsBinary([{ op: 'test', path: '/status', value: 'x' }]) },
      ],
    });
    expect(res.status).toBe(200);
    const [a, b, c] = (res.body as Bundle).entry!;
    expect(a!.response!.status).toMatch(/^404/);
    expect(b).toEqual(a);
    expect(c).toEqual(a);
  });

  it('still tells a caller who may write the resource that its patch does not apply', async () => {
    const created = await as('clinician').post('/Observation', { resourceType: 'Observation', status: 'final', code: { text: 'x' }, subject: { reference: 'Patient/pat-dupont' } });
    const id = (created.headers.location as string).split('/Observation/')[1]!.split('/')[0]!;
    const res = await as('clinician').patch(`/Observation/${id}`, [{ op: 'test', path: '/status', value: 'amended' }]);
    expect(res.status).toBe(400);
    expect(res.body.issue[0].code).toBe('processing');
  });
});

describe('self-granted relationships', () => {
  it('refuses a clinician who rewrites Practitioner identifiers to be resolved as a colleague and take their patients', async () => {
    // A credential without fhirUser (Pro Santé Connect, a CPS card) is resolved by its RPPS alone.
    const token = demoToken('clinician', { dir: join(stack.dir, 'keys'), claims: { fhirUser: undefined } });
    const get = (p: string) => request(stack.gate.server).get(path(p)).set('authorization', `Bearer ${token}`);
    const martin = (await as('dim').get('/Practitioner/prat-martin')).body as { identifier: unknown[] };
    const girard = (await as('dim').get('/Practitioner/prat-girard')).body as Record<string, unknown>;

    const drop = await as('clinician').put('/Practitioner/prat-martin', { ...martin, identifier: [] });
    const take = await as('clinician').put('/Practitioner/prat-girard', { ...girard, identifier: martin.identifier });
    const lockOut = await as('clinician').put('/Practitioner/prat-girard', { ...girard, active: false });
    for (const res of [drop, take, lockOut]) {
      expect(res.status).toBe(403);
      expect(res.body.issue[0].code).toBe('forbidden');
    }
    expect((await get('/Patient/pat-fx-ortho')).status).toBe(403);
    expect((await get('/Patient/pat-dupont')).status).toBe(200);
    expect((await as('surgeon').get('/Patient/pat-fx-ortho')).status).toBe(200);
  });
});

describe('special roles: the coding contractor', () => {
  it('answers a search by real id like an unknown pseudonym: no link from a real id to its pseudonym, no membership oracle', async () => {
    const unknown = await as('coder').get('/Observation?encounter=Encounter/p-AAAAAAAAAAAAAAAAAAAAAA');
    expect(unknown.status).toBe(404);
    for (const q of [
      '/Observation?encounter=enc-dupont',
      '/Observation?encounter=Encounter/enc-dupont',
      '/Observation?patient=pat-dupont',
      '/Observation?subject=Patient/pat-dupont',
      '/Patient?_id=pat-dupont',
      '/Patient?_id=pat-fx-ortho',
      '/Encounter?_id=enc-dupont',
    ]) {
      const res = await as('coder').get(q);
      expect(res.status, q).toBe(404);
      expect(res.text, q).toBe(unknown.text);
    }
  });

  it('still pages its searches through signed links', async () => {
    const first = await as('coder').get('/Observation?_count=1');
    expect(first.status).toBe(200);
    const next = (first.body as Bundle).link?.find((l) => l.relation === 'next')?.url;
    expect(next).toBeDefined();
    const res = await request(stack.gate.server).get(new URL(next!).pathname).set(stack.auth('coder'));
    expect(res.status, res.text).toBe(200);
    expect(matches(res.body as Bundle).length).toBe(1);
    expect(res.text).not.toMatch(/pat-dupont|enc-dupont/);
  });
});

describe('existence oracles', () => {
  it('answers the history of another patient’s resource exactly like a missing one, also in a batch', async () => {
    const hidden = await as('clinician').get(`/Observation/${hiddenObs.id}/_history`);
    const missing = await as('clinician').get('/Observation/no-such-observation/_history');
    expect(hidden.status).toBe(404);
    expect(hidden.text).toBe(missing.text);

    const batch = await as('clinician').post('/', {
      resourceType: 'Bundle',
      type: 'batch',
      entry: [
        { request: { method: 'GET', url: `Observation/${hiddenObs.id}/_history` } },
        { request: { method: 'GET', url: 'Observation/no-such-observation/_history' } },
      ],
    });
    expect(batch.status).toBe(200);
    const [h, m] = (batch.body as Bundle).entry!;
    expect(h!.response!.status).toMatch(/^404/);
    expect(h).toEqual(m);
  });

  it('answers a batch read of another patient’s resource exactly like a batch read of a missing one', async () => {
    const res = await as('clinician').post('/', {
      resourceType: 'Bundle',
      type: 'batch',
      entry: [
        { request: { method: 'GET', url: `Observation/${hiddenObs.id}` } },
        { request: { method: 'GET', url: 'Observation/no-such-observation' } },
        { request: { method: 'GET', url: `Observation/${hiddenObs.id}/_history/1` } },
        { request: { method: 'GET', url: 'Patient/pat-dupont' } },
      ],
    });
    expect(res.status).toBe(200);
    const [hidden, missing, version, own] = (res.body as Bundle).entry!;
    expect(hidden!.response!.status).toMatch(/^404/);
    expect(missing).toEqual(hidden);
    expect(version).toEqual(hidden);
    expect(own!.resource!.id).toBe('pat-dupont');
  });

  it('answers HEAD and If-None-Match on another patient’s resource exactly like a miss', async () => {
    const headHidden = await as('clinician').head(`/Observation/${hiddenObs.id}`);
    const headMissing = await as('clinician').head('/Observation/no-such-observation');
    expect(headHidden.status).toBe(404);
    expect(headMissing.status).toBe(404);
    const inm = await as('clinician').get(`/Observation/${hiddenObs.id}`).set('if-none-match', 'W/"1"');
    const inmMissing = await as('clinician').get('/Observation/no-such-observation').set('if-none-match', 'W/"1"');
    expect(inm.status).toBe(404);
    expect(inm.text).toBe(inmMissing.text);
  });
});

describe('side channels: Bundle.total', () => {
  /** Every total answered for `query` equals what the caller can actually receive for it. */
  async function expectNoHiddenCount(persona: PersonaName, query: string): Promise<void> {
    const sep = query.includes('?') ? '&' : '?';
    const all = await as(persona).get(`${query}${sep}_count=200`);
    expect(all.status, query).toBe(200);
    const visible = matches(all.body as Bundle).length;
    for (const q of [`${query}${sep}_summary=count`, `${query}${sep}_count=0`, `${query}${sep}_count=1`, query]) {
      const res = await as(persona).get(q);
      // The coding contractor may not use _summary at all.
      if (persona === 'coder' && q.includes('_summary')) {
        expect(res.status, q).toBe(403);
        continue;
      }
      expect(res.status, q).toBe(200);
      if (res.body.total !== undefined) expect(res.body.total, q).toBe(visible);
    }
  }

  it('does not count a resource naming another patient beside one of the care set (_summary=count, _count=0, pages)', async () => {
    // prov-fx-two-patients targets pat-dupont (hers) and pat-fx-ortho (not hers).
    await expectNoHiddenCount('clinician', '/Provenance?_id=prov-fx-two-patients');
    await expectNoHiddenCount('clinician', '/Provenance?target=Patient/pat-fx-ortho');
    await upstreamCreate({
      resourceType: 'Observation',
      status: 'final',
      code: { text: 'family history' },
      subject: { reference: 'Patient/pat-dupont' },
      focus: [{ reference: 'Patient/pat-fx-ortho' }],
    });
    await expectNoHiddenCount('clinician', '/Observation?focus=Patient/pat-fx-ortho');
    await expectNoHiddenCount('clinician', '/Observation');
  });

  it('does not count for a patient what names another patient beside her', async () => {
    await expectNoHiddenCount('patient', '/Provenance?target=Patient/pat-fx-ortho');
  });

  it('does not count for a coding contractor what was recorded outside the engagement’s stays', async () => {
    // A diagnosis of pat-dupont outside the listed stay enc-dupont.
    await upstreamCreate({
      resourceType: 'Condition',
      subject: { reference: 'Patient/pat-dupont' },
      code: { coding: [{ system: 'http://hl7.org/fhir/sid/icd-10', code: 'B20' }] },
    });
    await expectNoHiddenCount('coder', '/Condition');
    await expectNoHiddenCount('coder', '/Condition?code=B20');
  });

  it('keeps an exact total when every match is answered', async () => {
    const res = await as('clinician').get('/Encounter?patient=pat-dupont&_count=50');
    expect(res.status).toBe(200);
    expect(res.body.total).toBe(matches(res.body as Bundle).length);
    expect(res.body.total).toBeGreaterThan(0);
    const dim = await as('dim').get('/Observation?_summary=count');
    expect(dim.body.total).toBeGreaterThan(0);
  });
});
