import type { Resource } from '@medplum/fhirtypes';
import type { FhirInteraction, SearchParam } from '../fhir/interaction.js';
import { PATIENT_COMPARTMENT } from '../fhir/generated/patient-compartment.js';
import { paramKind } from '../fhir/searchparams.js';
import { scopeAllows } from '../identity/scopes.js';
import { ADMIN_READABLE_TYPES, isAdminSearchParam, isAdminSort, maskForAdministration } from '../shape/mask.js';
import type { Principal } from '../identity/principal.js';
import type { CareSet, Evidence } from '../relate/types.js';
import type { Policy, RoleConfig, SearchFeature } from './config.js';
import type { Decision, DecisionReason, Obligation } from './decision.js';

/**
 * The policy: principal × interaction × care set → Decision. Pure, synchronous, default deny.
 * Every permit that returns data carries the `filter-response` obligation: narrowing the upstream
 * query is an optimisation, the response filter is the boundary.
 */

/**
 * Types whose writes create or change care relationships: trusted writers only. Practitioner is
 * one of them: its identifiers and `active` are what a credential without `fhirUser` (Pro Santé
 * Connect, a CPS card) is resolved by, so whoever may write them may become another practitioner
 * and take their care relationships.
 */
export const RELATIONSHIP_TYPES = new Set(['CareTeam', 'Encounter', 'EpisodeOfCare', 'PractitionerRole', 'Practitioner', 'Group', 'Consent']);

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

export interface DecideInput {
  principal: Principal | undefined;
  /** The first policy role that matches the principal. */
  role: RoleConfig | undefined;
  interaction: FhirInteraction;
  /** The patients this user may see (care team, own record, mandate, break-the-glass...). */
  careSet: CareSet | undefined;
  policy: Policy;
  /** Patients the body of a write belongs to, before and after (resolved by the caller). */
  writePatients?: { before: readonly string[] | 'undetermined' | 'none'; after: readonly string[] | 'undetermined' | 'none' };
  /** For writes to Patient: whether `Patient.link` changes. */
  patientLinkChanged?: boolean;
  /** A request coming back through a signed paging link: the query was judged when the link was issued. */
  paging?: boolean;
}

interface Ctx {
  in: DecideInput;
  role: RoleConfig;
  careSet: CareSet;
}

const permitBase = { effect: 'permit' as const, evidence: [] as Evidence[], patients: [] as string[] };

function deny(reason: DecisionReason, message: string, rule: string, extra: Partial<Decision> = {}): Decision {
  return { effect: 'deny', reason, message, rule, evidence: [], obligations: [], patients: [], ...extra };
}

export function decide(input: DecideInput): Decision {
  const it = input.interaction;
  if (it.kind === 'capabilities') {
    return { ...permitBase, reason: 'capabilities', rule: 'public.capabilities', message: 'Capability statement', obligations: [] };
  }
  if (!input.principal || !input.role) {
    return deny('default-deny', 'No policy role applies to this user.', 'default');
  }
  if (it.prefer.respondAsync) {
    // An asynchronous answer is fetched later from a URL caregate never sees: it could not be judged.
    return deny('interaction-forbidden', 'Asynchronous requests (Prefer: respond-async) are not supported through caregate.', `${input.role.id}.async`);
  }
  const role = input.role;
  if (role.profile === 'none') {
    return deny('role-forbidden', `The role "${role.id}" gives no access to patient records.`, `${role.id}.none`, {
      obligations: [{ kind: 'audit-severity', severity: 'high' }],
    });
  }
  if (!input.careSet) return deny('lookup-failed', 'Care relationships could not be resolved.', 'default');
  const ctx: Ctx = { in: input, role, careSet: input.careSet };

  const ceiling = scopeCeiling(input.principal, it);
  if (ceiling) return deny('scope-ceiling', ceiling, `${role.id}.scope`);
  const unknown = input.paging ? undefined : unknownParam(it);
  if (unknown) return deny('parameter-forbidden', unknown, `${role.id}.search-parameters`);

  if (it.resourceType === 'AuditEvent' || it.compartment?.type === 'AuditEvent') {
    if (!role.readAudit || (it.method !== 'GET' && !isSearchPost(it))) {
      return deny('role-forbidden', 'The audit trail is read by the roles the policy names, and written by caregate only.', `${role.id}.audit`);
    }
    return permit(ctx, 'role-all-records', `${role.id}.audit`, 'Audit trail', [], []);
  }
  if (it.resourceType === 'Subscription' && it.method !== 'GET') {
    return deny('interaction-forbidden', 'Subscriptions cannot be written through caregate.', `${role.id}.subscription`);
  }

  switch (role.profile) {
    case 'all-records':
      return decideAllRecords(ctx);
    case 'care-team':
    case 'own-record':
    case 'mandate':
      return decideListed(ctx);
    case 'administrative':
      return decideAdministrative(ctx);
    case 'de-identified':
      return decideDeidentified(ctx);
    default:
      return deny('role-forbidden', `The access profile "${role.profile}" of role "${role.id}" is not enforced by this version.`, `${role.id}.${role.profile}`);
  }
}

