import { z } from 'zod';

/**
 * The `oversight:` section: what the DIM is told while it matters. Detectors over the live stream of
 * AuditEvents raise alerts (webhook, log, Prometheus) within a minute; break-the-glass openings left
 * without a verdict are alerted after `breakGlassReview.dueDays`. Who may see what stays in the
 * policy file; this section only says what is worth an alert.
 */

const httpUrl = z
  .string()
  .url()
  .refine((u) => /^https?:\/\//.test(u), 'an http(s) URL');

const coding = z
  .string()
  .regex(/^[^|\s]+\|[^|\s]+$/, 'system|code')
  .describe('A label as system|code, found in the Patient’s meta.security or meta.tag.');

const PATIENT_ID = /^[A-Za-z0-9\-.]{1,64}$/;
const ROLE_ID = /^[a-z][a-z0-9-]*$/;

const ignoreRoles = z
  .array(z.string().regex(ROLE_ID, 'a policy role id'))
  .default([])
  .describe('Policy roles whose users this detector does not watch (e.g. the DIM for distinct patients).');
const window = (minutes: number) => z.number().int().min(1).max(7 * 24 * 60).default(minutes).describe('Length of the sliding window, in minutes.');

export const oversightConfigSchema = z
  .object({
    enabled: z.boolean().default(true).describe('Run the detectors and the overdue-review sweep.'),
    dir: z
      .string()
      .min(1)
      .default('var/oversight')
      .describe('Where the alert outbox and the detectors’ state are kept (relative to this file); one per instance, like the spool. It holds user and patient references: protect it like the spool.'),
    webhook: z
      .object({
        url: httpUrl.describe('Where alerts are POSTed as JSON.'),
        headers: z.record(z.string(), z.string()).default({}).describe('Extra headers (e.g. a static Authorization of the receiver).'),
        secretEnv: z
          .string()
          .regex(/^[A-Z_][A-Z0-9_]*$/)
          .optional()
          .describe('Name of an environment variable holding a secret: each POST then carries `x-caregate-signature: sha256=<HMAC of the body>`.'),
        timeoutMs: z.number().int().positive().default(5000).describe('Time allowed for one delivery.'),
        backoff: z
          .object({
            initialMs: z.number().int().positive().default(1000),
            maxMs: z.number().int().positive().default(60_000),
          })
          .strict()
          .prefault({})
          .describe('Exponential backoff between failed deliveries (an alert is retried until delivered).'),
      })
      .strict()
      .optional()
      .describe('Without a webhook, alerts go to the log and to Prometheus only.'),
    stateIntervalSeconds: z.number().int().min(1).max(3600).default(10).describe('How often the detectors’ windows are written to disk (and at shutdown).'),
    cooldownMinutes: z
      .number()
      .int()
      .min(1)
      .max(7 * 24 * 60)
      .default(60)
      .describe('Once a rule alerted on a user (and patient), it stays quiet about them this long.'),
    detectors: z
      .object({
        breakGlassBurst: z
          .object({
            enabled: z.boolean().default(true),
            count: z.number().int().min(1).default(3).describe('Alert when one user opens this many break-the-glass grants within the window.'),
            windowMinutes: window(60),
            ignoreRoles,
          })
          .strict()
          .prefault({}),
        distinctPatients: z
          .object({
            enabled: z.boolean().default(true),
            max: z.number().int().min(1).default(50).describe('Alert when one user opens more than this many distinct patients within the window.'),
            windowMinutes: window(60),
            ignoreRoles,
          })
          .strict()
          .prefault({}),
        refusals: z
          .object({
            enabled: z.boolean().default(true),
            count: z.number().int().min(1).default(10).describe('Alert when one user (or one client address failing to identify) is refused this many times within the window: probing.'),
            windowMinutes: window(10),
            ignoreRoles,
          })
          .strict()
          .prefault({}),
        sensitivePatients: z
          .object({
            enabled: z.boolean().default(true),
            staffPatients: z.array(z.string().regex(PATIENT_ID)).default([]).describe('Patient ids of staff members.'),
            flaggedPatients: z.array(z.string().regex(PATIENT_ID)).default([]).describe('Patient ids flagged for monitoring (public figures, victims, protected persons).'),
            staffLabels: z
              .array(coding)
              .default(['http://terminology.hl7.org/CodeSystem/v3-ActCode|EMP'])
              .describe('Labels marking a Patient as a staff member (HL7 v3-ActCode EMP: employee information sensitivity).'),
            flaggedLabels: z
              .array(coding)
              .default(['http://terminology.hl7.org/CodeSystem/v3-ActCode|CEL', 'http://terminology.hl7.org/CodeSystem/v3-ActCode|VIP'])
              .describe('Labels marking a Patient as flagged (v3-ActCode CEL/VIP: celebrity information sensitivity).'),
            sameSurname: z.boolean().default(true).describe('Alert when a user opens a patient who shares a family name with her.'),
            refusals: z.boolean().default(true).describe('Alert on refused attempts too, not only on accesses granted.'),
            lookupCacheMinutes: z.number().int().min(1).max(1440).default(10).describe('How long a Patient’s labels and names, and a Practitioner’s names, are kept in memory.'),
            ignoreRoles,
          })
          .strict()
          .prefault({}),
        offHours: z
          .object({
            enabled: z.boolean().default(false),
            count: z.number().int().min(1).default(1).describe('Alert when one user makes this many accesses outside usual hours (audit.review hours) within the window.'),
            windowMinutes: window(60),
            ignoreRoles,
          })
          .strict()
          .prefault({}),
      })
      .strict()
      .prefault({}),
    breakGlassReview: z
      .object({
        dueDays: z.number().int().min(1).max(365).default(7).describe('A break-the-glass opening without the DIM’s verdict is overdue after this many days: flagged in the review and alerted.'),
        sweepMinutes: z.number().int().min(1).max(24 * 60).default(60).describe('How often the trail is read for overdue openings.'),
        lookbackDays: z.number().int().min(1).max(366).default(92).describe('How far back the sweep looks for openings.'),
      })
      .strict()
      .prefault({}),
  })
  .strict()
  .superRefine((o, ctx) => {
    if (o.breakGlassReview.lookbackDays <= o.breakGlassReview.dueDays) {
      ctx.addIssue({ code: 'custom', path: ['breakGlassReview', 'lookbackDays'], message: 'must be longer than dueDays' });
    }
    if (o.webhook && o.webhook.backoff.initialMs > o.webhook.backoff.maxMs) {
      ctx.addIssue({ code: 'custom', path: ['webhook', 'backoff', 'initialMs'], message: 'initialMs must not exceed maxMs' });
    }
  });

export type OversightConfig = z.infer<typeof oversightConfigSchema>;
export type DetectorsConfig = OversightConfig['detectors'];
