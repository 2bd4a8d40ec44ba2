import { randomUUID } from 'node:crypto';
import { localClock } from '../audit/review-time.js';
import type { ReviewHours } from '../audit/review-model.js';
import { userKeyOf, type Alert, type AlertRule, type Observation } from './alert.js';
import type { DetectorsConfig } from './config.js';

/**
 * The detectors: sliding windows per user over the live stream of AuditEvents, updated in memory
 * (a few map operations per event, on the audit stage, after the events are durable). Pure apart
 * from the clock and id generation: the monitor (monitor.ts) feeds them, delivers what they raise,
 * and saves their state (`snapshot`/`restore`) so that a restart forgets nothing it counted.
 *
 * Time is the detectors' clock at observation (the audit stage runs as the request is answered),
 * so that a test's fake clock moves the windows.
 */

export interface DetectorOptions {
  detectors: DetectorsConfig;
  cooldownMinutes: number;
  hours: ReviewHours;
  site: string;
  now: () => number;
  newId?: () => string;
}

/** What a patient's record says of her, for the patient rules (oversight/facts.ts). */
export interface PatientFacts {
  /** `system|code` labels of `meta.security` and `meta.tag`. */
  labels: readonly string[];
  /** Family names, normalised (`surnameKeys`). */
  surnames: readonly string[];
}

/** The saved state: windows, cooldowns, overdue openings already alerted. */
export interface DetectorState {
  version: 1;
  savedAt: number;
  users: Record<string, UserWindowsJson>;
  cooldowns: [string, number][];
  unreviewed: [string, number][];
}

interface UserWindowsJson {
  user?: { reference?: string; identifier?: string };
  clientAddress?: string;
  btg?: Entry[];
  refusals?: Entry[];
  offHours?: Entry[];
  patients?: [string, number, string][];
}

/** [time, AuditEvent id, request id]. */
type Entry = [number, string, string];

interface UserWindows {
  user: { reference?: string; identifier?: string } | undefined;
  clientAddress: string | undefined;
  btg: Entry[];
  refusals: Entry[];
  offHours: Entry[];
  /** patient → [time, AuditEvent id] of the latest access. */
  patients: Map<string, [number, string]>;
}

const MINUTE = 60_000;
const MAX_IDS = 50;
/** Users tracked at most (the least recently seen are dropped first). */
const MAX_USERS = 100_000;

export interface Detectors {
  /** Updates the windows with one AuditEvent; returns the alerts it raises (list-based patient rules included). */
  observe(o: Observation): Alert[];
  /** The patient rules that need the patient's record (labels) and the user's names (same surname). */
  judgePatient(o: Observation, patient: string, facts: PatientFacts, userSurnames: readonly string[]): Alert[];
  /** An overdue break-the-glass opening: an alert once per opening (`undefined` when already alerted). */
  unreviewed(opening: { id: string; patient: string; userRef?: string; userId?: string; ageDays: number; dueDays: number }): Alert | undefined;
  /** Whether the patient rules need the record of this patient for this event (labels or surnames configured). */
  needsFacts(o: Observation): boolean;
  snapshot(): DetectorState;
  restore(s: DetectorState): void;
  /** Drops what no window needs any more. */
  prune(): void;
}

