import { randomUUID } from 'node:crypto';
import type { AuditEvent, AuditEventAgent, AuditEventEntity, AuditEventEntityDetail } from '@medplum/fhirtypes';
import { ErrorCodes } from '../http/errors.js';
import type { InteractionKind } from '../fhir/interaction.js';
import type { AuditInput } from './audit-input.js';
import {
  breakGlassEntities,
  oppositionEntities,
  clientAgent,
  dataEntities,
  detail,
  evidenceEntities,
  evidenceFor,
  outcomeDescription,
  outcomeEntity,
  patientEntity,
  purposeOfEvent,
  queryEntity,
  requestIdEntity,
  restAgents,
  unique,
  userAgent,
} from './build-parts.js';
import {
  AgentType,
  AuditAction,
  AuditOutcome,
  DcmSubtype,
  DetailType,
  EntityName,
  EntityType,
  EventType,
  ObjectRole,
  SourceType,
  Systems,
  type AuditActionCode,
  type AuditOutcomeCode,
  type RestfulInteractionCode,
} from './codes.js';

/**
 * The AuditEvent builder: one interaction (or a break-the-glass start, a failed identification, a
 * policy reload) in, its BALP-shaped AuditEvents out. The input type is audit-input.ts; the agents
 * and entities the events are made of are build-parts.ts.
 */

/**
 * Builds the IHE BALP AuditEvents of one interaction (one per patient for multi-patient searches),
 * or the DCM 110113/110127 companion event(s) of a break-the-glass start, the DCM 110114 event of a
 * failed identification, the DCM 110113/110129 event of a policy reload. Every event carries a fresh
 * client-assigned id: it is stored with the event in the spool, so a shipment retry rewrites the
 * same resource instead of duplicating it.
 */
export function buildAuditEvents(input: AuditInput): AuditEvent[] {
  const ids = idSource(input);
  const kind = input.kind ?? 'access';
  const patients = unique(input.patients.map(patientRef));
  switch (kind) {
    case 'access':
      return accessEvents(input, patients, ids);
    case 'login-failure':
      return [loginFailureEvent(input, patients, ids())];
    case 'policy-reload':
      return [policyReloadEvent(input, ids())];
    case 'break-glass-start':
      // Only the companion security alert: the interaction that opened the grant gets its own
      // access event when it is answered (with its real status).
      return (patients.length ? patients : [undefined]).map((p) => breakGlassStartEvent(input, p, ids()));
  }
}

/**
 * The R4 outcome: 0 success; 4 refused or rejected (401, 400, policy 403/404, denial answered with an
 * empty Bundle); 8 the upstream or a lookup failed (502/503/504, upstream 5xx); 12 caregate itself failed (500).
 */
export function auditOutcome(input: Pick<AuditInput, 'kind' | 'decision' | 'httpStatus' | 'upstreamStatus' | 'failure'>): AuditOutcomeCode {
  if (input.kind === 'login-failure') return AuditOutcome.minorFailure;
  const code = input.failure?.code;
  if (code !== undefined && Object.hasOwn(ErrorCodes, code)) {
    if (code === 'ERR_INTERNAL') return AuditOutcome.majorFailure;
    if (code.startsWith('ERR_UPSTREAM_') || code === 'ERR_LOOKUP_FAILED' || code === 'ERR_AUDIT_UNAVAILABLE' || code === 'ERR_SHARED_STATE_UNAVAILABLE') {
      return AuditOutcome.seriousFailure;
    }
    return AuditOutcome.minorFailure;
  }
  if (input.upstreamStatus !== undefined && input.upstreamStatus >= 500) return AuditOutcome.seriousFailure;
  const status = input.httpStatus;
  if (status !== undefined && status >= 500) return status === 500 ? AuditOutcome.majorFailure : AuditOutcome.seriousFailure;
  if (status !== undefined && status >= 400) return AuditOutcome.minorFailure;
  if (input.decision?.effect === 'deny') return AuditOutcome.minorFailure;
  if (input.failure) return AuditOutcome.seriousFailure;
  return AuditOutcome.success;
}

// ---------------------------------------------------------------------------------------------
// Event kinds

