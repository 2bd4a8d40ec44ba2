import { readFileSync } from 'node:fs';
import { resolve } from 'node:path';
import type { Consent, Resource } from '@medplum/fhirtypes';
import { describe, expect, it } from 'vitest';
import { classify } from '../../src/fhir/classify.js';
import type { Principal } from '../../src/identity/principal.js';
import { decide, type DecideInput } from '../../src/policy/decide.js';
import type { Decision, ObligationKind } from '../../src/policy/decision.js';
import { parsePolicy } from '../../src/policy/load.js';
import { withGrants } from '../../src/relate/breakglass.js';
import type { CareSet, Evidence, Opposition } from '../../src/relate/types.js';
import { patientPrincipal, practitioner } from '../audit/fixtures.js';

/**
 * decide() on the patient's rights (issue 13), as a table: oppositions (CSP L1110-4) refused on the
 * URL or left to the response filter, overridden by break-the-glass when the policy allows it;
 * oppositions written by the patient herself; her access history; documents held back.
 */
const policy = parsePolicy(readFileSync(resolve(import.meta.dirname, '../../config/policy.yaml'), 'utf8'), 'policy.yaml').policy;
const role = (id: string) => policy.roles.find((x) => x.id === id)!;

function request(line: string, body?: unknown) {
  const [method, target] = line.split(' ') as [string, string];
  const q = target.indexOf('?');
  const text = body === undefined ? undefined : JSON.stringify(body);
  return classify(
    {
      method,
      path: q === -1 ? target : target.slice(0, q),
      query: q === -1 ? '' : target.slice(q + 1),
      headers: text ? { 'content-type': 'application/fhir+json' } : {},
      rawHeaders: text ? ['content-type', 'application/fhir+json'] : [],
      ...(text ? { body: Buffer.from(text) } : {}),
    },
    { maxBodyBytes: 1 << 20 },
  );
}

const whole: Opposition = { consent: 'Consent/opp', classes: [], labels: [] };
const observationsOnly: Opposition = { consent: 'Consent/opp-obs', classes: ['Observation'], labels: [] };
const psyOnly: Opposition = { consent: 'Consent/opp-psy', classes: [], labels: ['http://terminology.hl7.org/CodeSystem/v3-ActCode|PSY'] };

/** A care team's set of patients, some of whom opposed the caller. */
function careSet(ids: string[], opposed: Record<string, Opposition[]> = {}): CareSet {
  return {
    scope: 'listed',
    patients: new Map(ids.map((id) => [id, [{ source: 'careteam', reference: `CareTeam/ct-${id}` } satisfies Evidence]])),
    ...(Object.keys(opposed).length ? { opposed: new Map(Object.entries(opposed)) } : {}),
    resolvedAt: 0,
  };
}
const kinds = (d: Decision): ObligationKind[] => d.obligations.map((o) => o.kind);
const patientSelf: CareSet = { scope: 'listed', patients: new Map([['pat-1', [{ source: 'own-record', reference: 'Patient/pat-1' }]]]), resolvedAt: 0 };

function consent(provision: NonNullable<Consent['provision']>, patient = 'pat-1', extra: Partial<Consent> = {}): Consent {
  return {
    resourceType: 'Consent',
    id: 'c1',
    status: 'active',
    scope: { coding: [{ system: 'http://terminology.hl7.org/CodeSystem/consentscope', code: 'patient-privacy' }] },
    category: [{ text: 'opposition' }],
    patient: { reference: `Patient/${patient}` },
    provision,
    ...extra,
  };
}
const denyTo = (actor: string) => ({ type: 'deny' as const, actor: [{ role: { text: 'recipient' }, reference: { reference: actor } }] });

