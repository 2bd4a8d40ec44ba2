import { describe, expect, it } from 'vitest';
import { REFERENCE_DATA_TYPES, evaluatePath, patientsOf, resolvePatientLink, type PatientLink } from '../../src/fhir/patients.js';

const BASE = 'https://fhir.chu-demo.example/r4';
const ctx = { localBases: [BASE] };
const ref = (reference: string, extra: Record<string, unknown> = {}) => ({ reference, ...extra });

function patients(link: PatientLink): { ids: string[]; subjectIds: string[]; participantIds: string[] } {
  if (link.kind !== 'patients') throw new Error(`expected patients, got ${JSON.stringify(link)}`);
  return { ids: [...link.ids].sort(), subjectIds: [...link.subjectIds].sort(), participantIds: [...link.participantIds].sort() };
}

describe('patientsOf: compartment table', () => {
  it('reads Observation.subject as the subject and performer as a participant', () => {
    const link = patientsOf(
      { resourceType: 'Observation', subject: ref('Patient/ok'), performer: [ref('Practitioner/dr'), ref('Patient/other')] },
      ctx,
    );
    expect(patients(link)).toEqual({ ids: ['ok', 'other'], subjectIds: ['ok'], participantIds: ['other'] });
  });

  it('reads Encounter.subject', () => {
    expect(patients(patientsOf({ resourceType: 'Encounter', subject: ref('Patient/p1') }))).toMatchObject({ subjectIds: ['p1'] });
  });

  it('follows nested paths with arrays at every step (Appointment.participant.actor)', () => {
    const appt = {
      resourceType: 'Appointment',
      participant: [{ actor: ref('Practitioner/dr') }, { actor: ref('Patient/p1') }, { actor: ref('Patient/p2') }],
    };
    expect(patients(patientsOf(appt)).ids).toEqual(['p1', 'p2']);
  });

  it('applies where(resolve() is Patient) forms (Condition.subject)', () => {
    expect(patients(patientsOf({ resourceType: 'Condition', subject: ref('Patient/p1') })).subjectIds).toEqual(['p1']);
  });

  it('accepts absolute references under a local base only', () => {
    expect(patients(patientsOf({ resourceType: 'Observation', subject: ref(`${BASE}/Patient/p1`) }, ctx)).ids).toEqual(['p1']);
    expect(patientsOf({ resourceType: 'Observation', subject: ref('https://elsewhere.example/fhir/Patient/p1') }, ctx)).toMatchObject({
      kind: 'undetermined',
    });
    // Same host, different case: not byte-identical, so not local.
    expect(patientsOf({ resourceType: 'Observation', subject: ref('https://FHIR.chu-demo.example/r4/Patient/p1') }, ctx).kind).toBe('undetermined');
  });

  it('reads versioned references as the patient', () => {
    expect(patients(patientsOf({ resourceType: 'Observation', subject: ref('Patient/p1/_history/3') })).ids).toEqual(['p1']);
  });

  it('is undetermined for an identifier-only subject', () => {
    const o = { resourceType: 'Observation', subject: { identifier: { system: 'urn:oid:1.2.250.1.213.1.4.8', value: '1' } } };
    expect(patientsOf(o)).toMatchObject({ kind: 'undetermined' });
  });

  it('is undetermined for a display-only subject', () => {
    expect(patientsOf({ resourceType: 'Observation', subject: { display: 'Jean Dupont' } }).kind).toBe('undetermined');
  });

  it('ignores an identifier-only performer typed as reference data', () => {
    const o = {
      resourceType: 'Observation',
      subject: ref('Patient/p1'),
      performer: [{ type: 'Practitioner', identifier: { system: 'urn:oid:1.2.250.1.71.4.2.1', value: '810000000001' } }],
    };
    expect(patients(patientsOf(o)).ids).toEqual(['p1']);
  });

  it('is undetermined for an identifier-only performer without a reference-data type', () => {
    const o = { resourceType: 'Observation', subject: ref('Patient/p1'), performer: [{ identifier: { value: 'x' } }] };
    expect(patientsOf(o).kind).toBe('undetermined');
  });

  it('is undetermined for urn, conditional and malformed references in a patient link', () => {
    for (const r of ['urn:uuid:0b5a', 'Patient?identifier=x', 'Patient/', 'Patient/a/b', 'patient/p1']) {
      expect(patientsOf({ resourceType: 'Observation', subject: ref(r) }).kind, r).toBe('undetermined');
    }
  });

  it('is undetermined when a link element is not a reference', () => {
    expect(patientsOf({ resourceType: 'Observation', subject: 'Patient/p1' }).kind).toBe('undetermined');
  });

  it('is undetermined when type contradicts the reference', () => {
    expect(patientsOf({ resourceType: 'Observation', subject: ref('Patient/p1', { type: 'Group' }) }).kind).toBe('undetermined');
  });

  it('is undetermined for a compartment type without any patient', () => {
    expect(patientsOf({ resourceType: 'Observation', status: 'final' })).toMatchObject({ kind: 'undetermined' });
    expect(patientsOf({ resourceType: 'Observation', subject: ref('Location/room1') }).kind).toBe('undetermined');
  });

  it('asks to resolve a Group or Device subject', () => {
    expect(patientsOf({ resourceType: 'Observation', subject: ref('Group/g1') })).toEqual({
      kind: 'indirect',
      via: ['Group/g1'],
      ids: [],
      subjectIds: [],
      participantIds: [],
    });
    expect(patientsOf({ resourceType: 'Observation', subject: ref('Device/d1') })).toMatchObject({ kind: 'indirect', via: ['Device/d1'] });
  });

  it('asks to resolve a Group in a participant position too (a message to a group of patients)', () => {
    const c = { resourceType: 'Communication', subject: ref('Patient/p1'), recipient: [ref('Group/g1'), ref('Practitioner/dr')] };
    expect(patientsOf(c)).toMatchObject({ kind: 'indirect', via: ['Patient/p1', 'Group/g1'], subjectIds: ['p1'] });
  });

  it('handles very large arrays on a path', () => {
    const g = { resourceType: 'Appointment', participant: Array.from({ length: 200_000 }, () => ({ actor: ref('Practitioner/dr') })) };
    g.participant.push({ actor: ref('Patient/p1') });
    expect(patients(patientsOf(g)).ids).toEqual(['p1']);
  });
});

