import type { Evidence } from '../relate/types.js';

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
  | 'default-deny'
  | 'no-care-relationship'
  | 'role-forbidden'
  | 'interaction-forbidden'
  | 'parameter-forbidden'
  | 'scope-ceiling'
  | 'relationship-write-forbidden'
  | 'patient-undetermined'
  | 'patient-move-forbidden'
  | 'lookup-failed';

export type Obligation =
  | { kind: 'filter-response' }
  | { kind: 'narrow'; param: string; patients: readonly string[] }
  | { kind: 'de-identify'; profile: string }
  | { kind: 'mask-clinical' }
  | { kind: 'audit-severity'; severity: 'normal' | 'high' }
  | { kind: 'mark-break-glass' };

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
  /** For denials: answer 404 (existence hidden) rather than 403. */
  hide?: boolean;
  purposeOfUse?: 'TREAT' | 'BTG' | 'HOPERAT' | 'PATRQT' | 'PWATRNY' | 'HMARKT' | 'HQUALIMP';
}
