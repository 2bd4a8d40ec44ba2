/**
 * The synthetic French hospital "CHU Demo": organisations, staff, patients, stays, care teams and
 * clinical records, generated deterministically from a seed (same options ⇒ byte-identical
 * resources), plus fixed-id fixtures for the medical-secrecy tests (`DEMO_FIXTURES`).
 *
 * Every identifier is synthetic: RPPS numbers in the 997… test range with a valid Luhn key,
 * INS-NIR under the test OID `urn:oid:1.2.250.1.213.1.4.10` with a valid key.
 */
import type { FhirRepository } from '@medplum/fhir-router';
import type {
  AuditEvent,
  Binary,
  CareTeam,
  CareTeamParticipant,
  Coding,
  Condition,
  Consent,
  DiagnosticReport,
  DocumentReference,
  Encounter,
  EncounterParticipant,
  Identifier,
  MedicationRequest,
  Observation,
  Organization,
  Patient,
  Practitioner,
  PractitionerRole,
  Provenance,
  Reference,
  RelatedPerson,
  Resource,
} from '@medplum/fhirtypes';
import type { Evidence } from '../relate/types.js';
import { DemoRepository } from './engine.js';
import { patientRightsFixtures } from './patient-rights.js';
import { MINIMISATION_FIXTURES, PSY_LABEL, SPECIALTY_SYSTEM } from './minimisation.js';
import { breakGlassHistory, FLAGGED_LABEL, OVERSIGHT_FIXTURES, STAFF_LABEL } from './oversight.js';
import { DEMO_FINESS, IPP_SYSTEM, PERSONAS, STAFF_ID_SYSTEM, STAY_SYSTEM, type PersonaName } from './personas.js';

// ---------------------------------------------------------------------------------------------
// Code systems and identifier systems
// ---------------------------------------------------------------------------------------------

/** Local code system of PractitionerRole.code in the demo hospital. */
export const ROLE_CODE_SYSTEM = 'https://chu-demo.example/fhir/CodeSystem/role';
/** Role codes carried by PractitionerRole.code. */
export const ROLE_CODES = ['clinician', 'dim', 'admission', 'coder', 'director', 'secretary'] as const;
export type RoleCode = (typeof ROLE_CODES)[number];

export const FINESS_SYSTEM = 'https://finess.esante.gouv.fr';
export const IDNST_SYSTEM = 'urn:oid:1.2.250.1.71.4.2.2';
export const IDNPS_SYSTEM = 'urn:oid:1.2.250.1.71.4.2.1';
export const RPPS_SYSTEM = 'https://rpps.esante.gouv.fr';
/** INS-NIR of test identities. */
export const INS_NIR_TEST_SYSTEM = 'urn:oid:1.2.250.1.213.1.4.10';
export const TRE_G15_SYSTEM = 'https://mos.esante.gouv.fr/NOS/TRE_G15-ProfessionSante/FHIR/TRE-G15-ProfessionSante';
/** Local code of a care unit (unité fonctionnelle) on service Organizations. */
export const UF_SYSTEM = 'https://chu-demo.example/fhir/uf';

const FR_CORE_ID_TYPE = 'https://hl7.fr/ig/fhir/core/CodeSystem/fr-core-cs-v2-0203';
const V2_0203 = 'http://terminology.hl7.org/CodeSystem/v2-0203';
const LOINC = 'http://loinc.org';
const UCUM = 'http://unitsofmeasure.org';
const ICD10 = 'http://hl7.org/fhir/sid/icd-10';
const ATC = 'http://www.whocc.no/atc';
const PARTICIPATION = 'http://terminology.hl7.org/CodeSystem/v3-ParticipationType';
const ACT_CODE = 'http://terminology.hl7.org/CodeSystem/v3-ActCode';
const XHTML = 'http://www.w3.org/1999/xhtml';

// ---------------------------------------------------------------------------------------------
// Organisations
// ---------------------------------------------------------------------------------------------

/** Ids of the establishment and its services. */
export const DEMO_ORGANIZATIONS = {
  establishment: 'org-chu-demo',
  cardiology: 'org-cardio',
  orthopaedics: 'org-ortho',
  emergency: 'org-urgences',
  geriatrics: 'org-geriatrie',
  neurology: 'org-neuro',
  dim: 'org-dim',
  admission: 'org-admission',
  direction: 'org-direction',
} as const;

type ServiceKey = Exclude<keyof typeof DEMO_ORGANIZATIONS, 'establishment'>;
type ClinicalService = 'cardiology' | 'orthopaedics' | 'emergency' | 'geriatrics' | 'neurology';
const CLINICAL: readonly ClinicalService[] = ['cardiology', 'orthopaedics', 'emergency', 'geriatrics', 'neurology'];

const SERVICE_INFO: Record<ServiceKey, { name: string; uf: string; label: string }> = {
  cardiology: { name: 'Service de cardiologie', uf: '1100', label: 'cardiologie' },
  orthopaedics: { name: 'Service de chirurgie orthopédique et traumatologique', uf: '1200', label: 'chirurgie orthopédique' },
  emergency: { name: "Service d'accueil des urgences", uf: '1300', label: 'urgences' },
  geriatrics: { name: 'Service de gériatrie', uf: '1400', label: 'gériatrie' },
  neurology: { name: 'Service de neurologie', uf: '1500', label: 'neurologie' },
  dim: { name: "Département d'information médicale (DIM)", uf: '9100', label: 'DIM' },
  admission: { name: 'Bureau des admissions', uf: '9200', label: 'admissions' },
  direction: { name: 'Direction générale', uf: '9300', label: 'direction' },
};

// ---------------------------------------------------------------------------------------------
// Fixtures for the secrecy tests
// ---------------------------------------------------------------------------------------------

/** A policy setting on which an expectation depends; with the setting off, the opposite holds. */
export type FixtureAssumption =
  /** Membership through one's service (CareTeam participant = Organization) is enabled. */
  | 'service-teams'
  /** The "recently finished encounter" window is longer than 3 days (e.g. 7). */
  | 'encounter-window-over-3-days';

export interface FixtureCase {
  /** Patient id (without `Patient/`). */
  readonly patient: string;
  /**
   * The resource that grants access (must see) or that looks as if it might and must not
   * (must not see), e.g. `CareTeam/ct-fx-direct`.
   */
  readonly via: string;
  /** The `status` that resource carries in the seed (checked by test/demo). */
  readonly status?: string;
  /** The evidence source a correct resolver reports (must see only). */
  readonly source?: Evidence['source'];
  readonly why: string;
  readonly assumes?: FixtureAssumption;
}

export interface PersonaFixtures {
  readonly persona: PersonaName;
  /** `Practitioner/…`, `Patient/…` or `RelatedPerson/…` of the persona. */
  readonly reference: string;
  readonly mustSee: readonly FixtureCase[];
  readonly mustNotSee: readonly FixtureCase[];
}

/**
 * Who must and must not see which fixture patient, and why, under the default policy. The
 * resources named in `via` exist in every seeded hospital, whatever the size options; their
 * periods are relative to the seed's `now`.
 */
