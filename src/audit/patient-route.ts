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
import type { Policy, RoleConfig } from '../policy/config.js';
import type { Decision } from '../policy/decision.js';
import { serializeParams } from '../shape/request.js';
import type { FhirClient } from '../upstream/client.js';
import { buildAuditEvents } from './build.js';
import { pageLanguage, renderAccessHistory, type Lang } from './patient-page.js';
import { patientAccessOf, type PatientAccess } from './patient-view.js';
import { isLoginFailure } from './record.js';
import { sendReviewAnswer } from './review-route.js';
import { resolveBound } from './review-time.js';

/**
 * Who saw my record, as a page: `GET /caregate/my-record/accesses` for a patient (her own record)
 * or her mandated person (`?patient=<id>` when she holds several mandates), in French by default,
 * English with `?lang=en` or Accept-Language; `from` and `to` narrow the period.
 *
 * The caller is identified exactly as on the FHIR API; the role that applies must have the
 * own-record or mandate profile, the policy must enable the access history
 * (`patientRights.accessHistory`), the token's scopes must allow searching AuditEvent. The trail is
 * read where the shipper puts it, with caregate's credential, restricted to the patient
 * (`AuditEvent?entity=Patient/<id>`), and every event is reduced (audit/patient-view.ts) before it
 * is shown. Each view, granted or refused, is itself audited, durably before it is sent.
 */
export interface PatientAccessRouteOptions {
  /** The client's address as the audit records it (the TCP peer, or X-Forwarded-For from `server.trustedProxies`). */
  clientAddress?: ClientAddressOf;
  identify(req: IncomingMessage): Promise<Principal>;
  roleOf(principal: Principal): RoleConfig | undefined;
  policy(): Policy;
  /** The patients whose record this caller may see (own record, mandates), resolved as the FHIR API does. */
  patientsOf(principal: Principal, role: RoleConfig): Promise<ReadonlySet<string>>;
  /** Where the audit trail is read. */
  trail: FhirClient;
  audit(events: AuditEvent[]): Promise<void>;
  publicBaseUrl: string;
  site: string;
  timeZone: string;
  logger: Logger;
  now?: () => Date;
}

const PATIENT_ID = /^[A-Za-z0-9\-.]{1,64}$/;
const PARAMS = new Set(['lang', 'patient', 'from', 'to']);
const PAGE = 500;

interface PageQuery {
  lang: string | undefined;
  patient: string | undefined;
  from: string;
  to: string;
  fromIso: string | undefined;
  toIso: string | undefined;
}

