import type { AuditEvent, Binary, Bundle, Resource } from '@medplum/fhirtypes';
import type { Logger } from 'pino';
import { isSearchOrHistory } from '../fhir/interaction.js';
import type { PatientLink } from '../fhir/patients.js';
import { notFound, ProxyError } from '../http/errors.js';
import type { Answer } from '../http/send.js';
import { maskForAdministration } from '../policy/administrative.js';
import type { Authorization } from '../policy/authorize.js';
import { obligation, obliges, type Decision } from '../policy/decision.js';
import { narrowValue } from './plan.js';
import type { CareSet, Opposition } from '../relate/types.js';
import type { MinimisationConfig } from '../policy/minimisation.js';
import type { UpstreamResponse } from '../upstream/proxy.js';
import { buildAnswer, parseUpstreamBody } from './answer.js';
import { mergeBatch } from './batch.js';
import { filterBundle, present, presentContainer, sanitizeOutcome, type FilterContext } from './filter.js';
import type { PageLinks } from './paging.js';
import type { Pseudonyms } from './pseudonyms.js';
import type { BaseRewriter } from './rewrite.js';
import { hidesInstance, matchEntries, resourceEntries, totalIsVerified } from './searchset.js';
import { checkUpstreamShape } from './upstream-shape.js';
import { applySubsetting, type Subsetting } from './subsetting.js';

/**
 * The shape-response stage, the security boundary: every resource of the upstream answer is
 * judged against the care set by its own content (shape/filter.ts), through the view the decision's
 * obligations give (subject only, audit trail, stays only, masked, de-identified); totals kept only
 * when exact; paging links sealed and bound to the user; upstream URLs rewritten; upstream error
 * texts reduced to their codes. It reads the decision's obligations, never the role.
 */
export interface ShapeInput {
  /** The caller's key (`Practitioner/x`): paging links are bound to it. */
  userKey: string | undefined;
  authorization: Authorization;
  /** `_elements` / `_summary=data`, applied after judging. */
  subsetting?: Subsetting | undefined;
}

export interface Shaped {
  answer: Answer;
  /** Patients whose data the answer holds. */
  patients: ReadonlySet<string>;
  /** Resources answered (`Type/id`). */
  resources: readonly string[];
  /** Patients of the answer reachable only through a break-the-glass grant: a break-the-glass use for each. */
  breakGlassUse: readonly string[];
  /** Links of Patients to records the caller may not see, removed from the answer (audited). */
  linksRemoved: number;
  /** Resources minimisation withheld from the answer, by rule (audited). */
  minimised?: ReadonlyMap<string, number>;
  /** Patients whose data the answer left out under their opposition (CSP L1110-4), with the Consents. */
  opposed?: ReadonlyMap<string, ReadonlySet<string>>;
}

export interface ResponseShaperDeps {
  linkOf(resource: Resource): PatientLink;
  /** The data categories the policy defines (what a `withhold-categories` obligation names). */
  categories?: () => MinimisationConfig;
  /** Who points at a Binary stored without securityContext, and what passes through that tells it. */
  binaryOwners?: { of(binaryId: string): Promise<string[]>; learn(resource: Resource): void };
  /** Reads a resource with the proxy's credential (an indirect link: the DocumentReference of a Binary). */
  read(type: string, id: string): Promise<Resource | undefined>;
  rewriter: BaseRewriter;
  pages: PageLinks;
  pseudonyms: Pseudonyms;
  /**
   * The patient's reduced view of an AuditEvent about one of `patients` (audit/patient-view.ts),
   * or undefined when it is about none of them. Without it, AuditEvents are withheld from patients.
   */
  reduceAuditEvent?(event: AuditEvent, patients: ReadonlySet<string>): AuditEvent | undefined;
  logger: Logger;
}

