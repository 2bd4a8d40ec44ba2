import { readFileSync } from 'node:fs';
import { invalidCertificate } from './challenge.js';
import { OID, pemBlocks } from './certificate.js';
import type { CertificatesConfig } from './config.js';
import { x509 } from './x509.js';

/**
 * The trust store of card CAs and CRLs: loading it from the configured files, and verifying a
 * certificate against it (chain, dates, CRL, accepted issuer) the way OpenSSL verifies a native
 * mTLS peer.
 */

/** The CAs and CRLs a card must chain to, read once from the configured files. */
export interface TrustStore {
  readonly cas: readonly x509.X509Certificate[];
  readonly crls: readonly x509.X509Crl[];
  /** PEM text of every CA, for `tls.createServer({ ca })`. */
  readonly caPem: readonly string[];
  /** PEM text of every CRL, for `tls.createServer({ crl })`. */
  readonly crlPem: readonly string[];
  readonly issuerCommonNames: ReadonlySet<string> | undefined;
}

/** DER blocks of a PEM or DER file's content. */
function derBlocks(content: Buffer, ...labels: string[]): Uint8Array[] {
  const text = content.toString('latin1');
  if (text.includes('-----BEGIN ')) return pemBlocks(text, ...labels);
  return [new Uint8Array(content)];
}

/** PEM of a CRL with the `X509 CRL` label OpenSSL expects (@peculiar/x509 writes `CRL`). */
export function crlToPem(crl: x509.X509Crl): string {
  return x509.PemConverter.encode(crl.rawData, 'X509 CRL');
}

/**
 * Reads the trusted CA and CRL files.
 * @throws TypeError naming the file when one cannot be read or parsed (a configuration error).
 */
export function loadTrustStore(config: CertificatesConfig, readFile: (path: string) => Buffer = readFileSync): TrustStore {
  const cas: x509.X509Certificate[] = [];
  for (const file of config.trustedCaFiles) {
    let blocks: Uint8Array[];
    try {
      blocks = derBlocks(readFile(file), 'CERTIFICATE');
      for (const der of blocks) cas.push(new x509.X509Certificate(der));
    } catch (cause) {
      throw new TypeError(`identity.certificates.trustedCaFiles: cannot read certificates from ${file}`, { cause });
    }
    if (blocks.length === 0) throw new TypeError(`identity.certificates.trustedCaFiles: no certificate in ${file}`);
  }
  const crls: x509.X509Crl[] = [];
  for (const file of config.crlFiles) {
    let blocks: Uint8Array[];
    try {
      blocks = derBlocks(readFile(file), 'X509 CRL', 'CRL');
      for (const der of blocks) crls.push(new x509.X509Crl(der));
    } catch (cause) {
      throw new TypeError(`identity.certificates.crlFiles: cannot read a CRL from ${file}`, { cause });
    }
    if (blocks.length === 0) throw new TypeError(`identity.certificates.crlFiles: no CRL in ${file}`);
  }
  return {
    cas,
    crls,
    caPem: cas.map((c) => c.toString('pem')),
    crlPem: crls.map(crlToPem),
    issuerCommonNames: config.issuerCommonNames ? new Set(config.issuerCommonNames) : undefined,
  };
}

/** Refuses a card whose issuer CN is not one of `allowed` (when configured). */
export function checkIssuerName(cert: x509.X509Certificate, allowed: ReadonlySet<string> | undefined, realm: string): void {
  if (!allowed) return;
  const cns = cert.issuerName.getField(OID.commonName);
  if (cns.length !== 1 || !allowed.has(cns[0]!)) {
    throw invalidCertificate(realm, 'Client certificate refused: it is not issued by an accepted card CA.', 'issuer CN not allowed');
  }
}

function sameName(a: x509.Name, b: x509.Name): boolean {
  const da = Buffer.from(a.toArrayBuffer());
  const db = Buffer.from(b.toArrayBuffer());
  return da.equals(db) || a.toString().toLowerCase() === b.toString().toLowerCase();
}

