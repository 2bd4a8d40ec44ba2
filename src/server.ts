import http from 'node:http';
import https from 'node:https';
import { createHash, randomBytes, randomUUID } from 'node:crypto';
import { createShadowPolicy } from './policy/shadow.js';
import { breakGlassPage } from './http/break-glass-page.js';
import { existsSync, readFileSync, watch, type FSWatcher } from 'node:fs';
import { basename, dirname } from 'node:path';
import { serviceCredential, upstreamDispatcher } from './upstream/credential.js';
import type { AddressInfo } from 'node:net';
import type { Logger } from 'pino';
import type { LoadedConfig } from './config/load.js';
import { configPath, ConfigError } from './config/load.js';
import { createApp } from './app.js';
import { clientAddressResolver } from './http/addresses.js';
import { createPipeline } from './pipeline.js';
import { buildStages } from './stages.js';
import { identifyInputFrom } from './identity/identify.js';
import { tlsServerOptions } from './identity/mtls.js';
import { roleOf } from './policy/roles.js';
import { createLogger } from './ops/logger.js';
import { createMetrics, registerCacheMetrics, type Metrics } from './ops/metrics.js';
import { createUpstreamProxy, type UpstreamRequest } from './upstream/proxy.js';
import { createUndiciForwarder } from './upstream/undici-forward.js';
import { loadPolicy, type LoadedPolicy } from './policy/load.js';
import { buildAuditEvents } from './audit/build.js';
import { openSpool, type SerializedAuditEvents } from './audit/spool.js';
import { createShipper } from './audit/shipper.js';
import { createReviewRoute } from './audit/review-route.js';
import { openSharedState } from './shared/open.js';
import { createByteBudget } from './shared/byte-budget.js';
import { createPatientAccessRoute } from './audit/patient-route.js';
import { createBreakGlassNotifier } from './notify/breakglass.js';
import { createFhirClient } from './upstream/client.js';
import type { Monitor } from './oversight/monitor.js';
import { oversightRoute } from './oversight/routes.js';
import { startOversight } from './oversight/start.js';
import { Counter, Gauge } from 'prom-client';
import type { AuditEvent } from '@medplum/fhirtypes';

/** Where caregate serves the DIM review (outside the FHIR base path). */
export const REVIEW_PREFIX = '/caregate/review';
/** Where a patient (or her mandated person) sees who accessed her record. */
export const MY_ACCESSES_PREFIX = '/caregate/my-record/accesses';

export interface CaregateOptions {
  loaded: LoadedConfig;
  /** The upstream base URL (the config's, or the embedded demo engine's). */
  upstreamUrl: string;
  logger?: Logger;
  /** The clock of the stages (care-set and paging lifetimes, grants, periods); tests pass a fake one. */
  now?: () => number;
  /** Listen on this port instead of the configured one (tests use 0). */
  port?: number;
  host?: string;
}

export interface Caregate {
  url: string;
  publicBaseUrl: string;
  server: http.Server | https.Server;
  metrics: Metrics;
  /** Re-reads the policy file; an invalid file is refused and the active policy kept. */
  reloadPolicy(): { ok: true; revision: string } | { ok: false; problems: string[] };
  policyRevision(): string;
  /** Upstream lookups made for care sets so far (benchmark). */
  careSetLookups(): number;
  /** The live oversight (alerts), when enabled. */
  oversight: Monitor | undefined;
  close(): Promise<void>;
}

