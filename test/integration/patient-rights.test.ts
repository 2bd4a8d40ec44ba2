import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import request from 'supertest';
import { join } from 'node:path';
import type { AuditEvent, Bundle, Communication, Consent } from '@medplum/fhirtypes';
import { readSpoolDir } from '../../src/audit/spool.js';
import { DetailType, EntityName } from '../../src/audit/codes.js';
import { PATIENT_RIGHTS_FIXTURES as F } from '../../src/demo/patient-rights.js';
import type { PersonaName } from '../../src/demo/personas.js';
import { demoToken } from '../../src/demo/tokens.js';
import { communicationIds } from '../../src/notify/messages.js';
import { startStack, type Stack } from '../helpers/stack.js';

/**
 * Issue 13, the patient's rights, end to end in the demo hospital: Louise Dupont (`patient`) opposed
 * Dr Lefevre (`colleague`), a cardiologist of her own care team; she lists the accesses to her
 * record; an emergency access tells her and her attending physician; a preliminary document waits
 * for a physician's release.
 */
let stack: Stack;
beforeAll(async () => {
  stack = await startStack({ patients: 60 });
}, 60_000);
afterAll(async () => stack?.close());

const BTG = 'http://terminology.hl7.org/CodeSystem/v3-ActReason#BTG; scheme="http://hl7.org/fhir/tag/security"; label="break the glass"';
const PATIENT_WRITES = 'openid fhirUser launch/patient patient/*.rs patient/Consent.cud';
const path = (p: string) => new URL(stack.url).pathname + p;
const as = (persona: PersonaName, headers: Record<string, string> = {}) => {
  const auth = { ...stack.auth(persona), ...headers };
  return {
    get: (p: string) => request(stack.gate.server).get(path(p)).set(auth),
    post: (p: string, body: unknown) => request(stack.gate.server).post(path(p)).set(auth).set('content-type', 'application/fhir+json').send(body as object),
    put: (p: string, body: unknown) => request(stack.gate.server).put(path(p)).set(auth).set('content-type', 'application/fhir+json').send(body as object),
  };
};
const patientWriting = () => ({ authorization: `Bearer ${stack.token('patient', { scope: PATIENT_WRITES })}` });

async function spooled(): Promise<AuditEvent[]> {
  return (await readSpoolDir(join(stack.dir, 'audit'))).events;
}
const requestIdOf = (e: AuditEvent) => e.entity?.find((en) => en.type?.code === 'XrequestId')?.what?.identifier?.value;
async function eventsOf(requestId: string): Promise<AuditEvent[]> {
  return (await spooled()).filter((e) => requestIdOf(e) === requestId);
}
const decisionReason = (e: AuditEvent) => e.entity?.find((en) => en.name === EntityName.decision)?.detail?.find((d) => d.type === DetailType.decisionReason)?.valueString;
const evidenceOf = (e: AuditEvent) => (e.entity ?? []).filter((en) => en.name === EntityName.evidence);

async function waitFor<T>(probe: () => Promise<T | undefined>, ms = 10_000): Promise<T> {
  const end = Date.now() + ms;
  for (;;) {
    const v = await probe();
    if (v !== undefined) return v;
    if (Date.now() > end) throw new Error('timed out');
    await new Promise((r) => setTimeout(r, 100));
  }
}

/** Reads a resource straight from the FHIR server (test checks, not through caregate). */
async function upstream<T>(p: string): Promise<T | undefined> {
  const res = await fetch(`${stack.upstreamUrl}/${p}`);
  return res.status === 200 ? ((await res.json()) as T) : undefined;
}

function opposition(patient: string, actor: string, extra: Partial<NonNullable<Consent['provision']>> = {}): Consent {
  return {
    resourceType: 'Consent',
    status: 'active',
    scope: { coding: [{ system: 'http://terminology.hl7.org/CodeSystem/consentscope', code: 'patient-privacy' }] },
    category: [{ coding: [{ system: 'http://loinc.org', code: '59284-0' }] }],
    patient: { reference: `Patient/${patient}` },
    policyRule: { coding: [{ system: 'http://terminology.hl7.org/CodeSystem/v3-ActCode', code: 'OPTOUT' }] },
    provision: { type: 'deny', actor: [{ role: { text: 'recipient' }, reference: { reference: actor } }], ...extra },
  };
}

