import type { IncomingHttpHeaders } from 'node:http';
import type { BundleEntry, Resource } from '@medplum/fhirtypes';
import type { FhirInteraction, SearchParam } from '../fhir/interaction.js';
import type { Answer } from '../http/send.js';
import { entrySent, type Authorization } from '../policy/authorize.js';
import { obligation, refusalOf, type Decision } from '../policy/decision.js';
import type { UpstreamRequest } from '../upstream/proxy.js';
import { buildAnswer } from './answer.js';
import { refusedEntry } from './batch.js';
import type { BaseRewriter } from './rewrite.js';
import { splitSubsetting, type Subsetting } from './subsetting.js';

/**
 * The shape-request stage: what is sent upstream, built from the decision (never from the raw
 * client request), or the answer given without asking the upstream at all.
 *
 * - a denial is raised as its refusal (403, or the 404 of a miss), except a search that named only
 *   patients outside the care set, answered with an empty searchset (and audited as a refusal);
 * - a break-the-glass operation that opened its grant is answered locally;
 * - a batch is sent with its permitted entries only;
 * - `_elements`/`_summary` are taken out of the upstream query (applied after judging);
 * - a `narrow` obligation restricts the search to the care set (none left: an empty searchset).
 */
export type Plan =
  | { kind: 'upstream'; request: UpstreamRequest; subsetting?: Subsetting }
  | { kind: 'local'; answer: Answer };

/** The request as received, as far as building the upstream request needs it. */
export interface PlannedRequest {
  id: string;
  clientAddress: string | undefined;
  headers: IncomingHttpHeaders;
  body: Buffer | undefined;
}

export type ShapeRequest = (
  it: FhirInteraction,
  req: PlannedRequest,
  override?: { params?: readonly SearchParam[]; body?: unknown },
) => UpstreamRequest;

export interface PlannerDeps {
  shapeRequest: ShapeRequest;
  rewriter: BaseRewriter;
}

export function createPlanner(deps: PlannerDeps) {
  return function plan(req: PlannedRequest, a: Authorization): Plan {
    const it = a.interaction;
    const d = a.decision;
    if (d.effect === 'deny') {
      if (d.refuseAs === 'empty-searchset') return { kind: 'local', answer: emptySearchset(it, deps.rewriter) };
      throw refusalOf(d);
    }
    if (it.kind === 'operation' && it.operation === 'break-glass' && a.grant) {
      const text = `Break-the-glass access to this patient is open until ${new Date(a.grant.until).toISOString()}. It is recorded for review by the DIM.`;
      return {
        kind: 'local',
        answer: buildAnswer(it, 200, {}, { resourceType: 'OperationOutcome', issue: [{ severity: 'information', code: 'informational', details: { text } }] }, deps.rewriter),
      };
    }
    if (it.kind === 'batch' || it.kind === 'transaction') return planBatch(req, a, deps);

    const { params, subsetting } = splitSubsetting(it.params);
    const narrow = obligation(d, 'narrow');
    if (narrow?.patients.length === 0) return { kind: 'local', answer: emptySearchset(it, deps.rewriter) };
    const request = deps.shapeRequest(it, req, { params: narrowedParams(params, d) ?? params });
    return { kind: 'upstream', request, ...(subsetting ? { subsetting } : {}) };
  };
}

/**
 * The parameters restricted to the decision's `narrow` patients (`patient=Patient/a,Patient/b`,
 * `_id=a,b` on Patient), or undefined when the decision does not narrow. The one place a query is
 * narrowed, for requests and batch entries alike.
 */
export function narrowedParams(params: readonly SearchParam[], d: Decision): SearchParam[] | undefined {
  const n = obligation(d, 'narrow');
  if (!n || n.patients.length === 0) return undefined;
  return [...params, { name: n.param, modifier: undefined, value: narrowValue(n) }];
}

/** The value of the narrowing parameter: `Patient/a,Patient/b`, or `a,b` for `_id`. */
export function narrowValue(n: { param: string; patients: readonly string[] }): string {
  return n.patients.map((id) => (n.param === '_id' ? id : `Patient/${id}`)).join(',');
}

function emptySearchset(it: FhirInteraction, rewriter: BaseRewriter): Answer {
  return buildAnswer(it, 200, {}, { resourceType: 'Bundle', type: 'searchset', total: 0 }, rewriter);
}

/**
 * A batch or transaction: the permitted entries go upstream in one Bundle, each rebuilt from its
 * own decision like a standalone request; when none is permitted, the answer of refusals.
 */
function planBatch(req: PlannedRequest, a: Authorization, deps: PlannerDeps): Plan {
  const it = a.interaction;
  const verdicts = a.entries ?? [];
  const entries: BundleEntry[] = [];
  (it.entries ?? []).forEach((e, i) => {
    const v = verdicts[i];
    if (!entrySent(v)) return;
    const params = narrowedParams(e.interaction.params, v!.decision);
    const up = deps.shapeRequest(e.interaction, req, params ? { params } : undefined);
    entries.push({
      ...(e.fullUrl ? { fullUrl: e.fullUrl } : {}),
      ...(e.interaction.body !== undefined ? { resource: e.interaction.body as Resource } : {}),
      request: { method: e.interaction.method as never, url: up.path.replace(/^\//, ''), ...(up.headers['if-none-exist'] ? { ifNoneExist: up.headers['if-none-exist'] } : {}) },
    });
  });
  if (entries.length === 0) {
    const refused = (it.entries ?? []).map((_, i) => refusedEntry(a, i));
    return { kind: 'local', answer: buildAnswer(it, 200, {}, { resourceType: 'Bundle', type: `${it.kind}-response`, entry: refused }, deps.rewriter) };
  }
  const body = { resourceType: 'Bundle', type: it.kind, entry: entries };
  return { kind: 'upstream', request: deps.shapeRequest(it, req, { body }) };
}
