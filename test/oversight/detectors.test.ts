import { describe, expect, it } from 'vitest';
import type { AuditEvent } from '@medplum/fhirtypes';
import { buildAuditEvents } from '../../src/audit/build.js';
import type { Decision } from '../../src/policy/decision.js';
import { observationOf, type Observation } from '../../src/oversight/alert.js';
import { oversightConfigSchema } from '../../src/oversight/config.js';
import { createDetectors, type DetectorOptions } from '../../src/oversight/detectors.js';
import { labelsOf, surnameKeys } from '../../src/oversight/facts.js';
import { baseInput, interaction, practitioner } from '../audit/fixtures.js';

/** Detectors on a fake clock: each rule, its window, its cooldown, and the state that outlives a restart. */

const HOURS = { timeZone: 'Europe/Paris', offHoursStart: 20, offHoursEnd: 7, weekends: true };
// A Tuesday, 10:00 in Paris.
const T0 = Date.parse('2026-03-03T09:00:00Z');

function detectors(overrides: Record<string, unknown> = {}, clock = { t: T0 }) {
  const cfg = oversightConfigSchema.parse({ detectors: overrides });
  let n = 0;
  const opts: DetectorOptions = { detectors: cfg.detectors, cooldownMinutes: cfg.cooldownMinutes, hours: HOURS, site: 'test', now: () => clock.t, newId: () => `alert-${++n}` };
  return { d: createDetectors(opts), clock, opts };
}

let seq = 0;
function obs(o: Partial<Observation>): Observation {
  seq++;
  return {
    eventId: `ev-${seq}`,
    kind: 'access',
    granted: true,
    refused: false,
    requestId: `req-${seq}`,
    userRef: 'Practitioner/prat-martin',
    userId: '899700000013',
    roles: ['clinician'],
    patients: [],
    clientAddress: '10.0.0.5',
    ...o,
  };
}

