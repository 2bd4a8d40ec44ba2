import type { AuditEvent } from '@medplum/fhirtypes';
import { DetailType, EntityName, ObjectRole } from '../audit/codes.js';
import { toCsv } from '../audit/review-csv.js';
import type { ReviewSource } from '../audit/review-load.js';
import { summarizeAuditEvent } from '../audit/review-model.js';
import { tryParseJsonStrict } from '../fhir/json.js';

/**
 * Reading the trail for the oversight views: one AuditEvent by id (the opening a verdict is
 * about), and a contractor engagement's trace as the DIM exports it (CSP R6113-9-2: date, hour,
 * person, resource, of every action of the contractor's staff).
 */

const ID = /^[A-Za-z0-9\-.]{1,64}$/;

/** `AuditEvent/<id>` from the audit FHIR server; undefined when it is not there (yet). */
export async function readTrailEvent(source: Extract<ReviewSource, { baseUrl: string }>, id: string): Promise<AuditEvent | undefined> {
  if (!ID.test(id)) return undefined;
  const res = await fetch(`${source.baseUrl.replace(/\/+$/, '')}/AuditEvent/${id}`, {
    headers: { accept: 'application/fhir+json', ...source.headers },
    signal: AbortSignal.timeout(source.timeoutMs ?? 30_000),
    ...(source.dispatcher ? { dispatcher: source.dispatcher } : {}),
  } as RequestInit);
  if (res.status === 404 || res.status === 410) {
    await res.arrayBuffer();
    return undefined;
  }
  if (res.status !== 200) throw new Error(`the audit server answered HTTP ${res.status}`);
  const parsed = tryParseJsonStrict(Buffer.from(await res.arrayBuffer()));
  if (!parsed.ok) throw new Error('the audit server answered a body that is not strict JSON');
  const ev = parsed.value as AuditEvent;
  return ev.resourceType === 'AuditEvent' && ev.id === id ? ev : undefined;
}

/** The engagement an AuditEvent was recorded under (the decision entity's `engagement` detail). */
export function engagementOf(ev: AuditEvent): string | undefined {
  return ev.entity?.find((e) => e.name === EntityName.decision)?.detail?.find((d) => d.type === DetailType.engagement)?.valueString;
}

/**
 * The trace of one engagement, as CSV: one row per AuditEvent recorded under it, with the date and
 * the hour in the establishment's time zone, the person (name, identifier, reference), the resource
 * (or the search), the patient, what was done and its outcome.
 */
export function engagementTraceCsv(events: readonly AuditEvent[], engagement: string, timeZone: string): { csv: string; rows: number; patients: string[] } {
  const fmt = new Intl.DateTimeFormat('en-CA', { timeZone, year: 'numeric', month: '2-digit', day: '2-digit', hour: '2-digit', minute: '2-digit', second: '2-digit', hourCycle: 'h23' });
  const rows: (string | number)[][] = [];
  const patients = new Set<string>();
  for (const ev of events) {
    if (engagementOf(ev) !== engagement) continue;
    const s = summarizeAuditEvent(ev);
    const parts = Object.fromEntries(fmt.formatToParts(new Date(ev.recorded)).map((p) => [p.type, p.value]));
    const resources = (ev.entity ?? []).filter((e) => e.role?.code === ObjectRole.domainResource.code && e.what?.reference).map((e) => e.what!.reference!);
    for (const p of s.patients) patients.add(p);
    rows.push([
      `${parts.year}-${parts.month}-${parts.day}`,
      `${parts.hour}:${parts.minute}:${parts.second}`,
      s.userName ?? '',
      s.user ?? '',
      s.userRef ?? '',
      resources.join(' ') || s.query || '',
      s.subtype,
      s.outcome === '0' ? 'granted' : s.outcome === '4' ? 'refused' : `failed (${s.outcome})`,
      s.patients.join(' '),
      ev.id ?? '',
      s.requestId ?? '',
    ]);
  }
  const csv = toCsv(['date', 'hour', 'person', 'person_identifier', 'person_reference', 'resource', 'interaction', 'outcome', 'patient', 'event_id', 'request_id'], rows);
  return { csv, rows: rows.length, patients: [...patients] };
}
