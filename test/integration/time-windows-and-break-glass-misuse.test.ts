import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import request from 'supertest';
import type { Binary, Bundle, DocumentReference } from '@medplum/fhirtypes';
import type { PersonaName } from '../../src/demo/personas.js';
import { startDemoFhir } from '../../src/demo/server.js';
import { createBreakGlassStore } from '../../src/relate/breakglass.js';
import { createMemoryState } from '../../src/shared/state.js';
import { startFaultUpstream } from '../helpers/fault-upstream.js';
import { startStack, type Stack } from '../helpers/stack.js';

/**
 * A second threats review (threats.md: identity and time windows, special roles, break-the-glass,
 * formats and HTTP tricks, fail-open), end to end. Relationships are written straight to the FHIR
 * server, as the hospital's trusted systems would.
 */
let engine: Awaited<ReturnType<typeof startDemoFhir>>;
let faults: Awaited<ReturnType<typeof startFaultUpstream>>;
let stack: Stack;
beforeAll(async () => {
  engine = await startDemoFhir({ port: 0, host: '127.0.0.1', seed: { seed: 42, patients: 50 } });
  faults = await startFaultUpstream(engine.url);
  stack = await startStack({ upstreamUrl: faults.url });
});
afterAll(async () => {
  await stack?.close();
  await faults?.close();
  await engine?.close();
});

const path = (p: string) => new URL(stack.url).pathname + p;
const as = (persona: PersonaName) => ({
  get: (p: string) => request(stack.gate.server).get(path(p)).set(stack.auth(persona)),
});
const DAY = 86_400_000;
const iso = (ms: number) => new Date(ms).toISOString();
const martin = { reference: 'Practitioner/prat-martin' };

/** Creates a resource on the FHIR server itself (test set-up). */
async function upstreamCreate(resource: Record<string, unknown>): Promise<string> {
  const res = await fetch(`${engine.url}/${resource.resourceType as string}`, {
    method: 'POST',
    headers: { 'content-type': 'application/fhir+json' },
    body: JSON.stringify(resource),
  });
  expect(res.status).toBe(201);
  return ((await res.json()) as { id: string }).id;
}

/** A new patient whose only tie to anyone is `relationship` (a CareTeam or an Encounter about her). */
async function patientWith(relationship: Record<string, unknown>): Promise<string> {
  const pid = await upstreamCreate({ resourceType: 'Patient', name: [{ family: 'TEMOIN' }] });
  const subject = { reference: `Patient/${pid}` };
  await upstreamCreate(relationship.resourceType === 'Encounter' ? { class: { code: 'IMP' }, subject, ...relationship } : { subject, ...relationship });
  return pid;
}

