import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import type { AuditEvent, Bundle, Encounter, Parameters, ParametersParameter } from '@medplum/fhirtypes';
import request from 'supertest';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { verdictOf } from '../../src/audit/verdict.js';
import { OVERSIGHT_FIXTURES as F } from '../../src/demo/oversight.js';
import type { PersonaName } from '../../src/demo/personas.js';
import { demoToken } from '../../src/demo/tokens.js';
import { startStack, type Stack } from '../helpers/stack.js';
import { startWebhookReceiver, type WebhookReceiver } from '../helpers/webhook.js';

/**
 * Issue 14, points 3 to 6, end to end against the embedded engine: alerts at a local webhook while
 * it matters, break-the-glass verdicts on the review page and through the FHIR-shaped API, who can
 * see a patient now, and contractors under the 2023 rules with their trace exported by the DIM.
 */

const ROOT = resolve(import.meta.dirname, '../..');
const BTG = { category: 'http://terminology.hl7.org/CodeSystem/v3-ActReason#BTG; scheme="http://hl7.org/fhir/tag/security"; label="break the glass"', 'x-btg-reason': 'Patient unconscious in the emergency room' };

/** The demo policy, with a second contract: identified access, two kinds of data, for one named staff member. */
function policyWithIdentifiedContract(dir: string): string {
  const text = readFileSync(join(ROOT, 'config/policy.yaml'), 'utf8').replace(
    '    dateMode: month\n',
    `    dateMode: month
  - id: qualite-2026
    contractor: coding-contractor
    supervisingDim: { practitioner: Practitioner/prat-leroy }
    contractReference: Contrat DIM-2026-011 (demo)
    staff: [Practitioner/prat-petit]
    access: identified
    categories: [Encounter, Condition]
    validFrom: '2026-01-01'
    validUntil: '2030-12-31'
    stays: [enc-dupont]
`,
  );
  const file = join(dir, 'policy-oversight.yaml');
  writeFileSync(file, text);
  return file;
}

const oversightYaml = (hookUrl: string, dir?: string) => `
oversight:
  ${dir ? `dir: ${dir}` : ''}
  webhook: { url: "${hookUrl}", backoff: { initialMs: 20, maxMs: 200 } }
  detectors:
    breakGlassBurst: { count: 2 }
    distinctPatients: { max: 3, ignoreRoles: [dim] }
    refusals: { count: 3 }
`;

let stack: Stack;
let hook: WebhookReceiver;
let scratch: string;
const t = Date.now();

const fhirPath = (p: string) => new URL(stack.url).pathname + p;
const token = (persona: PersonaName, roles?: string[]) => demoToken(persona, { dir: join(stack.dir, 'keys'), ...(roles ? { claims: { realm_access: { roles } } } : {}) });
const get = (persona: PersonaName, p: string, headers: Record<string, string> = {}) =>
  request(stack.gate.server).get(fhirPath(p)).set({ authorization: `Bearer ${token(persona)}`, ...headers });
const review = (persona: PersonaName, p: string) => request(stack.gate.server).get(`/caregate/review${p}`).set('authorization', `Bearer ${token(persona)}`);

/** The trail on the FHIR server (the shipper puts events there within about a second). */
async function trail(query: string, until: (events: AuditEvent[]) => boolean = (e) => e.length > 0): Promise<AuditEvent[]> {
  const deadline = Date.now() + 20_000;
  for (;;) {
    const b = (await (await fetch(`${stack.upstreamUrl}/AuditEvent?${query}&_count=1000`)).json()) as Bundle<AuditEvent>;
    const events = (b.entry ?? []).map((e) => e.resource!);
    if (until(events) || Date.now() > deadline) return events;
    await new Promise((r) => setTimeout(r, 50));
  }
}
const byRequest = (id: string) => trail(`date=ge${new Date(t - 60_000).toISOString()}`, (es) => es.some((e) => requestIdOf(e) === id)).then((es) => es.filter((e) => requestIdOf(e) === id));
const requestIdOf = (e: AuditEvent) => e.entity?.find((x) => x.type?.code === 'XrequestId')?.what?.identifier?.value;
const part = (p: ParametersParameter, name: string) => p.part?.filter((x) => x.name === name) ?? [];
const localDay = (ms: number) => new Intl.DateTimeFormat('en-CA', { timeZone: 'Europe/Paris', year: 'numeric', month: '2-digit', day: '2-digit' }).format(ms);

