import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { Redis } from 'ioredis';
import { pino } from 'pino';
import { Registry } from 'prom-client';
import { parseConfig } from '../../src/config/load.js';
import { classify } from '../../src/fhir/classify.js';
import { ProxyError } from '../../src/http/errors.js';
import { createPseudonyms } from '../../src/shape/pseudonyms.js';
import { openSharedState } from '../../src/shared/open.js';
import type { GrantRecord, Invalidation, SharedState } from '../../src/shared/state.js';
import { redisServerInstalled, startRedis, within, type RedisServer } from '../helpers/redis.js';
import { demoIdentityYaml } from '../helpers/stack.js';

/** The Redis-backed shared state on its own, against a real redis-server (no caregate around it). */
describe.skipIf(!redisServerInstalled())('the shared state in Redis', () => {
  let redis: RedisServer;
  const opened: SharedState[] = [];
  let prefix = 0;

  beforeAll(async () => {
    redis = await startRedis({ password: 'test-password' });
  });
  afterEach(async () => {
    await Promise.all(opened.splice(0).map((s) => s.close()));
  });
  afterAll(async () => redis?.stop());

  /** Instances sharing one key prefix (a fresh one per test). */
  function cluster(opts: { now?: () => number; env?: NodeJS.ProcessEnv } = {}) {
    const p = `t${++prefix}:`;
    const loaded = parseConfig(
      `${demoIdentityYaml('/nonexistent')}state: { mode: redis, redis: { url: "${redis.url}", passwordEnv: TEST_REDIS_PASSWORD, keyPrefix: "${p}", connectTimeoutMs: 500, commandTimeoutMs: 500 } }`,
      'caregate.yaml',
    );
    return {
      prefix: p,
      async open(): Promise<SharedState> {
        const s = await openSharedState(loaded, {
          logger: pino({ level: 'silent' }),
          registry: new Registry(),
          env: opts.env ?? { TEST_REDIS_PASSWORD: 'test-password' },
          ...(opts.now ? { now: opts.now } : {}),
        });
        opened.push(s);
        return s;
      },
    };
  }
  const grant = (patient: string, until: number): GrantRecord => ({ user: 'Practitioner/prat-roux', patient, reason: 'unconscious patient', grantedAt: until - 60_000, until });

  it('connects with the password read from the environment, and not without it', async () => {
    const ok = await cluster().open();
    expect(ok.health().ok).toBe(true);
    const refused = await cluster({ env: { TEST_REDIS_PASSWORD: 'wrong' } }).open();
    expect(refused.health()).toMatchObject({ ok: false });
    expect(() => refused.grants.assertWritable()).toThrow(ProxyError);
  });

  it('shows a grant stored by one instance to the others, and to an instance started later', async () => {
    const c = cluster();
    const [a, b] = await Promise.all([c.open(), c.open()]);
    const until = Date.now() + 60_000;
    await a.grants.put(grant('pat-1', until));
    expect(a.grants.open('Practitioner/prat-roux', Date.now()).map((g) => g.patient)).toEqual(['pat-1']);
    await within(1000, async () => b.grants.open('Practitioner/prat-roux', Date.now()).length === 1, 'on b');
    const late = await c.open();
    expect(late.grants.confirmed('Practitioner/prat-roux', Date.now())).toEqual([grant('pat-1', until)]);
    expect(late.grants.open('Practitioner/prat-other', Date.now())).toEqual([]);
  });

  it('ends a grant at its own end, and drops ended grants from Redis', async () => {
    let now = Date.UTC(2026, 0, 15, 10);
    const c = cluster({ now: () => now });
    const a = await c.open();
    await a.grants.put(grant('pat-ended', now + 1000));
    now += 2000;
    expect(a.grants.open('Practitioner/prat-roux', now)).toEqual([]);
    expect((await c.open()).grants.confirmed('Practitioner/prat-roux', now)).toEqual([]);
    await a.grants.put(grant('pat-open', now + 60_000));
    const raw = new Redis({ port: redis.port, password: 'test-password' });
    try {
      expect((await raw.zrange(`${c.prefix}grants`, 0, -1)).map((m) => JSON.parse(m).patient)).toEqual(['pat-open']);
    } finally {
      raw.disconnect();
    }
  });

  it('delivers an invalidation to every instance, once on the one that sent it', async () => {
    const c = cluster();
    const [a, b] = await Promise.all([c.open(), c.open()]);
    const onA: Invalidation[] = [];
    const onB: Invalidation[] = [];
    a.bus.subscribe((m) => onA.push(m));
    b.bus.subscribe((m) => onB.push(m));
    const m: Invalidation = { members: ['Practitioner/prat-girard'], principals: ['Practitioner/prat-girard'], patients: ['pat-1'], caches: ['stays'] };
    a.bus.publish(m);
    expect(onA).toEqual([m]);
    await within(1000, async () => onB.length === 1, 'on b');
    expect(onB).toEqual([m]);
    expect(onA).toHaveLength(1);
  });

  it('ignores malformed messages on its channel: they open nothing and drop nothing', async () => {
    const c = cluster();
    const a = await c.open();
    const seen: Invalidation[] = [];
    a.bus.subscribe((m) => seen.push(m));
    const raw = new Redis({ port: redis.port, password: 'test-password' });
    try {
      const channel = `${c.prefix}events`;
      for (const text of [
        'not json',
        JSON.stringify({ v: 1, o: 'x', grant: { ...grant('pat-1', Date.now() + 60_000), until: 'forever' } }),
        JSON.stringify({ v: 1, o: 'x', grant: { ...grant('../x', Date.now() + 60_000) } }),
        JSON.stringify({ v: 1, o: 'x', grant: { ...grant('pat-2', Date.now() + 60_000), user: 'Patient/p' } }),
        JSON.stringify({ v: 1, o: 'x', inv: { members: 'Practitioner/x' } }),
        JSON.stringify({ v: 2, o: 'x', inv: { all: true } }),
      ]) {
        await raw.publish(channel, text);
      }
      // A well-formed message sent after them arrives: the ones before were read, and refused.
      await raw.publish(channel, JSON.stringify({ v: 1, o: 'x', inv: { caches: ['stays'] } }));
      await within(1000, async () => seen.length > 0, 'the well-formed message');
      expect(seen).toEqual([{ caches: ['stays'] }]);
      expect(a.grants.open('Practitioner/prat-roux', Date.now())).toEqual([]);
    } finally {
      raw.disconnect();
    }
  });

  it('shares one paging key, generated once, and keeps it when Redis loses its data', async () => {
    const c = cluster();
    const [a, b] = await Promise.all([c.open(), c.open()]);
    const key = a.pagingKey();
    expect(b.pagingKey().equals(key)).toBe(true);
    await redis.kill();
    await within(3000, async () => !a.health().ok && !b.health().ok, 'both notice');
    expect(() => a.grants.assertWritable()).toThrow(/No grant was opened/);
    expect(() => a.grants.confirmed('Practitioner/prat-roux', Date.now())).toThrow(ProxyError);
    // The key is known: links keep working during the outage.
    expect(a.pagingKey().equals(key)).toBe(true);
    await redis.restart();
    await within(5000, async () => a.health().ok && b.health().ok, 'both recover');
    expect(a.pagingKey().equals(key)).toBe(true);
    expect(b.pagingKey().equals(key)).toBe(true);
    expect((await c.open()).pagingKey().equals(key)).toBe(true);
  });

  it('starts without Redis, refuses what needs it, and recovers once Redis answers', async () => {
    await redis.kill();
    try {
      const a = await cluster().open();
      expect(a.health().ok).toBe(false);
      expect(() => a.pagingKey()).toThrow(/Paging links cannot be sealed/);
      await expect(a.grants.put(grant('pat-1', Date.now() + 60_000))).rejects.toThrow(ProxyError);
      const dropped: Invalidation[] = [];
      a.bus.subscribe((m) => dropped.push(m));
      // Invalidations from other instances cannot arrive: every cache is dropped each second.
      await within(1500, async () => dropped.some((m) => m.all === true), 'caches dropped');
      await redis.restart();
      await within(5000, async () => a.health().ok, 'recovered');
      expect(a.pagingKey()).toHaveLength(32);
      await a.grants.put(grant('pat-1', Date.now() + 60_000));
    } finally {
      if (!(await redisUp())) await redis.restart();
    }
  });

  it('maps back on one instance the pseudonyms another issued, and never a mapping it would not issue itself', async () => {
    const c = cluster();
    const [a, b] = await Promise.all([c.open(), c.open()]);
    const secret = Buffer.alloc(32, 9);
    const onA = createPseudonyms({ secret, localBases: [], shared: a.pseudonyms });
    const onB = createPseudonyms({ secret, localBases: [], shared: b.pseudonyms });
    const engagement = { id: 'eng-1', dateMode: 'month' as const };
    const read = (type: string, id: string) => classify({ method: 'GET', path: `/${type}/${id}`, query: '', headers: {}, rawHeaders: [] }, { maxBodyBytes: 1024 });
    const pseudo = onA.forEngagement(engagement).pseudonym('Encounter', 'enc-1');
    await onA.share();
    expect((await onB.reveal(engagement, read('Encounter', pseudo), false)).id).toBe('enc-1');

    // A mapping written into Redis by someone else: the pseudonym of enc-3 pointed at enc-2.
    const other = onA.forEngagement(engagement).pseudonym('Encounter', 'enc-3');
    const raw = new Redis({ port: redis.port, password: 'test-password' });
    try {
      await raw.hset(`${c.prefix}pseudonyms:eng-1`, `Encounter/${other}`, 'enc-2');
    } finally {
      raw.disconnect();
    }
    await expect(onB.reveal(engagement, read('Encounter', other), false)).rejects.toMatchObject({ code: 'ERR_NOT_FOUND' });
    // Another engagement's key issues other pseudonyms: nothing links the two.
    await expect(onB.reveal({ id: 'eng-2', dateMode: 'month' }, read('Encounter', pseudo), false)).rejects.toMatchObject({ code: 'ERR_NOT_FOUND' });
  });

  async function redisUp(): Promise<boolean> {
    const raw = new Redis({ port: redis.port, password: 'test-password', lazyConnect: true, retryStrategy: () => null, maxRetriesPerRequest: 0 });
    try {
      await raw.connect();
      return (await raw.ping()) === 'PONG';
    } catch {
      return false;
    } finally {
      raw.disconnect();
    }
  }
});
