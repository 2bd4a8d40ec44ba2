import type { CareTeam, Encounter, Period, Reference } from '@medplum/fhirtypes';
import { LRUCache } from 'lru-cache';
import type { PractitionerPrincipal } from '../identity/principal.js';
import type { CacheStats } from '../ops/metrics.js';
import type { FhirClient } from '../upstream/client.js';
import type { CareRelationshipsConfig } from './config.js';
import type { CareSet, Evidence } from './types.js';

/**
 * Resolves which patients a practitioner takes part in the care of, now (CSP L1110-4, L1110-12),
 * from the CareTeam and Encounter resources on the upstream, read with the proxy's own credential.
 *
 * Only literal references count: a participant given by identifier only, or as a contained
 * resource, is never a member (anyone can write an identifier; a contained resource has no
 * identity of its own).
 */
export interface CareSetResolver {
  /** The care set, from cache when fresh. */
  get(p: PractitionerPrincipal): Promise<CareSet>;
  /** A fresh resolution, bypassing and refreshing the cache (used to confirm a refusal). */
  refresh(p: PractitionerPrincipal): Promise<CareSet>;
  /** Drops the cached sets of these members (`Practitioner/x`, `PractitionerRole/y`, `Organization/z`). */
  invalidate(memberRefs: Iterable<string>): void;
  /** Drops every cached set, and takes the cache size from the configuration again (a policy reload). */
  clear(): void;
  /** Upstream lookups made so far (for metrics and the benchmark). */
  readonly lookups: number;
  /**
   * The care-set cache's counters (a miss is a resolution started), and the size of the index
   * from members to the users whose sets they appear in (metrics).
   */
  cacheStats(): CacheStats & { memberIndex: number };
}

export interface CareSetResolverOptions {
  client: FhirClient;
  config: () => CareRelationshipsConfig;
  now?: () => number;
  onLookup?: (kind: 'careteam' | 'encounter', ok: boolean) => void;
}

const DAY_MS = 86_400_000;
/**
 * References per CareTeam search. A GET request line of 100 references stays near 3 KB, under the
 * 8 KB many servers accept (Jetty's default, in front of HAPI; Node's is 16 KB): one search of a
 * frontier of 1,000 teams was refused (431), and the user with it.
 */
const PARTICIPANTS_PER_SEARCH = 100;

