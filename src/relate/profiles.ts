import type { Principal } from '../identity/principal.js';
import type { BreakGlassStore } from './breakglass.js';
import { withGrants } from './breakglass.js';
import type { CareSetResolver } from './careset.js';
import type { StaySets, StaysSpec } from './stays.js';
import type { CareSet, Evidence } from './types.js';

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
  /** Cache lifetime of stay sets, read at each call (a policy reload changes it). */
  ttlMs: () => number;
  now?: () => number;
}

export function createCareSets(opts: CareSetsOptions): CareSets {
  const now = opts.now ?? Date.now;
  const listed = (patients: ReadonlyMap<string, readonly Evidence[]> = new Map()): CareSet => ({ scope: 'listed', patients, resolvedAt: now() });

  return {
    async of({ principal: p, kind, stays, fresh }) {
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
          return withGrants(base, fresh ? opts.breakGlass.confirmed(p.practitioner) : opts.breakGlass.active(p.practitioner));
        }
        case 'stays':
          return stays ? opts.stays.careSet(stays, { fresh, ttlMs: opts.ttlMs() }) : listed();
        case 'nobody':
          return listed();
      }
    },
    openGrants(p) {
      return p.kind === 'practitioner' ? opts.breakGlass.active(p.practitioner).map((g) => g.patient) : [];
    },
  };
}
