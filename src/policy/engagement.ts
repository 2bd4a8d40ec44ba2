import { z } from 'zod';
import { R4_RESOURCE_TYPES } from '../fhir/generated/resource-types.js';
import type { Principal } from '../identity/principal.js';

/** How dates are generalised for a contractor (shape/deid.ts applies it). */
export const DATE_MODES = ['keep', 'month', 'year'] as const;
export type DateMode = (typeof DATE_MODES)[number];

/**
 * The engagement of an outside contractor of the DIM (coding optimisation, PMSI quality): the only
 * thing that lets a role with the `de-identified` profile see anything (ARCHITECTURE.md, "Roles
 * beyond the care team").
 *
 * Why each part is there: the DIM physician is responsible for the medical information of the
 * establishment, and people outside the DIM may process it only under their authority and control
 * (CSP L6113-7, R6113-5 4°). Since decree 2023-498 (22 June 2023), R6113-5-2 sets the rules for
 * these contractors: a sub-contracting contract (GDPR art. 28) sent to the DIM physician before any
 * access, listing the services, their period and the staff authorised; each staff member
 * individually authorised by the director; access to the strictly necessary data of R6113-1,
 * within the establishment's information system; and R6113-9-2 makes the trace of their actions
 * (date, hour, person) available to the DIM physician. So an engagement names the supervising DIM
 * physician, the contract reference, the staff members, the stays and the kinds of data concerned,
 * an end date, and whether the contract asks for de-identified data.
 *
 * The former rules (CNIL decision 2013-037, 25 September 2013, formal notice to the Saint-Malo
 * hospital: an outsourced coder given DIM-level access without constant DIM supervision; a CNIL
 * authorisation per processing) are still accepted: `cnilAuthorisation` instead of
 * `contractReference`, with de-identified access.
 */

const WHY_DIM =
  'supervisingDim is required: a contractor may process medical information only under the authority of a DIM physician (CSP R6113-5; CNIL decision 2013-037)';
const WHY_CONTRACT =
  'contractReference is required: the reference of the sub-contracting contract sent to the DIM physician (CSP R6113-5-2, decree 2023-498); or cnilAuthorisation for an engagement under the former rules (CNIL decision 2013-037; CSP R6113-5)';
const WHY_CNIL =
  'cnilAuthorisation, when given, is the reference of the CNIL authorisation for this processing (CNIL decision 2013-037; CSP R6113-5)';
const WHY_STAFF =
  'staff is required with a contract: the contractor\'s staff members individually authorised by the director, each as Practitioner/<id> (CSP R6113-5-2 II and III)';

const ROLE_ID = /^[a-z][a-z0-9-]*$/;
const PRACTITIONER_REF = /^Practitioner\/[A-Za-z0-9\-.]{1,64}$/;
const FHIR_ID = /^[A-Za-z0-9\-.]{1,64}$/;

/** How the contractor sees the data: de-identified (pseudonyms, generalised dates) or identified, inside the hospital's system. */
export const ACCESS_MODES = ['de-identified', 'identified'] as const;
export type AccessMode = (typeof ACCESS_MODES)[number];

/** The kinds of data (resource types) a contractor sees when the engagement does not list them: what PMSI coding needs. */
export const DEFAULT_CATEGORIES = [
  'Patient', 'Encounter', 'Condition', 'Procedure', 'Observation', 'MedicationRequest', 'MedicationAdministration',
  'DiagnosticReport', 'ServiceRequest', 'AllergyIntolerance', 'Claim', 'ChargeItem',
] as const;
const DEIDENTIFIABLE: ReadonlySet<string> = new Set(DEFAULT_CATEGORIES);
/** Never a contractor's: the audit trail, raw attachments, and what only points elsewhere. */
const NEVER: ReadonlySet<string> = new Set(['AuditEvent', 'Binary', 'Bundle', 'Provenance', 'Consent', 'Subscription']);

const isoDate = z.iso.date({ error: 'a date as YYYY-MM-DD' });

