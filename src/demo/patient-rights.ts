/**
 * The patient's rights in the demo hospital (docs/DEMO-HOSPITAL.md, docs/PATIENT-RIGHTS.md), all
 * about Louise Dupont (`pat-dupont`, the `patient` persona):
 * - her opposition to Dr Thomas Lefevre (`colleague`), a cardiologist of her own care team
 *   (`Consent/consent-dupont-opposition`); Dr Martin, in the same team, is not opposed;
 * - a break-the-glass history: three days ago Dr Sophie Roux (`emergency`) opened her record in an
 *   emergency and read it, and she and her attending physician, Dr Martin, were told (the
 *   AuditEvents caregate writes, and the two Communications);
 * - an access to her record by Dr Martin yesterday, and a refused attempt by Dr Lefevre;
 * - a document awaiting release by a physician (`docStatus: preliminary`), and its content.
 *
 * Built by caregate's own builders (the AuditEvent builder, the notification messages), so that
 * the seeded history is what caregate writes. Fixed ids, times relative to the seed's `now`.
 */
import type { Binary, Consent, DocumentReference, Resource } from '@medplum/fhirtypes';
import { notificationEvent } from '../audit/notification-event.js';
import type { Decision } from '../policy/decision.js';
import { communicationIds, openingCommunications, type Opening } from '../notify/messages.js';
import { CLIENT, DAY, HOUR, iso, personaPrincipal, PUBLIC_BASE, recordedEvent, recordedRequest, SITE } from './recorded.js';


/** Ids of the patient-rights fixtures. */
export const PATIENT_RIGHTS_FIXTURES = {
  opposition: 'consent-dupont-opposition',
  preliminaryDocument: 'doc-dupont-preliminary',
  preliminaryBinary: 'bin-dupont-preliminary',
  breakGlassStart: 'ae-demo-btg-dupont-start',
  breakGlassRead: 'ae-demo-btg-dupont-read',
  breakGlassSearch: 'ae-demo-btg-dupont-search',
  breakGlassNotified: 'ae-demo-btg-dupont-notified',
  attendingRead: 'ae-demo-martin-dupont-read',
  opposedRefusal: 'ae-demo-lefevre-dupont-refused',
  breakGlassReason: 'Patiente inconsciente amenée par le SAMU : recherche des antécédents et des traitements en cours',
} as const;