function accessEvents(input: AuditInput, patients: string[], ids: () => string): AuditEvent[] {
  const it = input.interaction;
  const interactionKind = it?.kind;
  const split = it !== undefined && PER_PATIENT.has(it.kind) && patients.length > 1;
  const groups: string[][] = split ? patients.map((p) => [p]) : [patients];
  const btgDecision = isBreakGlass(input);
  const btgUse = input.breakGlassPatients;
  // What every event of the interaction says alike is built once and shared by them (a DIM search
  // makes one event per patient, a hundred per page); events are serialised, never modified.
  // The parts that depend on break-the-glass exist in two variants, built when first needed.
  const variant = new Map<boolean, { purpose: Pick<AuditEvent, 'purposeOfEvent'>; agent: AuditEventAgent[] }>();
  const byBtg = (btg: boolean) => {
    let v = variant.get(btg);
    if (!v) variant.set(btg, (v = { purpose: purposeOfEvent(input, btg), agent: [...restAgents(input, interactionKind), ...userAgent(input, btg)] }));
    return v;
  };
  const shared = {
    subtype: [{ system: Systems.restfulInteraction, code: restfulCode(interactionKind) }],
    action: actionFor(interactionKind),
    outcome: auditOutcome(input),
    outcomeDesc: outcomeDescription(input),
    source: source(input.site),
    query: it && QUERY_KINDS.has(it.kind) ? [queryEntity(input, it)] : [],
    request: requestIdEntity(input.requestId),
    decision: outcomeEntity(input),
    data: split ? [] : dataEntities(input),
    period: { start: input.recorded },
  };
  return groups.map((group) => {
    const btg = btgDecision || (btgUse !== undefined && group.some((p) => btgUse.has(p.slice('Patient/'.length))));
    const v = byBtg(btg);
    const entities: AuditEventEntity[] = [
      ...group.map(patientEntity),
      ...shared.data,
      ...shared.query,
      shared.request,
      shared.decision,
      ...evidenceEntities(evidenceFor(input, group)),
      ...oppositionEntities(input, group),
      ...(btg ? breakGlassEntities(input, group) : []),
    ];
    return {
      resourceType: 'AuditEvent',
      id: ids(),
      type: EventType.rest,
      subtype: shared.subtype,
      action: shared.action,
      // The occurrence (CI-SIS TDE requires period.start): when caregate received the request.
      period: shared.period,
      recorded: input.recorded,
      outcome: shared.outcome,
      outcomeDesc: shared.outcomeDesc,
      ...v.purpose,
      agent: v.agent,
      source: shared.source,
      entity: entities,
    } satisfies AuditEvent;
  });
}

function breakGlassStartEvent(input: AuditInput, patient: string | undefined, id: string): AuditEvent {
  const group = patient ? [patient] : [];
  return {
    resourceType: 'AuditEvent',
    id,
    type: EventType.securityAlert,
    subtype: [DcmSubtype.emergencyOverrideStarted],
    action: AuditAction.execute,
    period: { start: input.recorded },
    recorded: input.recorded,
    outcome: auditOutcome(input),
    outcomeDesc: input.decision?.effect === 'deny' || input.failure ? outcomeDescription(input) : 'Break-the-glass access opened',
    ...purposeOfEvent(input, true),
    agent: [...restAgents(input, undefined), ...userAgent(input, true)],
    source: source(input.site),
    entity: [
      ...group.map(patientEntity),
      requestIdEntity(input.requestId),
      outcomeEntity(input),
      ...breakGlassEntities(input, group),
    ],
  };
}

function loginFailureEvent(input: AuditInput, patients: string[], id: string): AuditEvent {
  const it = input.interaction;
  return {
    resourceType: 'AuditEvent',
    id,
    type: EventType.userAuthentication,
    subtype: [DcmSubtype.login],
    action: AuditAction.execute,
    period: { start: input.recorded },
    recorded: input.recorded,
    outcome: AuditOutcome.minorFailure,
    outcomeDesc: outcomeDescription({ ...input, kind: 'login-failure' }),
    // No user agent: the credential was not verified, so nothing it claims is recorded as fact.
    agent: restAgents(input, undefined),
    source: source(input.site),
    entity: [
      ...patients.map(patientEntity),
      ...dataEntities(input),
      ...(it && QUERY_KINDS.has(it.kind) ? [queryEntity(input, it)] : []),
      requestIdEntity(input.requestId),
      outcomeEntity({ ...input, kind: 'login-failure' }),
    ],
  };
}

