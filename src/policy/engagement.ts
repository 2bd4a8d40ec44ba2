import { z } from 'zod';
import type { Principal } from '../identity/principal.js';

/** How dates are generalised for a contractor (shape/deid.ts applies it). */
export const DATE_MODES = ['keep', 'month', 'year'] as const;
export type DateMode = (typeof DATE_MODES)[number];

/**
 * The engagement of a coding-optimisation contractor: the only thing that lets a role with the
 * `de-identified` profile see anything (ARCHITECTURE.md, "Roles beyond the care team").
 *
 * Why each part is mandatory: the DIM physician is responsible for the medical information of the
 * establishment, and people outside the DIM may process it only under their authority
 * (CSP L6113-7, R6113-5). CNIL decision 2013-037 (25 September 2013, formal notice to the
 * Saint-Malo hospital) found an outsourced PMSI coding contractor given DIM-level access without
 * the constant presence of a DIM physician. So an engagement names the supervising DIM physician,
 * the reference of the CNIL authorisation, an end date and the stays concerned, and caregate
 * refuses a policy whose de-identified role has none in force.
 */

const WHY_DIM =
  'supervisingDim is required: a contractor may process medical information only under the authority of a DIM physician (CSP R6113-5; CNIL decision 2013-037)';
const WHY_CNIL =
  'cnilAuthorisation is required: give the reference of the CNIL authorisation for this processing (CNIL decision 2013-037; CSP R6113-5)';

const ROLE_ID = /^[a-z][a-z0-9-]*$/;
const PRACTITIONER_REF = /^Practitioner\/[A-Za-z0-9\-.]{1,64}$/;
const FHIR_ID = /^[A-Za-z0-9\-.]{1,64}$/;

const isoDate = z.iso.date({ error: 'a date as YYYY-MM-DD' });

export const engagementSchema = z
  .object({
    id: z.string().regex(ROLE_ID, 'lower-case words joined by dashes').describe('Names the engagement in audit events and errors.'),
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
      .describe('The DIM physician under whose authority the contractor works (CSP R6113-5).'),
    cnilAuthorisation: z
      .string({ error: (issue) => (issue.input === undefined ? WHY_CNIL : undefined) })
      .trim()
      .min(1, WHY_CNIL)
      .describe('Reference of the CNIL authorisation (decision number or file reference).'),
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
    dateMode: z.enum(DATE_MODES).default('month').describe('How dates are generalised: keep, month (YYYY-MM) or year (YYYY).'),
  })
  .strict()
  .superRefine((e, ctx) => {
    // ISO dates compare as strings.
    if (e.validUntil <= e.validFrom) ctx.addIssue({ code: 'custom', path: ['validUntil'], message: 'validUntil must be after validFrom' });
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

/** The engagement in force for this caller under this de-identified role, if any. */
export function engagementFor(policy: { engagements: readonly Engagement[]; timeZone: string }, p: Principal, roleId: string, now: Date): Engagement | undefined {
  return policy.engagements.find((e) => {
    const c = contractorOf(e);
    const who = c.kind === 'role' ? c.role === roleId : p.kind === 'practitioner' && p.practitioner === c.practitioner;
    return who && engagementActive(e, now, policy.timeZone);
  });
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
