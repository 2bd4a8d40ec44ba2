import type { IncomingHttpHeaders } from 'node:http';
import type { FhirInteraction } from '../fhir/interaction.js';
import { isWrite } from '../fhir/interaction.js';
import { ProxyError } from '../http/errors.js';
import type { GrantRecord, GrantTable } from '../shared/state.js';
import type { CareSet, Evidence } from './types.js';

/**
 * Break-the-glass: one user, one named patient, a reason, a few minutes.
 *
 * Grants live in the shared state (`state`): in the process with `memory` (a restart ends every
 * open grant, which fails closed), in Redis with `redis` (every instance honours a grant opened on
 * any of them, and grants outlive restarts). Every grant is audited by the caller before it is
 * stored, and a grant that cannot be stored is not opened (503).
 */
export type BreakGlassGrant = GrantRecord;

export interface BreakGlassStore {
  /** Opens a grant for every instance; rejects with a 503 when it cannot be stored (no grant is open then). */
  grant(g: BreakGlassGrant): Promise<void>;
  /** Open grants of a user known here (expired ones are dropped): never more than were opened. */
  active(user: string): BreakGlassGrant[];
  /** Open grants of a user, known current (to confirm a refusal); throws a 503 when they cannot be. */
  confirmed(user: string): BreakGlassGrant[];
  /** Throws a 503 when no grant can be opened now (checked before the grant's alert is recorded). */
  assertWritable(): void;
}

export function createBreakGlassStore(table: GrantTable, now: () => number = Date.now): BreakGlassStore {
  return {
    grant: (g) => table.put(g),
    active: (user) => table.open(user, now()),
    confirmed: (user) => table.confirmed(user, now()),
    assertWritable: () => table.assertWritable(),
  };
}

/** A checked break-the-glass request: one patient, a readable reason, the end of the grant it would open. */
export interface BreakGlassRequest {
  patient: string;
  reason: string;
  /** Asked with `POST Patient/<id>/$break-glass` rather than a header on a read. */
  asOperation: boolean;
  until: number;
}

export interface BreakGlassSettings {
  /** The role may break the glass (`roles[].breakGlass`). */
  allowed: boolean;
  roleId: string;
  minReasonLength: number;
  durationMinutes: number;
  /** The policy's own header carrying the reason (`breakGlass.header`), besides the FHIR security label. */
  header: string | undefined;
}

const BTG_CATEGORY = /v3-ActReason#BTG\b/;
/** Longest break-the-glass reason recorded (it is copied into every AuditEvent of the grant). */
const MAX_BTG_REASON = 1000;

/**
 * Break-the-glass, asked for in one of two ways:
 * - the FHIR security-label header (`Category: …v3-ActReason#BTG…`, or the policy's own header)
 *   with the reason in `X-BTG-Reason`, on a read or a search naming one patient;
 * - the operation `POST Patient/<id>/$break-glass` with a Parameters body `reason` (what the
 *   break-the-glass page sends, for EHR clients that cannot add headers).
 *
 * Returns the checked request, or undefined when none is asked for; throws a 400/403 when one is
 * asked for and cannot be (no privilege, no reason, a write, no single patient). The grant itself
 * is opened by the caller once the request it comes with is permitted.
 *
 * An EHR that keeps sending the header once a grant is open keeps working: a header naming a
 * patient whose grant is open, or on a request that names no single patient while the user holds
 * an open grant (the EHR's next reads of reference data, its searches), asks for nothing new.
 */
