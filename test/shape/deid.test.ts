import { randomBytes } from 'node:crypto';
import type { Resource } from '@medplum/fhirtypes';
import { describe, expect, it } from 'vitest';
import { createDeidentifier, generaliseDate } from '../../src/shape/deid.js';
import type { DateMode } from '../../src/policy/engagement.js';

const BASE = 'https://fhir.chu-exemple.fr/r4';
/** Fixed, so that a pseudonym containing a short secret by chance fails every run or none. */
const KEY = Buffer.from('caregate-test-key-not-a-secret-0123456789', 'utf8');
const INS_NIR = 'urn:oid:1.2.250.1.213.1.4.10';
const IPP_SYSTEM = 'urn:oid:1.2.250.1.999.1.1.1';
const NDA_SYSTEM = 'urn:oid:1.2.250.1.999.1.1.2';

const PATIENT_ID = '7d1f0c2e-4b6a-4f1e-9d7a-0b5c3e2a1f90';
const ENCOUNTER_ID = 'c3b2a190-8e7d-4c6b-a5f4-e3d2c1b0a987';

/** Everything in the fixtures that names, locates, identifies or narrates a person. */
const SECRETS = [
  'DUPONT',
  'Marie-Claire',
  'Marie',
  'Claire',
  'LEMAIRE',
  'Paul',
  'MARTIN',
  'Sophie',
  'Jean',
  '285027512345678', // INS-NIR
  'IPP00412345',
  'NDA2024000123', // stay number
  '10003461033', // RPPS
  '810003461033', // idNatPs
  '06 12 34 56 78',
  '+33612345678',
  '02 99 28 43 21',
  'marie.dupont@example.fr',
  'rue des Lilas',
  'Rennes',
  '35000',
  'Saint-Brieuc',
  'Chambre 12',
  'anxieuse',
  'chute',
  'domicile',
  'escalier',
  'Fracture du col',
  'compte rendu',
  'ZGF0YQ', // attachment data
  'photo.jpg',
  'ehr.chu-exemple.fr', // meta.source
  'portail',
  'birthTime',
  '1985-02-14', // exact birth date (month mode)
  '08:12', // exact admission time (month mode)
  '14:30',
  PATIENT_ID,
  ENCOUNTER_ID,
  'obs-glycemie-0042',
  'cond-fracture-0007',
  'pr1',
  'old-encounter',
];

function patient(): Resource {
  return {
    resourceType: 'Patient',
    id: PATIENT_ID,
    meta: { source: 'https://ehr.chu-exemple.fr/portail', versionId: '4', lastUpdated: '2024-03-05T08:14:22.123Z' },
    text: { status: 'generated', div: '<div xmlns="http://www.w3.org/1999/xhtml">Marie-Claire DUPONT, née le 14/02/1985</div>' },
    extension: [
      {
        url: 'http://hl7.org/fhir/StructureDefinition/patient-birthPlace',
        valueAddress: { city: 'Saint-Brieuc', postalCode: '22000', country: 'FRA' },
      },
      {
        url: 'https://hl7.fr/ig/fhir/core/StructureDefinition/fr-core-identity-reliability',
        extension: [{ url: 'identityStatus', valueCoding: { system: 'https://mos.esante.gouv.fr/NOS/TRE_R338-ModaliteAccueil/FHIR/TRE-R338-ModaliteAccueil', code: 'VALI' } }],
      },
    ],
    identifier: [
      {
        use: 'official',
        type: { coding: [{ system: 'https://hl7.fr/ig/fhir/core/CodeSystem/fr-core-cs-v2-0203', code: 'INS-NIR' }] },
        system: INS_NIR,
        value: '285027512345678',
      },
      {
        use: 'usual',
        type: { coding: [{ system: 'http://terminology.hl7.org/CodeSystem/v2-0203', code: 'PI' }] },
        system: IPP_SYSTEM,
        value: 'IPP00412345',
      },
    ],
    name: [{ use: 'official', family: 'DUPONT', given: ['Marie-Claire', 'Marie', 'Claire'] }],
    telecom: [
      { system: 'phone', value: '06 12 34 56 78', use: 'mobile' },
      { system: 'email', value: 'marie.dupont@example.fr' },
    ],
    gender: 'female',
    birthDate: '1985-02-14',
    _birthDate: { extension: [{ url: 'http://hl7.org/fhir/StructureDefinition/patient-birthTime', valueDateTime: '1985-02-14T14:30:00+01:00' }] },
    address: [{ line: ['12 rue des Lilas'], city: 'Rennes', postalCode: '35000', country: 'FRA' }],
    photo: [{ contentType: 'image/jpeg', url: 'https://ehr.chu-exemple.fr/photo.jpg' }],
    contact: [{ name: { family: 'DUPONT', given: ['Jean'] }, telecom: [{ system: 'phone', value: '02 99 28 43 21' }] }],
    generalPractitioner: [{ reference: 'Practitioner/pr-lemaire', display: 'Dr Paul LEMAIRE' }],
  } as unknown as Resource;
}

