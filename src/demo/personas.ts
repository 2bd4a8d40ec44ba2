/**
 * The people of the demo hospital (CHU Demo, FINESS 990000001). Fixed ids so that the seed,
 * demo tokens, the policy's test cases and the integration tests all talk about the same people.
 *
 * Every identifier here is synthetic: RPPS numbers are in the 997… test range with a valid Luhn key,
 * INS-NIR use the test system `urn:oid:1.2.250.1.213.1.4.10`.
 */

export const DEMO_FINESS = '990000001';
/** Local identifier system for non-health staff accounts (admission, director, contractors). */
export const STAFF_ID_SYSTEM = 'https://chu-demo.example/fhir/staff-id';
/** Local IPP system of the demo hospital. */
export const IPP_SYSTEM = 'https://chu-demo.example/fhir/ipp';
/** Stay number (numéro de séjour) system. */
export const STAY_SYSTEM = 'https://chu-demo.example/fhir/stay';

export interface DemoPersona {
  /** Persona name used by `caregate demo-token --as <name>`. */
  name: string;
  description: string;
  kind: 'practitioner' | 'patient' | 'related-person';
  /** Resource id on the demo FHIR server (`Practitioner/<id>`, `Patient/<id>`, `RelatedPerson/<id>`). */
  id: string;
  /** idNatPs (prefix 8 + RPPS) for health professionals. */
  idNatPs?: string;
  rpps?: string;
  /** Local staff id for people without an RPPS number. */
  staffId?: string;
  /** TRE-G15 profession code and the label printed on a CPS card. */
  profession?: { code: string; label: string };
  /** Roles as the hospital IdP (Keycloak) would put them in `realm_access.roles`. */
  idpRoles: string[];
  /**
   * Seeded with the late fixtures (after the generated hospital) rather than with the first
   * personas, so that adding the persona does not move the generated data.
   */
  seededLate?: true;
  family: string;
  given: string;
}

export const PERSONAS = {
  clinician: {
    name: 'clinician',
    description: 'Dr Claire Martin, cardiologist (Médecin), cardiology service',
    kind: 'practitioner',
    id: 'prat-martin',
    idNatPs: '899700000013',
    rpps: '99700000013',
    profession: { code: '10', label: 'Médecin' },
    idpRoles: ['clinician'],
    family: 'MARTIN',
    given: 'Claire',
  },
  nurse: {
    name: 'nurse',
    description: 'Julien Bernard, nurse (Infirmier), cardiology service',
    kind: 'practitioner',
    id: 'prat-bernard',
    idNatPs: '899700000021',
    rpps: '99700000021',
    profession: { code: '60', label: 'Infirmier' },
    idpRoles: ['clinician'],
    family: 'BERNARD',
    given: 'Julien',
  },
  colleague: {
    name: 'colleague',
    description: 'Dr Thomas Lefevre, cardiologist (Médecin) in Louise Dupont’s care team, whom she has opposed (CSP L1110-4)',
    kind: 'practitioner',
    id: 'prat-lefevre',
    idNatPs: '899700000062',
    rpps: '99700000062',
    profession: { code: '10', label: 'Médecin' },
    idpRoles: ['clinician'],
    family: 'LEFEVRE',
    given: 'Thomas',
  },
  emergency: {
    name: 'emergency',
    description: 'Dr Sophie Roux, emergency physician with the break-the-glass privilege',
    kind: 'practitioner',
    id: 'prat-roux',
    idNatPs: '899700000039',
    rpps: '99700000039',
    profession: { code: '10', label: 'Médecin' },
    idpRoles: ['clinician', 'emergency'],
    family: 'ROUX',
    given: 'Sophie',
  },
  surgeon: {
    name: 'surgeon',
    description: 'Dr Paul Girard, surgeon in another service (orthopaedics): none of cardiology’s patients',
    kind: 'practitioner',
    id: 'prat-girard',
    idNatPs: '899700000047',
    rpps: '99700000047',
    profession: { code: '10', label: 'Médecin' },
    idpRoles: ['clinician'],
    family: 'GIRARD',
    given: 'Paul',
  },
  psychiatrist: {
    name: 'psychiatrist',
    description: 'Dr Camille Faure, liaison psychiatrist (Médecin, specialty psychiatry), in Mathilde Roche’s care team with the nurse',
    kind: 'practitioner',
    id: 'prat-faure',
    idNatPs: '899700000070',
    rpps: '99700000070',
    profession: { code: '10', label: 'Médecin' },
    idpRoles: ['clinician'],
    family: 'FAURE',
    given: 'Camille',
    seededLate: true,
  },
  secretary: {
    name: 'secretary',
    description: 'Nathalie Garnier, medical secretary of the cardiology service (no RPPS): stays and demographics, no clinical data',
    kind: 'practitioner',
    id: 'prat-garnier',
    staffId: 'SEC-0001',
    idpRoles: ['secretary'],
    family: 'GARNIER',
    given: 'Nathalie',
    seededLate: true,
  },
  dim: {
    name: 'dim',
    description: 'Dr Anne Leroy, physician of the medical information department (DIM)',
    kind: 'practitioner',
    id: 'prat-leroy',
    idNatPs: '899700000054',
    rpps: '99700000054',
    profession: { code: '10', label: 'Médecin' },
    idpRoles: ['dim'],
    family: 'LEROY',
    given: 'Anne',
  },
  admission: {
    name: 'admission',
    description: 'Marc Petit, admission office (no RPPS: hospital staff account)',
    kind: 'practitioner',
    id: 'prat-petit',
    staffId: 'ADM-0001',
    idpRoles: ['admission'],
    family: 'PETIT',
    given: 'Marc',
  },
  coder: {
    name: 'coder',
    description: 'Léa Moreau, outside coding-optimisation contractor',
    kind: 'practitioner',
    id: 'prat-moreau',
    staffId: 'EXT-CODER-01',
    idpRoles: ['coding-contractor'],
    family: 'MOREAU',
    given: 'Léa',
  },
  director: {
    name: 'director',
    description: 'Henri Fournier, hospital director',
    kind: 'practitioner',
    id: 'prat-fournier',
    staffId: 'DIR-0001',
    idpRoles: ['director'],
    family: 'FOURNIER',
    given: 'Henri',
  },
  patient: {
    name: 'patient',
    description: 'Louise Dupont, a patient of the cardiology service, through the patient portal',
    kind: 'patient',
    id: 'pat-dupont',
    idpRoles: ['patient'],
    family: 'DUPONT',
    given: 'Louise',
  },
  mandated: {
    name: 'mandated',
    description: 'Pierre Dupont, mandated in writing by Louise Dupont (RelatedPerson with an active Consent)',
    kind: 'related-person',
    id: 'rp-dupont',
    idpRoles: ['mandated'],
    family: 'DUPONT',
    given: 'Pierre',
  },
} as const satisfies Record<string, DemoPersona>;

export type PersonaName = keyof typeof PERSONAS;