export function createResponseShaper(deps: ResponseShaperDeps) {
  const localBases = deps.rewriter.upstreamBases;

  /** How each resource is judged and shown, from the decision's obligations and the care set alone. */
  function filterContext(
    a: Authorization,
    subsetting: Subsetting | undefined,
    opposedSink: Map<string, Set<string>>,
    minimisedSink: Map<string, number>,
  ): FilterContext {
    const d = a.decision;
    const cats = obligation(d, 'withhold-categories');
    const labels = obligation(d, 'withhold-labels');
    const minimisation =
      (cats || labels) && deps.categories
        ? {
            config: deps.categories(),
            read: cats ? { categories: cats.categories, uncategorised: cats.uncategorised, rule: cats.rule } : undefined,
            labels: labels?.labels ?? [],
            onWithheld: (rule: string) => minimisedSink.set(rule, (minimisedSink.get(rule) ?? 0) + 1),
          }
        : undefined;
    const careSet: CareSet = a.careSet ?? { scope: 'listed', patients: new Map(), resolvedAt: 0 };
    const cache = new Map<string, Promise<Resource | undefined>>();
    const deid = obligation(d, 'de-identify');
    const deidentifier = deid && a.engagement ? deps.pseudonyms.forEngagement(a.engagement) : undefined;
    let transform: ((r: Resource) => Resource | undefined) | undefined;
    if (obliges(d, 'mask-clinical')) transform = maskForAdministration;
    if (deidentifier) transform = (r) => deidentifier.deidentify(r);
    if (subsetting) {
      const inner = transform;
      transform = (r) => {
        const t = inner ? inner(r) : r;
        return t ? applySubsetting(t, subsetting) : undefined;
      };
    }
    const stays = careSet.encounters;
    const withheld = obligation(d, 'withhold-opposed');
    const held = obligation(d, 'hold-unreleased');
    // The patient's own records, as a set: built only for the access-history view that reads it,
    // not on every request (a 1,000-patient care set would copy 1,000 ids per request).
    let ownPatients: ReadonlySet<string> | undefined;
    return {
      careSet,
      subjectOnly: obliges(d, 'subject-only'),
      readAudit: obliges(d, 'show-audit-trail'),
      ...(obliges(d, 'own-access-history') && deps.reduceAuditEvent
        ? { reduceAuditEvent: (e: AuditEvent) => deps.reduceAuditEvent!(e, (ownPatients ??= new Set(careSet.patients.keys()))) }
        : {}),
      ...(withheld
        ? {
            opposed: byPatient(withheld.oppositions),
            onOpposed: (patient: string, consent: string) => {
              let s = opposedSink.get(patient);
              if (!s) opposedSink.set(patient, (s = new Set()));
              s.add(consent);
            },
          }
        : {}),
      ...(held ? { held: { rules: held.rules, labels: held.labels } } : {}),
      ...(minimisation ? { minimisation } : {}),
      linkOf: deps.linkOf,
      localBases,
      publicBase: deps.rewriter.publicBase,
      ...(deps.binaryOwners ? { ownersOf: (id: string) => deps.binaryOwners!.of(id) } : {}),
      ...(transform ? { transform } : {}),
      // A contractor with a de-identify obligation but no stays sees nothing.
      ...(obliges(d, 'stays-only') ? { admit: (r: Resource) => stays !== undefined && inStays(r, stays, careSet) } : {}),
      read(ref) {
        let p = cache.get(ref);
        if (!p) {
          const [type, id] = ref.split('/');
          p = deps.read(type!, id!);
          cache.set(ref, p);
        }
        return p;
      },
    };
  }

  /** Every DocumentReference, DiagnosticReport and Media of an answer tells which Binaries it points at. */
  function learnOwners(body: Resource): void {
    const owners = deps.binaryOwners;
    if (!owners) return;
    if (body.resourceType !== 'Bundle') return owners.learn(body);
    for (const e of (body as Bundle).entry ?? []) {
      const r = e?.resource;
      if (r && typeof r === 'object') learnOwners(r);
    }
  }

  /**
   * Seals the Bundle's links (upstream-relative) into paging links bound to the user; drops the
   * others. A link that repeats the narrowing caregate added (a server that pages by repeating the
   * query) is sealed without it, and narrowed again when followed: links stay short whatever the
   * size of the care set.
   */
  function signLinks(b: Bundle, userKey: string | undefined, d: Decision): void {
    if (!b.link) return;
    const narrow = obligation(d, 'narrow');
    // A first page's `self` and `first` are most often the same link: it is sealed once.
    const sealed = new Map<string, string>();
    for (const l of b.link) {
      const rel = l.url && userKey ? upstreamRelative(l.url, localBases) : undefined;
      if (rel === undefined) {
        delete (l as { url?: string }).url;
        continue;
      }
      let url = sealed.get(rel);
      if (url === undefined) {
        const stripped = narrow && narrow.patients.length > 0 ? withoutNarrowing(rel, narrow.param, narrowValue(narrow)) : undefined;
        url = stripped === undefined ? deps.pages.issue(rel, userKey!) : deps.pages.issue(stripped, userKey!, { renarrow: true });
        sealed.set(rel, url);
      }
      l.url = url;
    }
    b.link = b.link.filter((l) => l.url);
  }

  return async function shape(input: ShapeInput, upstream: UpstreamResponse): Promise<Shaped> {
    const a = input.authorization;
    const it = a.interaction;
    const d = a.decision;
    const status = upstream.status;
    const patients = new Set<string>();
    const resources: string[] = [];
    let linksRemoved = 0;
    const opposed = new Map<string, Set<string>>();
    const minimised = new Map<string, number>();
    const done = (answer: Answer): Shaped => ({
      answer,
      patients,
      resources,
      breakGlassUse: breakGlassUse(d, patients),
      linksRemoved,
      ...(opposed.size > 0 ? { opposed } : {}),
      ...(minimised.size > 0 ? { minimised } : {}),
    });
    const answer = (httpStatus: number, headers: UpstreamResponse['headers'], body: unknown) => done(buildAnswer(it, httpStatus, headers, body, deps.rewriter));

    if (status === 304) return done({ status, headers: {}, body: undefined, contentType: undefined });
    const body = parseUpstreamBody(upstream) as Resource | undefined;
    if (status >= 400) {
      // Upstream errors may describe hidden data: a 404/410 looks exactly like our own miss, other errors keep only their codes.
      if (status === 404 || status === 410) throw notFound(`upstream ${status}`);
      const oo = body?.resourceType === 'OperationOutcome' ? sanitizeOutcome(body as never) : undefined;
      return answer(status, {}, oo ?? { resourceType: 'OperationOutcome', issue: [{ severity: 'error', code: 'processing' }] });
    }
    if (body === undefined) return answer(status, upstream.headers, undefined);
    checkUpstreamShape(body, it);
    learnOwners(body);

    const fctx = filterContext(a, input.subsetting, opposed, minimised);
    if (it.kind === 'batch' || it.kind === 'transaction') {
      const merged = await mergeBatch(a, body as Bundle, fctx, (b, entry) => signLinks(b, input.userKey, entry), (url) => deps.rewriter.url(url));
      for (const pid of merged.patients) patients.add(pid);
      linksRemoved += merged.linksRemoved;
      return answer(status, upstream.headers, merged.bundle);
    }
    if (body.resourceType === 'Bundle' && isSearchOrHistory(it)) {
      const b = body as Bundle;
      const versions = resourceEntries(b);
      const matches = matchEntries(b);
      const r = await filterBundle(b, fctx);
      if (hidesInstance(it, versions, b)) throw notFound('history with a withheld version');
      for (const pid of r.patients) patients.add(pid);
      resources.push(...r.resources);
      linksRemoved += r.linksRemoved;
      // A role that sees every record may count what the filter withholds (undetermined resources);
      // a listed care set keeps only a total it can verify.
      const exact = r.removedMatches === 0 && (fctx.careSet.scope === 'all' || totalIsVerified(b, matches));
      if (!exact) delete b.total;
      signLinks(b, input.userKey, d);
      return answer(status, upstream.headers, b);
    }
    if (body.resourceType === 'OperationOutcome') return answer(status, upstream.headers, sanitizeOutcome(body as never));
    if ((it.kind === 'read' || it.kind === 'vread') && (body.resourceType === 'Bundle' || body.resourceType === 'Parameters')) {
      // A stored document, collection or Parameters: whole, or a miss.
      const shown = await presentContainer(body, fctx);
      if (!shown) throw notFound('container with a withheld resource');
      for (const pid of shown.patients) patients.add(pid);
      linksRemoved += shown.linksRemoved;
      if (body.id) resources.push(`${body.resourceType}/${body.id}`);
      return answer(status, upstream.headers, shown.resource);
    }
    if (body.resourceType === 'Bundle') {
      // Operation outputs ($everything) and documents: every entry judged.
      const r = await filterBundle(body as Bundle, fctx);
      for (const pid of r.patients) patients.add(pid);
      resources.push(...r.resources);
      linksRemoved += r.linksRemoved;
      delete (body as Bundle).total;
      signLinks(body as Bundle, input.userKey, d);
      return answer(status, upstream.headers, body);
    }
    const shown = await present(body, fctx);
    if (!shown) {
      deps.logger.debug({ type: body.resourceType }, 'response withheld');
      // A category the caller's profession does not read is no secret: she is told the rule. A
      // sensitive record is answered as a miss (that one exists says something); the audit names
      // the rule either way.
      const rule = [...minimised.keys()][0];
      if (rule?.startsWith('minimisation.')) {
        throw new ProxyError('ERR_FORBIDDEN', `Your profession does not read this kind of data under the policy's minimisation rules (${rule}).`, { detail: `withheld by ${rule}` });
      }
      throw notFound(rule ? `withheld by ${rule}` : 'response withheld');
    }
    for (const pid of shown.patients) patients.add(pid);
    linksRemoved += shown.linksRemoved;
    if (body.id) resources.push(`${body.resourceType}/${body.id}`);
    // A de-identified answer must not carry real ids in its headers either.
    const headers = a.engagement ? { etag: upstream.headers.etag } : upstream.headers;
    if (it.format === 'binary' && shown.resource.resourceType === 'Binary') return done(rawBinary(shown.resource as Binary, status, upstream.headers));
    return answer(status, headers, shown.resource);
  };
}