function encounter(): Resource {
  return {
    resourceType: 'Encounter',
    id: ENCOUNTER_ID,
    text: { status: 'generated', div: '<div xmlns="http://www.w3.org/1999/xhtml">Séjour de Marie-Claire DUPONT</div>' },
    identifier: [{ type: { coding: [{ system: 'http://terminology.hl7.org/CodeSystem/v2-0203', code: 'VN' }] }, system: NDA_SYSTEM, value: 'NDA2024000123' }],
    status: 'finished',
    class: { system: 'http://terminology.hl7.org/CodeSystem/v3-ActCode', code: 'IMP', display: 'inpatient encounter' },
    subject: { reference: `Patient/${PATIENT_ID}`, display: 'Marie-Claire DUPONT' },
    participant: [{ individual: { reference: 'Practitioner/pr-lemaire', display: 'Dr Paul LEMAIRE' } }],
    period: { start: '2024-03-05T08:12:00+01:00', end: '2024-03-12T14:30:00+01:00' },
    reasonCode: [{ text: 'chute dans un escalier à domicile' }],
    diagnosis: [{ condition: { reference: 'Condition/cond-fracture-0007', display: 'Fracture du col du fémur' }, rank: 1 }],
    hospitalization: {
      admitSource: { coding: [{ system: 'https://mos.esante.gouv.fr/NOS/TRE_R213-ModeEntree/FHIR/TRE-R213-ModeEntree', code: '8' }] },
      dischargeDisposition: { coding: [{ system: 'https://mos.esante.gouv.fr/NOS/TRE_R214-ModeSortie/FHIR/TRE-R214-ModeSortie', code: '8' }] },
    },
    location: [{ location: { reference: 'Location/ch-12', display: 'Chambre 12' } }],
    partOf: { reference: `${BASE}/Encounter/old-encounter/_history/3` },
    serviceProvider: { reference: 'Organization/chu', display: 'CHU' },
  } as unknown as Resource;
}

function observation(): Resource {
  return {
    resourceType: 'Observation',
    id: 'obs-glycemie-0042',
    meta: { source: 'https://ehr.chu-exemple.fr/portail', tag: [{ system: 'urn:tag', code: 'Sophie' }] },
    status: 'final',
    code: { coding: [{ system: 'http://loinc.org', code: '15074-8', display: 'Glucose [Moles/volume] in Blood' }], text: 'Glycémie de Mme DUPONT' },
    subject: { reference: `${BASE}/Patient/${PATIENT_ID}`, display: 'Marie-Claire DUPONT' },
    encounter: { reference: `Encounter/${ENCOUNTER_ID}` },
    effectiveDateTime: '2024-03-06T07:45:00+01:00',
    issued: '2024-03-06T08:02:11.000+01:00',
    performer: [
      { reference: 'Practitioner/pr-martin', display: 'Infirmière Sophie MARTIN' },
      { type: 'Practitioner', identifier: { system: 'urn:oid:1.2.250.1.71.4.2.1', value: '810003461033' }, display: 'Paul LEMAIRE' },
      { reference: 'https://other.example/fhir/Practitioner/x' },
      { reference: 'urn:uuid:1f2e3d4c-0000-4000-8000-000000000001' },
    ],
    valueQuantity: { value: 6.2, unit: 'mmol/L', system: 'http://unitsofmeasure.org', code: 'mmol/L' },
    interpretation: [{ coding: [{ system: 'http://terminology.hl7.org/CodeSystem/v3-ObservationInterpretation', code: 'H' }] }],
    note: [{ authorString: 'Sophie MARTIN', text: 'Patiente anxieuse, joignable au +33612345678' }],
    extension: [
      { url: 'http://hopital.example/fhir/StructureDefinition/commentaire', valueString: 'compte rendu oral à Jean DUPONT' },
      { url: 'http://hopital.example/fhir/StructureDefinition/prelevement', valueCoding: { system: 'http://snomed.info/sct', code: '119297000' } },
      { url: 'http://hopital.example/fhir/StructureDefinition/proche', valueHumanName: { family: 'DUPONT', given: ['Jean'] } },
    ],
    component: [{ code: { coding: [{ system: 'http://loinc.org', code: '2339-0' }] }, valueString: 'Jean DUPONT a apporté le lecteur' }],
    unknownElement: 'Marie-Claire DUPONT',
    _status: { extension: [{ url: 'http://example/x', valueString: 'Paul' }] },
  } as unknown as Resource;
}