describe('patientsOf: catch-all scan', () => {
  it('counts a Patient mentioned outside the compartment links as a participant', () => {
    const o = { resourceType: 'Observation', subject: ref('Patient/ok'), focus: [ref('Patient/vic')] };
    expect(patients(patientsOf(o))).toEqual({ ids: ['ok', 'vic'], subjectIds: ['ok'], participantIds: ['vic'] });
  });

  it('counts a Patient in an extension', () => {
    const o = {
      resourceType: 'Encounter',
      subject: ref('Patient/ok'),
      extension: [{ url: 'http://x', valueReference: ref('Patient/vic') }],
    };
    expect(patients(patientsOf(o)).participantIds).toEqual(['vic']);
  });

  it('does not count the subject twice', () => {
    expect(patients(patientsOf({ resourceType: 'Observation', subject: ref('Patient/ok') })).participantIds).toEqual([]);
  });

  it('makes reference data patient-bearing when it mentions a patient', () => {
    const prac = { resourceType: 'Practitioner', extension: [{ url: 'http://x', valueReference: ref('Patient/vic') }] };
    expect(patients(patientsOf(prac))).toEqual({ ids: ['vic'], subjectIds: [], participantIds: ['vic'] });
  });

  it('is undetermined for identifier-only, foreign and malformed Patient mentions', () => {
    const base = { resourceType: 'Observation', subject: ref('Patient/ok') };
    expect(patientsOf({ ...base, focus: [{ type: 'Patient', identifier: { value: '1' } }] }).kind).toBe('undetermined');
    expect(patientsOf({ ...base, focus: [ref('http://other.example/fhir/Patient/vic')] }).kind).toBe('undetermined');
    expect(patientsOf({ ...base, focus: [ref('Patient?name=vic')] }).kind).toBe('undetermined');
    expect(patientsOf({ ...base, focus: [ref('urn:uuid:1', { type: 'Patient' })] }).kind).toBe('undetermined');
  });

  it('ignores foreign references to non-patients', () => {
    const o = { resourceType: 'Observation', subject: ref('Patient/ok'), derivedFrom: [ref('http://other.example/fhir/Media/m1')] };
    expect(patients(patientsOf(o)).ids).toEqual(['ok']);
  });
});