const MEDIA_TYPE = /^[a-z0-9][a-z0-9!#$&^_.+-]{0,126}\/[a-z0-9][a-z0-9!#$&^_.+-]{0,126}$/i;

/**
 * A judged Binary as its own content: the decoded bytes in the stored content type. The answer
 * must not run in caregate's origin (an HTML or SVG attachment could carry script): it is
 * sandboxed, and the content type is taken only when it is a plain media type.
 */
function rawBinary(b: Binary, status: number, upstreamHeaders: UpstreamResponse['headers']): Answer {
  const type = typeof b.contentType === 'string' && MEDIA_TYPE.test(b.contentType.trim()) ? b.contentType.trim() : 'application/octet-stream';
  const headers: Record<string, string> = { 'content-security-policy': "sandbox; default-src 'none'" };
  for (const h of ['etag', 'last-modified'] as const) {
    const v = upstreamHeaders[h];
    if (typeof v === 'string') headers[h] = v;
  }
  return { status, headers, body: Buffer.from(typeof b.data === 'string' ? b.data : '', 'base64'), contentType: type };
}

/** The oppositions of a `withhold-opposed` obligation, by patient. */
function byPatient(list: readonly (Opposition & { patient: string })[]): Map<string, Opposition[]> {
  const out = new Map<string, Opposition[]>();
  for (const { patient, ...o } of list) out.set(patient, [...(out.get(patient) ?? []), o]);
  return out;
}

/** The patients of the answer reachable only through break-the-glass (unless the decision itself is a break-the-glass use). */
function breakGlassUse(d: Decision, shown: ReadonlySet<string>): readonly string[] {
  const btg = obligation(d, 'break-glass-patients');
  if (!btg || shown.size === 0 || d.purposeOfUse === 'BTG') return [];
  return btg.patients.filter((p) => shown.has(p));
}

/**
 * A coding contractor sees the listed stays: the Encounters themselves, their patients' Patient
 * resources, and resources recorded during one of those stays (`encounter` or `context`).
 */
function inStays(r: Resource, stays: ReadonlySet<string>, careSet: CareSet): boolean {
  if (r.resourceType === 'Encounter') return r.id !== undefined && stays.has(r.id);
  if (r.resourceType === 'Patient') return r.id !== undefined && careSet.patients.has(r.id);
  const ref =
    (r as { encounter?: { reference?: string } }).encounter?.reference ?? (r as { context?: { reference?: string } }).context?.reference;
  return typeof ref === 'string' && ref.startsWith('Encounter/') && stays.has(ref.slice('Encounter/'.length));
}

/**
 * The link without the one parameter whose decoded value is the narrowing caregate added (the
 * upstream may have re-encoded it); undefined when it is not there.
 */
function withoutNarrowing(rel: string, param: string, value: string): string | undefined {
  const q = rel.indexOf('?');
  if (q === -1) return undefined;
  const parts = rel.slice(q + 1).split('&');
  const i = parts.findIndex((p) => {
    const eq = p.indexOf('=');
    if (eq === -1) return false;
    try {
      return decodeURIComponent(p.slice(0, eq).replace(/\+/g, ' ')) === param && decodeURIComponent(p.slice(eq + 1).replace(/\+/g, ' ')) === value;
    } catch {
      return false;
    }
  });
  if (i === -1) return undefined;
  parts.splice(i, 1);
  return parts.length > 0 ? `${rel.slice(0, q)}?${parts.join('&')}` : rel.slice(0, q);
}

/** `https://upstream/fhir/Observation?x` → `Observation?x`; undefined for links elsewhere. */
function upstreamRelative(url: string, bases: readonly string[]): string | undefined {
  for (const b of bases) {
    if (url.startsWith(`${b}/`)) return url.slice(b.length + 1);
    if (url.startsWith(`${b}?`)) return url.slice(b.length);
  }
  return undefined;
}

export type ResponseShaper = ReturnType<typeof createResponseShaper>;