describe('oversight detectors', () => {
  it('alerts on a burst of break-the-glass openings by one user, once per cooldown', () => {
    const { d, clock } = detectors({ breakGlassBurst: { count: 3, windowMinutes: 60 } });
    const open = () => d.observe(obs({ kind: 'break-glass-start', userRef: 'Practitioner/prat-roux', patients: [`Patient/p${seq}`] }));
    expect(open()).toEqual([]);
    clock.t += 10 * 60_000;
    expect(open()).toEqual([]);
    const [a] = open();
    expect(a).toMatchObject({ rule: 'break-glass-burst', count: 3, threshold: 3, windowMinutes: 60, user: { reference: 'Practitioner/prat-roux' } });
    expect(a!.auditEvents).toHaveLength(3);
    // Still bursting, but the cooldown keeps the same rule quiet about the same user.
    expect(open()).toEqual([]);
  });

  it('forgets openings older than the window', () => {
    const { d, clock } = detectors({ breakGlassBurst: { count: 2, windowMinutes: 30 } });
    d.observe(obs({ kind: 'break-glass-start', userRef: 'Practitioner/prat-roux' }));
    clock.t += 31 * 60_000;
    expect(d.observe(obs({ kind: 'break-glass-start', userRef: 'Practitioner/prat-roux' }))).toEqual([]);
  });

  it('alerts when one user opens more than N distinct patients within the hour, not on repeated reads of the same', () => {
    const { d, clock } = detectors({ distinctPatients: { max: 3, windowMinutes: 60 } });
    for (let i = 0; i < 10; i++) expect(d.observe(obs({ patients: ['Patient/a'] }))).toEqual([]);
    expect(d.observe(obs({ patients: ['Patient/b', 'Patient/c'] }))).toEqual([]);
    clock.t += 59 * 60_000;
    const [a] = d.observe(obs({ patients: ['Patient/d'] }));
    expect(a).toMatchObject({ rule: 'distinct-patients', count: 4, threshold: 3 });
    // Refused attempts and failures are not openings.
    const fresh = detectors({ distinctPatients: { max: 1 } }).d;
    expect(fresh.observe(obs({ granted: false, refused: true, patients: ['Patient/a', 'Patient/b'] }))).toEqual([]);
  });

  it('counts an hour as sliding: patients opened more than an hour ago no longer count', () => {
    const { d, clock } = detectors({ distinctPatients: { max: 2, windowMinutes: 60 } });
    d.observe(obs({ patients: ['Patient/a', 'Patient/b'] }));
    clock.t += 61 * 60_000;
    expect(d.observe(obs({ patients: ['Patient/c', 'Patient/d'] }))).toEqual([]);
  });

  it('dates a patient by her last opening: one read again stays in the hour, one not read again leaves it', () => {
    const { d, clock } = detectors({ distinctPatients: { max: 2, windowMinutes: 60 } });
    d.observe(obs({ patients: ['Patient/a', 'Patient/b'] }));
    clock.t += 30 * 60_000;
    d.observe(obs({ patients: ['Patient/a'] }));
    clock.t += 40 * 60_000;
    // b (70 min ago) has left the window, a (40 min ago) has not: a, c and d make three.
    const [a] = d.observe(obs({ patients: ['Patient/c', 'Patient/d'] }));
    expect(a).toMatchObject({ rule: 'distinct-patients', count: 3 });
    // Restored from a state file whatever its order, the windows date patients the same way.
    const saved = d.snapshot();
    const u = Object.values(saved.users)[0]!;
    u.patients = [...u.patients!].reverse();
    // Without the cooldown the alert above started, so that the restored windows can speak.
    saved.cooldowns = [];
    const { d: again, clock: c2 } = detectors({ distinctPatients: { max: 3, windowMinutes: 60 } }, { t: clock.t + 25 * 60_000 });
    again.restore(saved);
    // 25 min later a (65 min) has left; c and d remain, with e and f: four, above three.
    expect(c2.t).toBeGreaterThan(clock.t);
    expect(again.observe(obs({ patients: ['Patient/e', 'Patient/f'] }))[0]).toMatchObject({ rule: 'distinct-patients', count: 4 });
  });

  it('alerts on repeated refusals (probing), one per request however many patients it named, and on failed logins by address', () => {
    const { d } = detectors({ refusals: { count: 3, windowMinutes: 10 } });
    const refused = (o: Partial<Observation> = {}) => obs({ granted: false, refused: true, ...o });
    // One refused search over two patients is two AuditEvents but one attempt.
    d.observe(refused({ requestId: 'r1', patients: ['Patient/a'] }));
    expect(d.observe(refused({ requestId: 'r1', patients: ['Patient/b'] }))).toEqual([]);
    d.observe(refused({ requestId: 'r2' }));
    const [a] = d.observe(refused({ requestId: 'r3' }));
    expect(a).toMatchObject({ rule: 'repeated-refusals', count: 3 });
    const logins = () => obs({ kind: 'login-failure', granted: false, refused: true, userRef: undefined, userId: undefined, clientAddress: '203.0.113.9' });
    d.observe(logins());
    d.observe(logins());
    const [b] = d.observe(logins());
    expect(b).toMatchObject({ rule: 'repeated-refusals', clientAddress: '203.0.113.9' });
    expect(b!.user).toBeUndefined();
  });

  it('alerts when a user opens a listed staff member or flagged patient, granted or refused, once per cooldown', () => {
    const { d, clock } = detectors({ sensitivePatients: { staffPatients: ['pat-nurse'], flaggedPatients: ['pat-star'] } });
    const [s] = d.observe(obs({ patients: ['Patient/pat-nurse'] }));
    expect(s).toMatchObject({ rule: 'staff-patient', patient: 'Patient/pat-nurse', outcome: 'granted', auditEvents: [`ev-${seq}`] });
    const [f] = d.observe(obs({ granted: false, refused: true, patients: ['Patient/pat-star'] }));
    expect(f).toMatchObject({ rule: 'flagged-patient', outcome: 'refused' });
    expect(d.observe(obs({ patients: ['Patient/pat-nurse'] }))).toEqual([]);
    clock.t += 61 * 60_000;
    expect(d.observe(obs({ patients: ['Patient/pat-nurse'] }))).toHaveLength(1);
    // Another user is another alert.
    expect(d.observe(obs({ userRef: 'Practitioner/prat-bernard', patients: ['Patient/pat-nurse'] }))).toHaveLength(1);
  });

  it('judges labels and surnames from the patient’s record', () => {
    const { d } = detectors();
    const o = obs({ patients: ['Patient/x'] });
    expect(d.needsFacts(o)).toBe(true);
    const labels = labelsOf({ security: [{ system: 'http://terminology.hl7.org/CodeSystem/v3-ActCode', code: 'CEL' }], tag: [{ system: 'http://terminology.hl7.org/CodeSystem/v3-ActCode', code: 'EMP' }] });
    const alerts = d.judgePatient(o, 'Patient/x', { labels, surnames: surnameKeys([{ family: 'Martin-Durand' }]) }, surnameKeys([{ family: 'MARTIN' }]));
    expect(alerts.map((a) => a.rule).sort()).toEqual(['flagged-patient', 'same-surname', 'staff-patient']);
    expect(d.judgePatient(obs({ patients: ['Patient/y'] }), 'Patient/y', { labels: [], surnames: surnameKeys([{ family: 'Dupont' }]) }, surnameKeys([{ family: 'Martin' }]))).toEqual([]);
  });

  it('compares family names without accents or case, part by part, but not on particles', () => {
    expect(surnameKeys([{ family: 'Lefèvre' }])).toEqual(['LEFEVRE']);
    expect(surnameKeys([{ family: 'Martin-Durand' }])).toEqual(['MARTIN-DURAND', 'MARTIN', 'DURAND']);
    expect(surnameKeys([{ family: 'de La Tour' }])).toEqual(['DE LA TOUR', 'TOUR']);
    expect(surnameKeys([{ given: ['Li'] }, { family: 'Li' }])).toEqual([]);
  });

  it('alerts on activity outside usual hours when enabled, in the review time zone', () => {
    const { d, clock } = detectors({ offHours: { enabled: true, count: 2, windowMinutes: 120 } });
    expect(d.observe(obs({ patients: ['Patient/a'] }))).toEqual([]);
    clock.t = Date.parse('2026-03-03T21:30:00Z'); // 22:30 in Paris
    expect(d.observe(obs({ patients: ['Patient/a'] }))).toEqual([]);
    expect(d.observe(obs({ patients: ['Patient/b'] }))[0]).toMatchObject({ rule: 'off-hours', count: 2 });
    expect(detectors().d.observe(obs({ patients: ['Patient/a'] }))).toEqual([]);
  });

  it('does not watch the roles a detector ignores', () => {
    const { d } = detectors({ distinctPatients: { max: 1, ignoreRoles: ['dim'] } });
    expect(d.observe(obs({ roles: ['dim'], patients: ['Patient/a', 'Patient/b', 'Patient/c'] }))).toEqual([]);
    expect(d.observe(obs({ roles: ['clinician'], patients: ['Patient/a', 'Patient/b'] }))).toHaveLength(1);
  });

  it('keeps its windows and cooldowns across a restart (snapshot and restore)', () => {
    const clock = { t: T0 };
    const first = detectors({ distinctPatients: { max: 3 } }, clock).d;
    first.observe(obs({ patients: ['Patient/a', 'Patient/b'] }));
    first.observe(obs({ userRef: 'Practitioner/x', patients: ['Patient/a', 'Patient/b', 'Patient/c', 'Patient/d'] }));
    const saved = JSON.parse(JSON.stringify(first.snapshot()));
    clock.t += 5 * 60_000;
    const second = detectors({ distinctPatients: { max: 3 } }, clock).d;
    second.restore(saved);
    expect(second.observe(obs({ patients: ['Patient/c', 'Patient/d'] }))[0]).toMatchObject({ rule: 'distinct-patients', count: 4 });
    // x was alerted before the restart: still in cooldown.
    expect(second.observe(obs({ userRef: 'Practitioner/x', patients: ['Patient/e'] }))).toEqual([]);
  });

  it('alerts once per overdue break-the-glass opening, with an id of its own', () => {
    const { d } = detectors();
    const a = d.unreviewed({ id: 'ae-1', patient: 'Patient/p', userRef: 'Practitioner/prat-roux', ageDays: 9, dueDays: 7 });
    expect(a).toMatchObject({ id: 'unreviewed-ae-1', rule: 'break-glass-unreviewed', patient: 'Patient/p', count: 9, threshold: 7, auditEvents: ['ae-1'] });
    expect(d.unreviewed({ id: 'ae-1', patient: 'Patient/p', ageDays: 10, dueDays: 7 })).toBeUndefined();
  });

  it('reads what it needs from caregate’s AuditEvents, and raises alerts that carry no name', () => {
    const { d } = detectors({ sensitivePatients: { staffPatients: ['pat-1'] } });
    const decision: Decision = { effect: 'permit', reason: 'care-relationship', rule: 'clinician.care-team', message: 'ok', evidence: [], obligations: [], patients: ['pat-1'] };
    const [ev] = buildAuditEvents(baseInput({ principal: practitioner(), interaction: interaction('read', { resourceType: 'Patient', id: 'pat-1' }), decision, httpStatus: 200, patients: ['pat-1'] })) as [AuditEvent];
    const o = observationOf(ev);
    expect(o).toMatchObject({ kind: 'access', granted: true, userRef: 'Practitioner/prat-martin', userId: '899700000013', roles: ['clinician'], patients: ['Patient/pat-1'] });
    const [a] = d.observe(o);
    expect(a).toMatchObject({ rule: 'staff-patient', user: { reference: 'Practitioner/prat-martin', identifier: '899700000013' }, auditEvents: [ev.id] });
    expect(JSON.stringify(a)).not.toMatch(/MARTIN|Claire/);
  });
});
