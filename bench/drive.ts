import { Pool } from 'undici';

/**
 * A closed-loop load of `total` requests over `connections` connections, request i built by
 * `request(i)`: what autocannon cannot do, a different Authorization header on every request
 * (the distinct-users measure sends up to 100,000 tokens in one run).
 */
export interface DriveResult {
  requests: number;
  seconds: number;
  /** HTTP status → count (0: the request failed). */
  statuses: Record<number, number>;
}

export async function drive(
  baseUrl: string,
  total: number,
  request: (i: number) => { path: string; headers: Record<string, string> },
  connections = 16,
): Promise<DriveResult> {
  const u = new URL(baseUrl);
  const pool = new Pool(u.origin, { connections, pipelining: 1 });
  const statuses: Record<number, number> = {};
  let next = 0;
  const t = performance.now();
  const worker = async () => {
    for (let i = next++; i < total; i = next++) {
      const { path, headers } = request(i);
      let status = 0;
      try {
        const r = await pool.request({ method: 'GET', path: u.pathname.replace(/\/+$/, '') + path, headers });
        await r.body.arrayBuffer();
        status = r.statusCode;
      } catch {
        status = 0;
      }
      statuses[status] = (statuses[status] ?? 0) + 1;
    }
  };
  try {
    await Promise.all(Array.from({ length: connections }, worker));
  } finally {
    await pool.close();
  }
  return { requests: total, seconds: (performance.now() - t) / 1000, statuses };
}
