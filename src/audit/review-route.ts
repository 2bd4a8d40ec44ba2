import { randomBytes } from 'node:crypto';
import type { IncomingMessage, ServerResponse } from 'node:http';
import type { AuditEvent } from '@medplum/fhirtypes';
import type { Logger } from 'pino';
import { classify } from '../fhir/classify.js';
import type { SearchParam } from '../fhir/interaction.js';
import { peerAddress, type ClientAddressOf } from '../http/addresses.js';
import { ProxyError } from '../http/errors.js';
import { rawQueryOf, requestIdOf } from '../http/request-id.js';
import { outcomeFor } from '../http/outcome.js';
import type { Principal } from '../identity/principal.js';
import { scopeAllows } from '../identity/scopes.js';
import type { RoleConfig } from '../policy/config.js';
import type { Decision } from '../policy/decision.js';
import { serializeParams } from '../shape/request.js';
import { buildAuditEvents } from './build.js';
import { isLoginFailure } from './record.js';
import { reviewReport } from './review.js';
import { ReviewTooLargeError, type ReviewSource } from './review-load.js';
import type { ReviewHours, ReviewUnusual } from './review-model.js';
import { resolveBound } from './review-time.js';

/**
 * The DIM review served by caregate: `GET <prefix>` (the HTML report) and `GET <prefix>/<name>.csv`,
 * with `from`, `to` (dates `YYYY-MM-DD` in the review time zone, or instants) and `patient`.
 *
 * The caller is identified exactly as on the FHIR API, then allowed only when the first role of the
 * active policy that matches them has `readAudit: true`. The trail is read from the FHIR server
 * (the spool deletes what it shipped). Every answer, granted or refused, is itself audited and
 * durable before it is sent: reading who saw whom is an access to health data too.
 */
export interface ReviewRouteOptions {
  /** The client's address as the audit records it (the TCP peer, or X-Forwarded-For from `server.trustedProxies`). */
  clientAddress?: ClientAddressOf;
  /** The identify stage of the FHIR API. */
  identify(req: IncomingMessage): Promise<Principal>;
  /** The role that applies to this caller under the active policy (the first that matches). */
  roleOf(principal: Principal): RoleConfig | undefined;
  /** Where the trail is read (the audit FHIR server). */
  source: ReviewSource;
  hours: ReviewHours;
  unusual: ReviewUnusual;
  /** Longest period one view may cover, in days. */
  maxDays: number;
  /** Appends the events of this view to the spool; rejects when they cannot be made durable. */
  audit(events: AuditEvent[]): Promise<void>;
  publicBaseUrl: string;
  site: string;
  logger: Logger;
  now?: () => Date;
  /** An anti-forgery token for this DIM's verdict forms (oversight/); without it the page has no forms. */
  formToken?(principal: Principal): string;
  /** A break-the-glass opening without a verdict is overdue after this many days. */
  verdictDueDays?: number;
}

const PATIENT_ID = /^[A-Za-z0-9\-.]{1,64}$/;
const CSV_NAME = /^[A-Za-z0-9._-]{1,100}$/;
const PARAMS = new Set(['from', 'to', 'patient']);
const DAY_MS = 86_400_000;

/** What the query asks for, validated. */
interface ReviewQuery {
  /** Resolved instants. */
  from: string;
  to: string;
  /** As typed (or defaulted), for the page's form and links. */
  fromInput: string;
  toInput: string;
  patient: string | undefined;
}

/**
 * Builds the handler. `sub` is what follows the route prefix: `''` for the HTML page, `/<name>.csv`
 * for one CSV file; anything else is a 404.
 */
