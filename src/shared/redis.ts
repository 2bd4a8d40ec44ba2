import { randomBytes, randomUUID, timingSafeEqual } from 'node:crypto';
import type { ConnectionOptions } from 'node:tls';
import { Redis, type RedisOptions } from 'ioredis';
import type { Logger } from 'pino';
import type { RedisStateConfig } from './config.js';
import {
  createGrantMirror,
  createLocalBus,
  grantFrom,
  sharedStateUnavailable,
  type GrantRecord,
  type Invalidation,
  type SharedState,
  type SharedStateMetrics,
} from './state.js';

/**
 * `state.mode: redis`: the state several instances share, in Redis (or Valkey).
 *
 * Keys, under `keyPrefix`:
 * - `grants`: a sorted set of the open break-the-glass grants (member: the grant as JSON; score:
 *   its end). Written with the grant's message in one MULTI; ended grants are removed by each write.
 * - `pseudonyms:<engagement>`: a hash of the contractor pseudonyms issued (`Type/pseudo` → real id),
 *   kept 30 days after its last write; an instance checks a mapping against its own key before use.
 * - `paging-key`: the key paging links are sealed with, generated once (SET NX) when no secret is
 *   configured. An instance that knew it writes it back with SET NX after Redis lost its data, so
 *   the instances keep agreeing.
 * - channel `events`: grants opened and invalidations, as JSON.
 *
 * Two connections: one for commands, one subscribed. This instance's mirror of the grants is
 * current while the subscription is up and has been loaded since it (re)started: a subscription
 * first, then a load (ZRANGEBYSCORE), then the messages received meanwhile. A heartbeat on the
 * subscription notices a silent loss (a partition without a reset) within about two seconds.
 * While the mirror is not current, every cache of this instance is dropped each second (an
 * invalidation sent meanwhile cannot arrive), and what needs the shared state fails closed.
 */
export interface RedisStateOptions {
  config: RedisStateConfig;
  /** From the environment (`usernameEnv`, `passwordEnv`). */
  username?: string;
  password?: string;
  /** TLS options (CA, client certificate) read from the configured files. */
  tls?: ConnectionOptions;
  /** A key from `state.pagingSecretEnv`: then no key is kept in Redis. */
  pagingKey?: Buffer;
  logger: Logger;
  metrics: SharedStateMetrics;
  now: () => number;
}

/** How often caches are dropped, and reconnections attempted, while the shared state is unreachable. */
const OUTAGE_TICK_MS = 1000;
const MAX_LIST = 10_000;
/** How long issued pseudonyms are kept after the last one of their engagement. */
const PSEUDONYM_TTL_MS = 30 * 86_400_000;

