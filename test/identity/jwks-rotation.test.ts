import { afterEach, describe, expect, it } from 'vitest';
import { ProxyError } from '../../src/http/errors.js';
import { issuerSchema } from '../../src/identity/config.js';
import { createTokenVerifier } from '../../src/identity/jwt.js';
import { createTestIssuer, startJwksServer, type JwksServer } from '../helpers/tokens.js';

describe('remote JWKS (real HTTP server on 127.0.0.1)', () => {
  let server: JwksServer | undefined;
  afterEach(async () => {
    await server?.close();
    server = undefined;
  });

  async function setup(cooldownMs: number) {
    const issuer = 'https://idp.rotation.example';
    const oldKey = await createTestIssuer({ issuer, kid: 'k-old' });
    const newKey = await createTestIssuer({ issuer, kid: 'k-new' });
    server = await startJwksServer(oldKey.jwks);
    const verifier = createTokenVerifier(
      [
        issuerSchema.parse({
          id: 'rot',
          issuer,
          audience: 'caregate',
          algorithms: ['ES256'],
          jwksUri: server.url,
          jwks: { timeoutMs: 2000, cooldownMs, cacheMaxAgeMs: 600_000 },
        }),
      ],
      { realm: 'caregate' },
    );
    return { oldKey, newKey, verifier, server };
  }

  it('fetches the new kid after a key rotation', async () => {
    const { oldKey, newKey, verifier, server } = await setup(0);
    await verifier.verify(await oldKey.sign());
    expect(server.requests).toBe(1);
    await verifier.verify(await oldKey.sign());
    expect(server.requests).toBe(1); // cached

    server.setJwks({ keys: [oldKey.publicJwk, newKey.publicJwk] });
    const v = await verifier.verify(await newKey.sign({ sub: 'after-rotation' }));
    expect(v.payload.sub).toBe('after-rotation');
    expect(server.requests).toBe(2);
  });

  it('respects the cooldown: forged kids do not trigger a refetch each', async () => {
    const { oldKey, newKey, verifier, server } = await setup(60_000);
    await verifier.verify(await oldKey.sign());
    expect(server.requests).toBe(1);
    server.setJwks({ keys: [oldKey.publicJwk, newKey.publicJwk] });
    for (let i = 0; i < 3; i++) {
      await expect(verifier.verify(await newKey.sign())).rejects.toMatchObject({ code: 'ERR_TOKEN_INVALID' });
    }
    expect(server.requests).toBe(1);
  });

  it('answers 503 ERR_LOOKUP_FAILED when the JWKS endpoint is down', async () => {
    const { oldKey, verifier, server } = await setup(0);
    await server.close();
    const err = await verifier.verify(await oldKey.sign()).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(ProxyError);
    expect((err as ProxyError).code).toBe('ERR_LOOKUP_FAILED');
    expect((err as ProxyError).status).toBe(503);
  });
});
