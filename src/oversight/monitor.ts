import { mkdir, open, readFile, rename } from 'node:fs/promises';
import { join } from 'node:path';
import type { AuditEvent } from '@medplum/fhirtypes';
import type { Logger } from 'pino';
import { Counter, Gauge, type Registry } from 'prom-client';
import { DcmSubtype } from '../audit/codes.js';
import { breakGlassItems } from '../audit/review-items.js';
import { loadVerdictEvents, searchAuditEvents, type ReviewSource } from '../audit/review-load.js';
import { summarizeAuditEvent, type ReviewHours } from '../audit/review-model.js';
import type { FhirClient } from '../upstream/client.js';
import { ALERT_RULES, observationOf, type Alert, type Observation } from './alert.js';
import type { OversightConfig } from './config.js';
import { createDetectors, type DetectorState } from './detectors.js';
import { createFacts } from './facts.js';
import { openOutbox, webhookDelivery, type Outbox } from './outbox.js';

/**
 * The live oversight of the trail: fed every batch of AuditEvents once they are durable (the audit
 * stage's spool append resolved), it updates the detectors in memory and returns at once; what needs
 * more (a Patient's labels, a Practitioner's names, the webhook) happens afterwards, off the
 * answer's path. Alerts go to the log (ids and counts, no names), to Prometheus, and to the webhook
 * through a durable outbox. The detectors' windows are saved every `stateIntervalSeconds` and at
 * shutdown, and restored at start. A sweep of the trail finds break-the-glass openings left without
 * the DIM's verdict for more than `breakGlassReview.dueDays`.
 *
 * Per instance: with several instances behind a balancer each counts what it sees (docs/OVERSIGHT.md).
 */
export interface Monitor {
  /** Feeds the AuditEvents of one request (or of one security event), once durable. Never throws. */
  observe(events: readonly AuditEvent[]): void;
  /** Looks for overdue break-the-glass openings in the trail; resolves with the alerts raised. */
  sweep(): Promise<Alert[]>;
  /**
   * Which of these patients (ids) are watched: listed staff members or flagged patients, or whose
   * Patient carries a staff or flagged label (looked up, batched and cached). Empty when the rule
   * is off. A failed lookup counts as not watched; the alert path retries it.
   */
  sensitivePatients(ids: readonly string[]): Promise<ReadonlySet<string>>;
  /** Waits for the lookups and alerts under way (tests). */
  settled(): Promise<void>;
  close(): Promise<void>;
}

export interface MonitorOptions {
  config: OversightConfig;
  /** The oversight directory, resolved. */
  dir: string;
  hours: ReviewHours;
  site: string;
  /** caregate's own FHIR client: the records the patient rules need. */
  client: FhirClient;
  /** Where the trail is read for the sweep (the audit FHIR server). */
  trail: Extract<ReviewSource, { baseUrl: string }>;
  /** The webhook's signing secret (from `webhook.secretEnv`). */
  webhookSecret?: string;
  logger: Logger;
  registry?: Registry;
  now?: () => number;
}

const STATE_FILE = 'detectors.json';

