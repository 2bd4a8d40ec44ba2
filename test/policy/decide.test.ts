import { readFileSync } from 'node:fs';
import { resolve } from 'node:path';
import { describe, expect, it } from 'vitest';
import { classify } from '../../src/fhir/classify.js';
import type { Principal } from '../../src/identity/principal.js';
import { decide, decideBundle, type DecideInput } from '../../src/policy/decide.js';
import type { Decision, ObligationKind } from '../../src/policy/decision.js';
import { parsePolicy } from '../../src/policy/load.js';
import { withGrants } from '../../src/relate/breakglass.js';
import type { CareSet, Evidence } from '../../src/relate/types.js';
import { patientPrincipal, practitioner } from '../audit/fixtures.js';

/**
 * decide() as a table: inputs → Decision, no HTTP, no upstream. The demo policy
 * (config/policy.yaml) is the policy under test; each row names its role.
 */
const policy = parsePolicy(readFileSync(resolve(import.meta.dirname, '../../config/policy.yaml'), 'utf8'), 'policy.yaml').policy;
const role = (id: string) => {
  const r = policy.roles.find((x) => x.id === id);
  if (!r) throw new Error(`no role ${id}`);
  return r;
};

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

const careTeam = (...ids: string[]): CareSet => ({
  scope: 'listed',
  patients: new Map(ids.map((id) => [id, [{ source: 'careteam', reference: `CareTeam/ct-${id}` } satisfies Evidence]])),
  resolvedAt: 0,
});
const everyone: CareSet = { scope: 'all', patients: new Map(), resolvedAt: 0 };
const clinician = practitioner();
const kinds = (d: Decision): ObligationKind[] => d.obligations.map((o) => o.kind);

interface Row {
  note: string;
  role: string;
  principal?: Principal;
  request: string;
  body?: unknown;
  careSet: CareSet | undefined;
  writePatients?: DecideInput['writePatients'];
  paging?: boolean;
  engagement?: string;
  expect: Partial<Pick<Decision, 'effect' | 'reason' | 'rule' | 'refuseAs' | 'purposeOfUse'>> & { patients?: string[]; obligations?: ObligationKind[]; narrowTo?: string[] };
}