describe('opposition to sharing (CSP L1110-4)', () => {
  it('refuses the clinician the patient opposed, though in her care team, while his colleague in the same team reads her', async () => {
    const refused = await as('colleague').get('/Patient/pat-dupont').set('x-request-id', 'pr-opposed-read');
    expect(refused.status).toBe(403);
    expect(refused.body.resourceType).toBe('OperationOutcome');
    expect(refused.text).toContain('L1110-4');
    expect((await as('clinician').get('/Patient/pat-dupont')).status).toBe(200);
    const [ev] = await eventsOf('pr-opposed-read');
    expect(ev!.outcome).toBe('4');
    expect(decisionReason(ev!)).toBe('patient-opposition');
    expect(evidenceOf(ev!).map((e) => e.what?.reference)).toEqual([`Consent/${F.opposition}`]);
  });

  it('answers his searches naming her with an empty searchset, leaves her out of the others, and refuses his writes into her record', async () => {
    const named = await as('colleague').get('/Observation?patient=pat-dupont');
    expect(named.status).toBe(200);
    expect(named.body.entry ?? []).toEqual([]);
    const all = await as('colleague').get('/Observation?_count=200');
    expect(all.status).toBe(200);
    expect((all.body.entry ?? []).map((e: { resource: { subject?: { reference?: string } } }) => e.resource.subject?.reference)).not.toContain('Patient/pat-dupont');
    expect((all.body.entry ?? []).length).toBeGreaterThan(0);
    const write = await as('colleague').post('/Observation', { resourceType: 'Observation', status: 'final', code: { text: 'x' }, subject: { reference: 'Patient/pat-dupont' } });
    expect(write.status).toBe(403);
    expect(write.text).toContain('L1110-4');
  });

  it('withholds only the kinds of data an opposition is limited to, and a Consent written through caregate takes effect at once', async () => {
    expect((await as('nurse').get('/Patient/pat-dupont/Observation')).status).toBe(200);
    const created = await as('dim')
      .post('/Consent', opposition('pat-dupont', 'PractitionerRole/role-bernard-cardio', { class: [{ system: 'http://hl7.org/fhir/resource-types', code: 'Observation' }] }))
      .set('prefer', 'return=representation');
    expect(created.status).toBe(201);
    expect((await as('nurse').get('/Patient/pat-dupont')).status).toBe(200);
    expect((await as('nurse').get('/Patient/pat-dupont/Observation')).status).toBe(403);
    expect((await as('nurse').get('/Observation?subject=Patient/pat-dupont')).body.entry ?? []).toEqual([]);
    const everything = await as('nurse').get('/Patient/pat-dupont/$everything?_count=500').set('x-request-id', 'pr-partial-everything');
    expect(everything.status).toBe(200);
    const types = new Set((everything.body.entry ?? []).map((e: { resource: { resourceType: string } }) => e.resource.resourceType));
    expect(types.has('Observation')).toBe(false);
    expect(types.has('Condition')).toBe(true);
    const [ev] = await eventsOf('pr-partial-everything');
    expect(ev!.entity!.find((e) => e.name === EntityName.opposition)?.what?.reference).toBe(`Consent/${created.body.id}`);

    // Lifted: she sets it inactive, through caregate; it stops at once.
    expect((await as('dim').put(`/Consent/${created.body.id}`, { ...created.body, status: 'inactive' })).status).toBe(200);
    expect((await as('nurse').get('/Patient/pat-dupont/Observation')).status).toBe(200);
  });

  it('refuses a whole service an opposition names', async () => {
    expect((await as('surgeon').get('/Patient/pat-fx-ortho')).status).toBe(200);
    const created = await as('dim').post('/Consent', opposition('pat-fx-ortho', 'Organization/org-ortho')).set('prefer', 'return=representation');
    expect(created.status).toBe(201);
    const res = await as('surgeon').get('/Patient/pat-fx-ortho');
    expect(res.status).toBe(403);
    expect(res.text).toContain('L1110-4');
    expect((await as('dim').put(`/Consent/${created.body.id}`, { ...created.body, status: 'inactive' })).status).toBe(200);
    expect((await as('surgeon').get('/Patient/pat-fx-ortho')).status).toBe(200);
  });

  it('lets an emergency physician break the glass on a patient who opposed her, and records the opposition it overrides', async () => {
    const created = await as('dim').post('/Consent', opposition('pat-fx-direct', 'Practitioner/prat-roux')).set('prefer', 'return=representation');
    expect(created.status).toBe(201);
    const res = await as('emergency', { category: BTG, 'x-btg-reason': encodeURIComponent('Arrêt cardiaque au SAU, traitements en cours') })
      .get('/Patient/pat-fx-direct')
      .set('x-request-id', 'pr-btg-override');
    expect(res.status).toBe(200);
    expect(res.headers['x-caregate-break-glass']).toBe('active');
    const access = (await eventsOf('pr-btg-override')).find((e) => e.type.code === 'rest')!;
    expect(decisionReason(access)).toBe('break-glass');
    const overridden = evidenceOf(access).find((e) => e.what?.reference === `Consent/${created.body.id}`);
    expect(overridden?.detail).toContainEqual({ type: DetailType.evidenceOverridden, valueString: 'true' });
    expect(access.purposeOfEvent?.[0]?.coding?.[0]?.code).toBe('BTG');
  });
});