export async function openRedisState(opts: RedisStateOptions): Promise<SharedState> {
  const { config: cfg, logger, metrics, now } = opts;
  const url = new URL(cfg.url);
  const db = url.pathname.length > 1 ? Number(url.pathname.slice(1)) : 0;
  const tls = url.protocol === 'rediss:' ? { ...(opts.tls ?? {}), ...(cfg.tls?.serverName ? { servername: cfg.tls.serverName } : {}) } : undefined;
  const options: RedisOptions = {
    host: url.hostname.replace(/^\[|\]$/g, ''),
    port: url.port ? Number(url.port) : 6379,
    db,
    ...(opts.username ? { username: opts.username } : {}),
    ...(opts.password ? { password: opts.password } : {}),
    ...(tls ? { tls } : {}),
    connectionName: 'caregate',
    connectTimeout: cfg.connectTimeoutMs,
    commandTimeout: cfg.commandTimeoutMs,
    // Nothing waits for a connection: a command while Redis is unreachable fails at once (closed).
    enableOfflineQueue: false,
    maxRetriesPerRequest: 0,
    autoResubscribe: false,
    retryStrategy: (attempt) => Math.min(100 * attempt, OUTAGE_TICK_MS),
    lazyConnect: true,
  };
  const cmd = new Redis(options);
  const sub = new Redis(options);

  const p = cfg.keyPrefix;
  const GRANTS = `${p}grants`;
  const PAGING_KEY = `${p}paging-key`;
  const pseudonymsOf = (engagement: string) => `${p}pseudonyms:${engagement}`;
  const CHANNEL = `${p}events`;
  const instance = randomUUID();

  const mirror = createGrantMirror();
  const local = createLocalBus((err) => logger.error({ err: (err as Error)?.message }, 'a cache invalidation handler failed'));
  let key = opts.pagingKey;
  const keyFromSecret = opts.pagingKey !== undefined;

  let subscribed = false;
  let synced = false;
  /** Bumped at each loss of the subscription: a load started before it is not applied. */
  let epoch = 0;
  /** The latest load; an older one is not applied. */
  let run = 0;
  /** Grants received while a load runs (re-applied over what it read). */
  let collecting: GrantRecord[] | undefined;
  /** An invalidation could not be sent: every instance drops everything once Redis is back. */
  let owed = false;
  let outage: { since: number; timer: NodeJS.Timeout; starting: boolean } | undefined;
  let lastError = 'no connection yet';
  let closed = false;
  let resolveFirst: (() => void) | undefined;
  const firstSync = new Promise<void>((r) => (resolveFirst = r));

  const errorCode = (err: unknown) => {
    const e = err as { code?: unknown; message?: unknown };
    return typeof e?.code === 'string' ? e.code : typeof e?.message === 'string' ? e.message.slice(0, 120) : 'error';
  };

  function startOutage(why: string, starting = false): void {
    if (outage || closed) return;
    metrics.up.set(0);
    if (!starting) logger.warn({ why }, 'shared state unreachable: break-the-glass grants and refusals that need it answer 503; caches are dropped every second');
    outage = {
      since: Date.now(),
      starting,
      // Invalidations sent by the other instances cannot arrive: no cache outlives a second.
      timer: setInterval(() => {
        metrics.invalidations.inc({ origin: 'outage' });
        local.deliver({ all: true });
      }, OUTAGE_TICK_MS),
    };
    outage.timer.unref();
  }

  function lost(why: string): void {
    epoch++;
    subscribed = false;
    synced = false;
    collecting = undefined;
    startOutage(why);
  }

  async function onSubReady(): Promise<void> {
    const e = epoch;
    try {
      await sub.subscribe(CHANNEL);
    } catch (err) {
      metrics.errors.inc({ operation: 'subscribe' });
      lastError = errorCode(err);
      return;
    }
    if (e !== epoch || closed) return;
    subscribed = true;
    await resync(e);
  }

  /** Loads the open grants (and the paging key) after the subscription (re)started. */
  async function resync(e: number): Promise<void> {
    if (!subscribed || synced || cmd.status !== 'ready' || e !== epoch) return;
    const mine = ++run;
    const received: GrantRecord[] = [];
    collecting = received;
    try {
      const t = now();
      const raw = await cmd.zrangebyscore(GRANTS, `(${t}`, '+inf');
      if (!keyFromSecret) {
        await cmd.set(PAGING_KEY, (key ?? randomBytes(32)).toString('base64'), 'NX');
        const stored = Buffer.from((await cmd.get(PAGING_KEY)) ?? '', 'base64');
        if (stored.length !== 32) throw new Error('the paging key in Redis is not 32 bytes');
        if (key && !timingSafeEqual(key, stored)) logger.warn('the paging key in Redis changed: paging links sealed before now stop working');
        key = stored;
      }
      if (mine !== run || e !== epoch || closed) return;
      const grants: GrantRecord[] = [];
      for (const member of raw) {
        const g = parse(member, grantFrom);
        if (g) grants.push(g);
      }
      mirror.replace([...grants, ...received]);
      collecting = undefined;
      synced = true;
      metrics.up.set(1);
      if (outage) {
        clearInterval(outage.timer);
        if (outage.starting) logger.info({ grants: mirror.size }, 'shared state synchronised');
        else logger.info({ downForMs: Date.now() - outage.since, grants: mirror.size }, 'shared state reachable again: grants reloaded, caches dropped');
        outage = undefined;
      }
      // Whatever was sent while this instance was not listening is lost: drop every cache once.
      metrics.invalidations.inc({ origin: 'resync' });
      local.deliver({ all: true });
      if (owed) void payDebt();
      resolveFirst?.();
    } catch (err) {
      metrics.errors.inc({ operation: 'resync' });
      lastError = errorCode(err);
      if (mine === run) collecting = undefined;
      setTimeout(() => void resync(epoch), OUTAGE_TICK_MS).unref();
    }
  }

  /** After an invalidation could not be sent: every instance drops everything. */
  async function payDebt(): Promise<void> {
    if (!owed || cmd.status !== 'ready') return;
    owed = false;
    try {
      await cmd.publish(CHANNEL, JSON.stringify({ v: 1, o: instance, inv: { all: true } }));
    } catch (err) {
      owed = true;
      metrics.errors.inc({ operation: 'publish' });
      lastError = errorCode(err);
    }
  }

  function parse<T>(text: string, check: (v: unknown) => T | undefined): T | undefined {
    try {
      return check(JSON.parse(text));
    } catch {
      return undefined;
    }
  }

  sub.on('message', (channel: string, text: string) => {
    if (channel !== CHANNEL) return;
    const m = parse(text, (v) => (v && typeof v === 'object' ? (v as { v?: unknown; o?: unknown; grant?: unknown; inv?: unknown }) : undefined));
    if (!m || m.v !== 1 || typeof m.o !== 'string') {
      logger.warn('a malformed message on the shared-state channel was ignored');
      return;
    }
    if (m.o === instance) return;
    if (m.grant !== undefined) {
      const g = grantFrom(m.grant);
      if (!g) {
        logger.warn('a malformed grant on the shared-state channel was ignored');
        return;
      }
      mirror.add(g);
      collecting?.push(g);
    } else {
      const inv = invalidationFrom(m.inv);
      if (!inv) {
        logger.warn('a malformed invalidation on the shared-state channel was ignored');
        return;
      }
      metrics.invalidations.inc({ origin: 'remote' });
      local.deliver(inv);
    }
  });
  sub.on('ready', () => void onSubReady());
  sub.on('close', () => lost('the subscribed connection closed'));
  sub.on('error', (err) => {
    lastError = errorCode(err);
  });
  cmd.on('ready', () => {
    void resync(epoch);
    void payDebt();
  });
  cmd.on('error', (err) => {
    lastError = errorCode(err);
  });

  // A subscription can be lost without a reset (a partition): a PING on it each second tells.
  const heartbeat = setInterval(() => {
    if (!subscribed || sub.status !== 'ready') return;
    const e = epoch;
    let timer: NodeJS.Timeout | undefined;
    Promise.race([
      sub.ping(),
      new Promise((_, reject) => {
        timer = setTimeout(() => reject(new Error('heartbeat timeout')), cfg.commandTimeoutMs);
      }),
    ])
      .catch((err: unknown) => {
        if (e !== epoch || closed) return;
        metrics.errors.inc({ operation: 'heartbeat' });
        lastError = errorCode(err);
        lost(`heartbeat failed (${lastError})`);
        sub.disconnect(true);
      })
      .finally(() => clearTimeout(timer));
  }, OUTAGE_TICK_MS);
  heartbeat.unref();

  startOutage('starting', true);
  // Connect both; a failure here is not fatal: the instance starts degraded and recovers by itself.
  await Promise.allSettled([cmd.connect(), sub.connect()]);
  let timeout: NodeJS.Timeout | undefined;
  await Promise.race([firstSync, new Promise<void>((r) => (timeout = setTimeout(r, cfg.connectTimeoutMs * 2)))]);
  clearTimeout(timeout);
  if (!synced) logger.warn({ why: lastError }, 'caregate starts without its shared state; it recovers when Redis answers');

  const available = () => synced && cmd.status === 'ready';

  return {
    mode: 'redis',
    grants: {
      async put(g) {
        if (!available()) throw sharedStateUnavailable(metrics, 'grant', `shared state unavailable (${lastError})`);
        const t = now();
        try {
          const results = await cmd
            .multi()
            .zremrangebyscore(GRANTS, '-inf', t)
            .zadd(GRANTS, g.until, JSON.stringify(g))
            .publish(CHANNEL, JSON.stringify({ v: 1, o: instance, grant: g }))
            .exec();
          const failed = results?.find(([err]) => err);
          if (!results || failed) throw failed?.[0] ?? new Error('transaction discarded');
        } catch (err) {
          metrics.errors.inc({ operation: 'grant' });
          lastError = errorCode(err);
          throw sharedStateUnavailable(metrics, 'grant', `grant not stored (${lastError})`);
        }
        mirror.add(g);
        // A load running now may have read the set before this grant: it re-applies it.
        collecting?.push(g);
      },
      open: (user, t) => mirror.open(user, t),
      confirmed(user, t) {
        if (!synced) throw sharedStateUnavailable(metrics, 'confirm', `grants mirror not current (${lastError})`);
        return mirror.open(user, t);
      },
      assertWritable() {
        if (!available()) throw sharedStateUnavailable(metrics, 'grant', `shared state unavailable (${lastError})`);
      },
      all: (t) => mirror.all(t),
    },
    bus: {
      publish(m) {
        metrics.invalidations.inc({ origin: 'local' });
        local.deliver(m);
        if (cmd.status !== 'ready') {
          owed = true;
          return;
        }
        cmd.publish(CHANNEL, JSON.stringify({ v: 1, o: instance, inv: m })).catch((err: unknown) => {
          owed = true;
          metrics.errors.inc({ operation: 'publish' });
          lastError = errorCode(err);
        });
      },
      subscribe: local.bus.subscribe,
    },
    pseudonyms: {
      async put(engagement, entries) {
        if (entries.length === 0) return;
        if (cmd.status !== 'ready') throw sharedStateUnavailable(metrics, 'pseudonyms', `shared state unavailable (${lastError})`);
        try {
          const results = await cmd
            .multi()
            .hset(pseudonymsOf(engagement), Object.fromEntries(entries))
            .pexpire(pseudonymsOf(engagement), PSEUDONYM_TTL_MS)
            .exec();
          const failed = results?.find(([err]) => err);
          if (!results || failed) throw failed?.[0] ?? new Error('transaction discarded');
        } catch (err) {
          metrics.errors.inc({ operation: 'pseudonyms' });
          lastError = errorCode(err);
          throw sharedStateUnavailable(metrics, 'pseudonyms', `pseudonyms not stored (${lastError})`);
        }
      },
      async get(engagement, k) {
        if (cmd.status !== 'ready') throw sharedStateUnavailable(metrics, 'pseudonyms', `shared state unavailable (${lastError})`);
        try {
          return (await cmd.hget(pseudonymsOf(engagement), k)) ?? undefined;
        } catch (err) {
          metrics.errors.inc({ operation: 'pseudonyms' });
          lastError = errorCode(err);
          throw sharedStateUnavailable(metrics, 'pseudonyms', `pseudonyms not read (${lastError})`);
        }
      },
    },
    pagingKey() {
      if (!key) throw sharedStateUnavailable(metrics, 'paging', `paging key not loaded (${lastError})`);
      return key;
    },
    health() {
      if (available()) return { ok: true, reason: `redis, ${mirror.size} open grant(s)` };
      const since = outage ? `, since ${new Date(outage.since).toISOString()}` : '';
      return { ok: false, reason: `redis unreachable (${lastError})${since}: break-the-glass and refusals answer 503, caches are dropped every second` };
    },
    async close() {
      closed = true;
      clearInterval(heartbeat);
      if (outage) clearInterval(outage.timer);
      cmd.disconnect();
      sub.disconnect();
    },
  };
}

/** An invalidation received from another instance, checked; undefined when malformed. */
function invalidationFrom(v: unknown): Invalidation | undefined {
  if (!v || typeof v !== 'object') return undefined;
  const o = v as Record<string, unknown>;
  const list = (x: unknown): readonly string[] | undefined | false =>
    x === undefined ? undefined : Array.isArray(x) && x.length <= MAX_LIST && x.every((s) => typeof s === 'string' && s.length <= 200) ? (x as string[]) : false;
  const members = list(o.members);
  const principals = list(o.principals);
  const patients = list(o.patients);
  const caches = list(o.caches);
  if (members === false || principals === false || patients === false || caches === false) return undefined;
  if (o.all !== undefined && typeof o.all !== 'boolean') return undefined;
  return {
    ...(o.all === true ? { all: true } : {}),
    ...(members ? { members } : {}),
    ...(principals ? { principals } : {}),
    ...(patients ? { patients } : {}),
    ...(caches ? { caches } : {}),
  };
}
