import type { Claims, Principal } from '../identity/principal.js';
import { ProxyError } from '../http/errors.js';
import type { Policy, RoleConfig } from './config.js';

/** What role matching looks at. Plain data so that `caregate explain` can build it from a persona. */
export interface RoleFacts {
  kind: 'practitioner' | 'patient' | 'related-person';
  claims: Pick<Claims, 'roles' | 'groups' | 'professionCodes'>;
  /** PractitionerRole.code codings of active roles, `system|code`. */
  roleCodes: readonly string[];
  cardPresented: boolean;
}

/** The facts of a verified caller that roles are matched on. */
export function roleFactsOf(p: Principal): RoleFacts {
  return { kind: p.kind, claims: p.claims, roleCodes: p.kind === 'practitioner' ? p.roleCodes : [], cardPresented: p.certificate !== undefined };
}

/** Every role of the policy that matches, in file order; the first is the one that applies. */
export function matchRoles(policy: Policy, facts: RoleFacts): RoleConfig[] {
  return policy.roles.filter((r) => roleMatches(r, facts));
}

/**
 * The role that applies to a caller: the first that matches, or undefined (everything is then
 * refused by default). A role that requires a CPS card is refused outright without one
 * (`ERR_CARD_REQUIRED`): the one place that rule is enforced, for the FHIR API and the DIM views.
 */
export function roleOf(policy: Policy, p: Principal): RoleConfig | undefined {
  const role = matchRoles(policy, roleFactsOf(p))[0];
  if (role?.requireCard && !p.certificate) throw new ProxyError('ERR_CARD_REQUIRED', `Role "${role.id}" requires a CPS card.`);
  return role;
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