function isCa(cert: x509.X509Certificate): boolean {
  const bc = cert.getExtension(x509.BasicConstraintsExtension);
  if (!bc?.ca) return false;
  const ku = cert.getExtension(x509.KeyUsagesExtension);
  return !ku || (ku.usages & x509.KeyUsageFlags.keyCertSign) !== 0;
}

async function signedBy(cert: x509.X509Certificate, issuer: x509.X509Certificate): Promise<boolean> {
  try {
    return await cert.verify({ publicKey: issuer.publicKey, signatureOnly: true });
  } catch {
    return false;
  }
}

const MAX_CHAIN = 6;

/**
 * Verifies a certificate the way OpenSSL verifies a native mTLS peer with `tlsServerOptions`: a
 * chain through CA certificates of the trust store up to a self-signed root of the store, every
 * certificate within its dates, and, when CRLs are configured, every non-root certificate checked
 * against a current CRL signed by its issuer (OpenSSL CRL_CHECK | CRL_CHECK_ALL, as Node sets them).
 * @throws ProxyError ERR_CERT_INVALID with the reason.
 */
export async function verifyCertificate(cert: x509.X509Certificate, store: TrustStore, now: Date, realm = 'caregate'): Promise<void> {
  const refuse = (reason: string, detail: string): never => {
    throw invalidCertificate(realm, `Client certificate refused: ${reason}.`, detail);
  };
  const inDates = (c: x509.X509Certificate, leaf: boolean) => {
    if (now < c.notBefore) refuse(leaf ? 'the certificate is not yet valid' : 'a CA certificate of the chain is not yet valid', 'not yet valid');
    if (now > c.notAfter) refuse(leaf ? 'the certificate has expired' : 'a CA certificate of the chain has expired', 'expired');
  };

  inDates(cert, true);
  if (isCa(cert)) refuse('a CA certificate is not a card', 'leaf is a CA');
  checkIssuerName(cert, store.issuerCommonNames, realm);

  const chain: x509.X509Certificate[] = [cert];
  let current = cert;
  for (;;) {
    if (chain.length > MAX_CHAIN) refuse('the certificate chain is too long', 'chain too long');
    let issuer: x509.X509Certificate | undefined;
    for (const ca of store.cas) {
      if (isCa(ca) && sameName(ca.subjectName, current.issuerName) && (await signedBy(current, ca))) {
        issuer = ca;
        break;
      }
    }
    if (!issuer) refuse('the certificate is not issued by a trusted CA', 'no issuer in trust store');
    const ca = issuer!;
    inDates(ca, false);
    await checkRevocation(current, ca, store, now, refuse);
    if (sameName(ca.subjectName, ca.issuerName) && (await signedBy(ca, ca))) return; // trusted root reached
    if (chain.includes(ca)) refuse('the certificate chain loops', 'chain loop');
    chain.push(ca);
    current = ca;
  }
}

async function checkRevocation(
  cert: x509.X509Certificate,
  issuer: x509.X509Certificate,
  store: TrustStore,
  now: Date,
  refuse: (reason: string, detail: string) => never,
): Promise<void> {
  if (store.crls.length === 0) return;
  let found = false;
  for (const crl of store.crls) {
    if (!sameName(crl.issuerName, issuer.subjectName)) continue;
    let valid = false;
    try {
      valid = await crl.verify({ publicKey: issuer.publicKey });
    } catch {
      valid = false;
    }
    if (!valid) continue;
    found = true;
    if (now < crl.thisUpdate || (crl.nextUpdate !== undefined && now > crl.nextUpdate)) {
      refuse('the CRL of the certificate issuer is not current', 'crl not current');
    }
    if (crl.findRevoked(cert.serialNumber)) refuse('the certificate is revoked', 'revoked');
  }
  if (!found) refuse('no CRL is available for the certificate issuer', 'no crl');
}
