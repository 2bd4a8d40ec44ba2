import type { AuditEvent } from '@medplum/fhirtypes';
import { notificationStatuses } from './notification-event.js';
import { AgentType, DcmSubtype, DetailType, EntityName, EntityType, EventType, ObjectRole, Systems } from './codes.js';
import { breakGlassItems, type BreakGlassItem } from './review-items.js';
import { localClock, resolveBound, type LocalTime } from './review-time.js';

/**
 * The DIM review model, computed purely from AuditEvents: break-the-glass accesses to review,
 * refusals, accesses outside usual hours, users who opened unusually many records, and every access
 * to one patient (to answer a patient who asks who saw their record).
 */

export interface ReviewHours {
  timeZone: string;
  /** Hour (0-23) from which an access is outside usual hours. */
  offHoursStart: number;
  /** Hour (0-23) until which an access is outside usual hours. */
  offHoursEnd: number;
  weekends: boolean;
}

export interface ReviewUnusual {
  /** Flag only users above this many distinct patients (and above the others' mean + 3σ). */
  minPatients: number;
  /** Flag every user above this many distinct patients. */
  threshold?: number;
}

export interface ReviewOptions {
  /** ISO instant, or a date `YYYY-MM-DD` (start of that day in the review time zone). */
  from: string;
  /** ISO instant, or a date `YYYY-MM-DD` (end of that day in the review time zone). */
  to: string;
  /** A patient id or `Patient/<id>` whose every access is listed. */
  patient?: string;
  hours?: Partial<ReviewHours>;
  unusual?: Partial<ReviewUnusual>;
  /** Clock for `generatedAt` and the age of break-the-glass review items. */
  now?: () => Date;
  /** A break-the-glass opening without a verdict is overdue after this many days (default 7). */
  verdictDueDays?: number;
}

/** One AuditEvent, flattened for review. */
export interface AuditSummary {
  id: string;
  recorded: string;
  kind: 'access' | 'break-glass-start' | 'policy-reload' | 'login-failure' | 'other';
  subtype: string;
  action: string;
  outcome: string;
  outcomeDesc: string;
  /** idNatPs, else the issuer-scoped subject, else the user reference. */
  user: string | undefined;
  userRef: string | undefined;
  userName: string | undefined;
  professions: string[];
  policyRoles: string[];
  patients: string[];
  resources: string[];
  query: string | undefined;
  clientAddress: string | undefined;
  clientId: string | undefined;
  purpose: string[];
  breakGlass: boolean;
  breakGlassReason: string | undefined;
  decisionReason: string | undefined;
  requestId: string | undefined;
  site: string | undefined;
}

export interface BreakGlassRow {
  recorded: string;
  what: 'opened' | 'access';
  user: string;
  userName: string;
  patient: string;
  reason: string;
  /** For an opening: whether the patient and her attending physician were told (`sent`, `failed`, `pending`). */
  notification: '' | 'sent' | 'failed' | 'pending';
  subtype: string;
  resources: string;
  outcome: string;
  requestId: string;
  eventId: string;
}

export interface RefusalRow {
  recorded: string;
  user: string;
  userName: string;
  clientAddress: string;
  patient: string;
  subtype: string;
  resources: string;
  reason: string;
  outcomeDesc: string;
  requestId: string;
  eventId: string;
}

export interface AccessRow {
  recorded: string;
  localTime: string;
  user: string;
  userName: string;
  professions: string;
  patient: string;
  action: string;
  subtype: string;
  resources: string;
  outcome: string;
  purpose: string;
  reason: string;
  clientAddress: string;
  requestId: string;
  eventId: string;
}

export interface ReviewModel {
  from: string;
  to: string;
  generatedAt: string;
  hours: ReviewHours;
  unusual: ReviewUnusual;
  sites: string[];
  totals: { events: number; accesses: number; refusals: number; failures: number; breakGlass: number; users: number; patients: number };
  daily: { day: string; accesses: number; refusals: number; breakGlass: number }[];
  breakGlass: BreakGlassRow[];
  /** Each break-the-glass opening of the period, open or closed by the DIM's verdict. */
  breakGlassItems: BreakGlassItem[];
  refusals: RefusalRow[];
  refusalsByUser: { user: string; userName: string; refusals: number; patients: number; last: string }[];
  refusalsByPatient: { patient: string; refusals: number; users: number; last: string }[];
  offHours: AccessRow[];
  /** Distinct patients opened per user (successful accesses), most first. */
  patientsPerUser: { user: string; userName: string; patients: number; accesses: number; flagged: boolean; threshold: number | undefined }[];
  unusualUsers: { user: string; userName: string; patients: number; accesses: number; threshold: number | undefined }[];
  patient: { patient: string; accesses: AccessRow[] } | undefined;
}