describe('patientsOf: contained resources', () => {
  it('counts the patients of contained resources for the container', () => {
    const dr = {
      resourceType: 'DiagnosticReport',
      subject: ref('Patient/ok'),
      contained: [{ resourceType: 'Observation', id: 'o1', subject: ref('Patient/vic') }],
      result: [ref('#o1')],
    };
    expect(patients(patientsOf(dr))).toEqual({ ids: ['ok', 'vic'], subjectIds: ['ok', 'vic'], participantIds: [] });
  });

  it('is undetermined for a contained Patient, referenced or not', () => {
    const o = { resourceType: 'Observation', subject: ref('#p'), contained: [{ resourceType: 'Patient', id: 'p' }] };
    expect(patientsOf(o)).toMatchObject({ kind: 'undetermined' });
    const o2 = { resourceType: 'Observation', subject: ref('Patient/ok'), contained: [{ resourceType: 'Patient', id: 'p' }] };
    expect(patientsOf(o2).kind).toBe('undetermined');
  });

  it('is undetermined for a reference to a missing contained resource', () => {
    expect(patientsOf({ resourceType: 'Observation', subject: ref('#nope') }).kind).toBe('undetermined');
  });

  it('follows a contained Group in the subject to its members', () => {
    const o = {
      resourceType: 'Observation',
      subject: ref('#g'),
      contained: [{ resourceType: 'Group', id: 'g', member: [{ entity: ref('Patient/a') }, { entity: ref('Patient/b') }] }],
    };
    expect(patients(patientsOf(o)).subjectIds).toEqual(['a', 'b']);
  });

  it('keeps contained reference data harmless', () => {
    const mr = {
      resourceType: 'MedicationRequest',
      subject: ref('Patient/ok'),
      medicationReference: ref('#med'),
      contained: [{ resourceType: 'Medication', id: 'med', code: { text: 'x' } }],
    };
    expect(patients(patientsOf(mr)).ids).toEqual(['ok']);
  });

  it('is undetermined for contained resources of unknown kind or malformed contained lists', () => {
    const base = { resourceType: 'Observation', subject: ref('Patient/ok') };
    expect(patientsOf({ ...base, contained: [{ resourceType: 'Task', id: 't' }] }).kind).toBe('undetermined');
    expect(patientsOf({ ...base, contained: [{ resourceType: 'Medication' }] }).kind).toBe('undetermined');
    expect(patientsOf({ ...base, contained: {} }).kind).toBe('undetermined');
    expect(
      patientsOf({ ...base, contained: [{ resourceType: 'Medication', id: 'a' }, { resourceType: 'Medication', id: 'a' }] }).kind,
    ).toBe('undetermined');
  });
});

