import { describe, expect, it } from 'vitest';
import { pino } from 'pino';
import { ConfigError, parseConfig } from '../../src/config/load.js';
import { openSharedState } from '../../src/shared/open.js';
import { demoIdentityYaml } from '../helpers/stack.js';

const parse = (state: string) => parseConfig(`${demoIdentityYaml('/nonexistent')}${state}`, 'caregate.yaml');
const problems = (state: string): string[] => {
  try {
    parse(state);
  } catch (err) {
    if (err instanceof ConfigError) return err.problems;
    throw err;
  }
  return [];
};

describe('the state section', () => {
  it('defaults to memory: one instance, what the two-command demo runs', () => {
    expect(parse('').config.state).toEqual({ mode: 'memory' });
  });

  it('takes a Redis URL, its TLS files and the names of the variables holding its credentials', () => {
    const { state } = parse(
      'state: { mode: redis, redis: { url: "rediss://redis.chu.example:6380/2", usernameEnv: CAREGATE_REDIS_USERNAME, passwordEnv: CAREGATE_REDIS_PASSWORD, tls: { caFile: ca.pem }, keyPrefix: "chu-a:" }, pagingSecretEnv: CAREGATE_PAGING_SECRET }',
    ).config;
    expect(state).toMatchObject({ mode: 'redis', redis: { url: 'rediss://redis.chu.example:6380/2', keyPrefix: 'chu-a:', connectTimeoutMs: 2000, commandTimeoutMs: 1000 } });
  });

  it('reports each problem at its dotted path', () => {
    expect(problems('state: { mode: redis }')).toEqual(['caregate.yaml: state.redis: required with mode: redis (at least url)']);
    expect(problems('state: { mode: redis, redis: { url: "redis://caregate:secret@redis:6379" } }')[0]).toMatch(/state\.redis\.url: no credentials in the URL/);
    expect(problems('state: { mode: redis, redis: { url: "http://redis:6379" } }')[0]).toMatch(/state\.redis\.url: a URL such as redis:/);
    expect(problems('state: { mode: redis, redis: { url: "redis://redis:6379", tls: { caFile: ca.pem } } }')[0]).toMatch(/state\.redis\.tls: TLS options need a rediss:\/\/ URL/);
    expect(problems('state: { mode: redis, redis: { url: "redis://redis", keyPrefix: "a b" } }')[0]).toMatch(/state\.redis\.keyPrefix/);
    expect(problems('state: { mode: redis, redis: { url: "redis://redis", password: "x" } }')[0]).toMatch(/state\.redis: unknown key "password"/);
    expect(problems('state: { redis: { url: "redis://redis" } }')[0]).toMatch(/state\.redis: set mode: redis/);
  });

  it('reads credentials and the paging secret from the environment only, and refuses to start without them', async () => {
    const loaded = parse('state: { mode: redis, redis: { url: "redis://127.0.0.1:1", passwordEnv: TEST_REDIS_PASSWORD }, pagingSecretEnv: TEST_PAGING_SECRET }');
    const err = await openSharedState(loaded, { logger: pino({ level: 'silent' }), env: { TEST_PAGING_SECRET: 'abcd' } }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(ConfigError);
    expect((err as ConfigError).problems).toEqual([
      expect.stringMatching(/state\.pagingSecretEnv: TEST_PAGING_SECRET must hold at least 32 bytes/),
      expect.stringMatching(/state\.redis\.passwordEnv: the environment variable TEST_REDIS_PASSWORD is not set/),
    ]);
  });

  it('seals paging links with a configured secret the same way on every instance, in memory mode too', async () => {
    const loaded = parse('state: { pagingSecretEnv: TEST_PAGING_SECRET }');
    const env = { TEST_PAGING_SECRET: 'ab'.repeat(32) };
    const [x, y] = await Promise.all([openSharedState(loaded, { logger: pino({ level: 'silent' }), env }), openSharedState(loaded, { logger: pino({ level: 'silent' }), env })]);
    expect(x.pagingKey().equals(y.pagingKey())).toBe(true);
    expect(x.pagingKey().toString('hex')).not.toContain('abab');
  });
});
