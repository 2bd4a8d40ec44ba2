import type { AuditEvent, AuditEventEntity, AuditEventEntityDetail } from '@medplum/fhirtypes';
import {
  AgentType,
  AuditAction,
  AuditOutcome,
  CaregateSubtype,
  DetailType,
  EntityName,
  EntityType,
  EventType,
  ObjectRole,
  PurposeOfUse,
  SourceType,
} from './codes.js';

/**
 * The AuditEvent that says the patient and her attending physician were told of a break-the-glass
 * opening (status `sent`), or could not be yet (`failed`, retried until it is sent). It is what
 * the DIM's review reads to show each opening as sent, pending or failed, and what the patient's
 * access history shows. caregate itself is the requestor.
 */

/** What was told of a break-the-glass opening, to whom, and how. */
export interface NotificationFacts {
  /** The id of the break-the-glass start AuditEvent it tells of. */
  of: string;
  status: 'sent' | 'failed';
  channel: 'communication' | 'webhook';
  /** Who was (to be) told: `patient`, `attending`. */
  recipients: readonly string[];
  /** The Communications written (`Communication/<id>`). */
  communications?: readonly string[];
  /** Why it failed (an error code or HTTP status; no PHI). */
  failure?: string;
}

/** The notification event; `patients` are ids or `Patient/<id>`. */
export function notificationEvent(
  n: NotificationFacts & { id: string; recorded: string; site: string; requestId: string; patients: readonly string[] },
): AuditEvent {
  const sent = n.status === 'sent';
  const to = n.recipients.join(' ');
  const details: AuditEventEntityDetail[] = [
    { type: DetailType.notificationOf, valueString: n.of },
    { type: DetailType.notificationStatus, valueString: n.status },
    { type: DetailType.notificationChannel, valueString: n.channel },
    { type: DetailType.notificationRecipients, valueString: to },
  ];
  if (n.failure) details.push({ type: DetailType.failureCode, valueString: n.failure });
  const entity: AuditEventEntity[] = [
    ...n.patients.map((p) => ({ type: EntityType.person, role: ObjectRole.patient, what: { reference: p.startsWith('Patient/') ? p : `Patient/${p}` } })),
    ...(n.communications ?? []).map((reference) => ({ type: EntityType.systemObject, role: ObjectRole.domainResource, what: { reference } })),
    { type: EntityType.requestId, what: { identifier: { value: n.requestId } } },
    {
      type: EntityType.systemObject,
      role: ObjectRole.securityResource,
      name: EntityName.notification,
      what: { identifier: { value: n.of } },
      description: `Notification of break-the-glass ${n.of}: ${n.status}`,
      detail: details,
    },
  ];
  return {
    resourceType: 'AuditEvent',
    id: n.id,
    type: EventType.securityAlert,
    subtype: [CaregateSubtype.breakGlassNotification],
    action: n.channel === 'communication' ? AuditAction.create : AuditAction.execute,
    recorded: n.recorded,
    outcome: sent ? AuditOutcome.success : AuditOutcome.seriousFailure,
    outcomeDesc: sent
      ? `Break-the-glass notification sent (${n.channel}) to: ${to}`
      : `Break-the-glass notification not sent yet (${n.failure ?? 'failed'}); it is retried`,
    purposeOfEvent: [{ coding: [PurposeOfUse.BTG] }],
    agent: [{ type: { coding: [AgentType.application] }, who: { display: 'caregate', identifier: { value: n.site } }, requestor: true }],
    source: { site: n.site, observer: { display: 'caregate' }, type: [SourceType.applicationServer] },
    entity,
  };
}

/** The notification status of each break-the-glass opening (start event id) the events tell of: `sent` wins over `failed`. */
export function notificationStatuses(events: readonly AuditEvent[]): Map<string, 'sent' | 'failed'> {
  const out = new Map<string, 'sent' | 'failed'>();
  for (const e of events) {
    if (!e.subtype?.some((c) => c.system === CaregateSubtype.breakGlassNotification.system && c.code === CaregateSubtype.breakGlassNotification.code)) continue;
    const details = e.entity?.find((en) => en.name === EntityName.notification)?.detail ?? [];
    const of = details.find((d) => d.type === DetailType.notificationOf)?.valueString;
    const status = details.find((d) => d.type === DetailType.notificationStatus)?.valueString;
    if (!of || (status !== 'sent' && status !== 'failed')) continue;
    if (out.get(of) !== 'sent') out.set(of, status);
  }
  return out;
}