const rows: Row[] = [
  // care team (CSP L1110-4)
  { note: 'permits a clinician her patient, named in the URL', role: 'clinician', request: 'GET /Patient/ok', careSet: careTeam('ok'), expect: { effect: 'permit', reason: 'care-relationship', rule: 'clinician.care-team', patients: ['ok'], obligations: ['filter-response', 'withhold-labels'] } },
  { note: 'refuses a patient outside the care set with 403', role: 'clinician', request: 'GET /Patient/vic', careSet: careTeam('ok'), expect: { effect: 'deny', reason: 'no-care-relationship', patients: ['vic'], refuseAs: undefined } },
  { note: 'refuses a compartment search of a patient outside the care set', role: 'clinician', request: 'GET /Patient/vic/Observation', careSet: careTeam('ok'), expect: { effect: 'deny', reason: 'no-care-relationship', patients: ['vic'] } },
  { note: 'narrows an unrestricted search to the care set', role: 'clinician', request: 'GET /Observation?code=8867-4', careSet: careTeam('a', 'b'), expect: { effect: 'permit', reason: 'care-relationship', narrowTo: ['a', 'b'] } },
  { note: 'sends a search already restricted to the care set as it is', role: 'clinician', request: 'GET /Observation?patient=a', careSet: careTeam('a', 'b'), expect: { effect: 'permit', obligations: ['filter-response', 'withhold-labels'] } },
  { note: 'sends a search restricted by subject= to the care set as it is', role: 'clinician', request: 'GET /Observation?subject=Patient/a,Patient/b', careSet: careTeam('a', 'b', 'c'), expect: { effect: 'permit', obligations: ['filter-response', 'withhold-labels'] } },
  { note: 'still narrows a search restricted only by a performer in the care set', role: 'clinician', request: 'GET /Observation?performer=Patient/a', careSet: careTeam('a', 'b'), expect: { effect: 'permit', narrowTo: ['a', 'b'] } },
  { note: 'records a search that names only patients outside the care set as a refusal, answered with an empty searchset', role: 'clinician', request: 'GET /Observation?subject=Patient/vic', careSet: careTeam('a'), expect: { effect: 'deny', reason: 'no-care-relationship', refuseAs: 'empty-searchset', patients: ['vic'] } },
  { note: 'answers an empty searchset locally when the care set is empty', role: 'clinician', request: 'GET /Observation', careSet: careTeam(), expect: { effect: 'permit', reason: 'filtered-search', narrowTo: [] } },
  { note: 'refuses _has to clinicians', role: 'clinician', request: 'GET /Patient?_has:Observation:subject:code=x', careSet: careTeam('a'), expect: { effect: 'deny', reason: 'parameter-forbidden' } },
  { note: 'refuses an unknown search parameter', role: 'clinician', request: 'GET /Observation?bogus=1', careSet: careTeam('a'), expect: { effect: 'deny', reason: 'parameter-forbidden' } },
  { note: 'refuses _include=* to clinicians', role: 'clinician', request: 'GET /Observation?_include=*', careSet: careTeam('a'), expect: { effect: 'deny', reason: 'parameter-forbidden' } },
  { note: 'refuses a :missing modifier on the patient parameter', role: 'clinician', request: 'GET /Observation?patient:missing=true', careSet: careTeam('a'), expect: { effect: 'deny', reason: 'parameter-forbidden' } },
  { note: 'refuses system-level search to clinicians', role: 'clinician', request: 'GET /?_type=Observation', careSet: careTeam('a'), expect: { effect: 'deny', reason: 'interaction-forbidden' } },
  { note: 'refuses an asynchronous request', role: 'clinician', request: 'GET /Observation', careSet: careTeam('a'), expect: { effect: 'deny', reason: 'interaction-forbidden', rule: 'clinician.async' } },
  { note: 'refuses a subscription write', role: 'clinician', request: 'POST /Subscription', body: { resourceType: 'Subscription' }, careSet: careTeam('a'), expect: { effect: 'deny', reason: 'interaction-forbidden' } },
  { note: 'refuses $everything on a patient outside the care set', role: 'clinician', request: 'GET /Patient/vic/$everything', careSet: careTeam('a'), expect: { effect: 'deny', reason: 'no-care-relationship' } },
  { note: 'refuses the audit trail to clinicians', role: 'clinician', request: 'GET /AuditEvent', careSet: careTeam('a'), expect: { effect: 'deny', reason: 'role-forbidden', rule: 'clinician.audit' } },
  { note: 'a signed paging link continues a system-level page (HAPI pages on its base)', role: 'clinician', request: 'GET /?_getpages=x', paging: true, careSet: careTeam('a'), expect: { effect: 'permit' } },

  // writes
  { note: 'permits a write within the care set', role: 'clinician', request: 'PUT /Observation/o1', body: { resourceType: 'Observation', id: 'o1' }, careSet: careTeam('a'), writePatients: { before: ['a'], after: ['a'] }, expect: { effect: 'permit', patients: ['a'] } },
  { note: 'hides a write whose current version belongs to another patient', role: 'clinician', request: 'PUT /Observation/o1', body: { resourceType: 'Observation', id: 'o1' }, careSet: careTeam('a'), writePatients: { before: ['vic'], after: ['a'] }, expect: { effect: 'deny', reason: 'no-care-relationship', refuseAs: 'not-found' } },
  { note: 'refuses moving a resource to another patient of the care set', role: 'clinician', request: 'PUT /Observation/o1', body: { resourceType: 'Observation', id: 'o1' }, careSet: careTeam('a', 'b'), writePatients: { before: ['a'], after: ['b'] }, expect: { effect: 'deny', reason: 'patient-move-forbidden' } },
  { note: 'refuses a write whose patient cannot be determined, as a miss', role: 'clinician', request: 'PUT /Observation/o1', body: { resourceType: 'Observation', id: 'o1' }, careSet: careTeam('a'), writePatients: { before: 'undetermined', after: ['a'] }, expect: { effect: 'deny', reason: 'patient-undetermined', refuseAs: 'not-found' } },
  { note: 'refuses a clinician writing a CareTeam (self-granted relationship)', role: 'clinician', request: 'POST /CareTeam', body: { resourceType: 'CareTeam' }, careSet: careTeam('a'), writePatients: { before: 'none', after: ['a'] }, expect: { effect: 'deny', reason: 'relationship-write-forbidden' } },
  { note: 'refuses a clinician writing a Practitioner (identity takeover)', role: 'clinician', request: 'PUT /Practitioner/p1', body: { resourceType: 'Practitioner', id: 'p1' }, careSet: careTeam('a'), writePatients: { before: 'none', after: 'none' }, expect: { effect: 'deny', reason: 'relationship-write-forbidden' } },
  { note: 'refuses a conditional write to a listed care set', role: 'clinician', request: 'PUT /Observation?identifier=x', body: { resourceType: 'Observation' }, careSet: careTeam('a'), expect: { effect: 'deny', reason: 'interaction-forbidden' } },
  { note: 'lets the DIM write a CareTeam', role: 'dim', request: 'POST /CareTeam', body: { resourceType: 'CareTeam' }, careSet: everyone, writePatients: { before: 'none', after: ['a'] }, expect: { effect: 'permit', reason: 'role-all-records' } },

  // break-the-glass
  { note: 'marks a read of a patient reached only through a grant as break-the-glass', role: 'emergency', request: 'GET /Patient/vic', careSet: withGrants(careTeam('a'), [{ patient: 'vic', reason: 'unconscious patient', until: 1 }]), expect: { effect: 'permit', reason: 'break-glass', purposeOfUse: 'BTG', obligations: ['filter-response', 'withhold-labels', 'mark-break-glass', 'audit-severity'] } },
  { note: 'names the patients reachable only through a grant, for the answer to be marked', role: 'emergency', request: 'GET /Observation', careSet: withGrants(careTeam('a'), [{ patient: 'vic', reason: 'unconscious patient', until: 1 }]), expect: { effect: 'permit', reason: 'care-relationship', obligations: ['filter-response', 'withhold-labels', 'narrow', 'break-glass-patients'] } },
  { note: 'permits $break-glass when the grant it opens is pending', role: 'emergency', request: 'POST /Patient/vic/$break-glass', body: { resourceType: 'Parameters' }, careSet: withGrants(careTeam(), [{ patient: 'vic', reason: 'unconscious patient', until: 1 }]), expect: { effect: 'permit', reason: 'break-glass', rule: 'emergency.break-glass' } },
  { note: 'refuses $break-glass to a role without the privilege', role: 'clinician', request: 'POST /Patient/vic/$break-glass', body: { resourceType: 'Parameters' }, careSet: careTeam(), expect: { effect: 'deny', reason: 'interaction-forbidden' } },

  // other roles
  { note: 'shows the DIM every record, with the audit trail', role: 'dim', request: 'GET /Patient/vic', careSet: everyone, expect: { effect: 'permit', reason: 'role-all-records', obligations: ['filter-response', 'show-audit-trail'] } },
  { note: 'lets the DIM read the audit trail', role: 'dim', request: 'GET /AuditEvent?date=ge2026-01-01', careSet: everyone, expect: { effect: 'permit', rule: 'dim.audit' } },
  { note: 'refuses the DIM writing AuditEvents', role: 'dim', request: 'POST /AuditEvent', body: { resourceType: 'AuditEvent' }, careSet: everyone, expect: { effect: 'deny', reason: 'role-forbidden' } },
  { note: 'shows a patient her own record, as subject only', role: 'patient', principal: patientPrincipal(), request: 'GET /Observation', careSet: careTeam('pat-1'), expect: { effect: 'permit', reason: 'own-record', obligations: ['filter-response', 'subject-only', 'own-access-history', 'hold-unreleased', 'narrow'] } },
  { note: 'refuses a patient writing', role: 'patient', principal: patientPrincipal(), request: 'PUT /Observation/o1', body: { resourceType: 'Observation', id: 'o1' }, careSet: careTeam('pat-1'), writePatients: { before: ['pat-1'], after: ['pat-1'] }, expect: { effect: 'deny', reason: 'interaction-forbidden' } },
  { note: 'masks clinical content for admission staff', role: 'admission', request: 'GET /Encounter?patient=a', careSet: everyone, expect: { effect: 'permit', obligations: ['filter-response', 'mask-clinical', 'withhold-labels'] } },
  { note: 'refuses admission staff clinical resources', role: 'admission', request: 'GET /Observation', careSet: everyone, expect: { effect: 'deny', reason: 'role-forbidden' } },
  { note: 'refuses admission staff a search on a masked element', role: 'admission', request: 'GET /Encounter?reason-code=x', careSet: everyone, expect: { effect: 'deny', reason: 'parameter-forbidden' } },
  { note: 'refuses a role with no access, at high severity', role: 'no-clinical-access', request: 'GET /Patient/a', careSet: undefined, expect: { effect: 'deny', reason: 'role-forbidden', obligations: ['audit-severity'] } },
  { note: 'de-identifies a contractor’s answers and keeps them to the stays', role: 'coding-contractor', request: 'GET /Condition?encounter=e1', engagement: 'codage-2026', careSet: { ...careTeam('a'), encounters: new Set(['e1']) }, expect: { effect: 'permit', reason: 'de-identified', obligations: ['filter-response', 'stays-only', 'de-identify', 'withhold-labels', 'narrow'] } },
  { note: 'refuses a contractor without an engagement in force', role: 'coding-contractor', request: 'GET /Condition', careSet: careTeam(), expect: { effect: 'deny', reason: 'role-forbidden' } },
  { note: 'refuses a contractor a search that could identify a person', role: 'coding-contractor', request: 'GET /Patient?name=x', engagement: 'codage-2026', careSet: { ...careTeam('a'), encounters: new Set(['e1']) }, expect: { effect: 'deny', reason: 'parameter-forbidden' } },
];

