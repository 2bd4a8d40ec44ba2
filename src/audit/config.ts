import { z } from 'zod';

/**
 * The `audit:` section: how AuditEvents are made durable, where they are shipped and how the DIM
 * review flags unusual access. Who may read the trail is the policy's business (`roles[].readAudit`),
 * so that one file says who sees what; nobody writes or deletes AuditEvents through caregate.
 */

const httpUrl = z
  .string()
  .url()
  .refine((u) => /^https?:\/\//.test(u), 'an http(s) URL')
  .transform((u) => u.replace(/\/+$/, ''));

const backoffSchema = z
  .object({
    initialMs: z.number().int().positive().default(500).describe('First wait after a failed shipment.'),
    maxMs: z.number().int().positive().default(60_000).describe('Longest wait between two shipment attempts.'),
  })
  .strict()
  .refine((b) => b.initialMs <= b.maxMs, { message: 'initialMs must not exceed maxMs', path: ['initialMs'] });

export const auditShipSchema = z
  .object({
    target: z
      .enum(['upstream', 'url'])
      .default('upstream')
      .describe('Where AuditEvents go: the upstream FHIR server, or a separate audit FHIR server at `url`.'),
    url: httpUrl.optional().describe('Base URL of the separate audit FHIR server (target: url).'),
    headers: z
      .record(z.string(), z.string())
      .optional()
      .describe('Extra headers for the audit server (e.g. its Authorization). With target: upstream, the upstream credentials are used.'),
    batchSize: z.number().int().min(1).max(5000).default(200).describe('AuditEvents per transaction Bundle.'),
    intervalMs: z.number().int().positive().default(1000).describe('Pause between shipments when the spool is drained.'),
    timeoutMs: z.number().int().positive().default(30_000).describe('Time allowed for one shipment.'),
    backoff: backoffSchema.prefault({}).describe('Exponential backoff after a failed shipment.'),
  })
  .strict()
  .superRefine((s, ctx) => {
    if (s.target === 'url' && !s.url) ctx.addIssue({ code: 'custom', path: ['url'], message: 'required when target is "url"' });
    if (s.target === 'upstream' && s.url) {
      ctx.addIssue({ code: 'custom', path: ['url'], message: 'only meaningful with target: url' });
    }
  });

const hourOfDay = z.number().int().min(0).max(23);

export const auditReviewSchema = z
  .object({
    timeZone: z.string().default('Europe/Paris').describe('Time zone in which "usual hours" are judged.'),
    offHoursStart: hourOfDay.default(20).describe('Hour (0-23) from which an access counts as outside usual hours.'),
    offHoursEnd: hourOfDay.default(7).describe('Hour (0-23) until which an access counts as outside usual hours.'),
    weekends: z.boolean().default(true).describe('Whether every access on Saturday or Sunday counts as outside usual hours.'),
    unusualMinPatients: z
      .number()
      .int()
      .positive()
      .default(20)
      .describe('A user is flagged when they opened more distinct patients than this AND than the others\' mean + 3σ.'),
    unusualThreshold: z
      .number()
      .int()
      .positive()
      .optional()
      .describe('Fixed threshold: flag every user who opened more distinct patients than this, whatever the others did.'),
    maxDays: z
      .number()
      .int()
      .min(1)
      .max(366)
      .default(92)
      .describe('Longest period one view of the review served by caregate (/caregate/review) may cover; `caregate review` has no limit.'),
    maxEvents: z
      .number()
      .int()
      .min(500)
      .max(1_000_000)
      .default(50_000)
      .describe(
        'Most AuditEvents one served view loads (in pages of 500); a longer trail is refused with a request to narrow the period, so that a review never exhausts the memory of the proxy clinicians depend on.',
      ),
  })
  .strict()
  .refine((r) => r.offHoursStart !== r.offHoursEnd, { message: 'offHoursStart and offHoursEnd must differ', path: ['offHoursEnd'] })
  .refine((r) => isTimeZone(r.timeZone), { message: 'an IANA time zone such as Europe/Paris', path: ['timeZone'] });

export const auditConfigSchema = z
  .object({
    mode: z
      .enum(['strict', 'async'])
      .default('strict')
      .describe(
        'strict: the AuditEvent is fsync\'ed to the spool before the response is released. async: the response does not wait for the disk (an event may be lost on power failure).',
      ),
    spoolDir: z.string().min(1).default('var/audit').describe('Directory of the append-only spool (segment files and the shipping cursor).'),
    segmentMaxBytes: z
      .number()
      .int()
      .min(64 * 1024)
      .default(64 * 1024 * 1024)
      .describe('Size after which a new segment file is started; a segment no longer written is deleted once fully shipped.'),
    groupCommitMaxDelayMs: z
      .number()
      .min(0)
      .max(50)
      .default(0)
      .describe(
        'Extra time an append on an idle spool waits for companions before the write. Appends arriving while a write is in flight always share the next fsync, so 0 still batches under load.',
      ),
    maxSyncsInFlight: z
      .number()
      .int()
      .min(1)
      .max(16)
      .default(4)
      .describe(
        'fdatasyncs allowed to overlap (writes stay one at a time). On a busy disk a request then waits for one sync rather than for the end of the previous one too; 1 = strictly serial.',
      ),
    failureRetryMs: z.number().int().positive().default(1000).describe('How often a failed spool (full disk, I/O error) is probed for recovery.'),
    ship: auditShipSchema.prefault({}),
    site: z.string().min(1).default('caregate').describe('AuditEvent.source.site: the name of this installation.'),
    review: auditReviewSchema.prefault({}),
  })
  .strict();

export type AuditConfig = z.infer<typeof auditConfigSchema>;
export type AuditShipConfig = z.infer<typeof auditShipSchema>;
export type AuditReviewConfig = z.infer<typeof auditReviewSchema>;

function isTimeZone(tz: string): boolean {
  try {
    new Intl.DateTimeFormat('en', { timeZone: tz });
    return true;
  } catch {
    return false;
  }
}
