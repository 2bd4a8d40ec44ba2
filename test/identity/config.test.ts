import { describe, expect, it } from 'vitest';
import { forwardedHeaderName, identityConfigSchema, issuerSchema } from '../../src/identity/config.js';

const base = { id: 'kc', issuer: 'https://kc.example/realms/chu', audience: 'caregate', jwksUri: 'https://kc.example/realms/chu/protocol/openid-connect/certs' };

function issues(input: unknown, schema: { safeParse(v: unknown): { success: boolean; error?: { issues: Array<{ path: PropertyKey[]; message: string }> } } } = issuerSchema) {
  const r = schema.safeParse(input);
  return r.success ? [] : r.error!.issues.map((i) => `${i.path.join('.')}: ${i.message}`);
}

describe('identity config', () => {
  it('applies defaults: asymmetric algorithms, JWKS timings, skew, claim paths', () => {
    const iss = issuerSchema.parse(base);
    expect(iss.algorithms).toEqual(['RS256', 'ES256', 'PS256']);
    expect(iss.jwks).toEqual({ timeoutMs: 5000, cooldownMs: 30000, cacheMaxAgeMs: 600000 });
    expect(iss.clockSkewSeconds).toBe(60);
    expect(iss.claims.userId).toBe('sub');
    expect(iss.claims.clientId).toEqual(['azp', 'client_id']);
    expect(iss.requireCertificateBinding).toBe(false);
    const cfg = identityConfigSchema.parse({ issuers: [base] });
    expect(cfg.principalCacheTtlSeconds).toBe(60);
    expect(cfg.practitionerIdentifierSystems).toEqual(['urn:oid:1.2.250.1.71.4.2.1', 'https://rpps.esante.gouv.fr']);
  });

  it('refuses alg none with a message that says why', () => {
    expect(issues({ ...base, algorithms: ['none'] }).join()).toMatch(/algorithms\.0: "none" is never accepted/);
  });

  it('refuses HS256 without a secret, and with a JWKS', () => {
    expect(issues({ ...base, algorithms: ['HS256'] }).join()).toMatch(/HS\* algorithms need exactly one of hmacSecret/);
    expect(issues({ ...base, algorithms: ['HS256'], hmacSecret: 'x'.repeat(32) }).join()).toMatch(/HS\* issuers take no JWKS/);
    const noJwks = { ...base, jwksUri: undefined };
    expect(issues({ ...noJwks, algorithms: ['HS256'], hmacSecretEnv: 'KC_SECRET' })).toEqual([]);
  });

  it('refuses mixing HS and asymmetric algorithms in one issuer', () => {
    expect(issues({ ...base, algorithms: ['HS256', 'RS256'], hmacSecret: 'x'.repeat(32) }).join()).toMatch(/do not mix/);
  });

  it('needs exactly one of jwksUri and jwksFile', () => {
    const none = { ...base, jwksUri: undefined };
    expect(issues(none).join()).toMatch(/exactly one of jwksUri or jwksFile/);
    expect(issues({ ...base, jwksFile: '/etc/jwks.json' }).join()).toMatch(/exactly one of jwksUri or jwksFile/);
  });

  it('refuses a plain-HTTP JWKS URL except on loopback', () => {
    expect(issues({ ...base, jwksUri: 'http://kc.example/certs' }).join()).toMatch(/jwksUri: an https URL/);
    expect(issues({ ...base, jwksUri: 'http://127.0.0.1:8081/certs' })).toEqual([]);
  });

  it('refuses unknown keys (typos) at their path', () => {
    expect(issues({ ...base, audiance: 'x' }).join()).toMatch(/audiance|Unrecognized/);
  });

  it('staffId needs staffIdSystem', () => {
    expect(issues({ ...base, claims: { staffId: 'staff_id' } }).join()).toMatch(/claims\.staffIdSystem: staffId and staffIdSystem go together/);
  });

  it('refuses two issuers with the same iss', () => {
    const r = issues({ issuers: [base, { ...base, id: 'other' }] }, identityConfigSchema);
    expect(r.join()).toMatch(/issuers\.1\.issuer: issuer .* is configured twice/);
  });

  it('validates trusted proxy addresses and CIDR blocks', () => {
    const certificates = (trustedProxies: string[]) => ({
      trustedCaFiles: ['/ca.pem'],
      forwarded: { format: 'nginx-escaped-pem', trustedProxies },
    });
    expect(issues({ certificates: certificates(['10.0.0.0/8', '::1', 'fd00::/8', '192.168.1.10']) }, identityConfigSchema)).toEqual([]);
    expect(issues({ certificates: certificates(['10.0.0.0/33']) }, identityConfigSchema).join()).toMatch(/trustedProxies\.0/);
    expect(issues({ certificates: certificates(['proxy.local']) }, identityConfigSchema).join()).toMatch(/trustedProxies\.0/);
  });

  it('defaults the forwarded header name by format', () => {
    expect(forwardedHeaderName({ format: 'nginx-escaped-pem', trustedProxies: ['::1'] })).toBe('ssl-client-cert');
    expect(forwardedHeaderName({ format: 'envoy-xfcc', trustedProxies: ['::1'] })).toBe('x-forwarded-client-cert');
    expect(forwardedHeaderName({ format: 'envoy-xfcc', header: 'x-client-cert', trustedProxies: ['::1'] })).toBe('x-client-cert');
  });

  it('needs at least an issuer or certificates', () => {
    expect(issues({}, identityConfigSchema).join()).toMatch(/at least one issuer/);
  });
});
