import { describe, expect, it, vi } from 'vitest';
import { Writable } from 'node:stream';
import { pino } from 'pino';
import { Registry } from 'prom-client';
import { readFileSync } from 'node:fs';
import { resolve } from 'node:path';
import { parsePolicy, type LoadedPolicy } from '../../src/policy/load.js';
import { createShadowPolicy, decideShadowed } from '../../src/policy/shadow.js';
import { decide, type DecideInput } from '../../src/policy/decide.js';
import type { Claims, Principal } from '../../src/identity/principal.js';
import type { FhirInteraction } from '../../src/fhir/interaction.js';
import type { CareSet, Evidence } from '../../src/relate/types.js';
import { matchRoles } from '../../src/policy/roles.js';

const DEMO_POLICY = readFileSync(resolve(import.meta.dirname, '../../config/policy.yaml'), 'utf8');
const active = parsePolicy(DEMO_POLICY, 'policy.yaml');

/** A role's block in the policy text, with the blank line after it. */
const roleBlock = (id: string) => new RegExp(` {2}- id: ${id}\\n(?: {4}.*\\n)+\\n`);
const withoutRole = (id: string) => (t: string) => t.replace(roleBlock(id), '');
/** The clinician role given another profile. */
const clinicianAs = (profile: string) => (t: string) => t.replace(/( {2}- id: clinician\n(?: {4}.*\n)*? {4}profile: )care-team/, `$1${profile}`);

/** The demo policy with its text edited: the candidate a security team would try. */
function candidateOf(edit: (text: string) => string): LoadedPolicy {
  return parsePolicy(edit(DEMO_POLICY), 'candidate.yaml');
}

function claims(roles: string[]): Claims {
  return {
    issuer: 'https://idp.test',
    subject: 'user-1',
    idNatPs: undefined,
    professionCodes: ['10'],
    roles,
    groups: [],
    fhirUser: undefined,
    patientContext: undefined,
    scopes: undefined,
    clientId: undefined,
    jti: undefined,
    displayName: undefined,
    expiresAt: undefined,
  };
}

function practitioner(roles: string[]): Principal {
  return {
    kind: 'practitioner',
    method: 'jwt',
    claims: claims(roles),
    certificate: undefined,
    practitioner: 'Practitioner/prat-martin',
    practitionerRoles: [],
    organizations: [],
    roleCodes: [],
    policyRoles: roles,
  };
}

function read(type: string, id: string, params: FhirInteraction['params'] = []): FhirInteraction {
  return {
    kind: 'read',
    method: 'GET',
    head: false,
    resourceType: type,
    id,
    versionId: undefined,
    operation: undefined,
    operationLevel: undefined,
    compartment: undefined,
    params,
    conditional: undefined,
    body: undefined,
    entries: undefined,
    path: `${type}/${id}`,
    prefer: {},
    format: 'json',
  };
}

const careSet = (patients: Record<string, Evidence[]>): CareSet => ({ scope: 'listed', patients: new Map(Object.entries(patients)), resolvedAt: Date.now() });
const martinSet = careSet({ 'pat-dupont': [{ source: 'careteam', reference: 'CareTeam/ct-dupont' }] });

/** The input authorize() gives decide() for this principal under the active policy. */
function inputFor(p: Principal, it: FhirInteraction, set: CareSet | undefined): DecideInput {
  const role = matchRoles(active.policy, { kind: p.kind, claims: p.claims, roleCodes: [], cardPresented: false })[0];
  return { principal: p, role, interaction: it, careSet: role ? set : undefined, policy: active.policy };
}

function capture() {
  const lines: Record<string, unknown>[] = [];
  const stream = new Writable({
    write(chunk, _enc, done) {
      lines.push(JSON.parse(String(chunk)) as Record<string, unknown>);
      done();
    },
  });
  return { logger: pino({ level: 'info' }, stream), lines };
}