beforeAll(async () => {
  scratch = mkdtempSync(join(tmpdir(), 'caregate-oversight-'));
  hook = await startWebhookReceiver();
  stack = await startStack({ now: () => t, policyFile: policyWithIdentifiedContract(scratch), extraYaml: oversightYaml(hook.url) });
});
afterAll(async () => {
  await stack?.close();
  await hook?.close();
  rmSync(scratch, { recursive: true, force: true });
});

describe('alerts within a minute', () => {
  it('raises an alert at the local webhook when a clinician opens a staff member’s record, with the AuditEvent id and no name', async () => {
    const res = await get('clinician', `/Patient/${F.staffPatient}`);
    expect(res.status).toBe(200);
    const alert = await hook.waitFor<{ user: { reference: string }; auditEvents: string[]; patient: string }>((b) => b.rule === 'staff-patient' && b.patient === `Patient/${F.staffPatient}`);
    expect(alert.user.reference).toBe('Practitioner/prat-martin');
    const [ev] = await byRequest(String(res.headers['x-request-id']));
    expect(alert.auditEvents).toContain(ev!.id);
    expect(JSON.stringify(alert)).not.toMatch(/GIRARD|Paul|MARTIN|Claire|cardio/);
    const metrics = await request(stack.gate.server).get('/metrics');
    expect(metrics.text).toMatch(/caregate_alerts_total\{rule="staff-patient"\} [1-9]/);
  });

  it('records every access to a staff member’s or a public figure’s record at high severity, and an ordinary patient’s at none', async () => {
    const severity = (e: AuditEvent | undefined) =>
      e?.entity?.flatMap((x) => x.detail ?? []).find((d) => d.type === 'audit-severity')?.valueString;
    const staff = await get('clinician', `/Observation?patient=${F.staffPatient}`);
    const flagged = await get('nurse', `/Patient/${F.staffPatient}`);
    const ordinary = await get('clinician', '/Patient/pat-dupont');
    for (const res of [staff, flagged, ordinary]) expect(res.status).toBe(200);
    const [staffEvents, nurseEvents, ordinaryEvents] = await Promise.all([staff, flagged, ordinary].map((r) => byRequest(String(r.headers['x-request-id']))));
    expect(staffEvents!.length).toBeGreaterThan(0);
    for (const e of [...staffEvents!, ...nurseEvents!]) expect(severity(e)).toBe('high');
    expect(ordinaryEvents!.map(severity)).toEqual(ordinaryEvents!.map(() => undefined));
    const publicFigure = await get('clinician', `/Patient/${F.flaggedPatient}`);
    expect((await byRequest(String(publicFigure.headers['x-request-id']))).map(severity)).toContain('high');
  });

  it('flags a public figure and a patient who shares the clinician’s surname', async () => {
    expect((await get('clinician', `/Patient/${F.flaggedPatient}`)).status).toBe(200);
    expect((await get('clinician', `/Observation?patient=${F.namesakePatient}`)).status).toBe(200);
    await hook.waitFor((b) => b.rule === 'flagged-patient' && b.patient === `Patient/${F.flaggedPatient}`);
    const same = await hook.waitFor<{ user: { reference: string } }>((b) => b.rule === 'same-surname' && b.patient === `Patient/${F.namesakePatient}`);
    expect(same.user.reference).toBe('Practitioner/prat-martin');
  });

  it('alerts on a burst of break-the-glass openings by one user', async () => {
    expect((await get('emergency', '/Patient/pat-dupont', BTG)).status).toBe(200);
    expect((await get('emergency', '/Patient/pat-fx-direct', BTG)).status).toBe(200);
    const burst = await hook.waitFor<{ auditEvents: string[]; count: number }>((b) => b.rule === 'break-glass-burst');
    expect(burst.count).toBe(2);
    expect(burst.auditEvents).toHaveLength(2);
  });

  it('alerts on repeated refusals, and on more distinct patients within the hour than allowed', async () => {
    for (const p of ['pat-dupont', 'pat-fx-direct', 'pat-fx-role']) expect((await get('surgeon', `/Patient/${p}`)).status).toBe(403);
    const probing = await hook.waitFor<{ user: { reference: string } }>((b) => b.rule === 'repeated-refusals');
    expect(probing.user.reference).toBe('Practitioner/prat-girard');
    // Dr Martin has opened the staff member, the public figure and her namesake: a fourth is one too many.
    expect((await get('clinician', '/Patient/pat-fx-direct')).status).toBe(200);
    const many = await hook.waitFor<{ count: number; threshold: number; user: { reference: string } }>((b) => b.rule === 'distinct-patients');
    expect(many).toMatchObject({ count: 4, threshold: 3, user: { reference: 'Practitioner/prat-martin' } });
  });

  it('alerts once on a break-the-glass opening left without the DIM’s verdict for more than the due days', async () => {
    const raised = await stack.gate.oversight!.sweep();
    expect(raised.map((a) => a.auditEvents[0])).toEqual([F.openBreakGlass]);
    await hook.waitFor((b) => b.id === `unreviewed-${F.openBreakGlass}` && b.patient === `Patient/${F.flaggedPatient}`);
    expect(await stack.gate.oversight!.sweep()).toEqual([]);
  });
});

