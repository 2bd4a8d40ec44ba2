import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startStack, type Stack } from '../helpers/stack.js';

let stack: Stack;

beforeAll(async () => {
  stack = await startStack({ patients: 20 });
});

afterAll(async () => {
  await stack.close();
});

const sample = (metrics: string, line: string): number => {
  const m = new RegExp(`^${line.replace(/[{}]/g, (c) => `\\${c}`)} (\\d+)$`, 'm').exec(metrics);
  return m ? Number(m[1]) : NaN;
};

describe('cache metrics', () => {
  it('counts hits and misses of the verified-token, principal and care-set caches, and their entries', async () => {
    const auth = stack.auth('clinician');
    for (let i = 0; i < 3; i++) {
      const res = await fetch(`${stack.url}/Patient/pat-dupont`, { headers: auth });
      expect(res.status).toBe(200);
      await res.arrayBuffer();
    }
    const metrics = await (await fetch(`${stack.url.replace(/\/fhir$/, '')}/metrics`)).text();
    for (const cache of ['token', 'principal', 'careset']) {
      expect(sample(metrics, `caregate_cache_lookups_total{cache="${cache}",result="miss"}`), cache).toBe(1);
      expect(sample(metrics, `caregate_cache_lookups_total{cache="${cache}",result="hit"}`), cache).toBe(2);
      expect(sample(metrics, `caregate_cache_entries{cache="${cache}"}`), cache).toBe(1);
    }
    // Her practitioner, role and service each point at her cached set.
    expect(sample(metrics, 'caregate_cache_entries{cache="careset-members"}')).toBeGreaterThanOrEqual(2);
  });
});
