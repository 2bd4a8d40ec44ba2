import type { Decision } from './decision.js';
import { patientIdOf } from './search-scope.js';
import { deny, hasPatient, outsideMessage, permit, type Ctx } from './verdicts.js';

/**
 * Who saw my record: a patient (own record) or her mandated person reads the accesses to the
 * patient's record as AuditEvents, `AuditEvent?patient=<id>` (or `entity=Patient/<id>`,
 * `Patient/<id>/AuditEvent`, `AuditEvent/<id>`). The answer is the reduced view of each event
 * (obligation `own-access-history`, honoured by the response filter): only events whose patient is
 * hers, reduced to what a patient may know. Searches must name her; only the period, the page size
 * and the order may be added. Nobody writes the trail.
 */

/** Parameters a patient's access-history search may carry besides the patient. */
const HISTORY_PARAMS = new Set(['date', '_count', '_sort']);
const PATIENT_PARAMS = new Set(['patient', 'entity']);

export function decideAccessHistory(ctx: Ctx): Decision {
  const it = ctx.in.interaction;
  const r = ctx.role;
  const rule = `${r.id}.access-history`;
  const reason = r.profile === 'mandate' ? 'mandate' : 'own-record';
  const message = 'Accesses to the record (reduced view)';
  if (it.method !== 'GET' && !(it.method === 'POST' && it.kind === 'search-type')) {
    return deny('role-forbidden', 'The audit trail is written by caregate only.', `${r.id}.audit`);
  }
  switch (it.kind) {
    case 'read':
      // Whether the event is about one of her patients is judged on the event itself.
      return permit(ctx, reason, rule, message, [], []);
    case 'search-compartment': {
      const p = it.compartment?.type === 'Patient' ? it.compartment.id : undefined;
      if (p === undefined) return deny('interaction-forbidden', 'The accesses are listed per patient.', rule);
      if (!hasPatient(ctx.careSet, p)) return deny('no-care-relationship', outsideMessage(r.profile), rule, { patients: [p] });
      const extra = it.params.find((x) => !HISTORY_PARAMS.has(x.name));
      if (extra) return deny('parameter-forbidden', `The accesses are searched by patient, date, _count and _sort only, not ${extra.name}.`, rule);
      return permit(ctx, reason, rule, message, [p], []);
    }
    case 'search-type': {
      if (ctx.in.paging) return permit(ctx, reason, rule, message, [], []);
      const named: string[] = [];
      for (const x of it.params) {
        if (HISTORY_PARAMS.has(x.name)) {
          if (x.name === '_sort' && !/^-?date$/.test(x.value)) return deny('parameter-forbidden', 'The accesses are sorted by date only.', rule);
          continue;
        }
        if (!PATIENT_PARAMS.has(x.name) || x.modifier !== undefined) {
          return deny('parameter-forbidden', `The accesses are searched by patient, date, _count and _sort only, not ${x.name}.`, rule);
        }
        for (const v of x.value.split(',')) {
          const id = x.name === 'entity' ? patientIdOf(v, 'AuditEvent', 'entity') : patientIdOf(v, 'AuditEvent', 'patient');
          if (id === undefined) return deny('parameter-forbidden', `${x.name} names a patient (Patient/<id>).`, rule);
          named.push(id);
        }
      }
      if (named.length === 0) return deny('parameter-forbidden', 'The accesses are listed per patient: add patient=<id>.', rule);
      const outside = named.filter((p) => !hasPatient(ctx.careSet, p));
      if (outside.length > 0) {
        return deny('no-care-relationship', outsideMessage(r.profile), rule, { patients: [...new Set(outside)], refuseAs: 'empty-searchset' });
      }
      return permit(ctx, reason, rule, message, [...new Set(named)], []);
    }
    default:
      return deny('interaction-forbidden', 'The accesses to a record are read by search (AuditEvent?patient=<id>) or by id.', rule);
  }
}
