import { Counter, type Registry } from 'prom-client';
import type { Logger } from 'pino';
import type { CareSet } from '../relate/types.js';
import type { Policy, RoleConfig } from './config.js';
import { decide, type DecideInput } from './decide.js';
import type { Decision, Obligation } from './decision.js';
import type { LoadedPolicy } from './load.js';
import { matchRoles, roleFactsOf } from './roles.js';

/**
 * Shadow mode (`policy.shadowFile`): a candidate policy decides every request beside the active
 * one, on the same principal, interaction and care set, and each difference is logged and counted.
 * The candidate never changes an answer: its decision is thrown away, its failures are swallowed.
 *
 * The candidate's own roles are matched again (a role added, removed or reordered is the most common
 * change). When the role the candidate picks has the active role's profile, the active care set is
 * reused; an `all-records` role needs none; any other profile needs its own care set, which the caller
 * resolves through `careSetFor` (off the request's path: the comparison completes after the answer).
 *
 * Not compared: changes to the sections that act outside decide() — `careRelationships` (the care
 * set is the active policy's), `breakGlass`, and the like (a warning names them once; run
 * `caregate test-policy --policy` with the candidate for those) — and the break-the-glass
 * privilege of the candidate's roles (the grant is opened by the active policy before deciding).
 * A refusal that authorize() confirms with a fresh care set is compared twice, once per decision.
 *
 * Logs carry the request id, interaction kind, resource type and both effects, reasons and rules:
 * no patient, no identifier, no query value.
 */

export type ShadowResultKind = 'same' | 'permit-to-deny' | 'deny-to-permit' | 'other-change' | 'error';

export interface ShadowResult {
  result: ShadowResultKind;
  /** Which parts of the decision differ: effect, reason, rule, obligations, purposeOfUse, refuseAs. */
  changed: string[];
  candidate?: { effect: Decision['effect']; reason: string; rule: string; role: string | undefined };
}

export interface ShadowCompareInput {
  requestId: string;
  /** The input the active decision was taken on. */
  input: DecideInput;
  /** The active decision (what the client gets). */
  active: Decision;
  /**
   * The care set of a role of the candidate whose profile differs from the active role's
   * (authorize passes the care set of that profile for the same caller). Without it such requests count as `error`.
   */
  careSetFor?: (role: RoleConfig) => Promise<CareSet>;
}

export interface ShadowPolicy {
  /** Revision (sha256 prefix) of the candidate file. */
  readonly revision: string;
  /**
   * Decides with the candidate and records a difference. Never rejects and never throws; the
   * caller does not wait for it (`void shadow.compare(...)`). Resolves with the comparison (tests).
   */
  compare(c: ShadowCompareInput): Promise<ShadowResult>;
  /** Replaces the candidate (after the shadow file was reloaded). */
  setCandidate(candidate: LoadedPolicy): void;
  /** Comparisons so far, by result. */
  counts(): Readonly<Record<ShadowResultKind, number>>;
}

export interface ShadowOptions {
  candidate: LoadedPolicy;
  logger: Logger;
  /** The proxy's Prometheus registry: `caregate_shadow_decisions_total{result}` is registered there. */
  registry?: Registry;
}

/**
 * Policy sections decide() reads from the policy it is given: a candidate's change there is compared.
 * The others (care relationships, break-the-glass, paging, …) act before or after the decision.
 */
const COMPARED: ReadonlySet<string> = new Set(['version', 'roles', 'refusals', 'search']);

const RESULTS: readonly ShadowResultKind[] = ['same', 'permit-to-deny', 'deny-to-permit', 'other-change', 'error'];