/** Builds every stage from the configuration, wires the pipeline, and listens. */
export async function startCaregate(opts: CaregateOptions): Promise<Caregate> {
  const { config } = opts.loaded;
  const logger = opts.logger ?? createLogger(config.logging.level);
  const metrics = createMetrics();
  const port = opts.port ?? config.server.port;
  const host = opts.host ?? config.server.host;
  const basePath = config.server.basePath;

  // Policy: loaded once here, reloaded on SIGHUP or file change; an invalid new file is refused.
  const policyFile = configPath(opts.loaded, config.policy.file);
  let active: LoadedPolicy = loadPolicy(policyFile);

  const spool = await openSpool({
    dir: configPath(opts.loaded, config.audit.spoolDir),
    mode: config.audit.mode,
    segmentMaxBytes: config.audit.segmentMaxBytes,
    groupCommitMaxDelayMs: config.audit.groupCommitMaxDelayMs,
    maxSyncsInFlight: config.audit.maxSyncsInFlight,
    failureRetryMs: config.audit.failureRetryMs,
    logger,
  });
  const ship = config.audit.ship;
  // caregate's own requests (lookups, audit shipping, review) present the same credential, and the
  // same client certificate when the upstream asks for mutual TLS, as the proxied ones.
  const serviceHeaders = serviceCredential(opts.loaded);
  const dispatcher = upstreamDispatcher(opts.loaded);
  const shipErrors = new Counter({
    name: 'caregate_audit_ship_errors_total',
    help: 'Failed AuditEvent shipments (each is retried with backoff; nothing is dropped).',
    registers: [metrics.registry],
  });
  const shipFailing = new Gauge({
    name: 'caregate_audit_ship_failing',
    help: '1 while the last AuditEvent shipment failed (the backlog then grows), 0 once one succeeds.',
    registers: [metrics.registry],
  });
  const shipper = createShipper({
    spool,
    target:
      ship.target === 'url'
        ? { baseUrl: ship.url!, headers: ship.headers ?? {}, timeoutMs: ship.timeoutMs }
        : { baseUrl: opts.upstreamUrl, headers: serviceHeaders, timeoutMs: ship.timeoutMs, ...(dispatcher ? { dispatcher } : {}) },
    batchSize: ship.batchSize,
    intervalMs: ship.intervalMs,
    backoff: ship.backoff,
    logger,
    hooks: {
      onShipped: (n) => metrics.auditShipped.inc(n),
      onBacklog: (n) => metrics.auditBacklog.set(n),
      // The shipper logs each failure and the recovery itself (status or error code only, never a
      // server body); the hook feeds the metrics an alert can watch.
      onError: (message) => {
        shipFailing.set(message === undefined ? 0 : 1);
        if (message !== undefined) shipErrors.inc();
      },
    },
  });
  shipper.start();

  // Listen first: with port 0 (tests, benchmark) the public base URL depends on the port bound.
  const tlsCfg = config.server.tls;
  let app: http.RequestListener | undefined;
  const listener: http.RequestListener = (req, res) => {
    if (app) app(req, res);
    else {
      res.statusCode = 503;
      res.end();
    }
  };
  const server = tlsCfg
    ? https.createServer(
        {
          cert: readFileSync(configPath(opts.loaded, tlsCfg.certFile)),
          key: readFileSync(configPath(opts.loaded, tlsCfg.keyFile)),
          ...(config.identity.certificates
            ? tlsServerOptions(config.identity.certificates, (p) => readFileSync(configPath(opts.loaded, p)))
            : {}),
        },
        listener,
      )
    : http.createServer(listener);
  server.keepAliveTimeout = config.server.keepAliveTimeoutMs;
  server.headersTimeout = config.server.keepAliveTimeoutMs + 1000;
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, host, () => resolve());
  });
  const actualPort = (server.address() as AddressInfo).port;
  const scheme = tlsCfg ? 'https' : 'http';
  const localUrl = `${scheme}://${host === '0.0.0.0' || host === '::' ? '127.0.0.1' : host}:${actualPort}${basePath === '/' ? '' : basePath}`;
  const publicBaseUrl = config.server.publicBaseUrl ?? localUrl;

  // Shadow mode: a candidate policy decided beside the active one, differences logged only.
  const shadowFile = config.policy.shadowFile ? configPath(opts.loaded, config.policy.shadowFile) : undefined;
  const shadow = shadowFile ? createShadowPolicy({ candidate: loadPolicy(shadowFile), logger, registry: metrics.registry }) : undefined;
  const pseudonymSecret = readPseudonymSecret(opts.loaded, logger);
  // Behind a load balancer, the client address the AuditEvents record comes from X-Forwarded-For.
  const clientAddress = clientAddressResolver(config.server.trustedProxies);
  const shared = await openSharedState(opts.loaded, { logger, registry: metrics.registry, ...(opts.now ? { now: opts.now } : {}) });

  // The live oversight sees every AuditEvent once it is durable (a cheap update in memory; what
  // needs more happens afterwards, off the answer's path).
  let monitor: Monitor | undefined;
  const audit = (events: readonly AuditEvent[] | SerializedAuditEvents) =>
    spool.append(events).then(() => monitor?.observe(isSerialized(events) ? (events.events ?? events.json.map((j) => JSON.parse(j) as AuditEvent)) : events));

  // Where the trail is read back (the DIM review, the patient's access history, notifications not yet sent).
  const reviewCfg = config.audit.review;
  const trailSource =
    ship.target === 'url'
      ? { baseUrl: ship.url!, headers: ship.headers ?? {}, timeoutMs: ship.timeoutMs }
      : { baseUrl: opts.upstreamUrl, headers: serviceHeaders, timeoutMs: ship.timeoutMs, ...(dispatcher ? { dispatcher } : {}) };
  const trail = createFhirClient(trailSource);
  // Told after an emergency access: the patient and her attending physician (notify/breakglass.ts).
  const notifier = createBreakGlassNotifier({
    client: createFhirClient({
      baseUrl: opts.upstreamUrl,
      headers: serviceHeaders,
      timeoutMs: config.upstream.lookupTimeoutMs,
      ...(dispatcher ? { dispatcher } : {}),
    }),
    trail,
    audit,
    config: () => config.notifications.breakGlass,
    encounterStatuses: () => active.policy.careRelationships.encounter.statuses,
    site: config.audit.site,
    logger,
  });

  const built = buildStages({
    loaded: opts.loaded,
    upstreamUrl: opts.upstreamUrl,
    publicBaseUrl,
    logger,
    policy: () => active,
    audit,
    ...(opts.now ? { now: opts.now } : {}),
    onLookup: (kind, ok) => metrics.lookups.inc({ kind, result: ok ? 'ok' : 'error' }),
    ...(shadow ? { shadow } : {}),
    ...(pseudonymSecret ? { pseudonymSecret } : {}),
    shared,
    onBreakGlassOpened: (opening) => notifier.notify(opening),
    // Staff members' and flagged patients' records: every access at high severity (the monitor starts below).
    sensitivePatients: (ids) => monitor?.sensitivePatients(ids) ?? Promise.resolve(new Set()),
  });
  const { client, identifier } = built;
  notifier.start();
  registerCacheMetrics(metrics.registry, {
    token: () => identifier.cacheStats().token,
    principal: () => identifier.cacheStats().principal,
    careset: () => built.careSets.cacheStats(),
  }, {
    // The index from care-team members to the users whose cached sets they appear in.
    'careset-members': () => built.careSets.cacheStats().memberIndex,
  });

  const forwarderOptions = {
    target: opts.upstreamUrl,
    timeoutMs: config.upstream.timeoutMs,
    maxResponseBytes: config.server.maxResponseBytes,
    maxSockets: config.upstream.maxSockets,
    tls:
      config.upstream.auth.type === 'mtls'
        ? {
            certFile: configPath(opts.loaded, config.upstream.auth.certFile),
            keyFile: configPath(opts.loaded, config.upstream.auth.keyFile),
            caFile: config.upstream.auth.caFile ? configPath(opts.loaded, config.upstream.auth.caFile) : undefined,
          }
        : undefined,
  };
  // undici by default (less CPU per request, docs/BENCHMARKS.md); http-proxy-middleware on request.
  const proxy =
    config.upstream.client === 'undici'
      ? (() => {
          const f = createUndiciForwarder(forwarderOptions);
          return { forward: (_req: http.IncomingMessage, _res: http.ServerResponse, r: UpstreamRequest) => f.forward(r), close: () => f.close() };
        })()
      : createUpstreamProxy(forwarderOptions);

  const shapingBudget = createByteBudget(config.server.maxShapingBytes);
  new Gauge({
    name: 'caregate_shaping_waiting',
    help: 'Requests whose upstream answer waits for room in server.maxShapingBytes.',
    registers: [metrics.registry],
    collect() {
      this.set(shapingBudget.waiting);
    },
  });
  const handle = createPipeline({
    clientAddress,
    stages: built.stages,
    forward: proxy.forward,
    logger,
    metrics,
    maxRequestBytes: config.server.maxRequestBytes,
    compress: config.server.compression,
    shapingBudget,
  });

  // The FHIR server holds the whole trail: the spool deletes what it has shipped.
  const trailPages = { ...trailSource, maxPages: Math.ceil(reviewCfg.maxEvents / 500) };
  const stageNow = opts.now ?? Date.now;
  const oversight = await startOversight({
    clientAddress,
    loaded: opts.loaded,
    client,
    careSets: built.careSets,
    shared,
    trail: trailPages,
    audit,
    identify: (req) => identifier.identify(identifyInputFrom(req)),
    roleOf: (p) => roleOf(active.policy, p),
    policy: () => active.policy,
    publicBaseUrl,
    logger,
    registry: metrics.registry,
    now: stageNow,
    ...(pseudonymSecret ? { pseudonymSecret } : {}),
  });
  monitor = oversight.monitor;
  const handleReview = createReviewRoute({
    clientAddress,
    identify: (req) => identifier.identify(identifyInputFrom(req)),
    roleOf: (p) => roleOf(active.policy, p),
    source: trailPages,
    hours: { timeZone: reviewCfg.timeZone, offHoursStart: reviewCfg.offHoursStart, offHoursEnd: reviewCfg.offHoursEnd, weekends: reviewCfg.weekends },
    unusual: { minPatients: reviewCfg.unusualMinPatients, ...(reviewCfg.unusualThreshold !== undefined ? { threshold: reviewCfg.unusualThreshold } : {}) },
    maxDays: reviewCfg.maxDays,
    audit,
    publicBaseUrl,
    site: config.audit.site,
    logger,
    now: () => new Date(stageNow()),
    formToken: oversight.formToken,
    verdictDueDays: config.oversight.breakGlassReview.dueDays,
  });

  const handleAccesses = createPatientAccessRoute({
    clientAddress,
    identify: (req) => identifier.identify(identifyInputFrom(req)),
    roleOf: (p) => roleOf(active.policy, p),
    policy: () => active.policy,
    async patientsOf(p, role) {
      const set = await built.profiles.of({ principal: p, kind: role.profile === 'mandate' ? 'mandates' : 'own-record', fresh: false });
      return new Set(set.patients.keys());
    },
    trail,
    audit,
    publicBaseUrl,
    site: config.audit.site,
    timeZone: reviewCfg.timeZone,
    logger,
  });

  let upstreamReady: { at: number; ok: boolean } = { at: 0, ok: false };
  app = createApp({
    views: [
      {
        prefix: REVIEW_PREFIX,
        handle: (req, res, sub) => {
          const route = oversightRoute(sub);
          return route ? oversight.handle(req, res, route) : handleReview(req, res, sub);
        },
      },
      { prefix: MY_ACCESSES_PREFIX, handle: handleAccesses },
    ],
    routes: (a) => {
      // The break-the-glass page holds no data; its form POSTs Patient/<id>/$break-glass to the FHIR API.
      a.get('/caregate/break-glass', (_req, res) => {
        const nonce = randomBytes(16).toString('base64');
        res.setHeader('content-security-policy', `default-src 'none'; script-src 'nonce-${nonce}'; style-src 'nonce-${nonce}'; connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'`);
        res.setHeader('cache-control', 'no-store');
        res.type('html').send(breakGlassPage(basePath === '/' ? '' : basePath, nonce));
      });
    },
    basePath,
    logger,
    metrics,
    metricsPath: config.metrics.enabled ? config.metrics.path : undefined,
    handle,
    readiness: [
      {
        name: 'upstream',
        async check() {
          if (Date.now() - upstreamReady.at > 5000) {
            try {
              await client.capabilities();
              upstreamReady = { at: Date.now(), ok: true };
            } catch {
              upstreamReady = { at: Date.now(), ok: false };
            }
          }
          return upstreamReady.ok ? { ok: true } : { ok: false, reason: 'the FHIR server does not answer /metadata' };
        },
      },
      {
        name: 'audit-spool',
        async check() {
          const h = spool.health();
          return h.ok ? { ok: true } : { ok: false, reason: h.reason ?? 'audit spool not writable' };
        },
      },
      {
        name: 'policy',
        async check() {
          return { ok: true, reason: `revision ${active.revision}` };
        },
      },
      {
        // Redis unreachable: degraded, not down. What needs nothing shared is still answered, the
        // rest fails closed (503), and the instance recovers by itself.
        name: 'shared-state',
        async check() {
          const h = shared.health();
          return h.ok ? { ok: true, reason: h.reason ?? shared.mode } : { ok: false, degraded: true, reason: h.reason ?? 'unreachable' };
        },
      },
    ],
  });

  /**
   * A policy change is a security event: recorded whether it took effect or was refused. It is not
   * tied to a request, so a spool failure can only be logged (and shows on /readyz).
   */
  function auditReload(policy: { revision: string; previousRevision: string }, failure?: { code: string; message: string }): void {
    spool
      .append(
        buildAuditEvents({
          kind: 'policy-reload',
          requestId: `policy-${randomUUID()}`,
          recorded: new Date().toISOString(),
          publicBaseUrl,
          site: config.audit.site,
          patients: [],
          policy,
          ...(failure ? { failure } : {}),
        }),
      )
      .catch((err: unknown) => {
        logger.error({ revision: policy.revision, code: (err as { code?: string })?.code }, 'the policy reload could not be audited');
      });
  }

  function reloadPolicy(): { ok: true; revision: string } | { ok: false; problems: string[] } {
    const previous = active.revision;
    try {
      const next = loadPolicy(policyFile);
      active = next;
      built.onPolicyReload();
      if (shadow && shadowFile) shadow.setCandidate(loadPolicy(shadowFile));
      logger.info({ revision: next.revision, previous }, 'policy reloaded');
      auditReload({ revision: next.revision, previousRevision: previous });
      return { ok: true, revision: next.revision };
    } catch (err) {
      const problems = err instanceof ConfigError ? err.problems : ['unreadable policy'];
      logger.error({ problems }, 'policy reload refused; the active policy is kept');
      auditReload(
        { revision: fileRevision(policyFile), previousRevision: previous },
        { code: 'ERR_POLICY_INVALID', message: `${problems.length} problem(s) in the new policy file; first: ${problems[0] ?? 'unknown'}` },
      );
      return { ok: false, problems };
    }
  }

  let watcher: FSWatcher | undefined;
  if (config.policy.watch) {
    let timer: NodeJS.Timeout | undefined;
    try {
      // Watch the directory, not the file: editors and deployment tools replace the file by a
      // rename, which a watcher on the old inode would never see.
      const name = basename(policyFile);
      watcher = watch(dirname(policyFile), (_event, changed) => {
        if (changed !== null && changed !== name) return;
        clearTimeout(timer);
        timer = setTimeout(() => {
          if (existsSync(policyFile)) reloadPolicy();
        }, 200);
      });
      watcher.unref();
    } catch {
      logger.warn('policy file cannot be watched; reload with SIGHUP');
    }
  }

  logger.info({ url: localUrl, policy: active.revision, audit: config.audit.mode }, 'caregate listening');

  return {
    url: localUrl,
    publicBaseUrl,
    server,
    metrics,
    reloadPolicy,
    policyRevision: () => active.revision,
    careSetLookups: () => built.careSets.lookups,
    oversight: monitor,
    async close() {
      watcher?.close();
      await new Promise<void>((resolve) => {
        server.close(() => resolve());
        server.closeIdleConnections();
        setTimeout(() => server.closeAllConnections(), config.server.shutdownGraceMs).unref();
      });
      await proxy.close();
      await notifier.stop();
      await monitor?.close();
      await built.close();
      await shared.close();
      await shipper.stop();
      await spool.close();
      await dispatcher?.close();
    },
  };
}

