import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { pino } from 'pino';
import { parseConfig } from '../../src/config/load.js';
import { startDemoFhir, type DemoFhirServer } from '../../src/demo/server.js';
import { demoToken } from '../../src/demo/tokens.js';
import { demoIdentityYaml } from '../helpers/stack.js';
import type { PersonaName } from '../../src/demo/personas.js';
import { createExplainer, explanationJson, formatExplanation, runExplainCli, splitTarget, type Explainer, type ExplainRequest } from '../../src/tools/explain.js';
import { loadPolicy } from '../../src/policy/load.js';

/** `caregate explain` against the demo hospital, with the demo policy and demo tokens. */
const ROOT = resolve(import.meta.dirname, '../..');
let dir: string;
let demo: DemoFhirServer;
let explainer: Explainer;

beforeAll(async () => {
  dir = mkdtempSync(join(tmpdir(), 'caregate-explain-'));
  demo = await startDemoFhir({ port: 0, host: '127.0.0.1', seed: { seed: 42, patients: 50 } });
  const loaded = parseConfig(
    `
server: { host: 127.0.0.1, port: 8080, basePath: /fhir }
upstream: { url: "${demo.url}" }
${demoIdentityYaml(dir)}policy: { file: ${join(ROOT, 'config/policy.yaml')} }
`,
    join(dir, 'caregate.yaml'),
    {},
    dir,
  );
  explainer = createExplainer({ loaded, policy: loadPolicy(join(ROOT, 'config/policy.yaml')), upstreamUrl: demo.url, logger: pino({ level: 'silent' }) });
}, 60_000);

afterAll(async () => {
  explainer?.close();
  await demo?.close();
  rmSync(dir, { recursive: true, force: true });
});

function req(persona: PersonaName | undefined, method: string, target: string, extra: Partial<ExplainRequest> = {}): ExplainRequest {
  return {
    method,
    ...splitTarget(target, '/fhir'),
    headers: { ...(persona ? { authorization: `Bearer ${demoToken(persona, { dir })}` } : {}), ...extra.headers },
    ...(extra.body ? { body: extra.body } : {}),
  };
}

