import type {
  AuditEvent,
  AuditEventAgent,
  AuditEventEntity,
  AuditEventEntityDetail,
  CodeableConcept,
  Coding,
} from '@medplum/fhirtypes';
import type { FhirInteraction, InteractionKind } from '../fhir/interaction.js';
import type { Evidence } from '../relate/types.js';
import type { AuditInput } from './audit-input.js';
import {
  AgentType,
  DetailType,
  EntityName,
  EntityType,
  NetworkType,
  ObjectRole,
  PurposeOfUse,
  Systems,
  type PurposeOfUseCode,
} from './codes.js';

/**
 * The pieces of a BALP AuditEvent that build.ts assembles: the agents (client, caregate, user, with
 * purpose of use), the entities (patients, data, query, request id, caregate's verdict, evidence,
 * break-the-glass justification) and the outcome description.
 */

/** The client application and caregate, typed by the interaction as BALP asks. */
export function restAgents(input: AuditInput, kind: InteractionKind | undefined): AuditEventAgent[] {
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

/** The calling application, by `client_id` when known, with its network address. */
export function clientAgent(input: AuditInput, type: Coding): AuditEventAgent {
  const clientId = input.clientId ?? input.principal?.claims.clientId;
  return {
    type: { coding: [type] },
    who: clientId ? { identifier: { value: clientId } } : { display: 'unidentified client application' },
    requestor: false,
    network: { address: input.clientAddress ?? 'unknown', type: NetworkType.ipAddress },
  };
}

/** The verified user (none without a principal): identifier, name, roles, purpose of use. */
export function userAgent(input: AuditInput, btg: boolean): AuditEventAgent[] {
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

/** `purposeOfEvent`: BTG on break-the-glass, else the purpose of use of the decision or the caller. */
export function purposeOfEvent(input: AuditInput, btg: boolean): Pick<AuditEvent, 'purposeOfEvent'> {
  if (!input.principal && !btg) return {};
  return { purposeOfEvent: [{ coding: btg ? [PurposeOfUse.BTG] : [PurposeOfUse[defaultPurpose(input)]] }] };
}

/** A patient the event concerns. */
export function patientEntity(ref: string): AuditEventEntity {
  return { type: EntityType.person, role: ObjectRole.patient, what: { reference: ref } };
}

/** The resources concerned: `resourceRefs`, else the interaction target. */
export function dataEntities(input: AuditInput): AuditEventEntity[] {
  const it = input.interaction;
  const target = it?.resourceType && it.id ? `${it.resourceType}/${it.id}` : undefined;
  const refs = input.resourceRefs ?? (target ? [target] : []);
  return unique(refs).map((reference) => ({
    type: EntityType.systemObject,
    role: ObjectRole.domainResource,
    what: { reference },
  }));
}

/** The BALP query entity: the raw query base64, the parsed one in the description. */
export function queryEntity(input: AuditInput, it: FhirInteraction): AuditEventEntity {
  const cleaned = it.params.map((p) => `${p.name}${p.modifier ? `:${p.modifier}` : ''}=${p.value}`).join('&');
  const raw = input.rawQuery ?? new URLSearchParams(it.params.map((p): [string, string] => [p.modifier ? `${p.name}:${p.modifier}` : p.name, p.value])).toString();
  return {
    type: EntityType.systemObject,
    role: ObjectRole.query,
    query: Buffer.from(raw, 'utf8').toString('base64'),
    description: cleaned ? `${it.path}?${cleaned}` : it.path,
  };
}

/** The X-Request-Id of the exchange. */
export function requestIdEntity(requestId: string): AuditEventEntity {
  return { type: EntityType.requestId, what: { identifier: { value: requestId } } };
}

/** caregate's verdict in words and in machine-readable details, for the DIM and `caregate review`. */
export function outcomeEntity(input: AuditInput): AuditEventEntity {
  const d = input.decision;
  const details: AuditEventEntityDetail[] = [];
  if (d) {
    details.push(detail(DetailType.decisionEffect, d.effect), detail(DetailType.decisionReason, d.reason), detail(DetailType.decisionRule, d.rule));
    if (d.obligations.some((o) => o.kind === 'audit-severity' && o.severity === 'high') || (input.breakGlassPatients?.size ?? 0) > 0 || (input.sensitivePatients?.size ?? 0) > 0) {
      details.push(detail(DetailType.severity, 'high'));
    }
  }
  if (input.engagement) {
    details.push(detail(DetailType.engagement, input.engagement.id), detail(DetailType.contractReference, input.engagement.contractReference));
  }
  for (const r of input.redactions ?? []) details.push(detail(DetailType.redaction, r));
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

/** Why the caller was related to the patient (care-set evidence). */
export function evidenceEntities(evidence: readonly Evidence[]): AuditEventEntity[] {
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

/** The break-the-glass justification and the expiry of the grant. */
/** The Consents under which data of these patients was withheld from the answer (CSP L1110-4). */
export function oppositionEntities(input: AuditInput, patients: readonly string[]): AuditEventEntity[] {
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

export function breakGlassEntities(input: AuditInput, patients: readonly string[]): AuditEventEntity[] {
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

/** An entity detail with a string value. */
export function detail(type: string, valueString: string): AuditEventEntityDetail {
  return { type, valueString };
}

/** The outcome in words: decision, failure, HTTP and upstream status. */
export function outcomeDescription(input: AuditInput): string {
  const parts: string[] = [];
  const d = input.decision;
  if (input.kind === 'login-failure') parts.push('Identification failed');
  if (d) parts.push(`${d.effect === 'permit' ? 'Permitted' : 'Denied'}: ${d.reason} (rule ${d.rule}): ${d.message}`);
  if (input.failure) parts.push(`${input.failure.code}: ${input.failure.message}`);
  if (input.httpStatus !== undefined) parts.push(`HTTP ${input.httpStatus}`);
  if (input.upstreamStatus !== undefined && input.upstreamStatus >= 500) parts.push(`upstream HTTP ${input.upstreamStatus}`);
  return parts.join('; ') || 'No decision recorded';
}

/** The evidence for these patients, else the evidence of the decision. */
export function evidenceFor(input: AuditInput, patients: readonly string[]): readonly Evidence[] {
  if (input.evidenceByPatient && patients.length) {
    return patients.flatMap((p) => input.evidenceByPatient!.get(p.slice('Patient/'.length)) ?? []);
  }
  return input.decision?.evidence ?? [];
}

/** The distinct values, in first-seen order. */
export function unique<T>(xs: readonly T[]): T[] {
  return [...new Set(xs)];
}