export function createCareSetResolver(opts: CareSetResolverOptions): CareSetResolver {
  const now = opts.now ?? Date.now;
  let lookups = 0;
  let hits = 0;
  let misses = 0;
  // The lifetime is checked against `now` on each read (the configured clock, a reload's new TTL);
  // the LRU bounds the memory only.
  /** member ref → practitioner keys whose cached set used that member. */
  const byMember = new Map<string, Set<string>>();
  /** The member refs each cached set was resolved from: the index forgets a set that leaves the cache. */
  const membersOf = new Map<string, readonly string[]>();
  const newCache = () =>
    new LRUCache<string, CareSet>({
      max: opts.config().cache.maxEntries,
      // Sets differ by orders of magnitude (one patient, an emergency department's thousand):
      // their patients, not their number, are what fills the heap.
      maxSize: opts.config().cache.maxPatients,
      sizeCalculation: (set) => Math.min(Math.max(1, set.patients.size), opts.config().cache.maxPatients),
      // Evicted or deleted: its index entries go with it (an overwrite re-indexes, below).
      dispose: (_set, user, reason) => {
        if (reason !== 'set') unindex(user);
      },
    });
  let cache = newCache();
  /** Concurrent resolutions of the same user share one lookup. */
  const inflight = new Map<string, Promise<CareSet>>();
  /**
   * Bumped by every invalidation: a resolution that started before one (it may have read the
   * relationship before the write) is answered but not cached, nor shared with later requests.
   */
  let generation = 0;

  function index(user: string, members: readonly string[]): void {
    unindex(user);
    membersOf.set(user, members);
    for (const m of members) {
      let s = byMember.get(m);
      if (!s) byMember.set(m, (s = new Set()));
      s.add(user);
    }
  }

  function unindex(user: string): void {
    const members = membersOf.get(user);
    if (!members) return;
    membersOf.delete(user);
    for (const m of members) {
      const s = byMember.get(m);
      if (s?.delete(user) && s.size === 0) byMember.delete(m);
    }
  }

  function memberRefs(p: PractitionerPrincipal, cfg: CareRelationshipsConfig): string[] {
    const refs = [p.practitioner, ...p.practitionerRoles];
    if (cfg.careTeam.organizationMembership) refs.push(...p.organizations);
    return refs;
  }

  async function search<T extends CareTeam | Encounter>(
    kind: 'careteam' | 'encounter',
    type: string,
    params: Record<string, string>,
    maxPages: number,
  ): Promise<T[]> {
    lookups++;
    try {
      const r = await opts.client.searchAll<T>(type, params, maxPages);
      opts.onLookup?.(kind, true);
      return r;
    } catch (err) {
      opts.onLookup?.(kind, false);
      throw err;
    }
  }

  async function resolve(p: PractitionerPrincipal): Promise<{ set: CareSet; members: readonly string[] }> {
    const cfg = opts.config();
    const t = now();
    const members = memberRefs(p, cfg);
    const patients = new Map<string, Evidence[]>();
    const grant = (patientId: string, e: Evidence) => {
      const list = patients.get(patientId);
      if (list) list.push(e);
      else patients.set(patientId, [e]);
    };

    const [teams, encounters] = await Promise.all([
      cfg.careTeam.enabled ? careTeams(members, cfg, t) : Promise.resolve([]),
      cfg.encounter.enabled
        ? search<Encounter>('encounter', 'Encounter', {
            participant: members.filter((m) => !m.startsWith('Organization/')).join(','),
            status: encounterStatuses(cfg).join(','),
            _count: '1000',
          }, cfg.maxPages)
        : Promise.resolve([]),
    ]);

    for (const team of teams) {
      const pid = patientOf(team.subject);
      if (pid) grant(pid, { source: 'careteam', reference: `CareTeam/${team.id}` });
    }
    const memberSet = new Set(members.filter((m) => !m.startsWith('Organization/')));
    for (const enc of encounters) {
      if (!encounterCounts(enc, memberSet, cfg, t)) continue;
      const pid = patientOf(enc.subject);
      if (pid) grant(pid, { source: 'encounter', reference: `Encounter/${enc.id}` });
    }
    // The teams she belongs to: an opposition may name a whole care team (relate/oppositions.ts).
    const set: CareSet = { scope: 'listed', patients, teams: new Set(teams.map((team) => `CareTeam/${team.id}`)), resolvedAt: t };
    return { set, members };
  }

  /**
   * Active CareTeams the user belongs to, directly or through nested teams. Breadth-first over
   * team membership: a team counts when one of its current participants is the user or a team
   * that already counts. Depth is capped and visited teams are skipped (cycles).
   */
  async function careTeams(members: string[], cfg: CareRelationshipsConfig, t: number): Promise<CareTeam[]> {
    const out: CareTeam[] = [];
    const seen = new Set<string>();
    let frontier = new Set(members);
    for (let depth = 0; depth <= cfg.careTeam.nestedDepth && frontier.size > 0; depth++) {
      // The frontier holds every team found at the level above (hundreds for a ward physician):
      // searched in slices, so that no request line outgrows what servers accept.
      const refs = [...frontier];
      const slices: string[][] = [];
      for (let i = 0; i < refs.length; i += PARTICIPANTS_PER_SEARCH) slices.push(refs.slice(i, i + PARTICIPANTS_PER_SEARCH));
      const found = (
        await Promise.all(
          slices.map((slice) =>
            search<CareTeam>(
              'careteam',
              'CareTeam',
              { participant: slice.join(','), status: cfg.careTeam.statuses.join(','), _count: '1000' },
              cfg.maxPages,
            ),
          ),
        )
      ).flat();
      const next = new Set<string>();
      for (const team of found) {
        if (!team.id || seen.has(team.id)) continue;
        if (!team.status || !cfg.careTeam.statuses.includes(team.status as never)) continue;
        if (!periodCovers(team.period, t)) continue;
        const isMember = (team.participant ?? []).some(
          (part) => literalRef(part.member) !== undefined && frontier.has(literalRef(part.member)!) && periodCovers(part.period, t),
        );
        if (!isMember) continue;
        seen.add(team.id);
        out.push(team);
        next.add(`CareTeam/${team.id}`);
      }
      frontier = next;
    }
    return out;
  }

  async function getOrResolve(p: PractitionerPrincipal, fresh: boolean): Promise<CareSet> {
    const key = p.practitioner;
    if (!fresh) {
      const hit = cache.get(key);
      if (hit && now() - hit.resolvedAt < opts.config().cache.ttlSeconds * 1000) {
        hits++;
        return hit;
      }
    }
    const running = inflight.get(key);
    if (running) {
      hits++;
      return running;
    }
    misses++;
    const started = generation;
    const promise = resolve(p)
      .then(({ set, members }) => {
        if (started === generation) {
          cache.set(key, set);
          index(key, members);
        }
        return set;
      })
      .finally(() => {
        if (inflight.get(key) === promise) inflight.delete(key);
      });
    inflight.set(key, promise);
    return promise;
  }

  return {
    get: (p) => getOrResolve(p, false),
    refresh: (p) => getOrResolve(p, true),
    invalidate(refs) {
      generation++;
      inflight.clear();
      for (const r of refs) {
        const users = byMember.get(r);
        if (users) for (const u of [...users]) cache.delete(u);
        // A write naming a user directly also drops that user's set.
        cache.delete(r);
      }
    },
    clear() {
      generation++;
      inflight.clear();
      cache = newCache();
      byMember.clear();
      membersOf.clear();
    },
    get lookups() {
      return lookups;
    },
    cacheStats: () => ({ hits, misses, entries: cache.size, memberIndex: byMember.size }),
  };
}