export function createReviewRoute(opts: ReviewRouteOptions) {
  const now = opts.now ?? (() => new Date());

  return async function handleReview(req: IncomingMessage, res: ServerResponse, sub: string): Promise<void> {
    const rawQuery = rawQueryOf(req.url ?? '/');
    const requestId = requestIdOf(req);
    const recorded = now().toISOString();
    res.setHeader('x-request-id', requestId);

    let principal: Principal | undefined;
    let role: RoleConfig | undefined;
    let query: ReviewQuery | undefined;
    let decision: Decision | undefined;
    let answer: { status: number; headers: Record<string, string>; body: string; contentType: string };
    let failure: ProxyError | undefined;
    try {
      principal = await opts.identify(req);
      if (req.method !== 'GET') {
        throw new ProxyError('ERR_METHOD_NOT_ALLOWED', 'The audit review is read with GET.', { headers: { allow: 'GET' } });
      }
      // Read before the decision, so that a refused attempt records the patient it was about.
      let badQuery: unknown;
      try {
        query = parseQuery(rawQuery, opts, now());
      } catch (err) {
        badQuery = err;
      }
      // roleOf refuses a role that requires a CPS card when none was presented.
      role = opts.roleOf(principal);
      decision = authorise(principal, role);
      if (query?.patient) decision = { ...decision, patients: [query.patient] };
      if (decision.effect === 'deny') throw new ProxyError('ERR_FORBIDDEN', decision.message, { detail: decision.reason, issue: 'forbidden' });
      if (badQuery !== undefined || !query) throw badQuery;
      const csvName = csvNameOf(sub);
      const nonce = randomBytes(16).toString('base64');
      const form = csvName === undefined && opts.formToken ? { token: opts.formToken(principal) } : undefined;
      const report = await loadReport(opts, query, csvName === undefined ? nonce : undefined, form, now);
      if (csvName === undefined) {
        answer = {
          status: 200,
          headers: {
            'content-security-policy': `default-src 'none'; style-src 'nonce-${nonce}'; script-src 'nonce-${nonce}'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'`,
          },
          body: report.html,
          contentType: 'text/html; charset=utf-8',
        };
      } else {
        const csv = report.csv[csvName];
        if (csv === undefined) throw new ProxyError('ERR_NOT_FOUND', 'No such file in the review.');
        answer = {
          status: 200,
          headers: { 'content-disposition': `attachment; filename="${csvName}"`, 'content-security-policy': "default-src 'none'; sandbox" },
          body: csv,
          contentType: 'text/csv; charset=utf-8',
        };
      }
    } catch (err) {
      failure = err instanceof ProxyError ? err : new ProxyError('ERR_INTERNAL', 'Internal error', { expose: false, cause: err });
      if (!(err instanceof ProxyError)) opts.logger.error({ reqId: requestId, err: { type: (err as Error)?.name } }, 'audit review failed');
      answer = refusal(failure);
    }

    const events = viewEvents(opts, { requestId, recorded, principal, query, rawQuery, decision, failure, status: answer.status, req });
    try {
      await opts.audit(events);
    } catch (err) {
      // Strict audit: a view that cannot be recorded is not shown.
      failure = err instanceof ProxyError ? err : new ProxyError('ERR_AUDIT_UNAVAILABLE', 'The audit trail cannot be written.', { cause: err });
      answer = refusal(failure);
    }

    opts.logger.info(
      { reqId: requestId, route: 'audit-review', status: answer.status, rule: decision?.rule, error: failure?.code },
      'audit review',
    );
    sendReviewAnswer(res, answer);
  };
}

/** An answer of the DIM's views: never cached, never framed, never sniffed, never sent as a referrer. */
export function sendReviewAnswer(res: ServerResponse, answer: ReviewAnswer): void {
  if (res.headersSent || res.destroyed) return;
  res.statusCode = answer.status;
  for (const [k, v] of Object.entries(answer.headers)) res.setHeader(k, v);
  res.setHeader('content-type', answer.contentType);
  res.setHeader('cache-control', 'no-store');
  res.setHeader('x-content-type-options', 'nosniff');
  res.setHeader('referrer-policy', 'no-referrer');
  res.setHeader('x-frame-options', 'DENY');
  const body = Buffer.from(answer.body);
  res.setHeader('content-length', String(body.length));
  res.end(body);
}

