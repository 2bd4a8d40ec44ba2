import type { IncomingMessage, ServerResponse } from 'node:http';
import type { TLSSocket } from 'node:tls';
import type { Logger } from 'pino';
import { ProxyError } from './http/errors.js';
import { outcomeFor } from './http/outcome.js';
import { peerAddress, type ClientAddressOf } from './http/addresses.js';
import { readBody } from './http/body.js';
import { requestIdOf } from './http/request-id.js';
import { sendAnswer, type Answer } from './http/send.js';
import { tlsInfoFromSocket } from './identity/mtls.js';
import type { Metrics } from './ops/metrics.js';
import type { Authorization } from './policy/authorize.js';
import { obliges } from './policy/decision.js';
import type { ByteBudget } from './shared/byte-budget.js';
import type { Plan } from './shape/plan.js';
import type { Shaped } from './shape/response.js';
import type { UpstreamRequest, UpstreamResponse } from './upstream/proxy.js';
import type { Answered, Authorized, Classified, ClassifiedState, Identified, Identity, Planned, Received, RequestHead, RequestState } from './state.js';

/**
 * One request, one pipeline. This table is the order, and the code below runs it as written:
 *
 * | stage     | reads                 | adds            | where                                    |
 * |-----------|-----------------------|-----------------|------------------------------------------|
 * | receive   | the HTTP request      | head, body      | here, http/body.ts                       |
 * | identify  | head                  | identity        | identity/ (JWT, CPS card, resolution)    |
 * | classify  | head, body            | classified      | fhir/classify.ts, shape/paging.ts        |
 * | authorize | identity, classified  | authorization   | policy/authorize.ts (relate/, decide())  |
 * | plan      | authorization         | plan            | shape/plan.ts, shape/batch.ts            |
 * | forward   | plan                  | upstream        | upstream/proxy.ts                        |
 * | shape     | authorization, plan   | shaped          | shape/response.ts (filter, rewrite)      |
 * | settle    | authorization, shaped | (caches)        | relate/invalidate.ts                     |
 * | audit     | the whole state       | (spool)         | audit/record.ts, audit/build.ts          |
 * | answer    | shaped or failure     | (the socket)    | http/send.ts                             |
 *
 * A stage that fails ends the request: its error becomes the answer (one serializer, outcomeFor)
 * and the state so far is audited like any other. In strict mode an access that cannot be
 * recorded is not answered. Express and http-proxy-middleware stay at the edges (app.ts, upstream/).
 */
export interface Stages {
  /** The verified caller; no principal only for the public endpoints. */
  identify(s: Received): Promise<Identity>;
  classify(s: Identified): Classified;
  authorize(s: ClassifiedState): Promise<Authorization>;
  plan(s: Authorized): Plan;
  shape(s: Planned, upstream: UpstreamResponse): Promise<Shaped>;
  /** Effects of a successful write on caregate's own caches (relationships). */
  settle(s: Answered): void;
  /** Resolves once the AuditEvent(s) are durable (strict mode). Rejects when they cannot be. */
  audit(s: RequestState, answer: Answer): Promise<void>;
}

export interface PipelineOptions {
  stages: Stages;
  forward(req: IncomingMessage, res: ServerResponse, request: UpstreamRequest): Promise<UpstreamResponse>;
  logger: Logger;
  metrics: Metrics;
  maxRequestBytes: number;
  compress: boolean;
  /** The client's address as the audit records it (the TCP peer, or X-Forwarded-For from `server.trustedProxies`). */
  clientAddress?: ClientAddressOf;
  /** Bytes of upstream answers shaped at once (`server.maxShapingBytes`): larger answers wait their turn. */
  shapingBudget?: ByteBudget;
}


/** What arrived, read off the Node request before any stage. */
export function requestHead(req: IncomingMessage, basePathLength: number, clientAddressOf: ClientAddressOf = peerAddress): RequestHead {
  const url = req.url ?? '/';
  const q = url.indexOf('?');
  const socket = req.socket as Partial<TLSSocket>;
  return {
    id: requestIdOf(req),
    receivedAt: new Date(),
    started: performance.now(),
    method: req.method ?? 'GET',
    url,
    rawPath: (q === -1 ? url : url.slice(0, q)).slice(basePathLength),
    rawQuery: q === -1 ? '' : url.slice(q + 1),
    headers: req.headers,
    rawHeaders: req.rawHeaders,
    clientAddress: clientAddressOf(req),
    tls: socket.encrypted ? tlsInfoFromSocket(req.socket as TLSSocket) : undefined,
  };
}