/** The SMART permission letter an interaction needs (batch entries are judged one by one). */
function permissionOf(it: FhirInteraction): 'c' | 'r' | 'u' | 'd' | 's' | undefined {
  switch (it.kind) {
    case 'read':
    case 'vread':
    case 'history-instance':
    case 'operation':
      return 'r';
    case 'search-type':
    case 'search-system':
    case 'search-compartment':
    case 'history-type':
    case 'history-system':
      return 's';
    case 'create':
      return 'c';
    case 'update':
    case 'patch':
      return 'u';
    case 'delete':
      return 'd';
    default:
      return undefined;
  }
}

/**
 * SMART scopes are a ceiling: no policy grants more than the token's scopes allow. Restricted
 * scopes (`?category=...`) are not applied as filters yet, so they do not grant anything here.
 */
function scopeCeiling(p: Principal, it: FhirInteraction): string | undefined {
  const perm = permissionOf(it);
  if (!perm) return undefined;
  const type = it.kind === 'search-compartment' ? (it.resourceType ?? '*') : (it.resourceType ?? '*');
  if (scopeAllows(p.claims.scopes, ['user', 'patient'], type, perm)) return undefined;
  return `The token's scopes do not allow "${perm}" on ${type}.`;
}

/** Default deny on parameters: every search parameter must be one the FHIR server defines for the type. */
function unknownParam(it: FhirInteraction): string | undefined {
  if (!it.kind.startsWith('search') && !it.kind.startsWith('history')) return undefined;
  const type = it.kind === 'search-system' || it.resourceType === '*' ? undefined : it.resourceType;
  for (const p of it.params) {
    const head = p.name.split('.')[0]!;
    if (type === undefined) {
      const k = paramKind('Resource', head);
      if (k === 'unknown') return `The search parameter ${head} is not known for a search across types.`;
    } else if (paramKind(type, head) === 'unknown') {
      return `The search parameter ${head} is not a search parameter of ${type}.`;
    }
  }
  return undefined;
}

function isSearchPost(it: FhirInteraction): boolean {
  return it.method === 'POST' && it.kind.startsWith('search');
}

function permit(
  ctx: Ctx,
  reason: DecisionReason,
  rule: string,
  message: string,
  patients: readonly string[],
  extra: Obligation[],
): Decision {
  const evidence: Evidence[] = [];
  for (const p of patients) evidence.push(...(ctx.careSet.patients.get(p) ?? []));
  const btg = evidence.some((e) => e.source === 'break-glass') && !evidence.some((e) => e.source !== 'break-glass');
  const obligations: Obligation[] = [{ kind: 'filter-response' }, ...extra];
  if (btg) obligations.push({ kind: 'mark-break-glass' }, { kind: 'audit-severity', severity: 'high' });
  else if (ctx.role.auditSeverity === 'high') obligations.push({ kind: 'audit-severity', severity: 'high' });
  return {
    effect: 'permit',
    reason: btg ? 'break-glass' : reason,
    rule,
    message,
    evidence,
    obligations,
    patients,
    purposeOfUse: btg ? 'BTG' : ctx.role.purposeOfUse,
  };
}

