import type { IncomingMessage } from 'node:http';
import type { Bundle, BundleEntry, Patient, Resource } from '@medplum/fhirtypes';
import type { Logger } from 'pino';
import type { Principal } from './identity/principal.js';
import { principalKey } from './identity/principal.js';
import type { FhirInteraction, SearchParam } from './fhir/interaction.js';
import { classify } from './fhir/classify.js';
import { ProxyError } from './http/errors.js';
import { outcomeFor } from './http/outcome.js';
import type { Answer } from './http/send.js';
import type { Plan, RequestContext, Stages } from './pipeline.js';
import type { Policy, RoleConfig } from './policy/config.js';
import { decide } from './policy/decide.js';
import { decideShadowed, type ShadowPolicy } from './policy/shadow.js';
import type { Decision } from './policy/decision.js';
import { matchRoles } from './policy/roles.js';
import type { CareSet, Evidence } from './relate/types.js';
import type { CareSetResolver } from './relate/careset.js';
import type { BreakGlassStore } from './relate/breakglass.js';
import { filterBundle, present, sanitizeOutcome, type FilterContext } from './shape/filter.js';
import { maskForAdministration } from './shape/mask.js';
import { applySubsetting, splitSubsetting, type Subsetting } from './shape/subsetting.js';
import { createDeidentifier, type Deidentifier } from './shape/deid.js';
import { contractorOf, engagementActive, type Engagement } from './policy/engagement.js';
import { createHmac, randomBytes } from 'node:crypto';
import type { Encounter, Group } from '@medplum/fhirtypes';
import { resolvePatientLink, type PatientLink } from './fhir/patients.js';
import { walkReferences } from './fhir/references.js';
import { patchedCopy } from './shape/json-patch.js';
import { PAGE_PATH, type PageLinks } from './shape/paging.js';
import { buildAnswer, parseUpstreamBody } from './shape/response.js';
import type { BaseRewriter } from './shape/rewrite.js';
import type { UpstreamRequest } from './upstream/proxy.js';
import type { FhirClient } from './upstream/client.js';

/**
 * The concrete stages of the pipeline (see pipeline.ts for the order). Each stage delegates to its
 * folder; this file only passes plain data between them and keeps per-request state.
 */

export interface StageDeps {
  logger: Logger;
  client: FhirClient;
  policy: () => Policy;
  identify(req: IncomingMessage, ctx: RequestContext): Promise<Principal>;
  careSets: CareSetResolver;
  /** Patients a RelatedPerson holds a valid mandate for. */
  mandates(relatedPerson: string): Promise<Map<string, Evidence[]>>;
  breakGlass: BreakGlassStore;
  linkOf(resource: Resource): PatientLink;
  rewriter: BaseRewriter;
  pages: PageLinks;
  shapeRequest(it: FhirInteraction, ctx: RequestContext, override?: { params?: readonly SearchParam[]; body?: unknown }): UpstreamRequest;
  audit(ctx: RequestContext, answer: Answer): Promise<void>;
  /** Records a break-the-glass grant (high-severity audit); resolves once durable. */
  auditBreakGlass(ctx: RequestContext, patient: string, reason: string, until: number): Promise<void>;
  maxRequestBytes: number;
  /**
   * Secret the pseudonym keys of coding-contractor engagements derive from. A fixed secret keeps
   * pseudonyms stable across restarts; without one they change at each start.
   */
  pseudonymSecret?: Buffer;
  /** A candidate policy evaluated beside the active one; differences are logged, answers unaffected. */
  shadow?: ShadowPolicy;
  /** Drops the cached principal of `Practitioner/<id>` (after a PractitionerRole write). */
  invalidatePrincipal(practitioner: string): void;
}

/** Per-request state the stages share, beyond RequestContext. */
interface Extra {
  role?: RoleConfig;
  paging?: boolean;
  entryDecisions?: Decision[];
  entryNotes?: string[];
  /** Batch entries refused by their own error (not by the policy), by index. */
  entryErrors?: (ProxyError | undefined)[];
  breakGlassUntil?: number;
  engagement?: Engagement;
  subsetting?: Subsetting;
}
const extras = new WeakMap<RequestContext, Extra>();
const extra = (ctx: RequestContext): Extra => {
  let e = extras.get(ctx);
  if (!e) extras.set(ctx, (e = {}));
  return e;
};

/** Parameters a coding contractor gives ids in (pseudonyms only). */
const DEID_ID_PARAMS: ReadonlySet<string> = new Set(['_id', 'patient', 'subject', 'encounter']);
/** A checked break-the-glass request: one patient, a readable reason, the end of the grant it would open. */
interface BreakGlassRequest {
  patient: string;
  reason: string;
  /** Asked with `POST Patient/<id>/$break-glass` rather than a header on a read. */
  asOperation: boolean;
  until: number;
}

/** A care set with break-the-glass grants added (each patient's evidence says until when, and why). */
function withGrants(base: CareSet, grants: readonly { patient: string; reason: string; until: number }[]): CareSet {
  if (grants.length === 0) return base;
  const patients = new Map(base.patients);
  for (const g of grants) {
    patients.set(g.patient, [
      ...(patients.get(g.patient) ?? []),
      { source: 'break-glass', reference: undefined, until: new Date(g.until).toISOString(), reason: g.reason },
    ]);
  }
  return { ...base, patients };
}