export function createPipeline(opts: PipelineOptions) {
  const { stages, logger, metrics } = opts;

  return async function handle(req: IncomingMessage, res: ServerResponse, basePathLength: number): Promise<void> {
    const head = requestHead(req, basePathLength, opts.clientAddress);
    res.setHeader('x-request-id', head.id);

    // What the audit sees if a stage fails: the state as far as it got.
    let state: RequestState = { head };
    let answer: Answer;
    // The share of the shaping budget this request's upstream answer holds, until it is answered.
    let release: (() => void) | undefined;
    try {
      const received: Received = { head, body: await readBody(req, opts.maxRequestBytes) };
      state = received;
      const identified: Identified = { ...received, identity: await stages.identify(received) };
      state = identified;
      const classified: ClassifiedState = { ...identified, classified: stages.classify(identified) };
      state = classified;
      const authorized: Authorized = { ...classified, authorization: await stages.authorize(classified) };
      state = authorized;
      const d = authorized.authorization.decision;
      metrics.decisions.inc({ effect: d.effect, reason: d.reason });
      const planned: Planned = { ...authorized, plan: stages.plan(authorized) };
      state = planned;
      if (planned.plan.kind === 'local') {
        answer = planned.plan.answer;
      } else {
        const upstream = await opts.forward(req, res, planned.plan.request);
        state = { ...planned, upstream: { status: upstream.status, durationMs: upstream.durationMs } };
        metrics.upstreamDuration.observe({ interaction: planned.classified.interaction.kind, status: String(upstream.status) }, upstream.durationMs / 1000);
        if (opts.shapingBudget) release = await opts.shapingBudget.take(upstream.body.length);
        const answered: Answered = { ...(state as Planned), shaped: await stages.shape(planned, upstream) };
        state = answered;
        if (upstream.status < 400) stages.settle(answered);
        answer = answered.shaped.answer;
      }
    } catch (err) {
      const failure = asProxyError(err, head.id, logger);
      state = { ...state, failure };
      answer = refusal(failure);
    }

    let auditFailure: ProxyError | undefined;
    try {
      try {
        await stages.audit(state, answer);
      } catch (err) {
        // Strict audit: an access that cannot be recorded is not answered.
        auditFailure = asProxyError(err, head.id, logger);
        answer = refusal(auditFailure);
      }
      if (!auditFailure && breakGlassUse(state)) answer.headers['x-caregate-break-glass'] = 'active';

      await sendAnswer(res, answer, {
        acceptEncoding: req.headers['accept-encoding'] as string | undefined,
        compress: opts.compress,
        head: state.classified?.interaction.head ?? req.method === 'HEAD',
      });
    } finally {
      release?.();
    }
    const it = state.classified?.interaction;
    const kind = it?.kind ?? 'unclassified';
    const status = String(answer.status);
    metrics.requests.inc({ interaction: kind, status });
    metrics.requestDuration.observe({ interaction: kind, status }, (performance.now() - head.started) / 1000);
    const decision = state.authorization?.decision;
    logger.info(
      {
        reqId: head.id,
        interaction: kind,
        type: it?.resourceType,
        status: answer.status,
        decision: decision?.reason,
        rule: decision?.rule,
        ...(state.shaped?.breakGlassUse.length ? { breakGlass: true } : {}),
        // The minimisation rules that withheld something (rule names only, no PHI).
        ...(withheldRules(state) ? { withheld: withheldRules(state) } : {}),
        error: (auditFailure ?? state.failure)?.code,
        ms: Math.round((performance.now() - head.started) * 10) / 10,
        upstreamMs: state.upstream === undefined ? undefined : Math.round(state.upstream.durationMs * 10) / 10,
      },
      'request',
    );
  };
}

function withheldRules(s: RequestState): string[] | undefined {
  const rules = [...(s.shaped?.minimised?.keys() ?? [])];
  const detail = s.failure?.detail;
  if (detail?.startsWith('withheld by ')) rules.push(detail.slice('withheld by '.length));
  return rules.length > 0 ? rules : undefined;
}

/**
 * The answer is a break-the-glass use: the decision itself, data of a patient reached only through
 * a grant, or the request opened a grant (an EHR learns from it that the grant is active).
 */
function breakGlassUse(s: RequestState): boolean {
  const a = s.authorization;
  if (s.failure || !a || a.decision.effect !== 'permit') return false;
  return a.grant !== undefined || obliges(a.decision, 'mark-break-glass') || (s.shaped?.breakGlassUse.length ?? 0) > 0;
}

/** Any error as a ProxyError; an unexpected one is logged without PHI and answered as a generic 500. */
export function asProxyError(err: unknown, requestId: string, logger: Logger): ProxyError {
  if (err instanceof ProxyError) return err;
  // Stack frames only: the message line of an unexpected error may quote data.
  const frames = (err as Error)?.stack?.split('\n').slice(1, 12).join('\n');
  logger.error({ reqId: requestId, err: { type: (err as Error)?.name, frames } }, 'unexpected error');
  return new ProxyError('ERR_INTERNAL', 'Internal error', { expose: false, cause: err, detail: (err as Error)?.name });
}

/** An error as an OperationOutcome answer. */
export function refusal(err: ProxyError): Answer {
  const o = outcomeFor(err);
  return {
    status: o.status,
    headers: { ...o.headers },
    body: JSON.stringify(o.body),
    contentType: 'application/fhir+json; charset=utf-8',
  };
}
