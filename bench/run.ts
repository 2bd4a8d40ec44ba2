import { spawn, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdtempSync, writeFileSync, readFileSync, copyFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import autocannon from 'autocannon';
import { demoToken, ensureDemoSigningKey } from '../src/demo/tokens.js';
import { runAuditBench } from './audit.js';
import { measureLatency, type LatencyResult } from './latency.js';
import { startBenchRedis, type BenchRedis } from './redis.js';

/**
 * `npm run bench`: the upstream directly, a bare express + http-proxy-middleware passthrough of the
 * same upstream, and caregate, measured in one run on the same requests. Each server runs in its
 * own process; the proxy's CPU time per request is read from /proc, since on 2 cores the upstream's
 * cost masks the proxy's in requests per second. Writes docs/BENCHMARKS.md.
 */

const ROOT = resolve(import.meta.dirname, '../..');
const DURATION = Number(process.env.BENCH_SECONDS ?? 8);
const CONNECTIONS = Number(process.env.BENCH_CONNECTIONS ?? 16);
const PATIENTS = Number(process.env.BENCH_PATIENTS ?? 2000);
/** Rounds of the throughput measures (see main). */
const ROUNDS = Math.max(1, Number(process.env.BENCH_ROUNDS ?? 3));
/** Fixed request rate of the latency measure: well below every server's saturation here. */
const LATENCY_RATE = Number(process.env.BENCH_LATENCY_RATE ?? 400);

interface Proc {
  child: ChildProcess;
  url: string;
}

function start(args: string[], readyPattern: RegExp, env: NodeJS.ProcessEnv = {}): Promise<Proc> {
  return new Promise((resolveP, reject) => {
    const child = spawn(process.execPath, args, { cwd: ROOT, env: { ...process.env, ...env }, stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    const timer = setTimeout(() => reject(new Error(`not ready: ${args.join(' ')}\n${out}`)), 60_000);
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

/** utime + stime of a process in seconds (Linux). */
function cpuSeconds(pid: number): number {
  const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  return (Number(fields[11]) + Number(fields[12])) / 100;
}

interface Result {
  rps: number;
  p50: number;
  p99: number;
  requests: number;
  non2xx: number;
  cpuMsPerReq?: number;
}

async function measure(
  url: string,
  headers: Record<string, string>,
  pid?: number,
  opts: { warm?: boolean; seconds?: number; around?: { start(): Promise<void>; end(): Promise<void> } } = {},
): Promise<Result> {
  // Warm-up: JIT, connection pools, caches.
  if (opts.warm !== false) await autocannon({ url, connections: CONNECTIONS, duration: 2, headers });
  await opts.around?.start();
  const before = pid ? cpuSeconds(pid) : 0;
  const r = await autocannon({ url, connections: CONNECTIONS, duration: opts.seconds ?? DURATION, headers });
  const after = pid ? cpuSeconds(pid) : 0;
  await opts.around?.end();
  const requests = r.requests.total;
  return {
    rps: r.requests.average,
    p50: r.latency.p50,
    p99: r.latency.p99,
    requests,
    non2xx: r.non2xx,
    ...(pid ? { cpuMsPerReq: ((after - before) * 1000) / Math.max(1, requests) } : {}),
  };
}

/** The run of median throughput. */
function medianRun(runs: Result[]): Result {
  return [...runs].sort((a, b) => a.rps - b.rps)[Math.floor((runs.length - 1) / 2)]!;
}

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  return s.length % 2 ? s[(s.length - 1) / 2]! : (s[s.length / 2 - 1]! + s[s.length / 2]!) / 2;
}

/** `0.74 (0.61–0.80)`: the median of the per-round ratios and their range. */
function ratioText(ratios: number[]): string {
  const lo = Math.min(...ratios);
  const hi = Math.max(...ratios);
  return ratios.length > 1 ? `${median(ratios).toFixed(2)} (${lo.toFixed(2)}–${hi.toFixed(2)})` : median(ratios).toFixed(2);
}

async function main() {
  const dir = mkdtempSync(join(tmpdir(), 'caregate-bench-'));
  const procs: ChildProcess[] = [];
  let redis: BenchRedis | undefined;
  try {
    const upstream = await start(['dist/src/cli.js', 'demo-fhir', '--port', '0', '--patients', String(PATIENTS), '--seed', '42'], /(http:\/\/127\.0\.0\.1:\d+\/fhir)/);
    procs.push(upstream.child);
    const passthrough = await start(['dist/bench/passthrough.js', upstream.url, '0'], /"url":"(http:\/\/127\.0\.0\.1:\d+\/fhir)"/);
    procs.push(passthrough.child);

    const keys = join(dir, 'keys');
    const { jwksFile } = ensureDemoSigningKey(keys);
    copyFileSync(join(ROOT, 'config/policy.yaml'), join(dir, 'policy.yaml'));
    writeFileSync(
      join(dir, 'caregate.yaml'),
      readFileSync(join(ROOT, 'config/caregate.yaml'), 'utf8')
        .replace(/url: null.*/, `url: ${upstream.url}`)
        .replace(/port: 8080/, 'port: 0')
        .replace(/level: info/, 'level: warn')
        .replace(/jwksFile: .*/, `jwksFile: ${jwksFile}`)
        .replace(/spoolDir: .*/, `spoolDir: ${join(dir, 'audit')}`),
    );
    const gate = await start(['dist/src/cli.js', 'serve', '--config', join(dir, 'caregate.yaml')], /listening on (http:\/\/127\.0\.0\.1:\d+\/fhir)/);
    procs.push(gate.child);
    // The same caregate, but its AuditEvents are not shipped during the measure (they are still
    // fsync'ed to its spool): what the proxy costs when the audit store is another machine, as a
    // hospital deploys it. On this 2-core machine, shipping to the demo engine costs the engine
    // ~4 ms of CPU per event (validation and indexing of AuditEvent), which the first instance pays.
    writeFileSync(
      join(dir, 'caregate-audit-elsewhere.yaml'),
      readFileSync(join(dir, 'caregate.yaml'), 'utf8')
        .replace(/batchSize: 50.*/, 'intervalMs: 3600000')
        .replace(/spoolDir: .*/, `spoolDir: ${join(dir, 'audit-elsewhere')}`),
    );
    const gate2 = await start(['dist/src/cli.js', 'serve', '--config', join(dir, 'caregate-audit-elsewhere.yaml')], /listening on (http:\/\/127\.0\.0\.1:\d+\/fhir)/);
    procs.push(gate2.child);
    // The same again with its state in Redis (`state: redis`, what several instances run): its
    // warm-cache read is measured against the one above, back to back in each round.
    redis = await startBenchRedis();
    let gate3: Proc | undefined;
    if (redis) {
      procs.push(redis.child);
      writeFileSync(
        join(dir, 'caregate-redis.yaml'),
        `${readFileSync(join(dir, 'caregate-audit-elsewhere.yaml'), 'utf8').replace(/spoolDir: .*/, `spoolDir: ${join(dir, 'audit-redis')}`)}\nstate: { mode: redis, redis: { url: "${redis.url}", keyPrefix: "bench:" } }\n`,
      );
      // Required with state: redis (every instance issues the same contractor pseudonyms).
      const secret = { CAREGATE_PSEUDONYM_SECRET: randomBytes(32).toString('hex') };
      gate3 = await start(['dist/src/cli.js', 'serve', '--config', join(dir, 'caregate-redis.yaml')], /listening on (http:\/\/127\.0\.0\.1:\d+\/fhir)/, secret);
      procs.push(gate3.child);
    } else console.log('redis-server is not installed: the state: redis caregate is not measured');

    const clinician = { authorization: `Bearer ${demoToken('clinician', { dir: keys })}` };
    const dim = { authorization: `Bearer ${demoToken('dim', { dir: keys })}` };
    const scenarios: Array<{ name: string; path: string; auth: Record<string, string> }> = [
      { name: 'read Patient (care set, warm cache)', path: '/Patient/pat-dupont', auth: clinician },
      { name: 'search 10 Observations (narrowed, filtered)', path: '/Observation?_count=10', auth: clinician },
      { name: 'search 100 Observations (narrowed, filtered)', path: '/Observation?_count=100', auth: clinician },
      { name: 'search 100 Patients (DIM, all records)', path: '/Patient?_count=100', auth: dim },
    ];

    const rows: string[] = [];
    const results: Array<{ name: string; direct: Result; pass: Result; gate: Result; gate2: Result; ratios: number[]; returned: number }> = [];
    // Order matters on a shared 2-core machine: the instance that ships its AuditEvents to the demo
    // engine leaves a shipping backlog that loads the engine for a while. So direct, passthrough and
    // the instance whose audit is stored elsewhere are measured first, for every scenario; the
    // shipping instance last.
    //
    // This machine is a VM whose host is shared: from one minute to the next the same code can take
    // twice the CPU time. So the three servers are measured in ROUNDS short rounds, one after the
    // other, and what is compared is each round's pair (caregate and the passthrough measured
    // back to back): the median of the per-round ratios, with their range.
    const early = new Map<string, { direct: Result; pass: Result; g2: Result; ratios: number[] }>();
    const warmRead = scenarios[0]!;
    const shared = { memory: [] as Result[], redis: [] as Result[], commands: 0, requests: 0 };
    for (const s of scenarios) {
      const runs: { direct: Result[]; pass: Result[]; g2: Result[] } = { direct: [], pass: [], g2: [] };
      for (let round = 0; round < ROUNDS; round++) {
        const o = { warm: round === 0, seconds: Math.max(2, Math.round(DURATION / 2)) };
        runs.direct.push(await measure(upstream.url + s.path, {}, upstream.child.pid, o));
        runs.pass.push(await measure(passthrough.url + s.path, s.auth, passthrough.child.pid, o));
        if (!gate3 || !redis || s !== warmRead) {
          runs.g2.push(await measure(gate2.url + s.path, s.auth, gate2.child.pid, o));
          continue;
        }
        // Back to back, in alternating order; the commands Redis processes while the redis
        // instance is measured are counted (warm reads read the local mirror, not Redis).
        const r = redis;
        let before = 0;
        const count = { start: async () => void (before = await r.commands()), end: async () => void (shared.commands += (await r.commands()) - before - 1) };
        const memory = async () => measure(gate2.url + s.path, s.auth, gate2.child.pid, o);
        const inRedis = async () => measure(gate3.url + s.path, s.auth, gate3.child.pid, { ...o, around: count });
        let m: Result;
        let x: Result;
        if (round % 2 === 0) {
          m = await memory();
          x = await inRedis();
        } else {
          x = await inRedis();
          m = await memory();
        }
        runs.g2.push(m);
        shared.memory.push(m);
        shared.redis.push(x);
        shared.requests += x.requests;
      }
      early.set(s.name, {
        direct: medianRun(runs.direct),
        pass: medianRun(runs.pass),
        g2: medianRun(runs.g2),
        ratios: runs.g2.map((g, i) => g.rps / runs.pass[i]!.rps),
      });
    }
    // Added latency, measured where it means something: at a fixed rate below saturation (at
    // saturation, latency is queueing and only mirrors throughput). Open loop, sub-millisecond timing.
    const latency: Array<{ name: string; rate: number; direct: LatencyResult; pass: LatencyResult; gate: LatencyResult }> = [];
    for (const s of scenarios) {
      // Below saturation for all three (half the slowest one's throughput), at most LATENCY_RATE.
      const e = early.get(s.name)!;
      const rate = Math.max(10, Math.min(LATENCY_RATE, Math.floor(Math.min(e.direct.rps, e.pass.rps, e.g2.rps) / 2)));
      const opts = { rate, seconds: DURATION };
      latency.push({
        name: s.name,
        rate,
        direct: await measureLatency(upstream.url + s.path, {}, opts),
        pass: await measureLatency(passthrough.url + s.path, s.auth, opts),
        gate: await measureLatency(gate2.url + s.path, s.auth, opts),
      });
      const l = latency.at(-1)!;
      console.log(
        `latency at ${rate} req/s, ${s.name}: direct p50 ${l.direct.p50} p99 ${l.direct.p99} | passthrough p50 ${l.pass.p50} p99 ${l.pass.p99} | caregate p50 ${l.gate.p50} p99 ${l.gate.p99} (errors ${l.gate.errors})`,
      );
    }

    for (const s of scenarios) {
      const probe = await fetch(gate.url + s.path, { headers: s.auth });
      const body = (await probe.json()) as { entry?: unknown[] };
      const returned = body.entry?.length ?? 1;
      if (probe.status !== 200) throw new Error(`scenario ${s.name}: caregate answered ${probe.status}`);
      const { direct, pass, g2, ratios } = early.get(s.name)!;
      const g = await measure(gate.url + s.path, s.auth, gate.child.pid);
      results.push({ name: s.name, direct, pass, gate: g, gate2: g2, ratios, returned });
      const line = `${s.name.padEnd(40)} entries=${String(returned).padStart(3)} | direct ${direct.rps.toFixed(0).padStart(6)} rps | passthrough ${pass.rps.toFixed(0).padStart(6)} rps p50 ${pass.p50}ms p99 ${pass.p99}ms cpu ${pass.cpuMsPerReq!.toFixed(3)}ms | caregate ${g.rps.toFixed(0).padStart(6)} rps p50 ${g.p50}ms p99 ${g.p99}ms cpu ${g.cpuMsPerReq!.toFixed(3)}ms | caregate/passthrough ${(g.rps / pass.rps).toFixed(2)} caregate/direct ${(g.rps / direct.rps).toFixed(2)} | audit elsewhere ${g2.rps.toFixed(0)} rps p99 ${g2.p99}ms cpu ${g2.cpuMsPerReq!.toFixed(3)}ms ratio ${ratioText(ratios)}`;
      console.log(line);
      rows.push(
        `| ${s.name} | ${returned} | ${direct.rps.toFixed(0)} | ${direct.p50} / ${direct.p99} | ${pass.rps.toFixed(0)} | ${pass.p50} / ${pass.p99} | ${pass.cpuMsPerReq!.toFixed(3)} | ${g.rps.toFixed(0)} | ${g.p50} / ${g.p99} | ${g.cpuMsPerReq!.toFixed(3)} | **${(g.rps / pass.rps).toFixed(2)}** | ${(g.rps / direct.rps).toFixed(2)} | ${g.non2xx} | ${g2.rps.toFixed(0)} | ${g2.p50} / ${g2.p99} | ${g2.cpuMsPerReq!.toFixed(3)} | **${ratioText(ratios)}** | ${g2.p99 - pass.p99} |`,
      );
    }

    // Several instances: the warm read with `state: redis` against `state: memory`.
    let sharedLine = 'not measured (redis-server is not installed)';
    if (shared.redis.length > 0) {
      const ratios = shared.redis.map((x, i) => x.rps / shared.memory[i]!.rps);
      const m = medianRun(shared.memory);
      const x = medianRun(shared.redis);
      sharedLine = `${warmRead.name}: state: redis ${x.rps.toFixed(0)} rps, p50/p99 ${x.p50}/${x.p99} ms, CPU ${x.cpuMsPerReq!.toFixed(3)} ms/req; state: memory ${m.rps.toFixed(0)} rps, p50/p99 ${m.p50}/${m.p99} ms, CPU ${m.cpuMsPerReq!.toFixed(3)} ms/req; redis/memory ${ratioText(ratios)} (target ≥ 0.95 ${median(ratios) >= 0.95 ? '✅' : '❌'}); Redis processed ${shared.commands} commands during ${shared.requests} measured requests (${(shared.commands / Math.max(1, shared.requests)).toFixed(5)} per request: the subscription's heartbeat, no request reads Redis)`;
    }
    console.log(`several instances: ${sharedLine}`);

    // Steady-state care-set lookups per request: read from caregate's own metrics.
    const metrics = await (await fetch(gate.url.replace(/\/fhir$/, '') + '/metrics')).text();
    const lookups = [...metrics.matchAll(/^caregate_lookups_total\{[^}]*\} (\d+)/gm)].reduce((a, m) => a + Number(m[1]), 0);
    const answered = [...metrics.matchAll(/^caregate_requests_total\{[^}]*\} (\d+)/gm)].reduce((a, m) => a + Number(m[1]), 0);
    const lookupsPerRequest = lookups / Math.max(1, answered);
    console.log(`care-set lookups: ${lookups} for ${answered} requests (${lookupsPerRequest.toFixed(5)} per request)`);

    // The strict audit on its own, on the spool's disk (target: ≤ 1 ms added at p50 at 1,000 req/s).
    for (const p of procs) p.kill('SIGTERM');
    const audit = await runAuditBench({ baseDir: join(dir, 'audit-bench') });
    const auditLine = `strict audit: ${audit.eventsPerSec} events/s max; at ${audit.rate} req/s append p50 ${audit.p50Ms} ms, p99 ${audit.p99Ms} ms (target p50 ≤ 1 ms ${audit.p50Ms <= 1 ? '✅' : '❌'}); bare disk fdatasync p50 ${audit.diskSyncP50Ms} ms`;
    console.log(auditLine);

    const mark = (x: number) => (x >= 0.9 ? '✅' : x >= 0.85 ? '≈' : '❌');
    const targets = results.map(
      (r) =>
        `- ${r.name}: caregate/passthrough = ${(r.gate.rps / r.pass.rps).toFixed(2)} ${mark(r.gate.rps / r.pass.rps)}; with the audit store elsewhere ${ratioText(r.ratios)} ${mark(median(r.ratios))} (target ≥ 0.85–0.90); p99 at saturation ${r.gate2.p99 - r.pass.p99 >= 0 ? '+' : ''}${r.gate2.p99 - r.pass.p99} ms (queueing: the ≤ 2 ms target is judged at a fixed rate, above)`,
    );
    const md = `# Benchmarks

Generated by \`npm run bench\` on ${new Date().toISOString().slice(0, 10)} (Node ${process.version}, ${(await import('node:os')).cpus().length} cores).
Each server runs in its own process on this machine: the embedded demo FHIR engine (${PATIENTS} patients),
a bare express + http-proxy-middleware passthrough with the same keep-alive agent, and caregate
(identity, care-set resolution, policy, response filtering, strict fsync'ed audit). autocannon,
${CONNECTIONS} connections, 2 s warm-up. Direct, passthrough and the caregate whose audit store is elsewhere
are measured in ${ROUNDS} rounds of ${Math.max(2, Math.round(DURATION / 2))} s each, one after the other; their columns show the median
round, and "/passthrough" the median of the per-round ratios (range in brackets): the host of this
VM is shared, and the same code can take twice the CPU from one minute to the next. The caregate
that ships to the demo engine is measured once, ${DURATION} s. Latencies in ms. CPU is the server
process's user+system time per request, read from /proc (on this VM it includes time the host
took the CPU away).

| scenario | entries | direct rps | direct p50/p99 | passthrough rps | passthrough p50/p99 | passthrough CPU ms/req | caregate rps | caregate p50/p99 | caregate CPU ms/req | caregate/passthrough | caregate/direct | caregate non-2xx | caregate, audit elsewhere: rps | p50/p99 | CPU ms/req | /passthrough | p99 at saturation, over the passthrough (ms) |
|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|
${rows.join('\n')}

Latency at a fixed request rate, below saturation (half the slowest server's throughput in that
scenario, at most ${LATENCY_RATE}/s; open loop, ${DURATION} s after a 1 s warm-up, each request timed to 0.01 ms;
caregate with its audit store elsewhere, strict fsync'ed spool):

| scenario | rate (req/s) | direct p50 / p90 / p99 | passthrough p50 / p90 / p99 | caregate p50 / p90 / p99 | added by caregate over the passthrough, p50 / p99 |
|---|---|---|---|---|---|
${latency
  .map(
    (l) =>
      `| ${l.name} | ${l.rate} | ${l.direct.p50} / ${l.direct.p90} / ${l.direct.p99} | ${l.pass.p50} / ${l.pass.p90} / ${l.pass.p99} | ${l.gate.p50} / ${l.gate.p90} / ${l.gate.p99} | ${(l.gate.p50 - l.pass.p50).toFixed(2)} / ${(l.gate.p99 - l.pass.p99).toFixed(2)} ${l.gate.p99 - l.pass.p99 <= 2 ? '✅' : '❌'} |`,
  )
  .join('\n')}

Several instances (\`state: redis\`, one local redis-server; the caregate with its audit store elsewhere,
measured back to back with the same caregate in \`state: memory\`, in alternating order, each round):
${sharedLine}.

Care-set lookups to the upstream in steady state: ${lookups} for ${answered} answered requests (${lookupsPerRequest.toFixed(5)} per request; target ≤ 0.01).

${targets.join('\n')}

Audit (\`bench/audit.ts\`, same run): ${auditLine}.

On two cores the upstream, the proxy and autocannon share the CPU: requests per second mostly
measure the upstream. The CPU time per request is the proxy's own cost.
`;
    // The generated part sits between markers; what the team wrote around it is kept.
    const file = join(ROOT, 'docs/BENCHMARKS.md');
    const START = '<!-- bench:start -->';
    const END = '<!-- bench:end -->';
    let previous = '';
    try {
      previous = readFileSync(file, 'utf8');
    } catch {
      previous = '';
    }
    const generated = `${START}\n${md.replace(/^# Benchmarks\n\n/, '')}${END}`;
    const i = previous.indexOf(START);
    const j = previous.indexOf(END);
    writeFileSync(file, i >= 0 && j > i ? previous.slice(0, i) + generated + previous.slice(j + END.length) : `# Benchmarks\n\n${generated}\n`);
    console.log('wrote docs/BENCHMARKS.md');
  } finally {
    redis?.stop();
    for (const p of procs) p.kill('SIGTERM');
    rmSync(dir, { recursive: true, force: true });
  }
}

await main();
