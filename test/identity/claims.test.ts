import { describe, expect, it } from 'vitest';
import { ProxyError } from '../../src/http/errors.js';
import { mapClaims, normaliseFhirUser } from '../../src/identity/claims.js';
import { claimMappingSchema, type ClaimMapping } from '../../src/identity/config.js';
import { keycloakClaims, pscClaims } from '../helpers/tokens.js';

const ISS = 'https://auth.esw.esante.gouv.fr/auth/realms/esante-wallet';
const psc: ClaimMapping = claimMappingSchema.parse({
  idNatPs: 'preferred_username',
  professionCodes: ['SubjectRefPro.exercices[].codeProfession', 'SubjectRole'],
  roles: [],
  groups: [],
});
const keycloak: ClaimMapping = claimMappingSchema.parse({
  idNatPs: 'idnat_ps',
  staffId: 'staff_id',
  staffIdSystem: 'https://chu.example/staff',
  roles: ['realm_access.roles', 'resource_access.caregate.roles'],
  groups: ['groups'],
  scope: 'scope',
});

function refusal(fn: () => unknown): ProxyError {
  try {
    fn();
  } catch (err) {
    expect(err).toBeInstanceOf(ProxyError);
    return err as ProxyError;
  }
  throw new Error('expected a refusal');
}