describe('the patient writes her own opposition', () => {
  it('records her opposition, which takes effect at once, and refuses anything that would grant access', async () => {
    expect((await as('nurse').get('/Patient/pat-dupont')).status).toBe(200);
    const mine = await request(stack.gate.server)
      .post(path('/Consent'))
      .set(patientWriting())
      .set('content-type', 'application/fhir+json')
      .set('prefer', 'return=representation')
      .send(opposition('pat-dupont', 'PractitionerRole/role-bernard-cardio'));
    expect(mine.status).toBe(201);
    expect((await as('nurse').get('/Patient/pat-dupont')).status).toBe(403);

    const permit = opposition('pat-dupont', 'Practitioner/prat-girard');
    permit.provision!.type = 'permit';
    const send = (body: unknown, method: 'post' | 'put' = 'post', p = '/Consent') =>
      request(stack.gate.server)[method](path(p)).set(patientWriting()).set('content-type', 'application/fhir+json').send(body as object);
    const granted = await send(permit);
    expect(granted.status).toBe(403);
    expect(granted.body.issue[0].diagnostics ?? granted.text).toMatch(/permit grants access/);
    expect((await send(opposition('pat-fx-direct', 'Practitioner/prat-girard'))).status).toBe(403);
    expect((await send({ ...mine.body, provision: { ...mine.body.provision, type: 'permit' } }, 'put', `/Consent/${mine.body.id}`)).status).toBe(403);
    // Her mandate is not hers to rewrite through this permission.
    const mandate = await upstream<Consent>('Consent/consent-dupont-mandate');
    expect((await send({ ...mandate, status: 'inactive' }, 'put', '/Consent/consent-dupont-mandate')).status).toBe(403);

    // She withdraws it: the nurse reads her record again at once.
    expect((await send({ ...mine.body, status: 'inactive' }, 'put', `/Consent/${mine.body.id}`)).status).toBe(200);
    expect((await as('nurse').get('/Patient/pat-dupont')).status).toBe(200);
  });
});

