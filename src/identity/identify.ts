import { timingSafeEqual } from 'node:crypto';
import type { IncomingHttpHeaders, IncomingMessage } from 'node:http';
import type { TLSSocket } from 'node:tls';
import type { Logger } from 'pino';
import { ProxyError } from '../http/errors.js';
import type { CacheStats } from '../ops/metrics.js';
import type { FhirClient } from '../upstream/client.js';
import { bearerChallenge, invalidCertificate, invalidToken, noCredential } from './challenge.js';
import { mapClaims, type MappedToken } from './claims.js';
import { forwardedHeaderName, type IdentityConfig } from './config.js';
import { createAddressMatcher } from '../http/addresses.js';
import {
  certificateFromHeader,
  createForwardedCertificateVerifier,
  identityHeaderNames,
} from './forwarded.js';
import { createTokenVerifier } from './jwt.js';
import { certificateFromTls, tlsInfoFromSocket, type TlsInfo } from './mtls.js';
import type { AuthMethod, CertificateIdentity, Claims, Principal } from './principal.js';
import { createPrincipalResolver } from './resolve.js';
import { loadTrustStore, type TrustStore } from './trust-store.js';

/**
 * The identify stage: one request → one verified `Principal`, or a refusal.
 *
 * One identity per request: at most one `Authorization` header, Bearer only, never a token in the
 * query string; a card certificate from the TLS socket, or from the configured header when (and
 * only when) the connection comes from a trusted TLS terminator. A token and a card together must
 * be the same person (or the token must be bound to that certificate, RFC 8705).
 */

/** The request facts identify needs, as plain data. */
export interface IdentifyInput {
  method: string;
  /** Path and query as received. */
  url: string;
  headers: IncomingHttpHeaders;
  rawHeaders: string[];
  remoteAddress?: string;
  /** TLS facts of the connection (see `tlsInfoFromSocket`); absent on plain HTTP. */
  tls?: TlsInfo;
}

/** Builds an {@link IdentifyInput} from a Node request (plain HTTP or TLS). */
export function identifyInputFrom(req: IncomingMessage): IdentifyInput {
  const socket = req.socket as Partial<TLSSocket>;
  return {
    method: req.method ?? 'GET',
    url: req.url ?? '/',
    headers: req.headers,
    rawHeaders: req.rawHeaders,
    ...(req.socket.remoteAddress ? { remoteAddress: req.socket.remoteAddress } : {}),
    ...(socket.encrypted ? { tls: tlsInfoFromSocket(req.socket as TLSSocket) } : {}),
  };
}

export interface RoleMappingContext {
  kind: Principal['kind'];
  /** PractitionerRole codes `system|code` (empty for patients and related persons). */
  roleCodes: readonly string[];
  /** The holder's own card certificate is part of this request (card alone, or token + same person's card). */
  cardPresented: boolean;
}

export interface IdentifierOptions {
  config: IdentityConfig;
  /** The proxy's own FHIR client (service credential), for principal resolution. */
  client: FhirClient;
  logger?: Logger;
  /** The policy's role mapping: claims and PractitionerRole codes → policy role names. */
  mapRoles: (claims: Claims, ctx: RoleMappingContext) => string[];
  /** Clock, epoch milliseconds. */
  now?: () => number;
  /** Environment for `hmacSecretEnv` (defaults to process.env). */
  env?: NodeJS.ProcessEnv;
  /** File reader for JWKS, CA and CRL files (defaults to fs.readFileSync). */
  readFile?: (path: string) => Buffer;
}

export interface Identifier {
  /**
   * @throws ProxyError: 400 ERR_TWO_CREDENTIALS / ERR_TOKEN_IN_QUERY / ERR_UNSUPPORTED; 401
   *   ERR_NO_CREDENTIAL / ERR_TOKEN_INVALID / ERR_TOKEN_EXPIRED / ERR_CLAIM_TYPE / ERR_CERT_INVALID /
   *   ERR_CERT_BINDING; 403 ERR_UNKNOWN_PRACTITIONER / ERR_AMBIGUOUS_PRACTITIONER /
   *   ERR_FHIRUSER_MISMATCH / ERR_CARD_REQUIRED; 503 ERR_LOOKUP_FAILED.
   */
  identify(input: IdentifyInput): Promise<Principal>;
  /** Drops cached resolutions of `Practitioner/<id>` (call after a PractitionerRole or Practitioner write). */
  invalidatePrincipal(reference: string): void;
  /** Drops every cached resolution (messages from other instances may have been missed). */
  clearPrincipals(): void;
  /** Lower-case request headers to strip before forwarding upstream (see `identityHeaderNames`). */
  readonly headerNames: readonly string[];
  /** The verified-token and principal caches' counters (metrics). */
  cacheStats(): { token: CacheStats; principal: CacheStats };
  close(): void;
}

