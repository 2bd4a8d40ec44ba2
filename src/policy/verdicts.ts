import type { Resource } from '@medplum/fhirtypes';
import type { Minimisation } from './minimisation.js';
import type { CareSet, Evidence } from '../relate/types.js';
import type { Policy, RoleConfig } from './config.js';
import type { FhirInteraction } from '../fhir/interaction.js';
import type { Principal } from '../identity/principal.js';
import type { Decision, DecisionReason, Obligation } from './decision.js';
import { oppositionEvidence, type OppositionView } from './opposition.js';

/**
 * What decide() decides on, and the constructors of decisions, shared by the deciders of each
 * profile (decide.ts, decide-write.ts, administrative.ts, engagement.ts).
 */

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
  /** The resource a write replaces and the one it leaves (read to decide it; a Consent must stay an opposition). */
  writeResources?: { before: Resource | undefined; after: Resource | undefined };
  /** A request coming back through a signed paging link: the query was judged when the link was issued. */
  paging?: boolean;
  /** That link was stripped of caregate's narrowing when it was sealed: it is narrowed again. */
  renarrow?: boolean;
  /** De-identified roles: the engagement in force for this caller (its id keys the pseudonyms). */
  engagement?: string;
}

export interface Ctx {
  in: DecideInput;
  role: RoleConfig;
  careSet: CareSet;
  /** The care set's oppositions, in force or overridden by a break-the-glass grant (policy/opposition.ts). */
  opposition: OppositionView;
  /** What the caller's profession may not read or write, and the sensitive labels she may not see (policy/minimisation.ts). */
  minimisation: Minimisation;
}

export function deny(reason: DecisionReason, message: string, rule: string, extra: Partial<Decision> = {}): Decision {
  return { effect: 'deny', reason, message, rule, evidence: [], obligations: [], patients: [], ...extra };
}

/**
 * A permit, with the obligations every later stage needs: the role's view of each resource
 * (subject only, audit trail, masked, de-identified), and break-the-glass marking, computed once
 * here from the care set's evidence.
 */
export function permit(ctx: Ctx, reason: DecisionReason, rule: string, message: string, patients: readonly string[], extra: Obligation[]): Decision {
  const r = ctx.role;
  const evidence: Evidence[] = [];
  for (const p of patients) {
    const overridden = ctx.opposition.overridden.get(p);
    // A patient who opposed this caller is open to her only through the grant: the grant is the
    // evidence, and the Consent it overrides is recorded beside it.
    if (overridden) {
      evidence.push(...(ctx.careSet.patients.get(p) ?? []).filter((e) => e.source === 'break-glass'), ...overridden.map((o) => oppositionEvidence(o, true)));
    } else evidence.push(...(ctx.careSet.patients.get(p) ?? []));
  }
  // The patients the decision names are reachable only through break-the-glass: the decision itself is a BTG use.
  const btg = evidence.length > 0 && evidence.every((e) => e.source === 'break-glass' || (e.source === 'opposition' && e.overridden === true));
  const obligations: Obligation[] = [{ kind: 'filter-response' }, ...roleView(ctx), ...extra];
  if (ctx.opposition.active.size > 0) {
    obligations.push({
      kind: 'withhold-opposed',
      oppositions: [...ctx.opposition.active].flatMap(([patient, list]) => list.map((o) => ({ patient, ...o }))),
    });
  }
  if (btg) obligations.push({ kind: 'mark-break-glass' }, { kind: 'audit-severity', severity: 'high' });
  else {
    if (r.auditSeverity === 'high') obligations.push({ kind: 'audit-severity', severity: 'high' });
    const only = new Set([...(ctx.careSet.breakGlassOnly ?? []), ...ctx.opposition.overridden.keys()]);
    if (only.size > 0) obligations.push({ kind: 'break-glass-patients', patients: [...only] });
  }
  return {
    effect: 'permit',
    reason: btg ? 'break-glass' : reason,
    rule,
    message,
    evidence,
    obligations,
    patients,
    purposeOfUse: btg ? 'BTG' : r.purposeOfUse,
  };
}

/** How each resource of an answer is shown to this role. */
function roleView(ctx: Ctx): Obligation[] {
  const r = ctx.role;
  const out: Obligation[] = [];
  if (r.readAudit) out.push({ kind: 'show-audit-trail' });
  const rights = ctx.in.policy.patientRights;
  switch (r.profile) {
    case 'own-record':
    case 'mandate':
      out.push({ kind: 'subject-only' });
      if (rights.accessHistory.enabled) out.push({ kind: 'own-access-history' });
      if (rights.release.holdBack.length > 0 || rights.release.holdBackLabels.length > 0) {
        out.push({ kind: 'hold-unreleased', rules: rights.release.holdBack, labels: rights.release.holdBackLabels });
      }
      break;
    case 'administrative':
      out.push({ kind: 'mask-clinical' });
      break;
    case 'de-identified':
      if (ctx.in.engagement !== undefined) {
        out.push({ kind: 'stays-only' });
        // Identified access only when the engagement's contract says so (CSP R6113-5-2, decree 2023-498).
        const e = ctx.in.policy.engagements.find((x) => x.id === ctx.in.engagement);
        if (e?.access !== 'identified') out.push({ kind: 'de-identify', engagement: ctx.in.engagement });
      }
      break;
    default:
      break;
  }
  const m = ctx.minimisation;
  if (m.read) out.push({ kind: 'withhold-categories', ...m.read });
  if (m.labels.length > 0) out.push({ kind: 'withhold-labels', labels: m.labels });
  return out;
}

/** DIM and the roles that see every record: everything readable, writes only where the policy says. */
export function hasPatient(set: CareSet, id: string): boolean {
  return set.scope === 'all' || set.patients.has(id);
}

export function outsideMessage(profile: RoleConfig['profile']): string {
  switch (profile) {
    case 'own-record':
      return 'Patients may only see their own record.';
    case 'mandate':
      return 'This record is not covered by a valid mandate.';
    default:
      return 'This patient is not in your care relationships (CareTeam or Encounter). In an emergency, if your role allows it, break the glass: POST Patient/<id>/$break-glass with a reason, or the page /caregate/break-glass.';
  }
}
