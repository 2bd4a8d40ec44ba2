import { randomBytes } from 'node:crypto';
import type { IncomingMessage, ServerResponse } from 'node:http';
import type { AuditEvent } from '@medplum/fhirtypes';
import type { Logger } from 'pino';
import { buildAuditEvents } from '../audit/build.js';
import { DcmSubtype } from '../audit/codes.js';
import { isLoginFailure } from '../audit/record.js';
import { loadAuditEvents, ReviewTooLargeError, type ReviewSource } from '../audit/review-load.js';
import { summarizeAuditEvent } from '../audit/review-model.js';
import { authorise, parseQuery, refusal, sendReviewAnswer, type ReviewAnswer } from '../audit/review-route.js';
import { readableReason } from '../relate/breakglass.js';
import { buildVerdictEvent, MAX_VERDICT_COMMENT, VERDICTS, type Verdict } from '../audit/verdict.js';
import { classify } from '../fhir/classify.js';
import { tryParseJsonStrict } from '../fhir/json.js';
import { peerAddress, type ClientAddressOf } from '../http/addresses.js';
import { readBody } from '../http/body.js';
import { ProxyError } from '../http/errors.js';
import { rawQueryOf, requestIdOf } from '../http/request-id.js';
import { principalKey, type Principal } from '../identity/principal.js';
import type { Policy, RoleConfig } from '../policy/config.js';
import type { Decision } from '../policy/decision.js';
import { patientReachParameters, userReachParameters } from './answers.js';
import type { FormTokens } from './form-token.js';
import { patientReachPage, userReachPage, verdictRecordedPage } from './pages.js';
import type { Reach } from './reach.js';
import { engagementTraceCsv, readTrailEvent } from './trail.js';

/**
 * The DIM's oversight views, served beside the review (`/caregate/review/…`), to the same people:
 * identified as on the FHIR API, allowed when their role has `readAudit` and their token may search
 * AuditEvent. Every answer is audited, durably, before it is sent.
 *
 * | route | what |
 * |---|---|
 * | `POST …/break-glass/<opening>/verdict` | the review page's form: a verdict (justified, unjustified) and a comment; anti-forgery token required |
 * | `POST …/break-glass/<opening>/$verdict` | the same as FHIR: a `Parameters` body (`verdict`, `comment`), answered with the verdict's AuditEvent |
 * | `GET …/who-can-see?patient=<id>` | who may read the patient's record now, with the evidence (HTML, or `Parameters` as JSON) |
 * | `GET …/care-set?practitioner=<id>` | which patients a practitioner may read now (HTML, or `Parameters`) |
 * | `GET …/engagements/<id>/trace.csv?from=…&to=…` | a contractor engagement's trace: date, hour, person, resource (CSP R6113-9-2) |
 */
export interface OversightRouteOptions {
  /** The client's address as the audit records it (the TCP peer, or X-Forwarded-For from `server.trustedProxies`). */
  clientAddress?: ClientAddressOf;
  identify(req: IncomingMessage): Promise<Principal>;
  roleOf(principal: Principal): RoleConfig | undefined;
  policy(): Policy;
  reach: Reach;
  /** Where the trail is read (the audit FHIR server). */
  trail: Extract<ReviewSource, { baseUrl: string }>;
  /** `audit.review`: the time zone, the longest period one view covers. */
  review: { timeZone: string; maxDays: number };
  tokens: FormTokens;
  audit(events: AuditEvent[]): Promise<void>;
  publicBaseUrl: string;
  site: string;
  logger: Logger;
  now: () => number;
}

const ID = /^[A-Za-z0-9\-.]{1,64}$/;
const VERDICT_FORM = /^\/break-glass\/([A-Za-z0-9\-.]{1,64})\/verdict$/;
const VERDICT_API = /^\/break-glass\/([A-Za-z0-9\-.]{1,64})\/\$verdict$/;
const TRACE = /^\/engagements\/([a-z][a-z0-9-]*)\/trace\.csv$/;
const MAX_FORM_BYTES = 16 * 1024;

export type OversightRoute =
  | { kind: 'verdict'; opening: string; api: boolean }
  | { kind: 'who-can-see' }
  | { kind: 'care-set' }
  | { kind: 'trace'; engagement: string };

/** The oversight route `sub` (what follows the review prefix) names, if any. */
export function oversightRoute(sub: string): OversightRoute | undefined {
  const form = VERDICT_FORM.exec(sub);
  if (form) return { kind: 'verdict', opening: form[1]!, api: false };
  const api = VERDICT_API.exec(sub);
  if (api) return { kind: 'verdict', opening: api[1]!, api: true };
  if (sub === '/who-can-see') return { kind: 'who-can-see' };
  if (sub === '/care-set') return { kind: 'care-set' };
  const trace = TRACE.exec(sub);
  if (trace) return { kind: 'trace', engagement: trace[1]! };
  return undefined;
}