describe('patientsOf: explicit rules', () => {
  it('Patient: its own id and linked patients', () => {
    const p = { resourceType: 'Patient', id: 'p1', link: [{ other: ref('Patient/p2'), type: 'seealso' }, { other: ref('RelatedPerson/r'), type: 'seealso' }] };
    expect(patients(patientsOf(p))).toEqual({ ids: ['p1', 'p2'], subjectIds: ['p1', 'p2'], participantIds: [] });
  });

  it('Patient without id is undetermined', () => {
    expect(patientsOf({ resourceType: 'Patient', name: [{ family: 'X' }] }).kind).toBe('undetermined');
  });

  it('Binary: a Patient securityContext is the patient', () => {
    expect(patients(patientsOf({ resourceType: 'Binary', securityContext: ref('Patient/p1') })).subjectIds).toEqual(['p1']);
  });

  it('Binary: a DocumentReference securityContext is indirect', () => {
    expect(patientsOf({ resourceType: 'Binary', securityContext: ref('DocumentReference/d1') })).toMatchObject({
      kind: 'indirect',
      via: ['DocumentReference/d1'],
    });
  });

  it('Binary: absent securityContext is undetermined', () => {
    expect(patientsOf({ resourceType: 'Binary', contentType: 'application/pdf' })).toMatchObject({ kind: 'undetermined' });
  });

  it('Binary: reference-data securityContext is not patient data', () => {
    expect(patientsOf({ resourceType: 'Binary', securityContext: ref('Organization/o1') })).toEqual({ kind: 'none' });
  });

  it('Provenance: every target, patients direct and others indirect', () => {
    const prov = {
      resourceType: 'Provenance',
      target: [ref('Patient/p1'), ref('Observation/o1'), ref('Practitioner/dr')],
      agent: [{ who: ref('Patient/p2') }],
    };
    expect(patientsOf(prov)).toEqual({
      kind: 'indirect',
      via: ['Patient/p1', 'Patient/p2', 'Observation/o1'],
      ids: ['p1', 'p2'],
      subjectIds: ['p1'],
      participantIds: ['p2'],
    });
  });

  it('Provenance without target is undetermined', () => {
    expect(patientsOf({ resourceType: 'Provenance', target: [] }).kind).toBe('undetermined');
  });

  it('Group: every member', () => {
    const g = { resourceType: 'Group', type: 'person', actual: true, member: [{ entity: ref('Patient/a') }, { entity: ref('Patient/b') }] };
    expect(patients(patientsOf(g)).subjectIds).toEqual(['a', 'b']);
  });

  it('Group of practitioners is not patient data', () => {
    expect(patientsOf({ resourceType: 'Group', type: 'practitioner', member: [{ entity: ref('Practitioner/x') }] })).toEqual({ kind: 'none' });
  });

  it('Group with an identifier-only member is undetermined', () => {
    expect(patientsOf({ resourceType: 'Group', member: [{ entity: { identifier: { value: 'x' } } }] }).kind).toBe('undetermined');
  });

  it('List: subject and every entry item', () => {
    const list = {
      resourceType: 'List',
      subject: ref('Patient/p1'),
      entry: [{ item: ref('Patient/p2') }, { item: ref('Condition/c1') }, { item: ref('Location/l1') }],
    };
    expect(patientsOf(list)).toEqual({
      kind: 'indirect',
      via: ['Patient/p1', 'Patient/p2', 'Condition/c1'],
      ids: ['p1', 'p2'],
      subjectIds: ['p1', 'p2'],
      participantIds: [],
    });
  });

  it('AuditEvent: patients in entity.what are subjects, in agent.who participants', () => {
    const ae = {
      resourceType: 'AuditEvent',
      agent: [{ who: ref('Practitioner/dr') }, { who: ref('Patient/self') }],
      entity: [{ what: ref('Patient/p1') }, { what: ref('Observation/o1') }],
    };
    expect(patientsOf(ae)).toMatchObject({ kind: 'indirect', subjectIds: ['p1'], participantIds: ['self'], via: ['Patient/p1', 'Patient/self', 'Observation/o1'] });
  });

  it('AuditEvent without patient (a login) is not patient data', () => {
    expect(patientsOf({ resourceType: 'AuditEvent', agent: [{ who: ref('Practitioner/dr') }] })).toEqual({ kind: 'none' });
  });

  it('Consent: the patient', () => {
    expect(patients(patientsOf({ resourceType: 'Consent', patient: ref('Patient/p1'), performer: [ref('RelatedPerson/r')] })).subjectIds).toEqual(['p1']);
  });

  it('RelatedPerson: the patient', () => {
    expect(patients(patientsOf({ resourceType: 'RelatedPerson', patient: ref('Patient/p1') })).subjectIds).toEqual(['p1']);
  });

  it('Device: with a patient, and without', () => {
    expect(patients(patientsOf({ resourceType: 'Device', patient: ref('Patient/p1') })).subjectIds).toEqual(['p1']);
    expect(patientsOf({ resourceType: 'Device', deviceName: [{ name: 'pump', type: 'model-name' }] })).toEqual({ kind: 'none' });
  });
});