function condition(): Resource {
  return {
    resourceType: 'Condition',
    id: 'cond-fracture-0007',
    contained: [
      {
        resourceType: 'Practitioner',
        id: 'pr1',
        identifier: [
          { system: 'https://rpps.esante.gouv.fr', value: '10003461033' },
          { system: 'urn:oid:1.2.250.1.71.4.2.1', value: '810003461033' },
        ],
        name: [{ family: 'LEMAIRE', given: ['Paul'], prefix: ['Dr'] }],
        telecom: [{ system: 'phone', value: '02 99 28 43 21' }],
        qualification: [{ code: { coding: [{ system: 'https://mos.esante.gouv.fr/NOS/TRE_G15-ProfessionSante/FHIR/TRE-G15-ProfessionSante', code: '10' }] } }],
      },
    ],
    clinicalStatus: { coding: [{ system: 'http://terminology.hl7.org/CodeSystem/condition-clinical', code: 'active' }] },
    category: [{ coding: [{ system: 'http://terminology.hl7.org/CodeSystem/condition-category', code: 'encounter-diagnosis' }] }],
    code: { coding: [{ system: 'http://hl7.org/fhir/sid/icd-10', code: 'S72.0', display: 'Fracture du col du fémur' }], text: 'Fracture du col du fémur droit (chute escalier)' },
    subject: { reference: `Patient/${PATIENT_ID}`, display: 'DUPONT Marie-Claire' },
    encounter: { reference: `Encounter/${ENCOUNTER_ID}` },
    onsetDateTime: '2024-03-05T07:30:00+01:00',
    recordedDate: '2024-03-05',
    asserter: { reference: '#pr1', display: 'Dr LEMAIRE' },
    note: [{ text: 'Chute à domicile, découverte par Jean DUPONT' }],
  } as unknown as Resource;
}

function documentReference(): Resource {
  return {
    resourceType: 'DocumentReference',
    id: 'doc-1',
    status: 'current',
    subject: { reference: `Patient/${PATIENT_ID}` },
    content: [{ attachment: { contentType: 'application/pdf', data: 'ZGF0YQ==', title: 'CRH DUPONT Marie-Claire' } }],
  } as unknown as Resource;
}

const FIXTURES: [string, () => Resource][] = [
  ['Patient with INS-NIR, IPP, birth place, birth time', patient],
  ['Encounter with stay number, reason and diagnosis', encounter],
  ['Observation with note, performer displays and free-text extensions', observation],
  ['Condition with a contained Practitioner', condition],
];

function deid(dateMode: DateMode = 'month', key = KEY) {
  return createDeidentifier({ key, dateMode, localBases: [BASE] });
}

/** Every string anywhere in a JSON value. */
function strings(v: unknown, out: string[] = []): string[] {
  if (typeof v === 'string') out.push(v);
  else if (Array.isArray(v)) for (const x of v) strings(x, out);
  else if (typeof v === 'object' && v !== null) for (const x of Object.values(v)) strings(x, out);
  return out;
}

