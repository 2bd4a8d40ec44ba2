import type { AuditEvent, Binary, DocumentReference, Observation, Resource } from '@medplum/fhirtypes';
import { describe, expect, it } from 'vitest';
import { buildAuditEvents } from '../../src/audit/build.js';
import { reduceForPatients } from '../../src/audit/patient-view.js';
import { patientsOf } from '../../src/fhir/patients.js';
import { DEFAULT_HOLD_RULES } from '../../src/policy/patient-rights-config.js';
import type { Opposition } from '../../src/relate/types.js';
import { present, type FilterContext } from '../../src/shape/filter.js';
import { practitioner } from '../audit/fixtures.js';

/**
 * The response filter on the patient's rights: what an opposition limited to kinds of data
 * withholds, what waits for a physician's release, and the patient's reduced view of the trail.
 */
const BASE = 'http://fhir.internal/fhir';
const PSY = { system: 'http://terminology.hl7.org/CodeSystem/v3-ActCode', code: 'PSY' };

const observation = (extra: Partial<Observation> = {}): Observation => ({ resourceType: 'Observation', id: 'o1', status: 'final', code: { text: 'x' }, subject: { reference: 'Patient/p1' }, ...extra });
const doc = (docStatus: DocumentReference['docStatus'], extra: Partial<DocumentReference> = {}): DocumentReference => ({
  resourceType: 'DocumentReference',
  id: 'd1',
  status: 'current',
  docStatus,
  subject: { reference: 'Patient/p1' },
  content: [{ attachment: { url: 'Binary/b1' } }],
  ...extra,
});
const binary = (context: string): Binary => ({ resourceType: 'Binary', id: 'b1', contentType: 'text/plain', securityContext: { reference: context } });

function context(extra: Partial<FilterContext>, upstream: Record<string, Resource> = {}): FilterContext {
  return {
    careSet: { scope: 'listed', patients: new Map([['p1', []]]), resolvedAt: 0 },
    subjectOnly: false,
    linkOf: (r: Resource) => patientsOf(r, { localBases: [BASE] }),
    read: async (ref) => upstream[ref],
    publicBase: 'https://caregate.example/fhir',
    localBases: [BASE],
    ...extra,
  };
}
const opposedBy = (...list: Opposition[]) => new Map([['p1', list]]);

describe('shape.filter: an opposition limited to kinds of data', () => {
  it('withholds the resource types it covers, keeps the others, and says which Consent withheld what', async () => {
    const told: string[] = [];
    const ctx = context({ opposed: opposedBy({ consent: 'Consent/c', classes: ['Observation'], labels: [] }), onOpposed: (p, c) => told.push(`${p} ${c}`) });
    expect(await present(observation(), ctx)).toBeUndefined();
    expect(told).toEqual(['p1 Consent/c']);
    expect(await present({ resourceType: 'Condition', id: 'c1', subject: { reference: 'Patient/p1' } } as Resource, ctx)).toBeDefined();
  });

  it('withholds what carries a label it covers, and the content of a document that does', async () => {
    const ctx = (upstream: Record<string, Resource> = {}) => context({ opposed: opposedBy({ consent: 'Consent/c', classes: [], labels: [`${PSY.system}|${PSY.code}`] }) }, upstream);
    expect(await present(observation({ meta: { security: [PSY] } }), ctx())).toBeUndefined();
    expect(await present(observation(), ctx())).toBeDefined();
    const labelled = doc('final', { meta: { security: [PSY] } });
    expect(await present(binary('DocumentReference/d1'), ctx({ 'DocumentReference/d1': labelled }))).toBeUndefined();
    expect(await present(binary('DocumentReference/d1'), ctx({ 'DocumentReference/d1': doc('final') }))).toBeDefined();
  });

  it('withholds a Binary whose document cannot be told from a caller opposed on documents (fail closed)', async () => {
    const ctx = context({ opposed: opposedBy({ consent: 'Consent/c', classes: ['DocumentReference'], labels: [] }) });
    expect(await present(binary('Patient/p1'), ctx)).toBeUndefined();
  });
});

describe('shape.filter: documents held back until a physician releases them', () => {
  const held = { rules: DEFAULT_HOLD_RULES, labels: ['https://chu.example/release|held'] };

  it('withholds a preliminary document and its content, and shows them once final', async () => {
    expect(await present(doc('preliminary'), context({ held }))).toBeUndefined();
    expect(await present(binary('DocumentReference/d1'), context({ held }, { 'DocumentReference/d1': doc('preliminary') }))).toBeUndefined();
    expect(await present(doc('final'), context({ held }))).toBeDefined();
    expect(await present(binary('DocumentReference/d1'), context({ held }, { 'DocumentReference/d1': doc('final') }))).toBeDefined();
  });

  it('withholds a result not yet final and anything carrying a held label', async () => {
    expect(await present(observation({ status: 'preliminary' }), context({ held }))).toBeUndefined();
    expect(await present(observation({ meta: { security: [{ system: 'https://chu.example/release', code: 'held' }] } }), context({ held }))).toBeUndefined();
    expect(await present(observation(), context({ held }))).toBeDefined();
  });

  it('withholds a Binary whose document cannot be told (its security context is the patient)', async () => {
    expect(await present(binary('Patient/p1'), context({ held }))).toBeUndefined();
  });
});

describe('shape.filter: the patient’s view of the audit trail', () => {
  const event = (patients: string[]): AuditEvent =>
    buildAuditEvents({ requestId: 'r', recorded: '2026-03-04T10:00:00Z', principal: practitioner(), publicBaseUrl: 'x', site: 's', patients, clientAddress: '10.0.0.5' })[0]!;
  const ctx = context({ reduceAuditEvent: (e) => reduceForPatients(e, new Set(['p1'])) });

  it('shows her the reduced view of an event about her, and nothing of an event about someone else', async () => {
    const shown = await present(event(['p1', 'p2']), ctx);
    expect(shown?.resource.meta?.tag?.[0]?.code).toBe('patient-access-history');
    expect(JSON.stringify(shown)).not.toMatch(/p2|10\.0\.0\.5/);
    expect(await present(event(['p2']), ctx)).toBeUndefined();
    expect(await present(event(['p1']), context({}))).toBeUndefined();
  });
});
