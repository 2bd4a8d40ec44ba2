import { Counter, Histogram, Gauge, Registry, collectDefaultMetrics } from 'prom-client';

/** Prometheus metrics. Labels are closed sets (interaction kinds, status classes): no PHI, bounded cardinality. */
export interface Metrics {
  registry: Registry;
  requests: Counter<'interaction' | 'status'>;
  requestDuration: Histogram<'interaction' | 'status'>;
  upstreamDuration: Histogram<'interaction' | 'status'>;
  decisions: Counter<'effect' | 'reason'>;
  lookups: Counter<'kind' | 'result'>;
  auditBacklog: Gauge;
  auditShipped: Counter;
}

/** What a cache has done so far: the counters a benchmark and an operator read hit rates from. */
export interface CacheStats {
  hits: number;
  misses: number;
  /** Entries held now. */
  entries: number;
}

/**
 * `caregate_cache_lookups_total{cache,result}` and `caregate_cache_entries{cache}`, read from the
 * caches' own counters when scraped (nothing is counted on the request path but an increment).
 * `indexes` are structures that are no caches but whose size is worth watching.
 */
export function registerCacheMetrics(
  registry: Registry,
  caches: Readonly<Record<string, () => CacheStats>>,
  indexes: Readonly<Record<string, () => number>> = {},
): void {
  new Counter({
    name: 'caregate_cache_lookups_total',
    help: 'Lookups in caregate’s caches (verified tokens, principals, care sets), by cache and hit or miss.',
    labelNames: ['cache', 'result'],
    registers: [registry],
    collect() {
      this.reset();
      for (const [cache, stats] of Object.entries(caches)) {
        const s = stats();
        this.inc({ cache, result: 'hit' }, s.hits);
        this.inc({ cache, result: 'miss' }, s.misses);
      }
    },
  });
  new Gauge({
    name: 'caregate_cache_entries',
    help: 'Entries held by caregate’s caches and indexes, by cache.',
    labelNames: ['cache'],
    registers: [registry],
    collect() {
      for (const [cache, stats] of Object.entries(caches)) this.set({ cache }, stats().entries);
      for (const [cache, size] of Object.entries(indexes)) this.set({ cache }, size());
    },
  });
}

const BUCKETS = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30];

export function createMetrics(withDefaults = true): Metrics {
  const registry = new Registry();
  if (withDefaults) collectDefaultMetrics({ register: registry, prefix: 'caregate_' });
  return {
    registry,
    requests: new Counter({
      name: 'caregate_requests_total',
      help: 'FHIR requests answered, by interaction and HTTP status.',
      labelNames: ['interaction', 'status'],
      registers: [registry],
    }),
    requestDuration: new Histogram({
      name: 'caregate_request_duration_seconds',
      help: 'Time from request received to response sent, by interaction and status.',
      labelNames: ['interaction', 'status'],
      buckets: BUCKETS,
      registers: [registry],
    }),
    upstreamDuration: new Histogram({
      name: 'caregate_upstream_duration_seconds',
      help: 'Time the upstream FHIR server took to answer proxied requests.',
      labelNames: ['interaction', 'status'],
      buckets: BUCKETS,
      registers: [registry],
    }),
    decisions: new Counter({
      name: 'caregate_decisions_total',
      help: 'Policy decisions by effect and reason.',
      labelNames: ['effect', 'reason'],
      registers: [registry],
    }),
    lookups: new Counter({
      name: 'caregate_lookups_total',
      help: 'Upstream lookups made by caregate itself (principal and care-set resolution).',
      labelNames: ['kind', 'result'],
      registers: [registry],
    }),
    auditBacklog: new Gauge({
      name: 'caregate_audit_backlog_events',
      help: 'AuditEvents spooled but not yet shipped.',
      registers: [registry],
    }),
    auditShipped: new Counter({
      name: 'caregate_audit_shipped_total',
      help: 'AuditEvents shipped to the audit FHIR server.',
      registers: [registry],
    }),
  };
}