describe('decide()', () => {
  it.each(rows)('$note', (row) => {
    const it0 = request(row.request, row.body);
    const interaction = row.note === 'refuses an asynchronous request' ? { ...it0, prefer: { respondAsync: true } } : it0;
    const d = decide({
      principal: row.principal ?? clinician,
      role: role(row.role),
      interaction,
      careSet: row.careSet,
      policy,
      ...(row.writePatients ? { writePatients: row.writePatients } : {}),
      ...(row.paging ? { paging: true } : {}),
      ...(row.engagement ? { engagement: row.engagement } : {}),
    });
    const e = row.expect;
    if (e.effect) expect(d.effect).toBe(e.effect);
    if (e.reason) expect(d.reason).toBe(e.reason);
    if (e.rule) expect(d.rule).toBe(e.rule);
    if ('refuseAs' in e) expect(d.refuseAs).toBe(e.refuseAs);
    if (e.purposeOfUse) expect(d.purposeOfUse).toBe(e.purposeOfUse);
    if (e.patients) expect(d.patients).toEqual(e.patients);
    if (e.obligations) expect(kinds(d)).toEqual(e.obligations);
    if (e.narrowTo) {
      const n = d.obligations.find((o) => o.kind === 'narrow');
      expect(n && n.kind === 'narrow' ? [...n.patients] : undefined).toEqual(e.narrowTo);
    }
  });

  it('permits the capability statement to anyone, and refuses everything else to a caller no role matches', () => {
    expect(decide({ principal: undefined, role: undefined, interaction: request('GET /metadata'), careSet: undefined, policy }).effect).toBe('permit');
    expect(decide({ principal: clinician, role: undefined, interaction: request('GET /Patient/a'), careSet: undefined, policy })).toMatchObject({ effect: 'deny', reason: 'default-deny' });
  });

  it('keeps an identified contractor to the stays and the kinds of data of her contract, without de-identification, and says so in the reason', () => {
    const identified = { ...policy.engagements[0]!, id: 'qualite', access: 'identified' as const, categories: ['Encounter', 'Condition'] };
    const withContract = { ...policy, engagements: [...policy.engagements, identified] };
    const stays: CareSet = { ...careTeam('a'), encounters: new Set(['e1']) };
    const coder = role('coding-contractor');
    const read = decide({ principal: clinician, role: coder, interaction: request('GET /Condition?encounter=e1'), careSet: stays, policy: withContract, engagement: 'qualite' });
    expect(read).toMatchObject({ effect: 'permit', reason: 'engagement-identified' });
    expect(kinds(read)).toEqual(['filter-response', 'stays-only', 'withhold-labels', 'narrow']);
    expect(decide({ principal: clinician, role: coder, interaction: request('GET /Observation?encounter=e1'), careSet: stays, policy: withContract, engagement: 'qualite' })).toMatchObject({
      effect: 'deny',
      reason: 'role-forbidden',
    });
  });

  it('refuses a patient outside the care set with the 404 of a miss when the policy says so', () => {
    const hidden = { ...policy, refusals: { urlDecided: 404 as const } };
    const d = decide({ principal: clinician, role: role('clinician'), interaction: request('GET /Patient/vic'), careSet: careTeam('a'), policy: hidden });
    expect(d).toMatchObject({ effect: 'deny', refuseAs: 'not-found' });
  });

  it('narrows only up to the configured number of patients', () => {
    const small = { ...policy, search: { narrowMaxPatients: 1 } };
    const d = decide({ principal: clinician, role: role('clinician'), interaction: request('GET /Observation'), careSet: careTeam('a', 'b'), policy: small });
    expect(kinds(d)).not.toContain('narrow');
    expect(kinds(d)).toContain('filter-response');
  });

  it('refuses a SMART token whose scopes do not cover the interaction', () => {
    const scoped = practitioner({ claims: { ...clinician.claims, scopes: [{ context: 'user', resourceType: 'Patient', permissions: new Set(['r']), params: [], raw: 'user/Patient.r' }] } });
    const d = decide({ principal: scoped, role: role('clinician'), interaction: request('GET /Observation?patient=a'), careSet: careTeam('a'), policy });
    expect(d).toMatchObject({ effect: 'deny', reason: 'scope-ceiling' });
  });
});

describe('decideBundle()', () => {
  const permit: Decision = { effect: 'permit', reason: 'care-relationship', rule: 'r', message: 'ok', evidence: [], obligations: [], patients: [] };
  const refused: Decision = { ...permit, effect: 'deny', reason: 'no-care-relationship', message: 'outside' };

  it('keeps a batch permitted when one entry is refused (the entry answers its refusal)', () => {
    expect(decideBundle(permit, request('POST /', { resourceType: 'Bundle', type: 'batch', entry: [] }), [permit, refused])).toBe(permit);
  });

  it('refuses a transaction whole when one entry is refused', () => {
    const d = decideBundle(permit, request('POST /', { resourceType: 'Bundle', type: 'transaction', entry: [] }), [permit, refused]);
    expect(d).toMatchObject({ effect: 'deny', reason: 'no-care-relationship' });
    expect(d.message).toMatch(/^The transaction was refused whole/);
  });
});
