import type { HumanName, Organization, Patient, Practitioner, PractitionerRole, RelatedPerson } from '@medplum/fhirtypes';
import { referenceClaims, type PractitionerPrincipal } from '../identity/principal.js';
import type { PrincipalResolver } from '../identity/resolve.js';
import type { Policy } from '../policy/config.js';
import { categoriesOf, contractOf, contractorOf, engagementActive } from '../policy/engagement.js';
import { withGrants } from '../relate/breakglass.js';
import type { CareSetResolver } from '../relate/careset.js';
import type { StaySets } from '../relate/stays.js';
import type { Evidence } from '../relate/types.js';
import { whoCanSee, type ReachEvidence } from '../relate/who-can-see.js';
import type { GrantTable } from '../shared/state.js';
import type { FhirClient } from '../upstream/client.js';

/**
 * "Who can see this patient now" and "which patients can this user see now", for the DIM
 * (CSP L1110-4 II: shared only as far as each professional needs). The people come from
 * relate/who-can-see.ts (care-set resolution in reverse) and relate/careset.ts (forwards); the roles
 * that see every record, and the contractors' engagements, from the active policy. Names, services
 * and role codes are read for the page.
 */

export interface ReachDeps {
  client: FhirClient;
  policy: () => Policy;
  grants: GrantTable;
  stays: StaySets;
  careSets: CareSetResolver;
  principals: PrincipalResolver;
  now: () => number;
}

export interface Person {
  /** `Practitioner/…`, `RelatedPerson/…` or `Patient/…`. */
  who: string;
  name: string;
  /** Services: the organisations of her active PractitionerRoles. */
  services: { reference: string; name: string }[];
  /** `system|code` of her active PractitionerRoles. */
  roleCodes: string[];
  evidence: ReachEvidence[];
}

export interface PatientReachReport {
  patient: string;
  name: string;
  asOf: string;
  /** Practitioners through care relationships and break-the-glass (what care-team roles see). */
  practitioners: Person[];
  /** Mandated persons (mandate roles). */
  mandated: Person[];
  /** The patient herself (own-record roles), unless her record is inactive. */
  self: Person | undefined;
  /** Roles of the policy that see every record, as roles: whoever the identity provider gives them. */
  roles: { id: string; profile: string; description: string; view: string }[];
  /** Contractor engagements in force whose stays include one of the patient's. */
  engagements: { id: string; contract: string; who: string[]; access: string; categories: readonly string[]; stays: string[] }[];
}

export interface UserReachReport {
  practitioner: string;
  name: string;
  asOf: string;
  services: { reference: string; name: string }[];
  roleCodes: string[];
  patients: { patient: string; name: string; evidence: Evidence[] }[];
}

const ROLE_VIEWS: Partial<Record<Policy['roles'][number]['profile'], string>> = {
  'all-records': 'every record, whole',
  administrative: 'every record, masked: demographics and stay logistics, no clinical content',
};
/** Most patients named on one user's page (the care set is listed whole, names only up to this). */
const MAX_NAMED = 2000;