/** What one view did, for its AuditEvent. */
interface Done {
  answer: ReviewAnswer;
  /** The record of the action itself (a verdict): replaces the view's access event. */
  events?: AuditEvent[];
  patients: string[];
  what: { method: string; path: string; query: string };
}

export function createOversightRoutes(opts: OversightRouteOptions) {
  const clientAddressOf = opts.clientAddress ?? peerAddress;
  return async function handle(req: IncomingMessage, res: ServerResponse, route: OversightRoute): Promise<void> {
    const rawQuery = rawQueryOf(req.url ?? '/');
    const requestId = requestIdOf(req);
    const recorded = new Date(opts.now()).toISOString();
    res.setHeader('x-request-id', requestId);

    let principal: Principal | undefined;
    let decision: Decision | undefined;
    let failure: ProxyError | undefined;
    let done: Done | undefined;
    // What the request names, known before the decision so that a refusal records it.
    let named: { patients: string[]; what: Done['what'] } = { patients: [], what: { method: 'GET', path: '/AuditEvent', query: '' } };
    try {
      principal = await opts.identify(req);
      named = namedBy(route, rawQuery);
      const role = opts.roleOf(principal);
      decision = authorise(principal, role);
      if (decision.effect === 'deny') throw new ProxyError('ERR_FORBIDDEN', decision.message, { detail: decision.reason, issue: 'forbidden' });
      done = await act(route, req, principal, rawQuery, requestId, recorded);
    } catch (err) {
      failure = err instanceof ProxyError ? err : unexpected(err, requestId);
    }
    let answer = done?.answer ?? refusal(failure!);
    const patients = done?.patients ?? named.patients;
    const events =
      done?.events ??
      viewEvents({ requestId, recorded, principal, decision: decision ? { ...decision, patients } : undefined, failure, status: answer.status, req, rawQuery, patients, what: done?.what ?? named.what });
    try {
      await opts.audit(events);
    } catch (err) {
      // Strict audit: a view, or a verdict, that cannot be recorded is not answered.
      failure = err instanceof ProxyError ? err : new ProxyError('ERR_AUDIT_UNAVAILABLE', 'The audit trail cannot be written.', { cause: err });
      answer = refusal(failure);
    }
    opts.logger.info({ reqId: requestId, route: `oversight-${route.kind}`, status: answer.status, rule: decision?.rule, error: failure?.code }, 'oversight view');
    sendReviewAnswer(res, answer);
  };

  function unexpected(err: unknown, requestId: string): ProxyError {
    if (err instanceof ReviewTooLargeError) {
      return new ProxyError('ERR_BAD_REQUEST', 'This period holds too many AuditEvents for one view: narrow it.', { issue: 'too-costly' });
    }
    // Only the error's type and code: a message could quote what it failed on (a patient id).
    opts.logger.warn({ reqId: requestId, err: { type: (err as Error)?.name, code: (err as { code?: string })?.code } }, 'oversight view failed');
    return new ProxyError('ERR_UPSTREAM_BAD_RESPONSE', 'The FHIR server could not be read.', { cause: err });
  }

  async function act(route: OversightRoute, req: IncomingMessage, p: Principal, rawQuery: string, requestId: string, recorded: string): Promise<Done> {
    switch (route.kind) {
      case 'verdict':
        return verdict(route.opening, route.api, req, p, requestId, recorded);
      case 'who-can-see': {
        allowGet(req);
        const patient = single(rawQuery, 'patient');
        const report = await opts.reach.ofPatient(patient);
        return {
          answer: wantsJson(req, rawQuery) ? fhirJson(200, patientReachParameters(report)) : html((n) => patientReachPage(report, n)),
          patients: [patient],
          what: { method: 'GET', path: `/Patient/${patient}/$who-can-see`, query: '' },
        };
      }
      case 'care-set': {
        allowGet(req);
        const practitioner = single(rawQuery, 'practitioner');
        const report = await opts.reach.ofPractitioner(practitioner);
        if (!report) throw new ProxyError('ERR_NOT_FOUND', 'No active practitioner with this id.');
        return {
          answer: wantsJson(req, rawQuery) ? fhirJson(200, userReachParameters(report)) : html((n) => userReachPage(report, n)),
          // The page names her patients: each one's trail says that the DIM looked at this list.
          patients: report.patients.map((x) => x.patient.slice('Patient/'.length)),
          what: { method: 'GET', path: `/Practitioner/${practitioner}/$care-set`, query: '' },
        };
      }
      case 'trace': {
        allowGet(req);
        const policy = opts.policy();
        if (!policy.engagements.some((e) => e.id === route.engagement)) throw new ProxyError('ERR_NOT_FOUND', 'No such engagement in the policy.');
        const period = parseQuery(rawQuery, { hours: { timeZone: opts.review.timeZone, offHoursStart: 20, offHoursEnd: 7, weekends: true }, maxDays: opts.review.maxDays }, new Date(opts.now()));
        if (period.patient) throw new ProxyError('ERR_BAD_REQUEST', 'The trace export takes from and to.');
        const events = await loadAuditEvents(opts.trail, period.from, period.to);
        const trace = engagementTraceCsv(events, route.engagement, opts.review.timeZone);
        return {
          answer: {
            status: 200,
            headers: { 'content-disposition': `attachment; filename="trace-${route.engagement}.csv"`, 'content-security-policy': "default-src 'none'; sandbox" },
            body: trace.csv,
            contentType: 'text/csv; charset=utf-8',
          },
          patients: trace.patients.map((x) => x.slice('Patient/'.length)),
          what: { method: 'GET', path: '/AuditEvent', query: `date=ge${period.from}&date=le${period.to}` },
        };
      }
    }
  }

  /** Records the DIM's verdict on a break-the-glass opening, as an AuditEvent pointing at it. */
  async function verdict(opening: string, api: boolean, req: IncomingMessage, p: Principal, requestId: string, recorded: string): Promise<Done> {
    if (req.method !== 'POST') throw new ProxyError('ERR_METHOD_NOT_ALLOWED', 'A verdict is POSTed.', { headers: { allow: 'POST' } });
    const body = (await readBody(req, MAX_FORM_BYTES)) ?? Buffer.alloc(0);
    const type = String(req.headers['content-type'] ?? '').split(';')[0]!.trim().toLowerCase();
    let given: { verdict: unknown; comment: unknown };
    if (api) {
      // JSON only: a browser cannot send it from another site without asking first (CORS).
      if (type !== 'application/fhir+json' && type !== 'application/json') throw new ProxyError('ERR_UNSUPPORTED_MEDIA', 'A Parameters resource as application/fhir+json.');
      const parsed = tryParseJsonStrict(body);
      const params = parsed.ok ? (parsed.value as { resourceType?: string; parameter?: { name?: string; valueCode?: unknown; valueString?: unknown }[] }) : undefined;
      if (params?.resourceType !== 'Parameters') throw new ProxyError('ERR_BAD_REQUEST', 'A Parameters resource with verdict (valueCode) and comment (valueString).');
      const param = (n: string) => params.parameter?.find((x) => x.name === n);
      given = { verdict: param('verdict')?.valueCode, comment: param('comment')?.valueString };
    } else {
      if (type !== 'application/x-www-form-urlencoded') throw new ProxyError('ERR_UNSUPPORTED_MEDIA', 'The verdict form is sent as application/x-www-form-urlencoded.');
      // A form posted from another site, with the DIM's card presented by her browser, is refused.
      if (req.headers['sec-fetch-site'] === 'cross-site' || !opts.tokens.valid(principalKey(p), new URLSearchParams(body.toString('utf8')).get('token') ?? '')) {
        throw new ProxyError('ERR_FORBIDDEN', 'This form has expired or was not issued to you: reload the review page.', { issue: 'forbidden' });
      }
      const form = new URLSearchParams(body.toString('utf8'));
      given = { verdict: form.get('verdict'), comment: form.get('comment') };
    }
    if (typeof given.verdict !== 'string' || !VERDICTS.includes(given.verdict as Verdict)) throw new ProxyError('ERR_BAD_REQUEST', `verdict is one of ${VERDICTS.join(', ')}.`);
    const comment = typeof given.comment === 'string' ? readableReason(given.comment) : '';
    if (!/[\p{L}\p{N}]/u.test(comment)) throw new ProxyError('ERR_BAD_REQUEST', 'A verdict needs a comment.');
    if (comment.length > MAX_VERDICT_COMMENT) throw new ProxyError('ERR_BAD_REQUEST', `A comment is at most ${MAX_VERDICT_COMMENT} characters.`);

    const ev = await readTrailEvent(opts.trail, opening);
    const s = ev ? summarizeAuditEvent(ev) : undefined;
    if (!s || s.kind !== 'break-glass-start' || ev?.subtype?.[0]?.code !== DcmSubtype.emergencyOverrideStarted.code || s.patients.length !== 1) {
      throw new ProxyError('ERR_NOT_FOUND', 'No break-the-glass opening with this id in the audit trail (a new one appears within seconds).');
    }
    const patient = s.patients[0]!.slice('Patient/'.length);
    const event = buildVerdictEvent({
      requestId,
      recorded,
      principal: p,
      ...(clientAddressOf(req) ? { clientAddress: clientAddressOf(req)! } : {}),
      publicBaseUrl: opts.publicBaseUrl,
      site: opts.site,
      opening: { id: opening, patient, openedBy: s.userRef ?? s.user },
      verdict: given.verdict as Verdict,
      comment,
    });
    return {
      answer: api ? fhirJson(201, event, { location: `AuditEvent/${event.id}` }) : html((n) => verdictRecordedPage({ opening, verdict: given.verdict as string, eventId: event.id! }, n)),
      events: [event],
      patients: [patient],
      what: { method: 'POST', path: `/AuditEvent/${opening}/$verdict`, query: '' },
    };
  }

  /** The AuditEvent of one view (or refusal): the FHIR interaction it amounts to, naming its patients. */
  function viewEvents(v: {
    requestId: string;
    recorded: string;
    principal: Principal | undefined;
    decision: Decision | undefined;
    failure: ProxyError | undefined;
    status: number;
    req: IncomingMessage;
    rawQuery: string;
    patients: string[];
    what: Done['what'];
  }): AuditEvent[] {
    let interaction;
    try {
      interaction = classify({ method: 'GET', path: v.what.path, query: v.what.query, headers: {} }, { maxBodyBytes: 0 });
    } catch {
      interaction = undefined;
    }
    const clientAddress = clientAddressOf(v.req);
    return buildAuditEvents({
      ...(isLoginFailure({ identity: v.principal ? { principal: v.principal } : undefined, failure: v.failure }) ? { kind: 'login-failure' as const } : {}),
      requestId: v.requestId,
      recorded: v.recorded,
      ...(v.principal ? { principal: v.principal } : {}),
      ...(interaction ? { interaction } : {}),
      ...(v.decision ? { decision: v.decision } : {}),
      httpStatus: v.status,
      ...(clientAddress ? { clientAddress } : {}),
      publicBaseUrl: opts.publicBaseUrl,
      site: opts.site,
      rawQuery: v.rawQuery,
      patients: v.patients,
      ...(v.failure ? { failure: { code: v.failure.code, message: v.failure.message } } : {}),
    });
  }
}

