import type { PractitionerPrincipal, Principal } from '../identity/principal.js';
import type { BreakGlassStore } from './breakglass.js';
import { withGrants } from './breakglass.js';
import type { CareSetResolver } from './careset.js';
import { applying, opposableRefs, type OppositionStore } from './oppositions.js';
import type { StaySets, StaysSpec } from './stays.js';
import type { CareSet, Evidence, Opposition } from './types.js';

/**
 * Which patients a caller may see, by the kind of relationship their role rests on. The policy
 * maps each access profile to one of these kinds (policy/authorize.ts); this module knows how each
 * is resolved, and nothing of roles.
 */
export type CareSetKind =
  /** Every record (DIM, administrative staff: their view is limited by obligations, not by patients). */
  | 'everyone'
  /** CareTeams and Encounters of the practitioner, plus their open break-the-glass grants. */
  | 'care-relationships'
  /** The caller's own Patient record. */
  | 'own-record'
  /** The patients whose active Consent names the caller (a RelatedPerson). */
  | 'mandates'
  /** The stays of an engagement, and their patients. */
  | 'stays'
  /** No patient. */
  | 'nobody';

export interface CareSetRequest {
  principal: Principal;
  kind: CareSetKind;
  /** For `stays`: the engagement's stays. */
  stays?: StaysSpec;
  /** Bypass caches (to confirm a refusal with what the upstream holds now). */
  fresh: boolean;
  /** A break-the-glass grant this request would open (added before the oppositions are read). */
  pending?: readonly { patient: string; reason: string; until: number }[];
}

export interface CareSets {
  of(req: CareSetRequest): Promise<CareSet>;
  /** Open break-the-glass grants of a practitioner (patients). */
  openGrants(p: Principal): string[];
}

export interface CareSetsOptions {
  relationships: CareSetResolver;
  mandates(relatedPerson: string): Promise<Map<string, Evidence[]>>;
  breakGlass: BreakGlassStore;
  stays: StaySets;
  /** The patients' oppositions (CSP L1110-4), read for care-relationship sets while `enabled()`. */
  oppositions?: { store: OppositionStore; enabled: () => boolean };
  /** Cache lifetime of stay sets, read at each call (a policy reload changes it). */
  ttlMs: () => number;
  now?: () => number;
}

export function createCareSets(opts: CareSetsOptions): CareSets {
  const now = opts.now ?? Date.now;
  const listed = (patients: ReadonlyMap<string, readonly Evidence[]> = new Map()): CareSet => ({ scope: 'listed', patients, resolvedAt: now() });

  /** The oppositions matched to a cached care set, kept as long as the care set and the store hold. */
  const matched = new WeakMap<CareSet, { version: number; until: number; opposed: ReadonlyMap<string, readonly Opposition[]> }>();

  /** The oppositions among these patients' that name her (herself, one of her roles, her service, one of her teams) and are in force now. */
  async function opposedAmong(patients: readonly string[], p: PractitionerPrincipal, set: CareSet, fresh: boolean): Promise<Map<string, readonly Opposition[]>> {
    const opposed = new Map<string, readonly Opposition[]>();
    if (patients.length === 0) return opposed;
    const recorded = await opts.oppositions!.store.of(patients, { fresh });
    const refs = opposableRefs(p, set);
    const t = now();
    for (const [patient, list] of recorded) {
      const inForce = applying(list, refs, t);
      if (inForce.length > 0) opposed.set(patient, inForce);
    }
    return opposed;
  }

  /**
   * A practitioner's care set, with her break-the-glass grants, and the oppositions of its patients
   * that name her. The matching is kept with the cached care set it was made for (a care set of a
   * thousand patients is not matched again at every request), until the store changes or the
   * care-set lifetime ends; the patients of grants are matched each time.
   */
  async function withOppositions(base: CareSet, grants: Parameters<typeof withGrants>[1], p: PractitionerPrincipal, fresh: boolean): Promise<CareSet> {
    const set = withGrants(base, grants);
    if (!opts.oppositions?.enabled() || set.patients.size === 0) return set;
    const store = opts.oppositions.store;
    let memo = fresh ? undefined : matched.get(base);
    if (!memo || memo.version !== store.version || now() >= memo.until) {
      const version = store.version;
      memo = { version, until: now() + opts.ttlMs(), opposed: await opposedAmong([...base.patients.keys()], p, base, fresh) };
      matched.set(base, memo);
    }
    // Only a grant adds patients to the cached set: theirs are matched each time.
    const others = grants.length === 0 ? [] : [...new Set(grants.map((g) => g.patient))].filter((id) => !base.patients.has(id));
    if (others.length === 0) return memo.opposed.size > 0 ? { ...set, opposed: memo.opposed } : set;
    const opposed = new Map([...memo.opposed, ...(await opposedAmong(others, p, set, fresh))]);
    return opposed.size > 0 ? { ...set, opposed } : set;
  }

  async function resolve({ principal: p, kind, stays, fresh, pending = [] }: CareSetRequest): Promise<CareSet> {
    switch (kind) {
      case 'everyone':
        return { scope: 'all', patients: new Map(), resolvedAt: now() };
      case 'own-record': {
        if (p.kind !== 'patient') return listed();
        const self = p.patient.slice('Patient/'.length);
        return listed(new Map([[self, [{ source: 'own-record', reference: p.patient } satisfies Evidence]]]));
      }
      case 'mandates':
        return p.kind === 'related-person' ? listed(await opts.mandates(p.relatedPerson)) : listed();
      case 'care-relationships': {
        if (p.kind !== 'practitioner') return listed();
        const base = fresh ? await opts.relationships.refresh(p) : await opts.relationships.get(p);
        // A refusal is confirmed against the grants opened on every instance, or not at all (503).
        const grants = fresh ? opts.breakGlass.confirmed(p.practitioner) : opts.breakGlass.active(p.practitioner);
        return withOppositions(base, [...grants, ...pending], p, fresh);
      }
      case 'stays':
        return stays ? opts.stays.careSet(stays, { fresh, ttlMs: opts.ttlMs() }) : listed();
      case 'nobody':
        return listed();
    }
  }

  return {
    async of(req) {
      const set = await resolve(req);
      // Care-relationship sets hold the pending grant already (its patient's oppositions are read).
      return req.kind === 'care-relationships' || !req.pending?.length ? set : withGrants(set, req.pending);
    },
    openGrants(p) {
      return p.kind === 'practitioner' ? opts.breakGlass.active(p.practitioner).map((g) => g.patient) : [];
    },
  };
}
