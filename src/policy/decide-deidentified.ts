import { isWrite, patientsInUrl } from '../fhir/interaction.js';
import type { Decision, Obligation } from './decision.js';
import { categoriesOf } from './engagement.js';
import { narrowing } from './search-scope.js';
import { deny, hasPatient, permit, type Ctx } from './verdicts.js';


const DEID_PARAMS: ReadonlySet<string> = new Set(['_id', 'patient', 'subject', 'encounter', 'code', 'category', 'status', 'clinical-status', '_count']);

/**
 * A DIM contractor: only the stays of an engagement in force, only the kinds of data it lists
 * (CSP R6113-5-2 I: strictly necessary), read-only; every answer de-identified (keyed pseudonyms,
 * nothing that identifies) unless the engagement's contract asks for identified access.
 */
export function decideDeidentified(ctx: Ctx): Decision {
  const it = ctx.in.interaction;
  const r = ctx.role;
  const rule = `${r.id}.de-identified`;
  if (!ctx.careSet.encounters || ctx.in.engagement === undefined) {
    return deny('role-forbidden', `No engagement is in force for role "${r.id}" (check engagements in the policy).`, rule, {
      obligations: [{ kind: 'audit-severity', severity: 'high' }],
    });
  }
  if (isWrite(it)) return deny('interaction-forbidden', `Role "${r.id}" reads only.`, rule);
  if (it.kind !== 'read' && it.kind !== 'vread' && it.kind !== 'search-type') {
    return deny('interaction-forbidden', `Role "${r.id}" may read and search, not ${it.kind}.`, rule);
  }
  const type = it.resourceType ?? '';
  const engagement = ctx.in.policy.engagements.find((e) => e.id === ctx.in.engagement);
  if (!engagement || !categoriesOf(engagement).includes(type)) return deny('role-forbidden', `Role "${r.id}" does not see ${type} under this engagement.`, rule);
  // A signed paging link continues a search judged when it was issued (its `_offset`... are the FHIR server's).
  for (const p of ctx.in.paging ? [] : it.params) {
    if (!DEID_PARAMS.has(p.name) || p.modifier !== undefined) {
      return deny('parameter-forbidden', `The search parameter ${p.name}${p.modifier ? `:${p.modifier}` : ''} is not available to role "${r.id}" (it could identify a person).`, rule);
    }
  }
  // The trail tells the DIM which mode each access was made in (R6113-9-2 trace).
  const identified = engagement.access === 'identified';
  const reason = identified ? 'engagement-identified' : 'de-identified';
  for (const p of patientsInUrl(it)) {
    if (!hasPatient(ctx.careSet, p)) return deny('no-care-relationship', 'The patient is outside the engagement (answered as a miss).', rule, { refuseAs: 'not-found', patients: [p] });
  }
  const obligations: Obligation[] = [];
  if (it.kind === 'search-type' && (!ctx.in.paging || ctx.in.renarrow)) {
    const narrow = narrowing(ctx, it);
    // A contractor's miss looks like any other: an empty searchset, never a refusal that confirms a stay exists.
    if (narrow?.kind === 'none' || narrow?.kind === 'outside') return permit(ctx, reason, rule, 'No listed stay matches', [], [{ kind: 'narrow', param: '', patients: [] }]);
    if (narrow) obligations.push(narrow);
  }
  return permit(ctx, reason, rule, identified ? 'Listed stays, identified as the contract allows' : 'Listed stays, de-identified', patientsInUrl(it), obligations);
}
