import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import type { CareSetMeasure } from './caresets.js';
import { drive } from './drive.js';
import type { BenchUser } from './population.js';
import { cpuSeconds, measureAtLeast, measureRounds, median, memoryMb, metricSum, ROOT, scrape, type Proc, type Result, type Target } from './procs.js';
import type { Servers } from './realistic.js';
import { lineChart } from './svg.js';

/**
 * The cost curves of issue 16, each a table and an SVG in docs/: caregate's CPU per request
 * against the size of the caller's care set, against the size of the Bundle it answers, and
 * against the number of distinct users over a run (cache hit rates and memory). Flat per-patient
 * and per-entry costs and a bounded memory are the goal; a curve growing faster than linearly is
 * flagged.
 */

const CURVE_ROUNDS = Math.max(1, Number(process.env.BENCH_CURVE_ROUNDS ?? 2));
const CURVE_SECONDS = Math.max(2, Number(process.env.BENCH_CURVE_SECONDS ?? 4));
/** Requests of a distinct-users run when there are fewer users than this. */
const USERS_MIN_REQUESTS = Number(process.env.BENCH_USERS_MIN_REQUESTS ?? 20_000);
/**
 * The bound caregate's resident memory must stay under after the largest distinct-users run, with
 * the default cache sizes (docs/BENCHMARKS.md, "Memory": what it is made of, and the settings).
 */
const RSS_BOUND_MB = Number(process.env.BENCH_RSS_BOUND_MB ?? 768);

const ms = (x: number | undefined) => (x === undefined || !Number.isFinite(x) ? '–' : x.toFixed(3));
const cpuOf = (runs: Result[]) => median(runs.map((r) => r.cpuMsPerReq ?? NaN));
const upOf = (runs: Result[]) => median(runs.map((r) => r.upstreamCpuMsPerReq ?? NaN));

function svg(name: string, content: string): string {
  writeFileSync(join(ROOT, 'docs', name), content);
  return name;
}

/**
 * Faster than linear: from one point to the next, the cost grows more than 1.5 times as much as the
 * size (a linear cost, fixed part included, grows at most as much as the size; the half is this
 * machine's noise).
 */
function superlinear(points: ReadonlyArray<readonly [number, number]>): boolean {
  for (let i = 1; i < points.length; i++) {
    const [xa, ya] = points[i - 1]!;
    const [xb, yb] = points[i]!;
    if (ya > 0 && yb / ya > (1.5 * xb) / xa) return true;
  }
  return false;
}

const flag = (name: string, points: ReadonlyArray<readonly [number, number]>) =>
  superlinear(points) ? `⚠️ ${name} grows faster than linearly` : `${name}: no faster-than-linear growth`;

export interface CurveInput {
  servers: Servers;
  /** Care-set size → a bench user whose set (through CareTeams) holds that many patients. */
  careSetUsers: ReadonlyMap<number, BenchUser>;
  /** Resolution measures of the same users, through CareTeams and through Encounters. */
  resolution: { careteam: readonly CareSetMeasure[]; encounter: readonly CareSetMeasure[] };
  dim: Record<string, string>;
  mint: (u: BenchUser) => string;
  /** The crowd of the distinct-users run, and how many of them each run uses. */
  crowd: readonly BenchUser[];
  userCounts: readonly number[];
  /** A fresh caregate (audit elsewhere), for each distinct-users run; stopped by the caller's `stop`. */
  freshGate(): Promise<Proc>;
  stop(p: Proc): void;
}

