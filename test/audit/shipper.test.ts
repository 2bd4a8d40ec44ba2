import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { AuditEvent, Bundle } from '@medplum/fhirtypes';
import { FhirRouter, MemoryRepository } from '@medplum/fhir-router';
import { buildAuditEvents } from '../../src/audit/build.js';
import { openSpool, type AuditSpool } from '../../src/audit/spool.js';
import { createShipper, type AuditShipper } from '../../src/audit/shipper.js';
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

describe('audit.shipper against the medplum FHIR engine', () => {
  let engine: Server;
  let repo: MemoryRepository;
  let engineUrl: string;

  beforeEach(async () => {
    // A minimal HTTP face on @medplum/fhir-router (the demo engine's router and repository).
    repo = new MemoryRepository();
    const router = new FhirRouter();
    engine = createServer((req, res) => {
      const chunks: Buffer[] = [];
      req.on('data', (c: Buffer) => chunks.push(c));
      req.on('end', async () => {
        const url = (req.url ?? '/').replace(/^\/fhir/, '') || '/';
        const body = chunks.length ? JSON.parse(Buffer.concat(chunks).toString('utf8')) : undefined;
        const [outcome, resource] = await router.handleRequest(
          { method: req.method as 'POST', url, pathname: '', params: {}, query: {}, body },
          repo,
        );
        const ok = outcome.issue?.every((i) => i.severity !== 'error');
        res.writeHead(ok ? 200 : 400, { 'content-type': 'application/fhir+json' }).end(JSON.stringify(resource ?? outcome));
      });
    });
    await new Promise<void>((r) => engine.listen(0, '127.0.0.1', r));
    engineUrl = `http://127.0.0.1:${(engine.address() as AddressInfo).port}/fhir`;
  });
  afterEach(async () => {
    await new Promise<void>((r) => engine.close(() => r()));
  });

  it('creates AuditEvents under their client-assigned ids (update-as-create) and a retry adds none', async () => {
    const evs = events(25);
    await spool.append(evs);
    const s = createShipper({ spool, target: { baseUrl: engineUrl }, batchSize: 10 });
    await s.flush();
    const stored = await repo.search({ resourceType: 'AuditEvent', count: 1000 });
    expect(stored.entry?.map((e) => e.resource!.id).sort()).toEqual(evs.map((e) => e.id).sort());
    const one = await repo.readResource<AuditEvent>('AuditEvent', evs[3]!.id!);
    expect(one.entity).toEqual(evs[3]!.entity);

    // A replay of the same Bundle (as after a lost answer) leaves the count unchanged.
    const replay: Bundle = {
      resourceType: 'Bundle',
      type: 'transaction',
      entry: evs.slice(0, 10).map((e) => ({ resource: e, request: { method: 'PUT', url: `AuditEvent/${e.id}` } })),
    };
    const res = await fetch(`${engineUrl}/`, { method: 'POST', headers: { 'content-type': 'application/fhir+json' }, body: JSON.stringify(replay) });
    expect(res.status).toBe(200);
    const after = await repo.search({ resourceType: 'AuditEvent', count: 1000 });
    expect(after.entry).toHaveLength(25);
  });
});
