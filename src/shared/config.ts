import { z } from 'zod';

/** An environment variable's name (credentials are read from the environment only). */
const envName = z.string().regex(/^[A-Za-z_][A-Za-z0-9_]*$/, 'an environment variable name such as CAREGATE_REDIS_PASSWORD');

const redisUrl = z
  .string()
  .refine((u) => {
    try {
      const p = new URL(u);
      return (p.protocol === 'redis:' || p.protocol === 'rediss:') && p.hostname !== '';
    } catch {
      return false;
    }
  }, 'a URL such as redis://redis:6379/0, or rediss://… for TLS')
  .refine((u) => {
    try {
      const p = new URL(u);
      return p.username === '' && p.password === '';
    } catch {
      return true;
    }
  }, 'no credentials in the URL: name their environment variables in usernameEnv and passwordEnv')
  .refine((u) => {
    try {
      return /^\/?(\d{1,2})?$/.test(new URL(u).pathname);
    } catch {
      return true;
    }
  }, 'the path is a database number (redis://host:6379/0)');

/** `state.redis`: where the shared state lives when several instances run. */
export const redisStateSchema = z
  .object({
    url: redisUrl.describe('redis://host:6379/<db>, or rediss://… for TLS. Redis 6.2+ or Valkey. Credentials never here.'),
    usernameEnv: envName.optional().describe('Environment variable holding the Redis ACL user name.'),
    passwordEnv: envName.optional().describe('Environment variable holding the Redis password (ACL user or requirepass).'),
    tls: z
      .object({
        caFile: z.string().min(1).optional().describe('CA bundle the Redis server certificate is checked against (default: the system CAs).'),
        certFile: z.string().min(1).optional().describe('Client certificate, when Redis asks for mutual TLS.'),
        keyFile: z.string().min(1).optional().describe('Key of the client certificate.'),
        serverName: z.string().min(1).optional().describe('Name expected in the server certificate, when it differs from the URL host.'),
      })
      .strict()
      .optional()
      .describe('TLS options; the URL must then be rediss://.'),
    keyPrefix: z
      .string()
      .regex(/^[A-Za-z0-9:_.-]{1,64}$/, 'letters, digits, ":", "_", "." or "-"')
      .default('caregate:')
      .describe('Prefix of every key and channel: one per establishment when several share one Redis (a GHT).'),
    connectTimeoutMs: z.number().int().min(100).max(60_000).default(2000).describe('Time allowed to connect; reconnection is retried every second.'),
    commandTimeoutMs: z
      .number()
      .int()
      .min(50)
      .max(30_000)
      .default(1000)
      .describe('Time allowed for one Redis command (opening a grant); then 503, never a grant.'),
  })
  .strict();

/**
 * `state`: where the state several instances must share lives (break-the-glass grants, cache
 * invalidations, the paging-link key). `memory`, the default, is one instance on its own.
 */
export const stateConfigSchema = z
  .object({
    mode: z
      .enum(['memory', 'redis'])
      .default('memory')
      .describe('memory: one instance, state in its process (a restart ends grants). redis: several instances share it through Redis.'),
    redis: redisStateSchema.optional().describe('Required with mode: redis.'),
    pagingSecretEnv: envName
      .optional()
      .describe(
        'Environment variable holding a secret (at least 32 bytes, hex or base64) paging links are sealed with, the same on every instance. Without it: a random key per process (memory), or one generated once and kept in Redis (redis).',
      ),
  })
  .strict()
  .superRefine((s, ctx) => {
    if (s.mode === 'redis' && !s.redis) ctx.addIssue({ code: 'custom', path: ['redis'], message: 'required with mode: redis (at least url)' });
    if (s.mode === 'memory' && s.redis) ctx.addIssue({ code: 'custom', path: ['redis'], message: 'set mode: redis to use it, or remove it' });
    const r = s.redis;
    if (r?.tls && !r.url.startsWith('rediss:')) ctx.addIssue({ code: 'custom', path: ['redis', 'tls'], message: 'TLS options need a rediss:// URL' });
    if (r?.tls && Boolean(r.tls.certFile) !== Boolean(r.tls.keyFile)) {
      ctx.addIssue({ code: 'custom', path: ['redis', 'tls'], message: 'certFile and keyFile go together' });
    }
  });

export type StateConfig = z.infer<typeof stateConfigSchema>;
export type RedisStateConfig = z.infer<typeof redisStateSchema>;
