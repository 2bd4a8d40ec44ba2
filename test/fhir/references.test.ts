import { describe, expect, it } from 'vitest';
import { classifyReference, isReferenceLike, parseReference, removeDisplays, walkReferences } from '../../src/fhir/references.js';

const BASES = ['https://fhir.example/r4', 'https://old.example/fhir/'];

describe('parseReference', () => {
  it.each([
    ['Patient/p1', { type: 'Patient', id: 'p1' }],
    ['Observation/o-1.2', { type: 'Observation', id: 'o-1.2' }],
    ['Patient/p1/_history/3', { type: 'Patient', id: 'p1', version: '3' }],
    ['https://fhir.example/r4/Patient/p1', { type: 'Patient', id: 'p1' }],
    ['https://old.example/fhir/Patient/p1/_history/2', { type: 'Patient', id: 'p1', version: '2' }],
  ])('parses %s', (ref, expected) => {
    expect(parseReference(ref, BASES)).toEqual(expected);
  });

  it.each([
    'https://other.example/r4/Patient/p1',
    'https://fhir.example/r4x/Patient/p1',
    'https://fhir.example/r4/../r4/Patient/p1',
    'https://FHIR.example/r4/Patient/p1',
    'https://fhir.example/r4//Patient/p1',
    'https://fhir.example/r4/Patient/p1?x=1',
    'https://fhir.example/r4/Patient/p1#x',
    'Patient',
    'Patient/',
    'Patient/p1/',
    'Patient/p%31',
    'Patient/..',
    'Patient/p1/_history',
    'Patient/p1/_history/..',
    'patient/p1',
    '/Patient/p1',
    '#p1',
    'urn:uuid:1',
    'Patient?identifier=x',
    `Patient/${'a'.repeat(65)}`,
    '',
  ])('refuses %s', (ref) => {
    expect(parseReference(ref, BASES)).toBeUndefined();
  });
});

describe('classifyReference', () => {
  it('tells every kind apart', () => {
    expect(classifyReference({ reference: 'Patient/p1' }, BASES)).toEqual({ kind: 'local', type: 'Patient', id: 'p1' });
    expect(classifyReference({ reference: '#c1' }, BASES)).toEqual({ kind: 'contained', id: 'c1' });
    expect(classifyReference({ reference: '#' }, BASES)).toEqual({ kind: 'contained', id: '' });
    expect(classifyReference({ reference: 'urn:uuid:61ebe359-bfdc-4613-8bf2-c5e300945f0a' }, BASES).kind).toBe('urn');
    expect(classifyReference({ reference: 'http://other/fhir/Patient/1' }, BASES)).toEqual({ kind: 'external' });
    expect(classifyReference({ identifier: { value: '1' }, type: 'Patient' }, BASES)).toEqual({ kind: 'logical', type: 'Patient' });
    expect(classifyReference({ reference: 'Patient?x=1' }, BASES)).toEqual({ kind: 'invalid' });
    expect(classifyReference({ reference: 'Patient/p1', type: 'Group' }, BASES)).toEqual({ kind: 'invalid' });
    expect(classifyReference({ reference: 'Patient/p1', type: 'Patient' }, BASES).kind).toBe('local');
    expect(classifyReference({ reference: 42 }, BASES)).toEqual({ kind: 'invalid' });
    expect(classifyReference({ reference: '#a b' }, BASES)).toEqual({ kind: 'invalid' });
  });
});

describe('walkReferences', () => {
  it('finds references at any depth, in contained resources and nested in identifiers', () => {
    const resource = {
      resourceType: 'Observation',
      subject: { reference: 'Patient/p1', display: 'X' },
      performer: [{ reference: 'Practitioner/dr' }, { identifier: { value: 'v', assigner: { reference: 'Organization/o' } } }],
      code: { coding: [{ system: 's', code: 'c', display: 'not a reference' }] },
      extension: [{ url: 'u', valueReference: { reference: '#c' } }],
      contained: [{ resourceType: 'Medication', id: 'c', manufacturer: { reference: 'Organization/m' } }],
    };
    const seen: string[] = [];
    walkReferences(resource, (ref, path) => {
      seen.push(`${path.join('.')}=${String(ref.reference ?? 'identifier')}`);
    });
    expect(seen).toEqual([
      'subject=Patient/p1',
      'performer.0=Practitioner/dr',
      'performer.1=identifier',
      'performer.1.identifier.assigner=Organization/o',
      'extension.0.valueReference=#c',
      'contained.0.manufacturer=Organization/m',
    ]);
  });

  it('does not mistake other datatypes for references', () => {
    expect(isReferenceLike({ system: 's', code: 'c', display: 'd' })).toBe(false);
    expect(isReferenceLike({ display: 'only' })).toBe(false);
    expect(isReferenceLike({ type: { text: 'x' }, value: 'v' })).toBe(false);
    expect(isReferenceLike({ type: 'Patient', identifier: { value: '1' } })).toBe(true);
  });

  it('refuses absurdly deep documents instead of overflowing the stack', () => {
    let deep: unknown = { reference: 'Patient/p1' };
    for (let i = 0; i < 2000; i++) deep = { a: deep };
    expect(() => walkReferences(deep, () => undefined)).toThrow(/nested too deeply/);
  });
});

describe('removeDisplays', () => {
  it('removes displays the predicate selects, including display-only references', () => {
    const r = {
      resourceType: 'Encounter',
      subject: { reference: 'Patient/vic', display: 'Victor V.' },
      participant: [{ individual: { reference: 'Practitioner/dr', display: 'Dr X' } }, { individual: { display: 'Jean Dupont' } }],
      type: [{ coding: [{ system: 's', code: 'c', display: 'Consultation' }] }],
    };
    const n = removeDisplays(r, (ref) => ref.reference === undefined || ref.reference === 'Patient/vic');
    expect(n).toBe(2);
    expect(r.subject).toEqual({ reference: 'Patient/vic' });
    expect(r.participant[0]?.individual).toEqual({ reference: 'Practitioner/dr', display: 'Dr X' });
    expect(r.participant[1]?.individual).toEqual({});
    expect(r.type[0]?.coding[0]?.display).toBe('Consultation');
  });
});
