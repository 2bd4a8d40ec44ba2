import { readFileSync } from 'node:fs';
import { hash } from 'node:crypto';
import { LRUCache } from 'lru-cache';
import {
  createLocalJWKSet,
  createRemoteJWKSet,
  decodeJwt,
  decodeProtectedHeader,
  errors,
  jwtVerify,
  type JWTPayload,
  type JWTVerifyGetKey,
  type JWTVerifyOptions,
  type ProtectedHeaderParameters,
} from 'jose';
import { ProxyError } from '../http/errors.js';
import type { CacheStats } from '../ops/metrics.js';
import { invalidToken } from './challenge.js';
import { isHmacAlgorithm, type IssuerConfig } from './config.js';

/**
 * Bearer JWT verification. The unverified `iss` only selects which issuer's keys and rules apply;
 * then jose verifies the signature with the algorithms pinned in config, the exact issuer, the
 * audience and the clock skew. Key URLs or keys carried in the token (`jku`, `x5u`, `jwk`, `x5c`)
 * are never used: a token that carries one is refused outright.
 */

export interface VerifiedToken {
  issuer: IssuerConfig;
  payload: JWTPayload;
  header: ProtectedHeaderParameters;
}

export interface TokenVerifier {
  /**
   * @throws ProxyError ERR_TOKEN_INVALID / ERR_TOKEN_EXPIRED (401, with a `WWW-Authenticate`
   *   challenge) for a token that cannot be accepted; ERR_LOOKUP_FAILED (503) when the issuer's
   *   keys cannot be fetched.
   */
  verify(token: string): Promise<VerifiedToken>;
  /** The verified-token cache's counters (metrics). */
  cacheStats(): CacheStats;
}

export interface TokenVerifierOptions {
  realm: string;
  /** Clock, epoch milliseconds. */
  now?: () => number;
  /** Environment for `hmacSecretEnv`. */
  env?: NodeJS.ProcessEnv;
  readFile?: (path: string) => Buffer;
}