interface Row {
  note: string;
  role: string;
  principal?: Principal;
  request: string;
  body?: unknown;
  careSet: CareSet;
  writePatients?: DecideInput['writePatients'];
  writeResources?: DecideInput['writeResources'];
  policy?: typeof policy;
  expect: Partial<Pick<Decision, 'effect' | 'reason' | 'rule' | 'refuseAs' | 'purposeOfUse'>> & {
    patients?: string[];
    evidence?: Evidence[];
    obligations?: ObligationKind[];
    hasObligation?: ObligationKind;
    narrowTo?: string[];
  };
}

const noOverride = { ...policy, patientRights: { ...policy.patientRights, oppositions: { ...policy.patientRights.oppositions, breakGlassOverrides: false } } };
const disabled = { ...policy, patientRights: { ...policy.patientRights, oppositions: { ...policy.patientRights.oppositions, enabled: false } } };
const grant = [{ patient: 'opp', reason: 'unconscious patient', until: 1 }];

const rows: Row[] = [
  // opposition to sharing (CSP L1110-4)
  { note: 'refuses a patient who opposed the caller, though in his care team, with the Consent as evidence', role: 'clinician', request: 'GET /Patient/opp', careSet: careSet(['opp', 'ok'], { opp: [whole] }), expect: { effect: 'deny', reason: 'patient-opposition', rule: 'clinician.care-team', patients: ['opp'], evidence: [{ source: 'opposition', reference: 'Consent/opp' }], refuseAs: undefined } },
  { note: 'answers an opposition with the 404 of a miss when the policy hides refusals decided on the URL', role: 'clinician', request: 'GET /Patient/opp', careSet: careSet(['opp'], { opp: [whole] }), policy: { ...policy, refusals: { urlDecided: 404 } }, expect: { effect: 'deny', reason: 'patient-opposition', refuseAs: 'not-found' } },
  { note: 'permits another patient of the same care set', role: 'clinician', request: 'GET /Patient/ok', careSet: careSet(['opp', 'ok'], { opp: [whole] }), expect: { effect: 'permit', reason: 'care-relationship', hasObligation: 'withhold-opposed' } },
  { note: 'refuses the compartment search of a type the opposition is limited to', role: 'clinician', request: 'GET /Patient/opp/Observation', careSet: careSet(['opp'], { opp: [observationsOnly] }), expect: { effect: 'deny', reason: 'patient-opposition', evidence: [{ source: 'opposition', reference: 'Consent/opp-obs' }] } },
  { note: 'permits what a limited opposition does not cover, obliging the response to withhold the rest', role: 'clinician', request: 'GET /Patient/opp', careSet: careSet(['opp'], { opp: [observationsOnly] }), expect: { effect: 'permit', obligations: ['filter-response', 'withhold-labels', 'withhold-opposed'] } },
  { note: 'leaves an opposition limited by security label to the response filter', role: 'clinician', request: 'GET /Patient/opp/Observation', careSet: careSet(['opp'], { opp: [psyOnly] }), expect: { effect: 'permit', hasObligation: 'withhold-opposed' } },
  { note: 'answers a search naming only opposed patients with an empty searchset, recorded as a refusal', role: 'clinician', request: 'GET /Observation?subject=Patient/opp', careSet: careSet(['opp', 'ok'], { opp: [whole] }), expect: { effect: 'deny', reason: 'patient-opposition', refuseAs: 'empty-searchset', patients: ['opp'] } },
  { note: 'leaves opposed patients out of the narrowing of an unrestricted search', role: 'clinician', request: 'GET /Observation?code=8867-4', careSet: careSet(['opp', 'ok'], { opp: [whole] }), expect: { effect: 'permit', narrowTo: ['ok'] } },
  { note: 'refuses $everything of an opposed patient', role: 'clinician', request: 'GET /Patient/opp/$everything', careSet: careSet(['opp'], { opp: [whole] }), expect: { effect: 'deny', reason: 'patient-opposition' } },
  { note: 'refuses a write into the record of a patient who opposed the caller', role: 'clinician', request: 'POST /Observation', body: { resourceType: 'Observation' }, careSet: careSet(['opp'], { opp: [whole] }), writePatients: { before: 'none', after: ['opp'] }, expect: { effect: 'deny', reason: 'patient-opposition' } },
  { note: 'refuses a write of the kind of data an opposition is limited to, and only that', role: 'clinician', request: 'POST /Condition', body: { resourceType: 'Condition' }, careSet: careSet(['opp'], { opp: [observationsOnly] }), writePatients: { before: 'none', after: ['opp'] }, expect: { effect: 'permit' } },
  { note: 'ignores oppositions when the policy disables them', role: 'clinician', request: 'GET /Patient/opp', careSet: careSet(['opp'], { opp: [whole] }), policy: disabled, expect: { effect: 'permit', reason: 'care-relationship' } },

  // break-the-glass over an opposition
  { note: 'opens an opposed record to a break-the-glass grant, recorded as a break-the-glass use overriding the Consent', role: 'emergency', request: 'GET /Patient/opp', careSet: withGrants(careSet(['opp'], { opp: [whole] }), grant), expect: { effect: 'permit', reason: 'break-glass', purposeOfUse: 'BTG', hasObligation: 'mark-break-glass', evidence: [{ source: 'break-glass', reference: undefined, until: new Date(1).toISOString(), reason: 'unconscious patient' }, { source: 'opposition', reference: 'Consent/opp', overridden: true }] } },
  { note: 'permits $break-glass on an opposed patient, naming the Consent it overrides', role: 'emergency', request: 'POST /Patient/opp/$break-glass', body: { resourceType: 'Parameters' }, careSet: withGrants(careSet(['opp'], { opp: [whole] }), grant), expect: { effect: 'permit', reason: 'break-glass' } },
  { note: 'keeps an opposed record closed to break-the-glass when the policy does not let it override', role: 'emergency', request: 'GET /Patient/opp', careSet: withGrants(careSet(['opp'], { opp: [whole] }), grant), policy: noOverride, expect: { effect: 'deny', reason: 'patient-opposition' } },
  { note: 'refuses $break-glass on an opposed patient when the policy keeps oppositions', role: 'emergency', request: 'POST /Patient/opp/$break-glass', body: { resourceType: 'Parameters' }, careSet: withGrants(careSet(['opp'], { opp: [whole] }), grant), policy: noOverride, expect: { effect: 'deny', reason: 'patient-opposition' } },
  { note: 'marks the data of an overridden patient in a search as a break-the-glass use', role: 'emergency', request: 'GET /Observation?code=8867-4', careSet: withGrants(careSet(['opp', 'ok'], { opp: [whole] }), grant), expect: { effect: 'permit', hasObligation: 'break-glass-patients' } },

  // the patient writes her own opposition
  { note: 'lets a patient record her opposition', role: 'patient', principal: patientPrincipal(), request: 'POST /Consent', body: consent(denyTo('Practitioner/p1')), careSet: patientSelf, writePatients: { before: 'none', after: ['pat-1'] }, writeResources: { before: undefined, after: consent(denyTo('Practitioner/p1')) }, expect: { effect: 'permit', reason: 'own-record', rule: 'patient.write' } },
  { note: 'refuses a patient a Consent that permits (it would grant access)', role: 'patient', principal: patientPrincipal(), request: 'POST /Consent', body: { resourceType: 'Consent' }, careSet: patientSelf, writePatients: { before: 'none', after: ['pat-1'] }, writeResources: { before: undefined, after: consent({ ...denyTo('Practitioner/p1'), type: 'permit' }) }, expect: { effect: 'deny', reason: 'relationship-write-forbidden' } },
  { note: 'refuses a patient an opposition that hides a permit in a nested provision', role: 'patient', principal: patientPrincipal(), request: 'POST /Consent', body: { resourceType: 'Consent' }, careSet: patientSelf, writePatients: { before: 'none', after: ['pat-1'] }, writeResources: { before: undefined, after: consent({ ...denyTo('Practitioner/p1'), provision: [{ type: 'permit', actor: [{ role: { text: 'x' }, reference: { reference: 'RelatedPerson/rp' } }] }] }) }, expect: { effect: 'deny', reason: 'relationship-write-forbidden' } },
  { note: 'refuses a patient an opposition naming its actor by identifier only', role: 'patient', principal: patientPrincipal(), request: 'POST /Consent', body: { resourceType: 'Consent' }, careSet: patientSelf, writePatients: { before: 'none', after: ['pat-1'] }, writeResources: { before: undefined, after: consent({ type: 'deny', actor: [{ role: { text: 'x' }, reference: { identifier: { value: '99700000013' } } }] }) }, expect: { effect: 'deny', reason: 'relationship-write-forbidden' } },
  { note: 'refuses a patient an opposition about another patient', role: 'patient', principal: patientPrincipal(), request: 'POST /Consent', body: { resourceType: 'Consent' }, careSet: patientSelf, writePatients: { before: 'none', after: ['pat-2'] }, writeResources: { before: undefined, after: consent(denyTo('Practitioner/p1'), 'pat-2') }, expect: { effect: 'deny', reason: 'no-care-relationship' } },
  { note: 'refuses a patient turning a mandate into an opposition (what it replaces must be one too)', role: 'patient', principal: patientPrincipal(), request: 'PUT /Consent/c1', body: { resourceType: 'Consent', id: 'c1' }, careSet: patientSelf, writePatients: { before: ['pat-1'], after: ['pat-1'] }, writeResources: { before: consent({ type: 'permit', actor: [{ role: { text: 'x' }, reference: { reference: 'RelatedPerson/rp' } }] }), after: consent(denyTo('Practitioner/p1')) }, expect: { effect: 'deny', reason: 'relationship-write-forbidden' } },
  { note: 'lets a patient withdraw her opposition (status inactive)', role: 'patient', principal: patientPrincipal(), request: 'PUT /Consent/c1', body: { resourceType: 'Consent', id: 'c1' }, careSet: patientSelf, writePatients: { before: ['pat-1'], after: ['pat-1'] }, writeResources: { before: consent(denyTo('Practitioner/p1')), after: consent(denyTo('Practitioner/p1'), 'pat-1', { status: 'inactive' }) }, expect: { effect: 'permit' } },
  { note: 'still refuses a patient any other write', role: 'patient', principal: patientPrincipal(), request: 'POST /CareTeam', body: { resourceType: 'CareTeam' }, careSet: patientSelf, writePatients: { before: 'none', after: ['pat-1'] }, expect: { effect: 'deny', reason: 'interaction-forbidden' } },
  { note: 'refuses a clinician an opposition write (no Consent.opposition in her role)', role: 'clinician', request: 'POST /Consent', body: { resourceType: 'Consent' }, careSet: careSet(['pat-1']), writePatients: { before: 'none', after: ['pat-1'] }, writeResources: { before: undefined, after: consent(denyTo('Practitioner/p1')) }, expect: { effect: 'deny', reason: 'relationship-write-forbidden' } },

  // who saw my record
  { note: 'permits a patient the accesses to her record, in the reduced view', role: 'patient', principal: patientPrincipal(), request: 'GET /AuditEvent?patient=pat-1&date=ge2026-01-01&_sort=-date', careSet: patientSelf, expect: { effect: 'permit', reason: 'own-record', rule: 'patient.access-history', patients: ['pat-1'], hasObligation: 'own-access-history' } },
  { note: 'permits her search by entity, and her compartment', role: 'patient', principal: patientPrincipal(), request: 'GET /Patient/pat-1/AuditEvent', careSet: patientSelf, expect: { effect: 'permit', rule: 'patient.access-history' } },
  { note: 'refuses her a search of the trail that names no patient', role: 'patient', principal: patientPrincipal(), request: 'GET /AuditEvent?date=ge2026-01-01', careSet: patientSelf, expect: { effect: 'deny', reason: 'parameter-forbidden' } },
  { note: 'refuses her any search parameter beyond the patient and the period', role: 'patient', principal: patientPrincipal(), request: 'GET /AuditEvent?patient=pat-1&agent=Practitioner/p1', careSet: patientSelf, expect: { effect: 'deny', reason: 'parameter-forbidden' } },
  { note: 'answers her search for another patient’s accesses with an empty searchset, recorded as a refusal', role: 'patient', principal: patientPrincipal(), request: 'GET /AuditEvent?patient=pat-2', careSet: patientSelf, expect: { effect: 'deny', reason: 'no-care-relationship', refuseAs: 'empty-searchset', patients: ['pat-2'] } },
  { note: 'refuses her writing the trail', role: 'patient', principal: patientPrincipal(), request: 'POST /AuditEvent', body: { resourceType: 'AuditEvent' }, careSet: patientSelf, expect: { effect: 'deny', reason: 'role-forbidden' } },
  { note: 'keeps the trail from patients when the policy disables the access history', role: 'patient', principal: patientPrincipal(), request: 'GET /AuditEvent?patient=pat-1', careSet: patientSelf, policy: { ...policy, patientRights: { ...policy.patientRights, accessHistory: { ...policy.patientRights.accessHistory, enabled: false } } }, expect: { effect: 'deny', reason: 'role-forbidden' } },

  // release by a physician
  { note: 'holds back documents not yet released from the patient’s view', role: 'patient', principal: patientPrincipal(), request: 'GET /DocumentReference?patient=pat-1', careSet: patientSelf, expect: { effect: 'permit', hasObligation: 'hold-unreleased' } },
];

