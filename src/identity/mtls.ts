import type { TLSSocket } from 'node:tls';
import { invalidCertificate } from './challenge.js';
import { identityOf, parseDer } from './certificate.js';
import type { CertificatesConfig, IdentityConfig } from './config.js';
import type { CertificateIdentity } from './principal.js';
import { checkIssuerName, loadTrustStore, type TrustStore } from './trust-store.js';

/**
 * Native mutual TLS: the `https.createServer` options that make Node ask for a card and verify it,
 * and the card read from the verified peer of a connection.
 */

/**
 * Options for `https.createServer` so that Node asks for a card and verifies it against the
 * configured CAs and CRLs. `rejectUnauthorized` is false on purpose: the handshake completes, and
 * `identify` answers a bad card with a FHIR OperationOutcome (401) instead of a TLS alert, while a
 * request without a card can still use a token.
 */
export function tlsServerOptions(
  config: IdentityConfig | CertificatesConfig,
  readFile?: (path: string) => Buffer,
): { ca: string[]; crl: string[] | undefined; requestCert: boolean; rejectUnauthorized: false } {
  const certs = 'trustedCaFiles' in config ? config : config.certificates;
  if (!certs) throw new TypeError('identity.certificates is not configured');
  const store = loadTrustStore(certs, readFile);
  return {
    ca: [...store.caPem],
    crl: store.crlPem.length > 0 ? [...store.crlPem] : undefined,
    requestCert: certs.requestCert,
    rejectUnauthorized: false,
  };
}

/** What `identify` needs to know about the TLS connection, as plain data. */
export interface TlsInfo {
  authorized: boolean;
  authorizationError?: string;
  peerCertificateDer?: Buffer;
}

/** Reads the TLS facts of a socket (for building an `IdentifyInput`). */
export function tlsInfoFromSocket(socket: TLSSocket): TlsInfo {
  const peer = socket.getPeerCertificate(false) as { raw?: Buffer } | null;
  const raw = peer && Buffer.isBuffer(peer.raw) && peer.raw.length > 0 ? peer.raw : undefined;
  const err = socket.authorizationError as unknown;
  return {
    authorized: socket.authorized,
    ...(err ? { authorizationError: typeof err === 'string' ? err : String((err as { code?: string }).code ?? err) } : {}),
    ...(raw ? { peerCertificateDer: raw } : {}),
  };
}

/** Client-facing reason for an OpenSSL verification error code. */
function tlsReason(code: string | undefined): string {
  switch (code) {
    case 'CERT_HAS_EXPIRED':
      return 'the certificate has expired';
    case 'CERT_NOT_YET_VALID':
      return 'the certificate is not yet valid';
    case 'CERT_REVOKED':
      return 'the certificate is revoked';
    case 'UNABLE_TO_GET_CRL':
      return 'no CRL is available for the certificate issuer';
    case 'CRL_HAS_EXPIRED':
    case 'CRL_NOT_YET_VALID':
      return 'the CRL of the certificate issuer is not current';
    case 'UNABLE_TO_GET_ISSUER_CERT':
    case 'UNABLE_TO_GET_ISSUER_CERT_LOCALLY':
    case 'UNABLE_TO_VERIFY_LEAF_SIGNATURE':
    case 'DEPTH_ZERO_SELF_SIGNED_CERT':
    case 'SELF_SIGNED_CERT_IN_CHAIN':
    case 'CERT_UNTRUSTED':
      return 'the certificate is not issued by a trusted CA';
    case 'CERT_SIGNATURE_FAILURE':
      return 'the certificate signature is invalid';
    default:
      return 'the certificate could not be verified';
  }
}

/**
 * The card presented on a native mTLS connection, verified by OpenSSL with `tlsServerOptions`.
 * Returns `undefined` when the client sent no certificate.
 * @throws ProxyError ERR_CERT_INVALID when the certificate did not verify (expired, not yet
 *   valid, untrusted, revoked...) or is not issued by an allowed CA.
 */
export function certificateFromTls(tls: TlsInfo, store: Pick<TrustStore, 'issuerCommonNames'>, realm = 'caregate'): CertificateIdentity | undefined {
  const der = tls.peerCertificateDer;
  if (!der || der.length === 0) return undefined;
  if (!tls.authorized) {
    const reason = tlsReason(tls.authorizationError);
    throw invalidCertificate(realm, `Client certificate refused: ${reason}.`, `tls: ${tls.authorizationError ?? 'unauthorized'}`);
  }
  const cert = parseDer(der, realm);
  checkIssuerName(cert, store.issuerCommonNames, realm);
  return identityOf(cert, der, 'tls', realm);
}

/**
 * {@link certificateFromTls} for a live socket.
 * @throws ProxyError ERR_CERT_INVALID (see certificateFromTls).
 */
export function certificateFromSocket(socket: TLSSocket, store: Pick<TrustStore, 'issuerCommonNames'> = { issuerCommonNames: undefined }, realm = 'caregate'): CertificateIdentity | undefined {
  return certificateFromTls(tlsInfoFromSocket(socket), store, realm);
}