export const engagementSchema = z
  .object({
    id: z.string().regex(ROLE_ID, 'lower-case words joined by dashes').describe('Names the engagement in audit events, errors and the trace export.'),
    contractor: z
      .string()
      .refine((c) => ROLE_ID.test(c) || PRACTITIONER_REF.test(c), 'a role id (coding-contractor) or a staff member (Practitioner/<id>)')
      .describe('Who works under this engagement: the id of a role with the de-identified profile, or one staff member as Practitioner/<id>.'),
    supervisingDim: z
      .object(
        {
          practitioner: z.string().regex(PRACTITIONER_REF, 'Practitioner/<id>').describe('The supervising DIM physician.'),
          name: z.string().min(1).optional().describe('For people reading the policy; never sent to the contractor.'),
        },
        { error: (issue) => (issue.input === undefined ? WHY_DIM : undefined) },
      )
      .strict()
      .describe('The DIM physician under whose authority and control the contractor works (CSP R6113-5, R6113-5-2).'),
    contractReference: z
      .string()
      .trim()
      .min(1, WHY_CONTRACT)
      .optional()
      .describe('Reference of the sub-contracting contract sent to the DIM physician (CSP R6113-5-2 II, decree 2023-498).'),
    cnilAuthorisation: z
      .string()
      .trim()
      .min(1, WHY_CNIL)
      .optional()
      .describe('Former rules: the reference of the CNIL authorisation for this processing (CNIL decision 2013-037). De-identified access only.'),
    staff: z
      .array(z.string().regex(PRACTITIONER_REF, 'Practitioner/<id>'))
      .min(1, WHY_STAFF)
      .refine((refs) => new Set(refs).size === refs.length, 'duplicate staff member')
      .optional()
      .describe('The contractor\'s staff members individually authorised (CSP R6113-5-2 III), each a Practitioner/<id>: only they work under this engagement.'),
    access: z
      .enum(ACCESS_MODES)
      .default('de-identified')
      .describe('de-identified (pseudonyms, generalised dates, no identifying fields) or identified (the records as they are, inside the hospital\'s system), as the contract says.'),
    categories: z
      .array(z.string().refine((t) => R4_RESOURCE_TYPES.includes(t) && !NEVER.has(t), 'a FHIR R4 resource type a contractor may read'))
      .min(1, 'list at least one kind of data, or leave categories out')
      .refine((ts) => new Set(ts).size === ts.length, 'duplicate resource type')
      .optional()
      .describe(`The kinds of data (resource types) the contract needs; default: ${DEFAULT_CATEGORIES.join(', ')}.`),
    validFrom: isoDate.describe('First day of the engagement (inclusive), in the establishment’s time zone.'),
    validUntil: isoDate.describe('Last day of the engagement (inclusive), in the establishment’s time zone.'),
    stays: z
      .union([
        z
          .array(z.string().regex(FHIR_ID, 'an Encounter id'))
          .min(1, 'list at least one stay')
          .refine((ids) => new Set(ids).size === ids.length, 'duplicate stay id'),
        z.object({ group: z.string().regex(/^Group\/[A-Za-z0-9\-.]{1,64}$/, 'Group/<id>') }).strict(),
      ])
      .describe('The stays (Encounter ids) the contractor may see, or a Group whose members are those Encounters.'),
    dateMode: z.enum(DATE_MODES).default('month').describe('De-identified access: how dates are generalised: keep, month (YYYY-MM) or year (YYYY).'),
  })
  .strict()
  .superRefine((e, ctx) => {
    // ISO dates compare as strings.
    if (e.validUntil <= e.validFrom) ctx.addIssue({ code: 'custom', path: ['validUntil'], message: 'validUntil must be after validFrom' });
    if (e.contractReference === undefined && e.cnilAuthorisation === undefined) {
      ctx.addIssue({ code: 'custom', path: ['contractReference'], message: WHY_CONTRACT });
    }
    if (e.contractReference !== undefined && e.staff === undefined && !PRACTITIONER_REF.test(e.contractor)) {
      ctx.addIssue({ code: 'custom', path: ['staff'], message: WHY_STAFF });
    }
    if (e.contractReference === undefined && e.access === 'identified') {
      ctx.addIssue({ code: 'custom', path: ['access'], message: 'identified access needs a contract under the 2023 rules (contractReference; CSP R6113-5-2 IV); under a CNIL authorisation the access is de-identified' });
    }
    if (e.access === 'de-identified') {
      (e.categories ?? []).forEach((t, i) => {
        if (!DEIDENTIFIABLE.has(t)) {
          ctx.addIssue({ code: 'custom', path: ['categories', i], message: `${t} is not de-identified by caregate: with access de-identified, choose among ${DEFAULT_CATEGORIES.join(', ')}` });
        }
      });
    }
  });

