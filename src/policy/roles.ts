import type { Claims } from '../identity/principal.js';
import type { Policy, RoleConfig } from './config.js';

/** What role matching looks at. Plain data so that `caregate explain` can build it from a persona. */
export interface RoleFacts {
  kind: 'practitioner' | 'patient' | 'related-person';
  claims: Pick<Claims, 'roles' | 'groups' | 'professionCodes'>;
  /** PractitionerRole.code codings of active roles, `system|code`. */
  roleCodes: readonly string[];
  cardPresented: boolean;
}

/** Every role of the policy that matches, in file order; the first is the one that applies. */
export function matchRoles(policy: Policy, facts: RoleFacts): RoleConfig[] {
  return policy.roles.filter((r) => roleMatches(r, facts));
}

function anyOf(wanted: readonly string[] | undefined, have: readonly string[]): boolean | undefined {
  if (wanted === undefined) return undefined;
  return wanted.some((w) => have.includes(w));
}

/** All conditions given must hold; within a condition, any listed value is enough. */
export function roleMatches(role: RoleConfig, f: RoleFacts): boolean {
  const m = role.match;
  const checks: (boolean | undefined)[] = [
    m.principalKind === undefined ? undefined : m.principalKind === f.kind,
    m.cardPresented === undefined ? undefined : m.cardPresented === f.cardPresented,
    anyOf(m.idpRoles, f.claims.roles),
    anyOf(m.groups, f.claims.groups),
    anyOf(m.professionCodes, f.claims.professionCodes),
    anyOf(m.practitionerRoleCodes, f.roleCodes),
  ];
  const given = checks.filter((c) => c !== undefined);
  return given.length > 0 && given.every(Boolean);
}
