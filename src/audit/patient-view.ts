import type { AuditEvent, AuditEventEntity, Coding } from '@medplum/fhirtypes';
import {
  AgentType,
  CaregateSubtype,
  DcmSubtype,
  DetailType,
  EntityName,
  EntityType,
  EventType,
  ObjectRole,
  Systems,
} from './codes.js';

/**
 * Who saw my record: an AuditEvent as the patient (or her mandated person) may know it. When, who
 * (name and profession, never an internal id), which kind of data, granted or refused and why in
 * a word, a break-the-glass opening with the reason typed, the notification that followed. Nothing
 * about other patients (their entities and resources are dropped; a person who is not a
 * professional and not hers is not named) and nothing about the infrastructure (no address, no
 * client, no request id, no rule, no site).
 *
 * The reduced AuditEvent is built afresh from the facts kept, never by deleting from the original:
 * what is not chosen here does not pass. The FHIR view (`AuditEvent?patient=<self>`, through the
 * response filter) and the page (`/caregate/my-record/accesses`) show the same facts.
 */

export interface PatientAccess {
  /** The AuditEvent's id (caregate's random UUID). */
  id: string;
  recorded: string;
  kind: 'access' | 'break-glass' | 'notification' | 'login-failure';
  /** The patients of hers the event is about (`Patient/<id>`). */
  patients: string[];
  who: {
    /** `patient`: the patient herself (one of `patients`); `mandated`: a person holding her mandate. */
    as: 'professional' | 'staff' | 'patient' | 'mandated' | 'other-person' | 'unidentified' | 'caregate';
    /** Shown for professionals, staff, the patient herself and her mandated person only. */
    name: string | undefined;
    /** TRE-G15 profession codes. */
    professions: string[];
  };
  action: 'read' | 'search' | 'write' | 'delete' | 'other';
  /** Kinds of data (resource types). */
  data: string[];
  outcome: 'granted' | 'refused' | 'failed';
  /** caregate's decision reason, when it recorded one (`care-relationship`, `patient-opposition`…). */
  reason: string | undefined;
  /** Purposes of use (v3-ActReason codes). */
  purposes: string[];
  breakGlass: { reason: string | undefined } | undefined;
  notification: { of: string; status: string; recipients: string[] } | undefined;
  /** Some of her data was withheld from the answer under her opposition. */
  opposedWithheld: boolean;
}

const REST_SEARCH = new Set(['search', 'search-type', 'search-system', 'history-type', 'history-system']);

/** The access as the patient may know it, or undefined when the event is not about one of `patients`. */
export function patientAccessOf(event: AuditEvent, patients: ReadonlySet<string>): PatientAccess | undefined {
  const entities = event.entity ?? [];
  const mine = [
    ...new Set(
      entities
        .filter((e) => e.type?.code === EntityType.person.code && e.role?.code === ObjectRole.patient.code)
        .map((e) => e.what?.reference)
        .filter((r): r is string => typeof r === 'string' && r.startsWith('Patient/') && patients.has(r.slice('Patient/'.length))),
    ),
  ];
  if (mine.length === 0 || !event.id) return undefined;
  const kind = kindOf(event);
  if (!kind) return undefined;
  const detailOf = (name: string, type: string) => entities.find((e) => e.name === name)?.detail?.find((d) => d.type === type)?.valueString;
  const purposes = [
    ...new Set(
      [...(event.purposeOfEvent ?? []), ...event.agent.flatMap((a) => a.purposeOfUse ?? [])]
        .flatMap((c) => c.coding ?? [])
        .filter((c) => c.system === Systems.actReason && c.code)
        .map((c) => c.code!),
    ),
  ];
  const outcome = event.outcome === '0' ? 'granted' : event.outcome === '4' ? 'refused' : 'failed';
  const notified = kind === 'notification' ? entities.find((e) => e.name === EntityName.notification)?.detail : undefined;
  return {
    id: event.id,
    recorded: event.recorded,
    kind,
    patients: mine,
    who: whoOf(event, patients, outcome, purposes),
    action: actionOf(event),
    data: dataOf(entities, patients),
    outcome,
    reason: detailOf(EntityName.decision, DetailType.decisionReason),
    purposes,
    breakGlass: purposes.includes('BTG') && kind !== 'notification' ? { reason: detailOf(EntityName.breakGlass, DetailType.breakGlassReason) } : undefined,
    notification: notified
      ? {
          of: notified.find((d) => d.type === DetailType.notificationOf)?.valueString ?? '',
          status: notified.find((d) => d.type === DetailType.notificationStatus)?.valueString ?? '',
          recipients: (notified.find((d) => d.type === DetailType.notificationRecipients)?.valueString ?? '').split(' ').filter(Boolean),
        }
      : undefined,
    opposedWithheld: entities.some((e) => e.name === EntityName.opposition),
  };
}

