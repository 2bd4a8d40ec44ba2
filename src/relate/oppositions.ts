import type { Coding, Consent, ConsentProvision, ConsentProvisionActor, Period } from '@medplum/fhirtypes';
import { LRUCache } from 'lru-cache';
import type { PractitionerPrincipal } from '../identity/principal.js';
import type { FhirClient } from '../upstream/client.js';
import { literalRef, periodCovers } from './careset.js';
import type { CareRelationshipsConfig } from './config.js';
import type { CareSet, Opposition } from './types.js';

/**
 * The patient's opposition to the sharing of her record (CSP L1110-4: the patient, duly informed,
 * may oppose the exchange and sharing of information about her), read from the standard FHIR
 * `Consent` resources on the upstream with the proxy's credential, per patient, and cached with the
 * care-set cache's lifetime.
 *
 * An opposition is a provision of `type: deny`, at the top of an active Consent or nested in it,
 * whose actors are literal references to a Practitioner, a PractitionerRole, an Organization (a
 * whole service) or a CareTeam. What caregate reads of it: the actors, the periods (the
 * provision's and those of the provisions it is nested in, all covering now), `class` (resource
 * types, system `http://hl7.org/fhir/resource-types`) and `securityLabel`. Anything else that would
 * narrow it (a class of another system, `code`, `data`, `dataPeriod`, `purpose`, `action`) is not
 * read, so the opposition applies more widely than written, never less; and a nested `permit`
 * (an exception to a deny) is not read either. An actor given only by identifier, contained, or of
 * another type names no one caregate can recognise: such a provision is not enforced (a Consent
 * written through caregate must name its actors literally, policy/opposition.ts).
 *
 * A failed lookup is an `ERR_LOOKUP_FAILED` (503): access is never decided without the oppositions.
 */

/** `provision.class` codes caregate understands: FHIR resource types. */
export const RESOURCE_TYPES_SYSTEM = 'http://hl7.org/fhir/resource-types';
/** Actors an opposition may name. */
export const OPPOSABLE_ACTOR = /^(Practitioner|PractitionerRole|Organization|CareTeam)\/[A-Za-z0-9\-.]{1,64}$/;
/** Patients per Consent search (an OR list of references). */
const CHUNK = 50;

/** One opposition as the Consent records it, before it is matched against a caller and a date. */
export interface RecordedOpposition extends Opposition {
  /** Literal references of the actors it names. */
  actors: readonly string[];
  /** Periods that must all cover now: the provision's, and those of the provisions it is nested in. */
  periods: readonly Period[];
}

/** The oppositions an active Consent records (none for any other status, or without a literal Patient). */
export function oppositionsOf(c: Consent): RecordedOpposition[] {
  if (c.status !== 'active' || !c.id || !c.provision || !literalRef(c.patient)?.startsWith('Patient/')) return [];
  const consent = `Consent/${c.id}`;
  const out: RecordedOpposition[] = [];
  const walk = (node: ConsentProvision, parent: { actors: string[]; periods: Period[]; classes: string[]; labels: string[] }): void => {
    const periods = node.period ? [...parent.periods, node.period] : parent.periods;
    const actors = node.actor?.length ? actorRefs(node.actor) : parent.actors;
    const classes = node.class?.length ? classesOf(node.class) : parent.classes;
    const labels = node.securityLabel?.length ? labelsOf(node.securityLabel) : parent.labels;
    if (node.type === 'deny' && actors.length > 0) out.push({ consent, actors, periods, classes, labels });
    for (const child of node.provision ?? []) walk(child, { actors, periods, classes, labels });
  };
  walk(c.provision, { actors: [], periods: [], classes: [], labels: [] });
  return out;
}

function actorRefs(actors: readonly ConsentProvisionActor[]): string[] {
  return actors.map((a) => literalRef(a.reference)).filter((r): r is string => r !== undefined && OPPOSABLE_ACTOR.test(r));
}

/** Resource types; a class of any other kind is not understood, and the opposition then covers every type. */
function classesOf(codings: readonly Coding[]): string[] {
  if (codings.some((c) => c.system !== RESOURCE_TYPES_SYSTEM || !c.code)) return [];
  return [...new Set(codings.map((c) => c.code!))];
}

/** `system|code`; a label without both is not understood, and the opposition then covers every label. */
function labelsOf(codings: readonly Coding[]): string[] {
  if (codings.some((c) => !c.system || !c.code)) return [];
  return [...new Set(codings.map((c) => `${c.system}|${c.code}`))];
}

