import type { AuditEvent, Bundle } from '@medplum/fhirtypes';
import { tryParseJsonStrict } from '../fhir/json.js';
import { CaregateSubtype } from './codes.js';
import { readSpoolDir } from './spool.js';

/**
 * Fetching the audit trail for a review: the AuditEvents of a period, read from the local spool or
 * paged from the FHIR server (same origin only, bounded number of pages).
 */

/** Where the trail is read from: the local spool (what is not yet deleted) or the FHIR server. */
export type ReviewSource =
  | { spoolDir: string }
  | { baseUrl: string; headers?: Record<string, string>; timeoutMs?: number; maxPages?: number; dispatcher?: unknown };

/** The period holds more pages of events than the source's `maxPages` allows. */
export class ReviewTooLargeError extends Error {
  constructor(readonly maxPages: number) {
    super(`audit review: more than ${maxPages} pages of events`);
    this.name = 'ReviewTooLargeError';
  }
}

/** Reads the AuditEvents recorded in [from, to] from the spool or the FHIR server, one per id. */
export async function loadAuditEvents(source: ReviewSource, from: string, to: string): Promise<AuditEvent[]> {
  let events: AuditEvent[];
  if ('spoolDir' in source) {
    events = (await readSpoolDir(source.spoolDir)).events;
  } else {
    events = await fetchAuditEvents(source, from, to);
  }
  const fromMs = Date.parse(from);
  const toMs = Date.parse(to);
  const byId = new Map<string, AuditEvent>();
  for (const e of events) {
    const t = Date.parse(e.recorded);
    if (e.id && t >= fromMs && t <= toMs) byId.set(e.id, e);
  }
  return [...byId.values()].sort((a, b) => a.recorded.localeCompare(b.recorded));
}

/**
 * The DIM's break-the-glass verdicts recorded from `from` on (audit/verdict.ts), without an upper
 * bound: a verdict comes after the opening it closes, possibly after the period reviewed.
 */
export async function loadVerdictEvents(source: ReviewSource, from: string): Promise<AuditEvent[]> {
  const fromMs = Date.parse(from);
  const isVerdict = (e: AuditEvent) =>
    e.subtype?.some((c) => c.system === CaregateSubtype.breakGlassVerdict.system && c.code === CaregateSubtype.breakGlassVerdict.code) === true;
  if ('spoolDir' in source) {
    return (await readSpoolDir(source.spoolDir)).events.filter((e) => isVerdict(e) && Date.parse(e.recorded) >= fromMs);
  }
  const s = CaregateSubtype.breakGlassVerdict;
  return (await searchAuditEvents(source, [['subtype', `${s.system}|${s.code}`], ['date', `ge${from}`]])).filter(isVerdict);
}

async function fetchAuditEvents(source: Extract<ReviewSource, { baseUrl: string }>, from: string, to: string): Promise<AuditEvent[]> {
  return searchAuditEvents(source, [
    ['date', `ge${from}`],
    ['date', `le${to}`],
  ]);
}

/**
 * `AuditEvent?<params>` on the audit FHIR server, every page followed (same origin only, at most
 * `maxPages`): the `match` entries.
 */
export async function searchAuditEvents(source: Extract<ReviewSource, { baseUrl: string }>, params: readonly (readonly [string, string])[]): Promise<AuditEvent[]> {
  const base = source.baseUrl.replace(/\/+$/, '');
  const origin = new URL(base).origin;
  const out: AuditEvent[] = [];
  const qs = new URLSearchParams([...params.map(([k, v]): [string, string] => [k, v]), ['_count', '500']]);
  let url: string | undefined = `${base}/AuditEvent?${qs}`;
  for (let page = 0; url; page++) {
    if (page >= (source.maxPages ?? 100_000)) throw new ReviewTooLargeError(source.maxPages ?? 100_000);
    const res = await fetch(url, {
      headers: { accept: 'application/fhir+json', ...source.headers },
      signal: AbortSignal.timeout(source.timeoutMs ?? 60_000),
      ...(source.dispatcher ? { dispatcher: source.dispatcher } : {}),
    } as RequestInit);
    if (res.status !== 200) throw new Error(`audit review: the FHIR server answered HTTP ${res.status}`);
    const parsed = tryParseJsonStrict(Buffer.from(await res.arrayBuffer()));
    if (!parsed.ok) throw new Error(`audit review: the FHIR server answered a body that is not strict JSON (${parsed.problem.kind})`);
    const bundle = parsed.value as Bundle;
    if (bundle.resourceType !== 'Bundle') throw new Error('audit review: the FHIR server did not answer a Bundle');
    for (const e of bundle.entry ?? []) {
      if (e.resource?.resourceType === 'AuditEvent' && (e.search?.mode ?? 'match') === 'match') out.push(e.resource);
    }
    const next = bundle.link?.find((l) => l.relation === 'next')?.url;
    // Follow the server's paging, but never to another origin with our credentials.
    if (next && new URL(next, `${base}/`).origin !== origin) throw new Error('audit review: next link to another origin');
    url = next ? new URL(next, `${base}/`).href : undefined;
  }
  return out;
}