export async function openMonitor(opts: MonitorOptions): Promise<Monitor> {
  const cfg = opts.config;
  const now = opts.now ?? Date.now;
  const log = opts.logger;
  await mkdir(opts.dir, { recursive: true, mode: 0o700 });
  const registers = opts.registry ? [opts.registry] : [];
  const raised = new Counter({ name: 'caregate_alerts_total', help: 'Oversight alerts raised, by rule.', labelNames: ['rule'], registers });
  for (const rule of ALERT_RULES) raised.inc({ rule }, 0);
  const deliveries = new Counter({ name: 'caregate_alert_deliveries_total', help: 'Alert deliveries to the webhook, by result (each failure is retried).', labelNames: ['result'], registers });
  const pendingGauge = new Gauge({ name: 'caregate_alert_outbox_pending', help: 'Alerts waiting in the outbox for the webhook.', registers });

  const detectors = createDetectors({ detectors: cfg.detectors, cooldownMinutes: cfg.cooldownMinutes, hours: opts.hours, site: opts.site, now });
  const saved = await readState(join(opts.dir, STATE_FILE));
  if (saved === 'unreadable') log.warn('oversight: the detectors’ saved state is unreadable; counting starts afresh');
  else if (saved) detectors.restore(saved);
  const facts = createFacts({ client: opts.client, ttlMs: cfg.detectors.sensitivePatients.lookupCacheMinutes * 60_000 });
  const outbox: Outbox | undefined = cfg.webhook
    ? await openOutbox({
        dir: opts.dir,
        deliver: webhookDelivery({ url: cfg.webhook.url, headers: cfg.webhook.headers, timeoutMs: cfg.webhook.timeoutMs, ...(opts.webhookSecret ? { secret: opts.webhookSecret } : {}) }),
        backoff: cfg.webhook.backoff,
        logger: log,
        onDelivered: () => deliveries.inc({ result: 'ok' }),
        onFailure: () => deliveries.inc({ result: 'error' }),
        onPending: (n) => pendingGauge.set(n),
      })
    : undefined;

  let dirty = false;
  const inflight = new Set<Promise<unknown>>();
  const track = (p: Promise<unknown>) => {
    inflight.add(p);
    void p.finally(() => inflight.delete(p));
  };

  function raise(alert: Alert): void {
    dirty = true;
    raised.inc({ rule: alert.rule });
    // Ids and counts only: who and which patient are in the alert and the trail, never in the log.
    log.warn({ alert: alert.id, rule: alert.rule, count: alert.count, threshold: alert.threshold, auditEvents: alert.auditEvents.slice(-10) }, 'oversight alert');
    if (outbox) {
      track(
        outbox.add(alert).catch((err: unknown) => {
          log.error({ alert: alert.id, code: (err as NodeJS.ErrnoException)?.code }, 'alert outbox: the alert could not be written; it is in the log and the metrics only');
        }),
      );
    }
  }

  async function judge(o: Observation): Promise<void> {
    const surnames = o.userRef && cfg.detectors.sensitivePatients.sameSurname ? await facts.surnamesOf(o.userRef) : [];
    for (const p of o.patients) {
      const f = await facts.patient(p.slice('Patient/'.length));
      if (f) for (const a of detectors.judgePatient(o, p, f, surnames)) raise(a);
    }
  }

  async function save(): Promise<void> {
    if (!dirty) return;
    dirty = false;
    detectors.prune();
    await writeState(join(opts.dir, STATE_FILE), detectors.snapshot()).catch((err: unknown) => {
      dirty = true;
      log.error({ code: (err as NodeJS.ErrnoException)?.code }, 'oversight: the detectors’ state could not be saved');
    });
  }

  async function sweep(): Promise<Alert[]> {
    const review = cfg.breakGlassReview;
    const t = now();
    const from = new Date(t - review.lookbackDays * 86_400_000).toISOString();
    const to = new Date(t - review.dueDays * 86_400_000).toISOString();
    const started = DcmSubtype.emergencyOverrideStarted;
    const [openings, verdicts] = await Promise.all([
      searchAuditEvents(opts.trail, [['subtype', `${started.system}|${started.code}`], ['date', `ge${from}`], ['date', `le${to}`]]),
      loadVerdictEvents(opts.trail, from),
    ]);
    const items = breakGlassItems(openings.map(summarizeAuditEvent), verdicts, { now: new Date(t), dueDays: review.dueDays });
    const out: Alert[] = [];
    for (const i of items) {
      if (!i.overdue) continue;
      const a = detectors.unreviewed({ id: i.openingId, patient: i.patient, ...(i.userRef ? { userRef: i.userRef } : {}), ...(i.user ? { userId: i.user } : {}), ageDays: i.ageDays, dueDays: review.dueDays });
      if (a) {
        raise(a);
        out.push(a);
      }
    }
    return out;
  }

  const stateTimer = setInterval(() => void save(), cfg.stateIntervalSeconds * 1000);
  stateTimer.unref();
  const runSweep = () =>
    track(
      sweep().catch((err: unknown) => {
        log.warn({ err: { type: (err as Error)?.name, code: (err as NodeJS.ErrnoException)?.code } }, 'oversight: the trail could not be swept for overdue break-the-glass reviews');
      }),
    );
  const sweepTimer = setInterval(runSweep, cfg.breakGlassReview.sweepMinutes * 60_000);
  sweepTimer.unref();
  // A first sweep a few minutes after the start (not at once: a restart loop must not hammer the trail).
  const firstSweep = setTimeout(runSweep, Math.min(cfg.breakGlassReview.sweepMinutes, 5) * 60_000);
  firstSweep.unref();

  return {
    observe(events) {
      for (const ev of events) {
        try {
          const o = observationOf(ev);
          const alerts = detectors.observe(o);
          if (o.kind !== 'other' && (o.refused || o.patients.length > 0)) dirty = true;
          for (const a of alerts) raise(a);
          if (detectors.needsFacts(o)) {
            track(
              judge(o).catch((err: unknown) => {
                log.warn({ code: (err as { code?: string })?.code, type: (err as Error)?.name }, 'oversight: a patient rule could not be judged');
              }),
            );
          }
        } catch (err) {
          log.error({ type: (err as Error)?.name }, 'oversight: an AuditEvent could not be observed');
        }
      }
    },
    async sensitivePatients(ids) {
      const sp = cfg.detectors.sensitivePatients;
      const out = new Set<string>();
      if (!sp.enabled) return out;
      const listed = new Set([...sp.staffPatients, ...sp.flaggedPatients]);
      const labels = new Set([...sp.staffLabels, ...sp.flaggedLabels]);
      await Promise.all(
        ids.map(async (id) => {
          if (listed.has(id)) out.add(id);
          else if (labels.size > 0 && (await facts.patient(id))?.labels.some((l) => labels.has(l))) out.add(id);
        }),
      );
      return out;
    },
    sweep,
    async settled() {
      while (inflight.size) await Promise.all([...inflight]);
    },
    async close() {
      clearInterval(stateTimer);
      clearInterval(sweepTimer);
      clearTimeout(firstSweep);
      // Lookups under way may still raise alerts: wait for them, and for what they raise.
      while (inflight.size) await Promise.allSettled([...inflight]);
      dirty = true;
      await save();
      await outbox?.close();
    },
  };
}

async function readState(path: string): Promise<DetectorState | undefined | 'unreadable'> {
  let text: string;
  try {
    text = await readFile(path, 'utf8');
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    return 'unreadable';
  }
  try {
    return JSON.parse(text) as DetectorState;
  } catch {
    return 'unreadable';
  }
}

async function writeState(path: string, state: DetectorState): Promise<void> {
  const tmp = `${path}.tmp`;
  const h = await open(tmp, 'w', 0o600);
  try {
    await h.writeFile(JSON.stringify(state));
    await h.datasync();
  } finally {
    await h.close();
  }
  await rename(tmp, path);
}
