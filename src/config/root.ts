import { z } from 'zod';
import { loggingSchema, metricsSchema, serverSchema, upstreamSchema } from './schema.js';

/** The whole caregate.yaml. Sections of later stages are added here as they land. */
export const configSchema = z
  .object({
    server: serverSchema.default(serverSchema.parse({})),
    upstream: upstreamSchema.default(upstreamSchema.parse({})),
    logging: loggingSchema.default(loggingSchema.parse({})),
    metrics: metricsSchema.default(metricsSchema.parse({})),
  })
  .strict();

export type Config = z.infer<typeof configSchema>;