function principalPractitioner(p: Principal): string {
  if (p.kind !== 'practitioner') throw new ProxyError('ERR_FORBIDDEN', 'Break-the-glass is for practitioners.');
  return p.practitioner;
}

const RELATIONSHIP_WRITES = new Set(['CareTeam', 'Encounter', 'PractitionerRole', 'Practitioner']);
const PUBLIC_PATHS = new Set(['/metadata', '/.well-known/smart-configuration']);
const BTG_CATEGORY = /v3-ActReason#BTG\b/;
/** Longest break-the-glass reason recorded (it is copied into every AuditEvent of the grant). */
const MAX_BTG_REASON = 1000;

/**
 * A break-the-glass reason as a reviewer reads it: control characters (NUL, line breaks) become
 * spaces, invisible format characters (zero-width spaces, bidirectional marks) are removed,
 * whitespace is collapsed. Its length is then judged on letters and digits only, so that ten
 * zero-width spaces, NULs or dots do not pass for a reason.
 */
function readableReason(raw: string): string {
  return raw
    .normalize('NFC')
    .replace(/\p{Cc}/gu, ' ')
    .replace(/[\p{Cf}\p{Co}\p{Cn}\p{Cs}]/gu, '')
    .replace(/\s+/gu, ' ')
    .trim();
}

function countReadable(reason: string): number {
  return reason.match(/[\p{L}\p{N}]/gu)?.length ?? 0;
}