describe('caregate explain', () => {
  it('names the CareTeam that grants a clinician her patient', async () => {
    const e = await explainer.explain(req('clinician', 'GET', '/Patient/pat-dupont'));
    expect(e.principal).toMatchObject({ kind: 'practitioner', reference: 'Practitioner/prat-martin', idpRoles: ['clinician'] });
    expect(e.role).toEqual({ applied: 'clinician', profile: 'care-team', matching: ['clinician'] });
    expect(e.decision).toMatchObject({ effect: 'permit', reason: 'care-relationship', rule: 'clinician.care-team', patients: ['pat-dupont'] });
    expect(e.decision!.evidence).toContainEqual({ source: 'careteam', reference: 'CareTeam/ct-dupont' });
    expect(e.careSet?.patients).toBeGreaterThan(1);
    const text = formatExplanation(e);
    expect(text).toContain('PERMIT  reason care-relationship  rule clinician.care-team');
    expect(text).toContain('careteam CareTeam/ct-dupont');
  });

  it('explains a refusal: the rule, the message, and the care set it was decided on', async () => {
    const e = await explainer.explain(req('surgeon', 'GET', '/Patient/pat-dupont'));
    expect(e.decision).toMatchObject({ effect: 'deny', reason: 'no-care-relationship', rule: 'clinician.care-team', evidence: [] });
    expect(e.careSet).toMatchObject({ scope: 'listed' });
    expect(e.notes.join('\n')).toContain('403');
  });

  it('explains a refusal by the patient’s opposition by the Consent that records it', async () => {
    const e = await explainer.explain(req('colleague', 'GET', '/Patient/pat-dupont'));
    expect(e.decision).toMatchObject({ effect: 'deny', reason: 'patient-opposition', rule: 'clinician.care-team', patients: ['pat-dupont'] });
    expect(e.decision!.evidence).toEqual([{ source: 'opposition', reference: 'Consent/consent-dupont-opposition' }]);
    expect(formatExplanation(e)).toContain("the patient's opposition Consent/consent-dupont-opposition");
  });

  it('names the sensitivity rule that would withhold a psychiatric note from a nurse of the team', async () => {
    const e = await explainer.explain(req('nurse', 'GET', '/DocumentReference/doc-fx-psy-note'));
    expect(e.decision).toMatchObject({ effect: 'permit', reason: 'care-relationship' });
    expect(e.notes.join('\n')).toContain('DocumentReference/doc-fx-psy-note would be withheld (404, existence hidden) under sensitivity.psychiatry');
    const psychiatrist = await explainer.explain(req('psychiatrist', 'GET', '/DocumentReference/doc-fx-psy-note'));
    expect(psychiatrist.notes.join('\n')).not.toContain('sensitivity.psychiatry');
  });

  it('names the matrix row that refuses a secretary the clinical notes', async () => {
    const e = await explainer.explain(req('secretary', 'GET', '/DocumentReference?patient=pat-fx-psy'));
    expect(e.decision).toMatchObject({ effect: 'deny', reason: 'category-forbidden', rule: 'minimisation.service-secretary' });
    expect(formatExplanation(e)).toContain('DENY  reason category-forbidden  rule minimisation.service-secretary');
  });

  it('shows every role that matches and the one that applies', async () => {
    const e = await explainer.explain(req('emergency', 'GET', '/Patient/pat-fx-er-1'));
    expect(e.role).toEqual({ applied: 'emergency', profile: 'care-team', matching: ['emergency', 'clinician'] });
    expect(e.decision!.evidence).toContainEqual({ source: 'encounter', reference: 'Encounter/enc-fx-er-1' });
  });

  it('explains a mandate by the Consent that gives it', async () => {
    const e = await explainer.explain(req('mandated', 'GET', 'http://localhost:8080/fhir/Patient/pat-dupont'));
    expect(e.decision).toMatchObject({ effect: 'permit', reason: 'mandate', rule: 'mandated.mandate' });
    expect(e.decision!.evidence).toEqual([{ source: 'mandate', reference: 'Consent/consent-dupont-mandate' }]);
  });

  it('reports a request refused before any decision, at its stage', async () => {
    const none = await explainer.explain(req(undefined, 'GET', '/Patient/pat-dupont'));
    expect(none.refusal).toMatchObject({ stage: 'identify', status: 401, code: 'ERR_NO_CREDENTIAL' });
    expect(none.decision).toBeUndefined();
    const bad = await explainer.explain(req('clinician', 'GET', '/Patient/../AuditEvent'));
    expect(bad.refusal).toMatchObject({ stage: 'classify', status: 400 });
  });

  it('explains break-the-glass without granting anything', async () => {
    const btg = {
      category: 'http://terminology.hl7.org/CodeSystem/v3-ActReason#BTG; scheme="http://hl7.org/fhir/tag/security"',
      'x-btg-reason': 'Unconscious patient in resuscitation bay',
    };
    const e = await explainer.explain(req('emergency', 'GET', '/Patient/pat-fx-direct', { headers: btg }));
    expect(e.decision).toMatchObject({ effect: 'permit', reason: 'break-glass', purposeOfUse: 'BTG' });
    expect(e.notes.join('\n')).toMatch(/would grant Patient\/pat-fx-direct .*explain records nothing/);
  });

  it('decides a write and its batch entries without sending them upstream', async () => {
    const count = async () =>
      ((await (await fetch(`${demo.url}/Observation?subject=Patient/pat-dupont&_count=1000`)).json()) as { entry?: unknown[] }).entry?.length ?? 0;
    const before = await count();
    const obs = (patient: string) => ({ resourceType: 'Observation', status: 'final', code: { text: 'explain-probe' }, subject: { reference: `Patient/${patient}` } });
    const write = await explainer.explain(req('clinician', 'POST', '/Observation', { headers: { 'content-type': 'application/fhir+json' }, body: Buffer.from(JSON.stringify(obs('pat-dupont'))) }));
    expect(write.decision).toMatchObject({ effect: 'permit', rule: 'clinician.write' });
    const bundle = { resourceType: 'Bundle', type: 'transaction', entry: [obs('pat-dupont'), obs('pat-fx-ortho')].map((r) => ({ request: { method: 'POST', url: 'Observation' }, resource: r })) };
    const tx = await explainer.explain(req('clinician', 'POST', '/', { headers: { 'content-type': 'application/fhir+json' }, body: Buffer.from(JSON.stringify(bundle)) }));
    expect(tx.decision).toMatchObject({ effect: 'deny', reason: 'no-care-relationship' });
    expect(tx.entries?.map((x) => x.decision?.effect)).toEqual(['permit', 'deny']);
    expect(before).toBeGreaterThan(0);
    expect(await count()).toBe(before);
  });

  it('prints JSON that reads back as the same explanation', async () => {
    const e = await explainer.explain(req('dim', 'GET', '/Patient?_count=3'));
    expect(JSON.parse(explanationJson(e))).toEqual(JSON.parse(JSON.stringify(e)));
    expect(e.careSet).toEqual({ scope: 'all', patients: 0, bySource: {} });
  });
});

describe('splitTarget', () => {
  it('accepts a path, a path under the base, or a full URL', () => {
    expect(splitTarget('Patient/x', '/fhir')).toEqual({ path: '/Patient/x', query: '' });
    expect(splitTarget('/fhir/Observation?patient=x', '/fhir')).toEqual({ path: '/Observation', query: 'patient=x' });
    expect(splitTarget('https://gate.example/fhir/metadata', '/fhir')).toEqual({ path: '/metadata', query: '' });
    expect(splitTarget('/fhirish/Patient', '/fhir')).toEqual({ path: '/fhirish/Patient', query: '' });
  });
});

describe('caregate explain, command line', () => {
  it('answers usage errors with exit code 2: one of --as or --token, a method and a URL', async () => {
    const spy = vi.spyOn(process.stderr, 'write').mockImplementation(() => true);
    try {
      expect(await runExplainCli(['GET', '/Patient/x'])).toBe(2);
      expect(await runExplainCli(['--as', 'clinician', '--token', 'x', 'GET', '/Patient/x'])).toBe(2);
      expect(await runExplainCli(['--as', 'nobody', 'GET', '/Patient/x'])).toBe(2);
      expect(await runExplainCli(['--as', 'clinician', 'GET'])).toBe(2);
      expect(await runExplainCli(['--as', 'clinician', '-H', 'no colon', 'GET', '/Patient/x'])).toBe(2);
    } finally {
      spy.mockRestore();
    }
  });
});