export function createPatientAccessRoute(opts: PatientAccessRouteOptions) {
  const now = opts.now ?? (() => new Date());

  return async function handleAccesses(req: IncomingMessage, res: ServerResponse, sub: string): Promise<void> {
    const rawQuery = rawQueryOf(req.url ?? '/');
    const requestId = requestIdOf(req);
    const recorded = now().toISOString();
    res.setHeader('x-request-id', requestId);

    let principal: Principal | undefined;
    let query: PageQuery | undefined;
    let patient: string | undefined;
    let decision: Decision | undefined;
    let viewer: 'patient' | 'mandated' = 'patient';
    let answer: { status: number; headers: Record<string, string>; body: string; contentType: string };
    let failure: ProxyError | undefined;
    try {
      principal = await opts.identify(req);
      if (req.method !== 'GET') throw new ProxyError('ERR_METHOD_NOT_ALLOWED', 'The access history is read with GET.', { headers: { allow: 'GET' } });
      if (sub !== '') throw new ProxyError('ERR_NOT_FOUND', 'Nothing here.');
      query = parseQuery(rawQuery, opts.timeZone);
      const role = opts.roleOf(principal);
      decision = authorise(principal, role, opts.policy());
      if (decision.effect === 'permit') {
        if (role!.profile === 'mandate') viewer = 'mandated';
        const mine = await opts.patientsOf(principal, role!);
        patient = query.patient ?? (mine.size === 1 ? [...mine][0] : undefined);
        if (patient === undefined) throw new ProxyError('ERR_BAD_REQUEST', 'Name the patient whose record it is: ?patient=<id>.');
        decision = mine.has(patient)
          ? { ...decision, patients: [patient], evidence: [{ source: role!.profile === 'mandate' ? 'mandate' : 'own-record', reference: undefined }] }
          : { ...deny('no-care-relationship', 'This record is not yours, nor covered by a valid mandate.', `${role!.id}.access-history`), patients: [patient] };
      } else if (query.patient) decision = { ...decision, patients: [query.patient] };
      if (decision.effect === 'deny') throw new ProxyError('ERR_FORBIDDEN', decision.message, { detail: decision.reason, issue: 'forbidden' });
      const rows = await load(opts, patient!, query);
      const nonce = randomBytes(16).toString('base64');
      const lang: Lang = pageLanguage(query.lang, req.headers['accept-language']);
      answer = {
        status: 200,
        headers: {
          'content-security-policy': `default-src 'none'; style-src 'nonce-${nonce}'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'`,
          'content-language': lang,
        },
        body: renderAccessHistory(rows, { lang, nonce, timeZone: opts.timeZone, generatedAt: now(), patient: patient!, viewer, from: query.from, to: query.to }),
        contentType: 'text/html; charset=utf-8',
      };
    } catch (err) {
      failure = err instanceof ProxyError ? err : new ProxyError('ERR_INTERNAL', 'Internal error', { expose: false, cause: err });
      if (!(err instanceof ProxyError)) opts.logger.error({ reqId: requestId, err: { type: (err as Error)?.name } }, 'access history failed');
      const o = outcomeFor(failure);
      answer = { status: o.status, headers: { ...o.headers }, body: JSON.stringify(o.body), contentType: 'application/fhir+json; charset=utf-8' };
    }

    try {
      await opts.audit(viewEvents(opts, { requestId, recorded, principal, query, patient, rawQuery, decision, failure, status: answer.status, req }));
    } catch (err) {
      // Strict audit: a view that cannot be recorded is not shown.
      failure = err instanceof ProxyError ? err : new ProxyError('ERR_AUDIT_UNAVAILABLE', 'The audit trail cannot be written.', { cause: err });
      const o = outcomeFor(failure);
      answer = { status: o.status, headers: { ...o.headers }, body: JSON.stringify(o.body), contentType: 'application/fhir+json; charset=utf-8' };
    }

    opts.logger.info({ reqId: requestId, route: 'access-history', status: answer.status, rule: decision?.rule, error: failure?.code }, 'access history');
    sendReviewAnswer(res, answer);
  };
}

function deny(reason: Decision['reason'], message: string, rule: string): Decision {
  return { effect: 'deny', reason, rule, message, evidence: [], obligations: [], patients: [] };
}

/** A patient or her mandated person, under a policy that enables the access history, with a token that may search AuditEvent. */
function authorise(p: Principal, role: RoleConfig | undefined, policy: Policy): Decision {
  if (!role) return deny('default-deny', 'No role of the policy applies to this user.', 'default');
  const rule = `${role.id}.access-history`;
  if (role.profile !== 'own-record' && role.profile !== 'mandate') {
    return deny('role-forbidden', 'This page lists the accesses to one’s own record (or a record held under a mandate).', rule);
  }
  if (!policy.patientRights.accessHistory.enabled) return deny('role-forbidden', 'The access history is not enabled by the policy.', rule);
  if (!scopeAllows(p.claims.scopes, ['user', 'patient'], 'AuditEvent', 's')) {
    return deny('scope-ceiling', 'The token\'s scopes do not allow "s" on AuditEvent.', `${role.id}.scope`);
  }
  return {
    effect: 'permit',
    reason: role.profile === 'mandate' ? 'mandate' : 'own-record',
    rule,
    message: 'Accesses to the record (reduced view)',
    evidence: [],
    obligations: [],
    patients: [],
    purposeOfUse: role.purposeOfUse,
  };
}

