import { isRelationshipType } from './relationships.js';
import type { Decision } from './decision.js';
import { deny, hasPatient, outsideMessage, permit, type Ctx } from './verdicts.js';

/**
 * Writes (create, update, patch, delete): the resource before and after must belong to patients
 * this user may see, may not move to another patient, and relationship resources are written by
 * trusted writers only. The facts (patients before and after) are read by policy/write-facts.ts.
 */
export function decideWrite(ctx: Ctx): Decision {
  const it = ctx.in.interaction;
  const r = ctx.role;
  const type = it.resourceType ?? '';
  const rule = `${r.id}.write`;
  if (ctx.role.profile === 'own-record' || ctx.role.profile === 'mandate') {
    return deny('interaction-forbidden', 'This role may read, not write.', rule);
  }
  if (isRelationshipType(type) && !r.relationshipWrites.includes(type)) {
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
  const patients = [...new Set([...before, ...after])];
  return permit(ctx, ctx.careSet.scope === 'all' ? 'role-all-records' : 'care-relationship', rule, 'Write within the care relationships', patients, []);
}
