/**
 * Code tables for IHE BALP AuditEvents (FHIR R4). Every system and code the builder emits is here,
 * so review and tests read the same constants the builder writes.
 */

export const Systems = {
  auditEventType: 'http://terminology.hl7.org/CodeSystem/audit-event-type',
  restfulInteraction: 'http://hl7.org/fhir/restful-interaction',
  dcm: 'http://dicom.nema.org/resources/ontology/DCM',
  objectRole: 'http://terminology.hl7.org/CodeSystem/object-role',
  auditEntityType: 'http://terminology.hl7.org/CodeSystem/audit-entity-type',
  balpEntityType: 'https://profiles.ihe.net/ITI/BALP/CodeSystem/BasicAuditEntityType',
  actReason: 'http://terminology.hl7.org/CodeSystem/v3-ActReason',
  participationType: 'http://terminology.hl7.org/CodeSystem/v3-ParticipationType',
  securitySourceType: 'http://terminology.hl7.org/CodeSystem/security-source-type',
  provenanceParticipantType: 'http://terminology.hl7.org/CodeSystem/provenance-participant-type',
  /** idNatPs (PS_IdNat), as in FR Core `Practitioner.identifier:idNatPs`. */
  idNatPs: 'urn:oid:1.2.250.1.71.4.2.1',
  /** TRE-G15 ProfessionSante. */
  professionSante: 'https://mos.esante.gouv.fr/NOS/TRE_G15-ProfessionSante/FHIR/TRE-G15-ProfessionSante',
  /** caregate's own policy roles (`clinician`, `dim`, ...) on the user agent. */
  policyRole: 'https://caregate.example/fhir/CodeSystem/policy-role',
  /** Identifier system of a policy revision (sha-256 of the policy). */
  policyRevision: 'https://caregate.example/fhir/NamingSystem/policy-revision',
  /** caregate's own event subtypes: the notification of a break-the-glass opening, the DIM's verdict on it. */
  caregateEvent: 'https://caregate.example/fhir/CodeSystem/audit-event',
} as const;

/** `AuditEvent.type`. */
export const EventType = {
  rest: { system: Systems.auditEventType, code: 'rest', display: 'Restful Operation' },
  securityAlert: { system: Systems.dcm, code: '110113', display: 'Security Alert' },
  userAuthentication: { system: Systems.dcm, code: '110114', display: 'User Authentication' },
} as const;

/** `AuditEvent.subtype` for non-REST events (DICOM). */
export const DcmSubtype = {
  emergencyOverrideStarted: { system: Systems.dcm, code: '110127', display: 'Emergency Override Started' },
  securityConfiguration: { system: Systems.dcm, code: '110129', display: 'Security Configuration' },
  login: { system: Systems.dcm, code: '110122', display: 'Login' },
} as const;

/** caregate's own `AuditEvent.subtype` codes, on security-alert events (no DICOM code says these). */
export const CaregateSubtype = {
  /** The patient and her attending physician were told of a break-the-glass opening (or could not be yet). */
  breakGlassNotification: { system: Systems.caregateEvent, code: 'break-glass-notification', display: 'Break-the-glass notification' },
  /** The DIM's verdict on a break-the-glass opening. */
  breakGlassVerdict: { system: Systems.caregateEvent, code: 'break-glass-verdict', display: 'Break-the-glass verdict' },
} as const;

/** `http://hl7.org/fhir/restful-interaction` codes used as `AuditEvent.subtype` (R4). */
export const RestfulInteraction = [
  'read',
  'vread',
  'update',
  'patch',
  'delete',
  'history',
  'history-instance',
  'history-type',
  'history-system',
  'create',
  'search',
  'search-type',
  'search-system',
  'capabilities',
  'transaction',
  'batch',
  'operation',
] as const;
export type RestfulInteractionCode = (typeof RestfulInteraction)[number];

/** `AuditEvent.action`: C create, R read, U update, D delete, E execute. */
export const AuditAction = { create: 'C', read: 'R', update: 'U', delete: 'D', execute: 'E' } as const;
export type AuditActionCode = (typeof AuditAction)[keyof typeof AuditAction];

/** `AuditEvent.outcome` (R4): 0 success, 4 minor failure, 8 serious failure, 12 major failure. */
export const AuditOutcome = { success: '0', minorFailure: '4', seriousFailure: '8', majorFailure: '12' } as const;
export type AuditOutcomeCode = (typeof AuditOutcome)[keyof typeof AuditOutcome];

/** `agent.type` codes of the BALP client/server agents. */
export const AgentType = {
  destinationRoleId: { system: Systems.dcm, code: '110152', display: 'Destination Role ID' },
  sourceRoleId: { system: Systems.dcm, code: '110153', display: 'Source Role ID' },
  application: { system: Systems.dcm, code: '110150', display: 'Application' },
  custodian: { system: Systems.provenanceParticipantType, code: 'custodian', display: 'Custodian' },
  /** The human user (information recipient). */
  informationRecipient: { system: Systems.participationType, code: 'IRCP', display: 'information recipient' },
} as const;

