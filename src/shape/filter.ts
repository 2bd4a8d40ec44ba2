import type { AuditEvent, Binary, Bundle, BundleEntry, OperationOutcome, Resource } from '@medplum/fhirtypes';
import { removeDisplays, parseReference } from '../fhir/references.js';
import { REFERENCE_DATA_TYPES, resolvePatientLink, type PatientLink } from '../fhir/patients.js';
import type { CareSet } from '../relate/types.js';

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
  /** A further condition of the role (a coding contractor: only the engagement's stays). */
  admit?: (resource: Resource) => boolean;
  /** What the role receives instead of the resource (masked, de-identified); undefined withholds it. */
  transform?: (resource: Resource) => Resource | undefined;
}

/**
 * Judges one resource and returns what the caller receives: undefined when it must be withheld,
 * otherwise the resource with displays of hidden patients scrubbed, then masked or de-identified.
 */
export async function present(resource: Resource, ctx: FilterContext): Promise<{ resource: Resource; patients: string[] } | undefined> {
  const j = await judge(resource, ctx);
  if (!j.visible) return undefined;
  if (ctx.admit && !ctx.admit(resource)) return undefined;
  scrubDisplays(resource, ctx);
  const out = ctx.transform ? ctx.transform(resource) : resource;
  return out ? { resource: out, patients: j.patients } : undefined;
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
    // the policy lets read it (the DIM), withheld from everyone else, even their own patients' trail.
    if (!ctx.readAudit) return { visible: false, patients: [], reason: 'audit trail' };
    return { visible: true, patients: auditedPatients(resource as AuditEvent, ctx.localBases) };
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
    if (r.id) resources.push(`${r.resourceType}/${r.id}`);
    // The fullUrl is the resource's identity on caregate's public base, whatever the upstream wrote
    // there (its own address, a base caregate does not know, a real id behind a pseudonym).
    const out = shown.resource;
    const fullUrl = out.id ? `${ctx.publicBase}/${out.resourceType}/${out.id}` : undefined;
    kept.push({ ...(fullUrl ? { fullUrl } : {}), resource: out, ...(entry.search ? { search: entry.search } : {}) });
  }
  bundle.entry = kept;
  if (kept.length === 0) delete bundle.entry;
  return { bundle, patients, resources, removedMatches, removedOthers };
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