/** DIM and the roles that see every record: everything readable, writes only where the policy says. */
function decideAllRecords(ctx: Ctx): Decision {
  const it = ctx.in.interaction;
  const r = ctx.role;
  if (isWrite(it)) return decideWrite(ctx);
  if (it.kind === 'operation' && !operationAllowed(r, it)) {
    return deny('interaction-forbidden', `The operation $${it.operation} is not allowed to role "${r.id}".`, `${r.id}.operations`);
  }
  if (it.kind === 'batch' || it.kind === 'transaction') return permit(ctx, 'role-all-records', `${r.id}.${it.kind}`, 'Bundle entries decided one by one', [], []);
  return permit(ctx, 'role-all-records', `${r.id}.all-records`, 'Role sees all records', patientsInUrl(it), []);
}

/** Care team, own record, mandate: only the listed patients (plus break-the-glass grants). */
function decideListed(ctx: Ctx): Decision {
  const it = ctx.in.interaction;
  const r = ctx.role;
  const urlStatus = ctx.in.policy.refusals.urlDecided;
  const outside = (patient: string, rule: string) =>
    deny('no-care-relationship', outsideMessage(r.profile), rule, { patients: [patient], hide: urlStatus === 404 });

  if (it.kind === 'batch' || it.kind === 'transaction') {
    return permit(ctx, 'care-relationship', `${r.id}.${it.kind}`, 'Bundle entries decided one by one', [], []);
  }
  if (isWrite(it)) return decideWrite(ctx);

  switch (it.kind) {
    case 'search-system':
    case 'history-system':
      // A signed paging link (HAPI pages on its base URL) continues a search that was judged.
      if (!ctx.in.paging && !r.allowSearchFeatures.includes('system-search')) {
        return deny('interaction-forbidden', 'System-level search and history are not allowed to this role.', `${r.id}.system-level`);
      }
      break;
    case 'history-type':
      if (!r.allowSearchFeatures.includes('type-history')) {
        return deny('interaction-forbidden', 'Type-level history is not allowed to this role.', `${r.id}.type-history`);
      }
      break;
    case 'operation': {
      if (!operationAllowed(r, it) || it.operationLevel !== 'instance' || it.resourceType !== 'Patient') {
        return deny('interaction-forbidden', `The operation $${it.operation ?? ''} at ${it.operationLevel} level is not allowed to role "${r.id}".`, `${r.id}.operations`);
      }
      break;
    }
    case 'search-compartment':
      if (it.compartment?.type !== 'Patient') {
        return deny('interaction-forbidden', 'Only Patient compartments may be searched by this role.', `${r.id}.compartment`);
      }
      break;
    default:
      break;
  }

  const forbidden = forbiddenParam(ctx, it.params);
  if (forbidden) return deny('parameter-forbidden', forbidden, `${r.id}.search-parameters`);

  const inUrl = patientsInUrl(it);
  for (const p of inUrl) {
    if (!hasPatient(ctx.careSet, p)) return outside(p, `${r.id}.${r.profile}`);
  }

  const obligations: Obligation[] = [];
  if ((it.kind === 'search-type' || it.kind === 'history-type') && !ctx.in.paging && it.resourceType) {
    const narrow = narrowing(ctx, it);
    if (narrow === 'empty') {
      return permit(ctx, 'filtered-search', `${r.id}.${r.profile}`, 'No patient of the care set matches', [], [{ kind: 'narrow', param: '', patients: [] }]);
    }
    if (narrow) obligations.push(narrow);
  }
  return permit(ctx, reasonFor(r.profile), `${r.id}.${r.profile}`, 'Within the care relationships', inUrl, obligations);
}