export function patientRightsFixtures(now: number): Resource[] {
  const F = PATIENT_RIGHTS_FIXTURES;
  return [opposition(now), ...preliminaryDocument(now), ...breakGlassHistory(now), ...otherAccesses(now)];

  function opposition(t: number): Consent {
    return {
      resourceType: 'Consent',
      id: F.opposition,
      status: 'active',
      scope: { coding: [{ system: 'http://terminology.hl7.org/CodeSystem/consentscope', code: 'patient-privacy' }] },
      category: [
        { coding: [{ system: 'http://loinc.org', code: '59284-0', display: 'Patient Consent' }] },
        { coding: [{ system: 'https://chu-demo.example/fhir/CodeSystem/consent-category', code: 'opposition', display: 'Opposition au partage du dossier (CSP L1110-4)' }] },
      ],
      patient: { reference: 'Patient/pat-dupont' },
      dateTime: iso(t - 10 * DAY),
      performer: [{ reference: 'Patient/pat-dupont' }],
      organization: [{ reference: 'Organization/org-chu-demo' }],
      policyRule: { coding: [{ system: 'http://terminology.hl7.org/CodeSystem/v3-ActCode', code: 'OPTOUT' }] },
      provision: {
        type: 'deny',
        period: { start: iso(t - 10 * DAY) },
        actor: [
          {
            role: { coding: [{ system: 'http://terminology.hl7.org/CodeSystem/v3-ParticipationType', code: 'IRCP', display: 'information recipient' }] },
            reference: { reference: 'Practitioner/prat-lefevre' },
          },
        ],
        action: [{ coding: [{ system: 'http://terminology.hl7.org/CodeSystem/consentaction', code: 'access' }] }],
      },
    };
  }

  function preliminaryDocument(t: number): Resource[] {
    const text = 'Compte rendu de coronarographie — PROVISOIRE, à valider par le médecin\nPatiente : Louise DUPONT, née le 1958-04-12\n';
    const data = Buffer.from(text, 'utf8');
    const binary: Binary = {
      resourceType: 'Binary',
      id: F.preliminaryBinary,
      contentType: 'text/plain',
      securityContext: { reference: `DocumentReference/${F.preliminaryDocument}` },
      data: data.toString('base64'),
    };
    const doc: DocumentReference = {
      resourceType: 'DocumentReference',
      id: F.preliminaryDocument,
      status: 'current',
      docStatus: 'preliminary',
      type: { coding: [{ system: 'http://loinc.org', code: '18745-0', display: 'Cardiac catheterization study' }] },
      subject: { reference: 'Patient/pat-dupont' },
      date: iso(t - 6 * HOUR),
      author: [{ reference: 'Practitioner/prat-martin' }],
      custodian: { reference: 'Organization/org-chu-demo' },
      description: 'Compte rendu de coronarographie (provisoire)',
      content: [{ attachment: { contentType: 'text/plain', language: 'fr-FR', url: `Binary/${F.preliminaryBinary}`, size: data.length, title: 'Coronarographie', creation: iso(t - 6 * HOUR) } }],
      context: { encounter: [{ reference: 'Encounter/enc-dupont' }] },
    };
    return [doc, binary];
  }

  function breakGlassHistory(t: number): Resource[] {
    const at = Math.floor((t - 3 * DAY - 5 * HOUR) / 1000) * 1000;
    const until = at + HOUR;
    const roux = personaPrincipal('emergency');
    const common = { publicBaseUrl: PUBLIC_BASE, site: SITE, principal: roux, clientId: CLIENT, clientAddress: '10.20.0.31' };
    const grant = { source: 'break-glass' as const, reference: undefined, until: new Date(until).toISOString(), reason: F.breakGlassReason };
    const btg = (patients: string[]): Decision => ({
      effect: 'permit',
      reason: 'break-glass',
      rule: 'emergency.care-team',
      message: 'Within the care relationships',
      evidence: [grant],
      obligations: [{ kind: 'filter-response' }, { kind: 'mark-break-glass' }, { kind: 'audit-severity', severity: 'high' }],
      patients,
      purposeOfUse: 'BTG',
    });
    const start = recordedEvent({
      ...common,
      kind: 'break-glass-start',
      ids: [F.breakGlassStart],
      requestId: 'demo-btg-dupont-open',
      recorded: iso(at),
      patients: ['pat-dupont'],
      breakGlass: { reason: F.breakGlassReason, until: new Date(until).toISOString() },
    });
    const read = recordedEvent({
      ...common,
      ids: [F.breakGlassRead],
      requestId: 'demo-btg-dupont-read',
      recorded: iso(at),
      interaction: recordedRequest('/Patient/pat-dupont'),
      decision: btg(['pat-dupont']),
      httpStatus: 200,
      upstreamStatus: 200,
      patients: ['pat-dupont'],
      resourceRefs: ['Patient/pat-dupont'],
    });
    const search = recordedEvent({
      ...common,
      ids: [F.breakGlassSearch],
      requestId: 'demo-btg-dupont-search',
      recorded: iso(at + 4 * 60_000),
      interaction: recordedRequest('/MedicationRequest', 'patient=pat-dupont'),
      decision: btg(['pat-dupont']),
      httpStatus: 200,
      upstreamStatus: 200,
      rawQuery: 'patient=pat-dupont',
      patients: ['pat-dupont'],
    });
    const opening: Opening = {
      eventId: F.breakGlassStart,
      patient: 'pat-dupont',
      practitioner: 'Practitioner/prat-roux',
      name: 'Sophie ROUX',
      professions: ['10'],
      reason: F.breakGlassReason,
      at,
      until,
    };
    const told = at + 2000;
    const communications = openingCommunications(opening, { patient: true, attending: ['Practitioner/prat-martin'] }, { language: 'fr', timeZone: 'Europe/Paris' }, told);
    const ids = communicationIds(F.breakGlassStart);
    const notified = notificationEvent({
      id: F.breakGlassNotified,
      requestId: 'demo-btg-dupont-notification',
      recorded: iso(told),
      site: SITE,
      patients: ['pat-dupont'],
      of: F.breakGlassStart,
      status: 'sent',
      channel: 'communication',
      recipients: ['patient', 'attending'],
      communications: [`Communication/${ids.patient}`, `Communication/${ids.attending}`],
    });
    return [start, read, search, notified, ...communications];
  }

  function otherAccesses(t: number): Resource[] {
    const martin = personaPrincipal('clinician');
    const lefevre = personaPrincipal('colleague');
    const read = recordedEvent({
      ids: [F.attendingRead],
      requestId: 'demo-martin-dupont-read',
      recorded: iso(t - DAY - 2 * HOUR),
      principal: martin,
      clientId: CLIENT,
      clientAddress: '10.20.1.12',
      publicBaseUrl: PUBLIC_BASE,
      site: SITE,
      interaction: recordedRequest('/Patient/pat-dupont/Observation'),
      decision: {
        effect: 'permit',
        reason: 'care-relationship',
        rule: 'clinician.care-team',
        message: 'Within the care relationships',
        evidence: [{ source: 'careteam', reference: 'CareTeam/ct-dupont' }],
        obligations: [{ kind: 'filter-response' }],
        patients: ['pat-dupont'],
        purposeOfUse: 'TREAT',
      },
      httpStatus: 200,
      upstreamStatus: 200,
      patients: ['pat-dupont'],
    });
    const refused = recordedEvent({
      ids: [F.opposedRefusal],
      requestId: 'demo-lefevre-dupont-refused',
      recorded: iso(t - 2 * DAY - 3 * HOUR),
      principal: lefevre,
      clientId: CLIENT,
      clientAddress: '10.20.1.40',
      publicBaseUrl: PUBLIC_BASE,
      site: SITE,
      interaction: recordedRequest('/Patient/pat-dupont'),
      decision: {
        effect: 'deny',
        reason: 'patient-opposition',
        rule: 'clinician.care-team',
        message: 'The patient has opposed sharing this record, or this part of it, with you (CSP L1110-4).',
        evidence: [{ source: 'opposition', reference: `Consent/${F.opposition}` }],
        obligations: [],
        patients: ['pat-dupont'],
      },
      httpStatus: 403,
      patients: ['pat-dupont'],
    });
    return [read, refused];
  }
}



