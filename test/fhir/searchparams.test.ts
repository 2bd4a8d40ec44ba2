import { describe, expect, it } from 'vitest';
import {
  isKnownParam,
  paramKind,
  parseHas,
  resolveChain,
  searchParamDef,
  searchParamIndexLoadMs,
  searchParamsOf,
} from '../../src/fhir/searchparams.js';
import { RESOURCE_TYPES } from '../../src/fhir/types.js';

describe('search parameter index', () => {
  it('loads once, quickly', () => {
    const ms = searchParamIndexLoadMs();
    expect(ms).toBeGreaterThan(0);
    expect(ms).toBeLessThan(2000);
    expect(searchParamIndexLoadMs()).toBe(ms);
  });

  it('knows reference parameters with targets and per-type paths', () => {
    expect(searchParamDef('Observation', 'subject')).toMatchObject({
      code: 'subject',
      type: 'reference',
      resourceType: 'Observation',
      paths: ['Observation.subject'],
    });
    expect(searchParamDef('Observation', 'subject')?.target).toEqual(expect.arrayContaining(['Patient', 'Group', 'Device', 'Location']));
    const patient = searchParamDef('Condition', 'patient');
    expect(patient?.paths).toEqual(['Condition.subject.where(resolve() is Patient)']);
    expect(patient?.id).toBe('clinical-patient');
  });

  it('knows other parameter types', () => {
    expect(searchParamDef('Observation', 'code')?.type).toBe('token');
    expect(searchParamDef('Patient', 'birthdate')?.type).toBe('date');
    expect(searchParamDef('Patient', 'name')?.type).toBe('string');
    expect(searchParamDef('Observation', 'code-value-quantity')?.type).toBe('composite');
  });

  it('falls back to the parameters of every resource', () => {
    expect(searchParamDef('Observation', '_id')).toMatchObject({ type: 'token', resourceType: 'Resource' });
    expect(searchParamDef('Patient', '_lastUpdated')?.type).toBe('date');
    expect(searchParamDef('Observation', 'nope')).toBeUndefined();
    expect(searchParamsOf('Observation').some((d) => d.code === 'patient')).toBe(true);
  });

  it('classifies parameter names', () => {
    expect(paramKind('Observation', '_id')).toBe('common');
    expect(paramKind('Observation', '_has')).toBe('common');
    expect(paramKind('Observation', '_filter')).toBe('common');
    expect(paramKind('Observation', '_include')).toBe('result');
    expect(paramKind('Observation', '_revinclude')).toBe('result');
    expect(paramKind('Observation', '_summary')).toBe('result');
    expect(paramKind('Observation', '_since')).toBe('history');
    expect(paramKind('Observation', 'subject')).toBe('resource');
    expect(paramKind('Observation', 'birthdate')).toBe('unknown');
    expect(isKnownParam('Patient', 'birthdate')).toBe(true);
    expect(isKnownParam('Patient', 'favourite-colour')).toBe(false);
  });
});

describe('resolveChain', () => {
  it('resolves an ambiguous chain to every target', () => {
    const chain = resolveChain('Observation', 'subject.name');
    expect(chain?.links[0]).toMatchObject({ param: 'subject', from: ['Observation'] });
    expect(chain?.links[0]?.to).toEqual(expect.arrayContaining(['Patient', 'Group', 'Location']));
    expect(chain?.last.on).toEqual(expect.arrayContaining(['Patient', 'Location']));
    expect(chain?.last.on).not.toContain('Group');
  });

  it('resolves a typed chain', () => {
    expect(resolveChain('Observation', 'subject:Patient.name')).toEqual({
      links: [{ param: 'subject', from: ['Observation'], to: ['Patient'] }],
      last: { param: 'name', on: ['Patient'] },
    });
    expect(resolveChain('Encounter', 'patient.organization.name')?.links.map((l) => l.to)).toEqual([['Patient'], ['Organization']]);
  });

  it('refuses chains it cannot follow', () => {
    expect(resolveChain('Observation', 'code.name')).toBeUndefined();
    expect(resolveChain('Observation', 'subject:Practitioner.name')).toBeUndefined();
    expect(resolveChain('Observation', 'subject:Patient.nope')).toBeUndefined();
    expect(resolveChain('Observation', 'subject')).toBeUndefined();
  });
});

describe('parseHas', () => {
  it('parses simple and nested _has', () => {
    expect(parseHas('Observation:patient:code', RESOURCE_TYPES)).toEqual({ type: 'Observation', refParam: 'patient', then: { param: 'code' } });
    expect(parseHas('Observation:patient:_has:AuditEvent:entity:agent', RESOURCE_TYPES)).toEqual({
      type: 'Observation',
      refParam: 'patient',
      then: { has: { type: 'AuditEvent', refParam: 'entity', then: { param: 'agent' } } },
    });
  });

  it('refuses unknown types, non-reference links and unknown parameters', () => {
    expect(parseHas('Foo:patient:code', RESOURCE_TYPES)).toBeUndefined();
    expect(parseHas('Observation:code:code', RESOURCE_TYPES)).toBeUndefined();
    expect(parseHas('Observation:patient:nope', RESOURCE_TYPES)).toBeUndefined();
    expect(parseHas('Observation:patient', RESOURCE_TYPES)).toBeUndefined();
    expect(parseHas('Observation:patient:code:extra', RESOURCE_TYPES)).toBeUndefined();
  });
});
