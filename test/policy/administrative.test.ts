import type { Resource } from '@medplum/fhirtypes';
import { describe, expect, it } from 'vitest';
import { searchParamDef } from '../../src/fhir/searchparams.js';
import {
  ADMIN_READABLE_TYPES,
  ADMIN_SEARCH_PARAMS,
  isAdminSearchParam,
  isAdminSort,
  maskForAdministration,
} from '../../src/policy/administrative.js';

const FR_CORE = 'https://hl7.fr/ig/fhir/core/StructureDefinition/';
const CLINICAL_EXT = 'http://hopital.example/fhir/StructureDefinition/pathologie-principale';

/** Clinical content in the fixtures: none of it may reach admission staff. */
const CLINICAL = [
  'Fracture',
  'S72.0',
  'chute',
  'escalier',
  'diabète',
  'sans sel',
  'Isolement',
  'Suivi oncologie',
  'oncologie',
  'Réadmission',
  'cond-fracture-0007',
  'sr-irm-1',
  'HIV',
  'ONC',
  'lit médicalisé',
];

function patient(): Resource {
  return {
    resourceType: 'Patient',
    id: 'pat-1',
    meta: {
      versionId: '4',
      lastUpdated: '2024-03-05T08:14:22Z',
      source: 'https://ehr.chu-exemple.fr/portail',
      security: [{ system: 'http://terminology.hl7.org/CodeSystem/v3-ActCode', code: 'HIV' }],
      tag: [{ system: 'urn:tag', code: 'ONC' }],
    },
    text: { status: 'generated', div: '<div xmlns="http://www.w3.org/1999/xhtml">Marie DUPONT, suivie pour diabète</div>' },
    extension: [
      { url: 'http://hl7.org/fhir/StructureDefinition/patient-birthPlace', valueAddress: { city: 'Saint-Brieuc', country: 'FRA' } },
      { url: `${FR_CORE}fr-core-identity-reliability`, extension: [{ url: 'identityStatus', valueCoding: { code: 'VALI' } }] },
      { url: CLINICAL_EXT, valueString: 'diabète de type 2' },
    ],
    identifier: [
      { use: 'official', system: 'urn:oid:1.2.250.1.213.1.4.10', value: '285027512345678' },
      { use: 'usual', type: { coding: [{ system: 'http://terminology.hl7.org/CodeSystem/v2-0203', code: 'PI' }] }, system: 'urn:oid:1.2.250.1.999.1.1.1', value: 'IPP00412345' },
    ],
    active: true,
    name: [{ use: 'official', family: 'DUPONT', given: ['Marie', 'Claire'], _given: [null, { extension: [{ url: CLINICAL_EXT, valueString: 'oncologie' }] }] }],
    telecom: [{ system: 'phone', value: '06 12 34 56 78', use: 'mobile' }],
    gender: 'female',
    birthDate: '1985-02-14',
    address: [
      {
        line: ['12 rue des Lilas'],
        city: 'Rennes',
        postalCode: '35000',
        extension: [
          { url: `${FR_CORE}fr-core-address-insee-code`, valueCoding: { system: 'https://mos.esante.gouv.fr/NOS/TRE_R13-CommuneOM/FHIR/TRE-R13-CommuneOM', code: '35238' } },
          { url: CLINICAL_EXT, valueString: 'lit médicalisé au domicile' },
        ],
      },
    ],
    maritalStatus: { coding: [{ system: 'http://terminology.hl7.org/CodeSystem/v3-MaritalStatus', code: 'M' }] },
    photo: [{ contentType: 'image/jpeg', url: 'https://ehr.chu-exemple.fr/photo.jpg' }],
    contact: [{ relationship: [{ coding: [{ code: 'C' }] }], name: { family: 'DUPONT', given: ['Jean'] }, telecom: [{ system: 'phone', value: '02 99 28 43 21' }] }],
    generalPractitioner: [{ reference: 'Practitioner/pr-lemaire', display: 'Dr Paul LEMAIRE' }],
    managingOrganization: { reference: 'Organization/chu', display: 'CHU Exemple' },
    link: [{ other: { reference: 'Patient/pat-0', display: 'DUPONT Marie (doublon)' }, type: 'replaces' }],
    contained: [{ resourceType: 'Condition', id: 'c', code: { text: 'Fracture' } }],
  } as unknown as Resource;
}

