import { notFound, ProxyError } from '../http/errors.js';
import type { Evidence, Opposition } from '../relate/types.js';
import type { HoldRule } from './patient-rights-config.js';

/** Closed set of reasons, stable for audit review and `caregate explain`. */
export type DecisionReason =
  | 'care-relationship'
  | 'break-glass'
  | 'own-record'
  | 'mandate'
  | 'role-all-records'
  | 'reference-data'
  | 'capabilities'
  | 'filtered-search'
  | 'de-identified'
  /** A DIM contractor's staff member reading identified records, as the engagement's contract allows. */
  | 'engagement-identified'
  | 'default-deny'
  | 'no-care-relationship'
  | 'role-forbidden'
  | 'interaction-forbidden'
  | 'parameter-forbidden'
  | 'scope-ceiling'
  | 'relationship-write-forbidden'
  | 'patient-undetermined'
  | 'patient-move-forbidden'
  | 'patient-opposition'
  | 'category-forbidden'
  | 'lookup-failed';

/**
 * What the stages after `decide()` must do. The response stage reads these and nothing else of the
 * policy or the role: a rule is added by giving it an obligation here and honouring it there.
 */
export type Obligation =
  /** Every resource of the answer is judged against the care set (every permit that returns data). */
  | { kind: 'filter-response' }
  /** Restrict the upstream search to these patients (`param`); an empty list answers an empty searchset locally. */
  | { kind: 'narrow'; param: string; patients: readonly string[] }
  /**
   * Minimisation (CSP L1110-4 II): resources of these data categories (and, unless `uncategorised`,
   * of none) are withheld; `rule` names the matrix row (policy/minimisation.ts).
   */
  | { kind: 'withhold-categories'; categories: readonly string[]; uncategorised: boolean; rule: string }
  /** Sensitive records: resources carrying one of these labels are withheld, each label with its rule. */
  | { kind: 'withhold-labels'; labels: readonly { label: string; rule: string }[] }
  /** Own record, mandate: a resource is shown only when its subject (not a performer) is in the care set. */
  | { kind: 'subject-only' }
  /** AuditEvents are shown whole to this caller (the roles that read the trail); withheld from everyone else. */
  | { kind: 'show-audit-trail' }
  /**
   * Own record, mandate: AuditEvents about the caller's patients are shown in the patient's reduced
   * view (when, who by name and profession, which kind of data, outcome, break-the-glass reason,
   * notification); nothing about other patients or the infrastructure.
   */
  | { kind: 'own-access-history' }
  /**
   * Own record, mandate: documents and results not yet released by a physician (a held-back status
   * or security label) are withheld.
   */
  | { kind: 'hold-unreleased'; rules: readonly HoldRule[]; labels: readonly string[] }
  /**
   * Oppositions in force (CSP L1110-4) that the URL could not decide: resources of these patients
   * that they cover (every one, or those of their classes and security labels) are withheld.
   */
  | { kind: 'withhold-opposed'; oppositions: readonly (Opposition & { patient: string })[] }
  /** Coding contractor: only resources of the stays listed in the care set (`CareSet.encounters`). */
  | { kind: 'stays-only' }
  /** Answers de-identified with the pseudonym key of this engagement. */
  | { kind: 'de-identify'; engagement: string }
  /** Answers masked for administrative staff (no clinical content). */
  | { kind: 'mask-clinical' }
  | { kind: 'audit-severity'; severity: 'normal' | 'high' }
  /** The decision itself is a break-the-glass use: answers say so (`X-Caregate-Break-Glass: active`). */
  | { kind: 'mark-break-glass' }
  /**
   * Patients of the care set reachable only through a break-the-glass grant. Data of one of them in
   * the answer (a search, an include) makes that answer a break-the-glass use for that patient.
   */
  | { kind: 'break-glass-patients'; patients: readonly string[] };

export type ObligationKind = Obligation['kind'];

export interface Decision {
  effect: 'permit' | 'deny';
  reason: DecisionReason;
  /** Id of the matched policy rule, or `default`. */
  rule: string;
  /** Human text for the OperationOutcome / explain (no PHI). */
  message: string;
  evidence: readonly Evidence[];
  obligations: readonly Obligation[];
  /** Patients concerned (ids), when known at decision time. */
  patients: readonly string[];
  /**
   * How a denial is answered: 403 with the message (the default), a 404 identical to a miss
   * (existence hidden), or an empty searchset (a search that named only patients outside the care
   * set: FHIR's "access denied" answer for searches; still recorded as a refusal).
   */
  refuseAs?: 'not-found' | 'empty-searchset';
  purposeOfUse?: 'TREAT' | 'BTG' | 'HOPERAT' | 'PATRQT' | 'PWATRNY' | 'HMARKT' | 'HQUALIMP';
}

/** The obligation of this kind, if the decision carries one. */
export function obligation<K extends ObligationKind>(d: Decision, kind: K): Extract<Obligation, { kind: K }> | undefined {
  return d.obligations.find((o): o is Extract<Obligation, { kind: K }> => o.kind === kind);
}

/** Whether the decision carries an obligation of this kind. */
export function obliges(d: Decision, kind: ObligationKind): boolean {
  return d.obligations.some((o) => o.kind === kind);
}

/**
 * The error a denial is answered with: the 404 of a miss when existence is hidden, otherwise a
 * 403 with the decision's message. (`empty-searchset` denials are answered by the plan stage.)
 */
export function refusalOf(d: Decision): ProxyError {
  if (d.refuseAs === 'not-found') return notFound(d.reason);
  return new ProxyError('ERR_FORBIDDEN', d.message, { detail: d.reason, issue: 'forbidden' });
}
