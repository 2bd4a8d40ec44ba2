import { z } from 'zod';
import { loggingSchema, metricsSchema, serverSchema, upstreamSchema } from './schema.js';
import { identityConfigSchema } from '../identity/config.js';
import { auditConfigSchema } from '../audit/config.js';
import { stateConfigSchema } from '../shared/config.js';
import { notificationsSchema } from '../notify/config.js';
import { oversightConfigSchema } from '../oversight/config.js';

const policyRefSchema = z
  .object({
    file: z.string().min(1).default('policy.yaml').describe('The policy file, relative to this file.'),
    watch: z.boolean().default(true).describe('Reload the policy when the file changes (SIGHUP always reloads).'),
    shadowFile: z
      .string()
      .min(1)
      .optional()
      .describe('A candidate policy evaluated beside the active one; differences are logged, responses unaffected.'),
  })
  .strict();

const demoSchema = z
  .object({
    seed: z.number().int().default(42),
    patients: z.number().int().min(10).max(100_000).default(2000),
    keysDir: z.string().default('../var/demo-keys').describe('Where the demo token issuer keeps its keys, relative to this file.'),
    linksFromForwardedHeaders: z
      .boolean()
      .default(false)
      .describe('The demo engine builds links, fullUrl and Location from the forwarded headers caregate sends, as HAPI FHIR does behind a proxy.'),
    pkiDir: z
      .string()
      .default('../var/demo-pki')
      .describe('Where the demo PKI is written (test card CA and CRL, a CPS-shaped card for the clinician, a server certificate).'),
  })
  .strict();

/** The whole caregate.yaml: deployment sections plus each stage's own section. */
export const configSchema = z
  .object({
    server: serverSchema.prefault({}),
    upstream: upstreamSchema.prefault({}),
    logging: loggingSchema.prefault({}),
    metrics: metricsSchema.prefault({}),
    identity: identityConfigSchema,
    audit: auditConfigSchema.prefault({}),
    notifications: notificationsSchema.prefault({}).describe('How the patient and her attending physician are told of a break-the-glass opening.'),
    policy: policyRefSchema.prefault({}),
    state: stateConfigSchema.prefault({}).describe('State shared by several instances (break-the-glass grants, cache invalidation, the paging-link key): memory or redis.'),
    demo: demoSchema.prefault({}).describe('The embedded demo hospital, used when upstream.url is null.'),
    oversight: oversightConfigSchema.prefault({}).describe('Alerts to the DIM within a minute (detectors, webhook) and the overdue break-the-glass reviews.'),
  })
  .strict();

export type Config = z.infer<typeof configSchema>;