export function createShadowPolicy(opts: ShadowOptions): ShadowPolicy {
  let candidate = opts.candidate;
  const { logger } = opts;
  const counts: Record<ShadowResultKind, number> = { same: 0, 'permit-to-deny': 0, 'deny-to-permit': 0, 'other-change': 0, error: 0 };
  const counter = new Counter({
    name: 'caregate_shadow_decisions_total',
    help: 'Requests decided by the shadow (candidate) policy, by how its decision compares with the active one.',
    labelNames: ['result'],
    registers: opts.registry ? [opts.registry] : [],
  });
  for (const r of RESULTS) counter.inc({ result: r }, 0);
  /** Active policies already checked for settings the shadow cannot compare. */
  const checked = new WeakSet<Policy>();

  function record(r: ShadowResult): ShadowResult {
    counts[r.result]++;
    counter.inc({ result: r.result });
    return r;
  }

  function warnUncompared(active: Policy): void {
    if (checked.has(active)) return;
    checked.add(active);
    const a = active as Record<string, unknown>;
    const c = candidate.policy as Record<string, unknown>;
    const differs = [...new Set([...Object.keys(a), ...Object.keys(c)])].filter((k) => !COMPARED.has(k) && JSON.stringify(a[k]) !== JSON.stringify(c[k]));
    if (differs.length) {
      logger.warn({ candidateRevision: candidate.revision, sections: differs }, 'shadow policy: these sections differ and are not compared (use caregate test-policy)');
    }
  }

  async function candidateCareSet(c: ShadowCompareInput, role: RoleConfig): Promise<CareSet | undefined> {
    if (c.input.role?.profile === role.profile) return c.input.careSet;
    if (role.profile === 'all-records') return { scope: 'all', patients: new Map(), resolvedAt: Date.now() };
    // decide() refuses a `none` role before it looks at a care set.
    if (role.profile === 'none') return { scope: 'listed', patients: new Map(), resolvedAt: Date.now() };
    if (!c.careSetFor) throw new ShadowUnavailable(`no care set for profile ${role.profile}`);
    return c.careSetFor(role);
  }

  async function evaluate(c: ShadowCompareInput): Promise<ShadowResult> {
    const p = c.input.principal;
    const role = p ? matchRoles(candidate.policy, roleFactsOf(p))[0] : undefined;
    let decision: Pick<Decision, 'effect' | 'reason' | 'rule'> & Partial<Decision>;
    if (p && role?.requireCard && !p.certificate) {
      // As roleOf(): a role that requires a card refuses before deciding.
      decision = { effect: 'deny', reason: 'role-forbidden', rule: `${role.id}.require-card` };
    } else {
      const careSet = p && role ? await candidateCareSet(c, role) : undefined;
      decision = decide({ ...c.input, policy: candidate.policy, role, careSet });
    }
    const changed = differences(c.active, decision);
    const result: ShadowResultKind =
      changed.length === 0
        ? 'same'
        : c.active.effect === 'permit' && decision.effect === 'deny'
          ? 'permit-to-deny'
          : c.active.effect === 'deny' && decision.effect === 'permit'
            ? 'deny-to-permit'
            : 'other-change';
    const out: ShadowResult = { result, changed, candidate: { effect: decision.effect, reason: decision.reason, rule: decision.rule, role: role?.id } };
    if (result !== 'same') {
      const it = c.input.interaction;
      logger.info(
        {
          reqId: c.requestId,
          interaction: it.kind,
          type: it.resourceType,
          active: { effect: c.active.effect, reason: c.active.reason, rule: c.active.rule },
          candidate: out.candidate,
          changed,
          candidateRevision: candidate.revision,
        },
        'shadow policy decides differently',
      );
    }
    return out;
  }

  return {
    get revision() {
      return candidate.revision;
    },
    async compare(c) {
      try {
        warnUncompared(c.input.policy);
        return record(await evaluate(c));
      } catch (err) {
        // The shadow never affects the request: its failures are counted and logged without detail.
        logger.warn(
          {
            reqId: c.requestId,
            interaction: c.input.interaction.kind,
            type: c.input.interaction.resourceType,
            error: err instanceof ShadowUnavailable ? err.message : (err as Error)?.name,
          },
          'shadow policy could not decide',
        );
        return record({ result: 'error', changed: [] });
      }
    },
    setCandidate(next) {
      candidate = next;
    },
    counts: () => ({ ...counts }),
  };
}

/**
 * `decide()` with the active policy, and the candidate beside it when a shadow is configured.
 * Returns the active decision, always; the comparison finishes on its own.
 */
export function decideShadowed(
  input: DecideInput,
  shadow: ShadowPolicy | undefined,
  meta: { requestId: string; careSetFor?: (role: RoleConfig) => Promise<CareSet> },
): Decision {
  const active = decide(input);
  if (shadow) void shadow.compare({ requestId: meta.requestId, input, active, ...(meta.careSetFor ? { careSetFor: meta.careSetFor } : {}) });
  return active;
}

class ShadowUnavailable extends Error {}

/** Obligations as comparable text: kinds and settings, never patient ids (only their number). */
function obligationKey(o: Obligation): string {
  switch (o.kind) {
    case 'narrow':
      return `narrow:${o.param}:${o.patients.length}`;
    case 'audit-severity':
      return `audit-severity:${o.severity}`;
    case 'de-identify':
      return `de-identify:${o.engagement}`;
    case 'break-glass-patients':
      return `break-glass-patients:${o.patients.length}`;
    default:
      return o.kind;
  }
}

function differences(a: Decision, b: Partial<Decision>): string[] {
  const changed: string[] = [];
  if (a.effect !== b.effect) changed.push('effect');
  if (a.reason !== b.reason) changed.push('reason');
  if (a.rule !== b.rule) changed.push('rule');
  const ob = (d: Partial<Decision>) => (d.obligations ?? []).map(obligationKey).sort().join(',');
  if (ob(a) !== ob(b)) changed.push('obligations');
  if (a.purposeOfUse !== b.purposeOfUse) changed.push('purposeOfUse');
  if (a.refuseAs !== b.refuseAs) changed.push('refuseAs');
  return changed;
}
