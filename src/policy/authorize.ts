import type { IncomingHttpHeaders } from 'node:http';
import type { Resource } from '@medplum/fhirtypes';
import type { FhirInteraction } from '../fhir/interaction.js';
import { isWrite } from '../fhir/interaction.js';
import type { PatientLink } from '../fhir/patients.js';
import { ProxyError } from '../http/errors.js';
import type { PractitionerPrincipal, Principal } from '../identity/principal.js';
import { parseBreakGlassRequest, type BreakGlassRequest } from '../relate/breakglass.js';
import type { CareSetKind, CareSets } from '../relate/profiles.js';
import type { CareSet } from '../relate/types.js';
import type { Policy, RoleConfig } from './config.js';
import { decide, decideBundle, type DecideInput } from './decide.js';
import type { Decision } from './decision.js';
import { engagementFor, type Engagement } from './engagement.js';
import { roleOf } from './roles.js';
import { patientsNamed } from './search-scope.js';
import { decideShadowed, type ShadowPolicy } from './shadow.js';
import { writeFacts, type WriteFacts } from './write-facts.js';

/**
 * The authorize stage: who the caller is to the policy, which patients they may see, and the
 * decision, for the request and for each entry of a batch, by the one function `decide()`.
 *
 * In order:
 * 1. the role that applies (the first that matches; a card required and absent refuses outright);
 * 2. a break-the-glass request, checked (it opens a grant only if the request is then permitted);
 * 3. the care set of the role's profile, with open grants and the pending one;
 * 4. for a coding contractor, the engagement in force and the request with pseudonyms revealed;
 * 5. the facts of each write (its current version and patients) and the decisions;
 * 6. a refusal the care set decided (a patient outside it, an empty answer) is confirmed once
 *    against a fresh care set: a newly added team member is never wrongly refused;
 * 7. the grant of a permitted break-the-glass request is opened, and audited before the answer.
 */
export interface AuthorizeInput {
  requestId: string;
  headers: IncomingHttpHeaders;
  /** Undefined for the public endpoints (capabilities, SMART configuration). */
  principal: Principal | undefined;
  interaction: FhirInteraction;
  /** The request follows a signed paging link (its query was judged when the link was issued). */
  paging: boolean;
  /** The paging link was taken out of caregate's narrowing: narrow it again, to the care set of now. */
  renarrow?: boolean;
}

export interface Authorization {
  role: RoleConfig | undefined;
  /** The care set the decision was taken on. */
  careSet: CareSet | undefined;
  /** The interaction decided, and sent upstream: as classified, or with a contractor's pseudonyms revealed. */
  interaction: FhirInteraction;
  decision: Decision;
  /** Batch and transaction: the verdict of each entry, in order. */
  entries?: readonly EntryVerdict[];
  /** The current versions of the resources this request writes (read to decide it). */
  replaced: readonly Resource[];
  /** The break-the-glass grant this request opened. */
  grant?: { patient: string; reason: string; until: number };
  /** Coding contractors: the engagement in force. */
  engagement?: Engagement;
}

export interface EntryVerdict {
  decision: Decision;
  /**
   * The entry's own error, when it fails on its own once permitted (a PATCH whose target is missing
   * or that does not apply): it is not sent, and answered in its entry as the FHIR server would.
   */
  error?: ProxyError;
}

/** Whether a batch entry goes upstream: permitted, and not failed on its own. */
export function entrySent(v: EntryVerdict | undefined): boolean {
  return v !== undefined && v.decision.effect === 'permit' && v.error === undefined;
}

export interface AuthorizerDeps {
  policy: () => Policy;
  careSets: CareSets;
  /** Reads a resource with the proxy's credential (the current version of a write's target, an indirect link). */
  read(type: string, id: string): Promise<Resource | undefined>;
  linkOf(resource: Resource): PatientLink;
  localBases: readonly string[];
  /** Who points at a Binary stored without securityContext (a write may attach only Binaries its writer may see). */
  binaryOwners?: { of(binaryId: string): Promise<string[]> };
  /** The interaction with a contractor's pseudonyms mapped back to real ids (shape/pseudonyms.ts). */
  reveal(engagement: Engagement, it: FhirInteraction, paging: boolean): Promise<FhirInteraction>;
  /** Opens a break-the-glass grant; resolves once its alert is durable (rejects when it cannot be). */
  openGrant(requestId: string, p: PractitionerPrincipal, req: BreakGlassRequest): Promise<{ until: number }>;
  shadow?: ShadowPolicy;
  now: () => number;
}

/** The relationship each access profile rests on. */
const KIND_OF: Record<RoleConfig['profile'], CareSetKind> = {
  'care-team': 'care-relationships',
  'all-records': 'everyone',
  administrative: 'everyone',
  'own-record': 'own-record',
  mandate: 'mandates',
  'de-identified': 'stays',
  none: 'nobody',
};

/** Care sets read from the upstream (and cached): a refusal they decide is confirmed fresh. */
const LOOKED_UP: ReadonlySet<CareSetKind> = new Set(['care-relationships', 'mandates', 'stays']);

