import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { AuditEvent, Bundle } from '@medplum/fhirtypes';
import { startDemoFhir, type DemoFhirServer } from '../../src/demo/server.js';
import { buildAuditEvents } from '../../src/audit/build.js';
import { openSpool, type AuditSpool } from '../../src/audit/spool.js';
import { createShipper, type AuditShipper } from '../../src/audit/shipper.js';
import { loadAuditEvents } from '../../src/audit/review-load.js';
import { startFakeAuditServer, type FakeAuditServer } from './fake-fhir.js';
import { baseInput, interaction, permit } from './fixtures.js';

let dir: string;
let spool: AuditSpool;
let server: FakeAuditServer;
let shippers: AuditShipper[] = [];
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

function events(count: number): AuditEvent[] {
  return Array.from({ length: count }, (_, i) =>
    buildAuditEvents(
      baseInput({ newId: undefined, requestId: `req-${i}`, interaction: interaction('read', { id: `o${i}` }), decision: permit() }),
    ),
  ).flat();
}

function ship(opts: Partial<Parameters<typeof createShipper>[0]> = {}): AuditShipper {
  const s = createShipper({
    spool,
    target: { baseUrl: server.baseUrl, headers: { authorization: 'Bearer service-token' }, timeoutMs: 2000 },
    batchSize: 50,
    intervalMs: 10,
    backoff: { initialMs: 10, maxMs: 40 },
    ...opts,
  });
  shippers.push(s);
  return s;
}

async function until(pred: () => boolean, ms = 5000): Promise<void> {
  const end = Date.now() + ms;
  while (!pred()) {
    if (Date.now() > end) throw new Error('timed out waiting');
    await sleep(5);
  }
}

beforeEach(async () => {
  dir = await mkdtemp(join(tmpdir(), 'caregate-ship-'));
  spool = await openSpool({ dir });
  server = await startFakeAuditServer();
});
afterEach(async () => {
  for (const s of shippers) await s.stop();
  shippers = [];
  await spool.close();
  await server.close();
  await rm(dir, { recursive: true, force: true });
});