/** `agent.network.type`: 2 IP address, 5 URI. */
export const NetworkType = { ipAddress: '2', uri: '5' } as const;

/** `entity.type`. */
export const EntityType = {
  person: { system: Systems.auditEntityType, code: '1', display: 'Person' },
  systemObject: { system: Systems.auditEntityType, code: '2', display: 'System Object' },
  requestId: { system: Systems.balpEntityType, code: 'XrequestId', display: 'X-Request-Id' },
} as const;

/** `entity.role`. */
export const ObjectRole = {
  patient: { system: Systems.objectRole, code: '1', display: 'Patient' },
  domainResource: { system: Systems.objectRole, code: '4', display: 'Domain Resource' },
  securityResource: { system: Systems.objectRole, code: '13', display: 'Security Resource' },
  query: { system: Systems.objectRole, code: '24', display: 'Query' },
} as const;

/** `agent.purposeOfUse` / `purposeOfEvent` codes (v3-ActReason). */
export const PurposeOfUse = {
  TREAT: { system: Systems.actReason, code: 'TREAT', display: 'treatment' },
  ETREAT: { system: Systems.actReason, code: 'ETREAT', display: 'Emergency Treatment' },
  BTG: { system: Systems.actReason, code: 'BTG', display: 'break the glass' },
  HOPERAT: { system: Systems.actReason, code: 'HOPERAT', display: 'healthcare operations' },
  PATRQT: { system: Systems.actReason, code: 'PATRQT', display: 'patient requested' },
  PWATRNY: { system: Systems.actReason, code: 'PWATRNY', display: 'power of attorney' },
  HMARKT: { system: Systems.actReason, code: 'HMARKT', display: 'healthcare marketing' },
  HQUALIMP: { system: Systems.actReason, code: 'HQUALIMP', display: 'healthcare quality improvement' },
} as const;
export type PurposeOfUseCode = keyof typeof PurposeOfUse;

/** `source.type`: 4 Application Server. */
export const SourceType = {
  applicationServer: { system: Systems.securitySourceType, code: '4', display: 'Application Server' },
} as const;

/**
 * `entity.detail.type` keys carrying caregate's decision, so that a DIM reading the raw AuditEvent
 * (and `caregate review`) sees why access was granted or refused.
 */
export const DetailType = {
  decisionEffect: 'decision-effect',
  decisionReason: 'decision-reason',
  decisionRule: 'decision-rule',
  evidenceSource: 'evidence-source',
  breakGlassReason: 'break-glass-reason',
  breakGlassUntil: 'break-glass-until',
  failureCode: 'failure-code',
  httpStatus: 'http-status',
  policyPreviousRevision: 'policy-previous-revision',
  /** On opposition evidence: `true` when a break-the-glass grant overrode the opposition. */
  evidenceOverridden: 'evidence-overridden',
  /** Notification events: the break-the-glass start event (its id) they tell of. */
  notificationOf: 'notification-of',
  /** `sent` or `failed` (a failure is retried; a later `sent` event supersedes it). */
  notificationStatus: 'notification-status',
  /** `communication` or `webhook`. */
  notificationChannel: 'notification-channel',
  /** Who was told: `patient`, `attending` (space-separated). */
  notificationRecipients: 'notification-recipients',
  /** `high` when the policy flags the access for DIM review (break-the-glass, roles with no access, `auditSeverity: high`). */
  severity: 'audit-severity',
  /** What was removed from the answer (`Patient.link: 1 link…`). */
  redaction: 'redaction',
  /** A contractor's engagement in force (its id), and the contract (or CNIL authorisation) it rests on. */
  engagement: 'engagement',
  contractReference: 'contract-reference',
  /** A break-the-glass verdict: `justified` or `unjustified`, the DIM's comment, who opened the glass. */
  verdict: 'verdict',
  verdictComment: 'verdict-comment',
  openedBy: 'opened-by',
} as const;

/** `entity.name` markers of caregate's own entities (R4 entity.name is a string). */
export const EntityName = {
  decision: 'caregate-decision',
  evidence: 'caregate-evidence',
  breakGlass: 'break-glass-justification',
  policy: 'caregate-policy',
  failure: 'caregate-failure',
  /** Data of the patient withheld from the answer under her opposition (the Consent in `what`). */
  opposition: 'caregate-opposition',
  /** The notification of a break-the-glass opening. */
  notification: 'break-glass-notification',
  /** The break-the-glass opening a verdict is about (`what` = `AuditEvent/<id>`), and the verdict itself. */
  breakGlassOpening: 'break-glass-opening',
  verdict: 'break-glass-verdict',
} as const;
