import { generateKeyPairSync } from 'node:crypto';
import { exportJWK, generateKeyPair, SignJWT } from 'jose';
import { beforeAll, describe, expect, it } from 'vitest';
import { ProxyError } from '../../src/http/errors.js';
import { issuerSchema, type IssuerConfig } from '../../src/identity/config.js';
import { createTokenVerifier, type TokenVerifier } from '../../src/identity/jwt.js';
import { baseClaims, createTestIssuer, forgeEs256, hmacToken, unsignedToken, type TestIssuer } from '../helpers/tokens.js';

async function refusal(p: Promise<unknown>): Promise<ProxyError> {
  try {
    await p;
  } catch (err) {
    expect(err).toBeInstanceOf(ProxyError);
    return err as ProxyError;
  }
  throw new Error('expected a refusal');
}

describe('JWT verification (token attacks)', () => {
  let es: TestIssuer;
  let rs: TestIssuer;
  let verifier: TokenVerifier;
  let esConfig: IssuerConfig;

  beforeAll(async () => {
    es = await createTestIssuer({ alg: 'ES256' });
    rs = await createTestIssuer({ alg: 'RS256', issuer: 'https://rs.test.example' });
    esConfig = issuerSchema.parse(es.config());
    verifier = createTokenVerifier([esConfig, issuerSchema.parse(rs.config({ id: 'rs' }))], { realm: 'caregate' });
  });

  it('accepts a valid token of a configured issuer', async () => {
    const v = await verifier.verify(await es.sign({ sub: 'alice' }));
    expect(v.payload.sub).toBe('alice');
    expect(v.issuer.id).toBe('test');
  });

  it('refuses a token signed with alg none', async () => {
    const err = await refusal(verifier.verify(unsignedToken(baseClaims(es))));
    expect(err.code).toBe('ERR_TOKEN_INVALID');
    expect(err.status).toBe(401);
    expect(err.message).toMatch(/alg none/);
    expect(err.headers['WWW-Authenticate']).toMatch(/^Bearer realm="caregate", error="invalid_token", error_description="Unsigned tokens/);
  });

  it('refuses alg "None" and "NONE" too', async () => {
    for (const alg of ['None', 'NONE']) {
      const err = await refusal(verifier.verify(unsignedToken(baseClaims(es), { alg })));
      expect(err.message).toMatch(/alg none/);
    }
  });

  it('refuses HS256 signed with the issuer public key (HS/RS confusion)', async () => {
    const token = hmacToken(rs.publicPem, baseClaims(rs), { kid: rs.kid });
    const err = await refusal(verifier.verify(token));
    expect(err.code).toBe('ERR_TOKEN_INVALID');
    expect(err.message).toMatch(/Algorithm HS256 is not allowed/);
  });

  it('refuses an algorithm outside the issuer list even when the key type fits', async () => {
    const { privateKey } = await generateKeyPair('ES384');
    const token = await new SignJWT(baseClaims(es)).setProtectedHeader({ alg: 'ES384', kid: es.kid }).sign(privateKey);
    expect((await refusal(verifier.verify(token))).message).toMatch(/Algorithm ES384 is not allowed/);
  });

  it('refuses a token whose jku points at attacker keys', async () => {
    const attacker = generateKeyPairSync('ec', { namedCurve: 'P-256' });
    const token = forgeEs256(attacker.privateKey, baseClaims(es), { kid: 'attacker', jku: 'https://attacker.example/jwks.json' });
    const err = await refusal(verifier.verify(token));
    expect(err.message).toMatch(/key material or a key URL \(jku\)/);
  });

  it('refuses a token whose x5u points at an attacker certificate', async () => {
    const attacker = generateKeyPairSync('ec', { namedCurve: 'P-256' });
    const token = forgeEs256(attacker.privateKey, baseClaims(es), { x5u: 'https://attacker.example/cert.pem' });
    expect((await refusal(verifier.verify(token))).message).toMatch(/\(x5u\)/);
  });

  it('refuses a token carrying its own key in an embedded jwk header', async () => {
    const attacker = generateKeyPairSync('ec', { namedCurve: 'P-256' });
    const jwk = await exportJWK(attacker.publicKey);
    const token = forgeEs256(attacker.privateKey, baseClaims(es), { jwk });
    expect((await refusal(verifier.verify(token))).message).toMatch(/\(jwk\)/);
  });

  it('refuses a token carrying an x5c chain', async () => {
    const attacker = generateKeyPairSync('ec', { namedCurve: 'P-256' });
    const token = forgeEs256(attacker.privateKey, baseClaims(es), { x5c: ['MIIB'] });
    expect((await refusal(verifier.verify(token))).message).toMatch(/\(x5c\)/);
  });

  it('refuses a token signed by another key under the issuer kid (bad signature)', async () => {
    const attacker = generateKeyPairSync('ec', { namedCurve: 'P-256' });
    const token = forgeEs256(attacker.privateKey, baseClaims(es), { kid: es.kid });
    const err = await refusal(verifier.verify(token));
    expect(err.message).toMatch(/bad signature/);
  });

  it('refuses a token with an unknown kid', async () => {
    const attacker = generateKeyPairSync('ec', { namedCurve: 'P-256' });
    const token = forgeEs256(attacker.privateKey, baseClaims(es), { kid: 'nope' });
    expect((await refusal(verifier.verify(token))).message).toMatch(/unknown kid/);
  });

  it('refuses an expired token with ERR_TOKEN_EXPIRED', async () => {
    const now = Date.now();
    const token = await es.sign({ iat: Math.floor(now / 1000) - 3600, exp: Math.floor(now / 1000) - 120 });
    const err = await refusal(verifier.verify(token));
    expect(err.code).toBe('ERR_TOKEN_EXPIRED');
    expect(err.status).toBe(401);
    expect(err.headers['WWW-Authenticate']).toContain('error_description="The token has expired."');
  });

  it('accepts a token expired by less than the clock skew', async () => {
    const now = Math.floor(Date.now() / 1000);
    await expect(verifier.verify(await es.sign({ iat: now - 600, exp: now - 30 }))).resolves.toBeDefined();
  });

  it('refuses a token without exp', async () => {
    expect((await refusal(verifier.verify(await es.sign({}, { omit: ['exp'] })))).message).toMatch(/no expiry/);
  });

  it('refuses a token whose nbf is in the future', async () => {
    const now = Math.floor(Date.now() / 1000);
    const err = await refusal(verifier.verify(await es.sign({ nbf: now + 600 })));
    expect(err.code).toBe('ERR_TOKEN_INVALID');
    expect(err.message).toMatch(/not yet valid/);
  });

  it('refuses a token whose iat is far in the future', async () => {
    const now = Math.floor(Date.now() / 1000);
    const err = await refusal(verifier.verify(await es.sign({ iat: now + 3600, exp: now + 7200 })));
    expect(err.message).toMatch(/issued in the future/);
  });

  it('refuses a token of an unknown issuer', async () => {
    const err = await refusal(verifier.verify(await es.sign({ iss: 'https://evil.example' })));
    expect(err.message).toMatch(/unknown issuer/);
  });

  it('refuses a token signed by one trusted issuer that claims another (keys follow iss)', async () => {
    // Signed with the ES issuer's key but claiming the RS issuer: the RS keys are used and fail.
    const token = await es.sign({ iss: rs.issuer });
    const err = await refusal(verifier.verify(token));
    expect(err.code).toBe('ERR_TOKEN_INVALID');
    expect(err.message).toMatch(/not allowed|signature|kid/);
  });

  it('refuses a token with the wrong audience', async () => {
    const err = await refusal(verifier.verify(await es.sign({ aud: 'another-api' })));
    expect(err.message).toMatch(/wrong audience/);
  });

  it('accepts an audience list that includes ours', async () => {
    await expect(verifier.verify(await es.sign({ aud: ['account', 'caregate'] }))).resolves.toBeDefined();
  });

  it('refuses malformed and encrypted tokens without echoing them', async () => {
    const err = await refusal(verifier.verify('not.a-token'));
    expect(err.message).toMatch(/malformed/);
    expect((await refusal(verifier.verify('a.b.c.d.e'))).message).toMatch(/JWE/);
    const secretish = 'eyJhbGciOiJFUzI1NiJ9.eyJzdWIiOiJ4In0.c2VjcmV0LXNpZ25hdHVyZQ';
    const e2 = await refusal(verifier.verify(secretish));
    expect(e2.message).not.toContain(secretish);
    expect(e2.headers['WWW-Authenticate']).not.toContain('c2VjcmV0');
  });

  it('refuses claims of unexpected types in registered claims (aud as number)', async () => {
    const err = await refusal(verifier.verify(await es.sign({ aud: 42 as unknown as string })));
    expect(err.status).toBe(401);
  });

  it('checks acr when the issuer requires it (PSC eidas1)', async () => {
    const strict = createTokenVerifier([issuerSchema.parse(es.config({ acceptedAcr: ['eidas1'] }))], { realm: 'caregate' });
    await expect(strict.verify(await es.sign({ acr: 'eidas1' }))).resolves.toBeDefined();
    expect((await refusal(strict.verify(await es.sign({ acr: '0' })))).message).toMatch(/acr/);
  });

  it('accepts HS256 only with the configured secret', async () => {
    const secret = 's'.repeat(40);
    const hs = createTokenVerifier(
      [issuerSchema.parse({ id: 'hs', issuer: 'https://hs.example', audience: 'caregate', algorithms: ['HS256'], hmacSecretEnv: 'HS_SECRET' })],
      { realm: 'caregate', env: { HS_SECRET: secret } },
    );
    const claims = baseClaims({ issuer: 'https://hs.example', audience: 'caregate' });
    await expect(hs.verify(hmacToken(secret, claims))).resolves.toBeDefined();
    expect((await refusal(hs.verify(hmacToken('t'.repeat(40), claims)))).message).toMatch(/bad signature/);
  });

  it('escapes quotes in the WWW-Authenticate description', async () => {
    const { bearerChallenge } = await import('../../src/identity/challenge.js');
    expect(bearerChallenge('caregate', 'invalid_token', 'say "hi" \\ bye')).toBe(
      'Bearer realm="caregate", error="invalid_token", error_description="say \\"hi\\" \\\\ bye"',
    );
  });
});

describe('verified-token cache', () => {
  it('serves a token verified moments ago from the cache, and still refuses it once expired', async () => {
    const es = await createTestIssuer({ alg: 'ES256' });
    let clock = Date.now();
    const v = createTokenVerifier([issuerSchema.parse(es.config())], { realm: 'caregate', now: () => clock });
    const token = await es.sign({ sub: 'alice', exp: Math.floor(clock / 1000) + 120 });
    expect((await v.verify(token)).payload.sub).toBe('alice');
    expect((await v.verify(token)).payload.sub).toBe('alice');
    clock += 10 * 60 * 1000;
    const err = await refusal(v.verify(token));
    expect(err.code).toBe('ERR_TOKEN_EXPIRED');
  });
});
