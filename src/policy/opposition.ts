import type { Consent, ConsentProvision, Resource } from '@medplum/fhirtypes';
import { literalRef } from '../relate/careset.js';
import { OPPOSABLE_ACTOR } from '../relate/oppositions.js';
import type { CareSet, Evidence, Opposition } from '../relate/types.js';
import type { Policy } from './config.js';

/**
 * The patient's opposition to sharing (CSP L1110-4), as the policy applies it: which oppositions of
 * the care set are in force for this request, which a break-the-glass grant overrides (when the
 * policy lets it), what a URL alone refuses, and which Consents a role allowed only
 * `Consent.opposition` may write. Pure.
 */

export interface OppositionView {
  /** Oppositions in force for this request, by patient. */
  active: ReadonlyMap<string, readonly Opposition[]>;
  /** Patients reached through a break-the-glass grant that overrides their oppositions, with those oppositions. */
  overridden: ReadonlyMap<string, readonly Opposition[]>;
}

export const NO_OPPOSITION: OppositionView = { active: new Map(), overridden: new Map() };

/** Splits the care set's oppositions into those in force and those a break-the-glass grant overrides. */
export function oppositionView(set: CareSet, policy: Policy): OppositionView {
  if (!set.opposed || set.opposed.size === 0 || !policy.patientRights.oppositions.enabled) return NO_OPPOSITION;
  const active = new Map<string, readonly Opposition[]>();
  const overridden = new Map<string, readonly Opposition[]>();
  for (const [patient, list] of set.opposed) {
    const grant = (set.patients.get(patient) ?? []).some((e) => e.source === 'break-glass');
    if (grant && policy.patientRights.oppositions.breakGlassOverrides) overridden.set(patient, list);
    else active.set(patient, list);
  }
  return { active, overridden };
}

/**
 * The opposition that refuses `patient` to this request on its URL alone: one covering the whole
 * record, or the type the request reads (`Patient/x/Observation` under an opposition limited to
 * Observation). Oppositions limited by security label need the resources themselves (the response
 * filter withholds them).
 */
export function blockingOpposition(view: OppositionView, patient: string, type: string | undefined): Opposition | undefined {
  return view.active
    .get(patient)
    ?.find((o) => o.labels.length === 0 && (o.classes.length === 0 || (type !== undefined && type !== '*' && o.classes.includes(type))));
}

/** The evidence an opposition gives a decision: the Consent, and whether a grant overrode it. */
export function oppositionEvidence(o: Opposition, overridden: boolean): Evidence {
  return { source: 'opposition', reference: o.consent, ...(overridden ? { overridden: true } : {}) };
}

/** The refusal message, telling an emergency role how the policy lets it through. */
export function oppositionMessage(breakGlassRole: boolean, overrides: boolean): string {
  const base = 'The patient has opposed sharing this record, or this part of it, with you (CSP L1110-4).';
  return breakGlassRole && overrides
    ? `${base} In a vital emergency, break the glass: the opening is recorded with the opposition it overrides, and the patient is told.`
    : base;
}

const CONSENT_SCOPE = 'http://terminology.hl7.org/CodeSystem/consentscope';

/**
 * Why a Consent is not an opposition a role limited to `Consent.opposition` may write, or undefined
 * when it is one: a privacy Consent (scope `patient-privacy`) about one literal Patient whose every
 * provision, nested ones included, is a deny naming at least one actor, each a literal reference to
 * a Practitioner, PractitionerRole, Organization or CareTeam. Never a permit: a permit grants access
 * (a mandate is one), and granting access is for trusted writers only (threats.md invariant 6).
 */
export function notAnOpposition(resource: Resource | undefined): string | undefined {
  if (resource?.resourceType !== 'Consent') return 'not a Consent';
  const c = resource as Consent;
  if (!c.scope?.coding?.some((x) => x.system === CONSENT_SCOPE && x.code === 'patient-privacy')) return 'its scope is not patient-privacy';
  if (!literalRef(c.patient)?.startsWith('Patient/')) return 'it does not name its patient literally';
  if (!c.provision) return 'it has no provision';
  const problem = (p: ConsentProvision, top: boolean): string | undefined => {
    if (p.type !== 'deny') return 'a provision is not a deny (a permit grants access)';
    if (top && !p.actor?.length) return 'it names no actor';
    for (const a of p.actor ?? []) {
      const ref = literalRef(a.reference);
      if (!ref || !OPPOSABLE_ACTOR.test(ref)) return 'an actor is not a literal Practitioner, PractitionerRole, Organization or CareTeam';
    }
    for (const child of p.provision ?? []) {
      const why = problem(child, false);
      if (why) return why;
    }
    return undefined;
  };
  return problem(c.provision, true);
}