describe('who saw my record', () => {
  type Entry = { resource: AuditEvent };
  const entries = (b: Bundle) => ((b.entry ?? []) as Entry[]).map((e) => e.resource);

  it('lists exactly the accesses to her record, in a reduced view, with the break-the-glass reason and its notification', async () => {
    const about = async () => {
      const b = await upstream<Bundle<AuditEvent>>('AuditEvent?entity=Patient/pat-dupont&_count=1000');
      return (b?.entry ?? []).map((e) => e.resource!).filter((e) => e.entity?.some((en) => en.role?.code === '1' && en.what?.reference === 'Patient/pat-dupont'));
    };
    // Everything recorded about her so far is on the FHIR server: the spool ships in order, up to a marker.
    expect((await as('clinician').get('/Patient/pat-dupont').set('x-request-id', 'pr-marker')).status).toBe(200);
    await waitFor(async () => ((await about()).some((e) => requestIdOf(e) === 'pr-marker') ? true : undefined));
    const res = await as('patient').get('/AuditEvent?patient=pat-dupont&_count=1000').set('x-request-id', 'pr-history');
    expect(res.status).toBe(200);
    const view = entries(res.body);
    // ... and what she is shown is exactly that: the trail about her, less nothing, plus nothing but her own view since.
    const own = (await eventsOf('pr-history'))[0]!;
    const trail = await waitFor(async () => {
      const t = await about();
      return t.some((e) => e.id === own.id) ? t : undefined;
    });
    expect(new Set([...view.map((e) => e.id), own.id])).toEqual(new Set(trail.map((e) => e.id)));

    const btg = view.find((e) => e.id === F.breakGlassStart)!;
    expect(btg.entity!.find((en) => en.name === EntityName.breakGlass)?.description).toContain(F.breakGlassReason);
    expect(btg.agent[0]!.name).toBe('Sophie ROUX');
    const told = view.find((e) => e.id === F.breakGlassNotified)!;
    expect(told.entity!.find((en) => en.name === EntityName.notification)?.detail).toContainEqual({ type: DetailType.notificationStatus, valueString: 'sent' });
    const opposed = view.find((e) => e.id === F.opposedRefusal)!;
    expect(opposed.outcome).toBe('4');
    expect(opposed.entity!.find((en) => en.name === EntityName.decision)?.detail).toContainEqual({ type: DetailType.decisionReason, valueString: 'patient-opposition' });
  });

  it('carries nothing about other patients or the infrastructure, even of an event that named another patient', async () => {
    expect((await as('dim').get('/Provenance/prov-fx-two-patients').set('x-request-id', 'pr-two-patients')).status).toBe(200);
    const other = demoToken('patient', { dir: join(stack.dir, 'keys'), claims: { patient: 'pat-fx-direct', fhirUser: 'Patient/pat-fx-direct', name: 'Albert X' } });
    expect((await request(stack.gate.server).get(path('/Patient/pat-dupont')).set('authorization', `Bearer ${other}`)).status).toBe(403);
    await waitFor(async () => {
      const b = await upstream<Bundle<AuditEvent>>('AuditEvent?entity=Patient/pat-dupont&_count=1000');
      return (b?.entry ?? []).some((e) => requestIdOf(e.resource!) === 'pr-two-patients') ? true : undefined;
    });
    const res = await as('patient').get('/AuditEvent?patient=pat-dupont&_count=1000');
    expect(res.status).toBe(200);
    for (const hidden of ['pat-fx-ortho', 'pat-fx-direct', 'Albert', 'prat-', 'CareTeam/', 'Consent/', '10.20.', 'pr-two-patients', 'XrequestId', 'dpi-web', 'caregate-demo', stack.upstreamUrl]) {
      expect(res.text, hidden).not.toContain(hidden);
    }
    for (const e of entries(res.body)) {
      expect(JSON.stringify(e)).not.toMatch(/"network"|"site"|"query"|"altId"|"policy"|"who"/);
      expect(e.meta?.tag?.[0]?.code).toBe('patient-access-history');
      expect(e.entity!.filter((en) => en.role?.code === '1').map((en) => en.what?.reference)).toEqual(['Patient/pat-dupont']);
    }
  });

  it('refuses her the accesses to another record, and any search beyond her patient and the period', async () => {
    const other = await as('patient').get('/AuditEvent?patient=pat-fx-direct');
    expect(other.status).toBe(200);
    expect(other.body.entry ?? []).toEqual([]);
    expect((await as('patient').get('/AuditEvent')).status).toBe(403);
    expect((await as('patient').get('/AuditEvent?patient=pat-dupont&agent=Practitioner/prat-martin')).status).toBe(403);
    expect((await as('clinician').get('/AuditEvent?patient=pat-dupont')).status).toBe(403);
  });

  it('lists the accesses to the record for her mandated person too', async () => {
    const res = await as('mandated').get('/AuditEvent?patient=pat-dupont&_count=1000');
    expect(res.status).toBe(200);
    expect(entries(res.body).some((e) => e.id === F.breakGlassStart)).toBe(true);
  });

  it('serves them as a page in French, in English on request, and audits each view', async () => {
    const fr = await request(stack.gate.server).get('/caregate/my-record/accesses').set(stack.auth('patient')).set('x-request-id', 'pr-page');
    expect(fr.status).toBe(200);
    expect(fr.headers['content-type']).toMatch(/^text\/html/);
    expect(fr.headers['content-security-policy']).toMatch(/default-src 'none'; style-src 'nonce-/);
    expect(fr.headers['cache-control']).toBe('no-store');
    expect(fr.text).toContain('Qui a consulté mon dossier');
    expect(fr.text).toContain('Sophie ROUX');
    expect(fr.text).toContain('Patiente inconsciente amenée par le SAMU');
    expect(fr.text).toContain('Information envoyée');
    expect(fr.text).toContain('votre opposition');
    expect(fr.text).not.toContain('pat-fx-ortho');
    const en = await request(stack.gate.server).get('/caregate/my-record/accesses?lang=en').set(stack.auth('patient'));
    expect(en.text).toContain('Who saw my record?');
    const byHeader = await request(stack.gate.server).get('/caregate/my-record/accesses').set(stack.auth('patient')).set('accept-language', 'en-GB,en;q=0.9,fr;q=0.5');
    expect(byHeader.text).toContain('Who saw my record?');
    const [ev] = await eventsOf('pr-page');
    expect(ev!.entity!.filter((e) => e.role?.code === '1').map((e) => e.what?.reference)).toEqual(['Patient/pat-dupont']);
    expect(decisionReason(ev!)).toBe('own-record');
  });

  it('refuses the page to a clinician, and to a mandated person for a record she holds no mandate for', async () => {
    expect((await request(stack.gate.server).get('/caregate/my-record/accesses').set(stack.auth('clinician'))).status).toBe(403);
    expect((await request(stack.gate.server).get('/caregate/my-record/accesses?patient=pat-fx-direct').set(stack.auth('mandated'))).status).toBe(403);
    expect((await request(stack.gate.server).get('/caregate/my-record/accesses')).status).toBe(401);
  });
});

describe('told after an emergency access', () => {
  it('writes a Communication to the patient and to her attending physician, records that it was sent, and the DIM review shows it', async () => {
    const res = await as('emergency', { category: BTG, 'x-btg-reason': encodeURIComponent('Douleur thoracique, patient inconscient') })
      .get('/Patient/pat-fx-enc-current')
      .set('x-request-id', 'pr-btg-notify');
    expect(res.status).toBe(200);
    const start = (await eventsOf('pr-btg-notify')).find((e) => e.subtype?.[0]?.code === '110127')!;
    const ids = communicationIds(start.id!);
    const toPatient = await waitFor(() => upstream<Communication>(`Communication/${ids.patient}`));
    const toAttending = await waitFor(() => upstream<Communication>(`Communication/${ids.attending}`));
    expect(toPatient.recipient).toEqual([{ reference: 'Patient/pat-fx-enc-current' }]);
    expect(toPatient.payload![0]!.contentString).toContain('Douleur thoracique, patient inconscient');
    expect(toAttending.recipient).toEqual([{ reference: 'Practitioner/prat-martin' }]);
    const sent = await waitFor(async () =>
      (await spooled()).find((e) => e.entity?.some((en) => en.name === EntityName.notification && en.what?.identifier?.value === start.id)),
    );
    expect(sent.outcome).toBe('0');

    await waitFor(async () => ((await upstream<AuditEvent>(`AuditEvent/${sent.id}`)) ? true : undefined));
    const csv = await request(stack.gate.server).get('/caregate/review/break-glass.csv?patient=pat-fx-enc-current').set(stack.auth('dim'));
    expect(csv.status).toBe(200);
    const row = csv.text.split('\r\n').find((l) => l.includes(start.id!));
    expect(row).toContain(',sent,');
  });
});

describe('release by a physician', () => {
  it('keeps a preliminary document and its content out of the patient’s and mandated person’s view until a physician releases it', async () => {
    for (const persona of ['patient', 'mandated'] as const) {
      expect((await as(persona).get(`/DocumentReference/${F.preliminaryDocument}`)).status, persona).toBe(404);
      expect((await as(persona).get(`/Binary/${F.preliminaryBinary}`)).status, persona).toBe(404);
      const search = await as(persona).get('/DocumentReference?patient=pat-dupont');
      expect(search.status).toBe(200);
      expect((search.body.entry ?? []).map((e: { resource: { id: string } }) => e.resource.id)).not.toContain(F.preliminaryDocument);
    }
    const doc = await as('clinician').get(`/DocumentReference/${F.preliminaryDocument}`);
    expect(doc.status).toBe(200);
    expect((await as('clinician').put(`/DocumentReference/${F.preliminaryDocument}`, { ...doc.body, docStatus: 'final' })).status).toBe(200);
    expect((await as('patient').get(`/DocumentReference/${F.preliminaryDocument}`)).status).toBe(200);
    expect((await as('patient').get(`/Binary/${F.preliminaryBinary}`)).status).toBe(200);
  });
});

describe('break-the-glass when the policy keeps oppositions', () => {
  it('keeps an opposed record closed to break-the-glass when breakGlassOverrides is false', async () => {
    const created = await as('dim').post('/Consent', opposition('pat-fx-role', 'Practitioner/prat-roux')).set('prefer', 'return=representation');
    expect(created.status).toBe(201);
    const file = join(stack.dir, 'policy.yaml');
    const { readFileSync, writeFileSync } = await import('node:fs');
    writeFileSync(file, readFileSync(file, 'utf8').replace('breakGlassOverrides: true', 'breakGlassOverrides: false'));
    expect(stack.gate.reloadPolicy().ok).toBe(true);
    const res = await as('emergency', { category: BTG, 'x-btg-reason': encodeURIComponent('Arrêt cardiaque au SAU, traitements en cours') }).get('/Patient/pat-fx-role');
    expect(res.status).toBe(403);
    expect(res.text).toContain('L1110-4');
  });
});