export function parseBreakGlassRequest(
  headers: IncomingHttpHeaders,
  it: FhirInteraction,
  patientsNamed: readonly string[],
  s: BreakGlassSettings,
  isPractitioner: boolean,
  openGrants: readonly string[],
  now: number,
): BreakGlassRequest | undefined {
  const asOperation = it.kind === 'operation' && it.operation === 'break-glass';
  const cat = headers['category'];
  const custom = s.header ? headers[s.header] : undefined;
  const requested = asOperation || (typeof cat === 'string' && BTG_CATEGORY.test(cat)) || custom !== undefined;
  if (!requested) return undefined;
  const named = [...new Set(patientsNamed)];
  if (!asOperation && openGrants.length > 0 && !isWrite(it) && (named.length !== 1 || openGrants.includes(named[0]!))) return undefined;
  let reason: string;
  if (asOperation) {
    if (it.method !== 'POST' || it.operationLevel !== 'instance' || it.resourceType !== 'Patient') {
      throw new ProxyError('ERR_BAD_REQUEST', '$break-glass is POSTed on one patient: Patient/<id>/$break-glass.');
    }
    const body = it.body as { resourceType?: string; parameter?: { name?: string; valueString?: unknown }[] } | undefined;
    const param = body?.resourceType === 'Parameters' ? body.parameter?.find((x) => x.name === 'reason') : undefined;
    reason = typeof param?.valueString === 'string' ? param.valueString.trim() : '';
  } else {
    const reasonHeader = headers['x-btg-reason'] ?? custom;
    try {
      reason = typeof reasonHeader === 'string' ? decodeURIComponent(reasonHeader).trim() : '';
    } catch {
      reason = '';
    }
  }
  if (!s.allowed || !isPractitioner) {
    throw new ProxyError('ERR_FORBIDDEN', `Break-the-glass is not allowed to role "${s.roleId}".`);
  }
  if (!asOperation && isWrite(it)) {
    // A grant is opened to read a record in an emergency, by a read or by the operation; a write
    // (an update, a delete of a record never seen) never opens one on its own.
    throw new ProxyError('ERR_BAD_REQUEST', 'Break-the-glass is opened by a read of the patient, or POST Patient/<id>/$break-glass, not by a write.');
  }
  reason = readableReason(reason);
  const patients = asOperation ? (it.id ? [it.id] : []) : named;
  if (patients.length !== 1 || (it.kind === 'operation' && !asOperation)) {
    throw new ProxyError(
      'ERR_BAD_REQUEST',
      'Break-the-glass names exactly one patient: Patient/<id>, Patient/<id>/<Type>, or a search by patient=<id> or subject=Patient/<id>.',
    );
  }
  if (countReadable(reason) < s.minReasonLength) {
    throw new ProxyError('ERR_BAD_REQUEST', `Break-the-glass needs a reason of at least ${s.minReasonLength} letters or digits.`);
  }
  if (reason.length > MAX_BTG_REASON) {
    throw new ProxyError('ERR_BAD_REQUEST', `A break-the-glass reason is at most ${MAX_BTG_REASON} characters.`);
  }
  return { patient: patients[0]!, reason, asOperation, until: now + s.durationMinutes * 60_000 };
}

/**
 * A break-the-glass reason as a reviewer reads it: control characters (NUL, line breaks) become
 * spaces, invisible format characters (zero-width spaces, bidirectional marks) are removed,
 * whitespace is collapsed. Its length is then judged on letters and digits only, so that ten
 * zero-width spaces, NULs or dots do not pass for a reason.
 */
export function readableReason(raw: string): string {
  return raw
    .normalize('NFC')
    .replace(/\p{Cc}/gu, ' ')
    .replace(/[\p{Cf}\p{Co}\p{Cn}\p{Cs}]/gu, '')
    .replace(/\s+/gu, ' ')
    .trim();
}

function countReadable(reason: string): number {
  return reason.match(/[\p{L}\p{N}]/gu)?.length ?? 0;
}

/**
 * A care set with break-the-glass grants added: each granted patient's evidence says until when,
 * and why; `breakGlassOnly` lists the patients present through a grant alone.
 */
export function withGrants(base: CareSet, grants: readonly { patient: string; reason: string; until: number }[]): CareSet {
  if (grants.length === 0) return base;
  const patients = new Map(base.patients);
  const only = new Set(base.breakGlassOnly);
  for (const g of grants) {
    const had = patients.get(g.patient) ?? [];
    if (had.every((e) => e.source === 'break-glass')) only.add(g.patient);
    patients.set(g.patient, [...had, { source: 'break-glass', reference: undefined, until: new Date(g.until).toISOString(), reason: g.reason } satisfies Evidence]);
  }
  return { ...base, patients, breakGlassOnly: only };
}
