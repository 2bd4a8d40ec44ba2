import type { FhirInteraction } from '../fhir/interaction.js';
import { isWrite, patientsInUrl } from '../fhir/interaction.js';
import { paramKind } from '../fhir/searchparams.js';
import { scopeAllows } from '../identity/scopes.js';
import type { Principal } from '../identity/principal.js';
import { decideAdministrative } from './administrative.js';
import type { RoleConfig } from './config.js';
import type { Decision, DecisionReason, Obligation } from './decision.js';
import { decideDeidentified } from './decide-deidentified.js';
import { decideAccessHistory } from './decide-access-history.js';
import { forbiddenParam, narrowing, patientsNamed } from './search-scope.js';
import { decideWrite } from './decide-write.js';
import { blockingOpposition, oppositionEvidence, oppositionMessage, oppositionView } from './opposition.js';
import { deny, hasPatient, outsideMessage, permit, type Ctx, type DecideInput } from './verdicts.js';
import { minimisationFor, typeWhollyIn } from './minimisation.js';

/**
 * The policy: principal × interaction × care set → Decision. Pure, synchronous, default deny.
 *
 * Every decision is made here, batch entries included (`decideBundle` combines them), and carries
 * everything the later stages need as obligations: nothing after `decide()` builds or edits a
 * Decision, and the response stage reads obligations, never the role. Every permit that returns
 * data carries `filter-response`: narrowing the upstream query is an optimisation, the response
 * filter is the boundary.
 */

export type { DecideInput } from './verdicts.js';

