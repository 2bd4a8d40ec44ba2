import { z } from 'zod';
import { careRelationshipsSchema } from '../relate/config.js';
import { contractorOf, engagementSchema } from './engagement.js';
import { patientRightsSchema } from './patient-rights-config.js';
import { minimisationSchema } from './minimisation.js';
import { RELATIONSHIP_WRITES } from './relationships.js';

/**
 * The policy file: who may see what. Tuned by the hospital's security team and DIM, separate from
 * the deployment config so that it can be reloaded, shadowed and tested on its own.
 *
 * Roles are tried in file order; the first whose `match` fits the caller applies (like firewall
 * rules: explicit and explainable). A caller no role matches is refused everything.
 */

const matchSchema = z
  .object({
    idpRoles: z.array(z.string().min(1)).optional().describe('Any of these roles in the token (e.g. Keycloak realm roles).'),
    groups: z.array(z.string().min(1)).optional().describe('Any of these groups in the token.'),
    professionCodes: z.array(z.string().regex(/^\d{2}$/)).optional().describe('Any of these TRE-G15 profession codes (token or CPS card).'),
    practitionerRoleCodes: z
      .array(z.string().regex(/^[^|\s]+\|[^|\s]+$/, 'system|code'))
      .optional()
      .describe('Any of these PractitionerRole.code codings (system|code) on an active role.'),
    principalKind: z.enum(['practitioner', 'patient', 'related-person']).optional(),
    cardPresented: z.boolean().optional().describe('Only when a CPS card certificate was presented (true) or not (false).'),
  })
  .strict()
  .refine((m) => Object.values(m).some((v) => v !== undefined), 'at least one condition');

export const PROFILES = ['care-team', 'all-records', 'own-record', 'mandate', 'administrative', 'de-identified', 'none'] as const;
export type AccessProfile = (typeof PROFILES)[number];

const SEARCH_FEATURES = ['_has', '_filter', '_query', '_contained', '_list', '_include:*', 'chain', 'system-search', 'type-history'] as const;
export type SearchFeature = (typeof SEARCH_FEATURES)[number];

const roleSchema = z
  .object({
    id: z.string().regex(/^[a-z][a-z0-9-]*$/, 'lower-case words joined by dashes'),
    description: z.string().optional(),
    profile: z.enum(PROFILES).describe('What this role may see: ' + PROFILES.join(', ')),
    match: matchSchema,
    breakGlass: z.boolean().default(false).describe('May open break-the-glass access to one patient at a time.'),
    relationshipWrites: z
      .array(z.enum(RELATIONSHIP_WRITES))
      .default([])
      .describe('Relationship resources this role may write (trusted writers); Consent.opposition: only a patient’s oppositions (deny Consents).'),
    readAudit: z.boolean().default(false).describe('May read AuditEvents and the DIM review views.'),
    allowSearchFeatures: z.array(z.enum(SEARCH_FEATURES)).default([]),
    operations: z
      .array(z.string().regex(/^\$?[a-z][a-zA-Z-]*$/))
      .default(['everything'])
      .describe('Operations this role may call (instance level on patients it may see).'),
    purposeOfUse: z.enum(['TREAT', 'HOPERAT', 'PATRQT', 'PWATRNY', 'HMARKT', 'HQUALIMP']).default('TREAT'),
    auditSeverity: z.enum(['normal', 'high']).default('normal'),
    requireCard: z.boolean().default(false).describe('Refuse this role unless a CPS card was presented.'),
  })
  .strict();

export type RoleConfig = z.infer<typeof roleSchema>;