/** Usual hours when the options leave them out: Paris, 20:00 to 07:00 and weekends are off hours. */
export const DEFAULT_HOURS: ReviewHours = { timeZone: 'Europe/Paris', offHoursStart: 20, offHoursEnd: 7, weekends: true };
const DEFAULT_UNUSUAL: ReviewUnusual = { minPatients: 20 };

/** Flattens a caregate AuditEvent into the fields the review uses. */
export function summarizeAuditEvent(ev: AuditEvent): AuditSummary {
  const user = ev.agent.find((a) => a.requestor && a.type?.coding?.some((c) => c.code === AgentType.informationRecipient.code));
  const client = ev.agent.find((a) => a.network?.type === '2');
  const entities = ev.entity ?? [];
  const detailOf = (name: string, type: string) =>
    entities.find((e) => e.name === name)?.detail?.find((d) => d.type === type)?.valueString;
  const purpose = [
    ...(ev.purposeOfEvent ?? []).flatMap((c) => c.coding ?? []),
    ...(user?.purposeOfUse ?? []).flatMap((c) => c.coding ?? []),
  ]
    .filter((c) => c.system === Systems.actReason && c.code)
    .map((c) => c.code!);
  const roles = (user?.role ?? []).flatMap((r) => r.coding ?? []);
  const subtype = ev.subtype?.[0]?.code ?? '';
  let kind: AuditSummary['kind'] = 'other';
  if (ev.type.code === EventType.rest.code) kind = 'access';
  else if (ev.type.code === EventType.userAuthentication.code) kind = 'login-failure';
  else if (ev.type.code === EventType.securityAlert.code && subtype === DcmSubtype.emergencyOverrideStarted.code) kind = 'break-glass-start';
  else if (ev.type.code === EventType.securityAlert.code && subtype === DcmSubtype.securityConfiguration.code) kind = 'policy-reload';
  const uniquePurpose = [...new Set(purpose)];
  return {
    id: ev.id ?? '',
    recorded: ev.recorded,
    kind,
    subtype,
    action: ev.action ?? '',
    outcome: ev.outcome ?? '',
    outcomeDesc: ev.outcomeDesc ?? '',
    user: user?.who?.identifier?.value ?? user?.who?.reference,
    userRef: user?.who?.reference,
    userName: user?.name,
    professions: roles.filter((c) => c.system === Systems.professionSante).map((c) => c.code ?? ''),
    policyRoles: roles.filter((c) => c.system === Systems.policyRole).map((c) => c.code ?? ''),
    patients: entities
      .filter((e) => e.type?.code === EntityType.person.code && e.role?.code === ObjectRole.patient.code && e.what?.reference)
      .map((e) => e.what!.reference!),
    resources: entities.filter((e) => e.role?.code === ObjectRole.domainResource.code && e.what?.reference).map((e) => e.what!.reference!),
    query: entities.find((e) => e.role?.code === ObjectRole.query.code)?.description,
    clientAddress: client?.network?.address,
    clientId: client?.who?.identifier?.value,
    purpose: uniquePurpose,
    breakGlass: uniquePurpose.includes('BTG'),
    breakGlassReason: detailOf(EntityName.breakGlass, DetailType.breakGlassReason),
    decisionReason: detailOf(EntityName.decision, DetailType.decisionReason) ?? detailOf(EntityName.decision, DetailType.failureCode),
    requestId: entities.find((e) => e.type?.code === EntityType.requestId.code)?.what?.identifier?.value,
    site: ev.source.site,
  };
}

