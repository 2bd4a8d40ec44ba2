import type { Encounter, Group } from '@medplum/fhirtypes';
import type { FhirClient } from '../upstream/client.js';
import type { CareSet, Evidence } from './types.js';

/**
 * The stays of a coding contractor's engagement (an explicit list of Encounters, or a Group of
 * them), read from the upstream with the proxy's credential and cached like care sets: its care
 * set is the stays themselves (`encounters`) and their patients.
 */
export interface StaysSpec {
  /** The engagement's id: the cache key. */
  id: string;
  stays: readonly string[] | { group: string };
}

export interface StaySets {
  careSet(spec: StaysSpec, opts: { fresh: boolean; ttlMs: number }): Promise<CareSet>;
  /** Drops every cached stay set (after a write to a Group or an Encounter). */
  clear(): void;
}

const ENCOUNTER_REF = /^Encounter\/[A-Za-z0-9\-.]{1,64}$/;

export function createStaySets(client: FhirClient, now: () => number = Date.now): StaySets {
  const cache = new Map<string, { at: number; set: CareSet }>();

  async function resolve(spec: StaysSpec): Promise<CareSet> {
    let stayIds: readonly string[];
    if (Array.isArray(spec.stays)) stayIds = spec.stays;
    else {
      const groupRef = (spec.stays as { group: string }).group;
      const group = await client.read<Group>('Group', groupRef.slice('Group/'.length));
      stayIds = (group?.member ?? [])
        .map((m) => m.entity?.reference ?? '')
        .filter((r) => ENCOUNTER_REF.test(r))
        .map((r) => r.slice('Encounter/'.length));
    }
    const encounters = await Promise.all(stayIds.map((id) => client.read<Encounter>('Encounter', id)));
    const patients = new Map<string, Evidence[]>();
    const stays = new Set<string>();
    for (const enc of encounters) {
      const subject = enc?.subject?.reference;
      if (!enc?.id || !subject?.startsWith('Patient/')) continue;
      stays.add(enc.id);
      const pid = subject.slice('Patient/'.length);
      patients.set(pid, [...(patients.get(pid) ?? []), { source: 'engagement', reference: `Encounter/${enc.id}` }]);
    }
    return { scope: 'listed', patients, encounters: stays, resolvedAt: now() };
  }

  return {
    async careSet(spec, opts) {
      const cached = cache.get(spec.id);
      if (!opts.fresh && cached && now() - cached.at < opts.ttlMs) return cached.set;
      const set = await resolve(spec);
      cache.set(spec.id, { at: now(), set });
      return set;
    },
    clear: () => cache.clear(),
  };
}