async function careSetCurve(c: CurveInput): Promise<string> {
  const sizes = [...c.careSetUsers.keys()].sort((a, b) => a - b);
  const patient = c.careSetUsers.get(sizes[0]!)!.patients[0]!;
  const paths = { one: `/Observation?patient=${patient}`, all: '/Observation?_count=100' };
  const s = c.servers;
  const pass: Target = { key: 'pass', base: s.passthrough.url, headers: {}, pid: s.passthrough.child.pid! };
  const gate = (size: number): Target => ({
    key: String(size),
    base: s.gate.url,
    headers: { authorization: `Bearer ${c.mint(c.careSetUsers.get(size)!)}` },
    pid: s.gate.child.pid!,
  });
  const opts = { upstreamPid: s.upstream.child.pid!, rounds: CURVE_ROUNDS, seconds: CURVE_SECONDS };
  // Every size measured in each round (the spread of one round lands on all of them alike).
  const one = await measureRounds([pass, ...sizes.map(gate)], paths.one, opts);
  const all = await measureRounds([pass, ...sizes.map(gate)], paths.all, opts);
  const rows: string[] = [];
  const series = { one: [] as [number, number][], all: [] as [number, number][], allTotal: [] as [number, number][], resolve: [] as [number, number][] };
  for (const size of sizes) {
    const ct = c.resolution.careteam.find((m) => m.patients === size);
    const en = c.resolution.encounter.find((m) => m.patients === size);
    const o = one[String(size)]!;
    const a = all[String(size)]!;
    series.one.push([size, cpuOf(o)]);
    series.all.push([size, cpuOf(a)]);
    series.allTotal.push([size, cpuOf(a) + upOf(a)]);
    if (ct) series.resolve.push([size, ct.medianMs]);
    rows.push(
      `| ${size} | ${ct ? `${ct.medianMs} / ${ct.lookups}` : '–'} | ${en ? `${en.medianMs} / ${en.lookups}` : '–'} | ${ct ? (ct.bytes / 1024).toFixed(1) : '–'} | ${ms(cpuOf(o))} / ${ms(upOf(o))} | ${ms(cpuOf(a))} / ${ms(upOf(a))} |`,
    );
  }
  const passOne = [cpuOf(one.pass!), upOf(one.pass!)];
  const passAll = [cpuOf(all.pass!), upOf(all.pass!)];
  const file = svg(
    'bench-careset.svg',
    lineChart({
      title: 'CPU per request against care-set size',
      xLabel: 'patients in the care set',
      yLabel: 'CPU ms per request',
      logX: true,
      series: [
        { name: 'caregate, patient=', points: series.one },
        { name: 'caregate, _count=100', points: series.all },
        { name: '+ upstream, _count=100', points: series.allTotal },
        { name: 'passthrough, patient=', points: sizes.map((x) => [x, passOne[0]!] as const), dashed: true },
        { name: 'passthrough, _count=100', points: sizes.map((x) => [x, passAll[0]!] as const), dashed: true },
      ],
    }),
  );
  return `![CPU per request against care-set size](${file})

| care set (patients) | resolution through CareTeams: ms / lookups | through Encounters: ms / lookups | one cached set (KB) | \`${paths.one.slice(1)}\`: caregate CPU / upstream CPU (ms/req) | \`${paths.all.slice(1)}\`: caregate CPU / upstream CPU (ms/req) |
|---|---|---|---|---|---|
${rows.join('\n')}
| passthrough (any user) | – | – | – | ${ms(passOne[0])} / ${ms(passOne[1])} | ${ms(passAll[0])} / ${ms(passAll[1])} |

Users created on the upstream before the run, each the participant of one active CareTeam per patient (and a twin
whose set comes from in-progress Encounters, for the resolution column); tokens from the demo issuer. Resolution:
caregate's resolver run in the bench process against the upstream, median of 10 fresh resolutions (the upstream's
time included), and the heap one cached set holds. CPU per request: median of ${CURVE_ROUNDS} rounds of ${CURVE_SECONDS} s, warm caches.
${[flag('caregate CPU, patient=', series.one), flag('caregate CPU, _count=100', series.all), flag('caregate + upstream CPU, _count=100', series.allTotal), flag('resolution time', series.resolve)].map((l) => `- ${l}`).join('\n')}`;
}

