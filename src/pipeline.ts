import type { IncomingMessage, ServerResponse } from 'node:http';
import { randomUUID } from 'node:crypto';
import type { Logger } from 'pino';
import type { Principal } from './identity/principal.js';
import type { FhirInteraction } from './fhir/interaction.js';
import type { Decision } from './policy/decision.js';
import type { CareSet } from './relate/types.js';
import { ProxyError } from './http/errors.js';
import { outcomeFor } from './http/outcome.js';
import { readBody } from './http/body.js';
import { sendAnswer, type Answer } from './http/send.js';
import type { UpstreamRequest, UpstreamResponse } from './upstream/proxy.js';
import type { Metrics } from './ops/metrics.js';

/**
 * One request, one pipeline:
 *
 *   identify → classify → authorize (relate + decide) → shape request → upstream
 *   → shape response (filter, de-identify, rewrite) → audit → answer
 *
 * This file is the only place that knows the order. Each stage is plain data in, plain data out;
 * express and http-proxy-middleware stay at the edges (app.ts, upstream/proxy.ts).
 */

/** Everything known about one request as it moves down the pipeline. */
export interface RequestContext {
  id: string;
  receivedAt: Date;
  started: number;
  clientAddress: string | undefined;
  method: string;
  /** Path after the FHIR base path, as received (still encoded). */
  rawPath: string;
  rawQuery: string;
  headers: IncomingMessage['headers'];
  rawHeaders: string[];
  body: Buffer | undefined;
  principal?: Principal;
  interaction?: FhirInteraction;
  decision?: Decision;
  /** The caller's care set as resolved for this request (per-patient audit evidence). */
  careSet?: CareSet;
  upstreamStatus?: number;
  upstreamMs?: number;
  /** Patients whose data was answered (or refused), for the audit. */
  patients: Set<string>;
  /** Resources answered, for the audit (`Type/id`). */
  resources: string[];
  /** Set when the answer is the proxy's own refusal or failure. */
  error?: ProxyError;
  /** Extra response headers set by stages (e.g. break-the-glass marker). */
  answerHeaders: Record<string, string>;
}

export type Plan = { kind: 'upstream'; request: UpstreamRequest } | { kind: 'local'; answer: Answer };

export interface Stages {
  /** The verified caller; `undefined` only for the public endpoints (capabilities, SMART configuration). */
  identify(req: IncomingMessage, ctx: RequestContext): Promise<Principal | undefined>;
  classify(ctx: RequestContext): FhirInteraction;
  authorize(ctx: RequestContext): Promise<Decision>;
  planRequest(ctx: RequestContext): Promise<Plan>;
  shapeResponse(ctx: RequestContext, upstream: UpstreamResponse): Promise<Answer>;
  /** Resolves once the AuditEvent(s) are durable (strict mode). Rejects when they cannot be. */
  audit(ctx: RequestContext, answer: Answer): Promise<void>;
}

export interface PipelineOptions {
  stages: Stages;
  forward(req: IncomingMessage, res: ServerResponse, request: UpstreamRequest): Promise<UpstreamResponse>;
  logger: Logger;
  metrics: Metrics;
  maxRequestBytes: number;
  compress: boolean;
}

const REQUEST_ID = /^[A-Za-z0-9._:-]{1,64}$/;

export function createPipeline(opts: PipelineOptions) {
  const { stages, logger, metrics } = opts;

  return async function handle(req: IncomingMessage, res: ServerResponse, basePathLength: number): Promise<void> {
    const url = req.url ?? '/';
    const q = url.indexOf('?');
    const incomingId = req.headers['x-request-id'];
    const ctx: RequestContext = {
      id: typeof incomingId === 'string' && REQUEST_ID.test(incomingId) ? incomingId : randomUUID(),
      receivedAt: new Date(),
      started: performance.now(),
      clientAddress: req.socket.remoteAddress,
      method: req.method ?? 'GET',
      rawPath: (q === -1 ? url : url.slice(0, q)).slice(basePathLength),
      rawQuery: q === -1 ? '' : url.slice(q + 1),
      headers: req.headers,
      rawHeaders: req.rawHeaders,
      body: undefined,
      patients: new Set(),
      resources: [],
      answerHeaders: {},
    };
    res.setHeader('x-request-id', ctx.id);

    let answer: Answer;
    try {
      ctx.body = await readBody(req, opts.maxRequestBytes);
      ctx.principal = await stages.identify(req, ctx);
      ctx.interaction = stages.classify(ctx);
      ctx.decision = await stages.authorize(ctx);
      metrics.decisions.inc({ effect: ctx.decision.effect, reason: ctx.decision.reason });
      const plan = await stages.planRequest(ctx);
      if (plan.kind === 'local') {
        answer = plan.answer;
      } else {
        const upstream = await opts.forward(req, res, plan.request);
        ctx.upstreamStatus = upstream.status;
        ctx.upstreamMs = upstream.durationMs;
        metrics.upstreamDuration.observe(
          { interaction: ctx.interaction.kind, status: String(upstream.status) },
          upstream.durationMs / 1000,
        );
        answer = await stages.shapeResponse(ctx, upstream);
      }
    } catch (err) {
      answer = refusal(ctx, err, logger);
    }

    try {
      await stages.audit(ctx, answer);
    } catch (err) {
      // Strict audit: an access that cannot be recorded is not answered.
      answer = refusal(ctx, err, logger);
    }
    Object.assign(answer.headers, ctx.answerHeaders);

    await sendAnswer(res, answer, {
      acceptEncoding: req.headers['accept-encoding'] as string | undefined,
      compress: opts.compress,
      head: ctx.interaction?.head ?? req.method === 'HEAD',
    });
    const kind = ctx.interaction?.kind ?? 'unclassified';
    const status = String(answer.status);
    metrics.requests.inc({ interaction: kind, status });
    metrics.requestDuration.observe({ interaction: kind, status }, (performance.now() - ctx.started) / 1000);
    logger.info(
      {
        reqId: ctx.id,
        interaction: kind,
        type: ctx.interaction?.resourceType,
        status: answer.status,
        decision: ctx.decision?.reason,
        rule: ctx.decision?.rule,
        error: ctx.error?.code,
        ms: Math.round((performance.now() - ctx.started) * 10) / 10,
        upstreamMs: ctx.upstreamMs === undefined ? undefined : Math.round(ctx.upstreamMs * 10) / 10,
      },
      'request',
    );
  };
}

/** Turns any error into an OperationOutcome answer; unexpected errors are logged without PHI. */
export function refusal(ctx: RequestContext, err: unknown, logger: Logger): Answer {
  const pe =
    err instanceof ProxyError
      ? err
      : new ProxyError('ERR_INTERNAL', 'Internal error', { expose: false, cause: err, detail: (err as Error)?.name });
  if (!(err instanceof ProxyError)) {
    // Stack frames only: the message line of an unexpected error may quote data.
    const frames = (err as Error)?.stack?.split('\n').slice(1, 12).join('\n');
    logger.error({ reqId: ctx.id, err: { type: (err as Error)?.name, frames } }, 'unexpected error');
  }
  ctx.error = pe;
  const o = outcomeFor(pe);
  return {
    status: o.status,
    headers: { ...o.headers },
    body: Buffer.from(JSON.stringify(o.body)),
    contentType: 'application/fhir+json; charset=utf-8',
  };
}