function reasonFor(profile: RoleConfig['profile']): DecisionReason {
  return profile === 'own-record' ? 'own-record' : profile === 'mandate' ? 'mandate' : 'care-relationship';
}

function outsideMessage(profile: RoleConfig['profile']): string {
  switch (profile) {
    case 'own-record':
      return 'Patients may only see their own record.';
    case 'mandate':
      return 'This record is not covered by a valid mandate.';
    default:
      return 'This patient is not in your care relationships (CareTeam or Encounter). In an emergency, if your role allows it, break the glass: POST Patient/<id>/$break-glass with a reason, or the page /caregate/break-glass.';
  }
}

function hasPatient(set: CareSet, id: string): boolean {
  return set.scope === 'all' || set.patients.has(id);
}

function isWrite(it: FhirInteraction): boolean {
  return it.kind === 'create' || it.kind === 'update' || it.kind === 'patch' || it.kind === 'delete';
}

function operationAllowed(r: RoleConfig, it: FhirInteraction): boolean {
  const op = it.operation ?? '';
  return r.operations.some((o) => o.replace(/^\$/, '') === op);
}

/** Patients named by the URL itself: `Patient/x`, `Patient/x/...`, instance operations on a Patient. */
export function patientsInUrl(it: FhirInteraction): string[] {
  if (it.compartment?.type === 'Patient') return [it.compartment.id];
  if (it.resourceType === 'Patient' && it.id) return [it.id];
  return [];
}

