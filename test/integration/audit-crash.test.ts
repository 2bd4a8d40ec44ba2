import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { execFile, execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { closeSync, copyFileSync, existsSync, mkdirSync, mkdtempSync, openSync, readdirSync, rmSync, statfsSync, writeFileSync, writeSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { promisify } from 'node:util';
import type { AuditEvent, Bundle } from '@medplum/fhirtypes';
import { startDemoFhir, type DemoFhirServer } from '../../src/demo/server.js';
import { demoToken } from '../../src/demo/tokens.js';
import { demoIdentityYaml } from '../helpers/stack.js';
import { startFaultUpstream } from '../helpers/fault-upstream.js';
import type { PersonaName } from '../../src/demo/personas.js';

/**
 * Durability end to end, through the proxy: caregate runs as a child process in front of the demo
 * engine, takes a bounded authenticated load, and is killed with SIGKILL in the middle of it. It is
 * restarted on the same spool; once its shipper has flushed, every request that got an answer has
 * its AuditEvent(s) on the FHIR server, and no request is recorded twice.
 */

const ROOT = resolve(import.meta.dirname, '../..');
/**
 * A private build per run (inside the repository, so that the child resolves node_modules): the
 * test never rewrites the dist/ others run, and two runs at once never rewrite each other's files.
 */
const BUILD = join(ROOT, 'node_modules/.cache', `caregate-audit-crash-${process.pid}`);
const REQUESTS = 400;
const CONCURRENCY = 16;
const KILL_AFTER = 150;

let demo: DemoFhirServer;
let dir: string;
let configFile: string;
const children: ChildProcess[] = [];

beforeAll(async () => {
  // Other people's unfinished files may fail the type check; tsc still emits, and the child is what we test.
  await promisify(execFile)(process.execPath, [
    join(ROOT, 'node_modules/typescript/bin/tsc'),
    '-p',
    join(ROOT, 'tsconfig.json'),
    '--outDir',
    BUILD,
  ]).catch(() => undefined);
  if (!existsSync(join(BUILD, 'src/cli.js'))) throw new Error('caregate did not compile');

  dir = mkdtempSync(join(tmpdir(), 'caregate-audit-crash-'));
  demo = await startDemoFhir({ port: 0, host: '127.0.0.1', seed: { seed: 42, patients: 60 } });
  copyFileSync(join(ROOT, 'config/policy.yaml'), join(dir, 'policy.yaml'));
  configFile = join(dir, 'caregate.yaml');
  writeFileSync(
    configFile,
    `
server: { host: 127.0.0.1, port: 0 }
upstream: { url: "${demo.url}", timeoutMs: 5000, lookupTimeoutMs: 5000 }
logging: { level: error }
${demoIdentityYaml(join(dir, 'keys'))}audit: { mode: strict, spoolDir: ${join(dir, 'audit')}, site: crash-test, ship: { intervalMs: 100, batchSize: 100 } }
policy: { file: policy.yaml, watch: false }
`,
  );
}, 90_000);

afterAll(async () => {
  for (const c of children) if (c.exitCode === null && c.signalCode === null) c.kill('SIGKILL');
  await demo?.close();
  if (dir) rmSync(dir, { recursive: true, force: true });
  rmSync(BUILD, { recursive: true, force: true });
});

/** Starts `caregate serve` and resolves with its FHIR base URL once it listens. */
function startGate(config = configFile): Promise<{ child: ChildProcess; url: string }> {
  return new Promise((resolveP, reject) => {
    const child = spawn(process.execPath, [join(BUILD, 'src/cli.js'), 'serve', '--config', config], {
      cwd: ROOT,
      stdio: ['ignore', 'ignore', 'pipe'],
    });
    children.push(child);
    let err = '';
    const timer = setTimeout(() => reject(new Error(`caregate did not start:\n${err}`)), 30_000);
    const onData = (d: Buffer) => {
      err += d.toString();
      const m = /listening on (http:\/\/127\.0\.0\.1:\d+\/fhir)/.exec(err);
      if (m) {
        clearTimeout(timer);
        child.stderr!.off('data', onData);
        child.stderr!.resume();
        resolveP({ child, url: m[1]! });
      }
    };
    child.stderr!.on('data', onData);
    child.on('exit', (code, signal) => {
      clearTimeout(timer);
      reject(new Error(`caregate exited (${code ?? signal}):\n${err}`));
    });
  });
}

/** What each request of the load is, and how many AuditEvents it makes (undefined: one per patient found). */
interface Planned {
  id: string;
  persona: PersonaName | undefined;
  path: string;
  status: number;
  events: number | undefined;
}

function plan(): Planned[] {
  const kinds: Omit<Planned, 'id'>[] = [
    { persona: 'clinician', path: '/Patient/pat-dupont', status: 200, events: 1 },
    { persona: 'surgeon', path: '/Patient/pat-dupont', status: 403, events: 1 },
    { persona: undefined, path: '/Patient/pat-dupont', status: 401, events: 1 },
    { persona: 'dim', path: '/Observation?patient=pat-dupont&_count=5', status: 200, events: 1 },
    { persona: 'clinician', path: '/Observation?_count=10', status: 200, events: undefined },
  ];
  return Array.from({ length: REQUESTS }, (_, i) => ({ id: `crash-${i}`, ...kinds[i % kinds.length]! }));
}

async function allAuditEvents(baseUrl: string): Promise<AuditEvent[]> {
  const out: AuditEvent[] = [];
  let url: string | undefined = `${baseUrl}/AuditEvent?_count=1000`;
  while (url) {
    const b = (await (await fetch(url)).json()) as Bundle<AuditEvent>;
    out.push(...(b.entry ?? []).map((e) => e.resource!));
    url = b.link?.find((l) => l.relation === 'next')?.url;
  }
  return out;
}

const requestIdOf = (e: AuditEvent) => e.entity?.find((en) => en.type?.code === 'XrequestId')?.what?.identifier?.value;
const patientsOf = (e: AuditEvent) =>
  (e.entity ?? [])
    .filter((en) => en.role?.code === '1' && en.what?.reference)
    .map((en) => en.what!.reference!)
    .sort()
    .join(' ');

describe('audit durability through the proxy', () => {
  it('after kill -9 under load and a restart, every answered request has its AuditEvents once on the FHIR server', async () => {
    const keys = join(dir, 'keys');
    const tokens = new Map<PersonaName, string>();
    for (const p of ['clinician', 'surgeon', 'dim'] as const) tokens.set(p, demoToken(p, { dir: keys }));

    const first = await startGate();
    const requests = plan();
    const answered = new Map<string, number>();
    const failed: string[] = [];
    let next = 0;
    let killed = false;
    const worker = async () => {
      while (next < requests.length) {
        const r = requests[next++]!;
        try {
          const res = await fetch(first.url + r.path, {
            headers: { 'x-request-id': r.id, ...(r.persona ? { authorization: `Bearer ${tokens.get(r.persona)}` } : {}) },
          });
          // Headers are sent only after the events are durable: a status line is an answer.
          answered.set(r.id, res.status);
          await res.arrayBuffer().catch(() => undefined);
        } catch {
          failed.push(r.id);
        }
        if (!killed && answered.size >= KILL_AFTER) {
          killed = true;
          setTimeout(() => first.child.kill('SIGKILL'), Math.floor(Math.random() * 20));
        }
      }
    };
    const exited = new Promise<void>((r) => first.child.once('exit', () => r()));
    await Promise.all(Array.from({ length: CONCURRENCY }, worker));
    await exited;
    expect(first.child.signalCode).toBe('SIGKILL');
    // Killed in the middle of the load: some requests were answered, others never were.
    expect(answered.size).toBeGreaterThanOrEqual(KILL_AFTER);
    expect(answered.size).toBeLessThan(REQUESTS);
    for (const r of requests) if (answered.has(r.id)) expect(answered.get(r.id), r.id).toBe(r.status);

    // Restart on the same spool (the dead process's lock is stale) and let the shipper catch up.
    const second = await startGate();
    const wanted = [...answered.keys()];
    let events: AuditEvent[] = [];
    const deadline = Date.now() + 20_000;
    for (;;) {
      events = await allAuditEvents(demo.url);
      const have = new Set(events.map(requestIdOf));
      if (wanted.every((id) => have.has(id)) || Date.now() > deadline) break;
      await new Promise((r) => setTimeout(r, 200));
    }
    const stopped = new Promise<void>((r) => second.child.once('exit', () => r()));
    second.child.kill('SIGTERM');
    await stopped;

    const ids = events.map((e) => e.id!);
    expect(new Set(ids).size).toBe(ids.length);
    const byRequest = new Map<string, AuditEvent[]>();
    for (const e of events) {
      const rid = requestIdOf(e);
      if (rid) byRequest.set(rid, [...(byRequest.get(rid) ?? []), e]);
    }
    const missing = wanted.filter((id) => !byRequest.has(id));
    expect(missing).toEqual([]);
    for (const r of requests) {
      const evs = byRequest.get(r.id) ?? [];
      // No request recorded twice: one event per patient, never two for the same patient.
      const groups = evs.map(patientsOf);
      expect(new Set(groups).size, r.id).toBe(groups.length);
      if (r.events !== undefined) expect(evs.length, r.id).toBeLessThanOrEqual(r.events);
      if (answered.has(r.id) && r.events !== undefined) expect(evs.length, r.id).toBe(r.events);
    }
    const unansweredRecorded = requests.filter((r) => !answered.has(r.id) && byRequest.has(r.id)).length;
    console.info(
      `audit-crash: ${answered.size}/${REQUESTS} answered before kill -9, ${failed.length} failed; ` +
        `${events.length} AuditEvents on the server, all ${answered.size} answered requests present; ` +
        `${unansweredRecorded} unanswered requests recorded (synced, not acknowledged)`,
    );
  }, 60_000);
});

/**
 * The spool under load through the proxy, as a new user would meet it: small segments (64 KiB, a
 * couple of dozen events), the real demo engine as the audit store behind a fault front that can
 * take it down (`audit.ship` only: the clinical upstream stays up), and the spool on a small tmpfs
 * volume of its own (when the test runs as root). Issue 11: kill -9 twice during load, an outage of
 * the audit store longer than one segment's worth of events, and a spool volume that fills up
 * during an outage and comes back once the backlog is shipped. In the end every request answered
 * has exactly one AuditEvent on the server, a request refused because its event could not be
 * written has none, and caregate answered again without a restart.
 */
describe('audit through the proxy: kill -9, a long audit-store outage and a full spool volume', () => {
  const SEGMENT = 64 * 1024;
  const VOLUME = '4m';
  let store: DemoFhirServer;
  let front: Awaited<ReturnType<typeof startFaultUpstream>>;
  let base: string;
  let spoolDir: string;
  let config: string;
  /** Why the full-volume phase cannot run here, if it cannot. */
  let noVolume: string | undefined;
  let mounted = false;

  beforeAll(async () => {
    base = mkdtempSync(join(tmpdir(), 'caregate-audit-e2e-'));
    store = await startDemoFhir({ port: 0, host: '127.0.0.1', seed: { seed: 7, patients: 40 } });
    front = await startFaultUpstream(store.url);
    spoolDir = join(base, 'audit');
    mkdirSync(spoolDir, { mode: 0o700 });
    if (process.platform !== 'linux' || process.getuid?.() !== 0) noVolume = 'not running as root on Linux (the test mounts a tmpfs)';
    else {
      try {
        execFileSync('mount', ['-t', 'tmpfs', '-o', `size=${VOLUME},mode=0700`, 'tmpfs', spoolDir], { stdio: 'pipe' });
        mounted = true;
      } catch (err) {
        noVolume = `mount -t tmpfs failed (${(err as Error).message.split('\n')[0]})`;
      }
    }
    if (noVolume) console.warn(`audit e2e: the full-volume phase is skipped: ${noVolume}`);
    copyFileSync(join(ROOT, 'config/policy.yaml'), join(base, 'policy.yaml'));
    config = join(base, 'caregate.yaml');
    writeFileSync(
      config,
      `
server: { host: 127.0.0.1, port: 0 }
upstream: { url: "${store.url}", timeoutMs: 5000, lookupTimeoutMs: 5000 }
logging: { level: fatal }
${demoIdentityYaml(join(base, 'keys'))}audit:
  mode: strict
  spoolDir: ${spoolDir}
  site: e2e-test
  segmentMaxBytes: ${SEGMENT}
  failureRetryMs: 100
  ship: { target: url, url: "${front.url}", intervalMs: 50, batchSize: 50, backoff: { initialMs: 50, maxMs: 200 } }
policy: { file: policy.yaml, watch: false }
`,
    );
  }, 60_000);

  afterAll(async () => {
    for (const c of children) if (c.exitCode === null && c.signalCode === null) c.kill('SIGKILL');
    await Promise.all(children.map((c) => (c.exitCode === null && c.signalCode === null ? new Promise((r) => c.once('exit', r)) : undefined)));
    await front?.close();
    await store?.close();
    if (mounted) {
      try {
        execFileSync('umount', [spoolDir], { stdio: 'pipe' });
      } catch {
        // Still busy: detach it; it goes away with its last open file.
        execFileSync('umount', ['-l', spoolDir], { stdio: 'pipe' });
      }
    }
    if (base) rmSync(base, { recursive: true, force: true });
  });

  it('records every answered request exactly once through two kill -9, a long outage and a full volume, and recovers by itself', async () => {
    const keys = join(base, 'keys');
    const tokens = new Map<PersonaName, string>();
    for (const p of ['clinician', 'surgeon', 'dim'] as const) tokens.set(p, demoToken(p, { dir: keys }));
    /** Every request makes exactly one AuditEvent (about 5 KiB: a dozen per segment). */
    const kinds: { persona: PersonaName | undefined; path: string; status: number }[] = [
      { persona: 'clinician', path: '/Patient/pat-dupont', status: 200 },
      { persona: 'surgeon', path: '/Patient/pat-dupont', status: 403 },
      { persona: undefined, path: '/Patient/pat-dupont', status: 401 },
      { persona: 'dim', path: '/Observation?patient=pat-dupont&_count=5', status: 200 },
    ];
    const expected = new Map<string, number>();
    /** Answered with their status: each must have its AuditEvent. */
    const answered = new Map<string, number>();
    /** Answered 503 because the spool could not take the event: nothing was disclosed, nothing recorded. */
    const unaudited = new Set<string>();
    /** No answer (the process was killed with the request in flight): its event may or may not exist. */
    const unanswered = new Set<string>();
    let seq = 0;

    /**
     * One budget for the whole scenario (it takes 10-15 s): past it, loads stop and the checks
     * below fail with what went wrong, instead of the test hanging on a spool refusing everything.
     */
    const giveUp = Date.now() + 70_000;
    /** Sends requests, `concurrency` at a time, until `stop()` says so (or the budget is spent). */
    async function load(url: string, concurrency: number, stop: () => boolean): Promise<void> {
      await Promise.all(
        Array.from({ length: concurrency }, async () => {
          while (!stop() && Date.now() < giveUp) {
            const n = seq++;
            const kind = kinds[n % kinds.length]!;
            const id = `e2e-${n}`;
            expected.set(id, kind.status);
            try {
              const res = await fetch(url + kind.path, {
                headers: { 'x-request-id': id, ...(kind.persona ? { authorization: `Bearer ${tokens.get(kind.persona)}` } : {}) },
              });
              const body = await res.text().catch(() => '');
              // The status line left only after the event was durable (or instead of an answer that could not be recorded).
              if (res.status === 503 && body.includes('audit trail cannot be written')) unaudited.add(id);
              else answered.set(id, res.status);
            } catch {
              unanswered.add(id);
            }
          }
        }),
      );
    }

    /** Load until `killAfter` more answers, then kill -9 at an arbitrary point of the load. */
    async function loadAndKill(killAfter: number): Promise<void> {
      const gate = await startGate(config);
      const exited = new Promise<void>((r) => gate.child.once('exit', () => r()));
      const target = answered.size + unaudited.size + killAfter;
      let killed = false;
      await load(gate.url, 12, () => {
        if (!killed && answered.size + unaudited.size >= target) {
          killed = true;
          setTimeout(() => gate.child.kill('SIGKILL'), Math.floor(Math.random() * 20));
        }
        return gate.child.signalCode !== null;
      });
      if (!killed) gate.child.kill('SIGKILL');
      await exited;
      expect(gate.child.signalCode).toBe('SIGKILL');
    }

    /** Waits until the audit store holds an event for every request answered so far. */
    async function shipped(): Promise<AuditEvent[]> {
      for (;;) {
        const events = await allAuditEvents(store.url);
        const have = new Set(events.map(requestIdOf));
        const missing = [...answered.keys()].filter((id) => !have.has(id));
        if (!missing.length) return events;
        if (Date.now() > giveUp) throw new Error(`${missing.length} answered requests still without their AuditEvent on the server`);
        await new Promise((r) => setTimeout(r, 100));
      }
    }

    // 1. kill -9 twice during load; each restart replays the spool.
    await loadAndKill(80);
    await loadAndKill(80);

    // 2. An outage of the audit store longer than several segments' worth of events: requests are
    //    answered (the spool holds them), then the store comes back while the load goes on, so
    //    the shipper deletes segments while the appends open new ones.
    const gate = await startGate(config);
    const sentBeforeOutage = seq;
    front.failWhen(/./);
    await load(gate.url, 12, () => seq - sentBeforeOutage >= 160);
    expect(readdirSync(spoolDir).filter((f) => f.startsWith('spool-')).length, 'segments held by the outage').toBeGreaterThan(2);
    front.failWhen(undefined);
    const sentAfterOutage = seq;
    await load(gate.url, 12, () => seq - sentAfterOutage >= 160);
    expect(unaudited.size).toBe(0);
    await shipped();

    // 3. The spool volume fills up during another outage (other files hold all but half a
    //    segment of it), requests are refused with 503, and once the store is back and the
    //    backlog shipped, the same process answers again.
    if (mounted) {
      const ballast = openSync(join(spoolDir, 'ballast'), 'w');
      try {
        const chunk = Buffer.alloc(16 << 10, 0x61);
        for (;;) {
          const { bavail, bsize } = statfsSync(spoolDir);
          if (bavail * bsize <= SEGMENT / 2) break;
          writeSync(ballast, chunk);
        }
      } finally {
        closeSync(ballast);
      }
      front.failWhen(/./);
      const before = unaudited.size;
      await load(gate.url, 8, () => unaudited.size - before >= 20);
      expect(unaudited.size - before, 'requests refused once the volume was full').toBeGreaterThanOrEqual(20);
      front.failWhen(undefined);
      // No operator, no restart: the shipper drains the backlog, the spool finds room again.
      const recovering = answered.size;
      await load(gate.url, 4, () => answered.size - recovering >= 40);
      expect(answered.size - recovering, 'answers after the volume came back').toBeGreaterThanOrEqual(40);
    }
    expect(gate.child.exitCode).toBeNull();
    expect(gate.child.signalCode).toBeNull();

    const events = (await shipped()).filter((e) => requestIdOf(e)?.startsWith('e2e-'));
    const stopped = new Promise<void>((r) => gate.child.once('exit', () => r()));
    gate.child.kill('SIGTERM');
    await stopped;

    // One for one: no event twice, no request twice, every answered request once, no event for a
    // request refused because it could not be recorded.
    const ids = events.map((e) => e.id!);
    expect(new Set(ids).size).toBe(ids.length);
    const perRequest = new Map<string, number>();
    for (const e of events) perRequest.set(requestIdOf(e)!, (perRequest.get(requestIdOf(e)!) ?? 0) + 1);
    expect([...perRequest].filter(([, count]) => count !== 1)).toEqual([]);
    expect([...answered.keys()].filter((id) => !perRequest.has(id))).toEqual([]);
    expect([...unaudited].filter((id) => perRequest.has(id))).toEqual([]);
    for (const [id, status] of answered) expect(status, id).toBe(expected.get(id));
    const recordedUnanswered = [...unanswered].filter((id) => perRequest.has(id)).length;
    console.info(
      `audit e2e: ${seq} requests, ${answered.size} answered and recorded once each, ${unanswered.size} cut by kill -9 ` +
        `(${recordedUnanswered} of them recorded), ${unaudited.size} refused with 503 while the spool volume was full; ` +
        `${events.length} AuditEvents on the server`,
    );
  }, 90_000);
});
