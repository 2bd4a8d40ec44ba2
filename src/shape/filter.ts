import type { AuditEvent, Binary, Bundle, BundleEntry, OperationOutcome, Patient, Resource } from '@medplum/fhirtypes';
import { removeDisplays, parseReference, walkReferences } from '../fhir/references.js';
import { REFERENCE_DATA_TYPES, resolvePatientLink, type PatientLink } from '../fhir/patients.js';
import type { HoldRule } from '../policy/patient-rights-config.js';
import type { CareSet, Opposition } from '../relate/types.js';
import { dataKindOf, isHeld, oppositionCovers, type DataKind } from './data-kind.js';
import { withheldBy, type MinimisationConfig } from '../policy/minimisation.js';

/**
 * The security boundary: every resource that leaves is judged by its own content against the care
 * set. Matches, includes, contained resources, history versions, batch entries, operation outputs
 * and write responses all pass through `judge`. Anything that cannot be judged is withheld.
 */

export interface FilterContext {
  careSet: CareSet;
  /** Own-record callers (patients) only see resources whose subject/patient is them. */
  subjectOnly: boolean;
  linkOf(resource: Resource): PatientLink;
  /** Reads an indirect link target (`DocumentReference/x`) with the service credential; undefined when it cannot be read. */
  read(ref: string): Promise<Resource | undefined>;
  localBases: readonly string[];
  /**
   * The resources pointing at a Binary stored without `securityContext` (relate/binary-owners.ts).
   * Without it, such a Binary cannot be judged and is withheld.
   */
  ownersOf?: (binaryId: string) => Promise<string[]>;
  /** caregate's public base URL: the `fullUrl` of every entry answered. */
  publicBase: string;
  /** The role reads the audit trail (`readAudit`): AuditEvents are shown to it, and to no one else. */
  readAudit?: boolean;
  /**
   * Own record, mandate: an AuditEvent in the patient's reduced view, or undefined when it is not
   * about one of the caller's patients (withheld).
   */
  reduceAuditEvent?: (event: AuditEvent) => AuditEvent | undefined;
  /** Oppositions in force (CSP L1110-4): a resource of one of these patients that one covers is withheld. */
  opposed?: ReadonlyMap<string, readonly Opposition[]>;
  /** Told of each patient whose data an opposition withheld, with the Consent (for the audit). */
  onOpposed?: (patient: string, consent: string) => void;
  /** Own record, mandate: documents and results held back until a physician releases them. */
  held?: { rules: readonly HoldRule[]; labels: readonly string[] };
  /**
   * Minimisation (policy/minimisation.ts): the categories and labels withheld from this caller,
   * with the category definitions; `onWithheld` is told the rule of each resource withheld.
   */
  minimisation?: {
    config: MinimisationConfig;
    read: { categories: readonly string[]; uncategorised: boolean; rule: string } | undefined;
    labels: readonly { label: string; rule: string }[];
    onWithheld?: (rule: string) => void;
  };
  /** A further condition of the role (a coding contractor: only the engagement's stays). */
  admit?: (resource: Resource) => boolean;
  /** What the role receives instead of the resource (masked, de-identified); undefined withholds it. */
  transform?: (resource: Resource) => Resource | undefined;
}

/** What the caller receives of one resource, and what it told. */
export interface Presented {
  resource: Resource;
  patients: string[];
  /** Links of a Patient to records the caller may not see, removed (audited). */
  linksRemoved: number;
}

/**
 * Judges one resource and returns what the caller receives: undefined when it must be withheld,
 * otherwise the resource with displays of hidden patients scrubbed, then masked or de-identified.
 * A Patient is shown without its links to records the caller may not see (a merged duplicate, a
 * relative): the link is hidden, not the patient.
 */
export async function present(resource: Resource, ctx: FilterContext): Promise<Presented | undefined> {
  const { resource: own, removed } = withoutHiddenLinks(resource, ctx);
  const j = await judge(own, ctx);
  if (!j.visible) return undefined;
  if (own.resourceType === 'AuditEvent' && !ctx.readAudit) {
    // The patient's reduced view, built afresh: nothing of the original passes unless chosen.
    const reduced = ctx.reduceAuditEvent?.(own as AuditEvent);
    return reduced ? { resource: reduced, patients: j.patients, linksRemoved: 0 } : undefined;
  }
  if (ctx.admit && !ctx.admit(own)) return undefined;
  if (await withheldByKind(own, j.patients, ctx)) return undefined;
  if (ctx.minimisation && j.patients.length > 0) {
    const rule = await minimisedBy(own, ctx.minimisation, ctx);
    if (rule) {
      ctx.minimisation.onWithheld?.(rule);
      return undefined;
    }
  }
  scrubDisplays(own, ctx);
  const out = ctx.transform ? ctx.transform(own) : own;
  return out ? { resource: out, patients: j.patients, linksRemoved: removed } : undefined;
}