/** `lang`, `patient`, `from`, `to`: unknown or repeated parameters are refused. */
function parseQuery(rawQuery: string, timeZone: string): PageQuery {
  const seen = new Map<string, string>();
  for (const [k, v] of new URLSearchParams(rawQuery)) {
    if (!PARAMS.has(k)) throw new ProxyError('ERR_BAD_REQUEST', `Unknown parameter "${k}": the page takes lang, patient, from and to.`);
    if (seen.has(k)) throw new ProxyError('ERR_BAD_REQUEST', `The parameter "${k}" is given twice.`);
    seen.set(k, v);
  }
  const lang = seen.get('lang') || undefined;
  if (lang !== undefined && lang !== 'fr' && lang !== 'en') throw new ProxyError('ERR_BAD_REQUEST', 'lang is fr or en.');
  let patient = seen.get('patient') || undefined;
  if (patient !== undefined) {
    patient = patient.startsWith('Patient/') ? patient.slice('Patient/'.length) : patient;
    if (!PATIENT_ID.test(patient)) throw new ProxyError('ERR_BAD_REQUEST', 'patient is a FHIR id (or Patient/<id>).');
  }
  const from = seen.get('from') ?? '';
  const to = seen.get('to') ?? '';
  let fromIso: string | undefined;
  let toIso: string | undefined;
  try {
    fromIso = from ? resolveBound(from, 'start', timeZone) : undefined;
    toIso = to ? resolveBound(to, 'end', timeZone) : undefined;
  } catch {
    throw new ProxyError('ERR_BAD_REQUEST', 'from and to are dates (YYYY-MM-DD) or ISO 8601 instants.');
  }
  if (fromIso && toIso && Date.parse(fromIso) > Date.parse(toIso)) throw new ProxyError('ERR_BAD_REQUEST', '`from` is after `to`.');
  return { lang, patient, from, to, fromIso, toIso };
}

/** The patient's events from the trail, reduced, newest first. */
async function load(opts: PatientAccessRouteOptions, patient: string, q: PageQuery): Promise<PatientAccess[]> {
  const params = new URLSearchParams([['entity', `Patient/${patient}`], ['_count', String(PAGE)]]);
  if (q.fromIso) params.append('date', `ge${q.fromIso}`);
  if (q.toIso) params.append('date', `le${q.toIso}`);
  const maxPages = Math.ceil(opts.policy().patientRights.accessHistory.maxEvents / PAGE);
  let events: AuditEvent[];
  try {
    events = await opts.trail.searchAll<AuditEvent>('AuditEvent', params, maxPages);
  } catch (err) {
    if (err instanceof ProxyError && /exceeded \d+ pages/.test(err.detail ?? '')) {
      throw new ProxyError('ERR_BAD_REQUEST', 'The history is too long for one page: narrow the period with from and to.', { issue: 'too-costly' });
    }
    opts.logger.warn({ err: { type: (err as Error)?.name, code: (err as ProxyError)?.code } }, 'access history: the trail could not be read');
    throw new ProxyError('ERR_UPSTREAM_BAD_RESPONSE', 'The access history could not be read.', { cause: err });
  }
  const mine = new Set([patient]);
  const seen = new Set<string>();
  const rows: PatientAccess[] = [];
  for (const e of events) {
    const a = patientAccessOf(e, mine);
    if (a && !seen.has(a.id)) {
      seen.add(a.id);
      rows.push(a);
    }
  }
  return rows.sort((a, b) => b.recorded.localeCompare(a.recorded));
}

/** The AuditEvent of one view: a search on AuditEvent, naming the patient whose history it is. */
function viewEvents(
  opts: PatientAccessRouteOptions,
  v: {
    requestId: string;
    recorded: string;
    principal: Principal | undefined;
    query: PageQuery | undefined;
    patient: string | undefined;
    rawQuery: string;
    decision: Decision | undefined;
    failure: ProxyError | undefined;
    status: number;
    req: IncomingMessage;
  },
): AuditEvent[] {
  const patient = v.patient ?? v.query?.patient;
  const params: SearchParam[] = [
    ...(patient ? [{ name: 'entity', modifier: undefined, value: `Patient/${patient}` }] : []),
    ...(v.query?.fromIso ? [{ name: 'date', modifier: undefined, value: `ge${v.query.fromIso}` }] : []),
    ...(v.query?.toIso ? [{ name: 'date', modifier: undefined, value: `le${v.query.toIso}` }] : []),
  ];
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
    patients: patient ? [patient] : [],
    ...(v.failure ? { failure: { code: v.failure.code, message: v.failure.message } } : {}),
  });
}
