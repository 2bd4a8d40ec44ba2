import type { Bundle } from '@medplum/fhirtypes';
import type { BenchNginx } from './nginx.js';
import { atLeast, measureRounds, median, medianRun, ratios, ratioText, type Proc, type Result, type Target } from './procs.js';

/**
 * The scenarios of issue 16 with the care sets a hospital's clinicians have: a ward physician's
 * (the demo's Dr Martin, about 130 patients), an emergency physician's (Dr Roux, several hundred)
 * and a 1,000-patient set (a bench user). Each is measured on the upstream directly, through the
 * express passthrough, through nginx when installed, and through caregate (audit store elsewhere),
 * in interleaved rounds; the upstream's own CPU per request is read in each, since caregate asks
 * it a different (narrowed) question than the passthroughs relay.
 */

export interface Servers {
  upstream: Proc;
  passthrough: Proc;
  nginx: BenchNginx | undefined;
  /** caregate whose audit store is elsewhere (its events are spooled, not shipped, during the measure). */
  gate: Proc;
}

export interface RealisticScenario {
  name: string;
  path: string;
  auth: Record<string, string>;
  /** Patients in the caller's care set. */
  careSet: number;
  /** Target ratio to the passthrough (issue 16). */
  target: number;
  /** What the search names, against the care set and `search.narrowMaxPatients`. */
  upstreamQuery: string;
}

export interface Measured {
  direct: Result;
  pass: Result;
  nginx: Result | undefined;
  gate: Result;
  /** caregate ÷ passthrough per round. */
  ratios: number[];
  /** caregate ÷ nginx per round. */
  nginxRatios: number[];
}

/** All four servers measured in rounds on one path. */
export async function measureAll(s: Servers, path: string, auth: Record<string, string>, rounds?: number): Promise<Measured> {
  const targets: Target[] = [
    { key: 'direct', base: s.upstream.url, headers: {}, pid: s.upstream.child.pid! },
    { key: 'pass', base: s.passthrough.url, headers: auth, pid: s.passthrough.child.pid! },
    ...(s.nginx ? [{ key: 'nginx', base: s.nginx.url, headers: auth, pid: s.nginx.child.pid! }] : []),
    { key: 'gate', base: s.gate.url, headers: auth, pid: s.gate.child.pid! },
  ];
  const runs = await measureRounds(targets, path, { upstreamPid: s.upstream.child.pid!, ...(rounds ? { rounds } : {}) });
  return {
    direct: medianRun(runs.direct!),
    pass: medianRun(runs.pass!),
    nginx: runs.nginx ? medianRun(runs.nginx) : undefined,
    gate: medianRun(runs.gate!),
    ratios: ratios(runs.gate!, runs.pass!),
    nginxRatios: runs.nginx ? ratios(runs.gate!, runs.nginx) : [],
  };
}

export interface Links {
  /** Entries of the first page. */
  entries: number;
  /** Longest `Bundle.link.url` of the first two pages, bytes. */
  maxLinkBytes: number;
}

/** The first page of a search through caregate and the page its `next` link leads to: how long their links are. */
export async function pagingLinks(url: string, headers: Record<string, string>): Promise<Links> {
  const get = async (u: string) => {
    const res = await fetch(u, { headers });
    if (res.status !== 200) throw new Error(`${u}: ${res.status}`);
    return (await res.json()) as Bundle;
  };
  const first = await get(url);
  const bytes = (b: Bundle) => Math.max(0, ...(b.link ?? []).map((l) => Buffer.byteLength(l.url ?? '')));
  let max = bytes(first);
  const next = first.link?.find((l) => l.relation === 'next')?.url;
  if (next) max = Math.max(max, bytes(await get(next)));
  return { entries: first.entry?.length ?? 0, maxLinkBytes: max };
}

const cpu = (r: Result | undefined) => (r?.cpuMsPerReq === undefined ? '–' : r.cpuMsPerReq.toFixed(3));
const up = (r: Result | undefined) => (r?.upstreamCpuMsPerReq === undefined ? '–' : r.upstreamCpuMsPerReq.toFixed(3));

export async function runRealistic(s: Servers, scenarios: readonly RealisticScenario[]): Promise<string> {
  const rows: string[] = [];
  const marks: string[] = [];
  for (const sc of scenarios) {
    const links = await pagingLinks(s.gate.url + sc.path, sc.auth);
    const m = await measureAll(s, sc.path, sc.auth);
    const r = median(m.ratios);
    const line = `${sc.name}: caregate ${m.gate.rps.toFixed(0)} rps cpu ${cpu(m.gate)} (upstream ${up(m.gate)}) | passthrough ${m.pass.rps.toFixed(0)} rps cpu ${cpu(m.pass)} (upstream ${up(m.pass)})${m.nginx ? ` | nginx ${m.nginx.rps.toFixed(0)} rps cpu ${cpu(m.nginx)}` : ''} | ratio ${ratioText(m.ratios)} | entries ${links.entries} | links ≤ ${links.maxLinkBytes} B`;
    console.log(line);
    rows.push(
      `| ${sc.name} | ${sc.careSet} | ${sc.upstreamQuery} | ${links.entries} | ${m.direct.rps.toFixed(0)} / ${cpu(m.direct)} | ${m.pass.rps.toFixed(0)} / ${cpu(m.pass)} / ${up(m.pass)} | ${m.nginx ? `${m.nginx.rps.toFixed(0)} / ${cpu(m.nginx)} / ${up(m.nginx)}` : '–'} | ${m.gate.rps.toFixed(0)} / ${cpu(m.gate)} / ${up(m.gate)} | ${m.gate.p50} / ${m.gate.p99} | **${ratioText(m.ratios)}** ${atLeast(r, sc.target)} (≥ ${sc.target}) | ${m.nginxRatios.length ? ratioText(m.nginxRatios) : '–'} | ${links.maxLinkBytes} ${links.maxLinkBytes <= 512 ? '✅' : '❌'} | ${m.gate.non2xx} |`,
    );
    marks.push(`- ${sc.name}: caregate/passthrough ${ratioText(m.ratios)} ${atLeast(r, sc.target)} (target ≥ ${sc.target}); paging links up to ${links.maxLinkBytes} bytes ${links.maxLinkBytes <= 512 ? '✅' : '❌'} (target ≤ 512)`);
  }
  return `| scenario | care set (patients) | the search | entries returned by caregate | direct: rps / CPU ms/req | passthrough: rps / CPU / upstream CPU | nginx: rps / CPU / upstream CPU | caregate: rps / CPU / upstream CPU | caregate p50 / p99 (ms) | caregate/passthrough | caregate/nginx | longest paging link (bytes) | caregate non-2xx |
|---|---|---|---|---|---|---|---|---|---|---|---|---|
${rows.join('\n')}

${marks.join('\n')}`;
}