/**
 * The rule under which minimisation withholds a patient's resource from this caller, if any. A
 * Binary is judged by its own labels and with every document known to hold it: the resource its
 * `securityContext` names and the DocumentReferences, DiagnosticReports and Media that point at it
 * (relate/binary-owners.ts). A `securityContext` that cannot be read withholds it whenever a rule
 * applies (fail closed).
 */
async function minimisedBy(r: Resource, m: NonNullable<FilterContext['minimisation']>, ctx: FilterContext): Promise<string | undefined> {
  const own = withheldBy(m.config, r, m);
  if (own || r.resourceType !== 'Binary') return own;
  const closed = m.read?.rule ?? m.labels[0]?.rule;
  const context = (r as Binary).securityContext?.reference;
  const target = typeof context === 'string' ? parseReference(context, ctx.localBases) : undefined;
  if (context !== undefined && !target) return closed;
  const contextRef = target && target.type !== 'Patient' ? `${target.type}/${target.id}` : undefined;
  if (contextRef) {
    const doc = await ctx.read(contextRef);
    if (!doc) return closed;
    const rule = withheldBy(m.config, doc, m);
    if (rule) return rule;
  }
  for (const ref of r.id && ctx.ownersOf ? await ctx.ownersOf(r.id) : []) {
    if (ref === contextRef) continue;
    const doc = await ctx.read(ref);
    const rule = doc ? withheldBy(m.config, doc, m) : undefined;
    if (rule) return rule;
  }
  return undefined;
}

/**
 * A Patient's links that the caller could not follow: to a Patient outside the care set, or to a
 * record that cannot be told (identifier only, another server). Links to a RelatedPerson are kept.
 */
function withoutHiddenLinks(resource: Resource, ctx: FilterContext): { resource: Resource; removed: number } {
  const links = (resource as Patient).link;
  if (resource.resourceType !== 'Patient' || ctx.careSet.scope === 'all' || !Array.isArray(links)) return { resource, removed: 0 };
  const kept = links.filter((l) => {
    const ref = (l as { other?: { reference?: unknown } } | null)?.other?.reference;
    const p = typeof ref === 'string' ? parseReference(ref, ctx.localBases) : undefined;
    if (p === undefined) return false;
    return p.type === 'RelatedPerson' || (p.type === 'Patient' && allowed(ctx.careSet, p.id));
  });
  if (kept.length === links.length) return { resource, removed: 0 };
  const copy = { ...(resource as Patient) };
  if (kept.length > 0) copy.link = kept;
  else delete copy.link;
  return { resource: copy, removed: links.length - kept.length };
}

/**
 * A stored container (a document or collection Bundle, a Parameters) is answered whole or not at
 * all: every resource it holds is judged, and one the caller may not see makes the whole a miss.
 * A document with holes would still say who it is about and what was removed. Patient references
 * outside the held resources (a parameter's value) must be visible too.
 */
