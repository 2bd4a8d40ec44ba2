import { mkdir, mkdtemp, open, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import type { AuditInput } from '../src/audit/audit-input.js';
import { buildAuditEvents } from '../src/audit/build.js';
import { openSpool, type AuditSpool } from '../src/audit/spool.js';

/**
 * Audit cost in strict mode: what a request pays to have its AuditEvent built and fsync'ed to the
 * spool before its response is released, at a steady 1,000 requests/s (open loop: appends start on
 * schedule whether or not earlier ones finished), and the most events/s the spool absorbs with many
 * requests in flight. Runs on the real disk (the spool directory), never tmpfs.
 */
export interface AuditBenchResult {
  /** Closed-loop throughput: events made durable per second with `concurrency` appends in flight. */
  eventsPerSec: number;
  /** Latency added by a strict append at `rate` req/s. */
  p50Ms: number;
  p99Ms: number;
  /** The same append with the disk's fdatasync skipped: the spool's own overhead. */
  softwareP50Ms: number;
  /** Building the BALP event(s) of one request. */
  buildP50Us: number;
  /** Requests per fdatasync at `rate` (group commit at work). */
  eventsPerSync: number;
  /** The disk alone: one 2 KiB append + fdatasync at a time, p50 and p99. Strict audit cannot beat this. */
  diskSyncP50Ms: number;
  diskSyncP99Ms: number;
  rate: number;
  requests: number;
}

export interface AuditBenchOptions {
  /** Directory under which a scratch spool is made. Default `var/` (the disk the spool lives on). */
  baseDir?: string;
  /** Steady request rate for the latency phase. Default 1000/s. */
  rate?: number;
  /** Length of the latency phase. Default 5 s. */
  durationMs?: number;
  /** Length of the throughput phase. Default 3 s. */
  throughputMs?: number;
  concurrency?: number;
}

export async function runAuditBench(opts: AuditBenchOptions = {}): Promise<AuditBenchResult> {
  const rate = opts.rate ?? 1000;
  const durationMs = opts.durationMs ?? 5000;
  const throughputMs = opts.throughputMs ?? 3000;
  const concurrency = opts.concurrency ?? 256;
  const baseDir = opts.baseDir ?? 'var';
  await mkdir(baseDir, { recursive: true });
  const dir = await mkdtemp(join(baseDir, 'bench-audit-'));
  const spool = await openSpool({ dir, mode: 'strict' });
  let seq = 0;
  const input = (): AuditInput => ({
    requestId: `bench-${seq++}`,
    recorded: new Date().toISOString(),
    httpStatus: 200,
    clientAddress: '10.1.2.3',
    clientId: 'dpi-web',
    publicBaseUrl: 'https://fhir.chu.example/fhir',
    site: 'bench',
    patients: ['pat-1'],
    principal: {
      kind: 'practitioner',
      method: 'jwt',
      claims: {
        issuer: 'https://idp.example',
        subject: 'user-1',
        idNatPs: '899700000013',
        professionCodes: ['10'],
        roles: ['clinician'],
        groups: [],
        fhirUser: 'Practitioner/p1',
        patientContext: undefined,
        scopes: undefined,
        clientId: 'dpi-web',
        jti: 'jti-1',
        displayName: 'Claire MARTIN',
        expiresAt: undefined,
      },
      certificate: undefined,
      practitioner: 'Practitioner/p1',
      practitionerRoles: [],
      organizations: [],
      roleCodes: [],
      policyRoles: ['clinician'],
    },
    interaction: {
      kind: 'read',
      method: 'GET',
      head: false,
      resourceType: 'Observation',
      id: `obs-${seq}`,
      versionId: undefined,
      operation: undefined,
      operationLevel: undefined,
      compartment: undefined,
      params: [],
      conditional: undefined,
      body: undefined,
      entries: undefined,
      path: `Observation/obs-${seq}`,
      prefer: {},
      format: 'json',
    },
    decision: {
      effect: 'permit',
      reason: 'care-relationship',
      rule: 'care-team',
      message: 'Member of an active care team of the patient',
      evidence: [{ source: 'careteam', reference: 'CareTeam/ct-1' }],
      obligations: [],
      patients: ['pat-1'],
    },
  });

  try {
    const disk = await diskSyncLatency(dir);
    // Warm-up: first segment, JIT.
    await Promise.all(Array.from({ length: 200 }, () => spool.append(buildAuditEvents(input()))));

    // Phase 1: steady rate, open loop, real disk.
    const syncsBefore = spool.stats().syncs;
    const steady = await steadyRate(spool, rate, durationMs, input);
    const syncs = spool.stats().syncs - syncsBefore;

    // The same without the disk's sync: what the spool's own code (queueing, write, wake-ups) costs.
    const noSync = await openSpool({ dir: join(dir, 'nosync'), io: { datasync: async () => undefined } });
    let software: Awaited<ReturnType<typeof steadyRate>>;
    try {
      software = await steadyRate(noSync, rate, Math.min(durationMs, 2000), input);
    } finally {
      await noSync.close();
    }

    // Phase 2: closed loop, many requests in flight.
    let done = 0;
    const end = performance.now() + throughputMs;
    const t1 = performance.now();
    await Promise.all(
      Array.from({ length: concurrency }, async () => {
        while (performance.now() < end) {
          await spool.append(buildAuditEvents(input()));
          done++;
        }
      }),
    );
    const eventsPerSec = Math.round(done / ((performance.now() - t1) / 1000));

    return {
      eventsPerSec,
      p50Ms: round(percentile(steady.latMs, 50)),
      p99Ms: round(percentile(steady.latMs, 99)),
      softwareP50Ms: round(percentile(software.latMs, 50)),
      buildP50Us: round(percentile(steady.buildUs, 50)),
      eventsPerSync: round(steady.latMs.length / Math.max(1, syncs)),
      diskSyncP50Ms: round(percentile(disk, 50)),
      diskSyncP99Ms: round(percentile(disk, 99)),
      rate,
      requests: steady.latMs.length,
    };
  } finally {
    await spool.close();
    await rm(dir, { recursive: true, force: true });
  }
}

/**
 * Open loop: requests start on schedule (`rate` per second) whether or not earlier ones finished;
 * each builds its event(s) and awaits the strict append, as the pipeline does before answering.
 */
async function steadyRate(
  spool: AuditSpool,
  rate: number,
  durationMs: number,
  input: () => AuditInput,
): Promise<{ latMs: number[]; buildUs: number[] }> {
  const total = Math.round((rate * durationMs) / 1000);
  const latMs: number[] = [];
  const buildUs: number[] = [];
  const inflight: Promise<void>[] = [];
  const t0 = performance.now();
  for (let i = 0; i < total; ) {
    const due = Math.min(total, Math.floor(((performance.now() - t0) * rate) / 1000) + 1);
    for (; i < due; i++) {
      const b0 = process.hrtime.bigint();
      const events = buildAuditEvents(input());
      const a0 = process.hrtime.bigint();
      buildUs.push(Number(a0 - b0) / 1e3);
      inflight.push(spool.append(events).then(() => void latMs.push(Number(process.hrtime.bigint() - a0) / 1e6)));
    }
    await new Promise((r) => setTimeout(r, 1));
  }
  await Promise.all(inflight);
  return { latMs, buildUs };
}

/** Latency of the bare disk: sequential 2 KiB appends, each followed by fdatasync. */
async function diskSyncLatency(dir: string): Promise<number[]> {
  const fh = await open(join(dir, 'disk-probe'), 'a');
  const buf = Buffer.alloc(2048, 0x61);
  const out: number[] = [];
  try {
    for (let i = 0; i < 300; i++) {
      const t = process.hrtime.bigint();
      await fh.write(buf);
      await fh.datasync();
      out.push(Number(process.hrtime.bigint() - t) / 1e6);
    }
  } finally {
    await fh.close();
  }
  return out;
}

function percentile(xs: number[], p: number): number {
  if (!xs.length) return 0;
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.ceil((p / 100) * s.length) - 1)]!;
}

function round(x: number): number {
  return Math.round(x * 1000) / 1000;
}

if (process.argv[1] && import.meta.url === pathToFileURL(process.argv[1]).href) {
  const r = await runAuditBench();
  console.log(
    `audit (strict): ${r.eventsPerSec} events/s max; at ${r.rate} req/s: append p50 ${r.p50Ms} ms, p99 ${r.p99Ms} ms, ` +
      `${r.eventsPerSync} events per fdatasync; without the disk sync p50 ${r.softwareP50Ms} ms; building an event ${r.buildP50Us} µs; ` +
      `bare disk append+fdatasync p50 ${r.diskSyncP50Ms} ms, p99 ${r.diskSyncP99Ms} ms`,
  );
  console.log(JSON.stringify(r));
}
