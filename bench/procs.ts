import { spawn, type ChildProcess } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { resolve } from 'node:path';
import autocannon from 'autocannon';
import { Pool } from 'undici';

/**
 * What every bench module shares: the processes it starts, what /proc says of them, one
 * autocannon measure, and the arithmetic of rounds.
 */

/** The repository root (the bench runs from dist/bench). */
export const ROOT = resolve(import.meta.dirname, '../..');
/** Seconds of one measure (a round is half of it). */
export const DURATION = Number(process.env.BENCH_SECONDS ?? 8);
export const CONNECTIONS = Number(process.env.BENCH_CONNECTIONS ?? 16);
/** Rounds of the interleaved throughput measures. */
export const ROUNDS = Math.max(1, Number(process.env.BENCH_ROUNDS ?? 3));
/** Seconds of one round. */
export const ROUND_SECONDS = Math.max(2, Math.round(DURATION / 2));

export interface Proc {
  child: ChildProcess;
  url: string;
}

/** Starts `node <args>` from the repository root and waits for a line matching `readyPattern` (group 1: its URL). */
export function start(args: string[], readyPattern: RegExp, env: NodeJS.ProcessEnv = {}, nodeArgs: string[] = []): Promise<Proc> {
  return new Promise((resolveP, reject) => {
    const child = spawn(process.execPath, [...nodeArgs, ...args], { cwd: ROOT, env: { ...process.env, ...env }, stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    const timer = setTimeout(() => reject(new Error(`not ready: ${args.join(' ')}\n${out}`)), 120_000);
    const onData = (d: Buffer) => {
      out += d.toString();
      const m = readyPattern.exec(out);
      if (m) {
        clearTimeout(timer);
        // Keep draining the pipes without holding their content.
        child.stdout!.off('data', onData);
        child.stderr!.off('data', onData);
        child.stdout!.resume();
        child.stderr!.resume();
        resolveP({ child, url: m[1]! });
      }
    };
    child.stdout!.on('data', onData);
    child.stderr!.on('data', onData);
    child.on('exit', (code) => reject(new Error(`exited ${code}: ${args.join(' ')}\n${out}`)));
  });
}

/** Children of a process (Linux), e.g. nginx's workers. */
function childrenOf(pid: number): number[] {
  try {
    return readFileSync(`/proc/${pid}/task/${pid}/children`, 'utf8').trim().split(/\s+/).filter(Boolean).map(Number);
  } catch {
    return [];
  }
}

/** utime + stime of a process and its children still running, in seconds (Linux). */
export function cpuSeconds(pid: number): number {
  let total = 0;
  for (const p of [pid, ...childrenOf(pid)]) {
    try {
      const stat = readFileSync(`/proc/${p}/stat`, 'utf8');
      const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
      total += (Number(fields[11]) + Number(fields[12])) / 100;
    } catch {
      // A worker that exited meanwhile.
    }
  }
  return total;
}

/** Resident memory now and at its peak, in MB (VmRSS, VmHWM of /proc/<pid>/status). */
export function memoryMb(pid: number): { rss: number; peak: number } {
  const status = readFileSync(`/proc/${pid}/status`, 'utf8');
  const kb = (name: string) => Number(new RegExp(`^${name}:\\s+(\\d+) kB`, 'm').exec(status)?.[1] ?? NaN);
  return { rss: Math.round(kb('VmRSS') / 102.4) / 10, peak: Math.round(kb('VmHWM') / 102.4) / 10 };
}

export interface Result {
  rps: number;
  p50: number;
  p99: number;
  requests: number;
  non2xx: number;
  /** The measured server's CPU per request (ms). */
  cpuMsPerReq?: number;
  /** The upstream's CPU per request during the same measure (ms), when its pid was given. */
  upstreamCpuMsPerReq?: number;
}

export interface MeasureOptions {
  warm?: boolean;
  seconds?: number;
  /** The upstream's pid: its CPU per request is read too. */
  upstreamPid?: number;
  around?: { start(): Promise<void>; end(): Promise<void> };
}

/** One autocannon measure (after a 2 s warm-up unless `warm: false`), with the server's CPU from /proc. */
export async function measure(url: string, headers: Record<string, string>, pid?: number, opts: MeasureOptions = {}): Promise<Result> {
  // Warm-up: JIT, connection pools, caches.
  if (opts.warm !== false) await autocannon({ url, connections: CONNECTIONS, duration: 2, headers });
  await opts.around?.start();
  const before = pid ? cpuSeconds(pid) : 0;
  const upBefore = opts.upstreamPid ? cpuSeconds(opts.upstreamPid) : 0;
  const r = await autocannon({ url, connections: CONNECTIONS, duration: opts.seconds ?? DURATION, headers });
  const after = pid ? cpuSeconds(pid) : 0;
  const upAfter = opts.upstreamPid ? cpuSeconds(opts.upstreamPid) : 0;
  await opts.around?.end();
  const requests = r.requests.total;
  const perReq = (s: number) => (s * 1000) / Math.max(1, requests);
  return {
    rps: r.requests.average,
    p50: r.latency.p50,
    p99: r.latency.p99,
    requests,
    non2xx: r.non2xx,
    ...(pid ? { cpuMsPerReq: perReq(after - before) } : {}),
    ...(opts.upstreamPid ? { upstreamCpuMsPerReq: perReq(upAfter - upBefore) } : {}),
  };
}

/** The run of median throughput. */
export function medianRun(runs: Result[]): Result {
  return [...runs].sort((a, b) => a.rps - b.rps)[Math.floor((runs.length - 1) / 2)]!;
}

export function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  return s.length % 2 ? s[(s.length - 1) / 2]! : (s[s.length / 2 - 1]! + s[s.length / 2]!) / 2;
}

/** `0.74 (0.61–0.80)`: the median of the per-round ratios and their range. */
export function ratioText(ratios: number[]): string {
  const lo = Math.min(...ratios);
  const hi = Math.max(...ratios);
  return ratios.length > 1 ? `${median(ratios).toFixed(2)} (${lo.toFixed(2)}–${hi.toFixed(2)})` : median(ratios).toFixed(2);
}

/** ✅ when `x` meets a target of at least `target` (≈ within 5 %), ❌ otherwise. */
export function atLeast(x: number, target: number): string {
  return x >= target ? '✅' : x >= target * 0.95 ? '≈' : '❌';
}

/** Sum of a Prometheus counter's samples whose labels match `labels` (a substring of the label set). */
export function metricSum(text: string, name: string, labels = ''): number {
  let sum = 0;
  for (const m of text.matchAll(new RegExp(`^${name}\\{([^}]*)\\} ([0-9.e+-]+)$`, 'gm'))) {
    if (m[1]!.includes(labels)) sum += Number(m[2]);
  }
  return sum;
}

/** caregate's /metrics text. */
export async function scrape(gateUrl: string): Promise<string> {
  return (await fetch(gateUrl.replace(/\/fhir$/, '') + '/metrics')).text();
}

/** A server measured in rounds: its URL base, the headers it is sent, and its process. */
export interface Target {
  key: string;
  base: string;
  headers: Record<string, string>;
  pid: number;
  around?: MeasureOptions['around'];
}

/**
 * `rounds` rounds of `seconds` each, every target measured one after the other within a round
 * (the first round after a warm-up). On this shared VM the same code can take twice the CPU from
 * one minute to the next: what is compared is each round's pair, measured back to back.
 * `targets` may depend on the round (to alternate an order).
 */
export async function measureRounds(
  targets: Target[] | ((round: number) => Target[]),
  path: string,
  opts: { upstreamPid?: number; rounds?: number; seconds?: number } = {},
): Promise<Record<string, Result[]>> {
  const out: Record<string, Result[]> = {};
  for (let round = 0; round < (opts.rounds ?? ROUNDS); round++) {
    for (const t of typeof targets === 'function' ? targets(round) : targets) {
      const r = await measure(t.base + path, t.headers, t.pid, {
        warm: round === 0,
        seconds: opts.seconds ?? ROUND_SECONDS,
        ...(opts.upstreamPid && opts.upstreamPid !== t.pid ? { upstreamPid: opts.upstreamPid } : {}),
        ...(t.around ? { around: t.around } : {}),
      });
      (out[t.key] ??= []).push(r);
    }
  }
  return out;
}

/** Per-round ratios a ÷ b of requests per second. */
export function ratios(a: Result[], b: Result[]): number[] {
  return a.map((x, i) => x.rps / b[i]!.rps);
}

/**
 * A closed-loop measure that lasts at least `seconds` and `minRequests` requests: what a heavy
 * request needs (a 1,000-entry DIM search answers a few times a second here, too few for a CPU
 * figure in a fixed short time). The server's and the upstream's CPU per request from /proc.
 */
export async function measureAtLeast(
  url: string,
  headers: Record<string, string>,
  pid: number,
  opts: { seconds: number; minRequests: number; upstreamPid?: number },
): Promise<Result> {
  const u = new URL(url);
  const pool = new Pool(u.origin, { connections: CONNECTIONS, pipelining: 1 });
  const path = u.pathname + u.search;
  let requests = 0;
  let non2xx = 0;
  const latencies: number[] = [];
  const before = { cpu: cpuSeconds(pid), up: opts.upstreamPid ? cpuSeconds(opts.upstreamPid) : 0 };
  const t0 = performance.now();
  const worker = async () => {
    while (performance.now() - t0 < opts.seconds * 1000 || requests < opts.minRequests) {
      requests++;
      const t = performance.now();
      const r = await pool.request({ method: 'GET', path, headers });
      await r.body.arrayBuffer();
      if (r.statusCode < 200 || r.statusCode >= 300) non2xx++;
      latencies.push(performance.now() - t);
    }
  };
  try {
    await Promise.all(Array.from({ length: CONNECTIONS }, worker));
  } finally {
    await pool.close();
  }
  const seconds = (performance.now() - t0) / 1000;
  const perReq = (s: number) => (s * 1000) / requests;
  latencies.sort((a, b) => a - b);
  const q = (p: number) => Math.round(latencies[Math.min(latencies.length - 1, Math.floor(p * latencies.length))]!);
  return {
    rps: requests / seconds,
    p50: q(0.5),
    p99: q(0.99),
    requests,
    non2xx,
    cpuMsPerReq: perReq(cpuSeconds(pid) - before.cpu),
    ...(opts.upstreamPid ? { upstreamCpuMsPerReq: perReq(cpuSeconds(opts.upstreamPid) - before.up) } : {}),
  };
}
