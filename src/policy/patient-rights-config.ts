import { z } from 'zod';

/**
 * `policy.patientRights`: the patient's rights over the sharing of her record (docs/PATIENT-RIGHTS.md).
 * Who may write an opposition is per role (`relationshipWrites: [Consent.opposition]`); what
 * caregate does with oppositions, the access history and documents awaiting release is here.
 */

const holdRuleSchema = z
  .object({
    resourceType: z.string().regex(/^[A-Z][A-Za-z]+$/, 'a FHIR resource type').describe('The type whose resources are held back.'),
    element: z.enum(['status', 'docStatus']).describe('The coded element compared (DocumentReference.docStatus, DiagnosticReport.status…).'),
    values: z.array(z.string().min(1)).min(1).describe('Values of that element that keep the resource back until a physician releases it.'),
  })
  .strict();

export type HoldRule = z.infer<typeof holdRuleSchema>;

/** Documents and results not yet validated: preliminary documents and reports, results not final. */
export const DEFAULT_HOLD_RULES: HoldRule[] = [
  { resourceType: 'DocumentReference', element: 'docStatus', values: ['preliminary'] },
  { resourceType: 'Composition', element: 'status', values: ['preliminary'] },
  { resourceType: 'DiagnosticReport', element: 'status', values: ['registered', 'partial', 'preliminary'] },
  { resourceType: 'Observation', element: 'status', values: ['registered', 'preliminary'] },
];

export const patientRightsSchema = z
  .object({
    oppositions: z
      .object({
        enabled: z
          .boolean()
          .default(true)
          .describe('Read the patients’ oppositions (Consent, provision.type deny) and refuse the actors they name (CSP L1110-4).'),
        breakGlassOverrides: z
          .boolean()
          .default(true)
          .describe('A break-the-glass grant (a vital emergency) opens a record the patient opposed; the AuditEvent names the overridden Consent.'),
      })
      .strict()
      .prefault({}),
    accessHistory: z
      .object({
        enabled: z
          .boolean()
          .default(true)
          .describe('Patients and their mandated persons list the accesses to their record (AuditEvent, reduced view; the page /caregate/my-record/accesses).'),
        maxEvents: z
          .number()
          .int()
          .min(100)
          .max(100_000)
          .default(5000)
          .describe('Most AuditEvents one view of the page loads; a longer history is narrowed by period (from, to).'),
      })
      .strict()
      .prefault({}),
    release: z
      .object({
        holdBack: z
          .array(holdRuleSchema)
          .default(DEFAULT_HOLD_RULES)
          .describe('Resources kept out of the patient’s and mandated person’s view until a physician releases them (changes the status).'),
        holdBackLabels: z
          .array(z.string().regex(/^[^|\s]+\|[^|\s]+$/, 'system|code'))
          .default([])
          .describe('Security labels (meta.security, system|code) that keep a resource back until a physician removes the label.'),
      })
      .strict()
      .prefault({}),
  })
  .strict();

export type PatientRightsConfig = z.infer<typeof patientRightsSchema>;