export const policySchema = z
  .object({
    version: z.literal(1),
    roles: z.array(roleSchema).min(1),
    careRelationships: careRelationshipsSchema.default(careRelationshipsSchema.parse({})),
    refusals: z
      .object({
        urlDecided: z
          .union([z.literal(403), z.literal(404)])
          .default(403)
          .describe('Status for a refusal decided from the URL alone (the patient id is in it).'),
      })
      .strict()
      .default({ urlDecided: 403 }),
    search: z
      .object({
        narrowMaxPatients: z
          .number()
          .int()
          .min(0)
          .max(1000)
          .default(200)
          .describe('Searches are narrowed upstream to the care set when it has at most this many patients.'),
      })
      .strict()
      .default({ narrowMaxPatients: 200 }),
    breakGlass: z
      .object({
        durationMinutes: z.number().int().min(1).max(24 * 60).default(60),
        minReasonLength: z.number().int().min(1).default(10),
        header: z
          .string()
          .regex(/^[a-z0-9-]+$/)
          .optional()
          .describe('A header of your EHR carrying the reason, besides the FHIR security-label header.'),
      })
      .strict()
      .default({ durationMinutes: 60, minReasonLength: 10 }),
    engagements: z
      .array(engagementSchema)
      .default([])
      .describe('DIM contractor engagements: the stays and kinds of data a contractor role may see, its authorised staff, under which DIM physician and contract (or, under the former rules, CNIL authorisation).'),
    timeZone: z.string().default('Europe/Paris').describe('The establishment’s time zone (engagement days).'),
    minimisation: minimisationSchema
      .prefault({})
      .describe('Only what each profession needs: the profession × data-category matrix and sensitive records (docs/POLICY.md).'),
    patientRights: patientRightsSchema.prefault({}).describe('Oppositions, the access history, documents held back until released (docs/PATIENT-RIGHTS.md).'),
    paging: z
      .object({
        linkTtlSeconds: z.number().int().min(60).max(86_400).default(3600),
      })
      .strict()
      .default({ linkTtlSeconds: 3600 }),
  })
  .strict()
  .superRefine((p, ctx) => {
    const seen = new Set<string>();
    p.roles.forEach((r, i) => {
      if (seen.has(r.id)) ctx.addIssue({ code: 'custom', path: ['roles', i, 'id'], message: `duplicate role id "${r.id}"` });
      seen.add(r.id);
      if (r.breakGlass && r.profile !== 'care-team') {
        ctx.addIssue({ code: 'custom', path: ['roles', i, 'breakGlass'], message: 'break-the-glass is only for care-team roles' });
      }
      if (r.profile === 'de-identified') {
        if (r.relationshipWrites.length || r.readAudit) {
          ctx.addIssue({ code: 'custom', path: ['roles', i, 'profile'], message: 'a de-identified role cannot write relationships or read audit' });
        }
        if (!p.engagements.some((e) => contractorOf(e).kind === 'staff' || (contractorOf(e) as { role: string }).role === r.id)) {
          ctx.addIssue({
            code: 'custom',
            path: ['roles', i, 'profile'],
            message: `the de-identified role "${r.id}" has no engagement: add one under engagements, naming its supervising DIM physician, its contract and authorised staff (CSP R6113-5, R6113-5-2)`,
          });
        }
      }
      if ((r.profile === 'own-record' || r.profile === 'mandate') && r.relationshipWrites.some((w) => w !== 'Consent.opposition')) {
        // A patient or her mandated person may record an opposition, never a relationship that grants access.
        ctx.addIssue({ code: 'custom', path: ['roles', i, 'relationshipWrites'], message: `a ${r.profile} role may only write Consent.opposition` });
      }
      if (r.profile === 'none' && (r.readAudit || r.relationshipWrites.length)) {
        ctx.addIssue({ code: 'custom', path: ['roles', i, 'profile'], message: 'a role with profile none cannot read audit or write relationships' });
      }
    });
    p.engagements.forEach((e, i) => {
      const c = contractorOf(e);
      if (c.kind === 'role' && !p.roles.some((r) => r.id === c.role && r.profile === 'de-identified')) {
        ctx.addIssue({ code: 'custom', path: ['engagements', i, 'contractor'], message: `"${c.role}" is not a role with the de-identified profile` });
      }
    });
  });

export type Policy = z.infer<typeof policySchema>;