async function bundleCurve(c: CurveInput): Promise<string> {
  const s = c.servers;
  const sizes = [10, 100, 1000];
  const kinds = [
    { name: 'DIM Patient', path: (n: number) => `/Patient?_count=${n}` },
    { name: 'DIM Observation', path: (n: number) => `/Observation?_count=${n}` },
  ];
  const rows: string[] = [];
  const series: { name: string; points: [number, number][]; dashed?: boolean }[] = [];
  const flags: string[] = [];
  for (const k of kinds) {
    const gatePoints: [number, number][] = [];
    const passPoints: [number, number][] = [];
    for (const n of sizes) {
      const probe = await fetch(s.gate.url + k.path(n), { headers: c.dim });
      const entries = ((await probe.json()) as { entry?: unknown[] }).entry?.length ?? 0;
      // At least 40 requests a point: a 1,000-entry answer takes caregate tens of milliseconds.
      const runs = { pass: [] as Result[], gate: [] as Result[] };
      const opts = { seconds: CURVE_SECONDS, minRequests: 40, upstreamPid: s.upstream.child.pid! };
      await measureAtLeast(s.gate.url + k.path(n), c.dim, s.gate.child.pid!, { ...opts, seconds: 1, minRequests: 16 });
      for (let round = 0; round < CURVE_ROUNDS; round++) {
        runs.pass.push(await measureAtLeast(s.passthrough.url + k.path(n), c.dim, s.passthrough.child.pid!, opts));
        runs.gate.push(await measureAtLeast(s.gate.url + k.path(n), c.dim, s.gate.child.pid!, opts));
      }
      const g = cpuOf(runs.gate);
      const p = cpuOf(runs.pass);
      gatePoints.push([entries, (g / entries) * 1000]);
      passPoints.push([entries, (p / entries) * 1000]);
      rows.push(`| ${k.name} | ${n} | ${entries} | ${ms(g)} | ${((g / entries) * 1000).toFixed(1)} | ${ms(upOf(runs.gate))} | ${ms(p)} | ${((p / entries) * 1000).toFixed(1)} | ${runs.gate.map((r) => r.requests).reduce((a, b) => a + b, 0)} |`);
    }
    series.push({ name: `caregate, ${k.name}`, points: gatePoints }, { name: `passthrough, ${k.name}`, points: passPoints, dashed: true });
    flags.push(flag(`caregate CPU, ${k.name}`, gatePoints.map(([x, y]) => [x, (y * x) / 1000] as const)));
  }
  const file = svg(
    'bench-bundle.svg',
    lineChart({ title: 'CPU per Bundle entry against Bundle size (DIM)', xLabel: 'entries in the answer', yLabel: 'CPU µs per entry', logX: true, logY: true, series }),
  );
  return `![CPU per entry against Bundle size](${file})

| search | _count | entries | caregate CPU ms/req | caregate µs/entry | upstream CPU ms/req (caregate's) | passthrough CPU ms/req | passthrough µs/entry | caregate requests measured |
|---|---|---|---|---|---|---|---|---|
${rows.join('\n')}

The DIM (all records, one AuditEvent per patient shown, strict fsync'ed audit), passthrough and caregate measured back
to back, median of ${CURVE_ROUNDS} rounds of at least ${CURVE_SECONDS} s and 40 requests each (16 connections, closed loop).
${flags.map((l) => `- ${l}`).join('\n')}`;
}

