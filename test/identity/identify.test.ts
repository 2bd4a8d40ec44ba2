import { Writable } from 'node:stream';
import { pino } from 'pino';
import { beforeAll, describe, expect, it } from 'vitest';
import { ProxyError } from '../../src/http/errors.js';
import { identityConfigSchema, type IdentityConfigInput } from '../../src/identity/config.js';
import { createIdentifier, type IdentifyInput, type Identifier } from '../../src/identity/identify.js';
import type { Principal } from '../../src/identity/principal.js';
import { createTestPki, nginxEscaped, xfccElement, type TestPki } from '../helpers/pki.js';
import { createTestIssuer, keycloakClaims, pscClaims, type TestIssuer } from '../helpers/tokens.js';
import { fakeFhir, IDNATPS, practitioner, practitionerRole, type FakeFhir } from './fake-fhir.js';

const STAFF = 'https://chu-demo.example/fhir/staff-id';
const PSC_ISS = 'https://auth.bas.psc.esante.gouv.fr/auth/realms/esante-wallet';

function input(over: Partial<IdentifyInput> & { token?: string; extraHeaders?: Record<string, string> } = {}): IdentifyInput {
  const headers: Record<string, string> = { host: 'caregate.test', ...over.extraHeaders };
  if (over.token !== undefined) headers.authorization = `Bearer ${over.token}`;
  const rawHeaders = Object.entries(headers).flatMap(([k, v]) => [k, v]);
  return {
    method: 'GET',
    url: '/fhir/Patient?name=x',
    headers,
    rawHeaders,
    remoteAddress: '203.0.113.7',
    ...over,
  };
}

async function refusal(p: Promise<unknown>): Promise<ProxyError> {
  const err = await p.then(
    () => undefined,
    (e: unknown) => e,
  );
  expect(err).toBeInstanceOf(ProxyError);
  return err as ProxyError;
}

