import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import request from 'supertest';
import { readFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { parsePolicy } from '../../src/policy/load.js';
import { ConfigError } from '../../src/config/load.js';
import type { PersonaName } from '../../src/demo/personas.js';
import { demoToken } from '../../src/demo/tokens.js';
import { startStack, type Stack } from '../helpers/stack.js';

/**
 * Issue 6: admission staff see demographics and stay logistics without clinical content; a coding
 * contractor sees only the engagement's stays, de-identified.
 */
let stack: Stack;
beforeAll(async () => {
  stack = await startStack();
});
afterAll(async () => stack?.close());

const path = (p: string) => new URL(stack.url).pathname + p;
const as = (persona: PersonaName) => ({
  get: (p: string) => request(stack.gate.server).get(path(p)).set(stack.auth(persona)),
  post: (p: string, body: unknown) => request(stack.gate.server).post(path(p)).set(stack.auth(persona)).set('content-type', 'application/fhir+json').send(body as object),
});

describe('staff roles and the kind of caller', () => {
  it('does not give a staff role to a patient whose token carries one (the demo policy matches staff roles on practitioners only)', async () => {
    // An identity provider that puts `dim` in a patient's realm roles must not make her a DIM physician.
    const token = demoToken('patient', { dir: join(stack.dir, 'keys'), claims: { realm_access: { roles: ['dim', 'admission'] } } });
    const other = await request(stack.gate.server).get(path('/Patient/pat-fx-ortho')).set('authorization', `Bearer ${token}`);
    expect(other.status).toBe(403);
    const own = await request(stack.gate.server).get(path('/Patient/pat-dupont')).set('authorization', `Bearer ${token}`);
    expect(own.status).toBe(200);
  });
});

describe('admission staff (profile administrative)', () => {
  it('reads a patient’s demographics without the narrative', async () => {
    const res = await as('admission').get('/Patient/pat-dupont');
    expect(res.status).toBe(200);
    expect(res.body.name).toBeDefined();
    expect(res.body.identifier).toBeDefined();
    expect(res.body.text).toBeUndefined();
  });

  it('reads a stay’s logistics without its reasons or diagnoses', async () => {
    const dim = await as('dim').get('/Encounter/enc-dupont');
    expect(dim.status).toBe(200);
    const res = await as('admission').get('/Encounter/enc-dupont');
    expect(res.status).toBe(200);
    expect(res.body.period).toEqual(dim.body.period);
    expect(res.body.reasonCode).toBeUndefined();
    expect(res.body.diagnosis).toBeUndefined();
    expect(res.body.text).toBeUndefined();
  });

  for (const q of ['/Observation?patient=pat-dupont', '/Condition/any', '/Encounter?reason-code=I21', '/Patient?_has:Observation:subject:code=1234', '/Patient?_revinclude=Encounter:subject', '/Patient/pat-dupont/$everything', '/Patient/pat-dupont/Observation']) {
    it(`refuses ${q}`, async () => {
      const res = await as('admission').get(q);
      expect(res.status).toBe(403);
    });
  }

  it('registers a stay without clinical content, and refuses one that carries a diagnosis', async () => {
    const stay = { resourceType: 'Encounter', status: 'planned', class: { system: 'http://terminology.hl7.org/CodeSystem/v3-ActCode', code: 'IMP' }, subject: { reference: 'Patient/pat-dupont' } };
    expect((await as('admission').post('/Encounter', stay)).status).toBe(201);
    expect((await as('admission').post('/Encounter', { ...stay, reasonCode: [{ text: 'chest pain' }] })).status).toBe(403);
  });
});

describe('coding contractor (profile de-identified)', () => {
  type Entry = { resource: Record<string, unknown> & { id: string; resourceType: string } };

  it('sees only the engagement’s stays, under pseudonyms, without identifiers', async () => {
    const res = await as('coder').get('/Encounter?_count=100');
    expect(res.status).toBe(200);
    const entries = (res.body.entry ?? []) as Entry[];
    expect(entries).toHaveLength(2);
    for (const e of entries) {
      expect(e.resource.id).toMatch(/^p-/);
      expect(e.resource.identifier).toBeUndefined();
    }
    expect(res.text).not.toMatch(/enc-dupont|pat-dupont|DUPONT|Dupont/);
  });

  it('follows pseudonyms from one resource to another and receives de-identified clinical data of the stay', async () => {
    const encs = ((await as('coder').get('/Encounter?_count=100')).body.entry as Entry[]).map((e) => e.resource);
    const enc = encs[0]!;
    const patientRef = (enc.subject as { reference: string }).reference;
    expect(patientRef).toMatch(/^Patient\/p-/);
    const patient = await as('coder').get(`/${patientRef}`);
    expect(patient.status).toBe(200);
    expect(Object.keys(patient.body).sort()).toEqual(expect.arrayContaining(['resourceType', 'id']));
    expect(patient.body.name).toBeUndefined();
    expect(patient.body.identifier).toBeUndefined();
    const obs = await as('coder').get(`/Observation?encounter=Encounter/${enc.id}&_count=50`);
    expect(obs.status).toBe(200);
    expect((obs.body.entry ?? []).length).toBeGreaterThan(0);
    for (const e of (obs.body.entry ?? []) as Entry[]) {
      expect((e.resource.encounter as { reference: string }).reference).toBe(`Encounter/${enc.id}`);
      expect(e.resource.note).toBeUndefined();
      expect(e.resource.text).toBeUndefined();
    }
    expect(obs.text).not.toMatch(/pat-dupont|enc-dupont|DUPONT|prat-martin|MARTIN/);
  });

  it('does not accept real ids, nor identifying searches', async () => {
    expect((await as('coder').get('/Patient/pat-dupont')).status).toBe(404);
    expect((await as('coder').get('/Patient?name=Dupont')).status).toBe(403);
    expect((await as('coder').get('/Patient?identifier=123')).status).toBe(403);
    expect((await as('coder').get('/DocumentReference?_count=1')).status).toBe(403);
  });

  it('cannot write anything', async () => {
    expect((await as('coder').post('/Observation', { resourceType: 'Observation', status: 'final', code: { text: 'x' } })).status).toBe(403);
  });
});

describe('policy.engagements', () => {
  it('refuses to load a policy whose de-identified role has no engagement naming its DIM physician and its contract', () => {
    const text = readFileSync(resolve(import.meta.dirname, '../../config/policy.yaml'), 'utf8');
    const without = text.replace(/\nengagements:[\s\S]*?\n(?=careRelationships:)/, '\n');
    expect(() => parsePolicy(without, 'policy.yaml')).toThrow(ConfigError);
    try {
      parsePolicy(without, 'policy.yaml');
    } catch (e) {
      expect((e as ConfigError).problems.join('\n')).toMatch(/roles\[\d+\]\.profile: the de-identified role "coding-contractor" has no engagement/);
    }
    const noContract = text.replace(/\n {4}contractReference: .*/, '');
    expect(() => parsePolicy(noContract, 'policy.yaml')).toThrow(/contractReference/);
    const noStaff = text.replace(/\n {4}staff: .*/, '');
    expect(() => parsePolicy(noStaff, 'policy.yaml')).toThrow(/staff.*R6113-5-2/);
  });
});
