import type { Parameters, ParametersParameter } from '@medplum/fhirtypes';
import type { Evidence } from '../relate/types.js';
import type { ReachEvidence } from '../relate/who-can-see.js';
import type { PatientReachReport, Person, UserReachReport } from './reach.js';

/**
 * The FHIR-shaped answers of the oversight views: `Parameters` resources, as an operation
 * (`$who-can-see`, `$care-set`) would return them, for scripts and the DIM's own tools.
 */

function evidenceParam(e: ReachEvidence | Evidence): ParametersParameter {
  const part: ParametersParameter[] = [{ name: 'source', valueCode: e.source }];
  if (e.reference) part.push({ name: 'reference', valueReference: { reference: e.reference } });
  for (const t of (e as ReachEvidence).through ?? []) part.push({ name: 'through', valueReference: { reference: t } });
  if (e.until) part.push({ name: 'until', valueDateTime: e.until });
  if (e.reason) part.push({ name: 'reason', valueString: e.reason });
  return { name: 'evidence', part };
}

function personParam(kind: 'practitioner' | 'related-person' | 'patient', p: Person): ParametersParameter {
  return {
    name: 'person',
    part: [
      { name: 'who', valueReference: { reference: p.who, ...(p.name ? { display: p.name } : {}) } },
      { name: 'kind', valueCode: kind },
      ...p.services.map((s): ParametersParameter => ({ name: 'service', valueReference: { reference: s.reference, ...(s.name ? { display: s.name } : {}) } })),
      ...p.roleCodes.map((c): ParametersParameter => {
        const [system, code] = c.split('|');
        return { name: 'roleCode', valueCoding: { system: system!, code: code! } };
      }),
      ...p.evidence.map(evidenceParam),
    ],
  };
}

/** Who can see the patient now: `person` (practitioners, mandated persons, the patient), `role`, `engagement`. */
export function patientReachParameters(r: PatientReachReport): Parameters {
  return {
    resourceType: 'Parameters',
    parameter: [
      { name: 'patient', valueReference: { reference: r.patient } },
      { name: 'asOf', valueInstant: r.asOf },
      ...r.practitioners.map((p) => personParam('practitioner', p)),
      ...r.mandated.map((p) => personParam('related-person', p)),
      ...(r.self ? [personParam('patient', r.self)] : []),
      ...r.roles.map(
        (x): ParametersParameter => ({
          name: 'role',
          part: [
            { name: 'id', valueCode: x.id },
            { name: 'profile', valueCode: x.profile },
            { name: 'view', valueString: x.view },
          ],
        }),
      ),
      ...r.engagements.map(
        (e): ParametersParameter => ({
          name: 'engagement',
          part: [
            { name: 'id', valueCode: e.id },
            { name: 'contract', valueString: e.contract },
            { name: 'access', valueCode: e.access },
            ...e.who.map((w): ParametersParameter => (w.startsWith('Practitioner/') ? { name: 'who', valueReference: { reference: w } } : { name: 'who', valueString: w })),
            ...e.categories.map((c): ParametersParameter => ({ name: 'category', valueCode: c })),
            ...e.stays.map((s): ParametersParameter => ({ name: 'stay', valueReference: { reference: s } })),
          ],
        }),
      ),
    ],
  };
}

/** The patients a practitioner can see now: `patient` with its evidence. */
export function userReachParameters(r: UserReachReport): Parameters {
  return {
    resourceType: 'Parameters',
    parameter: [
      { name: 'practitioner', valueReference: { reference: r.practitioner, ...(r.name ? { display: r.name } : {}) } },
      { name: 'asOf', valueInstant: r.asOf },
      ...r.services.map((s): ParametersParameter => ({ name: 'service', valueReference: { reference: s.reference, ...(s.name ? { display: s.name } : {}) } })),
      ...r.patients.map(
        (p): ParametersParameter => ({
          name: 'patient',
          part: [{ name: 'who', valueReference: { reference: p.patient, ...(p.name ? { display: p.name } : {}) } }, ...p.evidence.map(evidenceParam)],
        }),
      ),
    ],
  };
}
