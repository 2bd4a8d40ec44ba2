import type { FhirInteraction } from '../fhir/interaction.js';
import type { Principal } from '../identity/principal.js';
import type { Decision } from '../policy/decision.js';
import type { Evidence } from '../relate/types.js';

/** The input of the AuditEvent builder (build.ts): what the pipeline knows about one interaction. */

/** What happened, from the audit's point of view. */
export type AuditKind = 'access' | 'break-glass-start' | 'policy-reload' | 'login-failure';

/**
 * Everything the pipeline knows about one interaction when it is about to answer. Plain data:
 * the builder is pure apart from id generation (inject `newId` or `ids` to make it deterministic).
 */
export interface AuditInput {
  /** Default `access`: one FHIR interaction, granted or refused. */
  kind?: AuditKind;
  /** Ids to use, in order, for the events built. Must hold at least as many ids as events. */
  ids?: readonly string[];
  /** Id generator when `ids` is absent. Defaults to `crypto.randomUUID` (UUID v4). */
  newId?: () => string;
  /** The X-Request-Id of the HTTP exchange (or a generated id for events without one). */
  requestId: string;
  /** When the event happened (ISO 8601 instant). */
  recorded: string;
  /** The verified caller. Absent when identification failed: the event then says only what is known. */
  principal?: Principal;
  interaction?: FhirInteraction;
  decision?: Decision;
  /** HTTP status answered to the client. */
  httpStatus?: number;
  /** Status the upstream answered, when the request reached it (a 5xx there is a serious failure). */
  upstreamStatus?: number;
  /** Network address of the client (IP). */
  clientAddress?: string;
  /** OAuth `client_id` of the calling application, when known. */
  clientId?: string;
  /** The FHIR base URL clients use: caregate's network address in the event. */
  publicBaseUrl: string;
  /** `source.site`. */
  site: string;
  /** The query string as received (without `?`), stored base64 in the query entity of searches. */
  rawQuery?: string;
  /**
   * Patients concerned (`123` or `Patient/123`). Searches, histories, operations, batches and
   * break-glass starts get one event per patient; other interactions one event naming them all;
   * none gives one event without a patient entity.
   */
  patients: readonly string[];
  /** Evidence per patient id (e.g. `CareSet.patients`), so per-patient events carry their own. */
  evidenceByPatient?: ReadonlyMap<string, readonly Evidence[]>;
  /** Resources concerned (`Observation/1`). Defaults to the interaction target. Not used on per-patient search events. */
  resourceRefs?: readonly string[];
  /** The error that ended the request (no PHI in `message`). */
  failure?: { code: string; message: string };
  /**
   * Patients whose data the answer holds only through a break-the-glass grant (a search, an
   * include): their per-patient events are break-the-glass uses, whatever the decision's reason.
   */
  breakGlassPatients?: ReadonlySet<string>;
  /**
   * Patients of this interaction the oversight watches (a staff member, a public figure: configured
   * ids or Patient labels, docs/OVERSIGHT.md): the interaction is recorded at high severity.
   */
  sensitivePatients?: ReadonlySet<string>;
  /** What was removed from an answer the caller received (e.g. Patient links to records outside the care set). */
  redactions?: readonly string[];
  /** Break-the-glass details: the justification the user typed and the grant's expiry. */
  breakGlass?: { reason: string; until?: string };
  /** A contractor's engagement in force: its id and the contract (or CNIL authorisation) it rests on. */
  engagement?: { id: string; contractReference: string };
  /** Policy reload: the new revision (hash) and the one it replaced. */
  policy?: { revision: string; previousRevision?: string };
  /**
   * Patients whose data the answer withheld under their opposition (CSP L1110-4), with the
   * Consents: named on their events, with the Consent.
   */
  opposedWithheld?: ReadonlyMap<string, ReadonlySet<string>>;
}
