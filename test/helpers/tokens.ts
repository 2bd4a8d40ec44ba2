import { createHmac, createPrivateKey, sign as nodeSign, type KeyObject } from 'node:crypto';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { exportJWK, exportPKCS8, exportSPKI, generateKeyPair, SignJWT, type JWK, type JWTPayload } from 'jose';
import type { IssuerConfigInput } from '../../src/identity/config.js';

/**
 * Token helpers for tests: a throw-away issuer (keys generated per test run), forged tokens for
 * the attack tests (alg none, HS/RS confusion, key-bearing headers), and a real JWKS HTTP server.
 */

export type TestAlg = 'ES256' | 'RS256' | 'PS256';

export interface TestIssuer {
  issuer: string;
  audience: string;
  alg: TestAlg;
  kid: string;
  privateKey: KeyObject;
  publicJwk: JWK;
  /** PEM of the public key (what an attacker can download). */
  publicPem: string;
  jwks: { keys: JWK[] };
  /** Signs `claims` (defaults: iss, aud, sub, iat now, exp now+300s), header extras merged in. */
  sign(claims?: JWTPayload, opts?: { header?: Record<string, unknown>; now?: number; omit?: string[] }): Promise<string>;
  /** An `identity.issuers[]` entry with a JWKS file written to a temp dir. */
  config(overrides?: Partial<IssuerConfigInput>): IssuerConfigInput;
}

let counter = 0;

export async function createTestIssuer(
  opts: { issuer?: string; audience?: string; alg?: TestAlg; kid?: string } = {},
): Promise<TestIssuer> {
  const alg = opts.alg ?? 'ES256';
  const { privateKey, publicKey } = await generateKeyPair(alg, { extractable: true });
  const kid = opts.kid ?? `test-key-${++counter}`;
  const publicJwk = { ...(await exportJWK(publicKey)), kid, alg, use: 'sig' };
  const pkcs8 = await exportPKCS8(privateKey);
  const issuer = opts.issuer ?? 'https://idp.test.example/realms/test';
  const audience = opts.audience ?? 'caregate';
  const self: TestIssuer = {
    issuer,
    audience,
    alg,
    kid,
    privateKey: createPrivateKey(pkcs8),
    publicJwk,
    publicPem: await exportSPKI(publicKey),
    jwks: { keys: [publicJwk] },
    async sign(claims = {}, o = {}) {
      const now = Math.floor((o.now ?? Date.now()) / 1000);
      const payload: JWTPayload = { iss: issuer, aud: audience, sub: 'user-1', iat: now, exp: now + 300, ...claims };
      for (const k of o.omit ?? []) delete payload[k];
      return new SignJWT(payload).setProtectedHeader({ alg, kid, typ: 'JWT', ...o.header }).sign(privateKey);
    },
    config(overrides = {}) {
      return {
        id: 'test',
        issuer,
        audience,
        algorithms: [alg],
        jwksFile: writeJwksFile(self.jwks),
        ...overrides,
      };
    },
  };
  return self;
}

/** Writes a JWKS to a fresh temp file and returns its path. */
export function writeJwksFile(jwks: { keys: JWK[] }): string {
  const dir = mkdtempSync(join(tmpdir(), 'caregate-jwks-'));
  const file = join(dir, 'jwks.json');
  writeFileSync(file, JSON.stringify(jwks));
  return file;
}

function b64(v: unknown): string {
  return Buffer.from(JSON.stringify(v)).toString('base64url');
}

/** A token with `alg: none` and an empty signature. */
export function unsignedToken(payload: JWTPayload, header: Record<string, unknown> = {}): string {
  return `${b64({ alg: 'none', typ: 'JWT', ...header })}.${b64(payload)}.`;
}

