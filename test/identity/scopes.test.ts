import { describe, expect, it } from 'vitest';
import { matchingScopes, parseSmartScope, parseSmartScopes, scopeAllows, ScopeSyntaxError } from '../../src/identity/scopes.js';

describe('SMART scopes', () => {
  it('parses a v2 scope with its permissions', () => {
    const s = parseSmartScope('user/Observation.rs')!;
    expect(s.context).toBe('user');
    expect(s.resourceType).toBe('Observation');
    expect([...s.permissions]).toEqual(['r', 's']);
    expect(s.params).toEqual([]);
  });

  it('maps v1 suffixes: read = rs, write = cud, * = cruds', () => {
    expect([...parseSmartScope('patient/*.read')!.permissions]).toEqual(['r', 's']);
    expect([...parseSmartScope('user/Patient.write')!.permissions]).toEqual(['c', 'u', 'd']);
    expect([...parseSmartScope('system/*.*')!.permissions]).toEqual(['c', 'r', 'u', 'd', 's']);
  });

  it('keeps restriction parameters as decoded pairs', () => {
    const s = parseSmartScope(
      'patient/Observation.rs?category=http://terminology.hl7.org/CodeSystem/observation-category|laboratory&status=final',
    )!;
    expect(s.params).toEqual([
      ['category', 'http://terminology.hl7.org/CodeSystem/observation-category|laboratory'],
      ['status', 'final'],
    ]);
  });

  it('refuses out-of-order, repeated or unknown permission letters', () => {
    for (const bad of ['user/Observation.sr', 'user/Observation.rr', 'user/Observation.rx', 'user/Observation.', 'user/Observation.dc']) {
      expect(() => parseSmartScope(bad), bad).toThrow(ScopeSyntaxError);
    }
  });

  it('refuses malformed types and restrictions', () => {
    for (const bad of ['user/observation.rs', 'user/.rs', 'patient/Observation.rs?', 'patient/Observation.rs?category', 'user/Observation.read?x=1', 'patient/Obs%.rs']) {
      expect(() => parseSmartScope(bad), bad).toThrow(ScopeSyntaxError);
    }
  });

  it('ignores scopes that are not FHIR resource scopes', () => {
    const list = parseSmartScopes('openid fhirUser launch/patient offline_access scope_all profile patient/*.rs');
    expect(list.map((s) => s.raw)).toEqual(['patient/*.rs']);
  });

  it('accepts the array form of a scope claim', () => {
    expect(parseSmartScopes(['openid', 'user/Patient.r user/Observation.s']).map((s) => s.raw)).toEqual(['user/Patient.r', 'user/Observation.s']);
  });

  it('scopeAllows: no scopes means no ceiling from the token', () => {
    expect(scopeAllows(undefined, 'user', 'Observation', 'd')).toBe(true);
  });

  it('scopeAllows: an empty list allows nothing', () => {
    expect(scopeAllows([], 'user', 'Observation', 'r')).toBe(false);
  });

  it('scopeAllows matches context, type (or *) and permission', () => {
    const scopes = parseSmartScopes('user/Observation.rs patient/*.r');
    expect(scopeAllows(scopes, 'user', 'Observation', 's')).toBe(true);
    expect(scopeAllows(scopes, 'user', 'Observation', 'c')).toBe(false);
    expect(scopeAllows(scopes, 'user', 'Patient', 'r')).toBe(false);
    expect(scopeAllows(scopes, 'patient', 'Condition', 'r')).toBe(true);
    expect(scopeAllows(scopes, ['user', 'patient'], 'Condition', 'r')).toBe(true);
  });

  it('restricted scopes do not allow unrestricted access but are returned by matchingScopes', () => {
    const scopes = parseSmartScopes('patient/Observation.rs?category=laboratory');
    expect(scopeAllows(scopes, 'patient', 'Observation', 'r')).toBe(false);
    expect(matchingScopes(scopes, 'patient', 'Observation', 'r')).toHaveLength(1);
  });
});
