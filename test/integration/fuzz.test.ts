import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import request from 'supertest';
import { startFaultStack, type FaultStack } from '../helpers/fault-stack.js';
import type { Stack } from '../helpers/stack.js';

/**
 * Seeded fuzzing (fixed seeds: every run sends the same requests and the same bodies). Odd client
 * queries get a 4xx with an OperationOutcome, never a 5xx; broken upstream answers get a 502 (or
 * the judged answer), never a 500, and never a byte of a patient outside the care set.
 */
let env: FaultStack;
let faults: FaultStack['faults'];
let stack: Stack;

beforeAll(async () => {
  env = await startFaultStack({ patients: 50 });
  ({ faults, stack } = env);
});
afterAll(async () => {
  await env?.close();
});

/** mulberry32: a small seeded generator, so that a failure can be replayed. */
function prng(seed: number) {
  let a = seed >>> 0;
  const next = () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
  return { next, int: (n: number) => Math.floor(next() * n), pick: <T>(xs: readonly T[]): T => xs[Math.floor(next() * xs.length)]! };
}

const base = () => new URL(stack.url).pathname;

describe('odd client queries', () => {
  const names = ['patient', 'subject', 'code', '_id', '_count', '_sort', '_include', '_revinclude', '_has:Observation:subject:code', 'date', 'status', '_elements', '_summary', 'performer', 'x', '', '_format', 'subject.name', 'patient:Patient', 'code:not', 'code:text', 'patient:missing', '_lastUpdated'];
  const values = ['pat-dupont', 'Patient/pat-dupont', 'Patient/pat-fx-ortho', '%00', '..%2F..%2F', '%2e%2e', '😀', 'é', '%', '%ZZ', 'a,b,c', 'gt2020', '*', 'Observation:subject', '', ' ', '%0d%0aX-Injected:1', '\\u0000', 'x'.repeat(300), 'count', 'true', '-1', '99999999999999999999', 'Patient/../Patient/pat-fx-ortho', 'http://evil.example/Patient/x'];
  const paths = ['/Observation', '/Patient', '/Patient/pat-dupont', '/Patient/pat-dupont/Observation', '/Observation/_search', '/', '/Patient/pat-dupont/$everything', '/Patient/%2e%2e/Observation', '/Patient;x=1', '/Patient//pat-dupont', '/Observation/../Patient/pat-fx-ortho', '/metadata'];

  it('answers every generated query with a 2xx or a 4xx OperationOutcome, never a 5xx', async () => {
    const r = prng(20261206);
    for (let i = 0; i < 250; i++) {
      const n = r.int(5) === 0 ? 100 + r.int(300) : 1 + r.int(6);
      const params: string[] = [];
      for (let k = 0; k < n; k++) {
        const name = r.pick(names);
        const value = r.pick(values);
        params.push(`${r.int(4) === 0 ? encodeURIComponent(name) : name}=${r.int(3) === 0 ? encodeURIComponent(value) : value.replace(/[\s#&]/g, '')}`);
      }
      const target = `${base()}${r.pick(paths)}?${params.join('&')}`;
      const res = await request(stack.gate.server).get(target).set(stack.auth(r.pick(['clinician', 'surgeon', 'dim', 'patient', 'admission'] as const)));
      expect(res.status, target).toBeLessThan(500);
      if (res.status >= 400) expect(res.body.resourceType, target).toBe('OperationOutcome');
      expect(res.text, target).not.toContain('Injected');
    }
  });
});

describe('broken upstream answers', () => {
  const outside = 'pat-fx-ortho';
  const mutations: ((b: Record<string, unknown>, r: ReturnType<typeof prng>) => string)[] = [
    (b) => JSON.stringify({ ...b, entry: [null, ...((b.entry as unknown[]) ?? [])] }),
    (b) => JSON.stringify({ ...b, entry: ((b.entry as Record<string, unknown>[]) ?? []).map((e) => ({ ...e, resource: undefined })) }),
    (b) => JSON.stringify({ ...b, entry: ((b.entry as Record<string, unknown>[]) ?? []).map((e) => ({ ...e, resource: 'Observation' })) }),
    (b) => JSON.stringify({ ...b, entry: 'not a list' }),
    (b) => JSON.stringify({ ...b, entry: [{ resource: { resourceType: 'Observation', id: 'x', status: 'final', code: { text: 'x' }, subject: { reference: `Patient/${outside}` } } }, ...((b.entry as unknown[]) ?? [])] }),
    (b) => JSON.stringify({ ...b, resourceType: 'Patient' }),
    (b) => JSON.stringify({ ...b, resourceType: 42 }),
    (b) => JSON.stringify({ ...b, total: 'many', link: 'x' }),
    (b, r) => JSON.stringify(b).slice(0, 1 + r.int(Math.max(1, JSON.stringify(b).length - 1))),
    (b) => JSON.stringify(b).replace('"resourceType":"Bundle"', `"subject":{"reference":"Patient/${outside}"},"resourceType":"Bundle"`).replace('"type"', '"type":"searchset","type"'),
    () => `${'['.repeat(3000)}${']'.repeat(3000)}`,
    (b) => JSON.stringify({ ...b, entry: [{ resource: { resourceType: 'Bundle', entry: [{ resource: { resourceType: 'Observation', subject: { reference: `Patient/${outside}` } } }] } }] }),
    (b) => JSON.stringify({ ...b, entry: [{ resource: { resourceType: 'Observation', contained: [{ resourceType: 'Patient', id: 'p' }], subject: { reference: '#p' } } }] }),
    (b) => `\u0000${JSON.stringify(b)}`,
    () => 'null',
    () => '[]',
    () => '"a string"',
  ];

  it('never answers a 500 nor a byte of a patient outside the care set, whatever the upstream sends', async () => {
    const r = prng(7);
    for (let i = 0; i < 200; i++) {
      const mutate = mutations[i % mutations.length]!;
      faults.rewriteWhen(/\/Observation\?/, (text) => {
        let parsed: Record<string, unknown>;
        try {
          parsed = JSON.parse(text) as Record<string, unknown>;
        } catch {
          return text;
        }
        return mutate(parsed, r);
      });
      try {
        const q = r.pick(['patient=pat-dupont', '_count=5', 'code=8867-4', 'patient=pat-dupont&_count=2']);
        const res = await request(stack.gate.server).get(`${base()}/Observation?${q}`).set(stack.auth('clinician'));
        expect([200, 404, 502], `mutation ${i % mutations.length}`).toContain(res.status);
        expect(res.text, `mutation ${i % mutations.length}`).not.toContain(outside);
        if (res.status !== 200) expect(res.body.resourceType).toBe('OperationOutcome');
      } finally {
        faults.rewriteWhen(undefined);
      }
    }
  });
});