/** An answer of the DIM's views, before it is sent. */
export interface ReviewAnswer {
  status: number;
  headers: Record<string, string>;
  body: string;
  contentType: string;
}

/** `readAudit` on the role that applies, and a token whose scopes allow searching AuditEvent. */
export function authorise(p: Principal, role: RoleConfig | undefined): Decision {
  const deny = (message: string, rule: string): Decision => ({
    effect: 'deny',
    reason: 'role-forbidden',
    rule,
    message,
    evidence: [],
    obligations: [],
    patients: [],
  });
  if (!role) return deny('No role of the policy applies to this user.', 'default');
  if (!role.readAudit) return deny(`Role "${role.id}" may not read the audit trail.`, `${role.id}.readAudit`);
  if (!scopeAllows(p.claims.scopes, ['user', 'patient'], 'AuditEvent', 's')) {
    return { ...deny('The token\'s scopes do not allow "s" on AuditEvent.', `${role.id}.scopes`), reason: 'scope-ceiling' };
  }
  return {
    effect: 'permit',
    reason: 'role-all-records',
    rule: `${role.id}.readAudit`,
    message: 'Role may read the audit trail (DIM review)',
    evidence: [{ source: 'role', reference: undefined }],
    obligations: [],
    patients: [],
    purposeOfUse: 'HOPERAT',
  };
}

/** Validates `from`, `to`, `patient`: unknown or repeated parameters are refused, the period is bounded. */
export function parseQuery(rawQuery: string, opts: Pick<ReviewRouteOptions, 'hours' | 'maxDays'>, now: Date): ReviewQuery {
  const seen = new Map<string, string>();
  for (const [k, v] of new URLSearchParams(rawQuery)) {
    if (!PARAMS.has(k)) throw new ProxyError('ERR_BAD_REQUEST', `Unknown parameter "${k}": the review takes from, to and patient.`);
    if (seen.has(k)) throw new ProxyError('ERR_BAD_REQUEST', `The parameter "${k}" is given twice.`);
    seen.set(k, v);
  }
  const tz = opts.hours.timeZone;
  const today = new Intl.DateTimeFormat('en-CA', { timeZone: tz, year: 'numeric', month: '2-digit', day: '2-digit' }).format(now);
  const to = seen.get('to') || today;
  const fromDefault = new Date(Date.parse(`${/^\d{4}-\d{2}-\d{2}$/.test(to) ? to : today}T00:00:00Z`) - 6 * DAY_MS).toISOString().slice(0, 10);
  const from = seen.get('from') || fromDefault;
  let fromIso: string;
  let toIso: string;
  try {
    fromIso = resolveBound(from, 'start', tz);
    toIso = resolveBound(to, 'end', tz);
  } catch {
    throw new ProxyError('ERR_BAD_REQUEST', 'from and to are dates (YYYY-MM-DD) or ISO 8601 instants.');
  }
  const span = Date.parse(toIso) - Date.parse(fromIso);
  if (span < 0) throw new ProxyError('ERR_BAD_REQUEST', '`from` is after `to`.');
  if (span > opts.maxDays * DAY_MS) {
    throw new ProxyError('ERR_BAD_REQUEST', `The review covers at most ${opts.maxDays} days per view (audit.review.maxDays); use caregate review for longer periods.`);
  }
  let patient = seen.get('patient') || undefined;
  if (patient !== undefined) {
    patient = patient.startsWith('Patient/') ? patient.slice('Patient/'.length) : patient;
    if (!PATIENT_ID.test(patient)) throw new ProxyError('ERR_BAD_REQUEST', 'patient is a FHIR id (or Patient/<id>).');
  }
  return { from: fromIso, to: toIso, fromInput: from, toInput: to, patient };
}

/** `''` → the HTML page; `/<file>.csv` → that file name; anything else is not part of the review. */
function csvNameOf(sub: string): string | undefined {
  // The page is only at the prefix itself: its form and links are relative to it.
  if (sub === '') return undefined;
  const name = sub.slice(1);
  if (!name.endsWith('.csv') || !CSV_NAME.test(name)) throw new ProxyError('ERR_NOT_FOUND', 'No such file in the review.');
  return name;
}

