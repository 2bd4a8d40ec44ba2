import { createHash } from 'node:crypto';
import { LRUCache } from 'lru-cache';
import { invalidCertificate } from './challenge.js';
import { identityOf, parseDer, pemBlocks, thumbprintS256 } from './certificate.js';
import { forwardedHeaderName, type ForwardedFormat, type IdentityConfig } from './config.js';
import type { CertificateIdentity } from './principal.js';
import { verifyCertificate, type TrustStore } from './trust-store.js';

/**
 * Certificates forwarded by a TLS terminator: reading the header (nginx escaped PEM, Envoy XFCC),
 * verifying the card it carries (with a cache of successes), recognising the trusted proxies, and
 * the identity headers that never reach the upstream as the client sent them.
 */

/**
 * Parses, verifies ({@link verifyCertificate}) and reads a certificate forwarded by a trusted TLS
 * terminator.
 * @throws ProxyError ERR_CERT_INVALID.
 */
export async function verifiedForwardedCertificate(der: Uint8Array, store: TrustStore, now: Date, realm = 'caregate'): Promise<CertificateIdentity> {
  const cert = parseDer(der, realm);
  await verifyCertificate(cert, store, now, realm);
  return identityOf(cert, der, 'header', realm);
}

/**
 * {@link verifiedForwardedCertificate} with a small cache of successes, keyed by the certificate's
 * SHA-256: verification costs milliseconds (ASN.1 parsing, two signature checks) and a card is
 * presented on every request. An entry lives `ttlMs` at most and never past the card's notAfter;
 * CRLs only change when the trust store is reloaded, which builds a new verifier. Failures are
 * not cached.
 */
export function createForwardedCertificateVerifier(
  store: TrustStore,
  opts: { now: () => number; realm: string; ttlMs?: number; max?: number },
): (der: Uint8Array) => Promise<CertificateIdentity> {
  const ttlMs = opts.ttlMs ?? 60_000;
  const cache = new LRUCache<string, CertificateIdentity>({ max: opts.max ?? 1000, ttl: ttlMs });
  return async (der) => {
    const key = thumbprintS256(der);
    const hit = cache.get(key);
    if (hit) return hit;
    const identity = await verifiedForwardedCertificate(der, store, new Date(opts.now()), opts.realm);
    const ttl = Math.min(ttlMs, Date.parse(identity.notAfter) - opts.now());
    if (ttl > 0) cache.set(key, identity, { ttl });
    return identity;
  };
}

/**
 * Extracts the leaf certificate from a forwarded header value.
 * - `nginx-escaped-pem`: `$ssl_client_escaped_cert`, the URL-encoded PEM (empty when no cert);
 * - `envoy-xfcc`: the `Cert` of the last element (the hop closest to us); when that element
 *   carries a `Hash`, it must be the SHA-256 (hex) of that certificate.
 * Returns `undefined` when the header says there is no certificate.
 * @throws ProxyError ERR_CERT_INVALID when the value is malformed.
 */