/**
 * The secret coding-contractor pseudonyms derive from (`CAREGATE_PSEUDONYM_SECRET`, at least 32
 * bytes, hex or base64). Without it pseudonyms are random per process and change at each start;
 * several instances (`state.mode: redis`) must issue the same ones, so there it is required.
 */
function readPseudonymSecret(loaded: LoadedConfig, logger: Logger): Buffer | undefined {
  const raw = process.env.CAREGATE_PSEUDONYM_SECRET;
  if (!raw) {
    if (loaded.config.state.mode === 'redis') {
      throw new ConfigError(loaded.file, ['CAREGATE_PSEUDONYM_SECRET: required with state.mode: redis (every instance must issue the same contractor pseudonyms)']);
    }
    if (loaded.config.upstream.url !== null) logger.warn('CAREGATE_PSEUDONYM_SECRET is not set: contractor pseudonyms change at each start');
    return undefined;
  }
  const buf = /^[0-9a-f]+$/i.test(raw) ? Buffer.from(raw, 'hex') : Buffer.from(raw, 'base64');
  if (buf.length < 32) throw new ConfigError(loaded.file, ['CAREGATE_PSEUDONYM_SECRET: at least 32 bytes (64 hex characters) are needed']);
  return buf;
}


/** The revision a policy file would have (as `loadPolicy` computes it), or `unreadable`. */
function fileRevision(file: string): string {
  try {
    return createHash('sha256').update(readFileSync(file, 'utf8')).digest('hex').slice(0, 16);
  } catch {
    return 'unreadable';
  }
}

function isSerialized(e: readonly AuditEvent[] | SerializedAuditEvents): e is SerializedAuditEvents {
  return !Array.isArray(e);
}