function encounter(): Resource {
  return {
    resourceType: 'Encounter',
    id: 'enc-1',
    text: { status: 'generated', div: '<div xmlns="http://www.w3.org/1999/xhtml">Fracture du col après chute dans un escalier</div>' },
    contained: [{ resourceType: 'Condition', id: 'dx', code: { coding: [{ system: 'http://hl7.org/fhir/sid/icd-10', code: 'S72.0' }] } }],
    extension: [
      { url: `${FR_CORE}fr-core-estimated-discharge-date`, valueDateTime: '2024-03-12' },
      { url: CLINICAL_EXT, valueCodeableConcept: { text: 'Fracture du col' } },
    ],
    identifier: [{ system: 'urn:oid:1.2.250.1.999.1.1.2', value: 'NDA2024000123' }],
    status: 'in-progress',
    class: { system: 'http://terminology.hl7.org/CodeSystem/v3-ActCode', code: 'IMP' },
    type: [{ coding: [{ system: 'https://mos.esante.gouv.fr/NOS/TRE_R305-TypeRencontre/FHIR/TRE-R305-TypeRencontre', code: 'HOSPITALISATION' }] }],
    serviceType: { text: 'Suivi oncologie' },
    priority: { coding: [{ code: 'EM' }], text: 'chute' },
    subject: { reference: 'Patient/pat-1', display: 'Marie DUPONT' },
    episodeOfCare: [{ reference: 'EpisodeOfCare/eoc-1', display: 'Suivi oncologie' }],
    basedOn: [{ reference: 'ServiceRequest/sr-irm-1', display: 'IRM' }],
    participant: [{ individual: { reference: 'Practitioner/pr-lemaire', display: 'Dr Paul LEMAIRE' } }],
    period: { start: '2024-03-05T08:12:00+01:00' },
    reasonCode: [{ coding: [{ system: 'http://hl7.org/fhir/sid/icd-10', code: 'S72.0' }], text: 'Fracture du col' }],
    reasonReference: [{ reference: 'Condition/cond-fracture-0007' }],
    diagnosis: [{ condition: { reference: '#dx' }, use: { text: 'chute' } }],
    account: [{ reference: 'Account/acc-1' }],
    hospitalization: {
      preAdmissionIdentifier: { value: 'PRE-778' },
      origin: { reference: 'Location/urgences', display: 'Urgences' },
      admitSource: { coding: [{ system: 'https://mos.esante.gouv.fr/NOS/TRE_R213-ModeEntree/FHIR/TRE-R213-ModeEntree', code: '8' }] },
      reAdmission: { text: 'Réadmission à 30 jours' },
      dietPreference: [{ text: 'sans sel, diabète' }],
      specialCourtesy: [{ text: 'VIP' }],
      specialArrangement: [{ text: 'Isolement contact' }],
      dischargeDisposition: { coding: [{ code: 'home' }] },
      destination: { reference: 'Location/domicile' },
    },
    location: [{ location: { reference: 'Location/ch-12', display: 'Chambre 12' }, status: 'active', period: { start: '2024-03-05T09:00:00+01:00' } }],
    serviceProvider: { reference: 'Organization/uf-2301', display: 'Orthopédie' },
    partOf: { reference: 'Encounter/enc-0' },
  } as unknown as Resource;
}

describe('maskForAdministration: Patient', () => {
  it('keeps demographics: identifiers (INS-NIR, IPP), name, telecom, address, birth date, contact, GP', () => {
    const out = maskForAdministration(patient()) as Record<string, any>;
    const input = patient() as Record<string, any>;
    for (const k of ['identifier', 'active', 'telecom', 'gender', 'birthDate', 'maritalStatus', 'contact', 'generalPractitioner', 'managingOrganization', 'link']) {
      expect(out[k], k).toEqual(input[k]);
    }
    expect(out.name).toEqual([{ use: 'official', family: 'DUPONT', given: ['Marie', 'Claire'] }]);
    expect(out.address[0].line).toEqual(['12 rue des Lilas']);
    expect(out.id).toBe('pat-1');
  });

  it('keeps identity extensions and drops the others, at any depth', () => {
    const out = maskForAdministration(patient()) as Record<string, any>;
    expect(out.extension.map((e: { url: string }) => e.url)).toEqual([
      'http://hl7.org/fhir/StructureDefinition/patient-birthPlace',
      `${FR_CORE}fr-core-identity-reliability`,
    ]);
    expect(out.address[0].extension.map((e: { url: string }) => e.url)).toEqual([`${FR_CORE}fr-core-address-insee-code`]);
  });

  it('removes the narrative, the photo, contained resources, security labels and tags', () => {
    const out = maskForAdministration(patient()) as Record<string, any>;
    expect(out).not.toHaveProperty('text');
    expect(out).not.toHaveProperty('photo');
    expect(out).not.toHaveProperty('contained');
    expect(out.meta).toEqual({ versionId: '4', lastUpdated: '2024-03-05T08:14:22Z' });
  });

  it('withholds a Patient carrying a modifier extension', () => {
    const p = { ...patient(), modifierExtension: [{ url: 'http://example/x', valueBoolean: true }] } as Resource;
    expect(maskForAdministration(p)).toBeUndefined();
  });
});

