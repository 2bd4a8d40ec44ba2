import type { Resource } from '@medplum/fhirtypes';
import { isRelationshipType } from './relationships.js';
import type { Decision } from './decision.js';
import { categoriesOf } from './minimisation.js';
import { notAnOpposition, oppositionEvidence, oppositionMessage } from './opposition.js';
import { deny, hasPatient, outsideMessage, permit, type Ctx } from './verdicts.js';

/**
 * Writes (create, update, patch, delete): the resource before and after must belong to patients
 * this user may see, may not move to another patient, and relationship resources are written by
 * trusted writers only. The facts (patients before and after) are read by policy/write-facts.ts.
 *
 * A role allowed only `Consent.opposition` (a patient, admission staff) writes Consents that stay
 * oppositions before and after (policy/opposition.ts): never a permit, which would grant access.
 */
export function decideWrite(ctx: Ctx): Decision {
  const it = ctx.in.interaction;
  const r = ctx.role;
  const type = it.resourceType ?? '';
  const rule = `${r.id}.write`;
  const oppositionWriter = type === 'Consent' && !r.relationshipWrites.includes('Consent') && r.relationshipWrites.includes('Consent.opposition');
  if ((ctx.role.profile === 'own-record' || ctx.role.profile === 'mandate') && !oppositionWriter) {
    return deny('interaction-forbidden', 'This role may read, not write.', rule);
  }
  if (oppositionWriter) {
    const why = oppositionWriteProblem(ctx.in.writeResources, it.kind);
    if (why) return deny('relationship-write-forbidden', `Role "${r.id}" writes only oppositions (Consent.opposition): ${why}.`, rule);
  } else if (isRelationshipType(type) && !r.relationshipWrites.includes(type)) {
    return deny('relationship-write-forbidden', `Writes to ${type} change who may see records; role "${r.id}" may not make them.`, rule);
  }
  if (type === 'Patient' && ctx.in.patientLinkChanged && !r.relationshipWrites.includes('Patient.link')) {
    return deny('relationship-write-forbidden', `Patient.link changes who may see records; role "${r.id}" may not make them.`, rule);
  }
  if (it.conditional?.length && ctx.careSet.scope !== 'all') {
    return deny('interaction-forbidden', 'Conditional writes search the whole server; they are not allowed to this role. Write by id.', rule);
  }
  const wp = ctx.in.writePatients;
  if (!wp) return deny('patient-undetermined', 'The patient of this write could not be determined.', rule);
  const sides = [wp.before, wp.after];
  // A resource whose patient cannot be told is written only by a role that sees every record (the
  // DIM giving an orphan attachment its securityContext): a listed care set cannot be checked against it.
  if (sides.some((s) => s === 'undetermined') && ctx.careSet.scope !== 'all') {
    return deny('patient-undetermined', 'The patient this resource belongs to could not be determined.', rule, { refuseAs: 'not-found' });
  }
  const before = Array.isArray(wp.before) ? wp.before : [];
  const after = Array.isArray(wp.after) ? wp.after : [];
  for (const p of before) {
    // The current version is outside: answer as if it did not exist.
    if (!hasPatient(ctx.careSet, p)) {
      return deny('no-care-relationship', 'The resource belongs to a patient outside the care relationships (answered as a miss).', rule, { refuseAs: 'not-found', patients: [p] });
    }
  }
  for (const p of after) {
    if (!hasPatient(ctx.careSet, p)) return deny('no-care-relationship', outsideMessage(r.profile), rule, { patients: [p] });
  }
  if (ctx.careSet.scope !== 'all' && before.length > 0 && (after.length !== before.length || after.some((p) => !before.includes(p)))) {
    return deny('patient-move-forbidden', 'A resource cannot be moved to another patient.', rule);
  }
  // Minimisation: a profession writes only the categories of data the policy gives it.
  const w = ctx.minimisation.write;
  const labels = ctx.minimisation.labels;
  if (labels.length > 0 && (before.length > 0 || after.length > 0)) {
    // A sensitive record the caller may not read, she may not overwrite (answered as a miss, as
    // its read is) nor write under that label.
    const hitOf = (res: Resource | undefined) => (res ? labels.find((l) => (res.meta?.security ?? []).some((c) => `${c.system}|${c.code}` === l.label)) : undefined);
    const old = hitOf(ctx.in.writeResources?.before);
    if (old) return deny('category-forbidden', `The current version carries a sensitivity label this caller does not see (${old.rule}; answered as a miss).`, old.rule, { refuseAs: 'not-found' });
    const labelled = hitOf(ctx.in.writeResources?.after);
    if (labelled) return deny('category-forbidden', `Your profession does not write records under this sensitivity label (${labelled.rule}).`, labelled.rule);
  }
  if (w && (before.length > 0 || after.length > 0)) {
    for (const r of [ctx.in.writeResources?.after, ctx.in.writeResources?.before]) {
      if (!r) continue;
      const cats = categoriesOf(ctx.in.policy.minimisation, r);
      const refused = cats.length === 0 ? (w.uncategorised ? undefined : 'uncategorised data') : cats.find((c) => w.categories.includes(c));
      if (refused) return deny('category-forbidden', `Your profession does not write ${refused} under the policy's minimisation rules (${w.rule}).`, w.rule);
    }
  }
  const patients = [...new Set([...before, ...after])];
  const opposed = opposedWrite(ctx, patients);
  if (opposed) return opposed;
  const reason = r.profile === 'own-record' ? 'own-record' : r.profile === 'mandate' ? 'mandate' : ctx.careSet.scope === 'all' ? 'role-all-records' : 'care-relationship';
  return permit(ctx, reason, rule, 'Write within the care relationships', patients, []);
}

/** Why a write by an opposition-only writer is refused: both sides must be oppositions (a delete: the one it removes). */
function oppositionWriteProblem(facts: Ctx['in']['writeResources'], kind: string): string | undefined {
  if (!facts) return 'the Consent could not be read';
  const sides: (Resource | undefined)[] = [];
  if (facts.before) sides.push(facts.before);
  if (kind !== 'delete') sides.push(facts.after);
  for (const side of sides) {
    const why = notAnOpposition(side);
    if (why) return why;
  }
  return undefined;
}

/**
 * A write into the record of a patient who opposed this caller, for a kind of data her opposition
 * covers: refused like a read (CSP L1110-4). An opposition limited by security labels refuses a
 * body carrying one of them, and a patch or delete, whose result it cannot see.
 */
function opposedWrite(ctx: Ctx, patients: readonly string[]): Decision | undefined {
  const it = ctx.in.interaction;
  const type = it.resourceType ?? '';
  const body = it.kind === 'create' || it.kind === 'update' ? (it.body as Resource | undefined) : undefined;
  const labels = new Set((body?.meta?.security ?? []).map((c) => `${c.system}|${c.code}`));
  for (const p of patients) {
    for (const o of ctx.opposition.active.get(p) ?? []) {
      if (o.classes.length > 0 && !o.classes.includes(type)) continue;
      if (o.labels.length > 0 && body && !o.labels.some((l) => labels.has(l))) continue;
      const overrides = ctx.in.policy.patientRights.oppositions.breakGlassOverrides;
      return deny('patient-opposition', oppositionMessage(ctx.role.breakGlass, overrides), `${ctx.role.id}.write`, {
        patients: [p],
        evidence: [oppositionEvidence(o, false)],
      });
    }
  }
  return undefined;
}