export type Engagement = z.infer<typeof engagementSchema>;

/** Who an engagement is for: every holder of a role, or one staff member. */
export type Contractor = { kind: 'role'; role: string } | { kind: 'staff'; practitioner: string };

/** Reads `engagement.contractor` (the schema guarantees one of the two forms). */
export function contractorOf(e: Pick<Engagement, 'contractor'>): Contractor {
  return PRACTITIONER_REF.test(e.contractor) ? { kind: 'staff', practitioner: e.contractor } : { kind: 'role', role: e.contractor };
}

/**
 * Whether the engagement is in force at `now`: its first and last days are inclusive, read as
 * calendar days in `timeZone` (the establishment's, Europe/Paris by default), so an engagement
 * "until 31 December" ends at midnight in France, not at 01:00 UTC.
 */
export function engagementActive(e: Pick<Engagement, 'validFrom' | 'validUntil'>, now: Date, timeZone = 'Europe/Paris'): boolean {
  if (Number.isNaN(now.getTime())) return false;
  const today = localDate(now, timeZone);
  return e.validFrom <= today && today <= e.validUntil;
}

/**
 * The engagement in force for this caller under this de-identified role, if any: the role is the
 * engagement's (or the caller is its one staff member), and when the engagement lists its staff,
 * the caller is one of them (CSP R6113-5-2 III: each staff member individually authorised).
 */
export function engagementFor(policy: { engagements: readonly Engagement[]; timeZone: string }, p: Principal, roleId: string, now: Date): Engagement | undefined {
  return policy.engagements.find((e) => {
    const c = contractorOf(e);
    const self = p.kind === 'practitioner' ? p.practitioner : undefined;
    const who = c.kind === 'role' ? c.role === roleId : self === c.practitioner;
    const listed = e.staff === undefined || (self !== undefined && e.staff.includes(self));
    return who && listed && engagementActive(e, now, policy.timeZone);
  });
}

/** The kinds of data (resource types) the engagement lets its contractor read. */
export function categoriesOf(e: Pick<Engagement, 'categories'>): readonly string[] {
  return e.categories ?? DEFAULT_CATEGORIES;
}

/** The contract an engagement rests on: the 2023 contract reference, or the former CNIL authorisation. */
export function contractOf(e: Pick<Engagement, 'contractReference' | 'cnilAuthorisation'>): string {
  return e.contractReference ?? `CNIL ${e.cnilAuthorisation ?? ''}`.trim();
}

const formatters = new Map<string, Intl.DateTimeFormat>();

/** `YYYY-MM-DD` of `now` in `timeZone`. */
function localDate(now: Date, timeZone: string): string {
  let f = formatters.get(timeZone);
  if (f === undefined) {
    f = new Intl.DateTimeFormat('en-US', { timeZone, year: 'numeric', month: '2-digit', day: '2-digit' });
    formatters.set(timeZone, f);
  }
  const parts = f.formatToParts(now);
  const part = (type: Intl.DateTimeFormatPartTypes): string => parts.find((p) => p.type === type)?.value ?? '';
  return `${part('year')}-${part('month')}-${part('day')}`;
}