describe('identify: one identity per request', () => {
  let pki: TestPki;
  let kc: TestIssuer;
  let psc: TestIssuer;
  let bound: TestIssuer;
  let fhir: FakeFhir;
  let logs: string[];
  let nginx: Identifier;
  let envoy: Identifier;

  function build(extra: Partial<IdentityConfigInput>, format: 'nginx-escaped-pem' | 'envoy-xfcc'): Identifier {
    const config = identityConfigSchema.parse({
      issuers: [
        kc.config({
          id: 'keycloak',
          claims: {
            idNatPs: 'idnat_ps',
            staffId: 'staff_id',
            staffIdSystem: STAFF,
            roles: ['realm_access.roles'],
            scope: 'scope',
          },
        }),
        psc.config({
          id: 'psc',
          acceptedAcr: ['eidas1'],
          claims: {
            idNatPs: 'preferred_username',
            professionCodes: ['SubjectRefPro.exercices[].codeProfession', 'SubjectRole'],
            roles: [],
            groups: [],
          },
        }),
        bound.config({ id: 'bound', requireCertificateBinding: true, claims: { idNatPs: 'idnat_ps' } }),
      ],
      certificates: {
        trustedCaFiles: [pki.caFile],
        crlFiles: [pki.crlFile],
        forwarded: { format, trustedProxies: ['10.0.0.0/8', '::1'] },
      },
      requireCardForRoles: ['dim'],
      ...extra,
    });
    const stream = new Writable({
      write(chunk: Buffer, _enc, cb) {
        logs.push(chunk.toString());
        cb();
      },
    });
    return createIdentifier({
      config,
      client: fhir,
      logger: pino({ level: 'debug' }, stream),
      mapRoles: (claims, ctx) => [...claims.roles, ...(ctx.kind === 'patient' ? ['patient'] : []), ...(ctx.cardPresented ? ['card'] : [])],
    });
  }

  beforeAll(async () => {
    pki = await createTestPki();
    kc = await createTestIssuer({ issuer: 'https://idp.chu.example/realms/chu' });
    psc = await createTestIssuer({ issuer: PSC_ISS, audience: 'caregate-psc', alg: 'RS256' });
    bound = await createTestIssuer({ issuer: 'https://as.chu.example' });
    fhir = fakeFhir([
      practitioner('prat-martin', [[IDNATPS, '899700000013']]),
      practitioner('prat-bernard', [[IDNATPS, '899700000021']]),
      practitioner('prat-petit', [[STAFF, 'ADM-0001']]),
      practitionerRole('r-martin', 'prat-martin', { org: 'cardio', codes: [['https://chu.example/roles', 'cardiologue']] }),
      { resourceType: 'Patient', id: 'pat-dupont' } as never,
    ]);
    logs = [];
    nginx = build({}, 'nginx-escaped-pem');
    envoy = build({}, 'envoy-xfcc');
  });

  describe('tokens', () => {
    it('identifies a Keycloak user: practitioner, roles, scopes, method jwt', async () => {
      const token = await kc.sign({
        ...keycloakClaims({ username: '899700000013', roles: ['clinician'], scope: 'openid user/*.rs' }),
        idnat_ps: '899700000013',
      });
      const p = await nginx.identify(input({ token }));
      expect(p.kind).toBe('practitioner');
      expect(p.method).toBe('jwt');
      expect(p.certificate).toBeUndefined();
      expect(p.policyRoles).toEqual(['clinician']);
      if (p.kind !== 'practitioner') throw new Error('kind');
      expect(p.practitioner).toBe('Practitioner/prat-martin');
      expect(p.organizations).toEqual(['Organization/cardio']);
      expect(p.roleCodes).toEqual(['https://chu.example/roles|cardiologue']);
      expect(p.claims.scopes?.map((s) => s.raw)).toEqual(['user/*.rs']);
    });

    it('identifies a staff member by staff id', async () => {
      const token = await kc.sign({ ...keycloakClaims({ username: 'ADM-0001', roles: ['admission'] }), staff_id: 'ADM-0001' });
      const p = await nginx.identify(input({ token }));
      expect(p).toMatchObject({ kind: 'practitioner', practitioner: 'Practitioner/prat-petit', policyRoles: ['admission'] });
    });

    it('identifies a Pro Santé Connect user with profession codes', async () => {
      const token = await psc.sign(pscClaims({ idNatPs: '899700000013', profession: '10' }));
      const p = await nginx.identify(input({ token }));
      expect(p).toMatchObject({ kind: 'practitioner', practitioner: 'Practitioner/prat-martin' });
      expect(p.claims.professionCodes).toEqual(['10']);
      expect(p.claims.issuer).toBe(PSC_ISS);
    });

    it('identifies a patient from a SMART patient token', async () => {
      const token = await kc.sign({ fhirUser: 'Patient/pat-dupont', patient: 'pat-dupont', scope: 'openid patient/*.rs' });
      const p = await nginx.identify(input({ token }));
      expect(p).toMatchObject({ kind: 'patient', patient: 'Patient/pat-dupont', policyRoles: ['patient'] });
    });

    it('refuses claims of unexpected types with ERR_CLAIM_TYPE', async () => {
      const token = await kc.sign({ idnat_ps: '899700000013', realm_access: { roles: 'clinician' } });
      expect((await refusal(nginx.identify(input({ token })))).code).toBe('ERR_CLAIM_TYPE');
    });

    it('refuses a fhirUser that is not the resolved practitioner (403)', async () => {
      const token = await kc.sign({ idnat_ps: '899700000013', fhirUser: 'Practitioner/prat-bernard' });
      const err = await refusal(nginx.identify(input({ token })));
      expect(err.code).toBe('ERR_FHIRUSER_MISMATCH');
      expect(err.status).toBe(403);
    });
  });

  describe('one credential', () => {
    it('answers 401 ERR_NO_CREDENTIAL with a Bearer challenge when nothing is presented', async () => {
      const err = await refusal(nginx.identify(input()));
      expect(err.code).toBe('ERR_NO_CREDENTIAL');
      expect(err.status).toBe(401);
      expect(err.headers['WWW-Authenticate']).toBe('Bearer realm="caregate"');
    });

    it('refuses two Authorization headers', async () => {
      const token = await kc.sign({ idnat_ps: '899700000013' });
      const i = input({ token });
      i.rawHeaders.push('Authorization', `Bearer ${token}`);
      const err = await refusal(nginx.identify(i));
      expect(err.code).toBe('ERR_TWO_CREDENTIALS');
      expect(err.status).toBe(400);
    });

    it('refuses a token in the query string, in any case and encoding', async () => {
      const token = await kc.sign({ idnat_ps: '899700000013' });
      for (const url of ['/fhir/Patient?access_token=abc', '/fhir/Patient?_count=1&ACCESS_TOKEN=abc', '/fhir/Patient?Access%5Ftoken=abc']) {
        const err = await refusal(nginx.identify(input({ token, url })));
        expect(err.code, url).toBe('ERR_TOKEN_IN_QUERY');
        expect(err.status).toBe(400);
      }
      expect((await refusal(nginx.identify(input({ url: '/fhir/Patient?access_token=abc' })))).code).toBe('ERR_TOKEN_IN_QUERY');
    });

    it('refuses a non-Bearer scheme', async () => {
      const err = await refusal(nginx.identify(input({ extraHeaders: { authorization: 'Basic dXNlcjpwYXNz' } })));
      expect(err.code).toBe('ERR_UNSUPPORTED');
      expect(err.status).toBe(400);
    });

    it('refuses two tokens in one header', async () => {
      const t = await kc.sign({ idnat_ps: '899700000013' });
      const err = await refusal(nginx.identify(input({ extraHeaders: { authorization: `Bearer ${t}, Bearer ${t}` } })));
      expect(err.code).toBe('ERR_TOKEN_INVALID');
    });

    it('refuses a token and a card of two different people (400)', async () => {
      const token = await kc.sign({ idnat_ps: '899700000021' });
      const err = await refusal(
        nginx.identify(input({ token, tls: { authorized: true, peerCertificateDer: pki.cards.clinician.der } })),
      );
      expect(err.code).toBe('ERR_TWO_CREDENTIALS');
      expect(err.status).toBe(400);
    });

    it('refuses a card with a token that names no idNatPs to compare', async () => {
      const token = await kc.sign({ staff_id: 'ADM-0001' });
      const err = await refusal(nginx.identify(input({ token, tls: { authorized: true, peerCertificateDer: pki.cards.clinician.der } })));
      expect(err.code).toBe('ERR_TWO_CREDENTIALS');
    });

    it('accepts a token and the same person’s card (jwt+cert)', async () => {
      const token = await kc.sign({ idnat_ps: '899700000013', realm_access: { roles: ['clinician'] } });
      const p = await nginx.identify(input({ token, tls: { authorized: true, peerCertificateDer: pki.cards.clinician.der } }));
      expect(p.method).toBe('jwt+cert');
      expect(p.policyRoles).toEqual(['clinician', 'card']);
      expect(p.certificate?.idNatPs).toBe('899700000013');
      expect(p.claims.professionCodes).toEqual(['10']);
    });
  });

  describe('cards', () => {
    it('takes a card alone as an identity (issuer = CA DN, subject = CN)', async () => {
      const p = await nginx.identify(input({ tls: { authorized: true, peerCertificateDer: pki.cards.clinician.der } }));
      expect(p).toMatchObject({ kind: 'practitioner', method: 'mtls', practitioner: 'Practitioner/prat-martin' });
      expect(p.claims.subject).toBe('899700000013');
      expect(p.claims.issuer).toContain('AC TEST CAREGATE PERSONNES');
      expect(p.claims.scopes).toBeUndefined();
      expect(p.claims.displayName).toBe('CLAIRE MARTIN');
    });

    it('refuses a native card OpenSSL did not verify, with the reason', async () => {
      const err = await refusal(
        nginx.identify(input({ tls: { authorized: false, authorizationError: 'CERT_REVOKED', peerCertificateDer: pki.cards.revoked.der } })),
      );
      expect(err.code).toBe('ERR_CERT_INVALID');
      expect(err.message).toMatch(/revoked/);
    });
  });

  describe('forwarded certificate header (header spoofing)', () => {
    it('accepts the nginx header from a trusted proxy address and verifies it', async () => {
      const header = { 'ssl-client-cert': nginxEscaped(pki.cards.clinician.pem) };
      for (const remoteAddress of ['10.1.2.3', '::ffff:10.1.2.3', '::1']) {
        const p = await nginx.identify(input({ remoteAddress, extraHeaders: header }));
        expect(p).toMatchObject({ method: 'forwarded-cert', practitioner: 'Practitioner/prat-martin' });
        expect(p.certificate?.source).toBe('header');
      }
    });

    it('ignores the header from an untrusted address (the client cannot claim a card)', async () => {
      const header = { 'ssl-client-cert': nginxEscaped(pki.cards.clinician.pem) };
      const before = logs.length;
      const err = await refusal(nginx.identify(input({ remoteAddress: '203.0.113.7', extraHeaders: header })));
      expect(err.code).toBe('ERR_NO_CREDENTIAL');
      expect(logs.slice(before).join('')).toMatch(/ignored: not from a trusted proxy/);
      const token = await kc.sign({ staff_id: 'ADM-0001' });
      const p = await nginx.identify(input({ token, remoteAddress: '192.0.2.1', extraHeaders: header }));
      expect(p.method).toBe('jwt');
      expect(p.certificate).toBeUndefined();
    });

    it('verifies a forwarded certificate like a native one: revoked, expired, untrusted refused', async () => {
      for (const [card, reason] of [
        [pki.cards.revoked, /revoked/],
        [pki.cards.expired, /expired/],
        [pki.cards.untrusted, /trusted CA/],
      ] as const) {
        const err = await refusal(nginx.identify(input({ remoteAddress: '10.0.0.5', extraHeaders: { 'ssl-client-cert': nginxEscaped(card.pem) } })));
        expect(err.code).toBe('ERR_CERT_INVALID');
        expect(err.message).toMatch(reason);
      }
    });

    it('refuses a duplicated nginx certificate header', async () => {
      const i = input({ remoteAddress: '10.0.0.5', extraHeaders: { 'ssl-client-cert': nginxEscaped(pki.cards.clinician.pem) } });
      i.rawHeaders.push('ssl-client-cert', nginxEscaped(pki.cards.nurse.pem));
      expect((await refusal(nginx.identify(i))).code).toBe('ERR_TWO_CREDENTIALS');
    });

    it('ignores a TLS peer certificate on a connection from the trusted proxy (it is the proxy’s)', async () => {
      const err = await refusal(nginx.identify(input({ remoteAddress: '10.0.0.5', tls: { authorized: true, peerCertificateDer: pki.cards.clinician.der } })));
      expect(err.code).toBe('ERR_NO_CREDENTIAL');
    });

    it('reads the last element of an Envoy XFCC header from a trusted proxy', async () => {
      const value = `${xfccElement(pki.cards.untrusted.pem, pki.cards.untrusted.der)},${xfccElement(pki.cards.clinician.pem, pki.cards.clinician.der)}`;
      const p = await envoy.identify(input({ remoteAddress: '10.9.9.9', extraHeaders: { 'x-forwarded-client-cert': value } }));
      expect(p).toMatchObject({ method: 'forwarded-cert', practitioner: 'Practitioner/prat-martin' });
    });

    it('ignores an XFCC header sent by the client itself', async () => {
      const value = xfccElement(pki.cards.clinician.pem, pki.cards.clinician.der);
      expect((await refusal(envoy.identify(input({ remoteAddress: '198.51.100.3', extraHeaders: { 'x-forwarded-client-cert': value } })))).code).toBe(
        'ERR_NO_CREDENTIAL',
      );
    });
  });

  describe('RFC 8705 certificate-bound tokens', () => {
    it('accepts a bound token with the matching certificate', async () => {
      const token = await bound.sign({ idnat_ps: '899700000013', cnf: { 'x5t#S256': pki.cards.clinician.thumbprint } });
      const p = await nginx.identify(input({ token, tls: { authorized: true, peerCertificateDer: pki.cards.clinician.der } }));
      expect(p.method).toBe('jwt+cert');
    });

    it('accepts a bound token riding on a client certificate of someone else (the binding is the proof)', async () => {
      const token = await bound.sign({ idnat_ps: '899700000013', cnf: { 'x5t#S256': pki.cards.nurse.thumbprint } });
      const p = await nginx.identify(input({ token, tls: { authorized: true, peerCertificateDer: pki.cards.nurse.der } }));
      expect(p).toMatchObject({ practitioner: 'Practitioner/prat-martin', method: 'jwt+cert' });
    });

    it('refuses a bound token with another certificate', async () => {
      const token = await bound.sign({ idnat_ps: '899700000013', cnf: { 'x5t#S256': pki.cards.clinician.thumbprint } });
      const err = await refusal(nginx.identify(input({ token, tls: { authorized: true, peerCertificateDer: pki.cards.nurse.der } })));
      expect(err.code).toBe('ERR_CERT_BINDING');
      expect(err.status).toBe(401);
      expect(err.headers['WWW-Authenticate']).toMatch(/invalid_token/);
    });

    it('refuses a bound token without any certificate', async () => {
      const token = await bound.sign({ idnat_ps: '899700000013', cnf: { 'x5t#S256': pki.cards.clinician.thumbprint } });
      expect((await refusal(nginx.identify(input({ token })))).code).toBe('ERR_CERT_BINDING');
    });

    it('refuses an unbound token from an issuer that requires binding', async () => {
      const token = await bound.sign({ idnat_ps: '899700000013' });
      const err = await refusal(nginx.identify(input({ token, tls: { authorized: true, peerCertificateDer: pki.cards.clinician.der } })));
      expect(err.code).toBe('ERR_CERT_BINDING');
    });

    it('binds to a forwarded certificate too', async () => {
      const token = await kc.sign({ idnat_ps: '899700000013', cnf: { 'x5t#S256': pki.cards.clinician.thumbprint } });
      const p = await nginx.identify(
        input({ token, remoteAddress: '10.0.0.5', extraHeaders: { 'ssl-client-cert': nginxEscaped(pki.cards.clinician.pem) } }),
      );
      expect(p.method).toBe('jwt+cert');
    });
  });

  describe('requireCardForRoles', () => {
    it('refuses a listed role without the holder’s card (403)', async () => {
      const token = await kc.sign({ idnat_ps: '899700000013', realm_access: { roles: ['dim'] } });
      const err = await refusal(nginx.identify(input({ token })));
      expect(err.code).toBe('ERR_CARD_REQUIRED');
      expect(err.status).toBe(403);
    });

    it('accepts the listed role with the holder’s own card', async () => {
      const token = await kc.sign({ idnat_ps: '899700000013', realm_access: { roles: ['dim'] } });
      const p: Principal = await nginx.identify(input({ token, tls: { authorized: true, peerCertificateDer: pki.cards.clinician.der } }));
      expect(p.policyRoles).toEqual(['dim', 'card']);
    });
  });

  it('logs no token, identifier or name', async () => {
    const token = await kc.sign({ idnat_ps: '899700000013', name: 'Claire Martin' });
    await nginx.identify(input({ token }));
    await nginx.identify(input({ remoteAddress: '203.0.113.9', extraHeaders: { 'ssl-client-cert': nginxEscaped(pki.cards.clinician.pem) } })).catch(() => undefined);
    const all = logs.join('');
    expect(all.length).toBeGreaterThan(0);
    expect(all).not.toContain(token.slice(0, 20));
    expect(all).not.toContain('899700000013');
    expect(all).not.toMatch(/Martin|MARTIN/);
  });
});