/** The Encounter statuses a care-set lookup searches: the configured ones, and `finished` when a window applies. */
export function encounterStatuses(cfg: CareRelationshipsConfig): string[] {
  const s = new Set<string>(cfg.encounter.statuses);
  if (cfg.encounter.finishedWithinDays > 0) s.add('finished');
  return [...s];
}

/** Whether an Encounter ties the user to its patient now. */
export function encounterCounts(enc: Encounter, members: ReadonlySet<string>, cfg: CareRelationshipsConfig, t: number): boolean {
  const status = enc.status;
  let active: boolean;
  if (status === 'finished') {
    if (!cfg.encounter.statuses.includes('finished')) {
      // A finished stay counts only within the window after its end; no end date, no window.
      const end = parseTime(enc.period?.end);
      if (end === undefined || cfg.encounter.finishedWithinDays === 0) return false;
      if (end > t || t - end > cfg.encounter.finishedWithinDays * DAY_MS) return false;
    }
    active = false;
  } else if (status && cfg.encounter.statuses.includes(status as never)) {
    // Like a CareTeam's: a stay whose own period has not begun or has ended does not count now,
    // whatever its status says (an in-progress stay dated next week, one left open after its end).
    if (!periodCovers(enc.period, t)) return false;
    active = true;
  } else {
    return false;
  }
  return (enc.participant ?? []).some((part) => {
    const ref = literalRef(part.individual);
    if (!ref || !members.has(ref)) return false;
    // The participant's own period: covering now for an ongoing stay, overlapping the stay once it ended.
    if (active) return periodCovers(part.period, t);
    return finishedParticipationCounts(part.period, enc.period, cfg, t);
  });
}

/**
 * A participant of a finished stay keeps access for the window after their own participation
 * ended (the stay's end when they stayed to the end), not after the stay's: someone who left a
 * long stay months before it closed must not regain the record when it closes, when they were
 * refused it while it ran. Their participation must also have begun before the stay ended.
 * An unreadable bound never counts.
 */
function finishedParticipationCounts(part: Period | undefined, stay: Period | undefined, cfg: CareRelationshipsConfig, t: number): boolean {
  const stayEnd = parseTime(stay?.end, true);
  if (part?.start !== undefined) {
    const s = parseTime(part.start);
    if (s === undefined || (stayEnd !== undefined && s > stayEnd)) return false;
  }
  if (part?.end === undefined) return true;
  const e = parseTime(part.end, true);
  if (e === undefined) return false;
  // With `finished` among the statuses that count, finished stays count at any age.
  return cfg.encounter.statuses.includes('finished') || t - e <= cfg.encounter.finishedWithinDays * DAY_MS;
}

/** A missing period, or missing bounds, are open; an unparseable bound never covers. */
export function periodCovers(period: Period | undefined, t: number): boolean {
  if (!period) return true;
  if (period.start !== undefined) {
    const s = parseTime(period.start);
    if (s === undefined || s > t) return false;
  }
  if (period.end !== undefined) {
    const e = parseTime(period.end, true);
    if (e === undefined || e < t) return false;
  }
  return true;
}

/** FHIR dateTime → epoch ms. A date without time is the start (or, for an end, the end) of that day. */
function parseTime(v: string | undefined, endOfDay = false): number | undefined {
  if (!v) return undefined;
  if (/^\d{4}(-\d{2}(-\d{2})?)?$/.test(v)) {
    const [y, m = '01', d = '01'] = v.split('-');
    const start = Date.UTC(Number(y), Number(m) - 1, Number(d));
    if (!endOfDay) return start;
    if (v.length === 4) return Date.UTC(Number(y) + 1, 0, 1) - 1;
    if (v.length === 7) return Date.UTC(Number(y), Number(m), 1) - 1;
    return start + DAY_MS - 1;
  }
  const ms = Date.parse(v);
  return Number.isNaN(ms) ? undefined : ms;
}

/** `Type/id` for a literal relative reference; undefined for identifier-only, contained (`#x`) or absolute ones. */
export function literalRef(ref: Reference | undefined): string | undefined {
  const r = ref?.reference;
  if (!r || r.startsWith('#')) return undefined;
  const m = /^([A-Z][A-Za-z]+)\/([A-Za-z0-9\-.]{1,64})$/.exec(r);
  return m ? `${m[1]}/${m[2]}` : undefined;
}

function patientOf(ref: Reference | undefined): string | undefined {
  const r = literalRef(ref);
  return r?.startsWith('Patient/') ? r.slice(8) : undefined;
}
