import type { AuditEvent, Bundle } from '@medplum/fhirtypes';
import type { Logger } from 'pino';
import type { AuditSpool } from './spool.js';

/** The FHIR server that stores the trail: the upstream (with caregate's service credential) or a separate audit server. */
export interface ShipTarget {
  baseUrl: string;
  /** e.g. the service `Authorization`. Never logged. */
  headers?: Record<string, string>;
  /** Default 30 s. */
  timeoutMs?: number;
  /** undici dispatcher (e.g. an mTLS Agent), passed to fetch as is. */
  dispatcher?: unknown;
}

/** Callbacks for metrics (`caregate_audit_shipped_total`, `caregate_audit_backlog_events`, ...). */
export interface ShipperHooks {
  onShipped?(count: number): void;
  onBacklog?(events: number): void;
  /** A message without PHI after a failed shipment; `undefined` once a shipment succeeds again. */
  onError?(message: string | undefined): void;
}

export interface ShipperOptions {
  spool: AuditSpool;
  target: ShipTarget;
  /** Events per transaction Bundle. Default 200. */
  batchSize?: number;
  /** Pause when the spool is drained. Default 1000 ms. */
  intervalMs?: number;
  /** Exponential backoff after a failure. Default 500 ms doubling up to 60 s. */
  backoff?: { initialMs: number; maxMs: number };
  hooks?: ShipperHooks;
  logger?: Logger;
  /** Injected fetch, for tests. */
  fetch?: typeof fetch;
  /** How long a rejected Bundle size stays the ceiling for the next ones. Default 10 min. */
  ceilingResetMs?: number;
  /** Clock, epoch milliseconds (tests). */
  now?: () => number;
}

export interface ShipperStatus {
  running: boolean;
  backlog: number;
  consecutiveFailures: number;
  lastError: string | undefined;
  lastSuccessAt: string | undefined;
}

export interface AuditShipper {
  /** Starts the background loop. */
  start(): void;
  /** Stops the loop and waits for the shipment in flight. */
  stop(): Promise<void>;
  /** Ships until the spool is drained (for shutdown and tests); rejects on the first failure. */
  flush(): Promise<{ shipped: number; backlog: number }>;
  status(): ShipperStatus;
}

/** Thrown for a shipment the server did not accept; `status` is the HTTP status, if any. */
export class ShipmentError extends Error {
  constructor(
    message: string,
    readonly status?: number,
  ) {
    super(message);
    this.name = 'ShipmentError';
  }
}

/**
 * Ships spooled AuditEvents as transaction Bundles of `PUT AuditEvent/<id>` entries. The id was
 * assigned when the event was built and is stored in the spool, so a retry after a lost answer, a
 * crash or an outage rewrites the same resources and never creates duplicates. The spool cursor
 * advances only after a 2xx transaction-response whose every entry succeeded.
 */