describe('maskForAdministration: Encounter', () => {
  it('keeps stay logistics', () => {
    const out = maskForAdministration(encounter()) as Record<string, any>;
    const input = encounter() as Record<string, any>;
    for (const k of ['identifier', 'status', 'class', 'type', 'subject', 'participant', 'period', 'location', 'serviceProvider', 'account', 'partOf']) {
      expect(out[k], k).toEqual(input[k]);
    }
    expect(out.hospitalization).toEqual({
      preAdmissionIdentifier: input.hospitalization.preAdmissionIdentifier,
      origin: input.hospitalization.origin,
      admitSource: input.hospitalization.admitSource,
      dischargeDisposition: input.hospitalization.dischargeDisposition,
      destination: input.hospitalization.destination,
    });
    expect(out.extension).toEqual([{ url: `${FR_CORE}fr-core-estimated-discharge-date`, valueDateTime: '2024-03-12' }]);
  });

  it.each(['reasonCode', 'reasonReference', 'diagnosis', 'text', 'contained', 'priority', 'serviceType', 'basedOn'])('removes %s', (key) => {
    expect(maskForAdministration(encounter())).not.toHaveProperty(key);
  });

  it.each(['reAdmission', 'dietPreference', 'specialCourtesy', 'specialArrangement'])('removes hospitalization.%s', (key) => {
    expect((maskForAdministration(encounter()) as Record<string, any>).hospitalization).not.toHaveProperty(key);
  });

  it('keeps the episode-of-care reference but not its display (it names the condition)', () => {
    expect((maskForAdministration(encounter()) as Record<string, any>).episodeOfCare).toEqual([{ reference: 'EpisodeOfCare/eoc-1' }]);
  });

  it('drops references to removed contained resources', () => {
    const enc = { ...encounter(), participant: [{ individual: { reference: '#dx', display: 'S72.0' } }] } as Resource;
    expect(maskForAdministration(enc)).not.toHaveProperty('participant');
  });

  it('lets no clinical text or code through', () => {
    for (const make of [patient, encounter]) {
      const json = JSON.stringify(maskForAdministration(make())).toLowerCase();
      for (const s of CLINICAL) expect(json, s).not.toContain(s.toLowerCase());
    }
  });

  it('withholds an Encounter carrying a modifier extension anywhere', () => {
    const enc = encounter() as Record<string, any>;
    enc.location[0].modifierExtension = [{ url: 'http://example/x', valueBoolean: true }];
    expect(maskForAdministration(enc as Resource)).toBeUndefined();
  });

  it('does not modify its input', () => {
    const input = encounter();
    const before = structuredClone(input);
    maskForAdministration(input);
    expect(input).toEqual(before);
  });
});