describe('identity and time windows', () => {
  it('does not count a stay in progress whose own period has not begun or has already ended', async () => {
    const now = Date.now();
    const future = await patientWith({ resourceType: 'Encounter', status: 'in-progress', period: { start: iso(now + 4 * DAY) }, participant: [{ individual: martin }] });
    const stale = await patientWith({ resourceType: 'Encounter', status: 'arrived', period: { start: iso(now - 9 * DAY), end: iso(now - 2 * DAY) }, participant: [{ individual: martin }] });
    const current = await patientWith({ resourceType: 'Encounter', status: 'in-progress', period: { start: iso(now - DAY) }, participant: [{ individual: martin }] });
    expect((await as('clinician').get(`/Patient/${future}`)).status).toBe(403);
    expect((await as('clinician').get(`/Patient/${stale}`)).status).toBe(403);
    expect((await as('clinician').get(`/Patient/${current}`)).status).toBe(200);
  });

  it('keeps a participant of a finished stay only for the window after her own participation ended, not the stay’s', async () => {
    const now = Date.now();
    const longStay = { start: iso(now - 400 * DAY), end: iso(now - 2 * DAY) };
    // She left the stay a year before it closed: refused while it ran, she must not regain it now.
    const left = await patientWith({ resourceType: 'Encounter', status: 'finished', period: longStay, participant: [{ individual: martin, period: { start: longStay.start, end: iso(now - 390 * DAY) } }] });
    const joinedAfter = await patientWith({ resourceType: 'Encounter', status: 'finished', period: longStay, participant: [{ individual: martin, period: { start: iso(now - DAY) } }] });
    const stayedToEnd = await patientWith({ resourceType: 'Encounter', status: 'finished', period: longStay, participant: [{ individual: martin, period: { start: iso(now - 10 * DAY), end: longStay.end } }] });
    expect((await as('clinician').get(`/Patient/${left}`)).status).toBe(403);
    expect((await as('clinician').get(`/Patient/${joinedAfter}`)).status).toBe(403);
    expect((await as('clinician').get(`/Patient/${stayedToEnd}`)).status).toBe(200);
  });

  it('follows nested care teams to the configured depth only, and only through live participations', async () => {
    const now = Date.now();
    const t1 = await upstreamCreate({ resourceType: 'CareTeam', status: 'active', participant: [{ member: martin }] });
    const t2 = await upstreamCreate({ resourceType: 'CareTeam', status: 'active', participant: [{ member: { reference: `CareTeam/${t1}` } }] });
    const t3 = await upstreamCreate({ resourceType: 'CareTeam', status: 'active', participant: [{ member: { reference: `CareTeam/${t2}` } }] });
    const ended = await upstreamCreate({ resourceType: 'CareTeam', status: 'active', participant: [{ member: martin, period: { end: iso(now - DAY) } }] });
    const depth2 = await patientWith({ resourceType: 'CareTeam', status: 'active', participant: [{ member: { reference: `CareTeam/${t2}` } }] });
    const depth3 = await patientWith({ resourceType: 'CareTeam', status: 'active', participant: [{ member: { reference: `CareTeam/${t3}` } }] });
    const innerEnded = await patientWith({ resourceType: 'CareTeam', status: 'active', participant: [{ member: { reference: `CareTeam/${ended}` } }] });
    const outerEnded = await patientWith({ resourceType: 'CareTeam', status: 'active', participant: [{ member: { reference: `CareTeam/${t1}` }, period: { end: iso(now - DAY) } }] });
    expect((await as('clinician').get(`/Patient/${depth2}`)).status).toBe(200);
    for (const pid of [depth3, innerEnded, outerEnded]) expect((await as('clinician').get(`/Patient/${pid}`)).status).toBe(403);
  });
});

describe('break-the-glass misuse', () => {
  const category = 'http://terminology.hl7.org/CodeSystem/v3-ActReason#BTG; scheme="http://hl7.org/fhir/tag/security"';
  const btgGet = (p: string, reason: string) => as('emergency').get(p).set('category', category).set('x-btg-reason', reason);

  it('refuses a reason made of invisible characters, control characters or punctuation, by header or by the operation', async () => {
    for (const reason of ['%E2%80%8B'.repeat(12), '%00'.repeat(12), '.'.repeat(12), '%E2%80%AE%0A'.repeat(12)]) {
      const res = await btgGet('/Patient/pat-fx-direct', reason);
      expect(res.status).toBe(400);
      expect(res.body.issue[0].details.text).toMatch(/letters or digits/);
    }
    for (const reason of ['\u200b'.repeat(12), '\u0000'.repeat(12), '-'.repeat(12), 'x'.repeat(1001)]) {
      const res = await request(stack.gate.server)
        .post(path('/Patient/pat-fx-direct/$break-glass'))
        .set(stack.auth('emergency'))
        .set('content-type', 'application/fhir+json')
        .send(JSON.stringify({ resourceType: 'Parameters', parameter: [{ name: 'reason', valueString: reason }] }));
      expect(res.status).toBe(400);
    }
    expect((await as('emergency').get('/Patient/pat-fx-direct')).status).toBe(403);
    expect((await btgGet('/Patient/pat-fx-direct', 'Patient%20inconscient%20au%20d%C3%A9chocage')).status).toBe(200);
  });

  it('opens no grant when the request that asks for it is refused for another reason', async () => {
    const patient = 'pat-fx-suspended';
    expect((await as('emergency').get(`/Patient/${patient}`)).status).toBe(403);
    // The audit trail of a patient is refused to clinicians, break-the-glass or not.
    expect((await btgGet(`/Patient/${patient}/AuditEvent`, 'unconscious patient in resuscitation')).status).toBe(403);
    expect((await as('emergency').get(`/Patient/${patient}`)).status).toBe(403);
    // Asked with a request that is permitted, the grant opens.
    expect((await btgGet(`/Patient/${patient}`, 'unconscious patient in resuscitation')).status).toBe(200);
    expect((await as('emergency').get(`/Patient/${patient}/Observation`)).status).toBe(200);
  });

  it('does not open break-the-glass from a write', async () => {
    const current = (await as('dim').get('/Patient/pat-fx-role')).body as Record<string, unknown>;
    const res = await request(stack.gate.server)
      .put(path('/Patient/pat-fx-role'))
      .set(stack.auth('emergency'))
      .set('category', category)
      .set('x-btg-reason', 'unconscious patient in resuscitation')
      .set('content-type', 'application/fhir+json')
      .send(JSON.stringify({ ...current, gender: 'unknown' }));
    expect(res.status).toBe(400);
    expect((await as('dim').get('/Patient/pat-fx-role')).body.gender).toBe(current.gender);
    expect((await as('emergency').get('/Patient/pat-fx-role')).status).toBe(403);
  });
});