/** The references by which an opposition may name this practitioner: herself, her roles, her services, her care teams. */
export function opposableRefs(p: PractitionerPrincipal, set: Pick<CareSet, 'teams'>): Set<string> {
  return new Set([p.practitioner, ...p.practitionerRoles, ...p.organizations, ...(set.teams ?? [])]);
}

/** The oppositions among `recorded` that name one of `refs` and are in force at `now`. */
export function applying(recorded: readonly RecordedOpposition[], refs: ReadonlySet<string>, now: number): Opposition[] {
  return recorded
    .filter((o) => o.actors.some((a) => refs.has(a)) && o.periods.every((p) => periodCovers(p, now)))
    .map(({ consent, classes, labels }) => ({ consent, classes, labels }));
}

export interface OppositionStore {
  /** The oppositions recorded for each of these patients (ids), from the cache while it is fresh. */
  of(patients: readonly string[], opts: { fresh: boolean }): Promise<ReadonlyMap<string, readonly RecordedOpposition[]>>;
  /**
   * Drops the cached oppositions of these patients: a Consent about them was written. Called after
   * a relationship write (relate/invalidate.ts), and by whatever spreads invalidations between
   * caregate instances.
   */
  invalidatePatients(patients: Iterable<string>): void;
  /** Drops everything (a policy reload). */
  clear(): void;
  /** Changes at every invalidation: what was derived from an older version may be stale. */
  readonly version: number;
  /** Upstream lookups made so far. */
  readonly lookups: number;
}

export interface OppositionStoreOptions {
  client: FhirClient;
  /** The care-set cache settings, read at each call (lifetime, size, pages followed). */
  config: () => CareRelationshipsConfig;
  now?: () => number;
  onLookup?: (ok: boolean) => void;
}

export function createOppositionStore(opts: OppositionStoreOptions): OppositionStore {
  const now = opts.now ?? Date.now;
  const newCache = () => new LRUCache<string, { at: number; recorded: RecordedOpposition[] }>({ max: opts.config().cache.maxEntries });
  let cache = newCache();
  // A lookup that began before an invalidation of one of its patients must not cache what it read.
  let epoch = 0;
  let clearedAt = 0;
  let invalidatedAt = new LRUCache<string, number>({ max: opts.config().cache.maxEntries });
  let lookups = 0;

  async function fetchChunk(ids: readonly string[]): Promise<Map<string, RecordedOpposition[]>> {
    lookups++;
    let consents: Consent[];
    try {
      consents = await opts.client.searchAll<Consent>(
        'Consent',
        { patient: ids.map((id) => `Patient/${id}`).join(','), status: 'active', _count: '1000' },
        opts.config().maxPages,
      );
      opts.onLookup?.(true);
    } catch (err) {
      opts.onLookup?.(false);
      throw err;
    }
    const found = new Map<string, RecordedOpposition[]>(ids.map((id) => [id, []]));
    for (const c of consents) {
      const patient = literalRef(c.patient)?.slice('Patient/'.length);
      const list = patient === undefined ? undefined : found.get(patient);
      if (list) list.push(...oppositionsOf(c));
    }
    return found;
  }

  return {
    async of(patients, { fresh }) {
      const t = now();
      const ttl = opts.config().cache.ttlSeconds * 1000;
      const out = new Map<string, readonly RecordedOpposition[]>();
      const missing: string[] = [];
      for (const id of new Set(patients)) {
        const hit = fresh ? undefined : cache.get(id);
        if (hit && t - hit.at < ttl) out.set(id, hit.recorded);
        else missing.push(id);
      }
      const started = epoch;
      for (let i = 0; i < missing.length; i += CHUNK) {
        const found = await fetchChunk(missing.slice(i, i + CHUNK));
        for (const [id, recorded] of found) {
          out.set(id, recorded);
          if (clearedAt <= started && (invalidatedAt.get(id) ?? 0) <= started) cache.set(id, { at: t, recorded });
        }
      }
      return out;
    },
    invalidatePatients(ids) {
      epoch++;
      for (const id of ids) {
        cache.delete(id);
        invalidatedAt.set(id, epoch);
      }
    },
    clear() {
      clearedAt = ++epoch;
      cache = newCache();
      invalidatedAt = new LRUCache<string, number>({ max: opts.config().cache.maxEntries });
    },
    get version() {
      return epoch;
    },
    get lookups() {
      return lookups;
    },
  };
}
