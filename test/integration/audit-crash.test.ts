import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { execFile, spawn, type ChildProcess } from 'node:child_process';
import { copyFileSync, existsSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { promisify } from 'node:util';
import type { AuditEvent, Bundle } from '@medplum/fhirtypes';
import { startDemoFhir, type DemoFhirServer } from '../../src/demo/server.js';
import { demoToken } from '../../src/demo/tokens.js';
import { demoIdentityYaml } from '../helpers/stack.js';
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
function startGate(): Promise<{ child: ChildProcess; url: string }> {
  return new Promise((resolveP, reject) => {
    const child = spawn(process.execPath, [join(BUILD, 'src/cli.js'), 'serve', '--config', configFile], {
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