export const DEMO_FIXTURES = {
  clinician: {
    persona: 'clinician',
    reference: 'Practitioner/prat-martin',
    mustSee: [
      { patient: 'pat-dupont', via: 'CareTeam/ct-dupont', status: 'active', source: 'careteam', why: 'direct participant of her active cardiology care team (and attending her in-progress stay enc-dupont)' },
      { patient: 'pat-fx-direct', via: 'CareTeam/ct-fx-direct', status: 'active', source: 'careteam', why: 'direct participant (Practitioner) of an active team, open period' },
      { patient: 'pat-fx-role', via: 'CareTeam/ct-fx-role', status: 'active', source: 'careteam', why: 'participant through her active PractitionerRole role-martin-cardio (team without period)' },
      { patient: 'pat-fx-nested', via: 'CareTeam/ct-fx-nested-outer', status: 'active', source: 'careteam', why: 'member of ct-fx-nested-inner, itself a participant of the patient team' },
      { patient: 'pat-fx-cycle', via: 'CareTeam/ct-fx-cycle-a', status: 'active', source: 'careteam', why: 'member of ct-fx-cycle-b, participant of ct-fx-cycle-a, which is a participant of ct-fx-cycle-b (a cycle the resolver must survive)' },
      { patient: 'pat-fx-participant-open', via: 'CareTeam/ct-fx-participant-open', status: 'active', source: 'careteam', why: 'her participant period started in the past and ends in the future' },
      { patient: 'pat-fx-service', via: 'CareTeam/ct-fx-service', status: 'active', source: 'careteam', why: 'the participant is her service, Organization/org-cardio', assumes: 'service-teams' },
      { patient: 'pat-fx-enc-current', via: 'Encounter/enc-fx-inprogress', status: 'in-progress', source: 'encounter', why: 'participant (Practitioner) of an in-progress stay' },
      { patient: 'pat-fx-enc-role', via: 'Encounter/enc-fx-role', status: 'in-progress', source: 'encounter', why: 'participant through PractitionerRole/role-martin-cardio of an in-progress stay' },
      { patient: 'pat-fx-enc-recent', via: 'Encounter/enc-fx-finished-3d', status: 'finished', source: 'encounter', why: 'participant of a stay that ended 3 days ago', assumes: 'encounter-window-over-3-days' },
    ],
    mustNotSee: [
      { patient: 'pat-fx-ended', via: 'CareTeam/ct-fx-ended', status: 'active', why: 'team status still active but its period ended 30 days ago' },
      { patient: 'pat-fx-future', via: 'CareTeam/ct-fx-future', status: 'active', why: 'team period starts in 10 days' },
      { patient: 'pat-fx-proposed', via: 'CareTeam/ct-fx-proposed', status: 'proposed', why: 'team only proposed' },
      { patient: 'pat-fx-inactive', via: 'CareTeam/ct-fx-inactive', status: 'inactive', why: 'team inactive (a substring match of "active" would wrongly accept it)' },
      { patient: 'pat-fx-suspended', via: 'CareTeam/ct-fx-suspended', status: 'suspended', why: 'team suspended' },
      { patient: 'pat-fx-error', via: 'CareTeam/ct-fx-error', status: 'entered-in-error', why: 'team entered in error' },
      { patient: 'pat-fx-participant-ended', via: 'CareTeam/ct-fx-participant-ended', status: 'active', why: 'active team, but her participant period ended 5 days ago' },
      { patient: 'pat-fx-identifier-only', via: 'CareTeam/ct-fx-identifier-only', status: 'active', why: 'participant given only by her RPPS identifier, not a literal reference' },
      { patient: 'pat-fx-contained', via: 'CareTeam/ct-fx-contained', status: 'active', why: 'participant is a contained Practitioner copying her RPPS, not a literal reference' },
      { patient: 'pat-fx-old-role', via: 'CareTeam/ct-fx-old-role', status: 'active', why: 'participant is her inactive PractitionerRole role-martin-urg-old' },
      { patient: 'pat-fx-enc-old', via: 'Encounter/enc-fx-finished-5y', status: 'finished', why: 'stay finished 5 years ago' },
      { patient: 'pat-fx-enc-noend', via: 'Encounter/enc-fx-finished-noend', status: 'finished', why: 'finished stay (begun 2 years ago) without period.end: recency cannot be shown' },
      { patient: 'pat-fx-enc-planned', via: 'Encounter/enc-fx-planned', status: 'planned', why: 'stay only planned (in 7 days)' },
      { patient: 'pat-fx-enc-cancelled', via: 'Encounter/enc-fx-cancelled', status: 'cancelled', why: 'stay cancelled' },
      { patient: 'pat-fx-enc-service-only', via: 'Encounter/enc-fx-service-only', status: 'in-progress', why: 'in-progress stay in her service (serviceProvider) without her as participant' },
      { patient: 'pat-fx-ortho', via: 'CareTeam/ct-fx-ortho', status: 'active', why: 'orthopaedics team without her' },
      { patient: 'pat-fx-er-1', via: 'Encounter/enc-fx-er-1', status: 'in-progress', why: 'emergency stay without her' },
      { patient: 'pat-fx-mandate-expired', via: 'Consent/consent-fx-mandate-expired', status: 'active', why: 'no care relationship at all' },
    ],
  },
  nurse: {
    persona: 'nurse',
    reference: 'Practitioner/prat-bernard',
    mustSee: [
      { patient: 'pat-dupont', via: 'CareTeam/ct-dupont', status: 'active', source: 'careteam', why: 'participant of her care team through PractitionerRole/role-bernard-cardio' },
      { patient: 'pat-fx-nurse-triaged', via: 'Encounter/enc-fx-nurse-triaged', status: 'triaged', source: 'encounter', why: 'participant (through his PractitionerRole) of a triaged stay' },
      { patient: 'pat-fx-nurse-onleave', via: 'Encounter/enc-fx-nurse-onleave', status: 'onleave', source: 'encounter', why: 'participant of a stay whose patient is on leave' },
      { patient: 'pat-fx-service', via: 'CareTeam/ct-fx-service', status: 'active', source: 'careteam', why: 'the participant is his service, Organization/org-cardio', assumes: 'service-teams' },
    ],
    mustNotSee: [
      { patient: 'pat-fx-direct', via: 'CareTeam/ct-fx-direct', status: 'active', why: "Dr Martin's team, without him" },
      { patient: 'pat-fx-nested', via: 'CareTeam/ct-fx-nested-outer', status: 'active', why: 'the nested team holds Dr Martin only' },
      { patient: 'pat-fx-enc-current', via: 'Encounter/enc-fx-inprogress', status: 'in-progress', why: 'stay attended by Dr Martin only' },
      { patient: 'pat-fx-ortho', via: 'CareTeam/ct-fx-ortho', status: 'active', why: 'orthopaedics team without him' },
    ],
  },
  surgeon: {
    persona: 'surgeon',
    reference: 'Practitioner/prat-girard',
    mustSee: [
      { patient: 'pat-fx-ortho', via: 'CareTeam/ct-fx-ortho', status: 'active', source: 'careteam', why: 'direct participant of an active orthopaedics team' },
    ],
    mustNotSee: [
      { patient: 'pat-dupont', via: 'CareTeam/ct-dupont', status: 'active', why: 'cardiology patient' },
      { patient: 'pat-fx-direct', via: 'CareTeam/ct-fx-direct', status: 'active', why: 'cardiology patient' },
      { patient: 'pat-fx-service', via: 'CareTeam/ct-fx-service', status: 'active', why: "cardiology's service-level team; he belongs to orthopaedics" },
    ],
  },
  colleague: {
    persona: 'colleague',
    reference: 'Practitioner/prat-lefevre',
    mustSee: [
      { patient: 'pat-fx-direct', via: 'CareTeam/ct-fx-direct', status: 'active', source: 'careteam', why: 'direct participant of an active cardiology team, beside Dr Martin' },
    ],
    mustNotSee: [
      {
        patient: 'pat-dupont',
        via: 'Consent/consent-dupont-opposition',
        status: 'active',
        why: 'member of her care team ct-dupont, but she opposed him (CSP L1110-4); Dr Martin, in the same team, still sees her',
      },
    ],
  },
  emergency: {
    persona: 'emergency',
    reference: 'Practitioner/prat-roux',
    mustSee: [
      { patient: 'pat-fx-er-1', via: 'Encounter/enc-fx-er-1', status: 'in-progress', source: 'encounter', why: 'attending an in-progress emergency stay' },
      { patient: 'pat-fx-er-2', via: 'Encounter/enc-fx-er-2', status: 'triaged', source: 'encounter', why: 'participant through PractitionerRole/role-roux-urg of a triaged emergency stay' },
    ],
    mustNotSee: [
      { patient: 'pat-dupont', via: 'CareTeam/ct-dupont', status: 'active', why: 'no relationship: only a break-the-glass grant would open it' },
      { patient: 'pat-fx-direct', via: 'CareTeam/ct-fx-direct', status: 'active', why: 'cardiology patient' },
    ],
  },
  patient: {
    persona: 'patient',
    reference: 'Patient/pat-dupont',
    mustSee: [{ patient: 'pat-dupont', via: 'Patient/pat-dupont', source: 'own-record', why: 'her own record' }],
    mustNotSee: [{ patient: 'pat-fx-direct', via: 'Patient/pat-fx-direct', why: "another patient's record" }],
  },
  mandated: {
    persona: 'mandated',
    reference: 'RelatedPerson/rp-dupont',
    mustSee: [
      { patient: 'pat-dupont', via: 'Consent/consent-dupont-mandate', status: 'active', source: 'mandate', why: 'written mandate from Louise Dupont, valid now' },
    ],
    mustNotSee: [
      { patient: 'pat-fx-mandate-expired', via: 'Consent/consent-fx-mandate-expired', status: 'active', why: 'mandate whose provision period ended 35 days ago (status still active)' },
    ],
  },
} as const satisfies Record<string, PersonaFixtures>;

// ---------------------------------------------------------------------------------------------
// Options and helpers
// ---------------------------------------------------------------------------------------------

export interface SeedOptions {
  /** PRNG seed (42). Same options ⇒ byte-identical resources. */
  seed?: number;
  /** Generated patients (2000); the fixture patients come on top. */
  patients?: number;
  /** Practitioners in total, the 8 personas included (50; at least 13). */
  practitioners?: number;
  /** Observations per generated patient (8). */
  observationsPerPatient?: number;
  /** The instant every period is relative to (default: now). */
  now?: number | Date;
}

export interface SeedStats {
  seed: number;
  now: string;
  resources: number;
  byType: Record<string, number>;
  /** Time to generate the resources. */
  buildMs: number;
  /** Time to load them (and build the hot indexes when the repository is a DemoRepository). */
  loadMs: number;
}

export const SEED_DEFAULTS = { seed: 42, patients: 2000, practitioners: 50, observationsPerPatient: 8 } as const;

const DAY = 86_400_000;
const HOUR = 3_600_000;

/**
 * How large a share of their service's patients the clinical personas care for: the care sets of a
 * ward (default hospital, seed 42, default policy: Dr Martin about 130 patients, the nurse and the
 * surgeon over 100, Dr Roux several hundred through emergency stays; docs/DEMO-HOSPITAL.md).
 */
const PERSONA_SHARE = {
  /** Cardiology stays Dr Martin attends. */
  martin: 0.62,
  /** Cardiology stays the ward nurse takes part in (through his PractitionerRole). */
  bernard: 0.6,
  /** Orthopaedics stays Dr Girard attends. */
  girard: 0.75,
  /** Emergency-service stays Dr Roux attends. */
  rouxStays: 0.7,
  /** Recent admissions of the other services that came through the emergency department. */
  throughEmergency: 0.6,
  /** Emergency passages Dr Roux attended (directly or through her PractitionerRole). */
  emergencyPassages: 0.7,
} as const;