export async function presentContainer(container: Resource, ctx: FilterContext): Promise<Presented | undefined> {
  const held: { resource: Resource; put(r: Resource): void }[] = [];
  if (container.resourceType === 'Bundle') {
    for (const e of (container as Bundle).entry ?? []) {
      if (e.resource) held.push({ resource: e.resource, put: (r) => (e.resource = r) });
    }
  } else {
    const walk = (parts: unknown): void => {
      if (!Array.isArray(parts)) return;
      for (const p of parts as { resource?: Resource; part?: unknown }[]) {
        if (p?.resource) held.push({ resource: p.resource, put: (r) => (p.resource = r) });
        walk(p?.part);
      }
    };
    walk((container as { parameter?: unknown }).parameter);
  }
  const patients = new Set<string>();
  let linksRemoved = 0;
  for (const h of held) {
    const shown = h.resource.resourceType === 'Bundle' || h.resource.resourceType === 'Parameters' ? await presentContainer(h.resource, ctx) : await present(h.resource, ctx);
    if (!shown) return undefined;
    for (const p of shown.patients) patients.add(p);
    linksRemoved += shown.linksRemoved;
    h.put(shown.resource);
  }
  // What the container says besides the resources it holds (a valueReference to a Patient).
  const rest = JSON.parse(JSON.stringify(container, (k, v: unknown) => (k === 'resource' ? undefined : v))) as Record<string, unknown>;
  let undetermined = false;
  walkReferences(rest, (ref) => {
    if (typeof ref.reference !== 'string') return;
    const r = parseReference(ref.reference, ctx.localBases);
    if (r === undefined) undetermined ||= /\/Patient\//.test(ref.reference);
    else if (r.type === 'Patient') {
      if (!allowed(ctx.careSet, r.id)) undetermined = true;
      else patients.add(r.id);
    }
  });
  if (undetermined) return undefined;
  if (ctx.subjectOnly && held.length === 0 && patients.size === 0) return undefined;
  return { resource: container, patients: [...patients], linksRemoved };
}

export interface Judgement {
  visible: boolean;
  patients: string[];
  reason?: string;
}

function allowed(set: CareSet, id: string): boolean {
  return set.scope === 'all' || set.patients.has(id);
}

/** Judges one resource (with what it contains). */
export async function judge(resource: Resource, ctx: FilterContext): Promise<Judgement> {
  if (resource.resourceType === 'AuditEvent') {
    // The audit trail is judged by who reads it, not by the patients it names: whole to the roles
    // the policy lets read it (the DIM), reduced for a patient to the events about her, withheld
    // from everyone else, even their own patients' trail.
    const audited = auditedPatients(resource as AuditEvent, ctx.localBases);
    if (ctx.readAudit) return { visible: true, patients: audited };
    if (ctx.reduceAuditEvent && audited.some((id) => ctx.careSet.patients.has(id))) {
      return { visible: true, patients: audited.filter((id) => ctx.careSet.patients.has(id)) };
    }
    return { visible: false, patients: [], reason: 'audit trail' };
  }
  let link: PatientLink = ctx.linkOf(resource);
  if (resource.resourceType === 'Binary' && (resource as Binary).securityContext === undefined && ctx.ownersOf && resource.id) {
    // Most servers store attachments without securityContext: the Binary belongs to the patients of
    // every resource that points at it, and to none when none is known (withheld).
    const owners = await ctx.ownersOf(resource.id);
    if (owners.length > 0) link = { kind: 'indirect', via: owners, ids: [], subjectIds: [], participantIds: [] };
  }
  if (link.kind === 'indirect') link = await resolvePatientLink(link, ctx.read, { localBases: ctx.localBases });
  switch (link.kind) {
    case 'none':
      return { visible: true, patients: [] };
    case 'undetermined':
      return { visible: false, patients: [], reason: link.reason };
    case 'patients': {
      const ids = [...new Set(link.ids)];
      if (ids.length === 0) return { visible: false, patients: [], reason: 'no patient' };
      if (!ids.every((id) => allowed(ctx.careSet, id))) return { visible: false, patients: ids, reason: 'patient outside care set' };
      if (ctx.subjectOnly && (link.subjectIds.length === 0 || !link.subjectIds.every((id) => allowed(ctx.careSet, id)))) {
        return { visible: false, patients: ids, reason: 'not the subject' };
      }
      return { visible: true, patients: ids };
    }
    default:
      return { visible: false, patients: [], reason: 'indirect link unresolved' };
  }
}

/**
 * Rules on kinds of data rather than patients: an opposition in force that covers this resource
 * (its type, its security labels) for one of its patients, or a document or result not yet
 * released by a physician.
 */
async function withheldByKind(resource: Resource, patients: readonly string[], ctx: FilterContext): Promise<boolean> {
  const opposed = ctx.opposed;
  const concerned = opposed ? patients.filter((p) => opposed.has(p)) : [];
  if (concerned.length === 0 && !ctx.held) return false;
  if (REFERENCE_DATA_TYPES.has(resource.resourceType)) return false;
  const kind: DataKind = await dataKindOf(resource, ctx.read, ctx.localBases);
  for (const p of concerned) {
    const o = opposed!.get(p)!.find((x) => oppositionCovers(x, kind));
    if (o) {
      ctx.onOpposed?.(p, o.consent);
      return true;
    }
  }
  return ctx.held !== undefined && isHeld(kind, ctx.held);
}