describe('decide(): the patient’s rights', () => {
  it.each(rows)('$note', (row) => {
    const d = decide({
      principal: row.principal ?? practitioner(),
      role: role(row.role),
      interaction: request(row.request, row.body),
      careSet: row.careSet,
      policy: row.policy ?? policy,
      ...(row.writePatients ? { writePatients: row.writePatients } : {}),
      ...(row.writeResources ? { writeResources: row.writeResources as { before: Resource | undefined; after: Resource | undefined } } : {}),
    });
    const e = row.expect;
    if (e.effect) expect(d.effect, d.message).toBe(e.effect);
    if (e.reason) expect(d.reason).toBe(e.reason);
    if (e.rule) expect(d.rule).toBe(e.rule);
    if ('refuseAs' in e) expect(d.refuseAs).toBe(e.refuseAs);
    if (e.purposeOfUse) expect(d.purposeOfUse).toBe(e.purposeOfUse);
    if (e.patients) expect(d.patients).toEqual(e.patients);
    if (e.evidence) expect(d.evidence).toEqual(e.evidence);
    if (e.obligations) expect(kinds(d)).toEqual(e.obligations);
    if (e.hasObligation) expect(kinds(d)).toContain(e.hasObligation);
    if (e.narrowTo) {
      const n = d.obligations.find((o) => o.kind === 'narrow');
      expect(n && n.kind === 'narrow' ? [...n.patients] : undefined).toEqual(e.narrowTo);
    }
  });

  it('tells the response exactly which oppositions to honour', () => {
    const d = decide({ principal: practitioner(), role: role('clinician'), interaction: request('GET /Patient/opp'), careSet: careSet(['opp'], { opp: [observationsOnly, psyOnly] }), policy });
    expect(d.obligations.find((o) => o.kind === 'withhold-opposed')).toEqual({
      kind: 'withhold-opposed',
      oppositions: [
        { patient: 'opp', ...observationsOnly },
        { patient: 'opp', ...psyOnly },
      ],
    });
  });

  it('refuses to load a policy that lets a patient write anything but her oppositions', () => {
    const text = readFileSync(resolve(import.meta.dirname, '../../config/policy.yaml'), 'utf8').replace(
      'relationshipWrites: [Consent.opposition]',
      'relationshipWrites: [Consent]',
    );
    expect(() => parsePolicy(text, 'policy.yaml')).toThrow(/may only write Consent\.opposition/);
  });
});
