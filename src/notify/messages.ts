import type { AuditEvent, Communication } from '@medplum/fhirtypes';
import { AgentType, DetailType, EntityName, EntityType, ObjectRole, PurposeOfUse, Systems } from '../audit/codes.js';
import { professionLabel } from '../audit/patient-view.js';

/**
 * What the patient and her attending physician are told of a break-the-glass opening, as FHIR
 * `Communication` resources or a webhook's JSON; and the opening read back from its start
 * AuditEvent, so that a notification lost by a restart is found again in the trail. Pure.
 */

/** A break-the-glass opening, as the notification tells it. */
export interface Opening {
  /** The id of the durable break-the-glass start AuditEvent: the key of everything written for it. */
  eventId: string;
  /** Patient id (without `Patient/`). */
  patient: string;
  /** `Practitioner/<id>` who opened it. */
  practitioner: string;
  name: string | undefined;
  professions: readonly string[];
  reason: string;
  /** Epoch ms. */
  at: number;
  until: number;
}

export const NOTIFICATION_CATEGORY = 'https://caregate.example/fhir/CodeSystem/notification';
/** Identifier system of the break-the-glass opening a Communication tells of (value: the start event id). */
export const OPENING_IDENTIFIER = 'https://caregate.example/fhir/NamingSystem/break-glass-opening';

export interface MessageOptions {
  language: 'fr' | 'en';
  timeZone: string;
}

/** Ids of the Communications of one opening: the same on every attempt, so a retry rewrites them. */
export function communicationIds(eventId: string): { patient: string; attending: string } {
  return { patient: `btg-${eventId}-patient`, attending: `btg-${eventId}-attending` };
}

/** The Communications of one opening: to the patient, and to her attending physicians when there are any. */
export function openingCommunications(o: Opening, to: { patient: boolean; attending: readonly string[] }, opts: MessageOptions, sent: number): Communication[] {
  const ids = communicationIds(o.eventId);
  const base = (id: string, recipient: string[], text: string, priority: Communication['priority']): Communication => ({
    resourceType: 'Communication',
    id,
    language: opts.language === 'fr' ? 'fr-FR' : 'en',
    identifier: [{ system: OPENING_IDENTIFIER, value: o.eventId }],
    status: 'completed',
    category: [{ coding: [{ system: NOTIFICATION_CATEGORY, code: 'break-glass', display: opts.language === 'fr' ? 'Accès en urgence (bris de glace)' : 'Emergency access (break the glass)' }] }],
    priority,
    subject: { reference: `Patient/${o.patient}` },
    recipient: recipient.map((reference) => ({ reference })),
    sent: new Date(sent).toISOString(),
    reasonCode: [{ coding: [{ system: Systems.actReason, code: 'BTG', display: 'break the glass' }] }],
    payload: [{ contentString: text }],
  });
  const out: Communication[] = [];
  if (to.patient) out.push(base(ids.patient, [`Patient/${o.patient}`], patientText(o, opts), 'routine'));
  if (to.attending.length > 0) out.push(base(ids.attending, [...to.attending], attendingText(o, opts, to.patient), 'urgent'));
  return out;
}

function who(o: Opening, lang: 'fr' | 'en'): string {
  const profession = o.professions[0] ? professionLabel(o.professions[0], lang) : undefined;
  if (o.name) return profession ? `${o.name} (${profession})` : o.name;
  return lang === 'fr' ? 'un professionnel de l’établissement' : 'a professional of the hospital';
}

function when(at: number, opts: MessageOptions): string {
  return new Intl.DateTimeFormat(opts.language === 'fr' ? 'fr-FR' : 'en-GB', { dateStyle: 'long', timeStyle: 'short', timeZone: opts.timeZone }).format(at);
}

function patientText(o: Opening, opts: MessageOptions): string {
  const minutes = Math.max(1, Math.round((o.until - o.at) / 60_000));
  return opts.language === 'fr'
    ? `Le ${when(o.at, opts)}, ${who(o, 'fr')} a ouvert votre dossier médical en urgence (procédure de « bris de glace »), en dehors de l’équipe qui vous soigne. ` +
        `Motif indiqué : « ${o.reason} ». Cet accès est limité à ${minutes} minutes, il est enregistré et examiné par le département d’information médicale de l’établissement. ` +
        `La liste des accès à votre dossier est consultable dans votre espace patient.`
    : `On ${when(o.at, opts)}, ${who(o, 'en')} opened your medical record in an emergency (the "break the glass" procedure), outside the team that cares for you. ` +
        `Reason given: "${o.reason}". This access is limited to ${minutes} minutes; it is recorded and reviewed by the hospital's medical information department. ` +
        `You can see every access to your record in your patient portal.`;
}

function attendingText(o: Opening, opts: MessageOptions, patientTold: boolean): string {
  return opts.language === 'fr'
    ? `Le ${when(o.at, opts)}, ${who(o, 'fr')} a ouvert en urgence (bris de glace) le dossier de votre patient(e). Motif indiqué : « ${o.reason} ».` +
        (patientTold ? ' Le patient en a été informé.' : '')
    : `On ${when(o.at, opts)}, ${who(o, 'en')} opened your patient's record in an emergency (break the glass). Reason given: "${o.reason}".` +
        (patientTold ? ' The patient has been told.' : '');
}

/** The webhook's JSON body. */
export function openingWebhookBody(o: Opening, to: { patient: boolean; attending: readonly string[] }): Record<string, unknown> {
  return {
    type: 'break-glass',
    event: o.eventId,
    patient: `Patient/${o.patient}`,
    openedBy: { practitioner: o.practitioner, name: o.name ?? null, professions: o.professions },
    reason: o.reason,
    openedAt: new Date(o.at).toISOString(),
    until: new Date(o.until).toISOString(),
    notify: { patient: to.patient, attending: to.attending },
  };
}

/** The opening a break-the-glass start AuditEvent records, or undefined when it is not a complete one. */
export function openingOf(event: AuditEvent): Opening | undefined {
  const entities = event.entity ?? [];
  const patient = entities.find((e) => e.type?.code === EntityType.person.code && e.role?.code === ObjectRole.patient.code)?.what?.reference;
  const user = event.agent.find((a) => a.requestor && a.type?.coding?.some((c) => c.code === AgentType.informationRecipient.code));
  const details = entities.find((e) => e.name === EntityName.breakGlass)?.detail ?? [];
  const reason = details.find((d) => d.type === DetailType.breakGlassReason)?.valueString;
  const until = Date.parse(details.find((d) => d.type === DetailType.breakGlassUntil)?.valueString ?? '');
  const at = Date.parse(event.recorded);
  const practitioner = user?.who?.reference;
  if (!event.id || !patient?.startsWith('Patient/') || !practitioner?.startsWith('Practitioner/') || reason === undefined || Number.isNaN(at)) return undefined;
  return {
    eventId: event.id,
    patient: patient.slice('Patient/'.length),
    practitioner,
    name: user?.name,
    professions: (user?.role ?? []).flatMap((r) => r.coding ?? []).filter((c) => c.system === Systems.professionSante && c.code).map((c) => c.code!),
    reason,
    at,
    until: Number.isNaN(until) ? at : until,
  };
}

/** Whether an AuditEvent is a granted break-the-glass start (the purpose code is BTG). */
export function isGrantedOpening(event: AuditEvent): boolean {
  return event.outcome === '0' && (event.purposeOfEvent ?? []).some((c) => c.coding?.some((x) => x.code === PurposeOfUse.BTG.code));
}
