import { z } from 'zod';
import { SEED_DEFAULTS, type SeedOptions } from './seed.js';

/**
 * The `demo:` section: the embedded demo FHIR engine and the synthetic hospital it serves.
 * Sizes are capped where searches stop answering in milliseconds (see docs/DEMO-HOSPITAL.md).
 */
export const demoConfigSchema = z
  .object({
    seed: z
      .number()
      .int()
      .nonnegative()
      .default(SEED_DEFAULTS.seed)
      .describe('Seed of the pseudo-random generator: the same seed and sizes give the same hospital.'),
    patients: z
      .number()
      .int()
      .min(0)
      .max(20_000)
      .default(SEED_DEFAULTS.patients)
      .describe('Generated patients, on top of the 31 fixed fixture patients (about 15 resources each).'),
    practitioners: z
      .number()
      .int()
      .min(13)
      .max(2_000)
      .default(SEED_DEFAULTS.practitioners)
      .describe('Practitioners in total, the 8 personas included (at least one physician per clinical service).'),
    observationsPerPatient: z
      .number()
      .int()
      .min(0)
      .max(100)
      .default(SEED_DEFAULTS.observationsPerPatient)
      .describe('Observations per generated patient.'),
    port: z
      .number()
      .int()
      .min(0)
      .max(65_535)
      .optional()
      .describe('Port of the demo FHIR engine (127.0.0.1 only); 0 or absent picks a free port.'),
  })
  .strict()
  .describe('Embedded demo FHIR engine and synthetic hospital (never for production data).');

export type DemoConfig = z.infer<typeof demoConfigSchema>;

/** Seed options for `seedHospital` / `startDemoFhir` from the `demo:` section. */
export function seedOptionsFromConfig(config: DemoConfig): SeedOptions {
  return {
    seed: config.seed,
    patients: config.patients,
    practitioners: config.practitioners,
    observationsPerPatient: config.observationsPerPatient,
  };
}
