/**
 * The DIM's oversight in the demo hospital (docs/OVERSIGHT.md, docs/DEMO-HOSPITAL.md):
 * - Dr Paul Girard, the orthopaedic surgeon (`surgeon`), hospitalised in cardiology: a staff member
 *   who is also a patient (`pat-fx-staff-girard`, labelled v3-ActCode EMP), in Dr Martin's care
 *   team with the nurse Julien Bernard (through his PractitionerRole), his stay attended by Dr Roux;
 * - Hélène Vasseur, a public figure (`pat-fx-public-figure`, labelled v3-ActCode CEL), in Dr
 *   Martin's care team;
 * - Lucien Martin (`pat-fx-namesake-martin`), in Dr Martin's care team: he shares her surname;
 * - a break-the-glass history: ten days ago Dr Roux opened Hélène Vasseur's record and read it, and
 *   no verdict was given (overdue after 7 days); twenty days ago she opened the record of the
 *   orthopaedics patient `pat-fx-ortho`, which the DIM, Dr Leroy, judged justified two days later.
 *
 * The AuditEvents are built by caregate's own builders (audit/build.ts, audit/verdict.ts), so that
 * the seeded history is what caregate writes. Fixed ids, times relative to the seed's `now`. The
 * patients, teams and stays are made by the seed's builder (seed.ts, `lateFixtures`).
 */
import type { AuditEvent, Coding } from '@medplum/fhirtypes';
import { buildVerdictEvent } from '../audit/verdict.js';
import type { Decision } from '../policy/decision.js';
import { CLIENT, DAY, HOUR, iso, personaPrincipal, PUBLIC_BASE, recordedEvent, recordedRequest, SITE } from './recorded.js';


/** Ids of the oversight fixtures. */
export const OVERSIGHT_FIXTURES = {
  staffPatient: 'pat-fx-staff-girard',
  staffCareTeam: 'ct-fx-staff-girard',
  staffStay: 'enc-fx-staff-girard',
  flaggedPatient: 'pat-fx-public-figure',
  flaggedCareTeam: 'ct-fx-public-figure',
  namesakePatient: 'pat-fx-namesake-martin',
  namesakeCareTeam: 'ct-fx-namesake-martin',
  /** Ten days old, no verdict. */
  openBreakGlass: 'ae-fx-btg-public-start',
  openBreakGlassRead: 'ae-fx-btg-public-read',
  /** Twenty days old, judged justified. */
  closedBreakGlass: 'ae-fx-btg-ortho-start',
  closedBreakGlassRead: 'ae-fx-btg-ortho-read',
  closedVerdict: 'ae-fx-btg-ortho-verdict',
} as const;

/** Labels of the two monitored patients (the `oversight.detectors.sensitivePatients` defaults). */
export const STAFF_LABEL: Coding = { system: 'http://terminology.hl7.org/CodeSystem/v3-ActCode', code: 'EMP', display: 'employee information sensitivity' };
export const FLAGGED_LABEL: Coding = { system: 'http://terminology.hl7.org/CodeSystem/v3-ActCode', code: 'CEL', display: 'celebrity information sensitivity' };


/** The break-the-glass history: two openings with their reads, one closed by the DIM's verdict. */
export function breakGlassHistory(now: number): AuditEvent[] {
  const F = OVERSIGHT_FIXTURES;
  const roux = personaPrincipal('emergency');
  const opening = (id: string, readId: string, patient: string, at: number, reason: string): AuditEvent[] => {
    const until = at + HOUR;
    const common = { publicBaseUrl: PUBLIC_BASE, site: SITE, principal: roux, clientId: CLIENT, clientAddress: '10.20.0.31' };
    const grant = { source: 'break-glass' as const, reference: undefined, until: iso(until), reason };
    const decision: Decision = {
      effect: 'permit',
      reason: 'break-glass',
      rule: 'emergency.care-team',
      message: 'Within the care relationships',
      evidence: [grant],
      obligations: [{ kind: 'filter-response' }, { kind: 'mark-break-glass' }, { kind: 'audit-severity', severity: 'high' }],
      patients: [patient],
      purposeOfUse: 'BTG',
    };
    return [
      recordedEvent({ ...common, kind: 'break-glass-start', ids: [id], requestId: `demo-${id}`, recorded: iso(at), patients: [patient], breakGlass: { reason, until: iso(until) } }),
      recordedEvent({
        ...common,
        ids: [readId],
        requestId: `demo-${id}`,
        recorded: iso(at),
        interaction: recordedRequest(`/Patient/${patient}`),
        decision,
        httpStatus: 200,
        upstreamStatus: 200,
        patients: [patient],
        resourceRefs: [`Patient/${patient}`],
      }),
    ];
  };
  const closedAt = now - 20 * DAY - 3 * HOUR;
  const verdict = buildVerdictEvent({
    id: F.closedVerdict,
    requestId: 'demo-verdict-ortho',
    recorded: iso(closedAt + 2 * DAY),
    principal: personaPrincipal('dim'),
    clientAddress: '10.20.2.5',
    publicBaseUrl: PUBLIC_BASE,
    site: SITE,
    opening: { id: F.closedBreakGlass, patient: 'pat-fx-ortho', openedBy: 'Practitioner/prat-roux' },
    verdict: 'justified',
    comment: 'Patient transféré des urgences en orthopédie la nuit même ; accès conforme à la prise en charge.',
  });
  return [
    ...opening(F.openBreakGlass, F.openBreakGlassRead, F.flaggedPatient, now - 10 * DAY - 2 * HOUR, 'Malaise en salle d’attente des urgences, recherche des antécédents'),
    ...opening(F.closedBreakGlass, F.closedBreakGlassRead, 'pat-fx-ortho', closedAt, 'Polytraumatisé arrivé par le SAMU, bilan des traitements en cours'),
    verdict,
  ];
}