describe('break-the-glass verdicts', () => {
  const period = `?from=${localDay(t - 25 * 86_400_000)}&to=${localDay(t)}`;

  it('shows open and closed openings on the review page, the overdue one flagged', async () => {
    const page = await review('dim', period);
    expect(page.status).toBe(200);
    const row = (id: string) => new RegExp(`<tr data-opening="${id}">[\\s\\S]*?</tr>`).exec(page.text)?.[0] ?? '';
    expect(row(F.openBreakGlass)).toContain('open, overdue');
    expect(row(F.closedBreakGlass)).toContain('justified');
    expect(row(F.closedBreakGlass)).toContain('Anne LEROY');
  });

  it('lets the DIM close a break-the-glass as unjustified on the page, and the verdict appears in the trail', async () => {
    const page = await review('dim', period);
    const form = new RegExp(`action="(review/break-glass/${F.openBreakGlass}/verdict)"[\\s\\S]*?name="token" value="([^"]+)"`).exec(page.text);
    expect(form).not.toBeNull();
    const posted = await request(stack.gate.server)
      .post(`/caregate/${form![1]}`)
      .set('authorization', `Bearer ${token('dim')}`)
      .type('form')
      .send({ token: form![2], verdict: 'unjustified', comment: 'Aucune prise en charge aux urgences ce jour-là' });
    expect(posted.status).toBe(200);
    expect(posted.text).toContain('unjustified');
    const [ev] = await trail(`entity=AuditEvent/${F.openBreakGlass}`);
    expect(verdictOf(ev!)).toMatchObject({ opening: F.openBreakGlass, verdict: 'unjustified', comment: 'Aucune prise en charge aux urgences ce jour-là', by: '899700000054' });
    expect(ev!.entity?.find((e) => e.what?.reference === `Patient/${F.flaggedPatient}`)).toBeDefined();
    const after = await review('dim', period);
    const row = new RegExp(`<tr data-opening="${F.openBreakGlass}">[\\s\\S]*?</tr>`).exec(after.text)![0];
    expect(row).toContain('unjustified');
    expect(row).not.toContain('overdue');
  });

  it('refuses a verdict form not issued to this DIM, a form from another site, and a clinician, and records the attempts', async () => {
    const post = (persona: PersonaName, body: Record<string, string>, headers: Record<string, string> = {}) =>
      request(stack.gate.server).post(`/caregate/review/break-glass/${F.closedBreakGlass}/verdict`).set({ authorization: `Bearer ${token(persona)}`, ...headers }).type('form').send(body);
    expect((await post('dim', { token: '123.abc', verdict: 'unjustified', comment: 'x' })).status).toBe(403);
    const page = await review('dim', period);
    const valid = /name="token" value="([^"]+)"/.exec(page.text)![1]!;
    expect((await post('dim', { token: valid, verdict: 'unjustified', comment: 'x' }, { 'sec-fetch-site': 'cross-site' })).status).toBe(403);
    const clinician = await post('clinician', { token: valid, verdict: 'unjustified', comment: 'x' });
    expect(clinician.status).toBe(403);
    const [ev] = await byRequest(String(clinician.headers['x-request-id']));
    expect(ev!.outcome).toBe('4');
  });

  it('records a verdict through the FHIR-shaped API on a break-the-glass opened today', async () => {
    const [opening] = await trail('subtype=110127&patient=pat-dupont');
    const api = (body: object, type = 'application/fhir+json') =>
      request(stack.gate.server).post(`/caregate/review/break-glass/${opening!.id}/$verdict`).set('authorization', `Bearer ${token('dim')}`).set('content-type', type).send(JSON.stringify(body));
    const params = { resourceType: 'Parameters', parameter: [{ name: 'verdict', valueCode: 'justified' }, { name: 'comment', valueString: 'Arrêt cardiaque, équipe de réanimation' }] };
    const res = await api(params);
    expect(res.status).toBe(201);
    expect(verdictOf(JSON.parse(res.text) as AuditEvent)).toMatchObject({ opening: opening!.id, verdict: 'justified' });
    expect((await api(params, 'application/x-www-form-urlencoded')).status).toBe(415);
    expect((await api({ resourceType: 'Parameters', parameter: [{ name: 'verdict', valueCode: 'maybe' }] })).status).toBe(400);
    const missing = await request(stack.gate.server).post('/caregate/review/break-glass/no-such-opening/$verdict').set('authorization', `Bearer ${token('dim')}`).set('content-type', 'application/fhir+json').send(JSON.stringify(params));
    expect(missing.status).toBe(404);
  });
});

