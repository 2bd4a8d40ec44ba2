import { z } from 'zod';
import type { Resource } from '@medplum/fhirtypes';
import type { Principal } from '../identity/principal.js';

/**
 * Minimisation inside the care team (CSP L1110-4 II: the information "strictly necessary" to the
 * care), in two rules the policy file sets:
 *
 * - a **profession × data-category matrix**, like the national shared record's access matrix: the
 *   data categories are defined over FHIR (resource types, document and observation codes, security
 *   labels), and for each profession (TRE-G15 code, or PractitionerRole code) the policy lists the
 *   categories it may read and write;
 * - **sensitive records**: a resource carrying a security label the policy lists (psychiatry `PSY`,
 *   HIV, confidentiality `R`/`V`…) is shown only to the professions and roles the policy names for
 *   that label, even inside the care team.
 *
 * Both become obligations of the decision (`withhold-categories`, `withhold-labels`) that the
 * response filter honours, and a type the caller may not read at all is refused at decide time.
 * Every refusal and withholding names its rule (`minimisation.<row>`, `sensitivity.<label>`).
 */

const CODING = /^[^|\s]+\|[^|\s]+$/;
const CODING_HINT = 'a coding written system|code, e.g. http://terminology.hl7.org/CodeSystem/v3-ActCode|PSY';

const matcherSchema = z
  .object({
    resourceTypes: z.array(z.string().regex(/^[A-Z][A-Za-z]+$/)).optional().describe('Any of these resource types.'),
    codes: z
      .array(z.string().regex(CODING, CODING_HINT))
      .optional()
      .describe('Any of these codings among the resource’s type and category (DocumentReference.type/category, Composition.type/category, Observation.category, DiagnosticReport.category/code, Condition.category).'),
    labels: z.array(z.string().regex(CODING, CODING_HINT)).optional().describe('Any of these security labels (meta.security).'),
  })
  .strict()
  .refine((m) => m.resourceTypes !== undefined || m.codes !== undefined || m.labels !== undefined, 'at least one of resourceTypes, codes, labels');

/** A category: one matcher (every condition it gives must hold), or a list of them (any). */
const categorySchema = z.union([matcherSchema, z.array(matcherSchema).min(1)]);

const CATEGORY_ID = /^[a-z][a-z0-9-]*$/;

const audienceSchema = z
  .object({
    professionCodes: z.array(z.string().regex(/^\d{2}$/)).optional().describe('TRE-G15 profession codes (token or CPS card).'),
    practitionerRoleCodes: z.array(z.string().regex(CODING, CODING_HINT)).optional().describe('PractitionerRole code or specialty codings.'),
    roles: z.array(z.string().regex(CATEGORY_ID)).optional().describe('Policy role ids.'),
  })
  .strict();

export const minimisationSchema = z
  .object({
    categories: z
      .record(z.string().regex(CATEGORY_ID, 'lower-case words joined by dashes'), categorySchema)
      .default({})
      .describe('Data categories, defined over FHIR.'),
    professions: z
      .array(
        z
          .object({
            id: z.string().regex(CATEGORY_ID, 'lower-case words joined by dashes'),
            match: audienceSchema.refine((a) => Object.values(a).some((v) => v !== undefined), 'at least one condition'),
            read: z.array(z.string()).describe('Categories this profession may read; "*" for all.'),
            write: z.array(z.string()).default([]).describe('Categories it may write; "*" for all.'),
            except: z.array(z.string()).default([]).describe('Categories removed from read and write (with "*").'),
            uncategorised: z.boolean().default(true).describe('Whether it may read and write resources of no category.'),
          })
          .strict(),
      )
      .default([])
      .describe('The matrix: the first row whose match fits the caller applies to her, within care-team roles. No row: every category.'),
    sensitivity: z
      .array(
        z
          .object({
            label: z.string().regex(CODING, CODING_HINT).describe('A security label (meta.security), e.g. http://terminology.hl7.org/CodeSystem/v3-ActCode|PSY.'),
            name: z.string().regex(CATEGORY_ID).describe('Names the rule in refusals and the audit.'),
            visibleTo: audienceSchema.describe('Who sees resources carrying it; everyone else does not, even in the care team.'),
          })
          .strict(),
      )
      .default([])
      .describe('Sensitive records: labels shown only to the professions and roles named.'),
  })
  .strict()
  .superRefine((m, ctx) => {
    const known = new Set(Object.keys(m.categories));
    m.professions.forEach((row, i) => {
      for (const key of ['read', 'write', 'except'] as const) {
        row[key].forEach((c, j) => {
          if (c !== '*' && !known.has(c)) ctx.addIssue({ code: 'custom', path: ['professions', i, key, j], message: `"${c}" is not a category (categories: ${[...known].join(', ') || 'none'})` });
        });
      }
    });
  });

export type MinimisationConfig = z.infer<typeof minimisationSchema>;
type Matcher = z.infer<typeof matcherSchema>;

/** The categories a caller may not read, or write, and the rule that says so. */
export interface Minimisation {
  read: { categories: readonly string[]; uncategorised: boolean; rule: string } | undefined;
  write: { categories: readonly string[]; uncategorised: boolean; rule: string } | undefined;
  /** Labels the caller is not in the audience of, each with its rule. */
  labels: readonly { label: string; rule: string }[];
}

