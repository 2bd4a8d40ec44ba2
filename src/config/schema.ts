import { z } from 'zod';
import { parseCidr } from '../http/addresses.js';

/**
 * The root configuration schema: one YAML file, validated once at start, then frozen.
 * Each pipeline stage owns the schema of its own section (`src/<stage>/config.ts`); this file
 * only composes them and holds the deployment sections (server, upstream, logging, metrics).
 * Objects are strict: an unknown key is a typo until proven otherwise, and is reported.
 */

const bytes = z
  .union([z.number().int().positive(), z.string().regex(/^\d+(\.\d+)?\s*(b|kb|mb|gb)$/i, 'a size such as "5mb"')])
  .transform((v) => (typeof v === 'number' ? v : parseBytes(v)));

export function parseBytes(v: string): number {
  const m = /^(\d+(?:\.\d+)?)\s*(b|kb|mb|gb)$/i.exec(v.trim());
  if (!m) throw new TypeError(`not a size: ${v}`);
  const unit = { b: 1, kb: 1024, mb: 1024 ** 2, gb: 1024 ** 3 }[m[2]!.toLowerCase() as 'b'];
  return Math.round(Number(m[1]) * unit);
}

const httpUrl = z
  .string()
  .url()
  .refine((u) => /^https?:\/\//.test(u), 'an http(s) URL')
  .transform((u) => u.replace(/\/+$/, ''));

export const serverSchema = z
  .object({
    host: z.string().default('0.0.0.0').describe('Address to listen on.'),
    port: z.number().int().min(0).max(65535).default(8080),
    basePath: z
      .string()
      .regex(/^\/[A-Za-z0-9._~\-/]*[^/]$|^\/$/, 'a path such as "/fhir" without trailing slash')
      .default('/fhir')
      .describe('Path under which the FHIR API is served.'),
    publicBaseUrl: httpUrl
      .optional()
      .describe('The FHIR base URL clients use (e.g. https://fhir.chu.example/fhir). Defaults to http://localhost:<port><basePath>.'),
    tls: z
      .object({
        certFile: z.string(),
        keyFile: z.string(),
      })
      .strict()
      .optional()
      .describe('Serve HTTPS (and, with identity.certificates, mutual TLS for CPS cards).'),
    maxRequestBytes: bytes.default(5 * 1024 * 1024),
    maxResponseBytes: bytes.default(64 * 1024 * 1024),
    maxShapingBytes: bytes
      .default(4 * 1024 * 1024)
      .describe(
        'Bytes of upstream answers parsed, judged and audited at once. A larger answer waits its turn (first come, first served; one larger than this goes alone); answers of at most 1/64 of it are not counted. It bounds the memory of large pages in flight, which would otherwise outlive the young generation and load the garbage collector.',
      ),
    compression: z.boolean().default(true).describe('gzip responses for clients that accept it.'),
    keepAliveTimeoutMs: z.number().int().positive().default(65_000),
    shutdownGraceMs: z.number().int().nonnegative().default(10_000),
    trustedProxies: z
      .array(z.string().refine((s) => parseCidr(s) !== undefined, 'an IP address or CIDR block (10.0.0.0/8, fd00::/8)'))
      .default([])
      .describe(
        'The load balancers and TLS terminators in front of caregate (addresses or CIDR blocks). On a connection from one of them, the client address recorded in the AuditEvents is read from X-Forwarded-For. Empty: the TCP peer, which behind a load balancer is the balancer.',
      ),
  })
  .strict();

export const upstreamSchema = z
  .object({
    url: httpUrl
      .nullable()
      .default(null)
      .describe('Base URL of the FHIR R4 server. null: start the embedded demo hospital in-process.'),
    timeoutMs: z.number().int().positive().default(30_000).describe('Time allowed for one proxied interaction.'),
    lookupTimeoutMs: z.number().int().positive().default(5_000).describe('Time allowed for one care-set or principal lookup.'),
    maxSockets: z.number().int().positive().default(128).describe('Pooled keep-alive connections to the upstream.'),
    client: z
      .enum(['undici', 'http-proxy'])
      .default('undici')
      .describe('How proxied requests are sent: an undici pool (less CPU per request), or http-proxy-middleware over a node:http agent.'),
    forwardedHeaders: z
      .boolean()
      .default(true)
      .describe(
        'Send Forwarded / X-Forwarded-Host / X-Forwarded-Proto / X-Forwarded-For with caregate’s public address. A proxy-aware server (HAPI with its proxy address strategy) then builds links, fullUrl and Location on caregate’s public base; caregate recognises both.',
      ),
    publicBaseAliases: z
      .array(httpUrl)
      .default([])
      .describe(
        'Other base URLs the FHIR server may answer with (its own public name, the base it builds from forwarded headers when its path differs from caregate’s): links, fullUrl, Location and references on them are recognised as the server’s own.',
      ),
    binaryOwnerSearches: z
      .array(
        z
          .object({
            type: z.enum(['DiagnosticReport', 'Media', 'DocumentReference']),
            param: z.string().regex(/^[a-z][a-z0-9-]*$/, 'a search parameter name'),
          })
          .strict(),
      )
      .default([])
      .describe(
        'Searches that find the resources pointing at a Binary stored without securityContext, besides DocumentReference?location= (standard). E.g. a custom SearchParameter on DiagnosticReport.presentedForm.url.',
      ),
    auth: z
      .discriminatedUnion('type', [
        z.object({ type: z.literal('none') }).strict(),
        z
          .object({
            type: z.literal('bearer'),
            tokenEnv: z.string().optional().describe('Environment variable holding the service token.'),
            tokenFile: z.string().optional().describe('File holding the service token.'),
          })
          .strict()
          .refine((a) => Boolean(a.tokenEnv) !== Boolean(a.tokenFile), 'exactly one of tokenEnv or tokenFile'),
        z
          .object({
            type: z.literal('mtls'),
            certFile: z.string(),
            keyFile: z.string(),
            caFile: z.string().optional(),
          })
          .strict(),
      ])
      .default({ type: 'none' })
      .describe("The proxy's own credential towards the upstream; the user's token never goes there."),
  })
  .strict();

export const loggingSchema = z
  .object({
    level: z.enum(['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent']).default('info'),
  })
  .strict();

export const metricsSchema = z
  .object({
    enabled: z.boolean().default(true),
    path: z.string().regex(/^\/[A-Za-z0-9._\-/]+$/).default('/metrics'),
  })
  .strict();