describe('who can see this patient now', () => {
  it('lists exactly the professionals who may read the staff member’s record, with the evidence, and the roles that see every record', async () => {
    const res = await review('dim', `/who-can-see?patient=${F.staffPatient}`).set('accept', 'application/fhir+json');
    expect(res.status).toBe(200);
    const params = JSON.parse(res.text) as Parameters;
    const people = (params.parameter ?? []).filter((p) => p.name === 'person');
    const who = (kind: string) => people.filter((p) => part(p, 'kind')[0]?.valueCode === kind).map((p) => part(p, 'who')[0]!.valueReference!.reference);
    expect(who('practitioner')).toEqual(['Practitioner/prat-bernard', 'Practitioner/prat-martin', 'Practitioner/prat-roux']);
    expect(who('patient')).toEqual([`Patient/${F.staffPatient}`]);
    const bernard = people.find((p) => part(p, 'who')[0]!.valueReference!.reference === 'Practitioner/prat-bernard')!;
    const evidence = part(bernard, 'evidence')[0]!;
    expect(part(evidence, 'reference')[0]!.valueReference!.reference).toBe(`CareTeam/${F.staffCareTeam}`);
    expect(part(evidence, 'through')[0]!.valueReference!.reference).toBe('PractitionerRole/role-bernard-cardio');
    expect(part(bernard, 'service').map((s) => s.valueReference!.reference)).toEqual(['Organization/org-cardio']);
    expect((params.parameter ?? []).filter((p) => p.name === 'role').map((p) => part(p, 'id')[0]!.valueCode)).toEqual(['dim', 'admission']);
    // The view is itself an access to the patient, in her trail.
    const [ev] = await byRequest(String(res.headers['x-request-id']));
    expect(ev!.entity?.some((e) => e.what?.reference === `Patient/${F.staffPatient}`)).toBe(true);
    expect(ev!.purposeOfEvent?.[0]?.coding?.[0]?.code).toBe('HOPERAT');
  });

  it('shows the page to the DIM, with the break-the-glass grant of the emergency physician, and refuses it to a clinician', async () => {
    const page = await review('dim', '/who-can-see?patient=pat-dupont');
    expect(page.status).toBe(200);
    expect(page.headers['content-security-policy']).toMatch(/style-src 'nonce-/);
    expect(page.text).toMatch(/<tr data-who="Practitioner\/prat-roux">[\s\S]*?break-glass[\s\S]*?Patient unconscious/);
    expect(page.text).toContain('RelatedPerson/rp-dupont');
    expect(page.text).toContain('qualite-2026');
    const refused = await review('clinician', '/who-can-see?patient=pat-dupont');
    expect(refused.status).toBe(403);
    const [ev] = await byRequest(String(refused.headers['x-request-id']));
    expect(ev!.outcome).toBe('4');
    expect(ev!.entity?.some((e) => e.what?.reference === 'Patient/pat-dupont')).toBe(true);
  });

  it('lists which patients a practitioner can see now, grants included', async () => {
    const res = await review('dim', '/care-set?practitioner=prat-roux&_format=json');
    expect(res.status).toBe(200);
    const patients = ((JSON.parse(res.text) as Parameters).parameter ?? []).filter((p) => p.name === 'patient');
    const ids = patients.map((p) => part(p, 'who')[0]!.valueReference!.reference).sort();
    // The fixtures (Louise Dupont through a grant), and her emergency stays of the generated hospital.
    const fixtures = ['Patient/pat-dupont', 'Patient/pat-fx-direct', 'Patient/pat-fx-er-1', 'Patient/pat-fx-er-2', `Patient/${F.staffPatient}`];
    expect(ids).toEqual(expect.arrayContaining(fixtures));
    const ofHerStays = new Set<string>();
    for (const who of ['Practitioner/prat-roux', 'PractitionerRole/role-roux-urg']) {
      const stays = (await (await fetch(`${stack.upstreamUrl}/Encounter?participant=${who}&_count=1000`)).json()) as Bundle<Encounter>;
      for (const e of stays.entry ?? []) ofHerStays.add(e.resource!.subject!.reference!);
    }
    for (const id of ids.filter((i) => !fixtures.includes(i!))) expect(ofHerStays.has(id!), id).toBe(true);
    const dupont = patients.find((p) => part(p, 'who')[0]!.valueReference!.reference === 'Patient/pat-dupont')!;
    expect(part(part(dupont, 'evidence')[0]!, 'source')[0]!.valueCode).toBe('break-glass');
    expect((await review('dim', '/care-set?practitioner=no-one')).status).toBe(404);
    expect((await review('dim', '/care-set?practitioner=prat-roux&patient=x')).status).toBe(400);
  });
});

describe('contractors under the 2023 rules', () => {
  it('lets a named staff member work under the contract, de-identified or identified as it says, and no one else', async () => {
    const coder = await get('coder', '/Encounter?_count=5');
    expect(coder.status).toBe(200);
    expect(coder.text).not.toContain('enc-dupont');
    // Marc Petit, named in the identified contract, with the contractor's role.
    const petit = (p: string) => request(stack.gate.server).get(fhirPath(p)).set('authorization', `Bearer ${token('admission', ['coding-contractor'])}`);
    const enc = await petit('/Encounter/enc-dupont');
    expect(enc.status).toBe(200);
    expect(JSON.parse(enc.text).subject.reference).toBe('Patient/pat-dupont');
    expect((await petit('/Condition?encounter=enc-dupont')).status).toBe(200);
    expect((await petit('/Observation?encounter=enc-dupont')).status).toBe(403);
    // The director with the contractor's role is on no contract's staff.
    const director = await request(stack.gate.server).get(fhirPath('/Encounter?_count=5')).set('authorization', `Bearer ${token('director', ['coding-contractor'])}`);
    expect(director.status).toBe(403);
  });

  it('lets the DIM export the engagement’s trace: date, hour, person, resource', async () => {
    await trail('_count=1', () => true);
    const day = localDay(t);
    const csvOf = async (id: string, want: RegExp) => {
      const deadline = Date.now() + 20_000;
      for (;;) {
        const res = await review('dim', `/engagements/${id}/trace.csv?from=${day}&to=${day}`);
        expect(res.status).toBe(200);
        if (want.test(res.text) || Date.now() > deadline) return res;
        await new Promise((r) => setTimeout(r, 100));
      }
    };
    const identified = await csvOf('qualite-2026', /Observation/);
    expect(identified.headers['content-disposition']).toBe('attachment; filename="trace-qualite-2026.csv"');
    const lines = identified.text.replace(/^\uFEFF/, '').trim().split('\r\n');
    expect(lines[0]).toBe('date,hour,person,person_identifier,person_reference,resource,interaction,outcome,patient,event_id,request_id');
    expect(lines.find((l) => l.includes('Encounter/enc-dupont'))).toMatch(new RegExp(`^${day},\\d{2}:\\d{2}:\\d{2},Marc PETIT,[^,]+,Practitioner/prat-petit,Encounter/enc-dupont,read,granted,Patient/pat-dupont,`));
    expect(lines.find((l) => l.includes('Observation'))).toContain(',refused,');
    expect(identified.text).not.toContain('MOREAU');
    const deidentified = await csvOf('codage-2026', /MOREAU/);
    expect(deidentified.text).toContain('Practitioner/prat-moreau');
    expect((await review('dim', `/engagements/nope/trace.csv?from=${day}`)).status).toBe(404);
    expect((await review('clinician', `/engagements/codage-2026/trace.csv?from=${day}`)).status).toBe(403);
  });
});

describe('a restart', () => {
  it('keeps the detectors’ windows and sends the alerts the webhook missed', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'caregate-oversight-restart-'));
    const down = await startWebhookReceiver();
    await down.close();
    let first: Stack | undefined = await startStack({ now: () => t, extraYaml: oversightYaml(down.url, dir) });
    const martin = (s: Stack, p: string) => request(s.gate.server).get(new URL(s.url).pathname + p).set(s.auth('clinician'));
    const back = await startWebhookReceiver();
    let second: Stack | undefined;
    try {
      expect((await martin(first, '/Patient/pat-fx-direct')).status).toBe(200);
      expect((await martin(first, `/Patient/${F.staffPatient}`)).status).toBe(200);
      await first.gate.oversight!.settled();
      await first.close();
      first = undefined;
      second = await startStack({ now: () => t, extraYaml: oversightYaml(back.url, dir) });
      // Raised before the restart while the webhook was down: delivered now.
      await back.waitFor((b) => b.rule === 'staff-patient');
      // Two patients before the restart, two after: more than three within the hour.
      expect((await martin(second, '/Patient/pat-fx-role')).status).toBe(200);
      expect((await martin(second, '/Patient/pat-fx-participant-open')).status).toBe(200);
      const many = await back.waitFor<{ count: number }>((b) => b.rule === 'distinct-patients');
      expect(many.count).toBe(4);
    } finally {
      await first?.close();
      await second?.close();
      await back.close();
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