export function certificateFromHeader(value: string, format: ForwardedFormat, realm = 'caregate'): Uint8Array | undefined {
  const bad = (what: string): never => {
    throw invalidCertificate(realm, `The forwarded client certificate is malformed: ${what}.`, `forwarded ${format}: ${what}`);
  };
  if (format === 'nginx-escaped-pem') {
    const v = value.trim();
    if (v === '' || v === '-') return undefined;
    let pem: string;
    try {
      pem = decodeURIComponent(v);
    } catch {
      return bad('invalid URL encoding');
    }
    return onePem(pem, bad);
  }
  const elements = splitOutsideQuotes(value, ',', bad).filter((e) => e.trim() !== '');
  const last = elements.at(-1);
  if (last === undefined) return undefined;
  const fields = new Map<string, string>();
  for (const pair of splitOutsideQuotes(last, ';', bad)) {
    const eq = pair.indexOf('=');
    if (eq <= 0) bad('an element field is not key=value');
    const key = pair.slice(0, eq).trim().toLowerCase();
    let v = pair.slice(eq + 1).trim();
    if (v.startsWith('"')) {
      if (!v.endsWith('"') || v.length < 2) bad('unterminated quoted value');
      v = v.slice(1, -1).replace(/\\(.)/g, '$1');
    }
    // `DNS`/`URI` may repeat; `Cert` and `Hash` may not.
    if ((key === 'cert' || key === 'hash') && fields.has(key)) bad(`${key} appears twice`);
    fields.set(key, v);
  }
  const certField = fields.get('cert');
  if (certField === undefined) return bad('the last element has no Cert (set Envoy set_current_client_cert_details.cert)');
  let pem: string;
  try {
    pem = decodeURIComponent(certField);
  } catch {
    return bad('invalid URL encoding');
  }
  const der = onePem(pem, bad);
  const hash = fields.get('hash');
  if (hash !== undefined && hash.toLowerCase() !== createHash('sha256').update(der).digest('hex')) {
    bad('Hash does not match Cert');
  }
  return der;
}

function onePem(pem: string, bad: (what: string) => never): Uint8Array {
  const blocks = pemBlocks(pem, 'CERTIFICATE');
  if (blocks.length !== 1) bad('expected exactly one PEM certificate');
  return blocks[0]!;
}

function splitOutsideQuotes(s: string, sep: string, bad: (what: string) => never): string[] {
  const out: string[] = [];
  let cur = '';
  let quoted = false;
  for (let i = 0; i < s.length; i++) {
    const c = s[i]!;
    if (quoted) {
      if (c === '\\' && i + 1 < s.length) {
        cur += c + s[i + 1]!;
        i++;
        continue;
      }
      if (c === '"') quoted = false;
      cur += c;
    } else if (c === '"') {
      quoted = true;
      cur += c;
    } else if (c === sep) {
      out.push(cur);
      cur = '';
    } else {
      cur += c;
    }
  }
  if (quoted) bad('unterminated quoted value');
  out.push(cur);
  return out;
}

/** Headers that carry a client identity or certificate in some deployment. */
const WELL_KNOWN_IDENTITY_HEADERS = [
  'authorization',
  'proxy-authorization',
  'ssl-client-cert',
  'ssl-client-verify',
  'ssl-client-s-dn',
  'ssl-client-i-dn',
  'x-ssl-client-cert',
  'x-ssl-client-verify',
  'x-ssl-client-dn',
  'x-ssl-client-s-dn',
  'x-ssl-client-i-dn',
  'x-ssl-cert',
  'x-client-cert',
  'x-client-verify',
  'x-client-dn',
  'x-forwarded-client-cert',
  'x-forwarded-tls-client-cert',
  'x-forwarded-tls-client-cert-info',
  'x-arr-clientcert',
  'client-cert',
  'client-cert-chain',
  'x-remote-user',
  'remote-user',
  'x-forwarded-user',
  'x-forwarded-email',
  'x-forwarded-preferred-username',
  'x-forwarded-access-token',
  'x-auth-request-user',
  'x-auth-request-email',
  'x-auth-request-access-token',
  'x-userinfo',
  'x-user',
  'x-user-id',
  'x-id-token',
  'x-access-token',
] as const;

/**
 * Lower-case names of request headers that carry a client's identity or certificate. None of them
 * may reach the upstream as the client sent it: the upstream must not be able to take a
 * client-supplied header for an identity the proxy did not verify. Includes `authorization`
 * (the upstream gets the proxy's own credential) and the configured forwarded-certificate header.
 */
export function identityHeaderNames(config: IdentityConfig): string[] {
  const names = new Set<string>(WELL_KNOWN_IDENTITY_HEADERS);
  const fwd = config.certificates?.forwarded;
  if (fwd) names.add(forwardedHeaderName(fwd));
  return [...names];
}