/** String leaves of the input that are not codes, systems, units, urls or dates: free text and identifiers. */
function freeStrings(v: unknown, key = '', out: string[] = []): string[] {
  const CODE_KEYS = new Set(['resourceType', 'code', 'system', 'unit', 'status', 'use', 'gender', 'url', 'type', 'contentType', 'country']);
  if (typeof v === 'string') {
    if (!CODE_KEYS.has(key) && !/^\d{4}(-\d{2}(-\d{2}(T.*)?)?)?$/.test(v)) out.push(v);
  } else if (Array.isArray(v)) for (const x of v) freeStrings(x, key, out);
  else if (typeof v === 'object' && v !== null) for (const [k, x] of Object.entries(v)) freeStrings(x, k, out);
  return out;
}

describe('createDeidentifier: nothing identifying survives', () => {
  it.each(FIXTURES)('%s: no name, identifier, phone, address, free text or real id in the output', (_name, make) => {
    const out = deid().deidentify(make());
    expect(out).toBeDefined();
    const json = JSON.stringify(out).toLowerCase();
    for (const secret of SECRETS) expect(json, secret).not.toContain(secret.toLowerCase());
  });

  it.each(FIXTURES)('%s: no free-text or identifier value of the input is in the output', (_name, make) => {
    const input = make();
    const out = deid().deidentify(input);
    const json = JSON.stringify(out);
    const leaves = new Set(strings(out));
    for (const s of freeStrings(input)) {
      // Short values ("4", "Dr") may occur inside a pseudonym by chance: compare them whole.
      if (s.length < 5) expect(leaves.has(s), s).toBe(false);
      else expect(json, s).not.toContain(s);
    }
  });

  it.each(FIXTURES)('%s: every string left is a pseudonymous reference or id, a code, a system, a unit or a date', (_name, make) => {
    const d = deid();
    const out = d.deidentify(make());
    for (const s of strings(out)) {
      expect(s, s).toMatch(/^(#c\d+|c\d+|p-[A-Za-z0-9\-.]{22}|[A-Z][A-Za-z]+\/p-[A-Za-z0-9\-.]{22}|[A-Za-z0-9\-.:/_]+|\d{4}(-\d{2})?(-01T00:00:00Z)?|mmol\/L)$/);
    }
  });

  it('does not modify its input', () => {
    const input = observation();
    const before = structuredClone(input);
    deid().deidentify(input);
    expect(input).toEqual(before);
  });
});

describe('createDeidentifier: what is kept', () => {
  it('reduces a Patient to a pseudonymous id, gender and generalised birth date', () => {
    const d = deid('month');
    expect(d.deidentify(patient())).toEqual({
      resourceType: 'Patient',
      id: d.pseudonym('Patient', PATIENT_ID),
      gender: 'female',
      birthDate: '1985-02',
    });
  });

  it('keeps codings (system, code) but not their displays nor CodeableConcept.text', () => {
    const out = deid().deidentify(condition()) as Record<string, any>;
    expect(out.code).toEqual({ coding: [{ system: 'http://hl7.org/fhir/sid/icd-10', code: 'S72.0' }] });
    expect(out.clinicalStatus.coding[0].code).toBe('active');
    expect(out.category[0].coding[0].code).toBe('encounter-diagnosis');
  });

  it('keeps quantities with their unit, and extensions with coded values', () => {
    const out = deid().deidentify(observation()) as Record<string, any>;
    expect(out.valueQuantity).toEqual({ value: 6.2, unit: 'mmol/L', system: 'http://unitsofmeasure.org', code: 'mmol/L' });
    expect(out.interpretation[0].coding[0].code).toBe('H');
    expect(out.extension).toEqual([
      { url: 'http://hopital.example/fhir/StructureDefinition/prelevement', valueCoding: { system: 'http://snomed.info/sct', code: '119297000' } },
    ]);
    expect(out.component).toEqual([{ code: { coding: [{ system: 'http://loinc.org', code: '2339-0' }] } }]);
    expect(out).not.toHaveProperty('note');
    expect(out).not.toHaveProperty('unknownElement');
    expect(out).not.toHaveProperty('_status');
    expect(out.meta).toBeUndefined();
  });

  it('keeps stay logistics codes on an Encounter and removes its stay number and reason texts', () => {
    const out = deid().deidentify(encounter()) as Record<string, any>;
    expect(out).not.toHaveProperty('identifier');
    expect(out).not.toHaveProperty('text');
    expect(out).not.toHaveProperty('reasonCode');
    expect(out.class).toEqual({ system: 'http://terminology.hl7.org/CodeSystem/v3-ActCode', code: 'IMP' });
    expect(out.hospitalization.admitSource.coding[0].code).toBe('8');
    expect(out.diagnosis).toEqual([{ condition: { reference: `Condition/${deid().pseudonym('Condition', 'cond-fracture-0007')}` }, rank: 1 }]);
  });

  it('renumbers contained resources, de-identifies them and rewrites the references to them', () => {
    const out = deid().deidentify(condition()) as Record<string, any>;
    expect(out.contained).toEqual([
      {
        resourceType: 'Practitioner',
        id: 'c1',
        qualification: [{ code: { coding: [{ system: 'https://mos.esante.gouv.fr/NOS/TRE_G15-ProfessionSante/FHIR/TRE-G15-ProfessionSante', code: '10' }] } }],
      },
    ]);
    expect(out.asserter).toEqual({ reference: '#c1' });
  });

  it('passes a resource nested in Parameters through the same de-identification', () => {
    const d = deid();
    const out = d.deidentify({ resourceType: 'Parameters', parameter: [{ name: 'x', resource: patient() }] } as Resource) as Record<string, any>;
    expect(out.parameter).toEqual([{ resource: { resourceType: 'Patient', id: d.pseudonym('Patient', PATIENT_ID), gender: 'female', birthDate: '1985-02' } }]);
  });
});

describe('createDeidentifier: pseudonyms', () => {
  it('points references at pseudonyms: relative, under a local base, versioned', () => {
    const d = deid();
    const obs = d.deidentify(observation()) as Record<string, any>;
    const enc = d.deidentify(encounter()) as Record<string, any>;
    const pat = d.deidentify(patient()) as Record<string, any>;
    expect(obs.subject).toEqual({ reference: `Patient/${pat.id}` });
    expect(enc.subject).toEqual({ reference: `Patient/${pat.id}` });
    expect(obs.encounter).toEqual({ reference: `Encounter/${enc.id}` });
    expect(enc.partOf).toEqual({ reference: `Encounter/${d.pseudonym('Encounter', 'old-encounter')}` });
    expect(obs.performer).toEqual([{ reference: `Practitioner/${d.pseudonym('Practitioner', 'pr-martin')}` }, { type: 'Practitioner' }]);
  });

  it('removes references to other servers and to other transaction entries', () => {
    const out = JSON.stringify(deid().deidentify(observation()));
    expect(out).not.toContain('other.example');
    expect(out).not.toContain('urn:uuid');
  });

  it('gives valid FHIR ids, stable for a key and different for another key', () => {
    const a = deid().pseudonym('Patient', PATIENT_ID);
    expect(a).toMatch(/^[A-Za-z0-9\-.]{1,64}$/);
    expect(a).toMatch(/^p-.{22}$/);
    expect(deid().pseudonym('Patient', PATIENT_ID)).toBe(a);
    expect(deid('month', randomBytes(32)).pseudonym('Patient', PATIENT_ID)).not.toBe(a);
    expect(deid().pseudonym('Encounter', PATIENT_ID)).not.toBe(a);
    expect(deid().deidentify(encounter())).toEqual(deid().deidentify(encounter()));
  });

  it('reveals the pseudonyms it issued, for their type only', () => {
    const d = deid();
    const out = d.deidentify(observation()) as Record<string, any>;
    const patientPseudo = (out.subject.reference as string).split('/')[1] as string;
    expect(d.reveal('Patient', patientPseudo)).toBe(PATIENT_ID);
    expect(d.reveal('Observation', out.id)).toBe('obs-glycemie-0042');
    expect(d.reveal('Encounter', patientPseudo)).toBeUndefined();
  });

  it.each([
    ['a pseudonym never issued', 'p-AAAAAAAAAAAAAAAAAAAAAA'],
    ['a real id', PATIENT_ID],
    ['an empty string', ''],
    ['a malformed value', 'p-../../Patient'],
  ])('reveals nothing for %s', (_name, pseudo) => {
    const d = deid();
    d.deidentify(patient());
    expect(d.reveal('Patient', pseudo)).toBeUndefined();
  });

  it('does not reveal a pseudonym issued by another de-identifier (another engagement)', () => {
    const pseudo = deid().pseudonym('Patient', PATIENT_ID);
    expect(deid().reveal('Patient', pseudo)).toBeUndefined();
  });

  it('forgets the least recently issued pseudonyms beyond its bound', () => {
    const d = createDeidentifier({ key: KEY, dateMode: 'year', localBases: [], maxRevealEntries: 2 });
    const first = d.pseudonym('Patient', 'a');
    d.pseudonym('Patient', 'b');
    d.pseudonym('Patient', 'c');
    expect(d.reveal('Patient', first)).toBeUndefined();
    expect(d.reveal('Patient', d.pseudonym('Patient', 'a'))).toBe('a');
  });

  it('refuses a malformed type or id when asked for a pseudonym', () => {
    expect(() => deid().pseudonym('patient', 'x')).toThrow(TypeError);
    expect(() => deid().pseudonym('Patient', 'a/b')).toThrow(TypeError);
  });
});

describe('createDeidentifier: dates', () => {
  it.each([
    ['keep', '2024-03-05T08:12:00+01:00', '2024-03-05', '2024-03-06T08:02:11.000+01:00'],
    ['month', '2024-03', '2024-03', '2024-03-01T00:00:00Z'],
    ['year', '2024', '2024', '2024-01-01T00:00:00Z'],
  ] as const)('generalises dateTime, date and instant with dateMode %s', (mode, start, recorded, issued) => {
    const d = deid(mode);
    expect((d.deidentify(encounter()) as Record<string, any>).period.start).toBe(start);
    expect((d.deidentify(condition()) as Record<string, any>).recordedDate).toBe(recorded);
    expect((d.deidentify(observation()) as Record<string, any>).issued).toBe(issued);
  });

  it.each([
    ['1985', 'date', 'month', '1985'],
    ['1985-02', 'date', 'year', '1985'],
    ['2024-03-05T08:12', 'dateTime', 'month', undefined],
    ['2024-03-05T08:12:00+01:00', 'dateTime', 'month', '2024-03'],
    ['not a date', 'dateTime', 'keep', undefined],
    ['2024-03-05', 'instant', 'keep', undefined],
    ['2024-03-05T08:12:00Z', 'instant', 'month', '2024-03-01T00:00:00Z'],
  ] as const)('generaliseDate(%s, %s, %s) is %s', (value, type, mode, expected) => {
    expect(generaliseDate(value, type, mode)).toBe(expected === undefined ? undefined : expected);
  });

  it('removes malformed dates rather than passing them', () => {
    const enc = { ...encounter(), period: { start: 'le 5 mars, chez Mme DUPONT' } } as Resource;
    expect(deid().deidentify(enc)).not.toHaveProperty('period');
  });
});

describe('createDeidentifier: withheld', () => {
  it.each([
    ['a DocumentReference', documentReference()],
    ['a Binary', { resourceType: 'Binary', id: 'b1', contentType: 'application/pdf', data: 'ZGF0YQ==' }],
    ['a Media', { resourceType: 'Media', id: 'm1', status: 'completed', content: { url: 'https://ehr.chu-exemple.fr/photo.jpg' } }],
    ['a RelatedPerson', { resourceType: 'RelatedPerson', id: 'r1', patient: { reference: `Patient/${PATIENT_ID}` } }],
    ['a Bundle', { resourceType: 'Bundle', type: 'searchset', entry: [{ fullUrl: `${BASE}/Patient/${PATIENT_ID}`, resource: patient() }] }],
    ['a resource type that is not FHIR R4', { resourceType: 'Project', id: 'x', name: 'DUPONT' }],
    ['something that is not a resource', { id: 'x' }],
    ['a resource with a malformed id', { resourceType: 'Observation', id: 'a/b', status: 'final' }],
  ])('withholds %s', (_name, resource) => {
    expect(deid().deidentify(resource as Resource)).toBeUndefined();
  });

  it('withholds a resource whose modifier extension would lose its value', () => {
    const obs = { ...observation(), modifierExtension: [{ url: 'http://hopital.example/fhir/StructureDefinition/annule-par', valueString: 'Dr Paul LEMAIRE' }] };
    expect(deid().deidentify(obs as Resource)).toBeUndefined();
  });

  it('keeps a resource whose modifier extension is entirely coded', () => {
    const ext = { url: 'http://hopital.example/fhir/StructureDefinition/statut-local', valueCode: 'annule' };
    const out = deid().deidentify({ ...observation(), modifierExtension: [ext] } as Resource) as Record<string, any>;
    expect(out.modifierExtension).toEqual([ext]);
  });

  it('drops a contained resource it would withhold, and the references to it', () => {
    const cond = condition() as Record<string, any>;
    cond.contained.push({ resourceType: 'Binary', id: 'scan', contentType: 'image/png', data: 'ZGF0YQ==' });
    cond.evidence = [{ detail: [{ reference: '#scan' }] }];
    const out = deid().deidentify(cond as Resource) as Record<string, any>;
    expect(out.contained).toHaveLength(1);
    expect(out).not.toHaveProperty('evidence');
  });

  it('numbers the contained resources it keeps, whatever their order, and drops references to the others', () => {
    const cond = condition() as Record<string, any>;
    cond.contained.unshift({ resourceType: 'Binary', id: 'scan', contentType: 'image/png', data: 'ZGF0YQ==' });
    cond.contained.push({ resourceType: 'Observation', id: 'obs', status: 'final', derivedFrom: [{ reference: '#scan' }, { reference: '#pr1' }] });
    const out = deid().deidentify(cond as Resource) as Record<string, any>;
    expect(out.contained.map((c: { id: string }) => c.id)).toEqual(['c1', 'c2']);
    expect(out.contained[1].derivedFrom).toEqual([{ reference: '#c1' }]);
    expect(out.asserter).toEqual({ reference: '#c1' });
  });

  it('withholds a resource whose contained resources share an id', () => {
    const cond = condition() as Record<string, any>;
    cond.contained.push({ resourceType: 'Organization', id: 'pr1' });
    expect(deid().deidentify(cond as Resource)).toBeUndefined();
  });
});

describe('createDeidentifier: options', () => {
  it.each([
    ['a short key', { key: randomBytes(16), dateMode: 'month' }],
    ['a key that is not a Buffer', { key: 'secret-secret-secret-secret-secret', dateMode: 'month' }],
    ['an unknown date mode', { key: randomBytes(32), dateMode: 'day' }],
    ['a zero bound', { key: randomBytes(32), dateMode: 'month', maxRevealEntries: 0 }],
  ])('throws a TypeError for %s', (_name, options) => {
    expect(() => createDeidentifier({ localBases: [], ...(options as object) } as never)).toThrow(TypeError);
  });
});

describe('createDeidentifier: hostile shapes', () => {
  it('removes deeply nested arrays and objects instead of overflowing the stack', () => {
    let nested: unknown = 'Marie-Claire DUPONT';
    for (let i = 0; i < 100_000; i++) nested = [nested];
    let deep: Record<string, unknown> = { text: 'DUPONT' };
    for (let i = 0; i < 1000; i++) deep = { coding: [{ code: 'x' }], extension: [{ url: 'http://e', valueCodeableConcept: deep }] };
    const out = deid().deidentify({ resourceType: 'Observation', id: 'o', status: 'final', category: nested, code: deep } as unknown as Resource);
    expect(JSON.stringify(out)).not.toContain('DUPONT');
    expect(out).not.toHaveProperty('category');
  });
});

describe('pseudonyms in URLs', () => {
  it('are ids caregate itself accepts in a URL (no dots), whatever the key', async () => {
    const { classify } = await import('../../src/fhir/classify.js');
    for (let k = 0; k < 20; k++) {
      const d = createDeidentifier({ key: randomBytes(32), dateMode: 'year', localBases: [] });
      for (let i = 0; i < 20; i++) {
        const p = d.pseudonym('Patient', `pat-${i}`);
        expect(p).not.toContain('.');
        expect(classify({ method: 'GET', path: `/Patient/${p}`, query: '', headers: {} }, { maxBodyBytes: 1024 }).id).toBe(p);
      }
    }
  });
});