export function createReach(deps: ReachDeps) {
  async function byIds<T extends Practitioner | Patient | RelatedPerson | Organization>(type: T['resourceType'], refs: readonly string[]): Promise<Map<string, T>> {
    const out = new Map<string, T>();
    const ids = refs.filter((r) => r.startsWith(`${type}/`)).map((r) => r.slice(type.length + 1));
    for (let i = 0; i < ids.length; i += 100) {
      const found = await deps.client.searchAll<T>(type, { _id: ids.slice(i, i + 100).join(','), _count: '100' }, 2);
      for (const r of found) if (r.resourceType === type && r.id) out.set(`${type}/${r.id}`, r);
    }
    return out;
  }

  /** Active roles of these practitioners, their services and codes (as principal resolution keeps them). */
  async function rolesOf(practitioners: readonly string[]): Promise<Map<string, { services: { reference: string; name: string }[]; roleCodes: string[] }>> {
    const out = new Map<string, { services: { reference: string; name: string }[]; roleCodes: string[] }>();
    if (!practitioners.length) return out;
    const roles: PractitionerRole[] = [];
    for (let i = 0; i < practitioners.length; i += 100) {
      roles.push(...(await deps.client.searchAll<PractitionerRole>('PractitionerRole', { practitioner: practitioners.slice(i, i + 100).join(','), active: 'true', _count: '1000' }, 5)));
    }
    const orgs = await byIds<Organization>('Organization', [...new Set(roles.map((r) => r.organization?.reference ?? ''))]);
    for (const r of roles) {
      const who = r.practitioner?.reference;
      if (!who || r.active !== true) continue;
      const entry = out.get(who) ?? { services: [], roleCodes: [] };
      const org = r.organization?.reference;
      if (org && !entry.services.some((s) => s.reference === org)) entry.services.push({ reference: org, name: orgs.get(org)?.name ?? '' });
      for (const c of r.code ?? []) for (const x of c.coding ?? []) if (x.system && x.code) entry.roleCodes.push(`${x.system}|${x.code}`);
      out.set(who, entry);
    }
    return out;
  }

  return {
    /** Who may read this patient's record now, and why. */
    async ofPatient(patientId: string): Promise<PatientReachReport> {
      const t = deps.now();
      const policy = deps.policy();
      const grants = deps.grants.all(t).filter((g) => g.patient === patientId);
      const reach = await whoCanSee({ client: deps.client, config: policy.careRelationships, patient: patientId, now: t, grants });
      const [patients, practitioners, related, roles] = await Promise.all([
        byIds<Patient>('Patient', [`Patient/${patientId}`]),
        byIds<Practitioner>('Practitioner', [...reach.practitioners.keys()]),
        byIds<RelatedPerson>('RelatedPerson', [...reach.mandated.keys()]),
        rolesOf([...reach.practitioners.keys()]),
      ]);
      const patient = patients.get(`Patient/${patientId}`);
      // Someone whose record is inactive cannot sign in (identity/resolve.ts): she sees nothing.
      const people = (map: Map<string, ReachEvidence[]>, found: Map<string, Practitioner | RelatedPerson>) =>
        [...map]
          .filter(([who]) => found.has(who) && found.get(who)!.active !== false)
          .map(([who, evidence]) => ({ who, name: nameOf(found.get(who)!.name), services: roles.get(who)?.services ?? [], roleCodes: roles.get(who)?.roleCodes ?? [], evidence }))
          .sort((a, b) => a.who.localeCompare(b.who));
      const engagements: PatientReachReport['engagements'] = [];
      for (const e of policy.engagements) {
        if (!engagementActive(e, new Date(t), policy.timeZone)) continue;
        const set = await deps.stays.careSet({ id: e.id, stays: e.stays }, { fresh: true, ttlMs: 0 });
        const stays = (set.patients.get(patientId) ?? []).map((x) => x.reference ?? '').filter(Boolean);
        if (!stays.length) continue;
        const c = contractorOf(e);
        engagements.push({ id: e.id, contract: contractOf(e), who: e.staff ?? [c.kind === 'role' ? `role ${c.role}` : c.practitioner], access: e.access, categories: categoriesOf(e), stays });
      }
      const ownRecord = policy.roles.some((r) => r.profile === 'own-record');
      return {
        patient: `Patient/${patientId}`,
        name: patient ? nameOf(patient.name) : '',
        asOf: new Date(t).toISOString(),
        practitioners: people(reach.practitioners, practitioners),
        mandated: policy.roles.some((r) => r.profile === 'mandate') ? people(reach.mandated, related) : [],
        self:
          ownRecord && patient && patient.active !== false
            ? { who: `Patient/${patientId}`, name: nameOf(patient.name), services: [], roleCodes: [], evidence: [{ source: 'own-record', reference: `Patient/${patientId}` }] }
            : undefined,
        roles: policy.roles
          .filter((r) => ROLE_VIEWS[r.profile] !== undefined)
          .map((r) => ({ id: r.id, profile: r.profile, description: r.description ?? '', view: ROLE_VIEWS[r.profile]! })),
        engagements,
      };
    },

    /** Which patients this practitioner's care relationships (and open grants) give her now. */
    async ofPractitioner(practitionerId: string): Promise<UserReachReport | undefined> {
      const t = deps.now();
      const ref = `Practitioner/${practitionerId}`;
      let principal: PractitionerPrincipal;
      try {
        const resolved = await deps.principals.resolve({ claims: referenceClaims(ref, 'caregate-oversight'), staff: undefined, certificate: undefined });
        if (resolved.kind !== 'practitioner') return undefined;
        principal = { ...resolved, method: 'jwt', claims: referenceClaims(ref, 'caregate-oversight'), certificate: undefined, policyRoles: [] };
      } catch (err) {
        // An unknown or inactive practitioner sees nothing; a lookup failure is the caller's 503.
        if ((err as { code?: string }).code === 'ERR_UNKNOWN_PRACTITIONER') return undefined;
        throw err;
      }
      const set = withGrants(await deps.careSets.refresh(principal), deps.grants.open(ref, t));
      const ids = [...set.patients.keys()].sort();
      const [people, practitioner, roles] = await Promise.all([
        byIds<Patient>('Patient', ids.slice(0, MAX_NAMED).map((p) => `Patient/${p}`)),
        byIds<Practitioner>('Practitioner', [ref]),
        rolesOf([ref]),
      ]);
      return {
        practitioner: ref,
        name: nameOf(practitioner.get(ref)?.name),
        asOf: new Date(t).toISOString(),
        services: roles.get(ref)?.services ?? [],
        roleCodes: roles.get(ref)?.roleCodes ?? [],
        patients: ids.map((p) => ({ patient: `Patient/${p}`, name: nameOf(people.get(`Patient/${p}`)?.name), evidence: [...(set.patients.get(p) ?? [])] })),
      };
    },
  };
}

export type Reach = ReturnType<typeof createReach>;


/** "Given FAMILY" of the usual (else first) name. */
export function nameOf(names: readonly HumanName[] | undefined): string {
  const n = names?.find((x) => x.use === 'usual') ?? names?.find((x) => x.use === 'official') ?? names?.[0];
  if (!n) return '';
  return n.text ?? [...(n.given ?? []), n.family ?? ''].join(' ').trim();
}
