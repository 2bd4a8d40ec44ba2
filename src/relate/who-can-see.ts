import type { CareTeam, Consent, Encounter, PractitionerRole } from '@medplum/fhirtypes';
import type { FhirClient } from '../upstream/client.js';
import { encounterCounts, encounterStatuses, literalRef, periodCovers } from './careset.js';
import type { CareRelationshipsConfig } from './config.js';
import type { Evidence } from './types.js';

/**
 * Care-set resolution in reverse: for one patient, who is related to her now, and why. It reads the
 * same resources as `careset.ts` (CareTeams with their nested teams, services and PractitionerRoles,
 * Encounters, Consents) and applies the same tests to them (`periodCovers`, `encounterCounts`,
 * `literalRef`, the configured statuses and depth), so that a practitioner is listed here exactly
 * when her own care set, resolved now, holds the patient. Break-the-glass grants are passed in (they
 * live in the shared state). Roles that see every record are the policy's business, not this one's.
 */

/** Why a person reaches the patient: the evidence her own care set would carry, and the way in. */
export interface ReachEvidence extends Evidence {
  /** The membership that carries it: `PractitionerRole/…`, `Organization/…` (a service), `CareTeam/…` (a nested team). */
  through?: string[];
}

export interface PatientReach {
  /** `Practitioner/<id>` → evidence, for practitioners whose care relationships hold the patient now. */
  practitioners: Map<string, ReachEvidence[]>;
  /** `RelatedPerson/<id>` → the Consent of their mandate. */
  mandated: Map<string, ReachEvidence[]>;
}

export interface WhoCanSeeOptions {
  client: FhirClient;
  config: CareRelationshipsConfig;
  /** Patient id (without `Patient/`). */
  patient: string;
  now: number;
  /** Open break-the-glass grants to this patient. */
  grants: readonly { user: string; reason: string; until: number }[];
}

/** The practitioners and mandated persons who may read the patient's record now, with their evidence. */
export async function whoCanSee(opts: WhoCanSeeOptions): Promise<PatientReach> {
  const { client, config: cfg, now: t } = opts;
  const subject = `Patient/${opts.patient}`;
  const practitioners = new Map<string, ReachEvidence[]>();
  const add = (map: Map<string, ReachEvidence[]>, who: string, e: ReachEvidence) => {
    const list = map.get(who) ?? [];
    list.push(e);
    map.set(who, list);
  };
  /** PractitionerRole refs and Organization refs met, with the evidence they would carry. */
  const viaRole = new Map<string, ReachEvidence[]>();
  const viaService = new Map<string, ReachEvidence[]>();
  const pushTo = (map: Map<string, ReachEvidence[]>, key: string, e: ReachEvidence) => add(map, key, e);

  // Care teams of the patient, members through nested teams as deep as the forward resolution goes.
  if (cfg.careTeam.enabled) {
    const teams = await client.searchAll<CareTeam>('CareTeam', { subject, status: cfg.careTeam.statuses.join(','), _count: '1000' }, cfg.maxPages);
    const counts = (team: CareTeam) => team.status !== undefined && cfg.careTeam.statuses.includes(team.status as never) && periodCovers(team.period, t);
    const expand = async (team: CareTeam, root: string, through: string[], depthLeft: number, visited: Set<string>): Promise<void> => {
      for (const part of team.participant ?? []) {
        const ref = literalRef(part.member);
        if (!ref || !periodCovers(part.period, t)) continue;
        const e: ReachEvidence = { source: 'careteam', reference: root, ...(through.length ? { through } : {}) };
        if (ref.startsWith('Practitioner/')) add(practitioners, ref, e);
        else if (ref.startsWith('PractitionerRole/')) pushTo(viaRole, ref, e);
        else if (ref.startsWith('Organization/') && cfg.careTeam.organizationMembership) pushTo(viaService, ref, e);
        else if (ref.startsWith('CareTeam/') && depthLeft > 0 && !visited.has(ref)) {
          visited.add(ref);
          const inner = await client.read<CareTeam>('CareTeam', ref.slice('CareTeam/'.length));
          if (inner?.resourceType === 'CareTeam' && counts(inner)) await expand(inner, root, [...through, ref], depthLeft - 1, visited);
        }
      }
    };
    for (const team of teams) {
      if (!team.id || literalRef(team.subject) !== subject || !counts(team)) continue;
      const root = `CareTeam/${team.id}`;
      await expand(team, root, [], cfg.careTeam.nestedDepth, new Set([root]));
    }
  }

  // Stays of the patient: each participant for whom the stay counts now.
  if (cfg.encounter.enabled) {
    const stays = await client.searchAll<Encounter>('Encounter', { subject, status: encounterStatuses(cfg).join(','), _count: '1000' }, cfg.maxPages);
    for (const enc of stays) {
      if (!enc.id || literalRef(enc.subject) !== subject) continue;
      const e: ReachEvidence = { source: 'encounter', reference: `Encounter/${enc.id}` };
      for (const part of enc.participant ?? []) {
        const ref = literalRef(part.individual);
        if (!ref || !encounterCounts(enc, new Set([ref]), cfg, t)) continue;
        if (ref.startsWith('Practitioner/')) add(practitioners, ref, e);
        else if (ref.startsWith('PractitionerRole/')) pushTo(viaRole, ref, e);
      }
    }
  }

  // A PractitionerRole counts for its practitioner while it is active and its period covers now,
  // as principal resolution keeps only those (identity/resolve.ts); a service, for every such role in it.
  const roleIds = [...viaRole.keys()].map((r) => r.slice('PractitionerRole/'.length));
  const roles = roleIds.length ? await client.searchAll<PractitionerRole>('PractitionerRole', { _id: roleIds.join(','), _count: '1000' }, cfg.maxPages) : [];
  const serviceRoles = viaService.size
    ? await client.searchAll<PractitionerRole>('PractitionerRole', { organization: [...viaService.keys()].join(','), active: 'true', _count: '1000' }, cfg.maxPages)
    : [];
  const holder = (r: PractitionerRole) => {
    const who = literalRef(r.practitioner);
    return r.active === true && periodCovers(r.period, t) && who?.startsWith('Practitioner/') ? who : undefined;
  };
  for (const r of roles) {
    const who = holder(r);
    if (!who || !r.id) continue;
    for (const e of viaRole.get(`PractitionerRole/${r.id}`) ?? []) add(practitioners, who, { ...e, through: [...(e.through ?? []), `PractitionerRole/${r.id}`] });
  }
  for (const r of serviceRoles) {
    const who = holder(r);
    const org = literalRef(r.organization);
    if (!who || !org) continue;
    for (const e of viaService.get(org) ?? []) add(practitioners, who, { ...e, through: [...(e.through ?? []), org] });
  }

  for (const g of opts.grants) {
    if (g.until > t) add(practitioners, g.user, { source: 'break-glass', reference: undefined, until: new Date(g.until).toISOString(), reason: g.reason });
  }

  // Written mandates (relate/mandate.ts, read from the patient's side).
  const mandated = new Map<string, ReachEvidence[]>();
  const consents = await client.searchAll<Consent>('Consent', { patient: subject, status: 'active', _count: '100' }, 5);
  for (const c of consents) {
    if (c.status !== 'active' || c.provision?.type !== 'permit' || !periodCovers(c.provision.period, t) || literalRef(c.patient) !== subject) continue;
    for (const a of c.provision.actor ?? []) {
      const ref = literalRef(a.reference);
      if (ref?.startsWith('RelatedPerson/')) add(mandated, ref, { source: 'mandate', reference: `Consent/${c.id}` });
    }
  }
  return { practitioners, mandated };
}