describe('audit.shipper', () => {
  it('ships spooled events as transaction Bundles of PUT AuditEvent/<id>, with the target headers', async () => {
    const evs = events(120);
    await spool.append(evs);
    const shipped: number[] = [];
    const backlog: number[] = [];
    const s = ship({ hooks: { onShipped: (n) => shipped.push(n), onBacklog: (n) => backlog.push(n) } });
    expect(await s.flush()).toEqual({ shipped: 120, backlog: 0 });
    expect(server.transactions).toBe(3);
    expect(shipped).toEqual([50, 50, 20]);
    expect(backlog.at(-1)).toBe(0);
    expect([...server.store.keys()].sort()).toEqual(evs.map((e) => e.id).sort());
    expect(server.store.get(evs[0]!.id!)).toEqual(evs[0]);
    expect(server.headersSeen[0]).toMatchObject({ authorization: 'Bearer service-token', 'content-type': 'application/fhir+json' });
    expect(spool.backlog()).toBe(0);
  });

  it('delivers every event exactly once across an outage, with backoff, while new events keep coming', async () => {
    const errors: (string | undefined)[] = [];
    const s = ship({ hooks: { onError: (m) => errors.push(m) } });
    s.start();
    const all: AuditEvent[] = [];
    const load = (async () => {
      for (let i = 0; i < 40; i++) {
        const batch = events(10);
        all.push(...batch);
        await spool.append(batch);
        await sleep(5);
      }
    })();
    await sleep(30);
    server.mode = 'down';
    await sleep(150);
    const duringOutage = server.transactions;
    expect(s.status().consecutiveFailures).toBeGreaterThan(0);
    expect(s.status().lastError).toBe('audit server answered HTTP 503');
    server.mode = 'ok';
    await load;
    await until(() => spool.backlog() === 0 && server.store.size === all.length);
    expect(server.transactions).toBeGreaterThan(duringOutage);
    expect(server.store.size).toBe(400);
    for (const e of all) expect(server.store.has(e.id!)).toBe(true);
    expect(errors).toContain('audit server answered HTTP 503');
    expect(errors.at(-1)).toBeUndefined();
    expect(s.status().lastError).toBeUndefined();
  });

  it('rewrites the same ids when the answer was lost, so a retry creates no duplicate', async () => {
    const evs = events(30);
    await spool.append(evs);
    server.mode = 'drop';
    const s = ship();
    await expect(s.flush()).rejects.toThrow(/unreachable/);
    expect(server.store.size).toBe(30);
    expect(spool.backlog()).toBe(30);
    server.mode = 'ok';
    await s.flush();
    expect(server.store.size).toBe(30);
    expect(Math.max(...server.puts.values())).toBe(2);
    expect(spool.backlog()).toBe(0);
  });

  it('stays below a Bundle size the server refused instead of growing back into it', async () => {
    // medplum refuses transactions of more than 50 updates: growing back to 100 after every
    // success would fail every other shipment and the backoff would throttle shipping.
    server.maxEntries = 50;
    await spool.append(events(1000));
    const s = ship({ batchSize: 200 });
    s.start();
    await until(() => spool.backlog() === 0);
    expect(server.store.size).toBe(1000);
    // 200 refused, 100 refused, then 50 at a time.
    expect(server.tooLarge).toBe(2);
  });

  it('lifts the size ceiling after a while, in case the refusal was about one event', async () => {
    let clock = 0;
    server.maxEntries = 10;
    await spool.append(events(40));
    const s = ship({ batchSize: 40, now: () => clock, ceilingResetMs: 60_000 });
    await expect(s.flush()).rejects.toThrow('HTTP 400');
    await expect(s.flush()).rejects.toThrow('HTTP 400');
    await s.flush();
    expect(server.tooLarge).toBe(2);
    server.maxEntries = Infinity;
    clock = 60_000;
    await spool.append(events(40));
    await s.flush();
    // First shipment at the old ceiling (10) lifts it; then 20, then the last 10.
    expect(server.transactions).toBe(4 + 3);
  });

  it('keeps the events and shrinks the batch when the server rejects a Bundle', async () => {
    await spool.append(events(40));
    server.mode = 'reject';
    const s = ship({ batchSize: 40 });
    await expect(s.flush()).rejects.toThrow('HTTP 400');
    await expect(s.flush()).rejects.toThrow('HTTP 400');
    expect(spool.backlog()).toBe(40);
    server.mode = 'ok';
    await s.flush();
    // 40 rejected → 20 → 10: the next Bundles are small, then grow back.
    expect(server.transactions).toBeGreaterThan(1);
    expect(server.store.size).toBe(40);
  });

  it('does not advance when the server is unreachable, and says so without PHI', async () => {
    await spool.append(events(5));
    const s = createShipper({ spool, target: { baseUrl: 'http://127.0.0.1:1/fhir', timeoutMs: 500 } });
    await expect(s.flush()).rejects.toThrow(/audit server unreachable/);
    expect(spool.backlog()).toBe(5);
    expect(s.status().lastError).toMatch(/^audit server unreachable \(/);
  });

  it('stops promptly while backing off', async () => {
    server.mode = 'down';
    await spool.append(events(3));
    const s = ship({ backoff: { initialMs: 60_000, maxMs: 60_000 } });
    s.start();
    await until(() => s.status().consecutiveFailures > 0);
    const t = Date.now();
    await s.stop();
    expect(Date.now() - t).toBeLessThan(500);
    expect(s.status().running).toBe(false);
  });
});

describe('audit.shipper against the embedded FHIR engine (medplum router)', () => {
  let fhir: DemoFhirServer;
  beforeEach(async () => {
    fhir = await startDemoFhir({ seed: false });
  });
  afterEach(async () => {
    await fhir.close();
  });

  async function storedIds(): Promise<string[]> {
    const ids: string[] = [];
    let url: string | undefined = `${fhir.url}/AuditEvent?_count=1000&_elements=id`;
    while (url) {
      const b = (await (await fetch(url)).json()) as Bundle;
      ids.push(...(b.entry ?? []).map((e) => e.resource!.id!));
      url = b.link?.find((l) => l.relation === 'next')?.url;
    }
    return ids.sort();
  }

  it('creates AuditEvents under their client-assigned ids (update-as-create) and a replay adds none', async () => {
    const evs = events(25);
    await spool.append(evs);
    const s = createShipper({ spool, target: { baseUrl: fhir.url }, batchSize: 10 });
    await s.flush();
    expect(await storedIds()).toEqual(evs.map((e) => e.id).sort());
    const one = (await (await fetch(`${fhir.url}/AuditEvent/${evs[3]!.id}`)).json()) as AuditEvent;
    expect(one.entity).toEqual(evs[3]!.entity);
    expect(one.agent).toEqual(evs[3]!.agent);

    // A replay of the same Bundle (as after a lost answer) leaves the count unchanged.
    const replay: Bundle = {
      resourceType: 'Bundle',
      type: 'transaction',
      entry: evs.slice(0, 10).map((e) => ({ resource: e, request: { method: 'PUT', url: `AuditEvent/${e.id}` } })),
    };
    const res = await fetch(`${fhir.url}/`, { method: 'POST', headers: { 'content-type': 'application/fhir+json' }, body: JSON.stringify(replay) });
    expect(res.status).toBe(200);
    expect(await storedIds()).toHaveLength(25);
  });

  it('lets the review read the shipped trail back by date and patient', async () => {
    const evs = events(12);
    await spool.append(evs);
    await createShipper({ spool, target: { baseUrl: fhir.url } }).flush();
    const found = await loadAuditEvents({ baseUrl: fhir.url }, '2025-03-04T00:00:00Z', '2025-03-04T23:59:59Z');
    expect(found.map((e) => e.id).sort()).toEqual(evs.map((e) => e.id).sort());
    const none = await loadAuditEvents({ baseUrl: fhir.url }, '2025-03-05T00:00:00Z', '2025-03-06T00:00:00Z');
    expect(none).toEqual([]);
    const byPatient = (await (await fetch(`${fhir.url}/AuditEvent?patient=Patient/pat-1&_count=100`)).json()) as Bundle;
    expect(byPatient.entry).toHaveLength(12);
  });
});