/** mulberry32: small, fast, good enough for synthetic data. */
function mulberry32(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

class Rng {
  private readonly next: () => number;
  constructor(seed: number) {
    this.next = mulberry32(seed);
  }
  float(): number {
    return this.next();
  }
  int(lo: number, hi: number): number {
    return lo + Math.floor(this.next() * (hi - lo + 1));
  }
  chance(p: number): boolean {
    return this.next() < p;
  }
  pick<T>(items: readonly T[]): T {
    const item = items[Math.floor(this.next() * items.length)];
    if (item === undefined) throw new TypeError('pick from an empty list');
    return item;
  }
  weighted<T>(items: readonly (readonly [T, number])[]): T {
    const total = items.reduce((s, [, w]) => s + w, 0);
    let r = this.next() * total;
    for (const [item, w] of items) {
      r -= w;
      if (r < 0) return item;
    }
    return (items[items.length - 1] as readonly [T, number])[0];
  }
}

const pad = (n: number, width: number): string => String(n).padStart(width, '0');
/** ISO instant at second precision. */
const dt = (t: number): string => new Date(Math.floor(t / 1000) * 1000).toISOString().replace('.000Z', 'Z');
const day = (t: number): string => new Date(t).toISOString().slice(0, 10);
/** A reference usable wherever a typed `Reference<T>` is expected. */
type Ref = Reference<never>;
const ref = (type: string, id: string, display?: string): Ref =>
  display === undefined ? { reference: `${type}/${id}` } : { reference: `${type}/${id}`, display };
const narrative = (text: string): { status: 'generated'; div: string } => ({
  status: 'generated',
  div: `<div xmlns="${XHTML}"><p>${text.replaceAll('&', '&amp;').replaceAll('<', '&lt;')}</p></div>`,
});

/** Luhn check digit of a numeric string (the RPPS key). */
export function luhnKey(payload: string): string {
  let sum = 0;
  for (let i = 0; i < payload.length; i++) {
    let d = Number(payload[payload.length - 1 - i]);
    if (i % 2 === 0) {
      d *= 2;
      if (d > 9) d -= 9;
    }
    sum += d;
  }
  return String((10 - (sum % 10)) % 10);
}

/** True when an 11-digit RPPS carries a valid Luhn key. */
export function isValidRpps(rpps: string): boolean {
  return /^\d{11}$/.test(rpps) && luhnKey(rpps.slice(0, 10)) === rpps[10];
}

/** NIR key: 97 − (NIR mod 97), on two digits. */
export function nirKey(nir13: string): string {
  return pad(97 - Number(BigInt(nir13) % 97n), 2);
}

/** True when a 15-digit INS-NIR carries a valid key. */
export function isValidInsNir(value: string): boolean {
  return /^[12]\d{14}$/.test(value) && nirKey(value.slice(0, 13)) === value.slice(13);
}

// ---------------------------------------------------------------------------------------------
// Reference data
// ---------------------------------------------------------------------------------------------

const GIVEN_F = ['Marie', 'Camille', 'Léa', 'Manon', 'Chloé', 'Inès', 'Sarah', 'Jeanne', 'Alice', 'Louise', 'Juliette', 'Emma', 'Lucie', 'Anne', 'Catherine', 'Françoise', 'Monique', 'Nathalie', 'Isabelle', 'Sylvie', 'Martine', 'Christine', 'Hélène', 'Élodie', 'Zoé', 'Margaux', 'Agathe', 'Yasmine', 'Nadia', 'Fatima'] as const;
const GIVEN_M = ['Jean', 'Pierre', 'Michel', 'André', 'Philippe', 'Louis', 'Nicolas', 'Thomas', 'Lucas', 'Hugo', 'Théo', 'Antoine', 'Julien', 'François', 'Alain', 'Bernard', 'Jacques', 'Daniel', 'Éric', 'Christophe', 'Mathieu', 'Olivier', 'Sébastien', 'Karim', 'Mehdi', 'Yanis', 'Gabriel', 'Arthur', 'Raphaël', 'Noé'] as const;
const FAMILY = ['DURAND', 'LEFEBVRE', 'MOREL', 'LAURENT', 'SIMON', 'MICHEL', 'GARCIA', 'DAVID', 'BERTRAND', 'THOMAS', 'ROBERT', 'RICHARD', 'PETIT', 'DUBOIS', 'LAMBERT', 'BONNET', 'FRANCOIS', 'MARTINEZ', 'LEGRAND', 'GARNIER', 'FAURE', 'ROUSSEAU', 'BLANC', 'GUERIN', 'MULLER', 'HENRY', 'ROUSSEL', 'NICOLAS', 'PERRIN', 'MORIN', 'MATHIEU', 'CLEMENT', 'GAUTHIER', 'DUMONT', 'LOPEZ', 'FONTAINE', 'CHEVALIER', 'ROBIN', 'MASSON', 'SANCHEZ', 'BOYER', 'DENIS', 'LEMAIRE', 'DUFOUR', 'MEUNIER', 'BRUN', 'BLANCHARD', 'GIRAUD', 'JOLY', 'RIVIERE', 'LUCAS', 'BRUNET', 'GAILLARD', 'BARBIER', 'ARNAUD', 'MARCHAND', 'BENALI', 'NGUYEN', 'HADDAD', 'TRAORE'] as const;
const CITIES = [
  { city: 'Paris', dept: '75', postal: '75011', commune: '111' },
  { city: 'Lyon', dept: '69', postal: '69003', commune: '383' },
  { city: 'Marseille', dept: '13', postal: '13005', commune: '055' },
  { city: 'Toulouse', dept: '31', postal: '31000', commune: '555' },
  { city: 'Bordeaux', dept: '33', postal: '33000', commune: '063' },
  { city: 'Lille', dept: '59', postal: '59000', commune: '350' },
  { city: 'Nantes', dept: '44', postal: '44000', commune: '109' },
  { city: 'Strasbourg', dept: '67', postal: '67000', commune: '482' },
  { city: 'Rennes', dept: '35', postal: '35000', commune: '238' },
  { city: 'Montpellier', dept: '34', postal: '34000', commune: '172' },
] as const;
const STREETS = ['rue de la République', 'avenue Jean Jaurès', 'rue Victor Hugo', 'boulevard Pasteur', 'rue des Lilas', 'place de la Mairie', 'chemin des Vignes', 'rue du Moulin', 'allée des Tilleuls', 'rue Gambetta'] as const;

interface CodeDef {
  readonly code: string;
  readonly display: string;
}
const CONDITIONS: Record<ClinicalService, readonly CodeDef[]> = {
  cardiology: [
    { code: 'I10', display: 'Hypertension essentielle' },
    { code: 'I48.9', display: 'Fibrillation auriculaire, sans précision' },
    { code: 'I50.9', display: 'Insuffisance cardiaque, sans précision' },
    { code: 'I21.9', display: 'Infarctus aigu du myocarde, sans précision' },
    { code: 'I25.1', display: 'Cardiopathie artérioscléreuse' },
  ],
  orthopaedics: [
    { code: 'S72.0', display: 'Fracture du col du fémur' },
    { code: 'M16.9', display: 'Coxarthrose, sans précision' },
    { code: 'M17.9', display: 'Gonarthrose, sans précision' },
    { code: 'S82.8', display: "Fractures d'autres parties de la jambe" },
  ],
  emergency: [
    { code: 'R07.4', display: 'Douleur thoracique, sans précision' },
    { code: 'S06.0', display: 'Commotion cérébrale' },
    { code: 'J18.9', display: 'Pneumopathie, sans précision' },
    { code: 'T78.4', display: 'Allergie, sans précision' },
  ],
  geriatrics: [
    { code: 'F03', display: 'Démence, sans précision' },
    { code: 'R29.6', display: 'Chutes à répétition' },
    { code: 'E86', display: 'Hypovolémie (déshydratation)' },
    { code: 'N39.0', display: 'Infection des voies urinaires, siège non précisé' },
  ],
  neurology: [
    { code: 'I63.9', display: 'Infarctus cérébral, sans précision' },
    { code: 'G40.9', display: 'Épilepsie, sans précision' },
    { code: 'G35', display: 'Sclérose en plaques' },
    { code: 'G20', display: 'Maladie de Parkinson' },
  ],
};
/** Conditions under reinforced secrecy, given to a few patients whatever their service. */
const SENSITIVE: readonly CodeDef[] = [
  { code: 'B20', display: 'Maladie due au virus de l’immunodéficience humaine [VIH]' },
  { code: 'F32.9', display: 'Épisode dépressif, sans précision' },
  { code: 'F10.2', display: "Troubles mentaux liés à l'utilisation d'alcool : syndrome de dépendance" },
];
const MEDICATIONS: Record<ClinicalService, readonly CodeDef[]> = {
  cardiology: [
    { code: 'C07AB07', display: 'Bisoprolol' },
    { code: 'B01AF01', display: 'Rivaroxaban' },
    { code: 'C09AA05', display: 'Ramipril' },
    { code: 'C10AA05', display: 'Atorvastatine' },
  ],
  orthopaedics: [
    { code: 'N02BE01', display: 'Paracétamol' },
    { code: 'B01AB05', display: 'Énoxaparine' },
    { code: 'M01AE01', display: 'Ibuprofène' },
  ],
  emergency: [
    { code: 'N02BE01', display: 'Paracétamol' },
    { code: 'J01CA04', display: 'Amoxicilline' },
  ],
  geriatrics: [
    { code: 'N06DA02', display: 'Donépézil' },
    { code: 'A11CC05', display: 'Colécalciférol' },
  ],
  neurology: [
    { code: 'N03AX14', display: 'Lévétiracétam' },
    { code: 'N04BA02', display: 'Lévodopa et inhibiteur de la décarboxylase' },
  ],
};
const VITALS = [
  { code: '8867-4', display: 'Heart rate', unit: '/min', lo: 50, hi: 120, cat: 'vital-signs' },
  { code: '8480-6', display: 'Systolic blood pressure', unit: 'mm[Hg]', lo: 95, hi: 175, cat: 'vital-signs' },
  { code: '8462-4', display: 'Diastolic blood pressure', unit: 'mm[Hg]', lo: 55, hi: 105, cat: 'vital-signs' },
  { code: '8310-5', display: 'Body temperature', unit: 'Cel', lo: 36, hi: 39.5, cat: 'vital-signs' },
  { code: '29463-7', display: 'Body weight', unit: 'kg', lo: 45, hi: 110, cat: 'vital-signs' },
  { code: '2160-0', display: 'Creatinine [Mass/volume] in Serum or Plasma', unit: 'mg/L', lo: 5, hi: 20, cat: 'laboratory' },
  { code: '2823-3', display: 'Potassium [Moles/volume] in Serum or Plasma', unit: 'mmol/L', lo: 3.2, hi: 5.6, cat: 'laboratory' },
  { code: '4548-4', display: 'Hemoglobin A1c/Hemoglobin.total in Blood', unit: '%', lo: 4.8, hi: 9.5, cat: 'laboratory' },
  { code: '2339-0', display: 'Glucose [Mass/volume] in Blood', unit: 'g/L', lo: 0.7, hi: 2.2, cat: 'laboratory' },
] as const;

// ---------------------------------------------------------------------------------------------
// The builder
// ---------------------------------------------------------------------------------------------

interface Staff {
  id: string;
  role: string;
  service: ServiceKey;
  physician: boolean;
}

interface PatientInfo {
  id: string;
  display: string;
  given: string;
  family: string;
  birthDate: string;
  ins: string;
}

type EncounterStatus = Encounter['status'];

class HospitalBuilder {
  readonly out: Resource[] = [];
  private readonly rng: Rng;
  /**
   * The draws that give the personas their realistic care sets (emergency passages, Dr Roux's
   * stays) come from a stream of their own: the rest of the hospital stays what the main stream
   * made it, resource for resource.
   */
  private readonly careRng: Rng;
  private readonly now: number;
  private readonly counters = new Map<string, number>();
  private readonly usedIns = new Set<string>();
  private ippSeq = 0;
  private staySeq = 0;
  private passageSeq = 0;
  /** Generated clinical staff per service (personas excluded). */
  private readonly staff = new Map<ServiceKey, { physicians: Staff[]; nurses: Staff[] }>();

  constructor(private readonly opts: Required<Omit<SeedOptions, 'now'>> & { now: number }) {
    this.rng = new Rng(opts.seed);
    this.careRng = new Rng(opts.seed + 0x9e3779b9);
    this.now = opts.now;
  }

  private nextId(prefix: string, width = 6): string {
    const n = (this.counters.get(prefix) ?? 0) + 1;
    this.counters.set(prefix, n);
    return `${prefix}-${pad(n, width)}`;
  }

  private push<T extends Resource>(r: T): T {
    this.out.push(r);
    return r;
  }

  build(): Resource[] {
    this.organizations();
    this.personas();
    this.generatedStaff();
    this.fixtures();
    for (let i = 1; i <= this.opts.patients; i++) {
      this.generatedPatient(`pat-${pad(i, 5)}`);
    }
    this.lateFixtures();
    // Last, and without the random generator: the generated hospital does not move when they change.
    this.out.push(...patientRightsFixtures(this.now));
    return this.out;
  }

  // --- organisations and staff --------------------------------------------------------------

  private organizations(): void {
    this.push<Organization>({
      resourceType: 'Organization',
      id: DEMO_ORGANIZATIONS.establishment,
      active: true,
      identifier: [
        { use: 'official', type: { coding: [{ system: FR_CORE_ID_TYPE, code: 'FINEG' }] }, system: FINESS_SYSTEM, value: DEMO_FINESS },
        { use: 'official', type: { coding: [{ system: FR_CORE_ID_TYPE, code: 'IDNST' }] }, system: IDNST_SYSTEM, value: `1${DEMO_FINESS}` },
      ],
      type: [{ coding: [{ system: 'http://terminology.hl7.org/CodeSystem/organization-type', code: 'prov', display: 'Healthcare Provider' }] }],
      name: 'CHU Demo',
      telecom: [{ system: 'phone', value: '+33 1 99 00 00 00', use: 'work' }],
      address: [{ line: ['1 place de l’Hôpital'], city: 'Paris', postalCode: '75013', country: 'FR' }],
    });
    for (const [key, info] of Object.entries(SERVICE_INFO) as [ServiceKey, (typeof SERVICE_INFO)[ServiceKey]][]) {
      this.push<Organization>({
        resourceType: 'Organization',
        id: DEMO_ORGANIZATIONS[key],
        active: true,
        identifier: [{ system: UF_SYSTEM, value: info.uf }],
        type: [{ coding: [{ system: 'http://terminology.hl7.org/CodeSystem/organization-type', code: 'dept', display: 'Hospital Department' }] }],
        name: info.name,
        partOf: ref('Organization', DEMO_ORGANIZATIONS.establishment, 'CHU Demo'),
      });
    }
  }

  private practitioner(p: {
    id: string;
    given: string;
    family: string;
    rpps?: string;
    staffId?: string;
    profession?: { code: string; label: string };
  }): void {
    const identifier: Identifier[] = [];
    if (p.rpps) {
      identifier.push(
        { use: 'official', type: { coding: [{ system: FR_CORE_ID_TYPE, code: 'IDNPS' }] }, system: IDNPS_SYSTEM, value: `8${p.rpps}` },
        { use: 'official', type: { coding: [{ system: FR_CORE_ID_TYPE, code: 'RPPS' }] }, system: RPPS_SYSTEM, value: p.rpps },
      );
    }
    if (p.staffId) {
      identifier.push({ use: 'official', system: STAFF_ID_SYSTEM, value: p.staffId });
    }
    const email = `${p.given}.${p.family}`.normalize('NFD').replace(/\p{M}/gu, '').toLowerCase().replace(/[^a-z.]/g, '');
    this.push<Practitioner>({
      resourceType: 'Practitioner',
      id: p.id,
      active: true,
      identifier,
      name: [{ use: 'official', family: p.family, given: [p.given] }],
      telecom: [{ system: 'email', value: `${email}@chu-demo.example`, use: 'work' }],
      ...(p.profession
        ? { qualification: [{ code: { coding: [{ system: TRE_G15_SYSTEM, code: p.profession.code, display: p.profession.label }] } }] }
        : {}),
    });
  }

  private role(id: string, practitioner: string, service: ServiceKey, code: RoleCode, active = true, start = '2015-01-01', end?: string): void {
    this.push<PractitionerRole>({
      resourceType: 'PractitionerRole',
      id,
      active,
      period: end ? { start, end } : { start },
      practitioner: ref('Practitioner', practitioner),
      organization: ref('Organization', DEMO_ORGANIZATIONS[service]),
      code: [{ coding: [{ system: ROLE_CODE_SYSTEM, code, display: code }] }],
    });
  }

  private personas(): void {
    for (const persona of Object.values(PERSONAS)) {
      if (persona.kind !== 'practitioner' || 'seededLate' in persona) continue;
      this.practitioner({
        id: persona.id,
        given: persona.given,
        family: persona.family,
        ...('rpps' in persona ? { rpps: persona.rpps } : {}),
        ...('staffId' in persona ? { staffId: persona.staffId } : {}),
        ...('profession' in persona ? { profession: persona.profession } : {}),
      });
    }
    this.role('role-martin-cardio', 'prat-martin', 'cardiology', 'clinician');
    this.role('role-martin-urg-old', 'prat-martin', 'emergency', 'clinician', false, '2010-11-01', '2014-12-31');
    this.role('role-bernard-cardio', 'prat-bernard', 'cardiology', 'clinician');
    this.role('role-lefevre-cardio', 'prat-lefevre', 'cardiology', 'clinician');
    this.role('role-roux-urg', 'prat-roux', 'emergency', 'clinician');
    this.role('role-girard-ortho', 'prat-girard', 'orthopaedics', 'clinician');
    this.role('role-leroy-dim', 'prat-leroy', 'dim', 'dim');
    this.role('role-petit-admission', 'prat-petit', 'admission', 'admission');
    this.role('role-moreau-coder', 'prat-moreau', 'dim', 'coder', true, day(this.now - 90 * DAY));
    this.role('role-fournier-direction', 'prat-fournier', 'direction', 'director');
  }

  private generatedStaff(): void {
    const personaCount = Object.values(PERSONAS).filter((p) => p.kind === 'practitioner' && !('seededLate' in p)).length;
    const n = Math.max(CLINICAL.length, this.opts.practitioners - personaCount);
    // Physicians of each clinical service first, so that small hospitals still staff every service.
    const slots: { service: ServiceKey; profession?: { code: string; label: string }; role: RoleCode; staffPrefix?: string }[] = [
      ...CLINICAL.map((service) => ({ service, profession: { code: '10', label: 'Médecin' }, role: 'clinician' as const })),
      ...CLINICAL.map((service) => ({ service, profession: { code: '60', label: 'Infirmier' }, role: 'clinician' as const })),
      { service: 'orthopaedics', profession: { code: '70', label: 'Masseur-Kinésithérapeute' }, role: 'clinician' },
      { service: 'geriatrics', profession: { code: '21', label: 'Pharmacien' }, role: 'clinician' },
      { service: 'admission', role: 'admission', staffPrefix: 'ADM' },
      { service: 'dim', role: 'dim', staffPrefix: 'TIM' },
    ];
    for (const service of CLINICAL) this.staff.set(service, { physicians: [], nurses: [] });
    for (let i = 0; i < n; i++) {
      const slot = slots[i % slots.length] as (typeof slots)[number];
      const female = this.rng.chance(0.55);
      const given = this.rng.pick(female ? GIVEN_F : GIVEN_M);
      const family = this.rng.pick(FAMILY);
      const id = `prat-g${pad(i + 1, 3)}`;
      const rpps = slot.profession ? `997${pad(1000 + i, 7)}` : undefined;
      this.practitioner({
        id,
        given,
        family,
        ...(rpps ? { rpps: rpps + luhnKey(rpps) } : {}),
        ...(slot.staffPrefix ? { staffId: `${slot.staffPrefix}-${pad(i + 1, 4)}` } : {}),
        ...(slot.profession ? { profession: slot.profession } : {}),
      });
      const roleId = `role-g${pad(i + 1, 3)}`;
      this.role(roleId, id, slot.service, slot.role, true, day(this.now - this.rng.int(200, 4000) * DAY));
      if (i % 7 === 3) {
        // A former assignment, inactive, in another service.
        const other = CLINICAL[(CLINICAL.indexOf(slot.service as ClinicalService) + 1) % CLINICAL.length] ?? 'geriatrics';
        this.role(`role-g${pad(i + 1, 3)}-old`, id, other, slot.role, false, '2012-01-01', '2016-06-30');
      }
      const pool = this.staff.get(slot.service);
      if (pool && slot.profession) {
        (slot.profession.code === '10' ? pool.physicians : pool.nurses).push({
          id,
          role: roleId,
          service: slot.service,
          physician: slot.profession.code === '10',
        });
      }
    }
  }

  // --- patients -----------------------------------------------------------------------------

  private patient(
    id: string,
    p?: { given: string; family: string; gender: 'female' | 'male'; birthDate: string; cityIndex?: number },
  ): PatientInfo {
    const gender = p?.gender ?? (this.rng.chance(0.52) ? 'female' : 'male');
    const given = p?.given ?? this.rng.pick(gender === 'female' ? GIVEN_F : GIVEN_M);
    const family = p?.family ?? this.rng.pick(FAMILY);
    const birthDate =
      p?.birthDate ?? day(Date.UTC(this.rng.int(1930, 2022), this.rng.int(0, 11), this.rng.int(1, 28)));
    const place = CITIES[p?.cityIndex ?? this.rng.int(0, CITIES.length - 1)] ?? CITIES[0];
    let ins = '';
    do {
      const nir13 = `${gender === 'male' ? 1 : 2}${birthDate.slice(2, 4)}${birthDate.slice(5, 7)}${place.dept}${place.commune}${pad(this.rng.int(1, 999), 3)}`;
      ins = nir13 + nirKey(nir13);
    } while (this.usedIns.has(ins));
    this.usedIns.add(ins);
    const ipp = `8${pad(100000 + ++this.ippSeq, 7)}`;
    const phone = `+33 6 ${pad(this.rng.int(0, 99), 2)} ${pad(this.rng.int(0, 99), 2)} ${pad(this.rng.int(0, 99), 2)} ${pad(this.rng.int(0, 99), 2)}`;
    const mail = `${given}.${family}`.normalize('NFD').replace(/\p{M}/gu, '').toLowerCase().replace(/[^a-z.]/g, '');
    this.push<Patient>({
      resourceType: 'Patient',
      id,
      identifier: [
        {
          use: 'official',
          type: { coding: [{ system: FR_CORE_ID_TYPE, code: 'INS-NIR-TEST' }] },
          system: INS_NIR_TEST_SYSTEM,
          value: ins,
        },
        { use: 'usual', type: { coding: [{ system: V2_0203, code: 'PI' }] }, system: IPP_SYSTEM, value: ipp },
      ],
      active: true,
      name: [{ use: 'official', family, given: [given] }],
      telecom: [
        { system: 'phone', value: phone, use: 'mobile' },
        { system: 'email', value: `${mail}@exemple.fr`, use: 'home' },
      ],
      gender,
      birthDate,
      address: [
        {
          use: 'home',
          line: [`${this.rng.int(1, 120)} ${this.rng.pick(STREETS)}`],
          city: place.city,
          postalCode: place.postal,
          country: 'FR',
        },
      ],
      managingOrganization: ref('Organization', DEMO_ORGANIZATIONS.establishment),
    });
    return { id, display: `${given} ${family}`, given, family, birthDate, ins };
  }

  private encounter(
    patient: PatientInfo,
    service: ClinicalService,
    status: EncounterStatus,
    period: { start?: number; end?: number },
    participants: readonly { ref: Ref; type?: string; period?: { start?: number; end?: number } }[],
    id = this.nextId('enc'),
    draw: { rng?: Rng; stayNumber?: string } = {},
  ): string {
    const rng = draw.rng ?? this.rng;
    const start = period.start ?? this.now;
    const participant: EncounterParticipant[] = participants.map((p) => ({
      type: [{ coding: [{ system: PARTICIPATION, code: p.type ?? 'ATND' }] }],
      individual: p.ref,
      ...(p.period
        ? { period: { ...(p.period.start !== undefined ? { start: dt(p.period.start) } : {}), ...(p.period.end !== undefined ? { end: dt(p.period.end) } : {}) } }
        : {}),
    }));
    const withDisplay = rng.chance(0.3);
    const stayNumber = draw.stayNumber ?? `${new Date(start).getUTCFullYear()}${pad(++this.staySeq, 6)}`;
    this.push<Encounter>({
      resourceType: 'Encounter',
      id,
      identifier: [{ use: 'official', system: STAY_SYSTEM, value: stayNumber }],
      status,
      class: service === 'emergency'
        ? { system: ACT_CODE, code: 'EMER', display: 'emergency' }
        : rng.chance(0.75)
          ? { system: ACT_CODE, code: 'IMP', display: 'inpatient encounter' }
          : { system: ACT_CODE, code: 'AMB', display: 'ambulatory' },
      subject: ref('Patient', patient.id, withDisplay ? patient.display : undefined),
      participant,
      period: { start: dt(start), ...(period.end !== undefined ? { end: dt(period.end) } : {}) },
      serviceProvider: ref('Organization', DEMO_ORGANIZATIONS[service]),
      ...(withDisplay ? { text: narrative(`Séjour de ${patient.display} en ${SERVICE_INFO[service].label}.`) } : {}),
    });
    return id;
  }

  private careTeam(
    patient: PatientInfo | undefined,
    service: ClinicalService | undefined,
    status: CareTeam['status'],
    period: { start?: number; end?: number } | undefined,
    members: readonly { member: Ref; period?: { start?: number; end?: number } }[],
    extra: Partial<CareTeam> = {},
    id = this.nextId('ct'),
  ): string {
    const participant: CareTeamParticipant[] = members.map((m) => ({
      role: [{ coding: [{ system: 'http://snomed.info/sct', code: m.member.reference?.startsWith('Organization/') ? '394730007' : '223366009', display: m.member.reference?.startsWith('Organization/') ? 'Healthcare related organization' : 'Healthcare professional' }] }],
      member: m.member,
      ...(m.period
        ? { period: { ...(m.period.start !== undefined ? { start: dt(m.period.start) } : {}), ...(m.period.end !== undefined ? { end: dt(m.period.end) } : {}) } }
        : {}),
    }));
    this.push<CareTeam>({
      resourceType: 'CareTeam',
      id,
      status,
      name: service ? `Équipe de soins ${SERVICE_INFO[service].label}` : 'Équipe de soins',
      ...(patient ? { subject: ref('Patient', patient.id) } : {}),
      ...(period
        ? { period: { ...(period.start !== undefined ? { start: dt(period.start) } : {}), ...(period.end !== undefined ? { end: dt(period.end) } : {}) } }
        : {}),
      participant,
      ...(service ? { managingOrganization: [ref('Organization', DEMO_ORGANIZATIONS[service])] } : {}),
      ...extra,
    });
    return id;
  }

  /** Observations, conditions, prescriptions, a document with its Binary and Provenance. */
  private clinical(
    patient: PatientInfo,
    service: ClinicalService,
    encounterId: string | undefined,
    author: string,
    around: number,
    observations: number,
  ): void {
    const encounter = encounterId ? { encounter: ref('Encounter', encounterId) } : {};
    const subject = (): Ref => ref('Patient', patient.id, this.rng.chance(0.2) ? patient.display : undefined);
    for (let i = 0; i < observations; i++) {
      const v = this.rng.pick(VITALS);
      const t = around - this.rng.int(0, 72) * HOUR;
      const value = Math.round((v.lo + this.rng.float() * (v.hi - v.lo)) * 10) / 10;
      this.push<Observation>({
        resourceType: 'Observation',
        id: this.nextId('obs', 7),
        status: 'final',
        category: [{ coding: [{ system: 'http://terminology.hl7.org/CodeSystem/observation-category', code: v.cat }] }],
        code: { coding: [{ system: LOINC, code: v.code, display: v.display }] },
        subject: subject(),
        ...encounter,
        effectiveDateTime: dt(t),
        issued: dt(t + HOUR),
        performer: [ref('Practitioner', author)],
        valueQuantity: { value, unit: v.unit, system: UCUM, code: v.unit },
      });
    }
    const conditions = [this.rng.pick(CONDITIONS[service])];
    if (this.rng.chance(0.06)) conditions.push(this.rng.pick(SENSITIVE));
    for (const c of conditions) {
      const withText = this.rng.chance(0.35);
      this.push<Condition>({
        resourceType: 'Condition',
        id: this.nextId('cond'),
        clinicalStatus: { coding: [{ system: 'http://terminology.hl7.org/CodeSystem/condition-clinical', code: this.rng.chance(0.7) ? 'active' : 'resolved' }] },
        verificationStatus: { coding: [{ system: 'http://terminology.hl7.org/CodeSystem/condition-ver-status', code: 'confirmed' }] },
        category: [{ coding: [{ system: 'http://terminology.hl7.org/CodeSystem/condition-category', code: 'encounter-diagnosis' }] }],
        code: { coding: [{ system: ICD10, code: c.code, display: c.display }], text: c.display },
        subject: subject(),
        ...encounter,
        onsetDateTime: dt(around - this.rng.int(1, 400) * DAY),
        recordedDate: dt(around),
        recorder: ref('Practitioner', author),
        ...(withText ? { text: narrative(`${c.display} chez ${patient.display}, né(e) le ${patient.birthDate}.`) } : {}),
      });
    }
    const meds = this.rng.int(1, 2);
    for (let i = 0; i < meds; i++) {
      const m = this.rng.pick(MEDICATIONS[service]);
      const contained = this.rng.chance(0.3);
      this.push<MedicationRequest>({
        resourceType: 'MedicationRequest',
        id: this.nextId('medreq'),
        status: this.rng.chance(0.6) ? 'active' : 'completed',
        intent: 'order',
        ...(contained
          ? {
              contained: [{ resourceType: 'Medication', id: 'med', code: { coding: [{ system: ATC, code: m.code, display: m.display }] } }],
              medicationReference: { reference: '#med' },
            }
          : { medicationCodeableConcept: { coding: [{ system: ATC, code: m.code, display: m.display }] } }),
        subject: subject(),
        ...encounter,
        authoredOn: dt(around - this.rng.int(0, 48) * HOUR),
        requester: ref('Practitioner', author),
        dosageInstruction: [{ text: `${m.display} : selon prescription` }],
      });
    }
    if (this.rng.chance(0.6)) {
      const docId = this.nextId('doc');
      const binId = this.nextId('bin');
      const text =
        `Compte rendu - ${SERVICE_INFO[service].name}\n` +
        `Patient(e) : ${patient.display}, né(e) le ${patient.birthDate}, INS ${patient.ins}\n` +
        `Diagnostic principal : ${conditions[0]?.display ?? ''}\n`;
      const data = Buffer.from(text, 'utf8');
      const when = dt(around);
      this.push<Binary>({
        resourceType: 'Binary',
        id: binId,
        contentType: 'text/plain',
        securityContext: this.rng.chance(0.5) ? ref('Patient', patient.id) : ref('DocumentReference', docId),
        data: data.toString('base64'),
      });
      this.push<DocumentReference>({
        resourceType: 'DocumentReference',
        id: docId,
        status: 'current',
        docStatus: 'final',
        type: { coding: [{ system: LOINC, code: '11490-0', display: 'Physician Discharge summary' }] },
        subject: ref('Patient', patient.id, this.rng.chance(0.3) ? patient.display : undefined),
        date: when,
        author: [ref('Practitioner', author)],
        custodian: ref('Organization', DEMO_ORGANIZATIONS.establishment),
        description: `Compte rendu de ${SERVICE_INFO[service].label}`,
        content: [
          {
            attachment: {
              contentType: 'text/plain',
              language: 'fr-FR',
              url: `Binary/${binId}`,
              size: data.length,
              title: `Compte rendu ${SERVICE_INFO[service].label}`,
              creation: when,
            },
          },
        ],
        ...(encounterId ? { context: { encounter: [ref('Encounter', encounterId)] } } : {}),
      });
      this.push<Provenance>({
        resourceType: 'Provenance',
        id: this.nextId('prov'),
        target: [ref('DocumentReference', docId), ref('Binary', binId)],
        recorded: when,
        activity: { coding: [{ system: 'http://terminology.hl7.org/CodeSystem/v3-DataOperation', code: 'CREATE' }] },
        agent: [
          {
            type: { coding: [{ system: 'http://terminology.hl7.org/CodeSystem/provenance-participant-type', code: 'author' }] },
            who: ref('Practitioner', author),
            onBehalfOf: ref('Organization', DEMO_ORGANIZATIONS[service]),
          },
        ],
      });
    }
  }

  private pickStaff(service: ClinicalService, physician: boolean, rng: Rng = this.rng): Staff {
    const pool = this.staff.get(service);
    const list = physician ? pool?.physicians : pool?.nurses;
    if (list && list.length > 0) return rng.pick(list);
    const fallback = pool?.physicians ?? [];
    return rng.pick(fallback.length > 0 ? fallback : [...this.staff.values()].flatMap((p) => p.physicians));
  }

  /**
   * The emergency department passage that preceded an admission (most admissions begin there): a
   * finished emergency stay of a few hours ending when the admission began, attended by Dr Roux
   * or another emergency physician, often with an emergency nurse. Drawn from `careRng`.
   */
  private emergencyPassage(patient: PatientInfo, admission: number): void {
    const start = admission - this.careRng.int(2, 10) * HOUR;
    const roux = this.careRng.chance(PERSONA_SHARE.emergencyPassages);
    const physician = roux
      ? this.careRng.chance(0.5)
        ? ref('Practitioner', 'prat-roux')
        : ref('PractitionerRole', 'role-roux-urg')
      : ref('Practitioner', this.pickStaff('emergency', true, this.careRng).id);
    const nurse = this.careRng.chance(0.6) ? [{ ref: ref('PractitionerRole', this.pickStaff('emergency', false, this.careRng).role), type: 'PART' }] : [];
    this.encounter(patient, 'emergency', 'finished', { start, end: admission }, [{ ref: physician }, ...nurse], this.nextId('enc-er'), {
      rng: this.careRng,
      stayNumber: `${new Date(start).getUTCFullYear()}U${pad(++this.passageSeq, 5)}`,
    });
  }

  private generatedPatient(id: string): void {
    const service = this.rng.weighted<ClinicalService>([
      ['cardiology', 25],
      ['orthopaedics', 20],
      ['emergency', 20],
      ['geriatrics', 20],
      ['neurology', 15],
    ]);
    const patient = this.patient(id);
    // The personas take part in a share of their own service's care only (never elsewhere), large
    // enough to give them the care sets of a ward (PERSONA_SHARE). The main stream draws exactly as
    // it did with smaller shares; Dr Roux's draws come from careRng.
    let physician: Ref = ref('Practitioner', this.pickStaff(service, true).id);
    let nurse: Ref = this.rng.chance(0.5)
      ? ref('PractitionerRole', this.pickStaff(service, false).role)
      : ref('Practitioner', this.pickStaff(service, false).id);
    if (service === 'cardiology' && this.rng.chance(PERSONA_SHARE.martin)) physician = ref('Practitioner', 'prat-martin');
    const bernard = service === 'cardiology' && this.rng.chance(PERSONA_SHARE.bernard);
    if (bernard) nurse = ref('PractitionerRole', 'role-bernard-cardio');
    if (service === 'orthopaedics' && this.rng.chance(PERSONA_SHARE.girard)) physician = ref('Practitioner', 'prat-girard');
    if (service === 'emergency' && this.careRng.chance(PERSONA_SHARE.rouxStays)) physician = ref('Practitioner', 'prat-roux');
    const author = physician.reference?.split('/')[1] ?? 'prat-g001';

    const status = this.rng.weighted<string>([
      ['in-progress', 12],
      ['arrived', 3],
      ['triaged', 3],
      ['onleave', 2],
      ['finished-yesterday', 6],
      ['finished-recent', 10],
      ['finished-old', 52],
      ['finished-noend', 2],
      ['planned', 6],
      ['cancelled', 4],
    ]);
    let start: number;
    let end: number | undefined;
    let encStatus: EncounterStatus;
    switch (status) {
      case 'in-progress':
        start = this.now - this.rng.int(1, 240) * HOUR;
        encStatus = 'in-progress';
        break;
      case 'arrived':
        start = this.now - this.rng.int(10, 180) * 60_000;
        encStatus = 'arrived';
        break;
      case 'triaged':
        start = this.now - this.rng.int(30, 360) * 60_000;
        encStatus = 'triaged';
        break;
      case 'onleave':
        start = this.now - this.rng.int(3, 20) * DAY;
        encStatus = 'onleave';
        break;
      case 'finished-yesterday':
        end = this.now - DAY - this.rng.int(0, 10) * HOUR;
        start = end - this.rng.int(1, 10) * DAY;
        encStatus = 'finished';
        break;
      case 'finished-recent':
        end = this.now - this.rng.int(2, 10) * DAY;
        start = end - this.rng.int(1, 12) * DAY;
        encStatus = 'finished';
        break;
      case 'finished-noend':
        start = this.now - this.rng.int(200, 2000) * DAY;
        encStatus = 'finished';
        break;
      case 'planned':
        start = this.now + this.rng.int(1, 30) * DAY;
        encStatus = 'planned';
        break;
      case 'cancelled':
        start = this.now + this.rng.int(-60, 30) * DAY;
        encStatus = 'cancelled';
        break;
      default:
        end = this.now - this.rng.int(60, 3000) * DAY;
        start = end - this.rng.int(1, 15) * DAY;
        encStatus = 'finished';
    }
    // An older stay for a third of the patients.
    if (this.rng.chance(0.33)) {
      const oldEnd = Math.min(start, this.now) - this.rng.int(100, 3000) * DAY;
      const oldService = this.rng.chance(0.7) ? service : this.rng.pick(CLINICAL);
      this.encounter(patient, oldService, 'finished', { start: oldEnd - this.rng.int(1, 10) * DAY, end: oldEnd }, [
        { ref: ref('Practitioner', this.pickStaff(oldService, true).id) },
      ]);
    }
    // The ward nurse is on every stay he was drawn for (the draw of the main stream is made all the same).
    const participants = [{ ref: physician }, ...(service === 'emergency' || this.rng.chance(0.7) || bernard ? [{ ref: nurse, type: 'PART' }] : [])];
    const encounterId = this.encounter(patient, service, encStatus, { start, ...(end !== undefined ? { end } : {}) }, participants);

    const current = ['in-progress', 'arrived', 'triaged', 'onleave'].includes(status);
    // Admissions of the last weeks often came through the emergency department.
    const recentAdmission = current || status === 'finished-yesterday' || status === 'finished-recent';
    if (service !== 'emergency' && recentAdmission && this.careRng.chance(PERSONA_SHARE.throughEmergency)) {
      this.emergencyPassage(patient, start);
    }
    // Some participants carry their own period (covering the team's), some teams none at all.
    const members = participants.map((p) => (this.rng.chance(0.2) ? { member: p.ref, period: { start } } : { member: p.ref }));
    if (current && service !== 'emergency') {
      const period = this.rng.chance(0.15) ? undefined : { start };
      this.careTeam(patient, service, this.rng.chance(0.97) ? 'active' : 'entered-in-error', period, members, {
        encounter: ref('Encounter', encounterId),
      });
    } else if (status.startsWith('finished') && this.rng.chance(0.6)) {
      const recent = status === 'finished-yesterday' || status === 'finished-recent';
      this.careTeam(
        patient,
        service,
        recent && this.rng.chance(0.5) ? 'active' : 'inactive',
        { start, end: end ?? start + 5 * DAY },
        members,
      );
    } else if (status === 'planned' && this.rng.chance(0.5)) {
      this.careTeam(patient, service, 'proposed', { start }, members);
    }
    const around = Math.min(this.now, end ?? this.now, Math.max(start, this.now - 400 * DAY));
    const clinicalEncounter = status === 'planned' || status === 'cancelled' ? undefined : encounterId;
    this.clinical(patient, service, clinicalEncounter, author, around, this.opts.observationsPerPatient);
  }

  // --- fixtures -----------------------------------------------------------------------------

  private fixtures(): void {
    const now = this.now;
    const martin = ref('Practitioner', 'prat-martin');
    const martinRole = ref('PractitionerRole', 'role-martin-cardio');
    const bernardRole = ref('PractitionerRole', 'role-bernard-cardio');
    const colleague = (): Ref => ref('Practitioner', this.pickStaff('cardiology', true).id);
    const fx = (id: string, given: string, family: string, gender: 'female' | 'male', birthDate: string): PatientInfo =>
      this.patient(id, { given, family, gender, birthDate });
    const clinical = (p: PatientInfo, service: ClinicalService, enc: string | undefined, author: string, at = now - DAY): void =>
      this.clinical(p, service, enc, author, at, 3);

    // Louise Dupont, her mandated husband and his mandate.
    const dupont = this.patient('pat-dupont', { given: 'Louise', family: 'DUPONT', gender: 'female', birthDate: '1958-04-12', cityIndex: 0 });
    // Dr Lefevre belongs to her team too; she opposed him (patient-rights.ts).
    const lefevre = ref('Practitioner', 'prat-lefevre');
    this.careTeam(dupont, 'cardiology', 'active', { start: now - 20 * DAY }, [{ member: martin }, { member: bernardRole }, { member: lefevre }], {}, 'ct-dupont');
    this.encounter(dupont, 'cardiology', 'in-progress', { start: now - 4 * DAY }, [{ ref: martin }, { ref: bernardRole, type: 'PART' }], 'enc-dupont');
    clinical(dupont, 'cardiology', 'enc-dupont', 'prat-martin');
    this.push<RelatedPerson>({
      resourceType: 'RelatedPerson',
      id: 'rp-dupont',
      active: true,
      patient: ref('Patient', 'pat-dupont'),
      relationship: [{ coding: [{ system: 'http://terminology.hl7.org/CodeSystem/v3-RoleCode', code: 'HUSB', display: 'husband' }] }],
      name: [{ use: 'official', family: 'DUPONT', given: ['Pierre'] }],
      gender: 'male',
      telecom: [{ system: 'email', value: 'pierre.dupont@exemple.fr', use: 'home' }],
    });
    this.mandate('consent-dupont-mandate', 'pat-dupont', now - 60 * DAY, now + 305 * DAY);
    const expired = fx('pat-fx-mandate-expired', 'Jeanne', 'DUPONT', 'female', '1931-09-02');
    this.mandate('consent-fx-mandate-expired', expired.id, now - 400 * DAY, now - 35 * DAY);
    clinical(expired, 'geriatrics', undefined, this.pickStaff('geriatrics', true).id, now - 200 * DAY);

    // Care teams of Dr Martin, visible and not.
    const team = (
      pid: string,
      given: string,
      status: CareTeam['status'],
      period: { start?: number; end?: number } | undefined,
      members: readonly { member: Ref; period?: { start?: number; end?: number } }[],
      ctId: string,
      extra: Partial<CareTeam> = {},
    ): void => {
      const p = fx(pid, given, this.rng.pick(FAMILY), this.rng.chance(0.5) ? 'female' : 'male', day(Date.UTC(this.rng.int(1940, 2000), 0, 1) + this.rng.int(0, 364) * DAY));
      this.careTeam(p, 'cardiology', status, period, members, extra, ctId);
      clinical(p, 'cardiology', undefined, 'prat-martin');
    };
    team('pat-fx-direct', 'Albert', 'active', { start: now - 30 * DAY }, [{ member: martin }, { member: lefevre }], 'ct-fx-direct');
    team('pat-fx-role', 'Bruno', 'active', undefined, [{ member: martinRole }], 'ct-fx-role');
    team('pat-fx-participant-open', 'Cécile', 'active', { start: now - 40 * DAY }, [{ member: martin, period: { start: now - 10 * DAY, end: now + 20 * DAY } }], 'ct-fx-participant-open');
    team('pat-fx-service', 'Denise', 'active', { start: now - 15 * DAY }, [{ member: ref('Organization', DEMO_ORGANIZATIONS.cardiology) }], 'ct-fx-service');
    team('pat-fx-ended', 'Étienne', 'active', { start: now - 400 * DAY, end: now - 30 * DAY }, [{ member: martin }], 'ct-fx-ended');
    team('pat-fx-future', 'Fabienne', 'active', { start: now + 10 * DAY }, [{ member: martin }], 'ct-fx-future');
    team('pat-fx-proposed', 'Gilles', 'proposed', { start: now - DAY }, [{ member: martin }], 'ct-fx-proposed');
    team('pat-fx-inactive', 'Hélène', 'inactive', { start: now - 90 * DAY }, [{ member: martin }], 'ct-fx-inactive');
    team('pat-fx-suspended', 'Ivan', 'suspended', { start: now - 20 * DAY }, [{ member: martin }], 'ct-fx-suspended');
    team('pat-fx-error', 'Josiane', 'entered-in-error', { start: now - 5 * DAY }, [{ member: martin }], 'ct-fx-error');
    team('pat-fx-participant-ended', 'Kevin', 'active', { start: now - 60 * DAY }, [{ member: martin, period: { start: now - 60 * DAY, end: now - 5 * DAY } }], 'ct-fx-participant-ended');
    team('pat-fx-identifier-only', 'Lucienne', 'active', { start: now - 9 * DAY }, [
      { member: { identifier: { system: RPPS_SYSTEM, value: PERSONAS.clinician.rpps }, display: 'Dr Claire MARTIN' } },
    ], 'ct-fx-identifier-only');
    team('pat-fx-contained', 'Maurice', 'active', { start: now - 9 * DAY }, [{ member: { reference: '#martin' } }], 'ct-fx-contained', {
      contained: [
        {
          resourceType: 'Practitioner',
          id: 'martin',
          identifier: [{ system: RPPS_SYSTEM, value: PERSONAS.clinician.rpps }],
          name: [{ family: 'MARTIN', given: ['Claire'] }],
        },
      ],
    });
    team('pat-fx-old-role', 'Noémie', 'active', { start: now - 9 * DAY }, [{ member: ref('PractitionerRole', 'role-martin-urg-old') }], 'ct-fx-old-role');

    // Nested teams, and a cycle of teams.
    const nested = fx('pat-fx-nested', 'Odile', 'ROBIN', 'female', '1949-03-18');
    this.careTeam(undefined, 'cardiology', 'active', { start: now - 100 * DAY }, [{ member: martin }], {}, 'ct-fx-nested-inner');
    this.careTeam(nested, 'cardiology', 'active', { start: now - 8 * DAY }, [{ member: ref('CareTeam', 'ct-fx-nested-inner') }], {}, 'ct-fx-nested-outer');
    clinical(nested, 'cardiology', undefined, 'prat-martin');
    const cycle = fx('pat-fx-cycle', 'Pascal', 'MASSON', 'male', '1962-07-07');
    this.careTeam(cycle, 'cardiology', 'active', { start: now - 8 * DAY }, [{ member: ref('CareTeam', 'ct-fx-cycle-b') }], {}, 'ct-fx-cycle-a');
    this.careTeam(undefined, 'cardiology', 'active', { start: now - 100 * DAY }, [{ member: ref('CareTeam', 'ct-fx-cycle-a') }, { member: martin }], {}, 'ct-fx-cycle-b');
    clinical(cycle, 'cardiology', undefined, 'prat-martin');

    // Stays.
    const stay = (
      pid: string,
      given: string,
      service: ClinicalService,
      status: EncounterStatus,
      period: { start?: number; end?: number },
      participants: readonly { ref: Ref; type?: string }[],
      encId: string,
      author: string,
    ): void => {
      const p = fx(pid, given, this.rng.pick(FAMILY), this.rng.chance(0.5) ? 'female' : 'male', day(Date.UTC(this.rng.int(1935, 2005), 0, 1) + this.rng.int(0, 364) * DAY));
      this.encounter(p, service, status, period, participants, encId);
      clinical(p, service, status === 'planned' || status === 'cancelled' ? undefined : encId, author, Math.min(now, period.end ?? now));
    };
    stay('pat-fx-enc-current', 'Quentin', 'cardiology', 'in-progress', { start: now - 2 * DAY }, [{ ref: martin }], 'enc-fx-inprogress', 'prat-martin');
    stay('pat-fx-enc-role', 'Rose', 'cardiology', 'in-progress', { start: now - 6 * HOUR }, [{ ref: martinRole }], 'enc-fx-role', 'prat-martin');
    stay('pat-fx-enc-recent', 'Serge', 'cardiology', 'finished', { start: now - 8 * DAY, end: now - 3 * DAY }, [{ ref: martin }], 'enc-fx-finished-3d', 'prat-martin');
    stay('pat-fx-enc-old', 'Thérèse', 'cardiology', 'finished', { start: now - 5 * 365 * DAY - 6 * DAY, end: now - 5 * 365 * DAY }, [{ ref: martin }], 'enc-fx-finished-5y', 'prat-martin');
    stay('pat-fx-enc-noend', 'Ulysse', 'cardiology', 'finished', { start: now - 2 * 365 * DAY }, [{ ref: martin }], 'enc-fx-finished-noend', 'prat-martin');
    stay('pat-fx-enc-planned', 'Violette', 'cardiology', 'planned', { start: now + 7 * DAY }, [{ ref: martin }], 'enc-fx-planned', 'prat-martin');
    stay('pat-fx-enc-cancelled', 'William', 'cardiology', 'cancelled', { start: now - 2 * DAY }, [{ ref: martin }], 'enc-fx-cancelled', 'prat-martin');
    const other = colleague();
    stay('pat-fx-enc-service-only', 'Xavier', 'cardiology', 'in-progress', { start: now - DAY }, [{ ref: other }], 'enc-fx-service-only', other.reference?.split('/')[1] ?? 'prat-martin');
    stay('pat-fx-nurse-triaged', 'Yvette', 'cardiology', 'triaged', { start: now - 3 * HOUR }, [{ ref: bernardRole, type: 'PART' }], 'enc-fx-nurse-triaged', 'prat-bernard');
    stay('pat-fx-nurse-onleave', 'Zacharie', 'cardiology', 'onleave', { start: now - 9 * DAY }, [{ ref: ref('Practitioner', 'prat-bernard'), type: 'PART' }], 'enc-fx-nurse-onleave', 'prat-bernard');
    stay('pat-fx-er-1', 'Aurélie', 'emergency', 'in-progress', { start: now - 5 * HOUR }, [{ ref: ref('Practitioner', 'prat-roux') }], 'enc-fx-er-1', 'prat-roux');
    stay('pat-fx-er-2', 'Baptiste', 'emergency', 'triaged', { start: now - 2 * HOUR }, [{ ref: ref('PractitionerRole', 'role-roux-urg') }], 'enc-fx-er-2', 'prat-roux');

    // Orthopaedics.
    const ortho = fx('pat-fx-ortho', 'Cyril', 'BOYER', 'male', '1971-11-23');
    this.careTeam(ortho, 'orthopaedics', 'active', { start: now - 3 * DAY }, [{ member: ref('Practitioner', 'prat-girard') }], {}, 'ct-fx-ortho');
    clinical(ortho, 'orthopaedics', undefined, 'prat-girard');

    // A Provenance whose targets belong to two patients: visible only to who sees both.
    this.push<Provenance>({
      resourceType: 'Provenance',
      id: 'prov-fx-two-patients',
      target: [ref('Patient', 'pat-dupont'), ref('Patient', 'pat-fx-ortho')],
      recorded: dt(now - DAY),
      activity: { coding: [{ system: 'http://terminology.hl7.org/CodeSystem/v3-DataOperation', code: 'UPDATE' }] },
      agent: [{ who: ref('Practitioner', 'prat-petit') }],
    });

    // Attachments stored as most servers store them: a Binary without securityContext, attributed
    // to its patient only through the resource that points at it (DocumentReference, DiagnosticReport).
    this.attachmentWithoutContext('pat-dupont', 'doc', 'fx-dupont-letter', 'application/pdf', '%PDF-1.4 Lettre de liaison cardiologie (synthetique)', 'prat-martin');
    this.attachmentWithoutContext('pat-dupont', 'report', 'fx-dupont-echo', 'text/plain', 'Echocardiographie: FEVG 55 %. Compte rendu synthetique.', 'prat-martin');
    this.attachmentWithoutContext('pat-fx-ortho', 'doc', 'fx-ortho-letter', 'application/pdf', '%PDF-1.4 Compte rendu operatoire (synthetique)', 'prat-girard');
  }

  /**
   * Fixtures added after the generated patients, so that the hospital generated before them stays
   * byte-identical for a given seed: linked records and stored documents.
   */
  private lateFixtures(): void {
    const now = this.now;
    // A patient of Dr Martin whose record links to a relative treated in orthopaedics (not hers),
    // and to another of her patients: the first link is hidden from her.
    const linked = this.patient('pat-fx-linked', { given: 'Gabrielle', family: 'BOYER', gender: 'female', birthDate: '1974-02-09' });
    this.careTeam(linked, 'cardiology', 'active', { start: now - 10 * DAY }, [{ member: ref('Practitioner', 'prat-martin') }], {}, 'ct-fx-linked');
    const relative = this.patient('pat-fx-linked-relative', { given: 'Hugo', family: 'BOYER', gender: 'male', birthDate: '1999-06-21' });
    this.careTeam(relative, 'orthopaedics', 'active', { start: now - 10 * DAY }, [{ member: ref('Practitioner', 'prat-girard') }], {}, 'ct-fx-linked-relative');
    const record = this.out.find((r) => r.resourceType === 'Patient' && r.id === 'pat-fx-linked') as Patient;
    record.link = [
      { other: ref('Patient', 'pat-fx-linked-relative'), type: 'seealso' },
      { other: ref('Patient', 'pat-fx-direct'), type: 'seealso' },
    ];

    // Stored documents: one about Louise Dupont alone, one that also holds another patient's result.
    const obs = (id: string, patient: string): Observation => ({
      resourceType: 'Observation',
      id,
      status: 'final',
      code: { coding: [{ system: LOINC, code: '8867-4', display: 'Heart rate' }] },
      subject: ref('Patient', patient),
      effectiveDateTime: dt(now - DAY),
      valueQuantity: { value: 72, unit: '/min', system: 'http://unitsofmeasure.org', code: '/min' },
    });
    this.push<Resource>({
      resourceType: 'Bundle',
      id: 'bundle-fx-dupont-document',
      type: 'collection',
      timestamp: dt(now - DAY),
      entry: [{ fullUrl: 'urn:uuid:6d2a1a2e-0001-4a4b-9a51-000000000001', resource: obs('obs-in-bundle-1', 'pat-dupont') }],
    } as Resource);
    this.push<Resource>({
      resourceType: 'Bundle',
      id: 'bundle-fx-mixed-collection',
      type: 'collection',
      timestamp: dt(now - DAY),
      entry: [
        { fullUrl: 'urn:uuid:6d2a1a2e-0002-4a4b-9a51-000000000002', resource: obs('obs-in-bundle-2', 'pat-dupont') },
        { fullUrl: 'urn:uuid:6d2a1a2e-0003-4a4b-9a51-000000000003', resource: obs('obs-in-bundle-3', 'pat-fx-ortho') },
      ],
    } as Resource);

    this.minimisationFixtures();
    this.oversightFixtures();
  }

  /** Minimisation (src/demo/minimisation.ts): a psychiatric note in a team with a nurse and a secretary. */
  private minimisationFixtures(): void {
    const now = this.now;
    const F = MINIMISATION_FIXTURES;
    for (const persona of [PERSONAS.psychiatrist, PERSONAS.secretary]) {
      this.practitioner({
        id: persona.id,
        given: persona.given,
        family: persona.family,
        ...('rpps' in persona ? { rpps: persona.rpps } : {}),
        ...('staffId' in persona ? { staffId: persona.staffId } : {}),
        ...('profession' in persona ? { profession: persona.profession } : {}),
      });
    }
    this.push<Organization>({
      resourceType: 'Organization',
      id: F.liaisonPsychiatry,
      active: true,
      identifier: [{ system: UF_SYSTEM, value: '1600' }],
      type: [{ coding: [{ system: 'http://terminology.hl7.org/CodeSystem/organization-type', code: 'dept', display: 'Hospital Department' }] }],
      name: 'Équipe de psychiatrie de liaison',
      partOf: ref('Organization', DEMO_ORGANIZATIONS.establishment, 'CHU Demo'),
    });
    this.push<PractitionerRole>({
      resourceType: 'PractitionerRole',
      id: F.psychiatristRole,
      active: true,
      period: { start: '2018-09-01' },
      practitioner: ref('Practitioner', PERSONAS.psychiatrist.id),
      organization: ref('Organization', F.liaisonPsychiatry),
      code: [{ coding: [{ system: ROLE_CODE_SYSTEM, code: 'clinician', display: 'clinician' }] }],
      specialty: [{ coding: [{ system: SPECIALTY_SYSTEM, code: 'psychiatry', display: 'Psychiatrie' }] }],
    });
    this.role(F.secretaryRole, PERSONAS.secretary.id, 'cardiology', 'secretary', true, '2019-03-01');

    const patient = this.patient(F.patient, { given: 'Mathilde', family: 'ROCHE', gender: 'female', birthDate: '1987-09-14' });
    const martin = ref('Practitioner', PERSONAS.clinician.id);
    const faure = ref('Practitioner', PERSONAS.psychiatrist.id);
    this.encounter(patient, 'cardiology', 'in-progress', { start: now - 3 * DAY }, [{ ref: martin }, { ref: faure, type: 'CON' }], F.stay);
    this.careTeam(patient, 'cardiology', 'active', { start: now - 3 * DAY }, [
      { member: martin },
      { member: ref('PractitionerRole', 'role-bernard-cardio') },
      { member: faure },
      { member: ref('PractitionerRole', F.secretaryRole) },
    ], {}, F.careTeam);
    const subject = ref('Patient', patient.id);
    const encounter = ref('Encounter', F.stay);
    const category = (code: string) => [{ coding: [{ system: 'http://terminology.hl7.org/CodeSystem/observation-category', code }] }];
    this.push<Observation>({
      resourceType: 'Observation', id: F.heartRate, status: 'final', category: category('vital-signs'),
      code: { coding: [{ system: LOINC, code: '8867-4', display: 'Heart rate' }] },
      subject, encounter, effectiveDateTime: dt(now - 2 * DAY), performer: [ref('PractitionerRole', 'role-bernard-cardio')],
      valueQuantity: { value: 112, unit: '/min', system: UCUM, code: '/min' },
    });
    this.push<Observation>({
      resourceType: 'Observation', id: F.troponin, status: 'final', category: category('laboratory'),
      code: { coding: [{ system: LOINC, code: '89579-7', display: 'Troponin I.cardiac [Mass/volume] in Serum or Plasma by High sensitivity method' }] },
      subject, encounter, effectiveDateTime: dt(now - 2 * DAY), performer: [martin],
      valueQuantity: { value: 4, unit: 'ng/L', system: UCUM, code: 'ng/L' },
    });
    this.push<Condition>({
      resourceType: 'Condition', id: F.diagnosis,
      clinicalStatus: { coding: [{ system: 'http://terminology.hl7.org/CodeSystem/condition-clinical', code: 'active' }] },
      category: [{ coding: [{ system: 'http://terminology.hl7.org/CodeSystem/condition-category', code: 'encounter-diagnosis' }] }],
      code: { coding: [{ system: ICD10, code: 'R07.4', display: 'Douleur thoracique, sans précision' }] },
      subject, encounter, recordedDate: dt(now - 2 * DAY), recorder: martin,
    });
    const note = (docId: string, binId: string, author: Ref, title: string, text: string, labelled: boolean) => {
      const data = Buffer.from(text, 'utf8');
      const meta = labelled ? { meta: { security: [{ ...PSY_LABEL }] } } : {};
      this.push<Binary>({ resourceType: 'Binary', id: binId, ...meta, contentType: 'text/plain', securityContext: ref('DocumentReference', docId), data: data.toString('base64') });
      this.push<DocumentReference>({
        resourceType: 'DocumentReference', id: docId, ...meta, status: 'current', docStatus: 'final',
        type: { coding: [{ system: LOINC, code: '11488-4', display: 'Consult note' }] },
        subject, date: dt(now - DAY), author: [author], custodian: ref('Organization', DEMO_ORGANIZATIONS.establishment), description: title,
        content: [{ attachment: { contentType: 'text/plain', language: 'fr-FR', url: `Binary/${binId}`, size: data.length, title, creation: dt(now - DAY) } }],
        context: { encounter: [encounter] },
      });
    };
    note(F.psychiatricNote, F.psychiatricBinary, faure, 'Avis de psychiatrie de liaison',
      'Avis de psychiatrie de liaison\nPatiente : Mathilde ROCHE, née le 1987-09-14\nTrouble panique avec attaques récurrentes ; suivi proposé en consultation.\n', true);
    note(F.cardiologyNote, F.cardiologyBinary, martin, 'Observation de cardiologie',
      'Observation de cardiologie\nPatiente : Mathilde ROCHE, née le 1987-09-14\nDouleur thoracique ; troponine négative, ECG normal.\n', false);
  }

  // --- Oversight (issue 14): begin ----------------------------------------------------------
  /**
   * The DIM's oversight (src/demo/oversight.ts): a staff member who is also a patient, a public
   * figure, a patient who shares Dr Martin's surname, and a break-the-glass history (one opening
   * left without a verdict, one judged justified).
   */
  private oversightFixtures(): void {
    const now = this.now;
    const F = OVERSIGHT_FIXTURES;
    const martin = ref('Practitioner', 'prat-martin');
    const label = (id: string, security: Coding) => {
      const p = this.out.find((r) => r.resourceType === 'Patient' && r.id === id) as Patient;
      p.meta = { security: [security] };
    };
    // Dr Paul Girard, the orthopaedic surgeon, hospitalised in cardiology; admitted by Dr Roux.
    const girard = this.patient(F.staffPatient, { given: 'Paul', family: 'GIRARD', gender: 'male', birthDate: '1971-06-03' });
    label(girard.id, STAFF_LABEL);
    this.careTeam(girard, 'cardiology', 'active', { start: now - 5 * DAY }, [{ member: martin }, { member: ref('PractitionerRole', 'role-bernard-cardio') }], {}, F.staffCareTeam);
    this.encounter(girard, 'cardiology', 'in-progress', { start: now - 2 * DAY }, [{ ref: martin }, { ref: ref('Practitioner', 'prat-roux'), type: 'ADM' }], F.staffStay);
    this.clinical(girard, 'cardiology', F.staffStay, 'prat-martin', now - DAY, 3);
    // Hélène Vasseur, a public figure.
    const vasseur = this.patient(F.flaggedPatient, { given: 'Hélène', family: 'VASSEUR', gender: 'female', birthDate: '1966-11-21' });
    label(vasseur.id, FLAGGED_LABEL);
    this.careTeam(vasseur, 'cardiology', 'active', { start: now - 12 * DAY }, [{ member: martin }], {}, F.flaggedCareTeam);
    this.clinical(vasseur, 'cardiology', undefined, 'prat-martin', now - 2 * DAY, 3);
    // Lucien Martin, who shares Dr Claire Martin's surname.
    const namesake = this.patient(F.namesakePatient, { given: 'Lucien', family: 'MARTIN', gender: 'male', birthDate: '1949-03-30' });
    this.careTeam(namesake, 'cardiology', 'active', { start: now - 3 * DAY }, [{ member: martin }], {}, F.namesakeCareTeam);
    this.clinical(namesake, 'cardiology', undefined, 'prat-martin', now - DAY, 2);
    for (const e of breakGlassHistory(now)) this.push<AuditEvent>(e);
  }
  // --- Oversight (issue 14): end --------------------------------------------------------------

  /**
   * A Binary without securityContext and the resource that points at it: a DocumentReference
   * (`doc-<key>`, attachment `Binary/bin-<key>`) or a DiagnosticReport (`dr-<key>`, presentedForm).
   */
  private attachmentWithoutContext(patientId: string, kind: 'doc' | 'report', key: string, contentType: string, text: string, author: string): void {
    const when = dt(this.now - 2 * DAY);
    const data = Buffer.from(text, 'utf8');
    const attachment = { contentType, url: `Binary/bin-${key}`, size: data.length, title: text.slice(0, 40), creation: when };
    this.push<Binary>({ resourceType: 'Binary', id: `bin-${key}`, contentType, data: data.toString('base64') });
    if (kind === 'doc') {
      this.push<DocumentReference>({
        resourceType: 'DocumentReference',
        id: `doc-${key}`,
        status: 'current',
        docStatus: 'final',
        type: { coding: [{ system: LOINC, code: '34133-9', display: 'Summary of episode note' }] },
        subject: ref('Patient', patientId),
        date: when,
        author: [ref('Practitioner', author)],
        content: [{ attachment }],
      });
    } else {
      this.push<DiagnosticReport>({
        resourceType: 'DiagnosticReport',
        id: `dr-${key}`,
        status: 'final',
        code: { coding: [{ system: LOINC, code: '34552-0', display: 'Cardiac 2D echo panel' }] },
        subject: ref('Patient', patientId),
        effectiveDateTime: when,
        issued: when,
        performer: [ref('Practitioner', author)],
        presentedForm: [attachment],
      });
    }
  }

  private mandate(id: string, patientId: string, start: number, end: number): void {
    this.push<Consent>({
      resourceType: 'Consent',
      id,
      status: 'active',
      scope: { coding: [{ system: 'http://terminology.hl7.org/CodeSystem/consentscope', code: 'patient-privacy' }] },
      category: [
        { coding: [{ system: LOINC, code: '59284-0', display: 'Patient Consent' }] },
        { coding: [{ system: 'https://chu-demo.example/fhir/CodeSystem/consent-category', code: 'mandate', display: "Mandat écrit d'accès au dossier médical" }] },
      ],
      patient: ref('Patient', patientId),
      dateTime: dt(start),
      performer: [ref('Patient', patientId)],
      organization: [ref('Organization', DEMO_ORGANIZATIONS.establishment)],
      policyRule: { coding: [{ system: ACT_CODE, code: 'OPTIN' }] },
      provision: {
        type: 'permit',
        period: { start: dt(start), end: dt(end) },
        actor: [
          {
            role: { coding: [{ system: PARTICIPATION, code: 'IRCP', display: 'information recipient' }] },
            reference: ref('RelatedPerson', 'rp-dupont'),
          },
        ],
        action: [{ coding: [{ system: 'http://terminology.hl7.org/CodeSystem/consentaction', code: 'access' }] }],
      },
    });
  }
}

function resolveOptions(opts: SeedOptions = {}): Required<Omit<SeedOptions, 'now'>> & { now: number } {
  const now = opts.now === undefined ? Date.now() : typeof opts.now === 'number' ? opts.now : opts.now.getTime();
  return {
    seed: opts.seed ?? SEED_DEFAULTS.seed,
    patients: Math.max(0, Math.floor(opts.patients ?? SEED_DEFAULTS.patients)),
    practitioners: Math.floor(opts.practitioners ?? SEED_DEFAULTS.practitioners),
    observationsPerPatient: Math.max(0, Math.floor(opts.observationsPerPatient ?? SEED_DEFAULTS.observationsPerPatient)),
    now,
  };
}

/**
 * Builds every resource of the hospital (pure: the same options give byte-identical resources).
 * Fixture resources are always present; `patients` generated patients come on top.
 */
export function buildHospital(opts: SeedOptions = {}): Resource[] {
  return new HospitalBuilder(resolveOptions(opts)).build();
}

/** Ref and token parameters the proxy searches on; their indexes are built right after seeding. */
const HOT_SEARCH_PARAMS = [
  'Patient.identifier', 'Practitioner.identifier', 'PractitionerRole.practitioner', 'PractitionerRole.organization',
  'PractitionerRole.active', 'CareTeam.participant', 'CareTeam.patient', 'CareTeam.subject', 'CareTeam.status',
  'Encounter.participant', 'Encounter.practitioner', 'Encounter.patient', 'Encounter.subject', 'Encounter.status',
  'Encounter.identifier', 'Observation.patient', 'Observation.subject', 'Observation.encounter', 'Condition.patient',
  'Condition.subject', 'MedicationRequest.patient', 'MedicationRequest.subject', 'DocumentReference.patient',
  'DocumentReference.subject', 'Provenance.target', 'Provenance.patient', 'Consent.patient', 'Consent.actor',
  'RelatedPerson.patient',
] as const;

/**
 * Builds the hospital and loads it into `repo`. A `DemoRepository` takes the resources as they
 * are (version 1, `lastUpdated` = the seed's `now`) and builds its hot indexes; any other
 * repository receives them through `createResource` with their ids.
 */
export async function seedHospital(repo: FhirRepository, opts: SeedOptions = {}): Promise<SeedStats> {
  const resolved = resolveOptions(opts);
  const t0 = performance.now();
  const resources = new HospitalBuilder(resolved).build();
  const t1 = performance.now();
  const byType: Record<string, number> = {};
  for (const r of resources) byType[r.resourceType] = (byType[r.resourceType] ?? 0) + 1;
  if (repo instanceof DemoRepository) {
    repo.load(resources, new Date(resolved.now));
    repo.warmIndexes(HOT_SEARCH_PARAMS);
  } else {
    for (const r of resources) await repo.createResource(r, { assignedId: true });
  }
  const t2 = performance.now();
  return {
    seed: resolved.seed,
    now: new Date(resolved.now).toISOString(),
    resources: resources.length,
    byType,
    buildMs: Math.round(t1 - t0),
    loadMs: Math.round(t2 - t1),
  };
}