/** An HS256 token MACed with arbitrary key bytes (e.g. the issuer's public key PEM: HS/RS confusion). */
export function hmacToken(key: string | Buffer, payload: JWTPayload, header: Record<string, unknown> = {}): string {
  const input = `${b64({ alg: 'HS256', typ: 'JWT', ...header })}.${b64(payload)}`;
  return `${input}.${createHmac('sha256', key).update(input).digest('base64url')}`;
}

/** An ES256 token signed by any key with any header: what an attacker can produce. */
export function forgeEs256(privateKey: KeyObject, payload: JWTPayload, header: Record<string, unknown> = {}): string {
  const input = `${b64({ alg: 'ES256', typ: 'JWT', ...header })}.${b64(payload)}`;
  return `${input}.${nodeSign('sha256', Buffer.from(input), { key: privateKey, dsaEncoding: 'ieee-p1363' }).toString('base64url')}`;
}

/** Standard claims for `issuer`, valid now. */
export function baseClaims(issuer: Pick<TestIssuer, 'issuer' | 'audience'>, extra: JWTPayload = {}, nowMs = Date.now()): JWTPayload {
  const now = Math.floor(nowMs / 1000);
  return { iss: issuer.issuer, aud: issuer.audience, sub: 'user-1', iat: now, exp: now + 300, ...extra };
}

/** A Pro Santé Connect–shaped payload (claims as in the ANS fixtures; values synthetic). */
export function pscClaims(p: { idNatPs: string; profession: string; given?: string; family?: string }): JWTPayload {
  return {
    sub: `f:550dc1c8-d97b-4b1e-ac8c-8eb4471cf9dd:${p.idNatPs}`,
    acr: 'eidas1',
    preferred_username: p.idNatPs,
    SubjectNameID: p.idNatPs,
    given_name: p.given ?? 'Claire',
    family_name: p.family ?? 'Martin',
    SubjectRole: [`${p.profession}^1.2.250.1.213.1.1.5.5`],
    Secteur_Activite: 'SA07^1.2.250.1.71.4.2.4',
    SubjectRefPro: {
      exercices: [
        {
          codeProfession: p.profession,
          codeCategorieProfessionnelle: 'C',
          nomDexercice: p.family ?? 'Martin',
          prenomDexercice: p.given ?? 'Claire',
          activities: [{ codeModeExercice: 'S', codeSecteurDactivite: 'SA01', numeroFinessSite: '990000001' }],
        },
      ],
    },
  };
}

/** A Keycloak-shaped payload. */
export function keycloakClaims(p: { username: string; roles: string[]; groups?: string[]; fhirUser?: string; scope?: string }): JWTPayload {
  return {
    sub: '0b6a4d8e-3f2c-4c1e-9a4b-0d2f5e6a7b8c',
    typ: 'Bearer',
    azp: 'ehr-client',
    preferred_username: p.username,
    name: 'Claire Martin',
    realm_access: { roles: p.roles },
    resource_access: { account: { roles: ['manage-account'] } },
    ...(p.groups ? { groups: p.groups } : {}),
    ...(p.fhirUser ? { fhirUser: p.fhirUser } : {}),
    scope: p.scope ?? 'openid profile email',
  };
}

export interface JwksServer {
  /** `http://127.0.0.1:<port>/certs` */
  url: string;
  /** Requests served so far. */
  readonly requests: number;
  setJwks(jwks: { keys: JWK[] }): void;
  close(): Promise<void>;
}

/** A real JWKS endpoint on 127.0.0.1 (port 0), counting fetches. */
export async function startJwksServer(initial: { keys: JWK[] }): Promise<JwksServer> {
  let jwks = initial;
  let requests = 0;
  const server: Server = createServer((req, res) => {
    requests++;
    if (req.url !== '/certs') {
      res.writeHead(404).end();
      return;
    }
    res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify(jwks));
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as AddressInfo;
  return {
    url: `http://127.0.0.1:${port}/certs`,
    get requests() {
      return requests;
    },
    setJwks(next) {
      jwks = next;
    },
    close: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}
