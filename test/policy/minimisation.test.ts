import { readFileSync } from 'node:fs';
import { resolve } from 'node:path';
import { describe, expect, it } from 'vitest';
import type { Condition, DocumentReference, Observation, Resource } from '@medplum/fhirtypes';
import { ConfigError } from '../../src/config/load.js';
import { categoriesOf, minimisationFor, withheldBy } from '../../src/policy/minimisation.js';
import { parsePolicy } from '../../src/policy/load.js';
import { practitioner } from '../audit/fixtures.js';

/** The minimisation rules of the demo policy (config/policy.yaml), and how a policy file is checked. */
const FILE = resolve(import.meta.dirname, '../../config/policy.yaml');
const TEXT = readFileSync(FILE, 'utf8');
const { minimisation } = parsePolicy(TEXT, 'policy.yaml').policy;
const careTeam = { id: 'clinician', profile: 'care-team' };

const OBS_CAT = 'http://terminology.hl7.org/CodeSystem/observation-category';
const observation = (category: string): Observation => ({
  resourceType: 'Observation',
  status: 'final',
  category: [{ coding: [{ system: OBS_CAT, code: category }] }],
  code: { coding: [{ system: 'http://loinc.org', code: '8867-4' }] },
  subject: { reference: 'Patient/p' },
});
const psyNote: DocumentReference = {
  resourceType: 'DocumentReference',
  status: 'current',
  meta: { security: [{ system: 'http://terminology.hl7.org/CodeSystem/v3-ActCode', code: 'PSY' }] },
  content: [{ attachment: { url: 'Binary/b' } }],
  subject: { reference: 'Patient/p' },
};
const diagnosis: Condition = { resourceType: 'Condition', subject: { reference: 'Patient/p' } };
const procedure = { resourceType: 'Procedure', status: 'completed', subject: { reference: 'Patient/p' } } as Resource;

const professional = (profession: string) => practitioner({ claims: { ...practitioner().claims, professionCodes: [profession] } });

describe('data categories', () => {
  it('classifies a resource by its type, its category codes and its labels, in every category it fits', () => {
    expect(categoriesOf(minimisation, observation('vital-signs'))).toEqual(['vital-signs']);
    expect(categoriesOf(minimisation, observation('laboratory'))).toEqual(['laboratory']);
    expect(categoriesOf(minimisation, observation('social-history'))).toEqual([]);
    expect(categoriesOf(minimisation, psyNote)).toEqual(['clinical-notes', 'psychiatric-notes']);
    expect(categoriesOf(minimisation, procedure)).toEqual([]);
  });
});

describe('the profession × data-category matrix', () => {
  it('withholds the psychiatric notes from a physiotherapist and lets her write vital signs only among clinical data', () => {
    const m = minimisationFor(minimisation, professional('70'), careTeam);
    expect(m.read).toEqual({ categories: ['psychiatric-notes'], uncategorised: true, rule: 'minimisation.physiotherapist' });
    expect(m.write?.categories).toEqual(expect.arrayContaining(['diagnoses', 'laboratory', 'medications', 'psychiatric-notes']));
    expect(m.write?.categories).not.toContain('vital-signs');
    expect(withheldBy(minimisation, { ...psyNote, meta: {} }, m)).toBeUndefined();
  });

  it('gives a nurse every category to read', () => {
    const m = minimisationFor(minimisation, professional('60'), careTeam);
    expect(m.read).toBeUndefined();
    expect(withheldBy(minimisation, diagnosis, m)).toBeUndefined();
  });

  it('keeps a secretary to the administrative data, uncategorised data included', () => {
    const m = minimisationFor(minimisation, practitioner({ claims: { ...practitioner().claims, professionCodes: [] } }), { id: 'service-secretary', profile: 'care-team' });
    expect(m.read?.rule).toBe('minimisation.service-secretary');
    expect(withheldBy(minimisation, diagnosis, m)).toBe('minimisation.service-secretary');
    expect(withheldBy(minimisation, procedure, m)).toBe('minimisation.service-secretary');
    expect(withheldBy(minimisation, { resourceType: 'Encounter', status: 'finished', class: { code: 'IMP' } } as Resource, m)).toBeUndefined();
  });

  it('applies to care-team roles only: the DIM’s and the admission office’s views have their own rules', () => {
    expect(minimisationFor(minimisation, professional('60'), { id: 'dim', profile: 'all-records' }).read).toBeUndefined();
  });
});

describe('sensitive records', () => {
  it('withholds a PSY-labelled note from a physician who is not a psychiatrist, naming the rule', () => {
    const m = minimisationFor(minimisation, professional('10'), careTeam);
    expect(withheldBy(minimisation, psyNote, m)).toBe('sensitivity.psychiatry');
  });

  it('shows it to a psychiatrist, recognised by her PractitionerRole specialty, and to the DIM', () => {
    const psychiatrist = practitioner({ roleCodes: ['https://chu-demo.example/fhir/CodeSystem/specialty|psychiatry'] });
    expect(withheldBy(minimisation, psyNote, minimisationFor(minimisation, psychiatrist, careTeam))).toBeUndefined();
    expect(withheldBy(minimisation, psyNote, minimisationFor(minimisation, professional('10'), { id: 'dim', profile: 'all-records' }))).toBeUndefined();
  });
});

describe('a minimisation section with a mistake', () => {
  const broken = (yaml: string) => {
    try {
      parsePolicy(TEXT.replace(/\nminimisation:[\s\S]*$/, `\n${yaml}`), 'policy.yaml');
    } catch (err) {
      return (err as ConfigError).message;
    }
    throw new Error('the policy loaded');
  };

  it('names the row and the category that does not exist', () => {
    const msg = broken('minimisation:\n  categories: { notes: { resourceTypes: [DocumentReference] } }\n  professions:\n    - { id: nurse, match: { professionCodes: ["60"] }, read: [nots] }\n');
    expect(msg).toContain('minimisation.professions[0].read[0]');
    expect(msg).toContain('"nots" is not a category');
  });

  it('refuses a category that matches nothing and a label that is not system|code', () => {
    expect(broken('minimisation:\n  categories: { empty: {} }\n')).toContain('minimisation.categories.empty');
    expect(broken('minimisation:\n  sensitivity: [{ name: psy, label: PSY, visibleTo: { roles: [dim] } }]\n')).toContain('minimisation.sensitivity[0].label: a coding written system|code');
  });
});