function policyReloadEvent(input: AuditInput, id: string): AuditEvent {
  if (!input.policy) throw new TypeError('policy-reload audit input needs `policy`');
  const failed = input.failure !== undefined;
  const details: AuditEventEntityDetail[] = [];
  if (input.policy.previousRevision) details.push(detail(DetailType.policyPreviousRevision, input.policy.previousRevision));
  if (input.failure) details.push(detail(DetailType.failureCode, input.failure.code));
  const caregate: AuditEventAgent = {
    type: { coding: [AgentType.application] },
    who: { display: 'caregate', identifier: { value: input.site } },
    // Without an administrator behind the reload (file watch, SIGHUP), caregate itself asked for it.
    requestor: input.principal === undefined,
  };
  return {
    resourceType: 'AuditEvent',
    id,
    type: EventType.securityAlert,
    subtype: [DcmSubtype.securityConfiguration],
    action: AuditAction.execute,
    period: { start: input.recorded },
    recorded: input.recorded,
    outcome: failed ? AuditOutcome.seriousFailure : AuditOutcome.success,
    outcomeDesc: failed
      ? `Policy reload failed (${input.failure!.code}): ${input.failure!.message}; revision ${input.policy.previousRevision ?? 'unknown'} stays in force`
      : `Policy revision ${input.policy.revision} in force`,
    agent: [
      caregate,
      ...(input.clientAddress ? [clientAgent(input, AgentType.sourceRoleId)] : []),
      ...userAgent(input, false),
    ],
    source: source(input.site),
    entity: [
      {
        type: EntityType.systemObject,
        role: ObjectRole.securityResource,
        name: EntityName.policy,
        what: { identifier: { system: Systems.policyRevision, value: input.policy.revision } },
        description: `caregate policy revision ${input.policy.revision}`,
        ...(details.length ? { detail: details } : {}),
      },
      requestIdEntity(input.requestId),
    ],
  };
}

// ---------------------------------------------------------------------------------------------
// Helpers

/** Interactions whose events are split per patient (BALP: one AuditEvent per patient of a query). */
const PER_PATIENT: ReadonlySet<InteractionKind> = new Set([
  'search-type',
  'search-system',
  'search-compartment',
  'history-type',
  'history-system',
  'operation',
  'batch',
  'transaction',
]);

/** Interactions that get a BALP query entity. */
const QUERY_KINDS: ReadonlySet<InteractionKind> = new Set([
  'search-type',
  'search-system',
  'search-compartment',
  'history-type',
  'history-system',
]);

function restfulCode(kind: InteractionKind | undefined): RestfulInteractionCode {
  switch (kind) {
    case undefined:
      return 'operation';
    case 'search-compartment':
      return 'search';
    default:
      return kind;
  }
}

function actionFor(kind: InteractionKind | undefined): AuditActionCode {
  switch (kind) {
    case 'read':
    case 'vread':
    case 'history-instance':
      return AuditAction.read;
    case 'create':
      return AuditAction.create;
    case 'update':
    case 'patch':
      return AuditAction.update;
    case 'delete':
      return AuditAction.delete;
    default:
      return AuditAction.execute;
  }
}

function isBreakGlass(input: AuditInput): boolean {
  const d = input.decision;
  return (
    input.kind === 'break-glass-start' ||
    (d !== undefined &&
      d.effect === 'permit' &&
      (d.reason === 'break-glass' || d.purposeOfUse === 'BTG' || d.obligations.some((o) => o.kind === 'mark-break-glass')))
  );
}

function source(site: string): AuditEvent['source'] {
  return { site, observer: { display: 'caregate' }, type: [SourceType.applicationServer] };
}

function patientRef(p: string): string {
  return p.startsWith('Patient/') ? p : `Patient/${p}`;
}

function idSource(input: AuditInput): () => string {
  if (input.ids) {
    const ids = input.ids;
    let i = 0;
    return () => {
      const id = ids[i++];
      if (id === undefined) throw new TypeError('buildAuditEvents: fewer ids than events');
      return id;
    };
  }
  return input.newId ?? randomUUID;
}
