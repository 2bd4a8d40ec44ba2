import { createHmac } from 'node:crypto';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pino } from 'pino';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import type { Alert } from '../../src/oversight/alert.js';
import { openOutbox, webhookDelivery } from '../../src/oversight/outbox.js';
import { startWebhookReceiver, type WebhookReceiver } from '../helpers/webhook.js';

const logger = pino({ level: 'silent' });
const alert = (id: string): Alert => ({
  id,
  rule: 'staff-patient',
  raisedAt: '2026-03-03T09:00:00.000Z',
  site: 'test',
  user: { reference: 'Practitioner/prat-martin' },
  patient: 'Patient/p1',
  count: 1,
  threshold: 1,
  auditEvents: ['ae-1'],
  summary: 'record of a staff member opened',
});

let dir: string;
let hook: WebhookReceiver;
beforeEach(async () => {
  dir = await mkdtemp(join(tmpdir(), 'caregate-outbox-'));
  hook = await startWebhookReceiver();
});
afterEach(async () => {
  await hook.close();
  await rm(dir, { recursive: true, force: true });
});

const deliver = (secret?: string) => webhookDelivery({ url: hook.url, headers: { authorization: 'Bearer hook' }, timeoutMs: 2000, ...(secret ? { secret } : {}) });

describe('the alert outbox', () => {
  it('posts each alert as JSON with its id, its signature and the configured headers', async () => {
    const box = await openOutbox({ dir, deliver: deliver('s3cret'), backoff: { initialMs: 10, maxMs: 50 }, logger });
    await box.add(alert('a1'));
    await hook.waitFor((b) => b.id === 'a1');
    const [{ body, headers }] = hook.received as [WebhookReceiver['received'][number]];
    expect(body).toEqual(alert('a1'));
    expect(headers['x-caregate-alert-id']).toBe('a1');
    expect(headers.authorization).toBe('Bearer hook');
    expect(headers['x-caregate-signature']).toBe(`sha256=${createHmac('sha256', 's3cret').update(JSON.stringify(alert('a1'))).digest('hex')}`);
    await box.close();
  });

  it('retries a failing webhook with backoff until it takes the alert, in order', async () => {
    hook.fail(3);
    const failures: string[] = [];
    const box = await openOutbox({ dir, deliver: deliver(), backoff: { initialMs: 10, maxMs: 40 }, logger, onFailure: (a) => failures.push(a.id) });
    await box.add(alert('a1'));
    await box.add(alert('a2'));
    await hook.waitFor((b) => b.id === 'a2');
    expect(hook.received.map((r) => r.body.id)).toEqual(['a1', 'a2']);
    expect(failures).toEqual(['a1', 'a1', 'a1']);
    expect(box.pending()).toBe(0);
    await box.close();
  });

  it('keeps undelivered alerts on disk and sends them after a restart, never one already delivered', async () => {
    const down = async () => {
      throw Object.assign(new Error('refused'), { code: 'ECONNREFUSED' });
    };
    const first = await openOutbox({ dir, deliver: down, backoff: { initialMs: 10_000, maxMs: 10_000 }, logger });
    await first.add(alert('a1'));
    await first.add(alert('a2'));
    await first.close();
    // A crash in the middle of a line leaves a torn line: it is ignored.
    await writeFile(join(dir, 'alerts.jsonl'), `${await readFile(join(dir, 'alerts.jsonl'), 'utf8')}{"alert":{"id":"torn`);
    const second = await openOutbox({ dir, deliver: deliver(), backoff: { initialMs: 10, maxMs: 40 }, logger });
    expect(second.pending()).toBe(2);
    await hook.waitFor((b) => b.id === 'a2');
    await second.close();
    const third = await openOutbox({ dir, deliver: deliver(), backoff: { initialMs: 10, maxMs: 40 }, logger });
    expect(third.pending()).toBe(0);
    await third.close();
    expect(hook.received.map((r) => r.body.id)).toEqual(['a1', 'a2']);
  });
});