describe('break-the-glass grants', () => {
  it('cover the one patient named, for the one user, and end when their duration is over', async () => {
    let now = Date.UTC(2026, 0, 15, 10);
    const store = createBreakGlassStore(createMemoryState().grants, () => now);
    await store.grant({ user: 'Practitioner/prat-roux', patient: 'pat-fx-ortho', reason: 'unconscious patient', grantedAt: now, until: now + 60 * 60_000 });
    expect(store.active('Practitioner/prat-roux').map((g) => g.patient)).toEqual(['pat-fx-ortho']);
    expect(store.active('Practitioner/prat-martin')).toEqual([]);
    now += 60 * 60_000 - 1;
    expect(store.active('Practitioner/prat-roux')).toHaveLength(1);
    now += 1;
    expect(store.active('Practitioner/prat-roux')).toEqual([]);
  });
});

describe('special roles: admission staff', () => {
  it('reads an old version of a stay, and its XML, without its reasons or diagnoses', async () => {
    for (const res of [
      await as('admission').get('/Encounter/enc-dupont/_history/1'),
      await as('admission').get('/Encounter/enc-dupont').set('accept', 'application/fhir+xml'),
    ]) {
      expect(res.status).toBe(200);
      expect(res.text).toContain('enc-dupont');
      expect(res.text).not.toMatch(/reasonCode|diagnosis|<text|"text"\s*:\s*\{/);
    }
  });
});

describe('fail closed', () => {
  it('refuses a Binary whose DocumentReference cannot be read, even to a role that sees every record', async () => {
    const docs = (await as('dim').get('/DocumentReference?_count=200')).body as Bundle<DocumentReference>;
    let target: { binary: string; doc: string } | undefined;
    for (const e of docs.entry ?? []) {
      const id = /Binary\/([A-Za-z0-9-]+)$/.exec(e.resource?.content?.[0]?.attachment?.url ?? '')?.[1];
      if (!id) continue;
      const b = (await as('dim').get(`/Binary/${id}`)).body as Binary;
      if (b.securityContext?.reference === `DocumentReference/${e.resource!.id}`) {
        target = { binary: id, doc: e.resource!.id! };
        break;
      }
    }
    expect(target).toBeDefined();
    faults.failWhen(new RegExp(`/DocumentReference/${target!.doc}$`));
    try {
      for (const persona of ['dim', 'clinician'] as const) {
        const res = await as(persona).get(`/Binary/${target!.binary}`);
        expect(res.status).toBe(503);
        expect(res.body.resourceType).toBe('OperationOutcome');
      }
    } finally {
      faults.failWhen(undefined);
    }
  });
});