async function loadReport(opts: ReviewRouteOptions, q: ReviewQuery, nonce: string | undefined, verdictForm: { token: string } | undefined, now: () => Date) {
  try {
    return await reviewReport(
      {
        from: q.from,
        to: q.to,
        source: opts.source,
        hours: opts.hours,
        unusual: opts.unusual,
        now,
        ...(opts.verdictDueDays !== undefined ? { verdictDueDays: opts.verdictDueDays } : {}),
        ...(q.patient ? { patient: q.patient } : {}),
      },
      {
        ...(nonce ? { nonce } : {}),
        nav: { from: q.fromInput, to: q.toInput, ...(q.patient ? { patient: q.patient } : {}) },
        ...(verdictForm ? { verdictForm } : {}),
      },
    );
  } catch (err) {
    if (err instanceof ReviewTooLargeError) {
      throw new ProxyError('ERR_BAD_REQUEST', 'This period holds too many AuditEvents for one view: narrow it, or use caregate review.', {
        issue: 'too-costly',
      });
    }
    // Only the error's type and code: a message could quote the search it failed on (a patient id).
    opts.logger.warn({ err: { type: (err as Error)?.name, code: (err as NodeJS.ErrnoException)?.code } }, 'audit review: the trail could not be read');
    const timeout = (err as Error)?.name === 'TimeoutError' || (err as Error)?.name === 'AbortError';
    throw new ProxyError(timeout ? 'ERR_UPSTREAM_TIMEOUT' : 'ERR_UPSTREAM_BAD_RESPONSE', 'The audit trail could not be read from the FHIR server.', {
      cause: err,
    });
  }
}

/** An error as the OperationOutcome answer of a DIM view. */
export function refusal(err: ProxyError): ReviewAnswer {
  const o = outcomeFor(err);
  return { status: o.status, headers: { ...o.headers }, body: JSON.stringify(o.body), contentType: 'application/fhir+json; charset=utf-8' };
}

/** The AuditEvent of one view: a search on AuditEvent, purpose HOPERAT, naming the patient asked about. */
function viewEvents(
  opts: ReviewRouteOptions,
  v: {
    requestId: string;
    recorded: string;
    principal: Principal | undefined;
    query: ReviewQuery | undefined;
    rawQuery: string;
    decision: Decision | undefined;
    failure: ProxyError | undefined;
    status: number;
    req: IncomingMessage;
  },
): AuditEvent[] {
  const params: SearchParam[] = v.query
    ? [
        { name: 'date', modifier: undefined, value: `ge${v.query.from}` },
        { name: 'date', modifier: undefined, value: `le${v.query.to}` },
        ...(v.query.patient ? [{ name: 'entity', modifier: undefined, value: `Patient/${v.query.patient}` }] : []),
      ]
    : [];
  // The view, told as the FHIR search it amounts to, in the classifier's canonical form.
  const interaction = classify({ method: 'GET', path: '/AuditEvent', query: serializeParams(params), headers: {} }, { maxBodyBytes: 0 });
  const clientAddress = (opts.clientAddress ?? peerAddress)(v.req);
  return buildAuditEvents({
    ...(isLoginFailure({ identity: v.principal ? { principal: v.principal } : undefined, failure: v.failure }) ? { kind: 'login-failure' as const } : {}),
    requestId: v.requestId,
    recorded: v.recorded,
    ...(v.principal ? { principal: v.principal } : {}),
    interaction,
    ...(v.decision ? { decision: v.decision } : {}),
    httpStatus: v.status,
    ...(clientAddress ? { clientAddress } : {}),
    publicBaseUrl: opts.publicBaseUrl,
    site: opts.site,
    rawQuery: v.rawQuery,
    patients: v.query?.patient ? [v.query.patient] : [],
    ...(v.failure ? { failure: { code: v.failure.code, message: v.failure.message } } : {}),
  });
}