/** Computes the review of the given events over [from, to]. */
export function buildReviewModel(events: readonly AuditEvent[], opts: ReviewOptions): ReviewModel {
  const hours: ReviewHours = { ...DEFAULT_HOURS, ...opts.hours };
  const unusual: ReviewUnusual = { ...DEFAULT_UNUSUAL, ...opts.unusual };
  const from = resolveBound(opts.from, 'start', hours.timeZone);
  const to = resolveBound(opts.to, 'end', hours.timeZone);
  const fromMs = Date.parse(from);
  const toMs = Date.parse(to);
  const clock = localClock(hours.timeZone);
  const rows = events
    .filter((e) => {
      const t = Date.parse(e.recorded);
      return t >= fromMs && t <= toMs;
    })
    .map(summarizeAuditEvent)
    .sort((a, b) => a.recorded.localeCompare(b.recorded));

  const userKey = (s: AuditSummary) => s.user ?? `unidentified @ ${s.clientAddress ?? 'unknown'}`;
  const names = new Map<string, string>();
  for (const s of rows) if (s.user && s.userName) names.set(s.user, s.userName);
  const nameOf = (k: string) => names.get(k) ?? '';

  const accesses = rows.filter((s) => s.kind === 'access' && s.patients.length > 0);
  const refusals = rows.filter((s) => s.outcome === '4');
  const failures = rows.filter((s) => s.outcome === '8' || s.outcome === '12');
  const btg = rows.filter((s) => s.breakGlass && s.outcome === '0' && (s.kind === 'access' || s.kind === 'break-glass-start'));

  // Daily counts, by local day.
  const daily = new Map<string, { day: string; accesses: number; refusals: number; breakGlass: number }>();
  const dayOf = (s: AuditSummary) => {
    const day = clock(s.recorded).date;
    let d = daily.get(day);
    if (!d) daily.set(day, (d = { day, accesses: 0, refusals: 0, breakGlass: 0 }));
    return d;
  };
  for (const s of accesses) if (s.outcome === '0') dayOf(s).accesses++;
  for (const s of refusals) dayOf(s).refusals++;
  for (const s of btg) dayOf(s).breakGlass++;

  const told = notificationStatuses(events);
  const breakGlass: BreakGlassRow[] = btg.flatMap((s) =>
    (s.patients.length ? s.patients : ['']).map((patient) => ({
      recorded: s.recorded,
      what: s.kind === 'break-glass-start' ? ('opened' as const) : ('access' as const),
      user: userKey(s),
      userName: s.userName ?? '',
      patient,
      reason: s.breakGlassReason ?? '',
      notification: s.kind === 'break-glass-start' ? (told.get(s.id) ?? 'pending') : '',
      subtype: s.subtype,
      resources: s.resources.join(' '),
      outcome: s.outcome,
      requestId: s.requestId ?? '',
      eventId: s.id,
    })),
  );

  const refusalRows: RefusalRow[] = refusals.map((s) => ({
    recorded: s.recorded,
    user: userKey(s),
    userName: s.userName ?? '',
    clientAddress: s.clientAddress ?? '',
    patient: s.patients.join(' '),
    subtype: s.subtype,
    resources: s.resources.join(' '),
    reason: s.decisionReason ?? '',
    outcomeDesc: s.outcomeDesc,
    requestId: s.requestId ?? '',
    eventId: s.id,
  }));

  const byUser = new Map<string, { refusals: number; patients: Set<string>; last: string }>();
  const byPatient = new Map<string, { refusals: number; users: Set<string>; last: string }>();
  for (const s of refusals) {
    const u = userKey(s);
    const bu = byUser.get(u) ?? { refusals: 0, patients: new Set<string>(), last: '' };
    bu.refusals++;
    bu.last = s.recorded;
    for (const p of s.patients) bu.patients.add(p);
    byUser.set(u, bu);
    for (const p of s.patients) {
      const bp = byPatient.get(p) ?? { refusals: 0, users: new Set<string>(), last: '' };
      bp.refusals++;
      bp.last = s.recorded;
      bp.users.add(u);
      byPatient.set(p, bp);
    }
  }

  const toAccessRow = (s: AuditSummary, patient: string): AccessRow => ({
    recorded: s.recorded,
    localTime: clock(s.recorded).label,
    user: userKey(s),
    userName: s.userName ?? '',
    professions: s.professions.join(' '),
    patient,
    action: s.action,
    subtype: s.subtype,
    resources: s.resources.join(' ') || s.query || '',
    outcome: s.outcome,
    purpose: s.purpose.join(' '),
    reason: s.breakGlassReason ? `${s.decisionReason ?? ''} — ${s.breakGlassReason}` : (s.decisionReason ?? ''),
    clientAddress: s.clientAddress ?? '',
    requestId: s.requestId ?? '',
    eventId: s.id,
  });

  const offHours = accesses
    .filter((s) => isOffHours(clock(s.recorded), hours))
    .flatMap((s) => s.patients.map((p) => toAccessRow(s, p)));

  // Distinct patients opened per user (successful accesses only).
  const opened = new Map<string, { patients: Set<string>; accesses: number }>();
  for (const s of accesses) {
    if (s.outcome !== '0' || !s.user) continue;
    const o = opened.get(s.user) ?? { patients: new Set<string>(), accesses: 0 };
    o.accesses++;
    for (const p of s.patients) o.patients.add(p);
    opened.set(s.user, o);
  }
  const counts = [...opened.entries()].map(([user, o]) => ({ user, patients: o.patients.size, accesses: o.accesses }));
  const patientsPerUser = counts
    .map((c) => {
      const threshold = unusualThreshold(c, counts, unusual);
      return { ...c, userName: nameOf(c.user), threshold, flagged: threshold !== undefined && c.patients > threshold };
    })
    .sort((a, b) => b.patients - a.patients || a.user.localeCompare(b.user));

  let patient: ReviewModel['patient'];
  if (opts.patient) {
    const ref = opts.patient.startsWith('Patient/') ? opts.patient : `Patient/${opts.patient}`;
    patient = { patient: ref, accesses: rows.filter((s) => s.patients.includes(ref)).map((s) => toAccessRow(s, ref)) };
  }

  const generatedAt = opts.now?.() ?? new Date();
  return {
    from,
    to,
    generatedAt: generatedAt.toISOString(),
    hours,
    unusual,
    sites: [...new Set(rows.map((s) => s.site).filter((s): s is string => Boolean(s)))],
    totals: {
      events: rows.length,
      accesses: accesses.filter((s) => s.outcome === '0').length,
      refusals: refusals.length,
      failures: failures.length,
      breakGlass: btg.length,
      users: new Set(rows.filter((s) => s.user).map((s) => s.user)).size,
      patients: new Set(accesses.flatMap((s) => s.patients)).size,
    },
    daily: [...daily.values()].sort((a, b) => a.day.localeCompare(b.day)),
    breakGlass,
    // Verdicts are looked for among every event given, including those after the period.
    breakGlassItems: breakGlassItems(rows, events, { now: generatedAt, dueDays: opts.verdictDueDays ?? 7 }),
    refusals: refusalRows,
    refusalsByUser: [...byUser.entries()]
      .map(([user, b]) => ({ user, userName: nameOf(user), refusals: b.refusals, patients: b.patients.size, last: b.last }))
      .sort((a, b) => b.refusals - a.refusals || a.user.localeCompare(b.user)),
    refusalsByPatient: [...byPatient.entries()]
      .map(([p, b]) => ({ patient: p, refusals: b.refusals, users: b.users.size, last: b.last }))
      .sort((a, b) => b.refusals - a.refusals || a.patient.localeCompare(b.patient)),
    offHours,
    patientsPerUser,
    unusualUsers: patientsPerUser.filter((u) => u.flagged).map(({ flagged: _f, ...u }) => u),
    patient,
  };
}