/** The patients and the interaction a request names, read before the decision (a refusal records them). */
function namedBy(route: OversightRoute, rawQuery: string): { patients: string[]; what: Done['what'] } {
  const q = new URLSearchParams(rawQuery);
  switch (route.kind) {
    case 'who-can-see': {
      const p = q.get('patient') ?? '';
      return ID.test(p) ? { patients: [p], what: { method: 'GET', path: `/Patient/${p}/$who-can-see`, query: '' } } : { patients: [], what: { method: 'GET', path: '/Patient', query: '' } };
    }
    case 'care-set': {
      const p = q.get('practitioner') ?? '';
      return { patients: [], what: ID.test(p) ? { method: 'GET', path: `/Practitioner/${p}/$care-set`, query: '' } : { method: 'GET', path: '/Practitioner', query: '' } };
    }
    case 'verdict':
      return { patients: [], what: { method: 'GET', path: `/AuditEvent/${route.opening}`, query: '' } };
    case 'trace':
      return { patients: [], what: { method: 'GET', path: '/AuditEvent', query: '' } };
  }
}

function allowGet(req: IncomingMessage): void {
  if (req.method !== 'GET') throw new ProxyError('ERR_METHOD_NOT_ALLOWED', 'This view is read with GET.', { headers: { allow: 'GET' } });
}

