import type { AuditEvent } from '@medplum/fhirtypes';
import { verdictOf, type RecordedVerdict, type Verdict } from './verdict.js';

/**
 * Break-the-glass openings as review items: each opening (the DCM 110127 event) is open until the
 * DIM gives a verdict (justified or unjustified, with a comment), recorded as an AuditEvent that
 * points at it (audit/verdict.ts). The latest verdict counts. An item left open longer than the
 * configured number of days is overdue: flagged in the review and alerted (oversight/).
 */

export interface BreakGlassItem {
  /** The opening's AuditEvent id. */
  openingId: string;
  recorded: string;
  /** Who opened the glass: identifier (idNatPs, else subject), reference, name. */
  user: string;
  userRef: string;
  userName: string;
  /** `Patient/<id>`. */
  patient: string;
  reason: string;
  /** Break-the-glass accesses by that user to that patient found in the period. */
  accesses: number;
  status: 'open' | Verdict;
  /** The verdict in force (the latest), when there is one. */
  verdict: RecordedVerdict | undefined;
  /** How many verdicts were given (a DIM may revise one). */
  verdicts: number;
  /** Whole days since the opening. */
  ageDays: number;
  /** Open for more than `dueDays`. */
  overdue: boolean;
}

const DAY_MS = 86_400_000;

/** What the items read of each summarised event (review-model.ts `AuditSummary` has it all). */
export interface ReviewRow {
  id: string;
  recorded: string;
  kind: string;
  outcome: string;
  user: string | undefined;
  userRef: string | undefined;
  userName: string | undefined;
  patients: readonly string[];
  breakGlass: boolean;
  breakGlassReason: string | undefined;
}

/**
 * The review items of the openings among `rows` (the period's events, summarised), with the verdicts
 * found among `events` (which may reach beyond the period: a verdict comes after its opening).
 */
export function breakGlassItems(
  rows: readonly ReviewRow[],
  events: readonly AuditEvent[],
  opts: { now: Date; dueDays: number },
): BreakGlassItem[] {
  const verdicts = new Map<string, RecordedVerdict[]>();
  for (const e of events) {
    const v = verdictOf(e);
    if (!v) continue;
    const list = verdicts.get(v.opening) ?? [];
    list.push(v);
    verdicts.set(v.opening, list);
  }
  const accesses = new Map<string, number>();
  for (const s of rows) {
    if (s.kind !== 'access' || !s.breakGlass || s.outcome !== '0') continue;
    for (const p of s.patients) accesses.set(`${s.user ?? ''} ${p}`, (accesses.get(`${s.user ?? ''} ${p}`) ?? 0) + 1);
  }
  const now = opts.now.getTime();
  const items: BreakGlassItem[] = [];
  for (const s of rows) {
    if (s.kind !== 'break-glass-start' || s.outcome !== '0' || !s.id) continue;
    const given = (verdicts.get(s.id) ?? []).sort((a, b) => a.recorded.localeCompare(b.recorded));
    const latest = given.at(-1);
    const ageDays = Math.max(0, Math.floor((now - Date.parse(s.recorded)) / DAY_MS));
    for (const patient of s.patients.length ? s.patients : ['']) {
      items.push({
        openingId: s.id,
        recorded: s.recorded,
        user: s.user ?? '',
        userRef: s.userRef ?? '',
        userName: s.userName ?? '',
        patient,
        reason: s.breakGlassReason ?? '',
        accesses: accesses.get(`${s.user ?? ''} ${patient}`) ?? 0,
        status: latest?.verdict ?? 'open',
        verdict: latest,
        verdicts: given.length,
        ageDays,
        overdue: latest === undefined && now - Date.parse(s.recorded) > opts.dueDays * DAY_MS,
      });
    }
  }
  return items.sort((a, b) => b.recorded.localeCompare(a.recorded));
}