function kindOf(event: AuditEvent): PatientAccess['kind'] | undefined {
  const sub = event.subtype ?? [];
  const has = (c: Coding) => sub.some((s) => s.system === c.system && s.code === c.code);
  if (event.type?.code === EventType.rest.code) return 'access';
  if (event.type?.code === EventType.userAuthentication.code) return 'login-failure';
  if (event.type?.code === EventType.securityAlert.code && has(DcmSubtype.emergencyOverrideStarted)) return 'break-glass';
  if (event.type?.code === EventType.securityAlert.code && has(CaregateSubtype.breakGlassNotification)) return 'notification';
  return undefined;
}

function whoOf(event: AuditEvent, patients: ReadonlySet<string>, outcome: string, purposes: readonly string[]): PatientAccess['who'] {
  const user = event.agent.find((a) => a.requestor && a.type?.coding?.some((c) => c.code === AgentType.informationRecipient.code));
  if (!user) {
    const app = event.agent.find((a) => a.requestor && a.who?.display === 'caregate');
    return { as: app ? 'caregate' : 'unidentified', name: undefined, professions: [] };
  }
  const ref = user.who?.reference ?? '';
  const professions = [
    ...new Set((user.role ?? []).flatMap((r) => r.coding ?? []).filter((c) => c.system === Systems.professionSante && c.code).map((c) => c.code!)),
  ];
  if (ref.startsWith('Patient/')) {
    return patients.has(ref.slice('Patient/'.length)) ? { as: 'patient', name: user.name, professions: [] } : { as: 'other-person', name: undefined, professions: [] };
  }
  if (ref.startsWith('RelatedPerson/')) {
    // Named only when the record was opened under a mandate: anyone else might be another patient's relative.
    const mandated = outcome === 'granted' && purposes.includes('PWATRNY');
    return mandated ? { as: 'mandated', name: user.name, professions: [] } : { as: 'other-person', name: undefined, professions: [] };
  }
  return { as: professions.length > 0 ? 'professional' : 'staff', name: user.name, professions };
}

function actionOf(event: AuditEvent): PatientAccess['action'] {
  switch (event.action) {
    case 'R':
      return 'read';
    case 'C':
    case 'U':
      return 'write';
    case 'D':
      return 'delete';
    default:
      return event.subtype?.some((s) => s.system === Systems.restfulInteraction && REST_SEARCH.has(s.code ?? '')) ? 'search' : 'other';
  }
}

/** Resource types of the data concerned: of the resources named (never their ids), or of the query. */
function dataOf(entities: readonly AuditEventEntity[], patients: ReadonlySet<string>): string[] {
  const types = new Set<string>();
  for (const e of entities) {
    if (e.role?.code === ObjectRole.domainResource.code && typeof e.what?.reference === 'string') {
      const [type, id] = e.what.reference.split('/');
      // Another patient's Patient resource named by the same event is not hers to know of.
      if (type && (type !== 'Patient' || (id !== undefined && patients.has(id)))) types.add(type);
    }
    if (e.role?.code === ObjectRole.query.code && typeof e.description === 'string') {
      const path = e.description.split('?')[0] ?? '';
      const type = path.split('/').filter((s) => /^[A-Z][A-Za-z]+$/.test(s)).pop();
      if (type) types.add(type);
    }
  }
  return [...types].sort();
}

/** The tag that marks a reduced AuditEvent (it is not the one recorded, but a view of it). */
export const REDUCED_VIEW_TAG = { system: 'https://caregate.example/fhir/CodeSystem/view', code: 'patient-access-history' } as const;

