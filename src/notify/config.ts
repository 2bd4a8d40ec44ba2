import { z } from 'zod';

/**
 * The `notifications:` section: how the patient and her attending physician are told of a
 * break-the-glass opening (docs/PATIENT-RIGHTS.md). Where the messages go is deployment business
 * (a webhook URL, its credentials), hence this file rather than the policy.
 */

const httpUrl = z
  .string()
  .url()
  .refine((u) => /^https?:\/\//.test(u), 'an http(s) URL')
  .transform((u) => u.replace(/\/+$/, ''));

const breakGlassNotificationsSchema = z
  .object({
    channel: z
      .enum(['communication', 'webhook', 'none'])
      .default('communication')
      .describe('communication: FHIR Communication resources written to the upstream; webhook: a JSON POST; none: nobody is told.'),
    webhook: z
      .object({
        url: httpUrl.describe('Where the JSON notification is POSTed (with Idempotency-Key: the opening’s event id).'),
        headers: z.record(z.string(), z.string()).optional().describe('Extra headers (e.g. its Authorization).'),
        timeoutMs: z.number().int().positive().default(10_000),
      })
      .strict()
      .optional(),
    recipients: z
      .array(z.enum(['patient', 'attending']))
      .min(1)
      .default(['patient', 'attending'])
      .describe('Who is told: the patient, and her attending physician.'),
    attending: z
      .object({
        encounterParticipantTypes: z
          .array(z.string().min(1))
          .default(['ATND'])
          .describe('v3-ParticipationType codes of the participant of her current stay who is her attending physician.'),
        careTeamRoles: z
          .array(z.string().regex(/^[^|\s]+\|[^|\s]+$/, 'system|code'))
          .default([])
          .describe('CareTeam.participant.role codings (system|code) naming the attending physician when no current stay does.'),
      })
      .strict()
      .prefault({}),
    language: z.enum(['fr', 'en']).default('fr').describe('Language of the messages.'),
    timeZone: z.string().default('Europe/Paris').describe('Time zone of the dates in the messages.'),
    retry: z
      .object({
        initialMs: z.number().int().positive().default(1000),
        maxMs: z.number().int().positive().default(300_000),
      })
      .strict()
      .prefault({})
      .describe('Backoff between attempts; a notification is retried until it is sent.'),
    reconcile: z
      .object({
        intervalMs: z.number().int().min(1000).default(60_000).describe('How often the trail is read for openings not yet notified.'),
        days: z.number().int().min(1).max(92).default(7).describe('How far back the trail is read.'),
      })
      .strict()
      .prefault({}),
  })
  .strict()
  .superRefine((n, ctx) => {
    if (n.channel === 'webhook' && !n.webhook) ctx.addIssue({ code: 'custom', path: ['webhook'], message: 'required when channel is "webhook"' });
  });

export const notificationsSchema = z
  .object({
    breakGlass: breakGlassNotificationsSchema.prefault({}),
  })
  .strict();

export type NotificationsConfig = z.infer<typeof notificationsSchema>;
export type BreakGlassNotificationsConfig = NotificationsConfig['breakGlass'];
