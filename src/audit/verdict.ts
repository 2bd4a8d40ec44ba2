import { randomUUID } from 'node:crypto';
import type { AuditEvent, AuditEventEntity } from '@medplum/fhirtypes';
import type { Principal } from '../identity/principal.js';
import type { AuditInput } from './audit-input.js';
import { detail, patientEntity, requestIdEntity, restAgents, userAgent } from './build-parts.js';
import { AuditAction, AuditOutcome, DetailType, EntityName, EntityType, EventType, ObjectRole, CaregateSubtype, PurposeOfUse, SourceType } from './codes.js';

/**
 * The DIM's verdict on a break-the-glass opening, recorded as an AuditEvent of its own (the trail
 * is the record): a security alert (DCM 110113) with caregate's subtype `break-glass-verdict`,
 * naming the patient, pointing at the opening (`entity.what` = `AuditEvent/<id>` of the DCM 110127
 * event), and carrying the verdict and the DIM's comment. A later verdict on the same opening
 * replaces the earlier one in the review; both stay in the trail.
 */

export const VERDICTS = ['justified', 'unjustified'] as const;
export type Verdict = (typeof VERDICTS)[number];

/** Longest comment recorded with a verdict. */
export const MAX_VERDICT_COMMENT = 2000;

export interface VerdictInput {
  /** The event id; a fresh UUID by default. */
  id?: string;
  requestId: string;
  /** When the verdict was given (ISO instant). */
  recorded: string;
  /** The DIM physician giving it. */
  principal: Principal;
  clientAddress?: string;
  publicBaseUrl: string;
  site: string;
  opening: {
    /** Id of the break-the-glass start AuditEvent. */
    id: string;
    /** Patient id or `Patient/<id>`. */
    patient: string;
    /** Who opened the glass (`Practitioner/<id>`, or their identifier). */
    openedBy: string | undefined;
  };
  verdict: Verdict;
  comment: string;
}

/** Builds the verdict's AuditEvent. */
export function buildVerdictEvent(v: VerdictInput): AuditEvent {
  const patient = v.opening.patient.startsWith('Patient/') ? v.opening.patient : `Patient/${v.opening.patient}`;
  const input: AuditInput = {
    requestId: v.requestId,
    recorded: v.recorded,
    principal: v.principal,
    ...(v.clientAddress ? { clientAddress: v.clientAddress } : {}),
    ...(v.principal.claims.clientId ? { clientId: v.principal.claims.clientId } : {}),
    publicBaseUrl: v.publicBaseUrl,
    site: v.site,
    patients: [patient],
    decision: {
      effect: 'permit',
      reason: 'role-all-records',
      rule: 'readAudit',
      message: 'Break-the-glass verdict',
      evidence: [],
      obligations: [],
      patients: [],
      purposeOfUse: 'HOPERAT',
    },
  };
  const details = [detail(DetailType.verdict, v.verdict), detail(DetailType.verdictComment, v.comment)];
  if (v.opening.openedBy) details.push(detail(DetailType.openedBy, v.opening.openedBy));
  const entities: AuditEventEntity[] = [
    patientEntity(patient),
    {
      type: EntityType.systemObject,
      role: ObjectRole.securityResource,
      name: EntityName.breakGlassOpening,
      what: { reference: `AuditEvent/${v.opening.id}` },
      description: 'Break-the-glass opening under review',
    },
    {
      type: EntityType.systemObject,
      role: ObjectRole.securityResource,
      name: EntityName.verdict,
      description: `Verdict: ${v.verdict}${v.comment ? ` — ${v.comment}` : ''}`,
      detail: details,
    },
    requestIdEntity(v.requestId),
  ];
  return {
    resourceType: 'AuditEvent',
    id: v.id ?? randomUUID(),
    type: EventType.securityAlert,
    subtype: [CaregateSubtype.breakGlassVerdict],
    action: AuditAction.execute,
    period: { start: v.recorded },
    recorded: v.recorded,
    outcome: AuditOutcome.success,
    outcomeDesc: `Break-the-glass ${v.verdict} (verdict of the DIM on AuditEvent/${v.opening.id})`,
    purposeOfEvent: [{ coding: [PurposeOfUse.HOPERAT] }],
    agent: [...restAgents(input, undefined), ...userAgent(input, false)],
    source: { site: v.site, observer: { display: 'caregate' }, type: [SourceType.applicationServer] },
    entity: entities,
  };
}

/** A verdict read back from the trail. */
export interface RecordedVerdict {
  /** The verdict event's id. */
  eventId: string;
  /** The opening it is about (its AuditEvent id). */
  opening: string;
  verdict: Verdict;
  comment: string;
  recorded: string;
  /** The DIM physician: identifier value or reference, and name. */
  by: string;
  byName: string;
}

/** The verdict an AuditEvent carries, or undefined when it is not a verdict event. */
export function verdictOf(ev: AuditEvent): RecordedVerdict | undefined {
  if (!ev.subtype?.some((c) => c.system === CaregateSubtype.breakGlassVerdict.system && c.code === CaregateSubtype.breakGlassVerdict.code)) return undefined;
  const entities = ev.entity ?? [];
  const ref = entities.find((e) => e.name === EntityName.breakGlassOpening)?.what?.reference;
  const v = entities.find((e) => e.name === EntityName.verdict);
  const value = (type: string) => v?.detail?.find((d) => d.type === type)?.valueString;
  const verdict = value(DetailType.verdict);
  if (!ref?.startsWith('AuditEvent/') || !ev.id || !VERDICTS.includes(verdict as Verdict)) return undefined;
  const user = ev.agent.find((a) => a.requestor);
  return {
    eventId: ev.id,
    opening: ref.slice('AuditEvent/'.length),
    verdict: verdict as Verdict,
    comment: value(DetailType.verdictComment) ?? '',
    recorded: ev.recorded,
    by: user?.who?.identifier?.value ?? user?.who?.reference ?? '',
    byName: user?.name ?? '',
  };
}
