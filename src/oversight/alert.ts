import type { AuditEvent } from '@medplum/fhirtypes';
import { AgentType, DcmSubtype, EntityType, EventType, ObjectRole, Systems } from '../audit/codes.js';

/**
 * An alert to the DIM, and what the detectors read of an AuditEvent.
 *
 * An alert carries no clinical data: the rule, who (her reference and identifier), which patient
 * (a reference, never a name), counts, and the ids of the AuditEvents behind it, where the DIM
 * finds the rest in the trail.
 */

export const ALERT_RULES = [
  'break-glass-burst',
  'distinct-patients',
  'repeated-refusals',
  'staff-patient',
  'flagged-patient',
  'same-surname',
  'off-hours',
  'break-glass-unreviewed',
] as const;
export type AlertRule = (typeof ALERT_RULES)[number];

export interface Alert {
  /** Unique; stable across retries (a receiver can drop duplicates by it). */
  id: string;
  rule: AlertRule;
  /** When it was raised (ISO instant). */
  raisedAt: string;
  /** `audit.site`: which installation. */
  site: string;
  /** The user concerned: `Practitioner/<id>` and her national or login identifier. */
  user?: { reference?: string; identifier?: string };
  /** For failed identifications: the client address that kept failing. */
  clientAddress?: string;
  /** `Patient/<id>`: never a name. */
  patient?: string;
  /** Granted access or refused attempt (patient rules). */
  outcome?: 'granted' | 'refused';
  /** What was counted, and the threshold it reached. */
  count: number;
  threshold: number;
  windowMinutes?: number;
  /** Ids of the AuditEvents behind the alert (at most 50, the latest). */
  auditEvents: string[];
  /** A short sentence without personal data (e.g. "opened 9 days ago, no verdict"). */
  summary: string;
}

/** What the detectors read of one AuditEvent. */
export interface Observation {
  eventId: string;
  kind: 'access' | 'break-glass-start' | 'login-failure' | 'other';
  /** Outcome 0. */
  granted: boolean;
  /** Outcome 4: refused by the policy, or a failed identification. */
  refused: boolean;
  requestId: string | undefined;
  userRef: string | undefined;
  userId: string | undefined;
  /** caregate policy roles of the user. */
  roles: string[];
  /** `Patient/<id>`. */
  patients: string[];
  clientAddress: string | undefined;
}

/** Reads an AuditEvent written by caregate (audit/build.ts) into an observation. */
export function observationOf(ev: AuditEvent): Observation {
  const type = ev.type?.code;
  const sub = ev.subtype?.[0]?.code;
  let kind: Observation['kind'] = 'other';
  if (type === EventType.rest.code) kind = 'access';
  else if (type === EventType.securityAlert.code && sub === DcmSubtype.emergencyOverrideStarted.code) kind = 'break-glass-start';
  else if (type === EventType.userAuthentication.code) kind = 'login-failure';
  let userRef: string | undefined;
  let userId: string | undefined;
  let clientAddress: string | undefined;
  const roles: string[] = [];
  for (const a of ev.agent) {
    if (a.requestor && a.type?.coding?.some((c) => c.code === AgentType.informationRecipient.code)) {
      userRef = a.who?.reference;
      userId = a.who?.identifier?.value;
      for (const r of a.role ?? []) for (const c of r.coding ?? []) if (c.system === Systems.policyRole && c.code) roles.push(c.code);
    } else if (a.network?.type === '2') clientAddress = a.network.address;
  }
  const patients: string[] = [];
  let requestId: string | undefined;
  for (const e of ev.entity ?? []) {
    if (e.type?.code === EntityType.person.code && e.role?.code === ObjectRole.patient.code && e.what?.reference) patients.push(e.what.reference);
    else if (e.type?.code === EntityType.requestId.code) requestId = e.what?.identifier?.value;
  }
  return {
    eventId: ev.id ?? '',
    kind,
    granted: ev.outcome === '0',
    refused: ev.outcome === '4',
    requestId,
    userRef,
    userId,
    roles,
    patients,
    clientAddress,
  };
}

/** The key a user's windows are kept under: her reference, else her identifier, else the address that failed to identify. */
export function userKeyOf(o: Pick<Observation, 'userRef' | 'userId' | 'clientAddress'>): string | undefined {
  if (o.userRef) return o.userRef;
  if (o.userId) return `id:${o.userId}`;
  return o.clientAddress ? `address:${o.clientAddress}` : undefined;
}
