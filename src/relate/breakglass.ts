import { LRUCache } from 'lru-cache';

/**
 * Break-the-glass grants: one user, one named patient, a reason, a few minutes. Kept in memory
 * (a restart ends every open grant, which fails closed); every grant is audited by the caller.
 * A deployment with several caregate instances behind a balancer needs sticky sessions, or the
 * clinician opens the grant again on the other instance (documented in docs/POLICY.md).
 */
export interface BreakGlassGrant {
  user: string;
  patient: string;
  reason: string;
  grantedAt: number;
  until: number;
}

export interface BreakGlassStore {
  grant(user: string, patient: string, reason: string, minutes: number): BreakGlassGrant;
  /** Open grants of a user (expired ones are dropped). */
  active(user: string): BreakGlassGrant[];
}

export function createBreakGlassStore(now: () => number = Date.now): BreakGlassStore {
  const byUser = new LRUCache<string, Map<string, BreakGlassGrant>>({ max: 50_000 });
  return {
    grant(user, patient, reason, minutes) {
      const t = now();
      const g: BreakGlassGrant = { user, patient, reason, grantedAt: t, until: t + minutes * 60_000 };
      let m = byUser.get(user);
      if (!m) byUser.set(user, (m = new Map()));
      m.set(patient, g);
      return g;
    },
    active(user) {
      const m = byUser.get(user);
      if (!m) return [];
      const t = now();
      for (const [p, g] of m) if (g.until <= t) m.delete(p);
      return [...m.values()];
    },
  };
}