/** The one parameter a view takes (plus `_format`), a FHIR id. */
function single(rawQuery: string, name: string): string {
  const q = new URLSearchParams(rawQuery);
  for (const k of q.keys()) if (k !== name && k !== '_format') throw new ProxyError('ERR_BAD_REQUEST', `Unknown parameter "${k}": this view takes ${name}.`);
  const values = q.getAll(name);
  const v = values[0]?.replace(/^(Patient|Practitioner)\//, '');
  if (values.length !== 1 || !v || !ID.test(v)) throw new ProxyError('ERR_BAD_REQUEST', `${name} is one FHIR id.`);
  return v;
}

function wantsJson(req: IncomingMessage, rawQuery: string): boolean {
  const format = new URLSearchParams(rawQuery).get('_format');
  if (format) return /json/.test(format);
  const accept = String(req.headers.accept ?? '');
  return /application\/(fhir\+)?json/.test(accept) && !/text\/html/.test(accept);
}

/** A page rendered with a fresh CSP nonce for its styles. */
function html(render: (nonce: string) => string): ReviewAnswer {
  const n = randomBytes(16).toString('base64');
  const body = render(n);
  return {
    status: 200,
    headers: { 'content-security-policy': `default-src 'none'; style-src 'nonce-${n}'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'` },
    body,
    contentType: 'text/html; charset=utf-8',
  };
}

function fhirJson(status: number, resource: object, headers: Record<string, string> = {}): ReviewAnswer {
  return { status, headers, body: JSON.stringify(resource), contentType: 'application/fhir+json; charset=utf-8' };
}
