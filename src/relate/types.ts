/**
 * Which patients a user may see, and why. Produced by `relate/`, consumed by `policy/` and `shape/`.
 */

/** Why a patient is in the care set: the evidence that goes into the Decision and the AuditEvent. */
export interface Evidence {
  source: 'careteam' | 'encounter' | 'break-glass' | 'own-record' | 'mandate' | 'role' | 'engagement';
  /** The resource that grants access, e.g. `CareTeam/ct-12`, `Encounter/enc-4`, `Consent/c-1`. */
  reference: string | undefined;
  /** For break-the-glass: expiry (ISO) and reason (audit only). */
  until?: string;
  reason?: string;
}

export interface CareSet {
  /** `all` for roles that see every record (DIM); otherwise an explicit set. */
  scope: 'all' | 'listed';
  /** Patient ids (without `Patient/`) → evidence. */
  patients: ReadonlyMap<string, readonly Evidence[]>;
  /** Encounter ids the user may see (for stay-scoped roles such as coding contractors). */
  encounters?: ReadonlySet<string>;
  /**
   * Patients present only through a break-the-glass grant (no other evidence): data of one of them
   * in an answer is a break-the-glass use. Absent when there is none.
   */
  breakGlassOnly?: ReadonlySet<string>;
  /** When this set was resolved (epoch ms). */
  resolvedAt: number;
}
