import type { FhirInteraction, SearchParam } from '../fhir/interaction.js';
import { patientsInUrl } from '../fhir/interaction.js';
import { PATIENT_COMPARTMENT } from '../fhir/generated/patient-compartment.js';
import { paramKind } from '../fhir/searchparams.js';
import type { SearchFeature } from './config.js';
import type { Obligation } from './decision.js';
import { blockingOpposition } from './opposition.js';
import { hasPatient, type Ctx } from './verdicts.js';

/**
 * What a search reaches: the parameters a role may use, which parameters name patients, and how a
 * search is narrowed to the care set (or refused when it names only patients outside it).
 */

/** Parameters that reach other resources than the one searched, refused unless the role allows them. */
const FEATURE_PARAMS: Record<string, SearchFeature> = {
  _has: '_has',
  _filter: '_filter',
  _query: '_query',
  _contained: '_contained',
  _containedType: '_contained',
  _list: '_list',
};
/** Full-text searches match narratives: allowed only to roles that see everything. */
const TEXT_PARAMS = new Set(['_text', '_content']);

/** A refusal message if a parameter reaches beyond what this role may search; undefined when fine. */
export function forbiddenParam(ctx: Ctx, params: readonly SearchParam[]): string | undefined {
  const r = ctx.role;
  const it = ctx.in.interaction;
  for (const p of params) {
    const feature = FEATURE_PARAMS[p.name];
    if (feature && !r.allowSearchFeatures.includes(feature)) return `The search parameter ${p.name} is not allowed to role "${r.id}".`;
    if (TEXT_PARAMS.has(p.name) && ctx.careSet.scope !== 'all') return `Full-text search (${p.name}) is not allowed to role "${r.id}".`;
    if ((p.name === '_include' || p.name === '_revinclude') && (p.value === '*' || p.value.endsWith(':*')) && !r.allowSearchFeatures.includes('_include:*')) {
      return `${p.name}=* is not allowed to role "${r.id}".`;
    }
    if (p.name.includes('.') && !r.allowSearchFeatures.includes('chain')) {
      return `Chained search parameters (${p.name.split('.')[0]}.…) are not allowed to role "${r.id}".`;
    }
    if (it.resourceType && isPatientParam(it.resourceType, p.name) && p.modifier !== undefined && p.modifier !== 'Patient') {
      return `The modifier :${p.modifier} on the patient parameter ${p.name} is not allowed.`;
    }
  }
  return undefined;
}

export function isPatientParam(type: string, name: string): boolean {
  if (type === 'Patient') return name === '_id' || name === 'link';
  // `patient` is a patient parameter wherever the type defines it (Observation.patient is not in
  // the compartment definition, which lists `subject`).
  return (PATIENT_COMPARTMENT[type] ?? []).some((l) => l.param === name) || (name === 'patient' && paramKind(type, name) === 'resource');
}

/** The parameter used to narrow a search of `type` to a set of patients. */
export function narrowingParam(type: string): string | undefined {
  if (type === 'Patient') return '_id';
  const links = PATIENT_COMPARTMENT[type];
  if (!links) return undefined;
  for (const pref of ['patient', 'subject', 'beneficiary']) if (links.some((l) => l.param === pref)) return pref;
  return undefined;
}

/** Parameters that name the patient a resource is about (`_id` on Patient). */
const SUBJECT_PARAMS: ReadonlySet<string> = new Set(['patient', 'subject', 'beneficiary', '_id']);

export type Narrowing = Extract<Obligation, { kind: 'narrow' }> | { kind: 'outside'; patients: string[] } | { kind: 'none' };

/**
 * Narrowing: restrict the upstream query to the patients of the care set so that pages are full
 * and totals true. A search the client already restricted to patients of the care set goes as
 * sent. A search naming only patients outside the care set is a refusal (`outside`); a care set
 * with no patient at all can match nothing (`none`).
 */
export function narrowing(ctx: Ctx, it: FhirInteraction): Narrowing | undefined {
  const type = it.resourceType!;
  if (ctx.careSet.scope === 'all') return undefined;
  const param = narrowingParam(type);
  if (!param) return undefined;
  const named = it.params.filter((p) => isPatientParam(type, p.name));
  if (named.length > 0) {
    // Every occurrence is ANDed: each must keep at least one patient of the care set.
    let restricted = false;
    for (const p of named) {
      const values = p.value.split(',');
      const ids = values.map((v) => patientIdOf(v, type, p.name)).filter((v): v is string => v !== undefined);
      if (ids.length > 0 && ids.every((id) => !hasPatient(ctx.careSet, id))) return { kind: 'outside', patients: [...new Set(ids)] };
      // The client already restricted the query to patients of the care set, by the parameter that
      // names the resource's own patient: nothing to add. (A restriction on another patient
      // parameter, `performer=Patient/a`, leaves the subject open: the search is still narrowed.)
      if (SUBJECT_PARAMS.has(p.name) && ids.length === values.length && ids.every((id) => hasPatient(ctx.careSet, id))) restricted = true;
    }
    if (restricted) return undefined;
  }
  // A patient whose opposition covers what is searched has nothing to give: the query leaves her out.
  const allowed = [...ctx.careSet.patients.keys()].filter((p) => !blockingOpposition(ctx.opposition, p, type));
  if (allowed.length === 0) return { kind: 'none' };
  if (allowed.length > ctx.in.policy.search.narrowMaxPatients) return undefined;
  return { kind: 'narrow', param, patients: allowed };
}

/** `Patient/x`, `x` (for patient/_id params) or an absolute URL ending in Patient/x → x. */
export function patientIdOf(value: string, type: string, param: string): string | undefined {
  const m = /(?:^|\/)Patient\/([A-Za-z0-9\-.]{1,64})(?:\/_history\/[^/]+)?$/.exec(value);
  if (m) return m[1];
  if ((type === 'Patient' && param === '_id') || param === 'patient') return /^[A-Za-z0-9\-.]{1,64}$/.test(value) ? value : undefined;
  return undefined;
}

/**
 * The patients a request names: in its URL (`Patient/x`, `Patient/x/Observation`), or for a
 * search of one type, in its patient parameters (`patient=x`, `subject=Patient/x`, `_id` on
 * Patient). Break-the-glass asks for exactly one. A value that names no patient clearly (a
 * reference to another type, an identifier) makes the search name none.
 */
export function patientsNamed(it: FhirInteraction): string[] {
  const inUrl = patientsInUrl(it);
  if (inUrl.length > 0 || it.kind !== 'search-type' || !it.resourceType) return inUrl;
  const type = it.resourceType;
  const out: string[] = [];
  for (const p of it.params) {
    if (!isPatientParam(type, p.name)) continue;
    for (const v of p.value.split(',')) {
      const id = patientIdOf(v, type, p.name);
      if (id === undefined) return [];
      out.push(id);
    }
  }
  return out;
}
