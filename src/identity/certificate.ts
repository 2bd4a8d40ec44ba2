import { createHash } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { BlockList, isIPv4 } from 'node:net';
import type { TLSSocket } from 'node:tls';
import { LRUCache } from 'lru-cache';
import { invalidCertificate } from './challenge.js';
import {
  forwardedHeaderName,
  parseCidr,
  type CertificatesConfig,
  type ForwardedFormat,
  type IdentityConfig,
} from './config.js';
import type { CertificateIdentity } from './principal.js';
import { x509 } from './x509.js';

/**
 * CPS / IGC-Santé card certificates: parsing the subject (one multi-valued RDN SN+CN+GN, the
 * profession label in `title`), verifying a certificate forwarded by a TLS terminator (chain, dates,
 * CRL) the way OpenSSL verifies a native mTLS peer, and reading the native peer.
 */

const OID = {
  commonName: '2.5.4.3',
  surname: '2.5.4.4',
  title: '2.5.4.12',
  givenName: '2.5.4.42',
} as const;

/**
 * TRE-G15 ProfessionSante codes by label (standards.md §1.4). Keys are normalised labels
 * (lower case, no accents, single spaces instead of hyphens and apostrophes).
 */
const PROFESSION_CODES: ReadonlyMap<string, string> = new Map(
  (
    [
      ['Médecin', '10'],
      ['Pharmacien', '21'],
      ['Audioprothésiste', '26'],
      ['Opticien-Lunetier', '28'],
      ['Assistant dentaire', '31'],
      ['Physicien médical', '32'],
      ['Chirurgien-Dentiste', '40'],
      ['Sage-Femme', '50'],
      ['Infirmier', '60'],
      ['Infirmier psychiatrique', '69'],
      ['Masseur-Kinésithérapeute', '70'],
      ['Pédicure-Podologue', '80'],
      ['Orthoprothésiste', '81'],
      ['Podo-Orthésiste', '82'],
      ['Orthopédiste-Orthésiste', '83'],
      ['Oculariste', '84'],
      ['Epithésiste', '85'],
      ['Technicien de laboratoire médical', '86'],
      ['Orthophoniste', '91'],
      ['Orthoptiste', '92'],
      ['Ergothérapeute', '94'],
      ['Diététicien', '95'],
      ['Psychomotricien', '96'],
      ['Manipulateur ERM', '98'],
      ["Manipulateur d'électroradiologie médicale", '98'],
    ] as const
  ).map(([label, code]) => [normaliseLabel(label), code]),
);

function normaliseLabel(label: string): string {
  return label
    .normalize('NFD')
    .replace(/\p{M}/gu, '')
    .toLowerCase()
    .replace(/[-'’\s]+/g, ' ')
    .trim();
}

/** TRE-G15 code for a card's `title` label (`Médecin` → `10`), case- and accent-insensitive. */
export function professionCodeForLabel(label: string | undefined): string | undefined {
  return label === undefined ? undefined : PROFESSION_CODES.get(normaliseLabel(label));
}

/** RFC 8705 `x5t#S256`: base64url (no padding) SHA-256 of the DER certificate. */
export function thumbprintS256(der: Uint8Array): string {
  return createHash('sha256').update(der).digest('base64url');
}

function single(name: x509.Name, oid: string, what: string, realm: string): string | undefined {
  const values = name.getField(oid);
  // Two CNs in one subject could be read either way by two parsers: refuse instead of choosing.
  if (values.length > 1) throw invalidCertificate(realm, `The client certificate subject has several ${what} values.`);
  return values[0];
}

function parseDer(der: Uint8Array, realm: string): x509.X509Certificate {
  try {
    return new x509.X509Certificate(der);
  } catch (cause) {
    throw invalidCertificate(realm, 'The client certificate cannot be parsed.', `x509 parse: ${(cause as Error).name}`);
  }
}

/**
 * Reads the identity printed on a CPS-shaped certificate. The subject is read from the DER, so
 * the multi-valued RDN `SN+CN+GN` keeps all three values.
 * @throws ProxyError ERR_CERT_INVALID when the DER cannot be parsed or the subject is ambiguous.
 */
export function parseCardCertificate(der: Uint8Array, source: CertificateIdentity['source'], realm = 'caregate'): CertificateIdentity {
  const cert = parseDer(der, realm);
  return identityOf(cert, der, source, realm);
}

function identityOf(cert: x509.X509Certificate, der: Uint8Array, source: CertificateIdentity['source'], realm: string): CertificateIdentity {
  const subject = cert.subjectName;
  const professionLabel = single(subject, OID.title, 'title', realm);
  return {
    source,
    thumbprintS256: thumbprintS256(der),
    idNatPs: single(subject, OID.commonName, 'CN', realm),
    surname: single(subject, OID.surname, 'SN', realm),
    givenName: single(subject, OID.givenName, 'GN', realm),
    professionLabel,
    professionCode: professionCodeForLabel(professionLabel),
    issuer: cert.issuer,
    serialNumber: cert.serialNumber,
    notAfter: cert.notAfter.toISOString(),
  };
}

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

const PEM_BLOCK = /-----BEGIN ([A-Z0-9 ]+)-----([\s\S]*?)-----END \1-----/g;

function pemBlocks(text: string, ...labels: string[]): Uint8Array[] {
  const out: Uint8Array[] = [];
  for (const m of text.matchAll(PEM_BLOCK)) {
    if (labels.includes(m[1]!)) out.push(Buffer.from(m[2]!.replace(/\s+/g, ''), 'base64'));
  }
  return out;
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

function checkIssuerName(cert: x509.X509Certificate, allowed: ReadonlySet<string> | undefined, realm: string): void {
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

/** Address matcher for `trustedProxies`; IPv4-mapped IPv6 addresses (`::ffff:10.0.0.1`) match IPv4 rules. */
export function createAddressMatcher(entries: readonly string[]): (address: string | undefined) => boolean {
  const list = new BlockList();
  for (const e of entries) {
    const c = parseCidr(e);
    if (!c) throw new TypeError(`not an IP address or CIDR block: ${e}`);
    list.addSubnet(c.address, c.prefix, c.family);
  }
  return (address) => {
    if (!address) return false;
    const mapped = /^::ffff:(\d{1,3}(?:\.\d{1,3}){3})$/i.exec(address);
    const a = mapped ? mapped[1]! : address;
    try {
      return list.check(a, isIPv4(a) ? 'ipv4' : 'ipv6');
    } catch {
      return false;
    }
  };
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

