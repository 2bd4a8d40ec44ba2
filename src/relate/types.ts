/**
 * Which patients a user may see, and why. Produced by `relate/`, consumed by `policy/` and `shape/`.
 */

/** Why a patient is in the care set: the evidence that goes into the Decision and the AuditEvent. */
export interface Evidence {
  source: 'careteam' | 'encounter' | 'break-glass' | 'own-record' | 'mandate' | 'role' | 'engagement' | 'opposition';
  /** The resource that grants access, e.g. `CareTeam/ct-12`, `Encounter/enc-4`, `Consent/c-1`. */
  reference: string | undefined;
  /** For break-the-glass: expiry (ISO) and reason (audit only). */
  until?: string;
  reason?: string;
  /** For an opposition (`Consent/…`): a break-the-glass grant overrode it (the policy allows it). */
  overridden?: boolean;
}

/**
 * A patient's opposition to sharing her record with this caller (CSP L1110-4), read from an active
 * `Consent` whose `provision.type` is deny and whose actors name the caller, one of her roles, her
 * service or a care team she belongs to. `classes` and `labels` limit it to kinds of data; both
 * empty, it covers the whole record.
 */
export interface Opposition {
  /** `Consent/<id>`: the evidence of the refusal. */
  consent: string;
  /** Resource types covered (`provision.class`); empty: every type. */
  classes: readonly string[];
  /** Security labels covered (`provision.securityLabel`, `system|code`); empty: every label. */
  labels: readonly string[];
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
  /** `CareTeam/<id>` of the teams the practitioner is a current member of (directly or nested). */
  teams?: ReadonlySet<string>;
  /**
   * Patients of the set who opposed sharing their record with this caller (CSP L1110-4), with each
   * opposition in force now. Absent when there is none. decide() refuses, or obliges the response
   * to withhold, what they cover; the policy says whether break-the-glass overrides them.
   */
  opposed?: ReadonlyMap<string, readonly Opposition[]>;
  /** When this set was resolved (epoch ms). */
  resolvedAt: number;
}