export function createShipper(opts: ShipperOptions): AuditShipper {
  const spool = opts.spool;
  const base = opts.target.baseUrl.replace(/\/+$/, '');
  const maxBatch = opts.batchSize ?? 200;
  const intervalMs = opts.intervalMs ?? 1000;
  const backoff = opts.backoff ?? { initialMs: 500, maxMs: 60_000 };
  const doFetch = opts.fetch ?? fetch;
  const now = opts.now ?? Date.now;
  const hooks = opts.hooks ?? {};
  const log = opts.logger;

  let running = false;
  let loop: Promise<void> | undefined;
  let wake: (() => void) | undefined;
  let timer: NodeJS.Timeout | undefined;
  /** Serialises shipments: the loop and `flush()` must not read the same batch twice. */
  let lock: Promise<unknown> = Promise.resolve();
  /** Shrinks when the server rejects a Bundle as too large or invalid, to isolate the cause. */
  let batchSize = maxBatch;
  /**
   * Batches grow back after a success, but not past a size the server rejected: a server with a
   * limit on transaction entries (medplum: 50 updates) would otherwise refuse every other Bundle
   * and the backoff would throttle shipping far below the request rate. The ceiling is lifted
   * after `ceilingResetMs`, in case the rejection was about one event rather than the size.
   */
  let ceiling = maxBatch;
  let ceilingSince = 0;
  const ceilingResetMs = opts.ceilingResetMs ?? 10 * 60_000;
  let failures = 0;
  let lastError: string | undefined;
  let lastSuccessAt: string | undefined;

  async function send(events: AuditEvent[]): Promise<void> {
    const bundle: Bundle = {
      resourceType: 'Bundle',
      type: 'transaction',
      entry: events.map((e) => ({
        fullUrl: `${base}/AuditEvent/${e.id}`,
        resource: e,
        request: { method: 'PUT', url: `AuditEvent/${e.id}` },
      })),
    };
    let res: Response;
    try {
      res = await doFetch(`${base}/`, {
        method: 'POST',
        headers: {
          accept: 'application/fhir+json',
          'content-type': 'application/fhir+json',
          ...opts.target.headers,
        },
        body: JSON.stringify(bundle),
        signal: AbortSignal.timeout(opts.target.timeoutMs ?? 30_000),
        ...(opts.target.dispatcher ? { dispatcher: opts.target.dispatcher } : {}),
      } as RequestInit);
    } catch (err) {
      const e = err as Error & { cause?: { code?: string } };
      const timeout = e.name === 'TimeoutError' || e.name === 'AbortError';
      throw new ShipmentError(timeout ? 'audit server timeout' : `audit server unreachable (${e.cause?.code ?? e.name})`);
    }
    // The body is read for the entry statuses only; it is never logged (it may echo PHI).
    const text = await res.text().catch(() => '');
    if (res.status < 200 || res.status > 299) throw new ShipmentError(`audit server answered HTTP ${res.status}`, res.status);
    let reply: Bundle | undefined;
    try {
      reply = JSON.parse(text) as Bundle;
    } catch {
      reply = undefined;
    }
    const entries = reply?.resourceType === 'Bundle' ? (reply.entry ?? []) : undefined;
    if (!entries || entries.length !== events.length) {
      throw new ShipmentError('audit server answered without a matching transaction-response', res.status);
    }
    const bad = entries.find((e) => !/^2\d\d/.test(e.response?.status ?? ''));
    if (bad) throw new ShipmentError(`audit server refused an entry (${bad.response?.status ?? 'no status'})`, res.status);
  }

  /** Ships one batch; returns how many events were shipped (0: nothing to ship). */
  function shipOnce(): Promise<number> {
    const run = lock.then(async () => {
      const batch = await spool.readBatch(batchSize);
      if (!batch) return 0;
      try {
        await send(batch.events);
      } catch (err) {
        if (err instanceof ShipmentError && (err.status === 400 || err.status === 413 || err.status === 422) && batch.events.length > 1) {
          batchSize = Math.max(1, Math.floor(batch.events.length / 2));
          ceiling = Math.min(ceiling, batchSize);
          ceilingSince = now();
        }
        throw err;
      }
      await spool.commit(batch);
      if (ceiling < maxBatch && now() - ceilingSince >= ceilingResetMs) ceiling = maxBatch;
      batchSize = Math.min(ceiling, batchSize * 2);
      return batch.events.length;
    });
    lock = run.catch(() => undefined);
    return run;
  }

  function succeeded(n: number): void {
    if (n > 0) {
      hooks.onShipped?.(n);
      lastSuccessAt = new Date().toISOString();
    }
    hooks.onBacklog?.(spool.backlog());
    if (failures > 0 || lastError) {
      log?.info({ afterFailures: failures }, 'audit shipping resumed');
      failures = 0;
      lastError = undefined;
      hooks.onError?.(undefined);
    }
  }

  function failed(err: unknown): void {
    failures++;
    lastError = err instanceof ShipmentError ? err.message : `audit shipment failed (${(err as Error).name})`;
    hooks.onError?.(lastError);
    hooks.onBacklog?.(spool.backlog());
    log?.warn({ err: lastError, failures, backlog: spool.backlog() }, 'audit shipment failed; will retry');
  }

  function sleep(ms: number): Promise<void> {
    return new Promise((resolve) => {
      wake = resolve;
      timer = setTimeout(resolve, ms);
    });
  }

  async function run(): Promise<void> {
    while (running) {
      let pause: number;
      try {
        const n = await shipOnce();
        succeeded(n);
        pause = n > 0 ? 0 : intervalMs;
      } catch (err) {
        failed(err);
        const exp = Math.min(backoff.maxMs, backoff.initialMs * 2 ** Math.min(failures - 1, 30));
        // ±20 % jitter so that several instances do not hammer a recovering server in step.
        pause = Math.round(exp * (0.8 + Math.random() * 0.4));
      }
      if (running && pause > 0) await sleep(pause);
    }
  }

  return {
    start() {
      if (running) return;
      running = true;
      loop = run();
    },
    async stop() {
      running = false;
      if (timer) clearTimeout(timer);
      wake?.();
      await loop;
      loop = undefined;
    },
    async flush() {
      let shipped = 0;
      for (;;) {
        let n: number;
        try {
          n = await shipOnce();
        } catch (err) {
          failed(err);
          throw err;
        }
        succeeded(n);
        if (n === 0) return { shipped, backlog: spool.backlog() };
        shipped += n;
      }
    },
    status: () => ({
      running,
      backlog: spool.backlog(),
      consecutiveFailures: failures,
      lastError,
      lastSuccessAt,
    }),
  };
}
