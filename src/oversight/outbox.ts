import { createHmac } from 'node:crypto';
import { mkdir, open, readFile, rename, type FileHandle } from 'node:fs/promises';
import { join } from 'node:path';
import type { Logger } from 'pino';
import type { Alert } from './alert.js';

/**
 * The alert outbox: an alert is written to a local file (appended, fdatasync'ed, like the audit
 * spool's discipline) before it is sent, and marked delivered once the webhook answered 2xx. A
 * webhook that is down, or a restart, loses nothing: what is pending is sent again, in order, with
 * exponential backoff, until it is delivered. An alert keeps its id across attempts, so a receiver
 * that saw it before an answer was lost can drop the duplicate.
 *
 * File `alerts.jsonl` in the oversight directory: one JSON object per line, `{"alert": …}` or
 * `{"delivered": "<id>"}`. A torn last line (a crash mid-write) is ignored. The file is rewritten
 * with the pending alerts only at start and after many deliveries (write, sync, rename).
 */
export interface Outbox {
  /** Resolves once the alert is durable in the outbox (delivery follows in the background). */
  add(alert: Alert): Promise<void>;
  /** Alerts not yet delivered. */
  pending(): number;
  /** Stops sending (what is pending stays in the file for the next start). */
  close(): Promise<void>;
}

export interface OutboxOptions {
  dir: string;
  deliver(alert: Alert): Promise<void>;
  backoff: { initialMs: number; maxMs: number };
  logger: Logger;
  onDelivered?(alert: Alert): void;
  onFailure?(alert: Alert): void;
  onPending?(n: number): void;
}

const FILE = 'alerts.jsonl';
/** Delivered marks after which the file is rewritten with the pending alerts only. */
const COMPACT_AFTER = 500;

export async function openOutbox(opts: OutboxOptions): Promise<Outbox> {
  await mkdir(opts.dir, { recursive: true, mode: 0o700 });
  const path = join(opts.dir, FILE);
  const pending = new Map<string, Alert>();
  let marks = 0;
  try {
    const text = await readFile(path, 'utf8');
    for (const line of text.split('\n')) {
      if (!line) continue;
      let rec: { alert?: Alert; delivered?: string };
      try {
        rec = JSON.parse(line) as typeof rec;
      } catch {
        continue;
      }
      if (rec.alert?.id) pending.set(rec.alert.id, rec.alert);
      else if (typeof rec.delivered === 'string') {
        pending.delete(rec.delivered);
        marks++;
      }
    }
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
  }
  let file = await rewrite(path, [...pending.values()]);
  marks = 0;
  let writes: Promise<void> = Promise.resolve();
  let closed = false;
  let timer: NodeJS.Timeout | undefined;
  let running = false;
  let current: Promise<void> | undefined;
  let delay = 0;
  opts.onPending?.(pending.size);

  /** Appends one line durably, in order with the others. */
  function append(rec: object): Promise<void> {
    const next = writes.then(async () => {
      await file.appendFile(`${JSON.stringify(rec)}\n`);
      await file.datasync();
    });
    writes = next.catch(() => undefined);
    return next;
  }

  function schedule(ms: number): void {
    if (closed || running || timer) return;
    timer = setTimeout(() => {
      timer = undefined;
      current = run();
    }, ms);
    timer.unref();
  }

  async function run(): Promise<void> {
    if (closed || running) return;
    running = true;
    try {
      for (const alert of [...pending.values()]) {
        if (closed) return;
        if (!pending.has(alert.id)) continue;
        try {
          await opts.deliver(alert);
        } catch (err) {
          delay = delay === 0 ? opts.backoff.initialMs : Math.min(opts.backoff.maxMs, delay * 2);
          // The receiver's answer is not logged (it is not ours to trust); the alert id and the code are.
          opts.logger.warn({ alert: alert.id, rule: alert.rule, code: (err as { code?: string })?.code ?? (err as Error)?.name, retryMs: delay }, 'alert delivery failed; it will be retried');
          opts.onFailure?.(alert);
          return;
        }
        delay = 0;
        pending.delete(alert.id);
        opts.onDelivered?.(alert);
        opts.onPending?.(pending.size);
        await append({ delivered: alert.id }).catch((err: unknown) => {
          // The mark is lost: the alert is sent again after a restart, under the same id.
          opts.logger.error({ alert: alert.id, code: (err as NodeJS.ErrnoException)?.code }, 'alert outbox: a delivery could not be marked');
        });
        if (++marks >= COMPACT_AFTER) {
          await writes;
          await file.close();
          file = await rewrite(path, [...pending.values()]);
          marks = 0;
        }
      }
    } finally {
      running = false;
      if (pending.size > 0 && !closed) schedule(delay);
    }
  }

  schedule(0);
  return {
    async add(alert) {
      pending.set(alert.id, alert);
      opts.onPending?.(pending.size);
      await append({ alert });
      if (!running && !timer) schedule(0);
    },
    pending: () => pending.size,
    async close() {
      closed = true;
      if (timer) clearTimeout(timer);
      // A delivery under way ends (or times out) first, so that its mark is written.
      await current;
      await writes;
      await file.close();
    },
  };
}

/** Writes the pending alerts to a fresh file (synced, then renamed over the old one) and opens it for appending. */
async function rewrite(path: string, alerts: readonly Alert[]): Promise<FileHandle> {
  const tmp = `${path}.tmp`;
  const h = await open(tmp, 'w', 0o600);
  try {
    await h.writeFile(alerts.map((a) => `${JSON.stringify({ alert: a })}\n`).join(''));
    await h.datasync();
  } finally {
    await h.close();
  }
  await rename(tmp, path);
  await syncDir(join(path, '..'));
  return open(path, 'a', 0o600);
}

async function syncDir(dir: string): Promise<void> {
  const d = await open(dir, 'r');
  try {
    await d.sync();
  } catch {
    // Some file systems refuse to sync a directory; the rename is still atomic.
  } finally {
    await d.close();
  }
}

/** POSTs an alert as JSON to the webhook; rejects unless it answers 2xx in time. */
export function webhookDelivery(cfg: { url: string; headers: Record<string, string>; timeoutMs: number; secret?: string }): (alert: Alert) => Promise<void> {
  return async (alert) => {
    const body = JSON.stringify(alert);
    const headers: Record<string, string> = { 'content-type': 'application/json', 'x-caregate-alert-id': alert.id, ...cfg.headers };
    if (cfg.secret) headers['x-caregate-signature'] = `sha256=${createHmac('sha256', cfg.secret).update(body).digest('hex')}`;
    const res = await fetch(cfg.url, { method: 'POST', headers, body, signal: AbortSignal.timeout(cfg.timeoutMs), redirect: 'error' });
    await res.arrayBuffer().catch(() => undefined);
    if (res.status < 200 || res.status >= 300) throw Object.assign(new Error(`webhook answered HTTP ${res.status}`), { code: `HTTP_${res.status}` });
  };
}