export function decide(input: DecideInput): Decision {
  const it = input.interaction;
  if (it.kind === 'capabilities') {
    return { effect: 'permit', reason: 'capabilities', rule: 'public.capabilities', message: 'Capability statement', evidence: [], obligations: [], patients: [] };
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
  const ctx: Ctx = {
    in: input,
    role,
    careSet: input.careSet,
    opposition: oppositionView(input.careSet, input.policy),
    minimisation: minimisationFor(input.policy.minimisation, input.principal, role),
  };

  const ceiling = scopeCeiling(input.principal, it);
  if (ceiling) return deny('scope-ceiling', ceiling, `${role.id}.scope`);
  const unknown = input.paging ? undefined : unknownParam(it);
  if (unknown) return deny('parameter-forbidden', unknown, `${role.id}.search-parameters`);

  if (it.resourceType === 'AuditEvent' || it.compartment?.type === 'AuditEvent') {
    if (!role.readAudit && (role.profile === 'own-record' || role.profile === 'mandate') && input.policy.patientRights.accessHistory.enabled) {
      return decideAccessHistory(ctx);
    }
    if (!role.readAudit || (it.method !== 'GET' && !isSearchPost(it))) {
      return deny('role-forbidden', 'The audit trail is read by the roles the policy names, and written by caregate only.', `${role.id}.audit`);
    }
    return permit(ctx, 'role-all-records', `${role.id}.audit`, 'Audit trail', [], []);
  }
  if (it.resourceType === 'Subscription' && it.method !== 'GET') {
    return deny('interaction-forbidden', 'Subscriptions cannot be written through caregate.', `${role.id}.subscription`);
  }
  if (it.kind === 'batch' || it.kind === 'transaction') {
    if (role.profile === 'de-identified') return deny('interaction-forbidden', `Role "${role.id}" reads only.`, `${role.id}.de-identified`);
    const listed = role.profile === 'care-team' || role.profile === 'own-record' || role.profile === 'mandate';
    return permit(ctx, listed ? 'care-relationship' : 'role-all-records', `${role.id}.${it.kind}`, 'Bundle entries decided one by one', [], []);
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

/**
 * The decision of a batch or transaction, from the decision of the Bundle itself and of each entry
 * (each decided by `decide()` as a standalone request). A batch is permitted as a whole and its
 * refused entries are answered with their own refusal; a transaction is all or nothing, so one
 * refused entry refuses it whole.
 */
export function decideBundle(bundle: Decision, it: FhirInteraction, entries: readonly Decision[]): Decision {
  if (bundle.effect === 'deny' || it.kind !== 'transaction') return bundle;
  const refused = entries.find((d) => d.effect === 'deny');
  if (!refused) return bundle;
  return { ...refused, message: `The transaction was refused whole: ${refused.message}` };
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
  const type = it.resourceType ?? '*';
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

function decideAllRecords(ctx: Ctx): Decision {
  const it = ctx.in.interaction;
  const r = ctx.role;
  if (isWrite(it)) return decideWrite(ctx);
  if (it.kind === 'operation' && !operationAllowed(r, it)) {
    return deny('interaction-forbidden', `The operation $${it.operation} is not allowed to role "${r.id}".`, `${r.id}.operations`);
  }
  return permit(ctx, 'role-all-records', `${r.id}.all-records`, 'Role sees all records', patientsInUrl(it), []);
}

/** Care team, own record, mandate: only the listed patients (plus break-the-glass grants). */
function decideListed(ctx: Ctx): Decision {
  const it = ctx.in.interaction;
  const r = ctx.role;
  const urlStatus = ctx.in.policy.refusals.urlDecided;
  const outside = (patient: string, rule: string) =>
    deny('no-care-relationship', outsideMessage(r.profile), rule, { patients: [patient], ...(urlStatus === 404 ? { refuseAs: 'not-found' as const } : {}) });

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
      if (it.operation === 'break-glass') return decideBreakGlassOperation(ctx);
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
  const opposed = refusedByOpposition(ctx, inUrl);
  if (opposed) return opposed;

  // Minimisation: a type the caller's profession may not read at all is refused before anything is asked.
  const read = ctx.minimisation.read;
  const type = it.resourceType && it.resourceType !== '*' ? it.resourceType : undefined;
  const whole = read && type ? typeWhollyIn(ctx.in.policy.minimisation, type, read.categories) : undefined;
  if (whole) {
    return deny('category-forbidden', `Your profession does not read ${whole} (${type}) under the policy's minimisation rules (${read!.rule}).`, read!.rule);
  }

  const obligations: Obligation[] = [];
  if ((it.kind === 'search-type' || it.kind === 'history-type') && (!ctx.in.paging || ctx.in.renarrow) && it.resourceType) {
    const narrow = narrowing(ctx, it);
    if (narrow?.kind === 'outside') {
      // The search names only patients outside the care set: answered like FHIR's "access denied"
      // for a search (an empty Bundle), and recorded as the refusal it is, against those patients.
      return deny('no-care-relationship', outsideMessage(r.profile), `${r.id}.${r.profile}`, { patients: narrow.patients, refuseAs: 'empty-searchset' });
    }
    if (narrow?.kind === 'none') {
      return permit(ctx, 'filtered-search', `${r.id}.${r.profile}`, 'No patient of the care set matches', [], [{ kind: 'narrow', param: '', patients: [] }]);
    }
    if (narrow) obligations.push(narrow);
  }
  return permit(ctx, reasonFor(r.profile), `${r.id}.${r.profile}`, 'Within the care relationships', inUrl, obligations);
}

/**
 * `POST Patient/<id>/$break-glass`: permitted when the role may break the glass and the care set
 * holds the grant the request would open (authorize adds it, pending, before deciding). The grant
 * is opened only after this permit.
 */
function decideBreakGlassOperation(ctx: Ctx): Decision {
  const it = ctx.in.interaction;
  const r = ctx.role;
  const rule = `${r.id}.break-glass`;
  const patient = it.resourceType === 'Patient' && it.operationLevel === 'instance' ? it.id : undefined;
  if (!r.breakGlass || patient === undefined) return deny('interaction-forbidden', `Break-the-glass is not allowed to role "${r.id}".`, rule);
  const grant = (ctx.careSet.patients.get(patient) ?? []).filter((e) => e.source === 'break-glass');
  if (grant.length === 0) return deny('interaction-forbidden', 'Break-the-glass needs a reason (the reason parameter).', rule);
  // An opposition to the whole record that the policy does not let break-the-glass override keeps it
  // closed (a narrower one leaves the rest of the record to the grant, and is withheld from its answers).
  const opposed = blockingOpposition(ctx.opposition, patient, undefined);
  if (opposed) {
    return deny('patient-opposition', oppositionMessage(false, false), rule, { patients: [patient], evidence: [oppositionEvidence(opposed, false)] });
  }
  const overridden = (ctx.opposition.overridden.get(patient) ?? []).map((o) => oppositionEvidence(o, true));
  return {
    effect: 'permit',
    reason: 'break-glass',
    rule,
    message: overridden.length > 0 ? 'Break-the-glass access opened, overriding the patient’s opposition' : 'Break-the-glass access opened',
    evidence: [...grant, ...overridden],
    obligations: [{ kind: 'audit-severity', severity: 'high' }, { kind: 'mark-break-glass' }],
    patients: [patient],
    purposeOfUse: 'BTG',
  };
}

/**
 * A refusal by the patient's opposition (CSP L1110-4), decided on the URL: a patient it names
 * whose opposition covers what the request reads, or a search naming only such patients (answered
 * with an empty searchset, recorded as the refusal it is). Anything narrower is withheld by the
 * response filter (`withhold-opposed`).
 */
function refusedByOpposition(ctx: Ctx, inUrl: readonly string[]): Decision | undefined {
  if (ctx.opposition.active.size === 0) return undefined;
  const it = ctx.in.interaction;
  const r = ctx.role;
  const rule = `${r.id}.${r.profile}`;
  const type = it.kind === 'operation' ? undefined : it.resourceType;
  const message = oppositionMessage(r.breakGlass, ctx.in.policy.patientRights.oppositions.breakGlassOverrides);
  const urlStatus = ctx.in.policy.refusals.urlDecided;
  for (const p of inUrl) {
    const o = blockingOpposition(ctx.opposition, p, type);
    if (o) return deny('patient-opposition', message, rule, { patients: [p], evidence: [oppositionEvidence(o, false)], ...(urlStatus === 404 ? { refuseAs: 'not-found' as const } : {}) });
  }
  if (inUrl.length > 0 || it.kind !== 'search-type' || ctx.in.paging) return undefined;
  const named = [...new Set(patientsNamed(it))];
  if (named.length === 0 || !named.every((p) => hasPatient(ctx.careSet, p))) return undefined;
  const blocking = named.map((p) => blockingOpposition(ctx.opposition, p, type));
  if (blocking.some((o) => o === undefined)) return undefined;
  return deny('patient-opposition', message, rule, {
    patients: named,
    evidence: blocking.map((o) => oppositionEvidence(o!, false)),
    refuseAs: 'empty-searchset',
  });
}

function reasonFor(profile: RoleConfig['profile']): DecisionReason {
  return profile === 'own-record' ? 'own-record' : profile === 'mandate' ? 'mandate' : 'care-relationship';
}


function operationAllowed(r: RoleConfig, it: FhirInteraction): boolean {
  const op = it.operation ?? '';
  return r.operations.some((o) => o.replace(/^\$/, '') === op);
}