describe('patientsOf: reference data and unknown types', () => {
  it.each(['Practitioner', 'PractitionerRole', 'Organization', 'Location', 'Medication', 'HealthcareService', 'Endpoint', 'CodeSystem', 'ValueSet', 'StructureDefinition', 'SearchParameter', 'CapabilityStatement'])(
    '%s is reference data',
    (type) => {
      expect(REFERENCE_DATA_TYPES.has(type)).toBe(true);
      expect(patientsOf({ resourceType: type, id: 'x' })).toEqual({ kind: 'none' });
    },
  );

  it.each(['Task', 'Bundle', 'Subscription', 'MessageHeader', 'Linkage', 'GuidanceResponse', 'OperationOutcome', 'Parameters', 'Bot'])(
    '%s is undetermined (neither compartment nor reference data)',
    (type) => {
      expect(patientsOf({ resourceType: type })).toMatchObject({ kind: 'undetermined' });
    },
  );

  it('is undetermined for non-resources', () => {
    for (const v of [null, 'x', 1, [], {}, { resourceType: 1 }]) expect(patientsOf(v).kind).toBe('undetermined');
  });
});

describe('evaluatePath', () => {
  it('evaluates the supported forms and refuses others', () => {
    const r = { resourceType: 'AuditEvent', entity: [{ what: ref('Patient/a') }, { what: [ref('Patient/b')] }, {}] };
    expect(evaluatePath(r, 'AuditEvent.entity.what')).toEqual([ref('Patient/a'), ref('Patient/b')]);
    expect(evaluatePath(r, 'AuditEvent.entity.what.where(resolve() is Patient)')).toHaveLength(2);
    expect(evaluatePath(r, 'AuditEvent.entity.what.where(resolve() is Group)')).toBeUndefined();
    expect(evaluatePath(r, '(AuditEvent.entity.what as Reference)')).toBeUndefined();
    expect(evaluatePath(r, 'Observation.subject')).toBeUndefined();
    expect(evaluatePath({ resourceType: 'Observation', subject: 'x' }, 'Observation.subject.reference')).toBeUndefined();
  });
});

describe('resolvePatientLink', () => {
  const store: Record<string, unknown> = {
    'DocumentReference/d1': { resourceType: 'DocumentReference', subject: ref('Patient/p1') },
    'Observation/o1': { resourceType: 'Observation', subject: ref('Patient/p2') },
    'Group/g1': { resourceType: 'Group', member: [{ entity: ref('Patient/p3') }] },
    'Practitioner/x': { resourceType: 'Practitioner' },
    'Binary/b2': { resourceType: 'Binary', securityContext: ref('Binary/b3') },
    'Binary/b3': { resourceType: 'Binary', securityContext: ref('DocumentReference/d1') },
  };
  const read = (r: string) => Promise.resolve(store[r]);

  it('resolves a Binary through its DocumentReference', async () => {
    const link = await resolvePatientLink(patientsOf({ resourceType: 'Binary', securityContext: ref('DocumentReference/d1') }), read);
    expect(link).toEqual({ kind: 'patients', ids: ['p1'], subjectIds: ['p1'], participantIds: [] });
  });

  it('merges known patients with resolved ones', async () => {
    const link = await resolvePatientLink(patientsOf({ resourceType: 'Provenance', target: [ref('Patient/p9'), ref('Observation/o1')] }), read);
    expect(link.kind === 'patients' && [...link.ids].sort()).toEqual(['p2', 'p9']);
  });

  it('is undetermined when a target cannot be read', async () => {
    const link = await resolvePatientLink(patientsOf({ resourceType: 'Binary', securityContext: ref('DocumentReference/missing') }), read);
    expect(link.kind).toBe('undetermined');
  });

  it('stops at the depth limit', async () => {
    const link = await resolvePatientLink(patientsOf({ resourceType: 'Binary', securityContext: ref('Binary/b2') }), read, {}, 2);
    expect(link.kind).toBe('undetermined');
  });

  it('is none when every target is reference data', async () => {
    const link = await resolvePatientLink({ kind: 'indirect', via: ['Practitioner/x'], ids: [], subjectIds: [], participantIds: [] }, read);
    expect(link).toEqual({ kind: 'none' });
  });
});