function countHeader(rawHeaders: readonly string[], name: string): number {
  let n = 0;
  for (let i = 0; i < rawHeaders.length; i += 2) if (rawHeaders[i]!.toLowerCase() === name) n++;
  return n;
}

function sameThumbprint(a: string, b: string): boolean {
  const ba = Buffer.from(a, 'base64url');
  const bb = Buffer.from(b, 'base64url');
  return ba.length === bb.length && ba.length > 0 && timingSafeEqual(ba, bb);
}

/**
 * Builds the identify stage.
 * @throws TypeError when key, CA or CRL files cannot be read, or a secret is missing (configuration errors).
 */
export function createIdentifier(opts: IdentifierOptions): Identifier {
  const { config, logger } = opts;
  const realm = config.realm;
  const now = opts.now ?? Date.now;
  const verifier = createTokenVerifier(config.issuers, { realm, now, env: opts.env, readFile: opts.readFile });
  const store: TrustStore | undefined = config.certificates ? loadTrustStore(config.certificates, opts.readFile) : undefined;
  const forwarded = config.certificates?.forwarded;
  const forwardedHeader = forwarded ? forwardedHeaderName(forwarded) : undefined;
  const fromTrustedProxy = createAddressMatcher(forwarded?.trustedProxies ?? []);
  const verifyForwarded = store && forwarded ? createForwardedCertificateVerifier(store, { now, realm }) : undefined;
  const resolver = createPrincipalResolver({
    client: opts.client,
    practitionerIdentifierSystems: config.practitionerIdentifierSystems,
    ttlSeconds: config.principalCacheTtlSeconds,
    max: config.principalCacheMax,
    now,
  });
  const cardRoles = new Set(config.requireCardForRoles);
  /**
   * Claim mapping is a pure function of a verified payload and its issuer's mapping. The verifier
   * hands back the same payload object while the token stays in its verified-token cache, so the
   * mapping is kept for exactly as long, and goes with it.
   */
  const mappedTokens = new WeakMap<object, MappedToken>();
  const headerNames = identityHeaderNames(config);

  function bearerToken(input: IdentifyInput): string | undefined {
    if (countHeader(input.rawHeaders, 'authorization') > 1) {
      throw new ProxyError('ERR_TWO_CREDENTIALS', 'Only one Authorization header is allowed.');
    }
    const q = input.url.indexOf('?');
    if (q !== -1) {
      const query = input.url.slice(q + 1).split('#')[0]!;
      for (const key of new URLSearchParams(query).keys()) {
        // RFC 6750 §2.3 query tokens leak into logs, caches and Referer: refused, whatever the case.
        if (key.trim().toLowerCase() === 'access_token') {
          throw new ProxyError('ERR_TOKEN_IN_QUERY', 'Access tokens are not accepted in the query string; use the Authorization header.');
        }
      }
    }
    const auth = input.headers.authorization;
    if (auth === undefined) return undefined;
    const m = /^([A-Za-z0-9!#$%&'*+.^_`|~-]+)(?:[ ]+(.*))?$/s.exec(auth.trim());
    if (!m || m[1]!.toLowerCase() !== 'bearer') {
      throw new ProxyError('ERR_UNSUPPORTED', 'Only the Bearer authorization scheme is accepted.', {
        headers: { 'WWW-Authenticate': bearerChallenge(realm, 'invalid_request', 'only the Bearer scheme is accepted') },
      });
    }
    const token = (m[2] ?? '').trim();
    if (token === '') throw invalidToken(realm, 'The Bearer credential is empty.');
    return token;
  }

  async function card(input: IdentifyInput): Promise<{ identity: CertificateIdentity; method: AuthMethod } | undefined> {
    if (!store) return undefined;
    if (forwarded && forwardedHeader) {
      if (fromTrustedProxy(input.remoteAddress)) {
        // On a connection from the terminator, a TLS peer certificate is the terminator's own:
        // only the header can carry a card.
        if (countHeader(input.rawHeaders, forwardedHeader) > 1 && forwarded.format === 'nginx-escaped-pem') {
          throw new ProxyError('ERR_TWO_CREDENTIALS', 'The forwarded client certificate header appears twice.');
        }
        const raw = input.headers[forwardedHeader];
        const value = Array.isArray(raw) ? raw.join(',') : raw;
        if (value === undefined) return undefined;
        const der = certificateFromHeader(value, forwarded.format, realm);
        if (!der) return undefined;
        const identity = await verifyForwarded!(der);
        return { identity, method: 'forwarded-cert' };
      }
      if (input.headers[forwardedHeader] !== undefined) {
        logger?.warn({ header: forwardedHeader }, 'forwarded client certificate header ignored: not from a trusted proxy');
      }
    }
    if (!input.tls) return undefined;
    const identity = certificateFromTls(input.tls, store, realm);
    return identity ? { identity, method: 'mtls' } : undefined;
  }

  function cardClaims(c: CertificateIdentity): Claims {
    if (!c.idNatPs) {
      throw invalidCertificate(realm, 'The client certificate names no person (no CN).');
    }
    const displayName = [c.givenName, c.surname].filter(Boolean).join(' ') || undefined;
    return {
      issuer: c.issuer,
      subject: c.idNatPs,
      idNatPs: c.idNatPs,
      professionCodes: c.professionCode ? [c.professionCode] : [],
      roles: [],
      groups: [],
      fhirUser: undefined,
      patientContext: undefined,
      scopes: undefined,
      clientId: undefined,
      jti: undefined,
      displayName,
      expiresAt: undefined,
    };
  }

  return {
    headerNames,
    invalidatePrincipal: (ref) => resolver.invalidatePrincipal(ref),
    clearPrincipals: () => resolver.clear(),
    cacheStats: () => ({ token: verifier.cacheStats(), principal: resolver.cacheStats() }),
    close: () => resolver.clear(),

    async identify(input) {
      const token = bearerToken(input);
      const presented = await card(input);
      if (token === undefined && !presented) throw noCredential(realm);

      let claims: Claims;
      let staff: { system: string; value: string } | undefined;
      let method: AuthMethod;
      let issuerId: string;
      let personalCard = false;
      if (token !== undefined) {
        const verified = await verifier.verify(token);
        const mapping = verified.issuer.claims;
        let mapped = mappedTokens.get(verified.payload);
        if (!mapped) {
          mapped = mapClaims(verified.payload as Record<string, unknown>, mapping, realm);
          mappedTokens.set(verified.payload, mapped);
        }
        claims = mapped.claims;
        staff =
          mapped.staffId !== undefined && mapping.staffIdSystem !== undefined
            ? { system: mapping.staffIdSystem, value: mapped.staffId }
            : undefined;
        issuerId = verified.issuer.id;

        if (mapped.boundThumbprint !== undefined) {
          if (!presented) {
            throw invalidToken(realm, 'The token is bound to a client certificate that was not presented.', { code: 'ERR_CERT_BINDING' });
          }
          if (!sameThumbprint(mapped.boundThumbprint, presented.identity.thumbprintS256)) {
            throw invalidToken(realm, 'The client certificate does not match the certificate the token is bound to.', {
              code: 'ERR_CERT_BINDING',
            });
          }
        } else if (verified.issuer.requireCertificateBinding) {
          throw invalidToken(realm, 'Tokens of this issuer must be bound to the client certificate (cnf x5t#S256).', {
            code: 'ERR_CERT_BINDING',
          });
        }
        if (presented) {
          const samePerson = claims.idNatPs !== undefined && claims.idNatPs === presented.identity.idNatPs;
          // A bound token may ride on a client (organisation) certificate; an unbound one rides on a
          // card only if both name the same person.
          if (mapped.boundThumbprint === undefined && !samePerson) {
            throw new ProxyError('ERR_TWO_CREDENTIALS', 'The token and the client certificate identify different people.');
          }
          personalCard = samePerson;
          if (samePerson && presented.identity.professionCode && !claims.professionCodes.includes(presented.identity.professionCode)) {
            claims = { ...claims, professionCodes: [...claims.professionCodes, presented.identity.professionCode] };
          }
        }
        method = presented ? 'jwt+cert' : 'jwt';
      } else {
        claims = cardClaims(presented!.identity);
        method = presented!.method;
        issuerId = 'certificate';
        personalCard = true;
      }

      const certificate = presented?.identity;
      const resolved = await resolver.resolve({ claims, staff, certificate });
      const roleCodes = resolved.kind === 'practitioner' ? resolved.roleCodes : [];
      const policyRoles = opts.mapRoles(claims, { kind: resolved.kind, roleCodes, cardPresented: personalCard });

      if (!personalCard && cardRoles.size > 0 && [...claims.roles, ...policyRoles].some((r) => cardRoles.has(r))) {
        throw new ProxyError('ERR_CARD_REQUIRED', 'This role requires the holder’s CPS card certificate in the request.');
      }

      logger?.debug({ issuer: issuerId, method, kind: resolved.kind }, 'identified');
      switch (resolved.kind) {
        case 'practitioner':
          return {
            kind: 'practitioner',
            method,
            claims,
            certificate,
            practitioner: resolved.practitioner,
            practitionerRoles: resolved.practitionerRoles,
            organizations: resolved.organizations,
            roleCodes: resolved.roleCodes,
            policyRoles,
          };
        case 'patient':
          return { kind: 'patient', method, claims, certificate, patient: resolved.patient, policyRoles };
        case 'related-person':
          return { kind: 'related-person', method, claims, certificate, relatedPerson: resolved.relatedPerson, policyRoles };
      }
    },
  };
}
