import { describe, expect, it } from 'vitest';
import { createByteBudget } from '../../src/shared/byte-budget.js';

/** Lets the event loop turn, so that any take that could be granted has been. */
const settle = () => new Promise((r) => setImmediate(r));

describe('the shaping budget', () => {
  it('lets answers through while they fit, and makes the next wait until room is given back', async () => {
    const budget = createByteBudget(6400);
    const a = await budget.take(4000);
    let granted = false;
    const b = budget.take(4000).then((release) => ((granted = true), release));
    await settle();
    expect(granted).toBe(false);
    expect(budget.waiting).toBe(1);
    a();
    (await b)();
    expect(granted).toBe(true);
    expect(budget.inUse).toBe(0);
  });

  it('serves waiting answers first come, first served, and lets one larger than the budget go alone', async () => {
    const budget = createByteBudget(6400);
    const first = await budget.take(3000);
    const order: string[] = [];
    const huge = budget.take(100_000).then((r) => (order.push('huge'), r));
    const small = budget.take(200).then((r) => (order.push('counted'), r));
    await settle();
    // 200 bytes would fit beside the first, but the larger answer came before it.
    expect(order).toEqual([]);
    first();
    const releaseHuge = await huge;
    await settle();
    expect(order).toEqual(['huge']);
    expect(budget.inUse).toBe(100_000);
    releaseHuge();
    (await small)();
    expect(order).toEqual(['huge', 'counted']);
  });

  it('does not count answers of at most 1/64 of the budget, which never wait', async () => {
    const budget = createByteBudget(6400);
    const big = await budget.take(100_000);
    const release = await budget.take(100);
    expect(budget.inUse).toBe(100_000);
    release();
    big();
  });

  it('takes back a share once, however often it is given back', async () => {
    const budget = createByteBudget(6400);
    const a = await budget.take(4000);
    a();
    a();
    expect(budget.inUse).toBe(0);
    const b = await budget.take(6000);
    expect(budget.inUse).toBe(6000);
    b();
  });
});