/** The patient's reduced AuditEvent: only the facts of {@link PatientAccess}, in standard R4 elements. */
export function reducedAuditEvent(event: AuditEvent, a: PatientAccess): AuditEvent {
  const showName = a.who.name !== undefined && ['professional', 'staff', 'patient', 'mandated'].includes(a.who.as);
  const agentType = a.who.as === 'caregate' ? AgentType.application : AgentType.informationRecipient;
  const entity: AuditEventEntity[] = [
    ...a.patients.map((reference) => ({ type: EntityType.person, role: ObjectRole.patient, what: { reference } })),
    ...a.data.map((type) => ({ type: EntityType.systemObject, role: ObjectRole.domainResource, name: type })),
  ];
  if (a.reason) {
    entity.push({ type: EntityType.systemObject, role: ObjectRole.securityResource, name: EntityName.decision, detail: [{ type: DetailType.decisionReason, valueString: a.reason }] });
  }
  if (a.breakGlass) {
    entity.push({
      type: EntityType.systemObject,
      name: EntityName.breakGlass,
      description: `BTG justification: ${a.breakGlass.reason ?? '(none given)'}`,
      ...(a.breakGlass.reason ? { detail: [{ type: DetailType.breakGlassReason, valueString: a.breakGlass.reason }] } : {}),
    });
  }
  if (a.notification) {
    entity.push({
      type: EntityType.systemObject,
      role: ObjectRole.securityResource,
      name: EntityName.notification,
      detail: [
        { type: DetailType.notificationOf, valueString: a.notification.of },
        { type: DetailType.notificationStatus, valueString: a.notification.status },
        { type: DetailType.notificationRecipients, valueString: a.notification.recipients.join(' ') },
      ],
    });
  }
  if (a.opposedWithheld) {
    entity.push({ type: EntityType.systemObject, role: ObjectRole.securityResource, name: EntityName.opposition, description: 'Withheld under your opposition' });
  }
  return {
    resourceType: 'AuditEvent',
    id: a.id,
    meta: { tag: [REDUCED_VIEW_TAG] },
    type: pick(event.type),
    ...(event.subtype ? { subtype: event.subtype.map(pick) } : {}),
    ...(event.action ? { action: event.action } : {}),
    recorded: a.recorded,
    ...(event.outcome ? { outcome: event.outcome } : {}),
    outcomeDesc: a.outcome + (a.reason ? `: ${a.reason}` : ''),
    ...(a.purposes.length ? { purposeOfEvent: [{ coding: a.purposes.map((code) => ({ system: Systems.actReason, code })) }] } : {}),
    agent: [
      {
        type: { coding: [agentType] },
        ...(showName ? { name: a.who.name } : {}),
        ...(a.who.professions.length ? { role: a.who.professions.map((code) => ({ coding: [{ system: Systems.professionSante, code, display: professionLabel(code, 'fr') }] })) } : {}),
        requestor: true,
      },
    ],
    source: { observer: { display: 'caregate' } },
    entity,
  };
}

/** The patient's reduced view of one AuditEvent, or undefined when it is not about one of `patients`. */
export function reduceForPatients(event: AuditEvent, patients: ReadonlySet<string>): AuditEvent | undefined {
  const a = patientAccessOf(event, patients);
  return a ? reducedAuditEvent(event, a) : undefined;
}

function pick(c: Coding): Coding {
  return { ...(c.system ? { system: c.system } : {}), ...(c.code ? { code: c.code } : {}), ...(c.display ? { display: c.display } : {}) };
}

/** TRE-G15 profession labels (standards.md §1.4), in the patient's language. */
const PROFESSIONS: Readonly<Record<string, { fr: string; en: string }>> = {
  '10': { fr: 'Médecin', en: 'Physician' },
  '21': { fr: 'Pharmacien', en: 'Pharmacist' },
  '26': { fr: 'Audioprothésiste', en: 'Hearing-aid specialist' },
  '28': { fr: 'Opticien-Lunetier', en: 'Optician' },
  '31': { fr: 'Assistant dentaire', en: 'Dental assistant' },
  '32': { fr: 'Physicien médical', en: 'Medical physicist' },
  '40': { fr: 'Chirurgien-Dentiste', en: 'Dentist' },
  '50': { fr: 'Sage-Femme', en: 'Midwife' },
  '60': { fr: 'Infirmier', en: 'Nurse' },
  '69': { fr: 'Infirmier psychiatrique', en: 'Psychiatric nurse' },
  '70': { fr: 'Masseur-Kinésithérapeute', en: 'Physiotherapist' },
  '80': { fr: 'Pédicure-Podologue', en: 'Podiatrist' },
  '86': { fr: 'Technicien de laboratoire médical', en: 'Medical laboratory technician' },
  '91': { fr: 'Orthophoniste', en: 'Speech therapist' },
  '92': { fr: 'Orthoptiste', en: 'Orthoptist' },
  '94': { fr: 'Ergothérapeute', en: 'Occupational therapist' },
  '95': { fr: 'Diététicien', en: 'Dietitian' },
  '96': { fr: 'Psychomotricien', en: 'Psychomotor therapist' },
  '98': { fr: "Manipulateur d'électroradiologie médicale", en: 'Radiographer' },
};

export function professionLabel(code: string, lang: 'fr' | 'en'): string {
  return PROFESSIONS[code]?.[lang] ?? code;
}