describe('claim mapping', () => {
  it('maps a Pro Santé Connect token: idNatPs, TRE-G15 codes from SubjectRefPro and SubjectRole', () => {
    const { claims, staffId } = mapClaims({ iss: ISS, ...pscClaims({ idNatPs: '899700000013', profession: '10' }) }, psc, 'caregate');
    expect(claims.issuer).toBe(ISS);
    expect(claims.subject).toMatch(/^f:/);
    expect(claims.idNatPs).toBe('899700000013');
    expect(claims.professionCodes).toEqual(['10']);
    expect(claims.displayName).toBe('Claire Martin');
    expect(claims.scopes).toBeUndefined();
    expect(staffId).toBeUndefined();
  });

  it('maps SubjectNameID as the idNatPs when configured so', () => {
    const m = claimMappingSchema.parse({ idNatPs: 'SubjectNameID' });
    const { claims } = mapClaims({ iss: ISS, ...pscClaims({ idNatPs: '810003461033', profession: '21' }) }, m, 'caregate');
    expect(claims.idNatPs).toBe('810003461033');
  });

  it('maps a Keycloak token: realm and client roles, groups, staff id, scopes, client id', () => {
    const payload = {
      iss: 'https://kc.example/realms/chu',
      ...keycloakClaims({ username: 'ADM-0001', roles: ['admission', 'offline_access'], groups: ['/admissions'], scope: 'openid user/Patient.rs' }),
      staff_id: 'ADM-0001',
      resource_access: { caregate: { roles: ['front-desk'] } },
      jti: 'j-1',
      exp: 2_000_000_000,
    };
    const { claims, staffId } = mapClaims(payload, keycloak, 'caregate');
    expect(claims.roles).toEqual(['admission', 'offline_access', 'front-desk']);
    expect(claims.groups).toEqual(['/admissions']);
    expect(claims.idNatPs).toBeUndefined();
    expect(staffId).toBe('ADM-0001');
    expect(claims.scopes?.map((s) => s.raw)).toEqual(['user/Patient.rs']);
    expect(claims.clientId).toBe('ehr-client');
    expect(claims.jti).toBe('j-1');
    expect(claims.expiresAt).toBe(2_000_000_000);
  });

  it('with a mapped scope claim, a token without FHIR scopes has an empty ceiling', () => {
    const { claims } = mapClaims({ iss: 'x', sub: 'u', scope: 'openid profile' }, keycloak, 'caregate');
    expect(claims.scopes).toEqual([]);
    const absent = mapClaims({ iss: 'x', sub: 'u' }, keycloak, 'caregate');
    expect(absent.claims.scopes).toEqual([]);
  });

  it('refuses a string where an array of roles is expected', () => {
    const err = refusal(() => mapClaims({ iss: 'x', sub: 'u', realm_access: { roles: 'admin' } }, keycloak, 'caregate'));
    expect(err.code).toBe('ERR_CLAIM_TYPE');
    expect(err.status).toBe(401);
    expect(err.message).toMatch(/"realm_access\.roles".*expected an array of strings, got string/);
    expect(err.headers['WWW-Authenticate']).toMatch(/error="invalid_token"/);
  });

  it('refuses an array holding a non-string role', () => {
    expect(refusal(() => mapClaims({ iss: 'x', sub: 'u', realm_access: { roles: ['a', { admin: true }] } }, keycloak, 'caregate')).code).toBe(
      'ERR_CLAIM_TYPE',
    );
  });

  it('refuses an object where a string is expected', () => {
    const err = refusal(() => mapClaims({ iss: 'x', sub: 'u', idnat_ps: { value: '899700000013' } }, keycloak, 'caregate'));
    expect(err.message).toMatch(/"idnat_ps".*expected a string, got object/);
  });

  it('refuses a number as subject, and an array as idNatPs', () => {
    expect(refusal(() => mapClaims({ iss: 'x', sub: 42 }, keycloak, 'caregate')).code).toBe('ERR_CLAIM_TYPE');
    expect(refusal(() => mapClaims({ iss: 'x', sub: 'u', idnat_ps: ['899700000013', '899700000021'] }, keycloak, 'caregate')).code).toBe(
      'ERR_CLAIM_TYPE',
    );
  });

  it('refuses a token without subject', () => {
    expect(refusal(() => mapClaims({ iss: 'x' }, keycloak, 'caregate')).message).toMatch(/no subject/);
  });

  it('refuses a scalar on the way of a dotted path', () => {
    expect(refusal(() => mapClaims({ iss: 'x', sub: 'u', realm_access: 'roles' }, keycloak, 'caregate')).message).toMatch(/expected an object/);
  });

  it('refuses SubjectRefPro.exercices that is not an array', () => {
    const p = { iss: ISS, ...pscClaims({ idNatPs: '899700000013', profession: '10' }), SubjectRefPro: { exercices: { codeProfession: '10' } } };
    expect(refusal(() => mapClaims(p, psc, 'caregate')).message).toMatch(/expected an array at "exercices"/);
  });

  it('does not read inherited members (constructor, __proto__)', () => {
    const m = claimMappingSchema.parse({ idNatPs: 'constructor' });
    expect(mapClaims({ iss: 'x', sub: 'u' }, m, 'caregate').claims.idNatPs).toBeUndefined();
  });

  it('refuses a malformed SMART scope rather than reading it generously', () => {
    expect(refusal(() => mapClaims({ iss: 'x', sub: 'u', scope: 'openid user/Observation.sr' }, keycloak, 'caregate')).message).toMatch(
      /malformed SMART scope/,
    );
  });

  it('normalises fhirUser and refuses other resource types', () => {
    expect(normaliseFhirUser('Practitioner/prat-martin')).toBe('Practitioner/prat-martin');
    expect(normaliseFhirUser('https://fhir.chu.example/fhir/Patient/pat-1')).toBe('Patient/pat-1');
    expect(normaliseFhirUser('https://fhir.chu.example/fhir/RelatedPerson/rp-1')).toBe('RelatedPerson/rp-1');
    expect(normaliseFhirUser('Person/p1')).toBeUndefined();
    expect(normaliseFhirUser('Organization/o1')).toBeUndefined();
    expect(normaliseFhirUser('https://fhir.chu.example/fhir/Practitioner/p1/_history/2')).toBeUndefined();
    expect(normaliseFhirUser('https://fhir.chu.example/fhir/Practitioner/p1?x=1')).toBeUndefined();
    expect(normaliseFhirUser('https://other.example/fhir/Practitioner/p1', ['https://fhir.chu.example/fhir'])).toBeUndefined();
    expect(normaliseFhirUser('https://fhir.chu.example/fhir/Practitioner/p1', ['https://fhir.chu.example/fhir/'])).toBe('Practitioner/p1');
    const err = refusal(() => mapClaims({ iss: 'x', sub: 'u', fhirUser: 'Person/p1' }, keycloak, 'caregate'));
    expect(err.code).toBe('ERR_CLAIM_TYPE');
  });

  it('refuses a patient context that is not a FHIR id', () => {
    expect(refusal(() => mapClaims({ iss: 'x', sub: 'u', patient: 'Patient/../x' }, keycloak, 'caregate')).code).toBe('ERR_CLAIM_TYPE');
  });

  it('reads an RFC 8705 binding and refuses bindings it cannot check', () => {
    const x5t = 'A'.repeat(43);
    expect(mapClaims({ iss: 'x', sub: 'u', cnf: { 'x5t#S256': x5t } }, keycloak, 'caregate').boundThumbprint).toBe(x5t);
    expect(refusal(() => mapClaims({ iss: 'x', sub: 'u', cnf: { jkt: x5t } }, keycloak, 'caregate')).code).toBe('ERR_CERT_BINDING');
    expect(refusal(() => mapClaims({ iss: 'x', sub: 'u', cnf: { 'x5t#S256': `${x5t}=` } }, keycloak, 'caregate')).code).toBe('ERR_CLAIM_TYPE');
    expect(refusal(() => mapClaims({ iss: 'x', sub: 'u', cnf: 'abc' }, keycloak, 'caregate')).code).toBe('ERR_CLAIM_TYPE');
  });
});
