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