/** Header parameters that name or carry a verification key: attacker-controlled, never trusted. */
const KEY_BEARING_HEADERS = ['jku', 'x5u', 'jwk', 'x5c'] as const;
/** Compact JWS: three base64url parts (an empty signature is let through to be refused by name). */
const COMPACT_JWS = /^[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*$/;

type Key = Uint8Array | JWTVerifyGetKey;

/** A failure of the key source itself (network, HTTP status, malformed JWKS): not the token's fault. */
class KeySourceError extends Error {
  constructor(cause: unknown) {
    super('JWKS unavailable', { cause });
    this.name = 'KeySourceError';
  }
}

function guardKeySource(getKey: JWTVerifyGetKey): JWTVerifyGetKey {
  return async (header, token) => {
    try {
      return await getKey(header, token);
    } catch (err) {
      if (err instanceof errors.JWKSNoMatchingKey || err instanceof errors.JWKSMultipleMatchingKeys) throw err;
      if (err instanceof errors.JOSENotSupported) throw err;
      throw new KeySourceError(err);
    }
  };
}

function keyFor(iss: IssuerConfig, opts: TokenVerifierOptions): Key {
  if (iss.algorithms.some(isHmacAlgorithm)) {
    const secret = iss.hmacSecret ?? (iss.hmacSecretEnv ? (opts.env ?? process.env)[iss.hmacSecretEnv] : undefined);
    if (!secret || secret.length < 32) {
      throw new TypeError(`identity.issuers[${iss.id}]: the HS secret is missing or shorter than 32 characters`);
    }
    return new TextEncoder().encode(secret);
  }
  if (iss.jwksUri) {
    return guardKeySource(
      createRemoteJWKSet(new URL(iss.jwksUri), {
        timeoutDuration: iss.jwks.timeoutMs,
        cooldownDuration: iss.jwks.cooldownMs,
        cacheMaxAge: iss.jwks.cacheMaxAgeMs,
      }),
    );
  }
  if (iss.jwksFile) {
    let jwks: unknown;
    try {
      jwks = JSON.parse((opts.readFile ?? readFileSync)(iss.jwksFile).toString('utf8'));
      return createLocalJWKSet(jwks as Parameters<typeof createLocalJWKSet>[0]);
    } catch (cause) {
      throw new TypeError(`identity.issuers[${iss.id}].jwksFile: cannot read a JWKS from ${iss.jwksFile}`, { cause });
    }
  }
  throw new TypeError(`identity.issuers[${iss.id}]: no key source`);
}

/** An algorithm name fit to appear in a message (the header is attacker-controlled). */
function algName(alg: unknown): string {
  return typeof alg === 'string' && /^[A-Za-z0-9+-]{1,16}$/.test(alg) ? alg : 'unknown';
}

/**
 * Builds the verifier for the configured issuers (keys are read or their fetchers created now).
 * @throws TypeError on a key source that cannot be set up (a configuration error).
 */
export function createTokenVerifier(issuers: readonly IssuerConfig[], opts: TokenVerifierOptions): TokenVerifier {
  const { realm } = opts;
  const now = opts.now ?? Date.now;
  const byIss = new Map(issuers.map((iss) => [iss.issuer, { iss, key: keyFor(iss, opts) }] as const));
  const fail = (message: string, detail?: string, cause?: unknown) => invalidToken(realm, message, { detail, cause });
  /**
   * Tokens whose signature was verified, keyed by the SHA-256 of the token. A signature check is
   * the costliest step of a request (≈0.4 ms for ES256); an EHR sends the same token for minutes.
   * Time claims are checked again on every use; an entry lives at most VERIFIED_TTL_MS, so a key
   * withdrawn from the issuer's JWKS stops being honoured within that delay.
   */
  const verified = new LRUCache<string, { iss: IssuerConfig; payload: JWTPayload; header: ProtectedHeaderParameters }>({
    max: 10_000,
    ttl: VERIFIED_TTL_MS,
  });
  let hits = 0;
  let misses = 0;

  async function verifyWith(token: string, key: Key, options: JWTVerifyOptions) {
    try {
      return typeof key === 'function' ? await jwtVerify(token, key, options) : await jwtVerify(token, key, options);
    } catch (err) {
      if (!(err instanceof errors.JWKSMultipleMatchingKeys)) throw err;
      // Several keys fit the header (no kid): try each, as jose documents.
      for await (const candidate of err) {
        try {
          return await jwtVerify(token, candidate, options);
        } catch (inner) {
          if (!(inner instanceof errors.JWSSignatureVerificationFailed)) throw inner;
        }
      }
      throw new errors.JWSSignatureVerificationFailed();
    }
  }

  return {
    async verify(token) {
      // A token whose signature was verified moments ago (so well-formed): only its time claims
      // need checking again.
      const cacheKey = hash('sha256', token, 'base64url');
      const hit = verified.get(cacheKey);
      if (hit && byIss.get(hit.iss.issuer)?.iss === hit.iss) {
        hits++;
        checkTimes(hit.payload, hit.iss, now());
        return { issuer: hit.iss, payload: hit.payload, header: hit.header };
      }
      misses++;
      if (token.split('.').length === 5) throw fail('Encrypted tokens (JWE) are not accepted.');
      if (!COMPACT_JWS.test(token)) throw fail('The token is malformed (not a compact JWS).');
      let header: ProtectedHeaderParameters;
      let unverified: JWTPayload;
      try {
        header = decodeProtectedHeader(token);
        unverified = decodeJwt(token);
      } catch (cause) {
        throw fail('The token is malformed (header or payload is not valid JSON).', 'decode failed', cause);
      }

      const carried = KEY_BEARING_HEADERS.filter((h) => Object.hasOwn(header, h));
      if (carried.length > 0) {
        throw fail(`The token header carries key material or a key URL (${carried.join(', ')}), which is never trusted.`);
      }
      if (typeof header.alg !== 'string' || header.alg.toLowerCase() === 'none') {
        throw fail('Unsigned tokens (alg none) are not accepted.');
      }
      if (typeof unverified.iss !== 'string') throw fail('The token has no issuer (iss).');
      const entry = byIss.get(unverified.iss);
      if (!entry) throw fail('The token issuer is not trusted (unknown issuer).');
      const { iss, key } = entry;
      if (!(iss.algorithms as readonly string[]).includes(header.alg)) {
        throw fail(`Algorithm ${algName(header.alg)} is not allowed for this issuer.`);
      }

      const currentMs = now();
      const options: JWTVerifyOptions = {
        algorithms: iss.algorithms,
        issuer: iss.issuer,
        audience: iss.audience,
        clockTolerance: iss.clockSkewSeconds,
        currentDate: new Date(currentMs),
        // A token without expiry would be valid forever.
        requiredClaims: ['exp'],
        ...(iss.maxTokenAgeSeconds === undefined ? {} : { maxTokenAge: iss.maxTokenAgeSeconds }),
      };

      let payload: JWTPayload;
      try {
        ({ payload } = await verifyWith(token, key, options));
      } catch (err) {
        throw translate(err, realm);
      }

      // jose checks `iat` only with maxTokenAge; a token "issued" in the future is forged or from a broken clock.
      if (payload.iat !== undefined && payload.iat > currentMs / 1000 + iss.clockSkewSeconds) {
        throw fail('The token is issued in the future (iat).');
      }
      if (iss.acceptedAcr !== undefined && (typeof payload.acr !== 'string' || !iss.acceptedAcr.includes(payload.acr))) {
        throw fail('The token authentication level (acr) is not accepted.');
      }
      verified.set(cacheKey, { iss, payload, header });
      return { issuer: iss, payload, header };
    },
    cacheStats: () => ({ hits, misses, entries: verified.size }),
  };

  /** The time rules jose applied at the first verification, applied again for a cached token. */
  function checkTimes(payload: JWTPayload, iss: IssuerConfig, currentMs: number): void {
    const t = currentMs / 1000;
    const skew = iss.clockSkewSeconds;
    if (typeof payload.exp !== 'number' || payload.exp <= t - skew) {
      throw invalidToken(realm, 'The token has expired.', { code: 'ERR_TOKEN_EXPIRED', detail: 'exp' });
    }
    if (typeof payload.nbf === 'number' && payload.nbf > t + skew) throw fail('The token is not yet valid (nbf).');
    if (iss.maxTokenAgeSeconds !== undefined && (typeof payload.iat !== 'number' || payload.iat + iss.maxTokenAgeSeconds < t - skew)) {
      throw fail('The token issue time (iat) is not acceptable.');
    }
  }
}

const VERIFIED_TTL_MS = 60_000;

function translate(err: unknown, realm: string): ProxyError {
  const fail = (message: string, detail?: string) => invalidToken(realm, message, { detail, cause: err });
  if (err instanceof ProxyError) return err;
  if (err instanceof KeySourceError) {
    return new ProxyError('ERR_LOOKUP_FAILED', "The token issuer's keys could not be fetched; the token cannot be verified now.", {
      detail: `jwks: ${(err.cause as Error)?.name ?? 'error'}`,
      expose: true,
      cause: err,
    });
  }
  if (err instanceof errors.JWTExpired) {
    return invalidToken(realm, 'The token has expired.', { code: 'ERR_TOKEN_EXPIRED', detail: err.claim, cause: err });
  }
  if (err instanceof errors.JWTClaimValidationFailed) {
    const claim = err.claim;
    const missing = err.reason === 'missing';
    switch (claim) {
      case 'aud':
        return fail(missing ? 'The token has no audience (aud).' : 'The token is not meant for this server (wrong audience).');
      case 'iss':
        return fail('The token issuer does not match (wrong issuer).');
      case 'nbf':
        return fail('The token is not yet valid (nbf).');
      case 'exp':
        return fail(missing ? 'The token has no expiry (exp).' : 'The token expiry (exp) is invalid.');
      case 'iat':
        return fail(missing ? 'The token has no issue time (iat).' : 'The token issue time (iat) is not acceptable.');
      default:
        return fail('A token claim failed validation.', `claim ${claim}`);
    }
  }
  if (err instanceof errors.JOSEAlgNotAllowed) return fail('The token algorithm is not allowed for this issuer.');
  if (err instanceof errors.JWSSignatureVerificationFailed) return fail('The token signature is invalid (bad signature).');
  if (err instanceof errors.JWKSNoMatchingKey) return fail('No key of the issuer matches the token (unknown kid).');
  if (err instanceof errors.JOSEError) return fail('The token is invalid.', err.code);
  if (err instanceof TypeError) return fail('The token is invalid.', 'type error');
  return new ProxyError('ERR_INTERNAL', 'Internal error', { expose: false, cause: err, detail: 'token verification' });
}