/** Professions of a caller: from her token or CPS card. */
function professionsOf(p: Principal): string[] {
  return [...p.claims.professionCodes, ...(p.certificate?.professionCode ? [p.certificate.professionCode] : [])];
}

function inAudience(a: z.infer<typeof audienceSchema>, p: Principal, roleId: string): boolean {
  const professions = professionsOf(p);
  const roleCodes = p.kind === 'practitioner' ? p.roleCodes : [];
  return (
    (a.professionCodes ?? []).some((c) => professions.includes(c)) ||
    (a.practitionerRoleCodes ?? []).some((c) => roleCodes.includes(c)) ||
    (a.roles ?? []).includes(roleId)
  );
}

/**
 * What the policy withholds from this caller: the matrix row that applies (care-team roles only;
 * the DIM and administrative views have their own rules), and the sensitive labels whose audience
 * she is not in (every role).
 */
export function minimisationFor(config: MinimisationConfig, p: Principal, role: { id: string; profile: string }): Minimisation {
  const all = Object.keys(config.categories);
  const withheld = (allowed: readonly string[], except: readonly string[]) =>
    allowed.includes('*') ? except : all.filter((c) => !allowed.includes(c) || except.includes(c));
  const row = role.profile === 'care-team' ? config.professions.find((r) => inAudience(r.match, p, role.id)) : undefined;
  const read = row ? { categories: withheld(row.read, row.except), uncategorised: row.uncategorised, rule: `minimisation.${row.id}` } : undefined;
  const write = row ? { categories: withheld(row.write, row.except), uncategorised: row.uncategorised, rule: `minimisation.${row.id}` } : undefined;
  const labels = config.sensitivity.filter((s) => !inAudience(s.visibleTo, p, role.id)).map((s) => ({ label: s.label, rule: `sensitivity.${s.name}` }));
  return {
    read: read && (read.categories.length > 0 || !read.uncategorised) ? read : undefined,
    write: write && (write.categories.length > 0 || !write.uncategorised) ? write : undefined,
    labels,
  };
}

/** The codings a resource is classified by (type and category elements), `system|code`. */
export function classifyingCodes(r: Resource): Set<string> {
  const out = new Set<string>();
  const add = (cc: unknown) => {
    const codings = (cc as { coding?: unknown } | null)?.coding;
    if (!Array.isArray(codings)) return;
    for (const c of codings as { system?: unknown; code?: unknown }[]) {
      if (typeof c?.system === 'string' && typeof c.code === 'string') out.add(`${c.system}|${c.code}`);
    }
  };
  const o = r as unknown as Record<string, unknown>;
  for (const key of ['type', 'category', 'code'] as const) {
    // `code` only where it classifies the report itself; an Observation's code is its measure.
    if (key === 'code' && r.resourceType !== 'DiagnosticReport') continue;
    const v = o[key];
    if (Array.isArray(v)) v.forEach(add);
    else add(v);
  }
  return out;
}

function labelsOf(r: Resource): Set<string> {
  return new Set((r.meta?.security ?? []).filter((c) => c.system && c.code).map((c) => `${c.system}|${c.code}`));
}

function matches(m: Matcher, r: Resource, codes: ReadonlySet<string>, labels: ReadonlySet<string>): boolean {
  if (m.resourceTypes && !m.resourceTypes.includes(r.resourceType)) return false;
  if (m.codes && !m.codes.some((c) => codes.has(c))) return false;
  if (m.labels && !m.labels.some((l) => labels.has(l))) return false;
  return true;
}

/** The categories a resource belongs to (none, one or several). */
export function categoriesOf(config: MinimisationConfig, r: Resource): string[] {
  const codes = classifyingCodes(r);
  const labels = labelsOf(r);
  const out: string[] = [];
  for (const [name, def] of Object.entries(config.categories)) {
    const list = Array.isArray(def) ? def : [def];
    if (list.some((m) => matches(m, r, codes, labels))) out.push(name);
  }
  return out;
}

/**
 * Whether every resource of this type falls in one of these categories by its type alone (a
 * category defined by resource types only): then a read or search of the type can be refused
 * before anything is asked of the FHIR server.
 */
export function typeWhollyIn(config: MinimisationConfig, type: string, categories: readonly string[]): string | undefined {
  for (const c of categories) {
    const def = config.categories[c];
    const list = def === undefined ? [] : Array.isArray(def) ? def : [def];
    if (list.some((m) => m.codes === undefined && m.labels === undefined && (m.resourceTypes ?? []).includes(type))) return c;
  }
  return undefined;
}

/**
 * Why a resource is withheld from a caller under these rules (the rule's name), or undefined:
 * a category she may not read, no category when she may read only categorised data, or a label
 * whose audience she is not in.
 */
export function withheldBy(config: MinimisationConfig, r: Resource, rules: { read?: Minimisation['read']; labels: Minimisation['labels'] }): string | undefined {
  if (rules.labels.length > 0) {
    const labels = labelsOf(r);
    const hit = rules.labels.find((l) => labels.has(l.label));
    if (hit) return hit.rule;
  }
  const read = rules.read;
  if (read) {
    const cats = categoriesOf(config, r);
    if (cats.length === 0 ? !read.uncategorised : cats.some((c) => read.categories.includes(c))) return read.rule;
  }
  return undefined;
}