export function createStages(deps: StageDeps): Stages {
  const { logger } = deps;

  async function careSetFor(p: Principal, role: RoleConfig, fresh: boolean): Promise<CareSet> {
    switch (role.profile) {
      case 'all-records':
        return { scope: 'all', patients: new Map(), resolvedAt: Date.now() };
      case 'own-record': {
        const self = p.kind === 'patient' ? p.patient.slice('Patient/'.length) : undefined;
        return {
          scope: 'listed',
          patients: new Map(self ? [[self, [{ source: 'own-record', reference: `Patient/${self}` } satisfies Evidence]]] : []),
          resolvedAt: Date.now(),
        };
      }
      case 'mandate': {
        if (p.kind !== 'related-person') return { scope: 'listed', patients: new Map(), resolvedAt: Date.now() };
        return { scope: 'listed', patients: await deps.mandates(p.relatedPerson), resolvedAt: Date.now() };
      }
      case 'care-team': {
        if (p.kind !== 'practitioner') return { scope: 'listed', patients: new Map(), resolvedAt: Date.now() };
        const base = fresh ? await deps.careSets.refresh(p) : await deps.careSets.get(p);
        return withGrants(base, deps.breakGlass.active(p.practitioner));
      }
      case 'administrative':
        // Demographics and stay logistics of every patient; the mask removes clinical content.
        return { scope: 'all', patients: new Map(), resolvedAt: Date.now() };
      case 'de-identified':
        return engagementCareSet(p, role);
      default:
        return { scope: 'listed', patients: new Map(), resolvedAt: Date.now() };
    }
  }

  const pseudonymSecret = deps.pseudonymSecret ?? randomBytes(32);
  const deidentifiers = new Map<string, Deidentifier>();
  const staySets = new Map<string, { at: number; set: CareSet }>();

  /** The engagement in force for this contractor, if any. */
  function engagementFor(p: Principal, role: RoleConfig): Engagement | undefined {
    const policy = deps.policy();
    const now = new Date();
    return policy.engagements.find((e) => {
      const c = contractorOf(e);
      const who = c.kind === 'role' ? c.role === role.id : p.kind === 'practitioner' && p.practitioner === c.practitioner;
      return who && engagementActive(e, now, policy.timeZone);
    });
  }

  /** One de-identifier per engagement: its own pseudonym key, so two contractors cannot link their data. */
  function deidentifierFor(e: Engagement): Deidentifier {
    let d = deidentifiers.get(e.id);
    if (!d) {
      const key = createHmac('sha256', pseudonymSecret).update(`engagement:${e.id}`).digest();
      d = createDeidentifier({ key, dateMode: e.dateMode, localBases: deps.rewriter.upstreamBases });
      deidentifiers.set(e.id, d);
    }
    return d;
  }

  /** The patients and stays of the contractor's engagement, read from the upstream (cached like care sets). */
  async function engagementCareSet(p: Principal, role: RoleConfig): Promise<CareSet> {
    const e = engagementFor(p, role);
    if (!e) return { scope: 'listed', patients: new Map(), resolvedAt: Date.now() };
    const ttl = deps.policy().careRelationships.cache.ttlSeconds * 1000;
    const cached = staySets.get(e.id);
    if (cached && Date.now() - cached.at < ttl) return cached.set;
    let stayIds: string[];
    if (Array.isArray(e.stays)) stayIds = e.stays;
    else {
      const group = await deps.client.read<Group>('Group', e.stays.group.slice('Group/'.length));
      stayIds = (group?.member ?? [])
        .map((m) => m.entity?.reference ?? '')
        .filter((r) => /^Encounter\/[A-Za-z0-9\-.]{1,64}$/.test(r))
        .map((r) => r.slice('Encounter/'.length));
    }
    const encounters = await Promise.all(stayIds.map((id) => deps.client.read<Encounter>('Encounter', id)));
    const patients = new Map<string, Evidence[]>();
    const stays = new Set<string>();
    for (const enc of encounters) {
      const subject = enc?.subject?.reference;
      if (!enc?.id || !subject?.startsWith('Patient/')) continue;
      stays.add(enc.id);
      const pid = subject.slice('Patient/'.length);
      patients.set(pid, [...(patients.get(pid) ?? []), { source: 'engagement', reference: `Encounter/${enc.id}` }]);
    }
    const set: CareSet = { scope: 'listed', patients, encounters: stays, resolvedAt: Date.now() };
    staySets.set(e.id, { at: Date.now(), set });
    return set;
  }

  /**
   * A coding contractor names resources by pseudonym: map them back to the real ids before the
   * request is decided. An unknown pseudonym is a miss, and so is a real id: a search by real id
   * would answer with its pseudonym (linking the two) and tell whether that patient or stay is in
   * the engagement. Revealing grants nothing: the real request is judged against the engagement's
   * stays like any other. A signed paging link holds caregate's own (real) query and is left as is.
   */
  function revealPseudonyms(it: FhirInteraction, d: Deidentifier, paging: boolean): FhirInteraction {
    if (paging) return it;
    const miss = () => new ProxyError('ERR_NOT_FOUND', 'Resource not found.');
    let id = it.id;
    let path = it.path;
    if (it.resourceType && it.id) {
      const real = d.reveal(it.resourceType, it.id);
      if (!real) throw miss();
      id = real;
      path = [it.resourceType, real, ...it.path.split('/').slice(2)].join('/');
    }
    const params = it.params.map((p) => {
      const values = p.value.split(',').map((v) => {
        const m = /^(?:([A-Z][A-Za-z]+)\/)?(p-[A-Za-z0-9\-.]{22})$/.exec(v);
        if (!m && DEID_ID_PARAMS.has(p.name)) throw miss();
        if (!m) return v;
        const type = m[1] ?? (p.name === '_id' ? it.resourceType : p.name === 'encounter' ? 'Encounter' : 'Patient');
        const real = type ? d.reveal(type, m[2]!) : undefined;
        if (!real) throw miss();
        return m[1] ? `${m[1]}/${real}` : real;
      });
      return { ...p, value: values.join(',') };
    });
    return { ...it, id, path, params };
  }

  function readRef(ref: string): Promise<Resource | undefined> {
    const [type, id] = ref.split('/');
    return deps.client.read(type!, id!);
  }

  function filterContext(careSet: CareSet, role: RoleConfig | undefined, decision: Decision, engagement?: Engagement): FilterContext {
    const cache = new Map<string, Promise<Resource | undefined>>();
    const deid = decision.obligations.some((o) => o.kind === 'de-identify') && engagement ? deidentifierFor(engagement) : undefined;
    const stays = careSet.encounters;
    return {
      ...(decision.obligations.some((o) => o.kind === 'mask-clinical') ? { transform: maskForAdministration } : {}),
      ...(deid && stays ? { transform: (r: Resource) => deid.deidentify(r), admit: (r: Resource) => inStays(r, stays, careSet) } : {}),
      careSet,
      subjectOnly: role?.profile === 'own-record' || role?.profile === 'mandate',
      readAudit: role?.readAudit === true,
      linkOf: deps.linkOf,
      localBases: deps.rewriter.upstreamBases,
      read(ref) {
        let p = cache.get(ref);
        if (!p) {
          p = readRef(ref);
          cache.set(ref, p);
        }
        return p;
      },
    };
  }

  /**
   * The patients a write touches, before and after, for `decide`. `deferred` is an error that
   * depends on the current content of the resource (a PATCH on a missing resource, a JSON Patch
   * `test` that fails or a path that does not exist): it is raised only once the write is
   * permitted, so that a refused caller learns nothing from it (threats.md, "Writes used as reads").
   */
  async function writePatients(
    it: FhirInteraction,
  ): Promise<NonNullable<Parameters<typeof decide>[0]['writePatients']> & { linkChanged: boolean; deferred?: unknown }> {
    const side = async (r: Resource | undefined): Promise<readonly string[] | 'undetermined' | 'none'> => {
      if (!r) return 'none';
      const l = await resolvePatientLink(deps.linkOf(r), (ref) => readRef(ref), { localBases: deps.rewriter.upstreamBases });
      if (l.kind === 'none') return 'none';
      if (l.kind === 'patients') return l.ids;
      return 'undetermined';
    };
    let before: Resource | undefined;
    if ((it.kind === 'update' || it.kind === 'patch' || it.kind === 'delete') && it.resourceType && it.id) {
      before = await deps.client.read(it.resourceType, it.id);
    }
    let after: Resource | undefined;
    let deferred: unknown;
    if (it.kind === 'create' || it.kind === 'update') after = it.body as Resource;
    if (it.kind === 'patch') {
      if (!before) {
        // Nothing to patch: a miss, told only to a caller whose patch would be allowed anyway.
        deferred = new ProxyError('ERR_NOT_FOUND', 'Resource not found.', {});
      } else {
        try {
          after = patchedCopy(before, it.body);
        } catch (err) {
          // Judged as a patch that changes nothing: the outcome of the patch is the hidden content.
          deferred = err;
          after = before;
        }
      }
    }
    const linkChanged =
      it.resourceType === 'Patient' &&
      JSON.stringify((before as Patient | undefined)?.link ?? []) !== JSON.stringify((after as Patient | undefined)?.link ?? []) &&
      (after !== undefined || before !== undefined) &&
      !(it.kind === 'delete');
    return { before: await side(before), after: await side(after), linkChanged, ...(deferred === undefined ? {} : { deferred }) };
  }

  async function decideOne(reqId: string, it: FhirInteraction, p: Principal, role: RoleConfig, careSet: CareSet, paging: boolean): Promise<Decision> {
    let wp: Awaited<ReturnType<typeof writePatients>> | undefined;
    if (it.kind === 'create' || it.kind === 'update' || it.kind === 'patch' || it.kind === 'delete') {
      if (!it.conditional?.length) wp = await writePatients(it);
    }
    const decision = await decideShadowed(
      {
        principal: p,
        role,
        interaction: it,
        careSet,
        policy: deps.policy(),
        paging,
        ...(wp ? { writePatients: { before: wp.before, after: wp.after }, patientLinkChanged: wp.linkChanged } : {}),
      },
      deps.shadow,
      { requestId: reqId, careSetFor: (r) => careSetFor(p, r, false) },
    );
    if (wp?.deferred !== undefined && decision.effect === 'permit') throw wp.deferred;
    return decision;
  }

  /**
   * Break-the-glass, asked for in one of two ways:
   * - the FHIR security-label header (`Category: …v3-ActReason#BTG…`, or the policy's own header)
   *   with the reason in `X-BTG-Reason`, on a request naming one patient in its URL;
   * - the operation `POST Patient/<id>/$break-glass` with a Parameters body `reason` (what the
   *   break-the-glass page sends, for EHR clients that cannot add headers).
   * Returns the checked request (the grant is opened by `openGrant`, once the request is permitted).
   */
  function breakGlassRequest(ctx: RequestContext, p: Principal, role: RoleConfig, it: FhirInteraction): BreakGlassRequest | undefined {
    const policy = deps.policy();
    const asOperation = it.kind === 'operation' && it.operation === 'break-glass';
    const cat = ctx.headers['category'];
    const custom = policy.breakGlass.header ? ctx.headers[policy.breakGlass.header] : undefined;
    const requested = asOperation || (typeof cat === 'string' && BTG_CATEGORY.test(cat)) || custom !== undefined;
    if (!requested) return undefined;
    let reason: string;
    if (asOperation) {
      if (it.method !== 'POST' || it.operationLevel !== 'instance' || it.resourceType !== 'Patient') {
        throw new ProxyError('ERR_BAD_REQUEST', '$break-glass is POSTed on one patient: Patient/<id>/$break-glass.');
      }
      const body = it.body as { resourceType?: string; parameter?: { name?: string; valueString?: unknown }[] } | undefined;
      const param = body?.resourceType === 'Parameters' ? body.parameter?.find((x) => x.name === 'reason') : undefined;
      reason = typeof param?.valueString === 'string' ? param.valueString.trim() : '';
    } else {
      const reasonHeader = ctx.headers['x-btg-reason'] ?? custom;
      try {
        reason = typeof reasonHeader === 'string' ? decodeURIComponent(reasonHeader).trim() : '';
      } catch {
        reason = '';
      }
    }
    if (!role.breakGlass || p.kind !== 'practitioner') {
      throw new ProxyError('ERR_FORBIDDEN', `Break-the-glass is not allowed to role "${role.id}".`);
    }
    if (!asOperation && (it.kind === 'create' || it.kind === 'update' || it.kind === 'patch' || it.kind === 'delete')) {
      // A grant is opened to read a record in an emergency, by a read or by the operation; a write
      // (an update, a delete of a record never seen) never opens one on its own.
      throw new ProxyError('ERR_BAD_REQUEST', 'Break-the-glass is opened by a read of the patient, or POST Patient/<id>/$break-glass, not by a write.');
    }
    reason = readableReason(reason);
    const patients = it.compartment?.type === 'Patient' ? [it.compartment.id] : it.resourceType === 'Patient' && it.id ? [it.id] : [];
    if (patients.length !== 1 || (it.kind === 'operation' && !asOperation)) {
      throw new ProxyError('ERR_BAD_REQUEST', 'Break-the-glass names exactly one patient in the URL (Patient/<id> or Patient/<id>/<Type>).');
    }
    if (countReadable(reason) < policy.breakGlass.minReasonLength) {
      throw new ProxyError('ERR_BAD_REQUEST', `Break-the-glass needs a reason of at least ${policy.breakGlass.minReasonLength} letters or digits.`);
    }
    if (reason.length > MAX_BTG_REASON) {
      throw new ProxyError('ERR_BAD_REQUEST', `A break-the-glass reason is at most ${MAX_BTG_REASON} characters.`);
    }
    return { patient: patients[0]!, reason, asOperation, until: Date.now() + policy.breakGlass.durationMinutes * 60_000 };
  }

  /** Opens the grant of a permitted break-the-glass request; resolves once its alert is audited. */
  async function openGrant(ctx: RequestContext, p: Principal, req: BreakGlassRequest): Promise<{ until: number }> {
    const g = deps.breakGlass.grant(principalPractitioner(p), req.patient, req.reason, deps.policy().breakGlass.durationMinutes);
    await deps.auditBreakGlass(ctx, g.patient, req.reason, g.until);
    return { until: g.until };
  }

  const stages: Stages = {
    async identify(req, ctx) {
      if (ctx.method === 'GET' && PUBLIC_PATHS.has(ctx.rawPath) && ctx.rawQuery === '') return undefined;
      return deps.identify(req, ctx);
    },

    classify(ctx) {
      let path = ctx.rawPath;
      let query = ctx.rawQuery;
      if (path.startsWith(`/${PAGE_PATH}/`) && ctx.principal) {
        if (ctx.method !== 'GET' || query !== '') throw new ProxyError('ERR_BAD_REQUEST', 'Paging links are followed with a plain GET.');
        const link = deps.pages.open(path.slice(PAGE_PATH.length + 2), principalKey(ctx.principal));
        const q = link.indexOf('?');
        path = q === -1 ? link : link.slice(0, q);
        query = q === -1 ? '' : link.slice(q + 1);
        extra(ctx).paging = true;
      }
      return classify(
        { method: ctx.method, path, query, headers: ctx.headers, rawHeaders: ctx.rawHeaders, ...(ctx.body ? { body: ctx.body } : {}) },
        { maxBodyBytes: deps.maxRequestBytes },
      );
    },

    async authorize(ctx) {
      const it = ctx.interaction!;
      const p = ctx.principal;
      const policy = deps.policy();
      if (!p) return decide({ principal: undefined, role: undefined, interaction: it, careSet: undefined, policy });
      const role = matchRoles(policy, {
        kind: p.kind,
        claims: p.claims,
        roleCodes: p.kind === 'practitioner' ? p.roleCodes : [],
        cardPresented: p.certificate !== undefined,
      })[0];
      const x = extra(ctx);
      x.role = role;
      if (!role) {
        return decideShadowed({ principal: p, role: undefined, interaction: it, careSet: undefined, policy }, deps.shadow, {
          requestId: ctx.id,
          careSetFor: (r) => careSetFor(p, r, false),
        });
      }
      if (role.requireCard && !p.certificate) {
        throw new ProxyError('ERR_CARD_REQUIRED', `Role "${role.id}" requires a CPS card.`);
      }
      const btg = breakGlassRequest(ctx, p, role, it);
      if (btg?.asOperation) {
        const grant = await openGrant(ctx, p, btg);
        x.breakGlassUntil = grant.until;
        ctx.patients.add(it.id!);
        return {
          effect: 'permit',
          reason: 'break-glass',
          rule: `${role.id}.break-glass`,
          message: 'Break-the-glass access opened',
          evidence: [{ source: 'break-glass', reference: undefined, until: new Date(grant.until).toISOString() }],
          obligations: [{ kind: 'audit-severity', severity: 'high' }, { kind: 'mark-break-glass' }],
          patients: [it.id!],
          purposeOfUse: 'BTG',
        };
      }
      // A break-the-glass header opens its grant only if the request it comes with is permitted
      // with it: a refused request leaves nothing open.
      const pending = btg ? [{ patient: btg.patient, reason: btg.reason, until: btg.until }] : [];
      let careSet = withGrants(await careSetFor(p, role, false), pending);
      ctx.careSet = careSet;
      if (role.profile === 'de-identified') {
        x.engagement = engagementFor(p, role);
        if (x.engagement) {
          ctx.interaction = revealPseudonyms(it, deidentifierFor(x.engagement), x.paging === true);
          return decideOne(ctx.id, ctx.interaction, p, role, careSet, x.paging === true);
        }
      }
      const paging = x.paging === true;

      if (it.kind === 'batch' || it.kind === 'transaction') {
        const decisions: Decision[] = [];
        const errors: (ProxyError | undefined)[] = [];
        for (const e of it.entries ?? []) {
          try {
            decisions.push(await decideOne(ctx.id, e.interaction, p, role, careSet, false));
          } catch (err) {
            // A batch entry that fails on its own (a permitted PATCH whose target is missing or
            // that does not apply) is answered in its entry, as the FHIR server would; a
            // transaction fails whole.
            if (!(err instanceof ProxyError) || err.status >= 500 || it.kind === 'transaction') throw err;
            errors[decisions.length] = err;
            decisions.push({ effect: 'deny', reason: 'interaction-forbidden', rule: `${role.id}.${it.kind}`, message: err.message, evidence: [], obligations: [], patients: [], hide: err.status === 404 });
          }
        }
        x.entryDecisions = decisions;
        x.entryErrors = errors;
        if (it.kind === 'transaction' && decisions.some((d) => d.effect === 'deny')) {
          const d = decisions.find((dd) => dd.effect === 'deny')!;
          return { ...d, message: `The transaction was refused whole: ${d.message}` };
        }
      }
      let decision = await decideOne(ctx.id, it, p, role, careSet, paging);
      if (decision.effect === 'deny' && decision.reason === 'no-care-relationship' && role.profile === 'care-team') {
        // A refusal is confirmed by one fresh resolution: a newly added team member is never wrongly refused.
        careSet = withGrants(await careSetFor(p, role, true), pending);
        ctx.careSet = careSet;
        decision = await decideOne(ctx.id, it, p, role, careSet, paging);
      }
      if (btg && decision.effect === 'permit') await openGrant(ctx, p, btg);
      return decision;
    },

    async planRequest(ctx) {
      const it = ctx.interaction!;
      const d = ctx.decision!;
      for (const p of d.patients) ctx.patients.add(p);
      if (d.effect === 'deny') throw refusalError(d);
      if (d.obligations.some((o) => o.kind === 'mark-break-glass')) ctx.answerHeaders['x-caregate-break-glass'] = 'active';
      const until = extra(ctx).breakGlassUntil;
      if (until !== undefined) {
        const text = `Break-the-glass access to this patient is open until ${new Date(until).toISOString()}. It is recorded for review by the DIM.`;
        return { kind: 'local', answer: buildAnswer(it, 200, {}, { resourceType: 'OperationOutcome', issue: [{ severity: 'information', code: 'informational', details: { text } }] }, deps.rewriter) };
      }

      if (it.kind === 'batch' || it.kind === 'transaction') return planBundle(ctx);
      const { params: upstreamParams, subsetting } = splitSubsetting(it.params);
      if (subsetting) extra(ctx).subsetting = subsetting;
      const narrow = d.obligations.find((o) => o.kind === 'narrow');
      if (narrow && narrow.kind === 'narrow') {
        if (narrow.patients.length === 0) return { kind: 'local', answer: emptySearchset(deps, it) };
        const value = narrow.patients.map((id) => (narrow.param === '_id' ? id : `Patient/${id}`)).join(',');
        const params = [...upstreamParams, { name: narrow.param, modifier: undefined, value }];
        return { kind: 'upstream', request: deps.shapeRequest(it, ctx, { params }) };
      }
      return { kind: 'upstream', request: deps.shapeRequest(it, ctx, subsetting ? { params: upstreamParams } : undefined) };
    },

    async shapeResponse(ctx, upstream) {
      const it = ctx.interaction!;
      const x = extra(ctx);
      const careSet = ctx.careSet ?? { scope: 'listed' as const, patients: new Map(), resolvedAt: 0 };
      const fctx = withSubsetting(filterContext(careSet, x.role, ctx.decision!, x.engagement), x.subsetting);
      const status = upstream.status;
      const body = parseUpstreamBody(upstream) as Resource | undefined;

      if (status === 304) return { status, headers: {}, body: undefined, contentType: undefined };
      if (status >= 400) {
        // Upstream errors may describe hidden data: a 404/410 looks exactly like our own miss, other errors keep only their codes.
        if (status === 404 || status === 410) throw new ProxyError('ERR_NOT_FOUND', 'Resource not found.');
        const oo = body?.resourceType === 'OperationOutcome' ? sanitizeOutcome(body as never) : undefined;
        return buildAnswer(it, status, {}, oo ?? { resourceType: 'OperationOutcome', issue: [{ severity: 'error', code: 'processing' }] }, deps.rewriter);
      }
      invalidateRelationships(it);
      if (body === undefined) return buildAnswer(it, status, upstream.headers, undefined, deps.rewriter);

      if (it.kind === 'batch' || it.kind === 'transaction') {
        return buildAnswer(it, status, upstream.headers, await mergeBundle(ctx, body as Bundle, fctx), deps.rewriter);
      }
      if (body.resourceType === 'Bundle' && isSearchOrHistory(it)) {
        const b = body as Bundle;
        const versions = resourceEntries(b);
        const matches = matchEntries(b);
        const r = await filterBundle(b, fctx);
        if (hidesInstance(it, versions, b)) throw new ProxyError('ERR_NOT_FOUND', 'Resource not found.');
        for (const pid of r.patients) ctx.patients.add(pid);
        ctx.resources.push(...r.resources);
        markBreakGlass(ctx, careSet);
        // A role that sees every record may count what the filter withholds (undetermined resources);
        // a listed care set keeps only a total it can verify.
        const exact = r.removedMatches === 0 && (careSet.scope === 'all' || totalIsVerified(b, matches));
        if (!exact) delete b.total;
        signLinks(b, ctx);
        return buildAnswer(it, status, upstream.headers, b, deps.rewriter);
      }
      if (body.resourceType === 'OperationOutcome') {
        return buildAnswer(it, status, upstream.headers, sanitizeOutcome(body as never), deps.rewriter);
      }
      if (body.resourceType === 'Bundle') {
        // Operation outputs ($everything) and documents: every entry judged.
        const r = await filterBundle(body as Bundle, fctx);
        for (const pid of r.patients) ctx.patients.add(pid);
        ctx.resources.push(...r.resources);
        delete (body as Bundle).total;
        signLinks(body as Bundle, ctx);
        return buildAnswer(it, status, upstream.headers, body, deps.rewriter);
      }
      const shown = await present(body, fctx);
      if (!shown) {
        logger.debug({ reqId: ctx.id, type: body.resourceType }, 'response withheld');
        throw new ProxyError('ERR_NOT_FOUND', 'Resource not found.');
      }
      for (const pid of shown.patients) ctx.patients.add(pid);
      markBreakGlass(ctx, careSet);
      if (body.id) ctx.resources.push(`${body.resourceType}/${body.id}`);
      // A de-identified answer must not carry real ids in its headers either.
      const headers = x.engagement ? { etag: upstream.headers.etag } : upstream.headers;
      return buildAnswer(it, status, headers, shown.resource, deps.rewriter);
    },

    audit: (ctx, answer) => deps.audit(ctx, answer),
  };

  /**
   * A successful write to a relationship resource drops the cached care sets (and principals) of
   * the members it names, so that what it grants or removes applies at once for them.
   */
  function invalidateRelationships(it: FhirInteraction): void {
    const writes = it.kind === 'batch' || it.kind === 'transaction' ? (it.entries ?? []).map((e) => e.interaction) : [it];
    for (const w of writes) {
      if (w.method === 'GET' || !w.resourceType || !RELATIONSHIP_WRITES.has(w.resourceType)) continue;
      const refs = new Set<string>();
      walkReferences(w.body, (ref) => {
        if (typeof ref.reference === 'string' && /^(Practitioner|PractitionerRole|Organization)\/[A-Za-z0-9\-.]+$/.test(ref.reference)) {
          refs.add(ref.reference);
        }
      });
      // A Practitioner written (its identifiers, `active`) is resolved again at its next request.
      if (w.resourceType === 'Practitioner' && w.id) refs.add(`Practitioner/${w.id}`);
      deps.careSets.invalidate(refs);
      for (const r of refs) if (r.startsWith('Practitioner/')) deps.invalidatePrincipal(r);
    }
  }

  /**
   * An answer that holds data of a patient opened only by break-the-glass is a break-the-glass use,
   * whatever route reached it (a search by subject, an include): its audit says BTG, its answer says so.
   */
  function markBreakGlass(ctx: RequestContext, careSet: CareSet): void {
    if (careSet.scope === 'all' || ctx.decision?.purposeOfUse === 'BTG') return;
    const btgOnly = [...ctx.patients].filter((pid) => {
      const ev = careSet.patients.get(pid) ?? [];
      return ev.length > 0 && ev.every((e) => e.source === 'break-glass');
    });
    if (btgOnly.length === 0) return;
    const evidence = btgOnly.flatMap((pid) => careSet.patients.get(pid) ?? []);
    ctx.decision = {
      ...ctx.decision!,
      reason: 'break-glass',
      purposeOfUse: 'BTG',
      evidence: [...ctx.decision!.evidence, ...evidence],
      obligations: [...ctx.decision!.obligations, { kind: 'mark-break-glass' }, { kind: 'audit-severity', severity: 'high' }],
    };
    ctx.answerHeaders['x-caregate-break-glass'] = 'active';
  }

  function signLinks(b: Bundle, ctx: RequestContext): void {
    if (!b.link || !ctx.principal) return;
    const user = principalKey(ctx.principal);
    for (const l of b.link) {
      if (!l.url) continue;
      const rel = upstreamRelative(l.url, deps.rewriter.upstreamBases);
      if (rel === undefined) {
        delete (l as { url?: string }).url;
        continue;
      }
      l.url = deps.pages.issue(rel, user);
    }
    b.link = b.link.filter((l) => l.url);
  }

  /** Batch: forbidden entries answered with their own refusal, the others sent upstream in one batch. */
  function planBundle(ctx: RequestContext): Plan {
    const it = ctx.interaction!;
    const decisions = extra(ctx).entryDecisions ?? [];
    const entries: BundleEntry[] = [];
    (it.entries ?? []).forEach((e, i) => {
      const d = decisions[i];
      if (!d || d.effect === 'deny') return;
      const up = deps.shapeRequest(e.interaction, ctx, narrowFor(e.interaction, d));
      entries.push({
        ...(e.fullUrl ? { fullUrl: e.fullUrl } : {}),
        ...(e.interaction.body !== undefined ? { resource: e.interaction.body as Resource } : {}),
        request: { method: e.interaction.method as never, url: up.path.replace(/^\//, ''), ...(up.headers['if-none-exist'] ? { ifNoneExist: up.headers['if-none-exist'] } : {}) },
      });
    });
    if (entries.length === 0) {
      // Nothing to send: every entry is answered with its own refusal.
      const refused = (it.entries ?? []).map((_, i) => refusedEntry(ctx, i));
      return { kind: 'local', answer: buildAnswer(it, 200, {}, { resourceType: 'Bundle', type: `${it.kind}-response`, entry: refused }, deps.rewriter) };
    }
    const body = { resourceType: 'Bundle', type: it.kind, entry: entries };
    return { kind: 'upstream', request: deps.shapeRequest(it, ctx, { body }) };
  }

  function narrowFor(it: FhirInteraction, d: Decision): { params?: SearchParam[] } | undefined {
    const n = d.obligations.find((o) => o.kind === 'narrow');
    if (!n || n.kind !== 'narrow' || n.patients.length === 0) return undefined;
    const value = n.patients.map((id) => (n.param === '_id' ? id : `Patient/${id}`)).join(',');
    return { params: [...it.params, { name: n.param, modifier: undefined, value }] };
  }

  /** The answer of a batch entry that was not sent upstream: its refusal, or its own error. */
  function refusedEntry(ctx: RequestContext, i: number): BundleEntry {
    const d = extra(ctx).entryDecisions?.[i];
    const err = extra(ctx).entryErrors?.[i];
    if (d?.hide === true) return notFoundEntry();
    if (err) {
      const o = outcomeFor(err);
      return { response: { status: String(o.status), outcome: o.body } };
    }
    return {
      response: {
        status: '403 Forbidden',
        outcome: { resourceType: 'OperationOutcome', issue: [{ severity: 'error', code: 'forbidden', details: { text: d?.message ?? 'Refused.' } }] },
      },
    };
  }

  async function mergeBundle(ctx: RequestContext, upstream: Bundle, fctx: FilterContext): Promise<Bundle> {
    const it = ctx.interaction!;
    const decisions = extra(ctx).entryDecisions ?? [];
    const upEntries = upstream.entry ?? [];
    let k = 0;
    const out: BundleEntry[] = [];
    for (let i = 0; i < (it.entries ?? []).length; i++) {
      const d = decisions[i];
      if (!d || d.effect === 'deny') {
        out.push(refusedEntry(ctx, i));
        continue;
      }
      const e = upEntries[k++] ?? { response: { status: '500' } };
      if (/^(404|410)\b/.test(e.response?.status ?? '')) {
        // Like a top-level miss: the upstream's own wording could differ from caregate's refusal.
        out.push(notFoundEntry());
        continue;
      }
      const entry: BundleEntry = { ...e };
      if (entry.response?.outcome) entry.response = { ...entry.response, outcome: sanitizeOutcome(entry.response.outcome) };
      if (entry.resource) {
        if (entry.resource.resourceType === 'Bundle') {
          const versions = resourceEntries(entry.resource as Bundle);
          const r = await filterBundle(entry.resource as Bundle, fctx);
          if (hidesInstance(it.entries![i]!.interaction, versions, entry.resource as Bundle)) {
            out.push(notFoundEntry());
            continue;
          }
          for (const pid of r.patients) ctx.patients.add(pid);
          delete (entry.resource as Bundle).total;
          signLinks(entry.resource as Bundle, ctx);
        } else if (entry.resource.resourceType === 'OperationOutcome') {
          entry.resource = sanitizeOutcome(entry.resource as never);
        } else {
          const shown = await present(entry.resource, fctx);
          if (!shown) {
            out.push(notFoundEntry());
            continue;
          }
          for (const pid of shown.patients) ctx.patients.add(pid);
          entry.resource = shown.resource;
        }
      }
      out.push(entry);
    }
    return { resourceType: 'Bundle', type: upstream.type ?? (`${it.kind}-response` as never), entry: out };
  }

  return stages;
}

/** Applies `_elements`/`_summary=data` after whatever transform the role has. */
function withSubsetting(f: FilterContext, s: Subsetting | undefined): FilterContext {
  if (!s) return f;
  const inner = f.transform;
  return {
    ...f,
    transform: (r) => {
      const t = inner ? inner(r) : r;
      return t ? applySubsetting(t, s) : undefined;
    },
  };
}

/**
 * A coding contractor sees the listed stays: the Encounters themselves, their patients' Patient
 * resources, and resources recorded during one of those stays (`encounter` or `context`).
 */
function inStays(r: Resource, stays: ReadonlySet<string>, careSet: CareSet): boolean {
  if (r.resourceType === 'Encounter') return r.id !== undefined && stays.has(r.id);
  if (r.resourceType === 'Patient') return r.id !== undefined && careSet.patients.has(r.id);
  const ref = (r as { encounter?: { reference?: string }; context?: { reference?: string } }).encounter?.reference ??
    (r as { context?: { reference?: string } }).context?.reference;
  return typeof ref === 'string' && ref.startsWith('Encounter/') && stays.has(ref.slice('Encounter/'.length));
}

/** The one answer of a batch entry that is missing, withheld or refused as if missing. */
function notFoundEntry(): BundleEntry {
  const o = outcomeFor(new ProxyError('ERR_NOT_FOUND', 'Resource not found.'));
  return { response: { status: '404 Not Found', outcome: o.body } };
}

/** Entries that carry a resource (history deletions carry none), outcomes aside. */
function resourceEntries(b: Bundle): number {
  return (b.entry ?? []).filter((e) => e.resource && e.resource.resourceType !== 'OperationOutcome').length;
}

/** Match entries the upstream returned (before filtering). */
function matchEntries(b: Bundle): number {
  return (b.entry ?? []).filter((e) => (e.search?.mode ?? 'match') === 'match').length;
}

/**
 * The history of one resource is answered whole or not at all: when the filter withheld any of
 * its versions (it belongs, or belonged, to a patient the caller may not see), or none remains,
 * the answer is the 404 of a miss. An empty or partial history would tell that the resource
 * exists, which a read of it does not (threats.md, "Existence oracles").
 */
function hidesInstance(it: FhirInteraction, versionsBefore: number, filtered: Bundle): boolean {
  if (it.kind !== 'history-instance') return false;
  const kept = resourceEntries(filtered);
  return kept === 0 || kept < versionsBefore;
}

/**
 * `Bundle.total` counts matches the caller never receives unless every match is in this page and
 * none was withheld: a total over pages not seen (or over none, `_summary=count`, `_count=0`)
 * would count the resources the filter withholds (another patient named beside one of the care
 * set, a stay outside a contractor's engagement), an oracle for them (threats.md, "Side channels").
 */
function totalIsVerified(filtered: Bundle, matchesBefore: number): boolean {
  return filtered.total !== undefined && filtered.total === matchesBefore;
}

function isSearchOrHistory(it: FhirInteraction): boolean {
  return it.kind.startsWith('search') || it.kind.startsWith('history');
}

/** `https://upstream/fhir/Observation?x` → `Observation?x`; undefined for links elsewhere. */
function upstreamRelative(url: string, bases: readonly string[]): string | undefined {
  for (const b of bases) {
    if (url.startsWith(`${b}/`)) return url.slice(b.length + 1);
    if (url.startsWith(`${b}?`)) return url.slice(b.length);
  }
  return undefined;
}

function emptySearchset(deps: StageDeps, it: FhirInteraction): Answer {
  return buildAnswer(it, 200, {}, { resourceType: 'Bundle', type: 'searchset', total: 0 }, deps.rewriter);
}

function refusalError(d: Decision): ProxyError {
  if (d.hide) return new ProxyError('ERR_NOT_FOUND', 'Resource not found.', { detail: d.reason });
  return new ProxyError('ERR_FORBIDDEN', d.message, { detail: d.reason, issue: 'forbidden' });
}