export function createAuthorizer(deps: AuthorizerDeps) {
  async function careSetOf(
    p: Principal,
    role: RoleConfig,
    engagement: Engagement | undefined,
    fresh: boolean,
    pending: readonly BreakGlassRequest[] = [],
  ): Promise<CareSet> {
    const kind = role.profile === 'de-identified' && !engagement ? 'nobody' : KIND_OF[role.profile];
    return deps.careSets.of({
      principal: p,
      kind,
      fresh,
      ...(pending.length ? { pending } : {}),
      ...(engagement ? { stays: { id: engagement.id, stays: engagement.stays } } : {}),
    });
  }

  /** decide() on one interaction, with the facts of a write read first. */
  async function decideOne(base: Omit<DecideInput, 'interaction' | 'writePatients' | 'patientLinkChanged'>, it: FhirInteraction, requestId: string) {
    const facts: WriteFacts | undefined = isWrite(it) && !it.conditional?.length ? await writeFacts(it, deps) : undefined;
    const input: DecideInput = {
      ...base,
      interaction: it,
      ...(facts ? { writePatients: facts.patients, patientLinkChanged: facts.linkChanged, writeResources: { before: facts.before, after: facts.after } } : {}),
    };
    const p = base.principal!;
    const decision = decideShadowed(input, deps.shadow, {
      requestId,
      careSetFor: (r) => careSetOf(p, r, r.profile === 'de-identified' ? engagementFor(base.policy, p, r.id, new Date(deps.now())) : undefined, false),
    });
    return { decision, facts };
  }

  /** The decision of the request (and of each entry) on one care set. */
  async function decideAll(base: Omit<DecideInput, 'interaction'>, it: FhirInteraction, requestId: string) {
    const replaced: Resource[] = [];
    const keep = (f: WriteFacts | undefined) => {
      if (f?.before) replaced.push(f.before);
    };
    let entries: EntryVerdict[] | undefined;
    if (it.kind === 'batch' || it.kind === 'transaction') {
      entries = [];
      for (const e of it.entries ?? []) {
        const { decision, facts } = await decideOne(base, e.interaction, requestId);
        keep(facts);
        if (facts?.deferred !== undefined && decision.effect === 'permit') {
          // A permitted entry that fails on its own: a batch answers it in its entry; a transaction fails whole.
          const err = facts.deferred;
          if (!(err instanceof ProxyError) || err.status >= 500 || it.kind === 'transaction') throw err;
          entries.push({ decision, error: err });
        } else entries.push({ decision });
      }
    }
    const top = await decideOne(base, it, requestId);
    keep(top.facts);
    if (top.facts?.deferred !== undefined && top.decision.effect === 'permit') throw top.facts.deferred;
    const decision = entries ? decideBundle(top.decision, it, entries.map((e) => e.decision)) : top.decision;
    return { decision, entries, replaced };
  }

  return async function authorize(input: AuthorizeInput): Promise<Authorization> {
    const policy = deps.policy();
    const p = input.principal;
    const classified = input.interaction;
    if (!p) return { role: undefined, careSet: undefined, interaction: classified, decision: decide({ principal: undefined, role: undefined, interaction: classified, careSet: undefined, policy }), replaced: [] };

    const role = roleOf(policy, p);
    if (!role) {
      const decision = decideShadowed({ principal: p, role: undefined, interaction: classified, careSet: undefined, policy }, deps.shadow, { requestId: input.requestId });
      return { role: undefined, careSet: undefined, interaction: classified, decision, replaced: [] };
    }

    const now = deps.now();
    const btg = parseBreakGlassRequest(
      input.headers,
      classified,
      patientsNamed(classified),
      {
        allowed: role.breakGlass,
        roleId: role.id,
        minReasonLength: policy.breakGlass.minReasonLength,
        durationMinutes: policy.breakGlass.durationMinutes,
        header: policy.breakGlass.header,
      },
      p.kind === 'practitioner',
      deps.careSets.openGrants(p),
      now,
    );
    const pending = btg ? [btg] : [];

    const engagement = role.profile === 'de-identified' ? engagementFor(policy, p, role.id, new Date(now)) : undefined;
    // A de-identified contractor names records by pseudonyms; an identified one by their real ids.
    const interaction = engagement && engagement.access !== 'identified' ? await deps.reveal(engagement, classified, input.paging) : classified;
    const base = (careSet: CareSet): Omit<DecideInput, 'interaction'> => ({
      principal: p,
      role,
      careSet,
      policy,
      paging: input.paging,
      ...(input.renarrow ? { renarrow: true } : {}),
      ...(engagement ? { engagement: engagement.id } : {}),
    });

    let careSet = await careSetOf(p, role, engagement, false, pending);
    let verdict = await decideAll(base(careSet), interaction, input.requestId);
    if (LOOKED_UP.has(KIND_OF[role.profile]) && decidedByCareSet(verdict.decision, verdict.entries)) {
      careSet = await careSetOf(p, role, engagement, true, pending);
      verdict = await decideAll(base(careSet), interaction, input.requestId);
    }

    let grant: Authorization['grant'];
    if (btg && verdict.decision.effect === 'permit' && p.kind === 'practitioner') {
      const opened = await deps.openGrant(input.requestId, p, btg);
      grant = { patient: btg.patient, reason: btg.reason, until: opened.until };
    }
    return {
      role,
      careSet,
      interaction,
      decision: verdict.decision,
      ...(verdict.entries ? { entries: verdict.entries } : {}),
      replaced: verdict.replaced,
      ...(grant ? { grant } : {}),
      ...(engagement ? { engagement } : {}),
    };
  };
}

/**
 * Whether the care set decided a refusal (a patient outside it, or her opposition) or an empty
 * answer (no patient in it): what a fresh resolution could change (an opposition lifted on the
 * FHIR server is not held against the caller for the rest of the cache lifetime).
 */
function decidedByCareSet(d: Decision, entries: readonly EntryVerdict[] | undefined): boolean {
  const byCareSet = (x: Decision) =>
    (x.effect === 'deny' && (x.reason === 'no-care-relationship' || x.reason === 'patient-opposition')) ||
    (x.effect === 'permit' && x.obligations.some((o) => o.kind === 'narrow' && o.patients.length === 0));
  return byCareSet(d) || (entries ?? []).some((e) => byCareSet(e.decision));
}

export type Authorizer = ReturnType<typeof createAuthorizer>;