describe('shadow policy', () => {
  it('records nothing but a "same" count when the candidate decides alike', async () => {
    const { logger, lines } = capture();
    const shadow = createShadowPolicy({ candidate: candidateOf((t) => t), logger });
    const input = inputFor(practitioner(['clinician']), read('Patient', 'pat-dupont'), martinSet);
    const r = await shadow.compare({ requestId: 'r1', input, active: decide(input) });
    expect(r.result).toBe('same');
    expect(shadow.counts().same).toBe(1);
    expect(lines.filter((l) => l.msg === 'shadow policy decides differently')).toHaveLength(0);
  });

  it('logs a permit the candidate would refuse, with both decisions and no patient data', async () => {
    const { logger, lines } = capture();
    // The candidate drops the clinician role: clinicians fall to default deny.
    const candidate = candidateOf(withoutRole('clinician'));
    const shadow = createShadowPolicy({ candidate, logger });
    const it = read('Patient', 'pat-dupont', [{ name: '_elements', modifier: undefined, value: 'name,birthDate' }]);
    const input = inputFor(practitioner(['clinician']), it, martinSet);
    const act = decide(input);
    const r = await shadow.compare({ requestId: 'req-42', input, active: act });

    expect(act.effect).toBe('permit');
    expect(r).toMatchObject({ result: 'permit-to-deny', candidate: { effect: 'deny', reason: 'default-deny', rule: 'default', role: undefined } });
    expect(r.changed).toEqual(expect.arrayContaining(['effect', 'reason', 'rule']));
    const line = lines.find((l) => l.msg === 'shadow policy decides differently')!;
    expect(line).toMatchObject({
      reqId: 'req-42',
      interaction: 'read',
      type: 'Patient',
      active: { effect: 'permit', reason: 'care-relationship', rule: 'clinician.care-team' },
      candidate: { effect: 'deny', reason: 'default-deny', rule: 'default' },
      candidateRevision: candidate.revision,
    });
    const text = JSON.stringify(lines);
    for (const phi of ['pat-dupont', 'prat-martin', 'ct-dupont', 'birthDate', 'user-1']) expect(text).not.toContain(phi);
  });

  it('matches the candidate’s own roles: a role moved before another changes who applies', async () => {
    const { logger } = capture();
    // A user with both roles: the active policy applies "emergency" (listed first); the candidate
    // lists clinician first, so the same user loses break-the-glass and is decided as "clinician".
    const candidate = candidateOf((t) => {
      const em = roleBlock('emergency').exec(t)![0];
      const without = t.replace(em, '');
      const cl = roleBlock('clinician').exec(without)![0];
      return without.replace(cl, cl + em);
    });
    expect(candidate.policy.roles.map((r) => r.id).indexOf('clinician')).toBeLessThan(candidate.policy.roles.map((r) => r.id).indexOf('emergency'));
    const shadow = createShadowPolicy({ candidate, logger });
    const input = inputFor(practitioner(['clinician', 'emergency']), read('Patient', 'pat-dupont'), martinSet);
    const r = await shadow.compare({ requestId: 'r', input, active: decide(input) });
    expect(input.role?.id).toBe('emergency');
    expect(r).toMatchObject({ result: 'other-change', changed: ['rule'], candidate: { role: 'clinician', rule: 'clinician.care-team' } });
  });

  it('gives an all-records role of the candidate every record, without a lookup', async () => {
    const { logger } = capture();
    const candidate = candidateOf((t) => t.replace('match: { idpRoles: [dim], principalKind: practitioner }', 'match: { idpRoles: [dim, clinician], principalKind: practitioner }'));
    const shadow = createShadowPolicy({ candidate, logger });
    const careSetFor = vi.fn();
    const input = inputFor(practitioner(['clinician']), read('Patient', 'pat-fx-ortho'), martinSet);
    const act = decide(input);
    const r = await shadow.compare({ requestId: 'r', input, active: act, careSetFor });
    expect(act).toMatchObject({ effect: 'deny', reason: 'no-care-relationship' });
    expect(r).toMatchObject({ result: 'deny-to-permit', candidate: { effect: 'permit', reason: 'role-all-records', rule: 'dim.all-records' } });
    expect(careSetFor).not.toHaveBeenCalled();
  });

  it('asks for the care set of a candidate role with another listed profile', async () => {
    const { logger } = capture();
    // Candidate: clinicians are limited to what a mandate gives (a contrived but different profile).
    const candidate = candidateOf(clinicianAs('mandate'));
    const shadow = createShadowPolicy({ candidate, logger });
    const careSetFor = vi.fn(async () => careSet({}));
    const input = inputFor(practitioner(['clinician']), read('Patient', 'pat-dupont'), martinSet);
    const r = await shadow.compare({ requestId: 'r', input, active: decide(input), careSetFor });
    expect(careSetFor).toHaveBeenCalledWith(expect.objectContaining({ id: 'clinician', profile: 'mandate' }));
    expect(r).toMatchObject({ result: 'permit-to-deny', candidate: { reason: 'no-care-relationship', rule: 'clinician.mandate' } });
  });

  it('counts an error, never throws, when the candidate’s care set cannot be had', async () => {
    const { logger, lines } = capture();
    const candidate = candidateOf(clinicianAs('mandate'));
    const registry = new Registry();
    const shadow = createShadowPolicy({ candidate, logger, registry });
    const input = inputFor(practitioner(['clinician']), read('Patient', 'pat-dupont'), martinSet);
    const act = decide(input);
    await expect(shadow.compare({ requestId: 'r1', input, active: act })).resolves.toMatchObject({ result: 'error' });
    const failing = async (): Promise<CareSet> => {
      throw new Error('upstream unreachable for Patient/pat-dupont');
    };
    await expect(shadow.compare({ requestId: 'r2', input, active: act, careSetFor: failing })).resolves.toMatchObject({ result: 'error' });
    expect(shadow.counts().error).toBe(2);
    expect(await registry.metrics()).toMatch(/caregate_shadow_decisions_total\{result="error"\} 2/);
    expect(JSON.stringify(lines)).not.toContain('pat-dupont');
  });

  it('refuses, like authorize, a candidate role that requires a card the caller did not present', async () => {
    const { logger } = capture();
    const candidate = candidateOf((t) => t.replace('    match: { idpRoles: [clinician], principalKind: practitioner }\n', '    match: { idpRoles: [clinician], principalKind: practitioner }\n    requireCard: true\n'));
    const shadow = createShadowPolicy({ candidate, logger });
    const input = inputFor(practitioner(['clinician']), read('Patient', 'pat-dupont'), martinSet);
    const r = await shadow.compare({ requestId: 'r', input, active: decide(input) });
    expect(r).toMatchObject({ result: 'permit-to-deny', candidate: { effect: 'deny', rule: 'clinician.require-card' } });
  });

  it('warns once when the candidate changes settings it cannot compare', async () => {
    const { logger, lines } = capture();
    const candidate = candidateOf((t) => t.replace('finishedWithinDays: 30', 'finishedWithinDays: 7'));
    const shadow = createShadowPolicy({ candidate, logger });
    const input = inputFor(practitioner(['clinician']), read('Patient', 'pat-dupont'), martinSet);
    await shadow.compare({ requestId: 'a', input, active: decide(input) });
    await shadow.compare({ requestId: 'b', input, active: decide(input) });
    const warnings = lines.filter((l) => String(l.msg).startsWith('shadow policy: these sections differ'));
    expect(warnings).toHaveLength(1);
    expect(warnings[0]).toMatchObject({ sections: ['careRelationships'] });
  });

  it('decideShadowed returns the active decision whatever the candidate says', async () => {
    const { logger } = capture();
    const shadow = createShadowPolicy({ candidate: candidateOf(withoutRole('clinician')), logger });
    const input = inputFor(practitioner(['clinician']), read('Patient', 'pat-dupont'), martinSet);
    const d = decideShadowed(input, shadow, { requestId: 'r' });
    expect(d).toEqual(decide(input));
    expect(d.effect).toBe('permit');
    await vi.waitFor(() => expect(shadow.counts()['permit-to-deny']).toBe(1));
    expect(decideShadowed(input, undefined, { requestId: 'r' })).toEqual(d);
  });

  it('follows a reloaded candidate', async () => {
    const { logger } = capture();
    const shadow = createShadowPolicy({ candidate: candidateOf((t) => t), logger });
    const input = inputFor(practitioner(['clinician']), read('Patient', 'pat-dupont'), martinSet);
    expect((await shadow.compare({ requestId: 'a', input, active: decide(input) })).result).toBe('same');
    const next = candidateOf(withoutRole('clinician'));
    shadow.setCandidate(next);
    expect(shadow.revision).toBe(next.revision);
    expect((await shadow.compare({ requestId: 'b', input, active: decide(input) })).result).toBe('permit-to-deny');
  });
});
