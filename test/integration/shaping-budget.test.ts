import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import request from 'supertest';
import { startFaultStack, type FaultStack } from '../helpers/fault-stack.js';
import type { Stack } from '../helpers/stack.js';

/**
 * `server.maxShapingBytes`: large upstream answers take turns. With a 16 KB budget, every page of
 * fifty Patients (about 50 KB) is shaped alone; none is lost or cut, and a refused answer gives
 * its share back.
 */
let env: FaultStack;
let stack: Stack;

beforeAll(async () => {
  env = await startFaultStack({ patients: 100, server: 'maxShapingBytes: 16kb' });
  stack = env.stack;
});
afterAll(async () => {
  await env?.close();
});

const path = (p: string) => new URL(stack.url).pathname + p;
const get = (p: string) => request(stack.gate.server).get(path(p)).set(stack.auth('dim'));

describe('the shaping budget (server.maxShapingBytes)', () => {
  it('answers concurrent DIM pages in full while they take turns', async () => {
    const alone = await get('/Patient?_count=50&_sort=_id');
    expect(alone.status).toBe(200);
    expect(alone.body.entry).toHaveLength(50);
    const ids = alone.body.entry.map((e: { resource: { id: string } }) => e.resource.id);
    const pages = await Promise.all(Array.from({ length: 6 }, () => get('/Patient?_count=50&_sort=_id')));
    for (const page of pages) {
      expect(page.status).toBe(200);
      expect(page.body.entry.map((e: { resource: { id: string } }) => e.resource.id)).toEqual(ids);
    }
  });

  it('gives back the share of an upstream answer it refuses, so the next pages are answered', async () => {
    const refused = await Promise.all(Array.from({ length: 3 }, () => get('/Observation/fault-deep')));
    for (const r of refused) expect(r.status).toBe(502);
    const page = await get('/Patient?_count=50');
    expect(page.status).toBe(200);
    expect(page.body.entry).toHaveLength(50);
  });
});
