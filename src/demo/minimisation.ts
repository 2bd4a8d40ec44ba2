/**
 * Minimisation in the demo hospital (docs/POLICY.md, "Minimisation"; docs/DEMO-HOSPITAL.md):
 * Mathilde Roche (`pat-fx-psy`), in cardiology for chest pain, seen by the liaison psychiatrist
 * Dr Camille Faure (`psychiatrist`). Her care team: Dr Martin (`clinician`), the nurse Julien
 * Bernard (`nurse`), Dr Faure, and the service's secretary Nathalie Garnier (`secretary`).
 *
 * The psychiatrist's note carries the `PSY` label: under the demo policy only psychiatrists (and
 * the DIM, and the patient) see it, so the nurse and Dr Martin do not, although they are in her
 * team. The secretary sees her stay and demographics, not her notes, diagnoses or results.
 */

/** The demo hospital's own code system for PractitionerRole.specialty (a real hospital may use TRE_R38). */
export const SPECIALTY_SYSTEM = 'https://chu-demo.example/fhir/CodeSystem/specialty';
export const PSY_LABEL = { system: 'http://terminology.hl7.org/CodeSystem/v3-ActCode', code: 'PSY', display: 'psychiatry information sensitivity' } as const;

export const MINIMISATION_FIXTURES = {
  patient: 'pat-fx-psy',
  careTeam: 'ct-fx-psy',
  stay: 'enc-fx-psy',
  /** The liaison psychiatrist's note, labelled PSY, and its content. */
  psychiatricNote: 'doc-fx-psy-note',
  psychiatricBinary: 'bin-fx-psy-note',
  /** The cardiologist's progress note (a clinical note, no label). */
  cardiologyNote: 'doc-fx-psy-cardio-note',
  cardiologyBinary: 'bin-fx-psy-cardio-note',
  heartRate: 'obs-fx-psy-heart-rate',
  troponin: 'obs-fx-psy-troponin',
  diagnosis: 'cond-fx-psy-chest-pain',
  liaisonPsychiatry: 'org-psy-liaison',
  psychiatristRole: 'role-faure-psy',
  secretaryRole: 'role-garnier-cardio',
} as const;