async function usersCurve(c: CurveInput): Promise<string> {
  const rows: string[] = [];
  const rss: [number, number][] = [];
  const peak: [number, number][] = [];
  const cpu: [number, number][] = [];
  const upCpu: [number, number][] = [];
  for (const n of c.userCounts) {
    if (n > c.crowd.length) throw new Error(`${n} users asked, ${c.crowd.length} created`);
    // Tokens minted before the run: signing is not the proxy's cost.
    const tokens = c.crowd.slice(0, n).map((u) => `Bearer ${c.mint(u)}`);
    const gate = await c.freshGate();
    try {
      const pid = gate.child.pid!;
      const upPid = c.servers.upstream.child.pid!;
      const total = Math.max(n, USERS_MIN_REQUESTS);
      const before = { gate: cpuSeconds(pid), up: cpuSeconds(upPid) };
      // Its memory is sampled during the run: a caregate that dies (out of memory) is reported, not lost.
      let last = memoryMb(pid);
      const sampler = setInterval(() => {
        try {
          last = memoryMb(pid);
        } catch {
          // gone: `last` holds its final reading
        }
      }, 1000);
      let exited: string | undefined;
      gate.child.once('exit', (code, signal) => void (exited = signal ?? `code ${code}`));
      const r = await drive(gate.url, total, (i) => ({ path: `/Patient/${c.crowd[i % n]!.patients[0]}`, headers: { authorization: tokens[i % n]! } })).finally(() => clearInterval(sampler));
      if (exited) {
        console.log(`distinct users ${n}: caregate exited (${exited}) during the run, RSS ${last.rss} MB at its last reading`);
        rows.push(`| ${n} | ${total} | – | – | – | – | – | – | – | – | ${last.rss} / ${last.peak} (then exited: ${exited}) | ${Object.entries(r.statuses).map(([st, k]) => `${k} × ${st}`).join(', ')} |`);
        rss.push([n, last.rss]);
        peak.push([n, last.peak]);
        continue;
      }
      const after = { gate: cpuSeconds(pid), up: cpuSeconds(upPid) };
      const mem = memoryMb(pid);
      const metrics = await scrape(gate.url);
      const rate = (cache: string) => {
        const hit = metricSum(metrics, 'caregate_cache_lookups_total', `cache="${cache}",result="hit"`);
        const miss = metricSum(metrics, 'caregate_cache_lookups_total', `cache="${cache}",result="miss"`);
        return `${((100 * hit) / Math.max(1, hit + miss)).toFixed(1)} %`;
      };
      const entries = (cache: string) => metricSum(metrics, 'caregate_cache_entries', `cache="${cache}"`);
      const gateMs = ((after.gate - before.gate) * 1000) / total;
      const upMs = ((after.up - before.up) * 1000) / total;
      const failed = Object.entries(r.statuses).filter(([st]) => st !== '200').map(([st, k]) => `${k} × ${st}`).join(', ') || '0';
      console.log(`distinct users ${n}: ${total} requests in ${r.seconds.toFixed(1)} s, caregate ${gateMs.toFixed(3)} ms/req, upstream ${upMs.toFixed(3)} ms/req, RSS ${mem.rss} MB (peak ${mem.peak}), non-200: ${failed}`);
      rows.push(
        `| ${n} | ${total} | ${(total / r.seconds).toFixed(0)} | ${gateMs.toFixed(3)} | ${upMs.toFixed(3)} | ${rate('token')} | ${rate('principal')} | ${rate('careset')} | ${entries('token')} / ${entries('principal')} / ${entries('careset')} | ${entries('careset-members')} | ${mem.rss} / ${mem.peak} | ${failed} |`,
      );
      rss.push([n, mem.rss]);
      peak.push([n, mem.peak]);
      cpu.push([n, gateMs]);
      upCpu.push([n, upMs]);
    } finally {
      c.stop(gate);
    }
  }
  const memFile = svg(
    'bench-users-memory.svg',
    lineChart({ title: 'caregate memory against distinct users in a run', xLabel: 'distinct users (tokens)', yLabel: 'MB', logX: true, series: [{ name: 'RSS at the end', points: rss }, { name: 'peak RSS', points: peak, dashed: true }] }),
  );
  const cpuFile = svg(
    'bench-users-cpu.svg',
    lineChart({ title: 'CPU per request against distinct users in a run', xLabel: 'distinct users (tokens)', yLabel: 'CPU ms per request', logX: true, series: [{ name: 'caregate', points: cpu }, { name: 'upstream', points: upCpu, dashed: true }] }),
  );
  return `![caregate memory against distinct users](${memFile}) ![CPU per request against distinct users](${cpuFile})

| distinct users | requests | req/s | caregate CPU ms/req | upstream CPU ms/req | verified-token cache hits | principal cache hits | care-set cache hits | entries held: tokens / principals / care sets | care-set member index entries | caregate RSS / peak (MB) | non-200 |
|---|---|---|---|---|---|---|---|---|---|---|---|
${rows.join('\n')}

Each run is a fresh caregate (audit store elsewhere, strict audit, default caches), ${USERS_MIN_REQUESTS} requests or one per user if
more, 16 connections, users in turn: request *i* is user *i* mod *n* reading the patient of their care set (one
patient, a CareTeam of ten users each). Hit rates and entries from caregate's \`/metrics\`
(\`caregate_cache_lookups_total\`, \`caregate_cache_entries\`); RSS from /proc (VmRSS, VmHWM).
- ${flag('caregate CPU per request', cpu)}; ${flag('RSS', rss)}
- RSS after ${rss.at(-1)?.[0]} distinct users: ${rss.at(-1)?.[1]} MB, peak ${peak.at(-1)?.[1]} MB (bound ${RSS_BOUND_MB} MB ${(peak.at(-1)?.[1] ?? Infinity) <= RSS_BOUND_MB ? '✅' : '❌'})`;
}

/** The three curves; their SVGs are written into docs/, their tables returned as markdown. */
export async function runCurves(c: CurveInput): Promise<string> {
  const careSet = await careSetCurve(c);
  const bundle = await bundleCurve(c);
  const users = c.userCounts.length > 0 ? await usersCurve(c) : 'Not measured (BENCH_USERS is empty).';
  return `### Against the size of the care set

${careSet}

### Against the size of the Bundle

${bundle}

### Against the number of distinct users

${users}`;
}
