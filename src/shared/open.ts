import { readFileSync } from 'node:fs';
import type { Logger } from 'pino';
import type { Registry } from 'prom-client';
import { ConfigError, configPath, type LoadedConfig } from '../config/load.js';
import { openRedisState } from './redis.js';
import { createMemoryState, pagingKeyFromSecret, sharedStateMetrics, type SharedState } from './state.js';

/**
 * Opens the shared state the configuration names (`state`). Credentials and the paging secret are
 * read from the environment only; a variable named and not set is a configuration error. With
 * `redis`, an unreachable Redis does not stop the start: the instance serves what needs nothing
 * shared, fails closed on the rest, and recovers by itself (docs/SHARED-STATE.md).
 */
export async function openSharedState(
  loaded: LoadedConfig,
  opts: { logger: Logger; registry?: Registry; now?: () => number; env?: NodeJS.ProcessEnv },
): Promise<SharedState> {
  const cfg = loaded.config.state;
  const env = opts.env ?? process.env;
  const problems: string[] = [];
  const fromEnv = (path: string, name: string | undefined): string | undefined => {
    if (name === undefined) return undefined;
    const v = env[name];
    if (v === undefined || v === '') problems.push(`${path}: the environment variable ${name} is not set`);
    return v;
  };

  let pagingKey: Buffer | undefined;
  const secret = fromEnv('state.pagingSecretEnv', cfg.pagingSecretEnv);
  if (secret !== undefined) {
    const buf = /^[0-9a-f]+$/i.test(secret) ? Buffer.from(secret, 'hex') : Buffer.from(secret, 'base64');
    if (buf.length < 32) problems.push(`state.pagingSecretEnv: ${cfg.pagingSecretEnv} must hold at least 32 bytes (64 hex characters)`);
    else pagingKey = pagingKeyFromSecret(buf);
  }
  const metrics = sharedStateMetrics(opts.registry);
  const onError = (err: unknown) => opts.logger.error({ err: (err as Error)?.message }, 'a cache invalidation handler failed');

  if (cfg.mode === 'memory' || !cfg.redis) {
    if (problems.length > 0) throw new ConfigError(loaded.file, problems);
    return createMemoryState({ ...(pagingKey ? { pagingKey } : {}), metrics, onError });
  }
  const r = cfg.redis;
  const username = fromEnv('state.redis.usernameEnv', r.usernameEnv);
  const password = fromEnv('state.redis.passwordEnv', r.passwordEnv);
  const read = (path: string, file: string | undefined): Buffer | undefined => {
    if (file === undefined) return undefined;
    try {
      return readFileSync(configPath(loaded, file));
    } catch (err) {
      problems.push(`${path}: cannot read ${file} (${(err as NodeJS.ErrnoException).code ?? 'error'})`);
      return undefined;
    }
  };
  const ca = read('state.redis.tls.caFile', r.tls?.caFile);
  const cert = read('state.redis.tls.certFile', r.tls?.certFile);
  const key = read('state.redis.tls.keyFile', r.tls?.keyFile);
  if (problems.length > 0) throw new ConfigError(loaded.file, problems);
  return openRedisState({
    config: r,
    ...(username ? { username } : {}),
    ...(password ? { password } : {}),
    tls: { ...(ca ? { ca } : {}), ...(cert ? { cert } : {}), ...(key ? { key } : {}) },
    ...(pagingKey ? { pagingKey } : {}),
    logger: opts.logger,
    metrics,
    now: opts.now ?? Date.now,
  });
}
