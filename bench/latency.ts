import { Pool } from 'undici';

/**
 * Open-loop latency at a fixed request rate: requests leave on schedule whether or not earlier ones
 * returned, so a slow answer cannot hold the next ones back and hide its own cost (coordinated
 * omission). autocannon records whole milliseconds, too coarse to see a proxy's added fraction of a
 * millisecond; here every request is timed with `performance.now()`.
 */
export interface LatencyResult {
  rate: number;
  requests: number;
  errors: number;
  p50: number;
  p90: number;
  p99: number;
  max: number;
}

export async function measureLatency(
  url: string,
  headers: Record<string, string>,
  opts: { rate: number; seconds: number; connections?: number },
): Promise<LatencyResult> {
  const u = new URL(url);
  const pool = new Pool(u.origin, { connections: opts.connections ?? 32, pipelining: 1 });
  const path = u.pathname + u.search;
  const latencies: number[] = [];
  let errors = 0;
  const one = async () => {
    const t = performance.now();
    try {
      const r = await pool.request({ method: 'GET', path, headers });
      await r.body.arrayBuffer();
      if (r.statusCode >= 400) errors++;
      latencies.push(performance.now() - t);
    } catch {
      errors++;
    }
  };
  try {
    // Warm-up at the same rate: connections opened, JIT settled.
    for (const seconds of [1, opts.seconds]) {
      latencies.length = 0;
      errors = 0;
      const total = Math.round(opts.rate * seconds);
      const inflight: Promise<void>[] = [];
      const start = performance.now();
      for (let sent = 0; sent < total; ) {
        const due = Math.min(total, Math.floor(((performance.now() - start) * opts.rate) / 1000) + 1);
        for (; sent < due; sent++) inflight.push(one());
        await new Promise((r) => setTimeout(r, 1));
      }
      await Promise.all(inflight);
    }
  } finally {
    await pool.close();
  }
  const sorted = latencies.sort((a, b) => a - b);
  const q = (p: number) => Math.round((sorted[Math.min(sorted.length - 1, Math.floor(p * sorted.length))] ?? NaN) * 100) / 100;
  return { rate: opts.rate, requests: sorted.length, errors, p50: q(0.5), p90: q(0.9), p99: q(0.99), max: q(1 - 1e-9) };
}
