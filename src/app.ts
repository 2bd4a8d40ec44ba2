import express, { type Request, type Response, type NextFunction } from 'express';
import type http from 'node:http';
import type { IncomingMessage, ServerResponse } from 'node:http';
import type { Logger } from 'pino';
import type { Metrics } from './ops/metrics.js';
import { operationOutcome } from './http/outcome.js';

export interface ReadinessCheck {
  name: string;
  /**
   * `degraded`: not ok, but the instance still answers what does not need it (and fails closed on
   * the rest): /readyz then says `degraded` with a 200, so that a balancer keeps routing to it.
   */
  check(): Promise<{ ok: boolean; degraded?: boolean; reason?: string }>;
}

export interface AppOptions {
  basePath: string;
  logger: Logger;
  metrics: Metrics;
  metricsPath: string | undefined;
  readiness: readonly ReadinessCheck[];
  /** The FHIR pipeline (see pipeline.ts). */
  handle(req: IncomingMessage, res: ServerResponse, basePathLength: number): Promise<void>;
  /** Extra routes mounted before the FHIR API (admin views, break-the-glass page). */
  routes?: (app: express.Express) => void;
  /**
   * Views served beside the FHIR API and audited like it: the DIM review (`/caregate/review` and
   * `/caregate/review/<file>.csv`), the patient's access history (`/caregate/my-record/accesses`).
   * Matched on the raw URL like the FHIR base path; `sub` is what follows the prefix (`''` for the page).
   */
  views?: readonly { prefix: string; handle(req: IncomingMessage, res: ServerResponse, sub: string): Promise<void> }[];
}

/**
 * The HTTP edge. The FHIR base path and the audited views are matched on the raw URL (exact case, no
 * normalisation) and handed whole to their handlers before express sees the request: the
 * pipeline's classifier decides what a FHIR path means, and the hot path skips express's router,
 * which has nothing to route there. Express serves the rest: health, readiness, metrics, extra
 * routes, and the FHIR-shaped 404/500 answers.
 */
export function createApp(opts: AppOptions): http.RequestListener {
  const app = express();
  app.disable('x-powered-by');
  app.disable('etag');
  app.set('trust proxy', false);

  const base = opts.basePath === '/' ? '' : opts.basePath;
  const views = opts.views ?? [];

  /** The answer to an unhandled failure, for express's routes and for the handlers that bypass it. */
  function failed(res: ServerResponse, err: unknown): void {
    opts.logger.error({ err: { type: (err as Error)?.name } }, 'unhandled error at the HTTP edge');
    if (res.headersSent) {
      res.destroy();
      return;
    }
    res.statusCode = 500;
    res.setHeader('content-type', 'application/fhir+json; charset=utf-8');
    res.end(JSON.stringify(operationOutcome('error', 'exception', 'The request could not be processed.')));
  }

  app.get('/healthz', (_req, res) => {
    res.json({ status: 'ok' });
  });

  app.get('/readyz', async (_req, res) => {
    const results = await Promise.all(
      opts.readiness.map(async (c) => {
        try {
          return { name: c.name, ...(await c.check()) };
        } catch {
          return { name: c.name, ok: false, reason: 'check failed' };
        }
      }),
    );
    const ok = results.every((r) => r.ok || r.degraded === true);
    const status = !ok ? 'not-ready' : results.every((r) => r.ok) ? 'ready' : 'degraded';
    res.status(ok ? 200 : 503).json({ status, checks: results });
  });

  if (opts.metricsPath) {
    app.get(opts.metricsPath, async (_req, res) => {
      res.setHeader('content-type', opts.metrics.registry.contentType);
      res.end(await opts.metrics.registry.metrics());
    });
  }

  opts.routes?.(app);

  app.use((_req: Request, res: Response) => {
    res
      .status(404)
      .type('application/fhir+json')
      .send(JSON.stringify(operationOutcome('error', 'not-found', `Nothing here. The FHIR API is at ${opts.basePath}.`)));
  });

  app.use((err: unknown, _req: Request, res: Response, _next: NextFunction) => failed(res, err));
  return (req, res) => {
    const url = req.url ?? '/';
    if (views.length > 0) {
      const q = url.indexOf('?');
      const p = q === -1 ? url : url.slice(0, q);
      const view = views.find((v) => p === v.prefix || p.startsWith(`${v.prefix}/`));
      if (view) {
        view.handle(req, res, p.slice(view.prefix.length)).catch((err: unknown) => failed(res, err));
        return;
      }
    }
    if (url === base || url.startsWith(`${base}/`) || url.startsWith(`${base}?`) || base === '') {
      if (!(base === '' && isOpsPath(url, opts.metricsPath))) {
        opts.handle(req, res, base.length).catch((err: unknown) => failed(res, err));
        return;
      }
    }
    app(req, res);
  };
}

function isOpsPath(url: string, metricsPath: string | undefined): boolean {
  const p = url.split('?')[0];
  return p === '/healthz' || p === '/readyz' || (metricsPath !== undefined && p === metricsPath);
}
