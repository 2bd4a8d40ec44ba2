import { randomUUID } from 'node:crypto';
import type {
  AuditEvent,
  AuditEventAgent,
  AuditEventEntity,
  AuditEventEntityDetail,
  CodeableConcept,
  Coding,
} from '@medplum/fhirtypes';
import { ErrorCodes } from '../http/errors.js';
import type { FhirInteraction, InteractionKind } from '../fhir/interaction.js';
import type { Principal } from '../identity/principal.js';
import type { Decision } from '../policy/decision.js';
import type { Evidence } from '../relate/types.js';
import {
  AgentType,
  AuditAction,
  AuditOutcome,
  DcmSubtype,
  DetailType,
  EntityName,
  EntityType,
  EventType,
  NetworkType,
  ObjectRole,
  PurposeOfUse,
  SourceType,
  Systems,
  type AuditActionCode,
  type AuditOutcomeCode,
  type PurposeOfUseCode,
  type RestfulInteractionCode,
} from './codes.js';

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
  /** Break-the-glass details: the justification the user typed and the grant's expiry. */
  breakGlass?: { reason: string; until?: string };
  /** Policy reload: the new revision (hash) and the one it replaced. */
  policy?: { revision: string; previousRevision?: string };
  /**
   * Patients whose data the answer withheld under their opposition (CSP L1110-4), with the
   * Consents: named on their events, with the Consent.
   */
  opposedWithheld?: ReadonlyMap<string, ReadonlySet<string>>;
}

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
    if (code.startsWith('ERR_UPSTREAM_') || code === 'ERR_LOOKUP_FAILED' || code === 'ERR_AUDIT_UNAVAILABLE') {
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
// Agents

function restAgents(input: AuditInput, kind: InteractionKind | undefined): AuditEventAgent[] {
  // BALP: reads name the client "destination" and the server "source"; queries and writes the
  // reverse; deletes name the client "application" and the server "custodian".
  let clientType: Coding = AgentType.sourceRoleId;
  let serverType: Coding = AgentType.destinationRoleId;
  if (kind === 'read' || kind === 'vread' || kind === 'history-instance') {
    clientType = AgentType.destinationRoleId;
    serverType = AgentType.sourceRoleId;
  } else if (kind === 'delete') {
    clientType = AgentType.application;
    serverType = AgentType.custodian;
  }
  return [
    clientAgent(input, clientType),
    {
      type: { coding: [serverType] },
      who: { display: 'caregate', identifier: { value: input.site } },
      requestor: false,
      network: { address: input.publicBaseUrl, type: NetworkType.uri },
    },
  ];
}

function clientAgent(input: AuditInput, type: Coding): AuditEventAgent {
  const clientId = input.clientId ?? input.principal?.claims.clientId;
  return {
    type: { coding: [type] },
    who: clientId ? { identifier: { value: clientId } } : { display: 'unidentified client application' },
    requestor: false,
    network: { address: input.clientAddress ?? 'unknown', type: NetworkType.ipAddress },
  };
}

function userAgent(input: AuditInput, btg: boolean): AuditEventAgent[] {
  const p = input.principal;
  if (!p) return [];
  const c = p.claims;
  const roles: CodeableConcept[] = [];
  const professions = unique([...c.professionCodes, ...(p.certificate?.professionCode ? [p.certificate.professionCode] : [])]);
  for (const code of professions) roles.push({ coding: [{ system: Systems.professionSante, code }] });
  for (const role of p.policyRoles) roles.push({ coding: [{ system: Systems.policyRole, code: role }] });

  const idNatPs = c.idNatPs ?? p.certificate?.idNatPs;
  const reference = p.kind === 'practitioner' ? p.practitioner : p.kind === 'patient' ? p.patient : p.relatedPerson;
  const identifier = idNatPs ? { system: Systems.idNatPs, value: idNatPs } : { system: c.issuer, value: c.subject };
  const certName = [p.certificate?.surname, p.certificate?.givenName].filter(Boolean).join(' ');
  const name = c.displayName ?? (certName || undefined);
  return [
    {
      type: { coding: [AgentType.informationRecipient] },
      who: { reference, identifier },
      ...(c.subject !== identifier.value ? { altId: c.subject } : {}),
      ...(name ? { name } : {}),
      requestor: true,
      ...(roles.length ? { role: roles } : {}),
      ...(c.jti ? { policy: [`urn:ietf:params:oauth:jti:${c.jti}`] } : {}),
      purposeOfUse: [{ coding: purposeCodes(input, btg) }],
    },
  ];
}

function purposeCodes(input: AuditInput, btg: boolean): Coding[] {
  if (btg) return [PurposeOfUse.BTG, PurposeOfUse.ETREAT];
  return [PurposeOfUse[defaultPurpose(input)]];
}

function defaultPurpose(input: AuditInput): PurposeOfUseCode {
  if (input.decision?.purposeOfUse) return input.decision.purposeOfUse;
  switch (input.principal?.kind) {
    case 'patient':
      return 'PATRQT';
    case 'related-person':
      return 'PWATRNY';
    default:
      return 'TREAT';
  }
}

function purposeOfEvent(input: AuditInput, btg: boolean): Pick<AuditEvent, 'purposeOfEvent'> {
  if (!input.principal && !btg) return {};
  return { purposeOfEvent: [{ coding: btg ? [PurposeOfUse.BTG] : [PurposeOfUse[defaultPurpose(input)]] }] };
}

// ---------------------------------------------------------------------------------------------
// Entities

function patientEntity(ref: string): AuditEventEntity {
  return { type: EntityType.person, role: ObjectRole.patient, what: { reference: ref } };
}

function dataEntities(input: AuditInput): AuditEventEntity[] {
  const it = input.interaction;
  const target = it?.resourceType && it.id ? `${it.resourceType}/${it.id}` : undefined;
  const refs = input.resourceRefs ?? (target ? [target] : []);
  return unique(refs).map((reference) => ({
    type: EntityType.systemObject,
    role: ObjectRole.domainResource,
    what: { reference },
  }));
}

function queryEntity(input: AuditInput, it: FhirInteraction): AuditEventEntity {
  const cleaned = it.params.map((p) => `${p.name}${p.modifier ? `:${p.modifier}` : ''}=${p.value}`).join('&');
  const raw = input.rawQuery ?? new URLSearchParams(it.params.map((p): [string, string] => [p.modifier ? `${p.name}:${p.modifier}` : p.name, p.value])).toString();
  return {
    type: EntityType.systemObject,
    role: ObjectRole.query,
    query: Buffer.from(raw, 'utf8').toString('base64'),
    description: cleaned ? `${it.path}?${cleaned}` : it.path,
  };
}

function requestIdEntity(requestId: string): AuditEventEntity {
  return { type: EntityType.requestId, what: { identifier: { value: requestId } } };
}

/** caregate's verdict in words and in machine-readable details, for the DIM and `caregate review`. */
function outcomeEntity(input: AuditInput): AuditEventEntity {
  const d = input.decision;
  const details: AuditEventEntityDetail[] = [];
  if (d) {
    details.push(detail(DetailType.decisionEffect, d.effect), detail(DetailType.decisionReason, d.reason), detail(DetailType.decisionRule, d.rule));
    if (d.obligations.some((o) => o.kind === 'audit-severity' && o.severity === 'high') || (input.breakGlassPatients?.size ?? 0) > 0) {
      details.push(detail(DetailType.severity, 'high'));
    }
  }
  if (input.failure) details.push(detail(DetailType.failureCode, input.failure.code));
  if (input.httpStatus !== undefined) details.push(detail(DetailType.httpStatus, String(input.httpStatus)));
  return {
    type: EntityType.systemObject,
    role: ObjectRole.securityResource,
    name: EntityName.decision,
    description: outcomeDescription(input),
    ...(details.length ? { detail: details } : {}),
  };
}

function evidenceEntities(evidence: readonly Evidence[]): AuditEventEntity[] {
  return evidence.map((e) => {
    const details = [detail(DetailType.evidenceSource, e.source)];
    if (e.until) details.push(detail(DetailType.breakGlassUntil, e.until));
    if (e.overridden) details.push(detail(DetailType.evidenceOverridden, 'true'));
    return {
      type: EntityType.systemObject,
      role: ObjectRole.securityResource,
      name: EntityName.evidence,
      ...(e.reference ? { what: { reference: e.reference } } : {}),
      description: `Evidence: ${e.source}${e.reference ? ` ${e.reference}` : ''}`,
      detail: details,
    };
  });
}

/** The Consents under which data of these patients was withheld from the answer (CSP L1110-4). */
function oppositionEntities(input: AuditInput, patients: readonly string[]): AuditEventEntity[] {
  const withheld = input.opposedWithheld;
  if (!withheld) return [];
  const consents = new Set(patients.flatMap((p) => [...(withheld.get(p.slice('Patient/'.length)) ?? [])]));
  return [...consents].map((reference) => ({
    type: EntityType.systemObject,
    role: ObjectRole.securityResource,
    name: EntityName.opposition,
    what: { reference },
    description: `Withheld under the patient's opposition ${reference}`,
    detail: [detail(DetailType.decisionReason, 'patient-opposition')],
  }));
}

function breakGlassEntities(input: AuditInput, patients: readonly string[]): AuditEventEntity[] {
  const fromEvidence = evidenceFor(input, patients).find((e) => e.source === 'break-glass');
  const reason = input.breakGlass?.reason ?? fromEvidence?.reason;
  const until = input.breakGlass?.until ?? fromEvidence?.until;
  const details = [detail(DetailType.breakGlassReason, reason ?? '(none given)')];
  if (until) details.push(detail(DetailType.breakGlassUntil, until));
  return [
    {
      type: EntityType.systemObject,
      name: EntityName.breakGlass,
      description: `BTG justification: ${reason ?? '(none given)'}`,
      detail: details,
    },
  ];
}

function detail(type: string, valueString: string): AuditEventEntityDetail {
  return { type, valueString };
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

function outcomeDescription(input: AuditInput): string {
  const parts: string[] = [];
  const d = input.decision;
  if (input.kind === 'login-failure') parts.push('Identification failed');
  if (d) parts.push(`${d.effect === 'permit' ? 'Permitted' : 'Denied'}: ${d.reason} (rule ${d.rule}): ${d.message}`);
  if (input.failure) parts.push(`${input.failure.code}: ${input.failure.message}`);
  if (input.httpStatus !== undefined) parts.push(`HTTP ${input.httpStatus}`);
  if (input.upstreamStatus !== undefined && input.upstreamStatus >= 500) parts.push(`upstream HTTP ${input.upstreamStatus}`);
  return parts.join('; ') || 'No decision recorded';
}

function evidenceFor(input: AuditInput, patients: readonly string[]): readonly Evidence[] {
  if (input.evidenceByPatient && patients.length) {
    return patients.flatMap((p) => input.evidenceByPatient!.get(p.slice('Patient/'.length)) ?? []);
  }
  return input.decision?.evidence ?? [];
}

function source(site: string): AuditEvent['source'] {
  return { site, observer: { display: 'caregate' }, type: [SourceType.applicationServer] };
}

function patientRef(p: string): string {
  return p.startsWith('Patient/') ? p : `Patient/${p}`;
}

function unique<T>(xs: readonly T[]): T[] {
  return [...new Set(xs)];
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
