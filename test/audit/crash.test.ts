import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { spawn } from 'node:child_process';
import { mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import ts from 'typescript';
import { openSpool, readSpoolDir } from '../../src/audit/spool.js';
import { createShipper } from '../../src/audit/shipper.js';
import { startFakeAuditServer, type FakeAuditServer } from './fake-fhir.js';

const root = join(dirname(fileURLToPath(import.meta.url)), '../..');
/** The modules the child needs, transpiled (no type check) into a throwaway ESM tree. */
const MODULES = ['src/audit/spool.ts', 'src/audit/shipper.ts', 'src/audit/build.ts', 'src/audit/build-parts.ts', 'src/audit/codes.ts', 'src/http/errors.ts'];

let work: string;
let server: FakeAuditServer;

beforeAll(async () => {
  work = await mkdtemp(join(tmpdir(), 'caregate-crash-'));
  await writeFile(join(work, 'package.json'), '{"type":"module"}');
  for (const m of MODULES) {
    const out = ts.transpileModule(await readFile(join(root, m), 'utf8'), {
      compilerOptions: { module: ts.ModuleKind.ESNext, target: ts.ScriptTarget.ES2022, verbatimModuleSyntax: true },
    }).outputText;
    const dest = join(work, m.replace(/\.ts$/, '.js'));
    await mkdir(dirname(dest), { recursive: true });
    await writeFile(dest, out);
  }
  server = await startFakeAuditServer();
});

afterAll(async () => {
  await server?.close();
  await rm(work, { recursive: true, force: true });
});

/** Runs the child until it acknowledged at least `minAcks` events, then kills it with SIGKILL. */
function runAndKill(spoolDir: string, tag: string, minAcks: number): Promise<string[]> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [join(root, 'test/audit/crash-child.mjs'), join(work, 'src'), spoolDir, server.baseUrl, tag], {
      stdio: ['ignore', 'pipe', 'inherit'],
    });
    const acked: string[] = [];
    let buf = '';
    let killing = false;
    child.stdout.setEncoding('utf8');
    child.stdout.on('data', (chunk: string) => {
      buf += chunk;
      const lines = buf.split('\n');
      buf = lines.pop()!;
      for (const l of lines) if (l.startsWith('acked ')) acked.push(l.slice(6));
      if (!killing && acked.length >= minAcks) {
        killing = true;
        // Kill at an arbitrary point of the load, not at a quiet moment.
        setTimeout(() => child.kill('SIGKILL'), Math.floor(Math.random() * 20));
      }
    });
    child.on('error', reject);
    // Resolve only after exit (the pid is reaped, so its lock is seen as stale) and the pipe is drained.
    child.on('close', (_code, signal) => {
      if (signal !== 'SIGKILL') reject(new Error(`child ended without being killed (${signal ?? _code})`));
      else resolve(acked);
    });
  });
}

describe('audit: kill -9 under load', () => {
  it('keeps every acknowledged event exactly once in the spool and ships each exactly once', async () => {
    const spoolDir = join(work, 'spool');
    const acked = [...(await runAndKill(spoolDir, 'a', 1000)), ...(await runAndKill(spoolDir, 'b', 1000))];
    expect(acked.length).toBeGreaterThanOrEqual(2000);

    const { events } = await readSpoolDir(spoolDir);
    const ids = events.map((e) => e.id!);
    expect(new Set(ids).size).toBe(ids.length);
    const spooled = new Set(ids);
    const missing = acked.filter((id) => !spooled.has(id));
    expect(missing).toEqual([]);

    // The children were shipping when killed; a restart ships the rest, re-sending at most the
    // batch that was in flight, under the same ids.
    const spool = await openSpool({ dir: spoolDir });
    try {
      await createShipper({ spool, target: { baseUrl: server.baseUrl }, batchSize: 500 }).flush();
      expect(spool.backlog()).toBe(0);
    } finally {
      await spool.close();
    }
    for (const id of spooled) expect(server.store.has(id)).toBe(true);
    expect(server.store.size).toBe(spooled.size);
  });
});

/** Runs ack-kill-child.mjs: one append in `mode`, acknowledged, then SIGKILL. Resolves with what was acknowledged. */
function ackThenKill(spoolDir: string, mode: 'strict' | 'async'): Promise<string[]> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [join(root, 'test/audit/ack-kill-child.mjs'), join(work, 'src'), spoolDir, mode], {
      stdio: ['ignore', 'pipe', 'inherit'],
    });
    let out = '';
    child.stdout.setEncoding('utf8');
    child.stdout.on('data', (chunk: string) => (out += chunk));
    child.on('error', reject);
    child.on('close', (_code, signal) => {
      if (signal !== 'SIGKILL') reject(new Error(`child ended without being killed (${signal ?? _code})`));
      else resolve(out.split('\n').filter((l) => l.startsWith('acked ')).map((l) => l.slice(6)));
    });
  });
}

describe('audit: kill -9 tells strict from async', () => {
  it('keeps a strict event acknowledged just before kill -9, and loses an async one', async () => {
    const strictDir = join(work, 'ack-strict');
    const asyncDir = join(work, 'ack-async');
    expect(await ackThenKill(strictDir, 'strict')).toEqual(['ack-kill-strict']);
    expect(await ackThenKill(asyncDir, 'async')).toEqual(['ack-kill-async']);
    // Strict: acknowledged after fdatasync, so it is on disk. Async: acknowledged before it was
    // even written, so the answer it let go of has no event once the process is killed.
    expect((await readSpoolDir(strictDir)).events.map((e) => e.id)).toEqual(['ack-kill-strict']);
    expect((await readSpoolDir(asyncDir)).events).toEqual([]);
  });
});