/**
 * The distinct-patient count above which `user` is unusual: a fixed threshold if configured,
 * otherwise mean + 3σ of the *other* users (leave-one-out, so a single outlier does not hide itself
 * by inflating the statistics), never below `minPatients`. Undefined when there is nothing to compare.
 */
function unusualThreshold(
  user: { user: string; patients: number },
  all: readonly { user: string; patients: number }[],
  cfg: ReviewUnusual,
): number | undefined {
  const others = all.filter((o) => o.user !== user.user).map((o) => o.patients);
  let statistical: number | undefined;
  if (others.length >= 2) {
    const mean = others.reduce((a, b) => a + b, 0) / others.length;
    const sd = Math.sqrt(others.reduce((a, b) => a + (b - mean) ** 2, 0) / others.length);
    statistical = Math.max(cfg.minPatients, Math.floor(mean + 3 * sd));
  }
  if (cfg.threshold !== undefined) return statistical === undefined ? cfg.threshold : Math.min(cfg.threshold, statistical);
  return statistical;
}

function isOffHours(t: LocalTime, h: ReviewHours): boolean {
  if (h.weekends && (t.weekday === 0 || t.weekday === 6)) return true;
  return h.offHoursStart > h.offHoursEnd
    ? t.hour >= h.offHoursStart || t.hour < h.offHoursEnd
    : t.hour >= h.offHoursStart && t.hour < h.offHoursEnd;
}