/** A refusal message if a parameter reaches beyond what this role may search; undefined when fine. */
function forbiddenParam(ctx: Ctx, params: readonly SearchParam[]): string | undefined {
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

function isPatientParam(type: string, name: string): boolean {
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

/**
 * Narrowing: restrict the upstream query to the patients of the care set so that pages are full
 * and totals true. When the client already names patients, keep those in the care set; when none
 * remain, the answer is an empty searchset without asking the upstream.
 */
function narrowing(ctx: Ctx, it: FhirInteraction): Obligation | 'empty' | undefined {
  const type = it.resourceType!;
  if (ctx.careSet.scope === 'all') return undefined;
  const param = narrowingParam(type);
  if (!param) return undefined;
  const named = it.params.filter((p) => isPatientParam(type, p.name));
  const allowed = [...ctx.careSet.patients.keys()];
  if (named.length > 0) {
    // Every occurrence is ANDed: each must keep at least one patient of the care set.
    let restricted = false;
    for (const p of named) {
      const values = p.value.split(',');
      const ids = values.map((v) => patientIdOf(v, type, p.name)).filter((v): v is string => v !== undefined);
      if (ids.length > 0 && ids.every((id) => !hasPatient(ctx.careSet, id))) return 'empty';
      // The client already restricted the query to patients of the care set: nothing to add.
      if (p.name === param && ids.length === values.length && ids.every((id) => hasPatient(ctx.careSet, id))) restricted = true;
    }
    if (restricted) return undefined;
  }
  if (allowed.length === 0) return 'empty';
  if (allowed.length > ctx.in.policy.search.narrowMaxPatients) return undefined;
  return { kind: 'narrow', param, patients: allowed };
}

/** `Patient/x`, `x` (for patient/_id params) or an absolute URL ending in Patient/x → x. */
function patientIdOf(value: string, type: string, param: string): string | undefined {
  const m = /(?:^|\/)Patient\/([A-Za-z0-9\-.]{1,64})(?:\/_history\/[^/]+)?$/.exec(value);
  if (m) return m[1];
  if ((type === 'Patient' && param === '_id') || param === 'patient') return /^[A-Za-z0-9\-.]{1,64}$/.test(value) ? value : undefined;
  return undefined;
}

/** Writes: the resource before and after must belong to patients this user may see; relationships only by trusted writers. */
function decideWrite(ctx: Ctx): Decision {
  const it = ctx.in.interaction;
  const r = ctx.role;
  const type = it.resourceType ?? '';
  const rule = `${r.id}.write`;
  if (ctx.role.profile === 'own-record' || ctx.role.profile === 'mandate') {
    return deny('interaction-forbidden', 'This role may read, not write.', rule);
  }
  if (RELATIONSHIP_TYPES.has(type) && !r.relationshipWrites.includes(type as never)) {
    return deny('relationship-write-forbidden', `Writes to ${type} change who may see records; role "${r.id}" may not make them.`, rule);
  }
  if (type === 'Patient' && ctx.in.patientLinkChanged && !r.relationshipWrites.includes('Patient.link')) {
    return deny('relationship-write-forbidden', `Patient.link changes who may see records; role "${r.id}" may not make them.`, rule);
  }
  if (it.conditional?.length && ctx.careSet.scope !== 'all') {
    return deny('interaction-forbidden', 'Conditional writes search the whole server; they are not allowed to this role. Write by id.', rule);
  }
  const wp = ctx.in.writePatients;
  if (!wp) return deny('patient-undetermined', 'The patient of this write could not be determined.', rule);
  const sides = [wp.before, wp.after];
  if (sides.some((s) => s === 'undetermined')) {
    return deny('patient-undetermined', 'The patient this resource belongs to could not be determined.', rule, { hide: true });
  }
  const before = Array.isArray(wp.before) ? wp.before : [];
  const after = Array.isArray(wp.after) ? wp.after : [];
  for (const p of before) {
    // The current version is outside: answer as if it did not exist.
    if (!hasPatient(ctx.careSet, p)) return deny('no-care-relationship', 'Resource not found.', rule, { hide: true, patients: [p] });
  }
  for (const p of after) {
    if (!hasPatient(ctx.careSet, p)) return deny('no-care-relationship', outsideMessage(r.profile), rule, { patients: [p] });
  }
  if (ctx.careSet.scope !== 'all' && before.length > 0 && (after.length !== before.length || after.some((p) => !before.includes(p)))) {
    return deny('patient-move-forbidden', 'A resource cannot be moved to another patient.', rule);
  }
  const patients = [...new Set([...before, ...after])];
  return permit(ctx, ctx.careSet.scope === 'all' ? 'role-all-records' : 'care-relationship', rule, 'Write within the care relationships', patients, []);
}

export type { Resource };

const ADMIN_TYPES: ReadonlySet<string> = new Set(ADMIN_READABLE_TYPES);

/**
 * Admission and administrative staff: demographics and stay logistics of every patient, masked;
 * no clinical resource, no search on what the mask removes, no `_has`, includes or operations.
 * Their writes (registering a patient, a stay when the policy allows) may carry nothing clinical.
 */
function decideAdministrative(ctx: Ctx): Decision {
  const it = ctx.in.interaction;
  const r = ctx.role;
  const rule = `${r.id}.administrative`;
  if (it.kind === 'batch' || it.kind === 'transaction') return permit(ctx, 'role-all-records', `${r.id}.${it.kind}`, 'Bundle entries decided one by one', [], []);
  const type = it.resourceType ?? '';
  if (!ADMIN_TYPES.has(type)) {
    return deny('role-forbidden', `Role "${r.id}" sees patient demographics and stay logistics only, not ${type || 'this interaction'}.`, rule);
  }
  if (isWrite(it)) {
    if (it.kind === 'delete' || it.kind === 'patch') return deny('interaction-forbidden', `Role "${r.id}" may register and update, not ${it.kind}.`, rule);
    if (type !== 'Patient' && !r.relationshipWrites.includes(type as never)) {
      return deny('relationship-write-forbidden', `Role "${r.id}" may not write ${type}.`, rule);
    }
    const body = it.body as Resource | undefined;
    if (!body || JSON.stringify(maskForAdministration(body)) !== JSON.stringify(body)) {
      return deny('role-forbidden', `Role "${r.id}" may not write clinical content (reasons, diagnoses, narratives).`, rule);
    }
    return decideWrite(ctx);
  }
  if (it.kind !== 'read' && it.kind !== 'vread' && it.kind !== 'search-type') {
    return deny('interaction-forbidden', `Role "${r.id}" may read and search, not ${it.kind}.`, rule);
  }
  for (const p of it.params) {
    if (p.name === '_sort' ? !isAdminSort(type, p.value) : !isAdminSearchParam(type, p.name) || p.name.includes('.')) {
      return deny('parameter-forbidden', `The search parameter ${p.name} is not available to role "${r.id}".`, rule);
    }
    if (p.modifier !== undefined && p.modifier !== 'exact') {
      return deny('parameter-forbidden', `The modifier :${p.modifier} is not available to role "${r.id}".`, rule);
    }
  }
  return permit(ctx, 'role-all-records', rule, 'Demographics and stay logistics, clinical content masked', patientsInUrl(it), [{ kind: 'mask-clinical' }]);
}

/** What a coding contractor may search with: nothing that identifies a person. */
const DEID_PARAMS: ReadonlySet<string> = new Set(['_id', 'patient', 'subject', 'encounter', 'code', 'category', 'status', 'clinical-status', '_count']);
const DEID_TYPES: ReadonlySet<string> = new Set([
  'Patient', 'Encounter', 'Condition', 'Procedure', 'Observation', 'MedicationRequest', 'MedicationAdministration',
  'DiagnosticReport', 'ServiceRequest', 'AllergyIntolerance', 'Claim', 'ChargeItem',
]);

/**
 * Coding-optimisation contractor: only the stays of a valid engagement, read-only, and every answer
 * de-identified (the response stage replaces ids by keyed pseudonyms and removes what identifies).
 */
function decideDeidentified(ctx: Ctx): Decision {
  const it = ctx.in.interaction;
  const r = ctx.role;
  const rule = `${r.id}.de-identified`;
  if (!ctx.careSet.encounters) {
    return deny('role-forbidden', `No engagement is in force for role "${r.id}" (check engagements in the policy).`, rule, {
      obligations: [{ kind: 'audit-severity', severity: 'high' }],
    });
  }
  if (isWrite(it) || it.kind === 'batch' || it.kind === 'transaction') return deny('interaction-forbidden', `Role "${r.id}" reads only.`, rule);
  if (it.kind !== 'read' && it.kind !== 'vread' && it.kind !== 'search-type') {
    return deny('interaction-forbidden', `Role "${r.id}" may read and search, not ${it.kind}.`, rule);
  }
  const type = it.resourceType ?? '';
  if (!DEID_TYPES.has(type)) return deny('role-forbidden', `Role "${r.id}" does not see ${type}.`, rule);
  // A signed paging link continues a search judged when it was issued (its `_offset`... are the FHIR server's).
  for (const p of ctx.in.paging ? [] : it.params) {
    if (!DEID_PARAMS.has(p.name) || p.modifier !== undefined) {
      return deny('parameter-forbidden', `The search parameter ${p.name}${p.modifier ? `:${p.modifier}` : ''} is not available to role "${r.id}" (it could identify a person).`, rule);
    }
  }
  for (const p of patientsInUrl(it)) {
    if (!hasPatient(ctx.careSet, p)) return deny('no-care-relationship', 'Resource not found.', rule, { hide: true, patients: [p] });
  }
  const obligations: Obligation[] = [{ kind: 'de-identify', profile: r.id }];
  if (it.kind === 'search-type' && !ctx.in.paging) {
    const narrow = narrowing(ctx, it);
    if (narrow === 'empty') return permit(ctx, 'de-identified', rule, 'No listed stay matches', [], [{ kind: 'narrow', param: '', patients: [] }, ...obligations]);
    if (narrow) obligations.push(narrow);
  }
  return permit(ctx, 'de-identified', rule, 'Listed stays, de-identified', patientsInUrl(it), obligations);
}