export function createDetectors(opts: DetectorOptions): Detectors {
  const d = opts.detectors;
  const newId = opts.newId ?? randomUUID;
  const users = new Map<string, UserWindows>();
  const cooldowns = new Map<string, number>();
  const unreviewedAlerted = new Map<string, number>();
  const clock = localClock(opts.hours.timeZone);
  const staffIds = new Set(d.sensitivePatients.staffPatients.map((p) => `Patient/${p}`));
  const flaggedIds = new Set(d.sensitivePatients.flaggedPatients.map((p) => `Patient/${p}`));
  const staffLabels = new Set(d.sensitivePatients.staffLabels);
  const flaggedLabels = new Set(d.sensitivePatients.flaggedLabels);

  function windowsOf(key: string, o: Observation): UserWindows {
    let w = users.get(key);
    if (w) users.delete(key);
    else w = { user: undefined, clientAddress: undefined, btg: [], refusals: [], offHours: [], patients: new Map() };
    // Most recently seen last: the first key is the one dropped when the table is full.
    users.set(key, w);
    if (users.size > MAX_USERS) users.delete(users.keys().next().value!);
    if (o.userRef || o.userId) w.user = { ...(o.userRef ? { reference: o.userRef } : {}), ...(o.userId ? { identifier: o.userId } : {}) };
    else if (o.clientAddress) w.clientAddress = o.clientAddress;
    return w;
  }

  const ignored = (roles: readonly string[], o: Observation) => roles.length > 0 && o.roles.some((r) => roles.includes(r));

  /** Once per cooldown per key: whether the rule may speak now. */
  function claim(key: string, t: number): boolean {
    const until = cooldowns.get(key);
    if (until !== undefined && until > t) return false;
    cooldowns.set(key, t + opts.cooldownMinutes * MINUTE);
    return true;
  }

  function alert(rule: AlertRule, w: UserWindows | undefined, o: Observation, a: Partial<Alert> & Pick<Alert, 'count' | 'threshold' | 'auditEvents' | 'summary'>): Alert {
    const user = w?.user ?? (o.userRef || o.userId ? { ...(o.userRef ? { reference: o.userRef } : {}), ...(o.userId ? { identifier: o.userId } : {}) } : undefined);
    return {
      id: newId(),
      rule,
      raisedAt: new Date(opts.now()).toISOString(),
      site: opts.site,
      ...(user ? { user } : {}),
      ...(!user && o.clientAddress ? { clientAddress: o.clientAddress } : {}),
      ...a,
      auditEvents: a.auditEvents.slice(-MAX_IDS),
    };
  }

  /** Appends to a counting window (one entry per request), trims it, and says whether it reached `count`. */
  function count(list: Entry[], o: Observation, t: number, windowMinutes: number, n: number): boolean {
    const from = t - windowMinutes * MINUTE;
    while (list.length && list[0]![0] < from) list.shift();
    const req = o.requestId ?? o.eventId;
    if (!list.some((e) => e[2] === req)) list.push([t, o.eventId, req]);
    while (list.length > Math.max(n, MAX_IDS)) list.shift();
    return list.length >= n;
  }

  function isOffHours(t: number): boolean {
    const h = opts.hours;
    const l = clock(new Date(t).toISOString());
    if (h.weekends && (l.weekday === 0 || l.weekday === 6)) return true;
    return h.offHoursStart > h.offHoursEnd ? l.hour >= h.offHoursStart || l.hour < h.offHoursEnd : l.hour >= h.offHoursStart && l.hour < h.offHoursEnd;
  }

  function patientAlert(rule: 'staff-patient' | 'flagged-patient' | 'same-surname', o: Observation, patient: string, t: number, summary: string): Alert | undefined {
    const key = userKeyOf(o);
    if (!key || !claim(`${rule} ${key} ${patient}`, t)) return undefined;
    return alert(rule, users.get(key), o, {
      patient,
      outcome: o.granted ? 'granted' : 'refused',
      count: 1,
      threshold: 1,
      auditEvents: [o.eventId],
      summary,
    });
  }

  const watchesPatients = (o: Observation) =>
    d.sensitivePatients.enabled && o.kind === 'access' && (o.granted || (o.refused && d.sensitivePatients.refusals)) && !ignored(d.sensitivePatients.ignoreRoles, o);

  return {
    observe(o) {
      const key = userKeyOf(o);
      if (!key || o.kind === 'other') return [];
      const t = opts.now();
      const out: Alert[] = [];
      // Windows only for what a counting rule counts (a read of the capabilities counts for nothing).
      const counted = (o.kind === 'break-glass-start' && o.granted) || o.refused || (o.kind === 'access' && o.granted && o.patients.length > 0);
      if (!counted) return out;
      const w = windowsOf(key, o);

      if (o.kind === 'break-glass-start' && o.granted && d.breakGlassBurst.enabled && !ignored(d.breakGlassBurst.ignoreRoles, o)) {
        const c = d.breakGlassBurst;
        if (count(w.btg, o, t, c.windowMinutes, c.count) && claim(`break-glass-burst ${key}`, t)) {
          out.push(alert('break-glass-burst', w, o, { count: w.btg.length, threshold: c.count, windowMinutes: c.windowMinutes, auditEvents: w.btg.map((e) => e[1]), summary: `${w.btg.length} break-the-glass openings within ${c.windowMinutes} min` }));
        }
      }
      if ((o.kind === 'access' || o.kind === 'login-failure') && o.refused && d.refusals.enabled && !ignored(d.refusals.ignoreRoles, o)) {
        const c = d.refusals;
        if (count(w.refusals, o, t, c.windowMinutes, c.count) && claim(`repeated-refusals ${key}`, t)) {
          out.push(alert('repeated-refusals', w, o, { count: w.refusals.length, threshold: c.count, windowMinutes: c.windowMinutes, auditEvents: w.refusals.map((e) => e[1]), summary: `${w.refusals.length} refused attempts within ${c.windowMinutes} min` }));
        }
      }
      if (o.kind === 'access' && o.granted && o.patients.length > 0) {
        const c = d.distinctPatients;
        if (c.enabled && !ignored(c.ignoreRoles, o)) {
          const from = t - c.windowMinutes * MINUTE;
          // The window is kept in the order of last access (a patient seen again moves to its end):
          // only its expired head is visited, so an event costs its own patients, not the window's.
          for (const [p, [at]] of w.patients) {
            if (at >= from) break;
            w.patients.delete(p);
          }
          for (const p of o.patients) {
            w.patients.delete(p);
            w.patients.set(p, [t, o.eventId]);
          }
          if (w.patients.size > c.max && claim(`distinct-patients ${key}`, t)) {
            out.push(alert('distinct-patients', w, o, { count: w.patients.size, threshold: c.max, windowMinutes: c.windowMinutes, auditEvents: [...w.patients.values()].map((v) => v[1]), summary: `${w.patients.size} distinct patients opened within ${c.windowMinutes} min (more than ${c.max})` }));
          }
        }
        const off = d.offHours;
        if (off.enabled && !ignored(off.ignoreRoles, o) && isOffHours(t)) {
          if (count(w.offHours, o, t, off.windowMinutes, off.count) && claim(`off-hours ${key}`, t)) {
            out.push(alert('off-hours', w, o, { count: w.offHours.length, threshold: off.count, windowMinutes: off.windowMinutes, auditEvents: w.offHours.map((e) => e[1]), summary: `${w.offHours.length} access(es) outside usual hours within ${off.windowMinutes} min` }));
          }
        }
      }
      if (watchesPatients(o)) {
        for (const p of o.patients) {
          if (staffIds.has(p)) {
            const a = patientAlert('staff-patient', o, p, t, 'record of a staff member opened');
            if (a) out.push(a);
          }
          if (flaggedIds.has(p)) {
            const a = patientAlert('flagged-patient', o, p, t, 'record of a flagged patient opened');
            if (a) out.push(a);
          }
        }
      }
      return out;
    },

    needsFacts(o) {
      return watchesPatients(o) && o.patients.length > 0 && (staffLabels.size > 0 || flaggedLabels.size > 0 || d.sensitivePatients.sameSurname);
    },

    judgePatient(o, patient, facts, userSurnames) {
      if (!watchesPatients(o)) return [];
      const t = opts.now();
      const out: Alert[] = [];
      // A patient listed by id was alerted by `observe` already; the cooldown keeps the label from repeating it.
      if (facts.labels.some((l) => staffLabels.has(l))) {
        const a = patientAlert('staff-patient', o, patient, t, 'record of a staff member opened');
        if (a) out.push(a);
      }
      if (facts.labels.some((l) => flaggedLabels.has(l))) {
        const a = patientAlert('flagged-patient', o, patient, t, 'record of a flagged patient opened');
        if (a) out.push(a);
      }
      if (d.sensitivePatients.sameSurname && facts.surnames.some((s) => userSurnames.includes(s))) {
        const a = patientAlert('same-surname', o, patient, t, 'the patient shares a family name with the user');
        if (a) out.push(a);
      }
      return out;
    },

    unreviewed(opening) {
      if (unreviewedAlerted.has(opening.id)) return undefined;
      const t = opts.now();
      unreviewedAlerted.set(opening.id, t);
      const o: Observation = {
        eventId: opening.id,
        kind: 'break-glass-start',
        granted: true,
        refused: false,
        requestId: undefined,
        userRef: opening.userRef,
        userId: opening.userId,
        roles: [],
        patients: [opening.patient],
        clientAddress: undefined,
      };
      return {
        ...alert('break-glass-unreviewed', undefined, o, {
          patient: opening.patient,
          count: opening.ageDays,
          threshold: opening.dueDays,
          auditEvents: [opening.id],
          summary: `break-the-glass opened ${opening.ageDays} days ago, still without the DIM's verdict (due within ${opening.dueDays} days)`,
        }),
        // Every instance sweeps the same trail: one id per opening lets the receiver drop duplicates.
        id: `unreviewed-${opening.id}`,
      };
    },

    snapshot() {
      const out: DetectorState = { version: 1, savedAt: opts.now(), users: {}, cooldowns: [...cooldowns], unreviewed: [...unreviewedAlerted] };
      for (const [k, w] of users) {
        out.users[k] = {
          ...(w.user ? { user: w.user } : {}),
          ...(w.clientAddress ? { clientAddress: w.clientAddress } : {}),
          ...(w.btg.length ? { btg: w.btg } : {}),
          ...(w.refusals.length ? { refusals: w.refusals } : {}),
          ...(w.offHours.length ? { offHours: w.offHours } : {}),
          ...(w.patients.size ? { patients: [...w.patients].map(([p, [at, id]]): [string, number, string] => [p, at, id]) } : {}),
        };
      }
      return out;
    },

    restore(s) {
      if (s?.version !== 1) return;
      for (const [k, j] of Object.entries(s.users ?? {})) {
        const entries = (x: unknown): Entry[] => (Array.isArray(x) ? x.filter((e): e is Entry => Array.isArray(e) && typeof e[0] === 'number' && typeof e[1] === 'string' && typeof e[2] === 'string') : []);
        const patients = new Map<string, [number, string]>();
        const saved = (Array.isArray(j.patients) ? j.patients : []).filter((e) => Array.isArray(e) && typeof e[0] === 'string' && typeof e[1] === 'number' && typeof e[2] === 'string');
        // In the order of last access, as observe() keeps them.
        for (const e of saved.sort((a, b) => a[1] - b[1])) patients.set(e[0], [e[1], e[2]]);
        users.set(k, { user: j.user, clientAddress: j.clientAddress, btg: entries(j.btg), refusals: entries(j.refusals), offHours: entries(j.offHours), patients });
      }
      for (const [k, until] of Array.isArray(s.cooldowns) ? s.cooldowns : []) if (typeof k === 'string' && typeof until === 'number') cooldowns.set(k, until);
      for (const [id, at] of Array.isArray(s.unreviewed) ? s.unreviewed : []) if (typeof id === 'string' && typeof at === 'number') unreviewedAlerted.set(id, at);
    },

    prune() {
      const t = opts.now();
      const longest = Math.max(d.breakGlassBurst.windowMinutes, d.distinctPatients.windowMinutes, d.refusals.windowMinutes, d.offHours.windowMinutes) * MINUTE;
      for (const [k, w] of users) {
        const fresh = (e: Entry) => e[0] >= t - longest;
        w.btg = w.btg.filter(fresh);
        w.refusals = w.refusals.filter(fresh);
        w.offHours = w.offHours.filter(fresh);
        for (const [p, [at]] of w.patients) if (at < t - longest) w.patients.delete(p);
        if (!w.btg.length && !w.refusals.length && !w.offHours.length && !w.patients.size) users.delete(k);
      }
      for (const [k, until] of cooldowns) if (until <= t) cooldowns.delete(k);
      // An opening leaves the sweep's look-back after a year at most: forget it then.
      for (const [id, at] of unreviewedAlerted) if (at < t - 366 * 24 * 60 * MINUTE) unreviewedAlerted.delete(id);
    },
  };
}
