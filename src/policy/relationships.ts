/**
 * Resources whose content decides who may see which patient (threats.md invariant 6: relationships
 * come from trusted writers only). One list, used for both sides of the rule:
 * - `decide()` lets a role write them only when the policy names the type in `relationshipWrites`;
 * - a successful write of one drops the cached care sets and principals it names (relate/invalidate.ts).
 *
 * Practitioner is one of them: its identifiers and `active` are what a credential without
 * `fhirUser` (Pro Santé Connect, a CPS card) is resolved by, so whoever may write them may become
 * another practitioner and take their care relationships.
 */
export const RELATIONSHIP_TYPES = ['CareTeam', 'Encounter', 'EpisodeOfCare', 'PractitionerRole', 'Practitioner', 'Group', 'Consent'] as const;
export type RelationshipType = (typeof RELATIONSHIP_TYPES)[number];

/**
 * What a role's `relationshipWrites` may list: the types above, the `link` element of Patient, and
 * `Consent.opposition`: only Consents that record a patient's opposition (every provision a deny,
 * naming practitioners, roles, services or care teams), never one that grants access
 * (policy/opposition.ts).
 */
export const RELATIONSHIP_WRITES = [...RELATIONSHIP_TYPES, 'Patient.link', 'Consent.opposition'] as const;
export type RelationshipWrite = (typeof RELATIONSHIP_WRITES)[number];

const TYPES: ReadonlySet<string> = new Set(RELATIONSHIP_TYPES);

export function isRelationshipType(type: string | undefined): type is RelationshipType {
  return type !== undefined && TYPES.has(type);
}