/** The patients an AuditEvent is about (its entities' literal Patient references). */
function auditedPatients(event: AuditEvent, localBases: readonly string[]): string[] {
  const ids = new Set<string>();
  for (const e of event.entity ?? []) {
    const ref = e.what?.reference;
    const p = typeof ref === 'string' ? parseReference(ref, localBases) : undefined;
    if (p?.type === 'Patient') ids.add(p.id);
  }
  return [...ids];
}

/**
 * Removes the `display` texts that may name a patient the caller may not see: references to such a
 * patient, and references to any resource that is not reference data, whose patient cannot be told
 * without reading it (an Encounter's display may name someone else). Displays of references to the
 * caller's own patients and to reference data (practitioners, organisations...) are kept.
 */
export function scrubDisplays(resource: Resource, ctx: FilterContext): void {
  if (ctx.careSet.scope === 'all') return;
  removeDisplays(resource, (ref) => {
    if (typeof ref.reference !== 'string') {
      // An identifier-only or display-only reference: the display may name anyone.
      return typeof ref.type === 'string' && !REFERENCE_DATA_TYPES.has(ref.type);
    }
    const p = parseReference(ref.reference, ctx.localBases);
    if (p === undefined) return false;
    if (p.type === 'Patient') return !allowed(ctx.careSet, p.id);
    return !REFERENCE_DATA_TYPES.has(p.type);
  });
}

export interface BundleFilterResult {
  bundle: Bundle;
  /** Patients of the entries that were answered. */
  patients: Set<string>;
  /** Resources answered (`Type/id`). */
  resources: string[];
  /** Whether any `match` entry was withheld (then `Bundle.total` is not exact). */
  removedMatches: number;
  /** Patient links to records the caller may not see, removed. */
  linksRemoved: number;
  removedOthers: number;
}

/**
 * Filters a searchset or history Bundle in place. History entries without a resource (deletions)
 * cannot be judged and are withheld.
 */
export async function filterBundle(bundle: Bundle, ctx: FilterContext): Promise<BundleFilterResult> {
  const patients = new Set<string>();
  const resources: string[] = [];
  let removedMatches = 0;
  let removedOthers = 0;
  let linksRemoved = 0;
  const kept: BundleEntry[] = [];
  for (const entry of bundle.entry ?? []) {
    const r = entry.resource;
    const isMatch = (entry.search?.mode ?? 'match') === 'match';
    if (!r) {
      if (isMatch) removedMatches++;
      else removedOthers++;
      continue;
    }
    if (r.resourceType === 'OperationOutcome') {
      kept.push({ ...entry, resource: sanitizeOutcome(r as OperationOutcome) });
      continue;
    }
    const shown = await present(r, ctx);
    if (!shown) {
      if (isMatch) removedMatches++;
      else removedOthers++;
      continue;
    }
    for (const p of shown.patients) patients.add(p);
    linksRemoved += shown.linksRemoved;
    if (r.id) resources.push(`${r.resourceType}/${r.id}`);
    // The fullUrl is the resource's identity on caregate's public base, whatever the upstream wrote
    // there (its own address, a base caregate does not know, a real id behind a pseudonym).
    const out = shown.resource;
    const fullUrl = out.id ? `${ctx.publicBase}/${out.resourceType}/${out.id}` : undefined;
    kept.push({ ...(fullUrl ? { fullUrl } : {}), resource: out, ...(entry.search ? { search: entry.search } : {}) });
  }
  bundle.entry = kept;
  if (kept.length === 0) delete bundle.entry;
  return { bundle, patients, resources, removedMatches, removedOthers, linksRemoved };
}

/**
 * OperationOutcomes from the upstream may quote data (ids in referential-integrity errors, values
 * in validation messages): only the coded parts pass.
 */
export function sanitizeOutcome(o: OperationOutcome): OperationOutcome {
  return {
    resourceType: 'OperationOutcome',
    ...(o.id ? { id: o.id } : {}),
    issue: (o.issue ?? []).map((i) => ({
      severity: i.severity,
      code: i.code,
      ...(i.details?.coding ? { details: { coding: i.details.coding } } : {}),
    })),
  };
}