describe('maskForAdministration: other types', () => {
  it.each(['Organization', 'Location', 'Practitioner', 'PractitionerRole', 'HealthcareService'])('passes a %s without its narrative', (type) => {
    const ext = [{ url: 'http://example/any', valueString: 'kept on reference data' }];
    const r = { resourceType: type, id: 'x', text: { status: 'generated', div: '<div>x</div>' }, extension: ext, active: true } as Resource;
    expect(maskForAdministration(r)).toEqual({ resourceType: type, id: 'x', extension: ext, active: true });
  });

  it('keeps a Coverage but not its contract', () => {
    const cov = {
      resourceType: 'Coverage',
      id: 'cov-1',
      status: 'active',
      beneficiary: { reference: 'Patient/pat-1' },
      payor: [{ reference: 'Organization/cpam-35' }],
      subscriberId: '285027512345678',
      contract: [{ reference: 'Contract/k' }],
    } as Resource;
    expect(maskForAdministration(cov)).toEqual({
      resourceType: 'Coverage',
      id: 'cov-1',
      status: 'active',
      beneficiary: { reference: 'Patient/pat-1' },
      payor: [{ reference: 'Organization/cpam-35' }],
      subscriberId: '285027512345678',
    });
  });

  it('keeps an Account without its free-text name and description', () => {
    const acc = { resourceType: 'Account', id: 'acc-1', status: 'active', name: 'Séjour onco', description: 'chimio', subject: [{ reference: 'Patient/pat-1' }] } as Resource;
    expect(maskForAdministration(acc)).toEqual({ resourceType: 'Account', id: 'acc-1', status: 'active', subject: [{ reference: 'Patient/pat-1' }] });
  });

  it.each([
    ['Condition', { resourceType: 'Condition', id: 'c', subject: { reference: 'Patient/pat-1' } }],
    ['Observation', { resourceType: 'Observation', id: 'o', status: 'final', code: { text: 'HbA1c' } }],
    ['DocumentReference', { resourceType: 'DocumentReference', id: 'd', status: 'current', content: [] }],
    ['EpisodeOfCare', { resourceType: 'EpisodeOfCare', id: 'e', status: 'active' }],
    ['Bundle', { resourceType: 'Bundle', type: 'searchset' }],
    ['not a resource', { id: 'x' }],
  ])('withholds %s', (_name, r) => {
    expect(maskForAdministration(r as Resource)).toBeUndefined();
  });
});

describe('maskForAdministration: hostile shapes', () => {
  let nested: unknown = 'DUPONT';
  for (let i = 0; i < 100_000; i++) nested = [nested];

  it('withholds a resource nested deeper than any FHIR resource instead of overflowing the stack', () => {
    expect(maskForAdministration({ resourceType: 'Patient', id: 'x', name: nested } as unknown as Resource)).toBeUndefined();
  });

  it('drops nested arrays where an allow-listed backbone element is expected', () => {
    expect(maskForAdministration({ resourceType: 'Encounter', id: 'x', hospitalization: nested } as unknown as Resource)).toEqual({
      resourceType: 'Encounter',
      id: 'x',
    });
  });
});

describe('ADMIN_SEARCH_PARAMS', () => {
  const RESULT = new Set(['_count', '_sort']);

  it.each(ADMIN_READABLE_TYPES.flatMap((t) => ADMIN_SEARCH_PARAMS[t].filter((p) => !RESULT.has(p)).map((p) => [t, p] as const)))(
    '%s?%s is an R4 search parameter over elements the mask keeps',
    (type, param) => {
      const def = searchParamDef(type, param);
      expect(def, `${type}.${param}`).toBeDefined();
      if (param === '_id') return;
      const r = maskForAdministration({
        resourceType: type,
        id: 'x',
        // Every element the parameter reads, with a placeholder value, must survive masking.
        ...Object.fromEntries(def!.paths.map((p) => [/^\(?\w+\.(\w+)/.exec(p)![1], { probe: true }])),
      } as unknown as Resource) as unknown as Record<string, unknown>;
      for (const p of def!.paths) expect(r, p).toHaveProperty(/^\(?\w+\.(\w+)/.exec(p)![1] as string);
    },
  );

  it.each([
    ['Encounter', 'reason-code', false],
    ['Encounter', 'diagnosis', false],
    ['Encounter', 'special-arrangement', false],
    ['Encounter', '_has', false],
    ['Encounter', '_include', false],
    ['Encounter', '_revinclude', false],
    ['Encounter', 'subject.name', false],
    ['Encounter', 'subject:Patient', false],
    ['Patient', '_text', false],
    ['Patient', '_content', false],
    ['Observation', 'patient', false],
    ['Patient', 'address-postalcode', true],
    ['Encounter', 'patient', true],
    ['Encounter', '_count', true],
  ] as const)('isAdminSearchParam(%s, %s) is %s', (type, name, expected) => {
    expect(isAdminSearchParam(type, name)).toBe(expected);
  });

  it.each([
    ['Encounter', '-date', true],
    ['Encounter', 'date,-identifier', true],
    ['Encounter', 'reason-code', false],
    ['Encounter', 'date,diagnosis', false],
    ['Encounter', '_count', false],
    ['Encounter', '', false],
    ['Encounter', 'date,', false],
    ['Condition', 'date', false],
  ] as const)('isAdminSort(%s, "%s") is %s', (type, value, expected) => {
    expect(isAdminSort(type, value)).toBe(expected);
  });
});
