import { randomBytes, webcrypto, X509Certificate as NodeX509 } from 'node:crypto';
import { chmodSync, existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import type { CertificatesConfigInput } from '../identity/config.js';
import { thumbprintS256 } from '../identity/certificate.js';
import { crlToPem } from '../identity/trust-store.js';
import { x509 } from '../identity/x509.js';
import { PERSONAS } from './personas.js';

/**
 * A throw-away PKI in the shape of IGC-Santé: a CA named like the PERSONNES intermediates that
 * issues CPS-shaped card certificates (subject `C=FR / title=<label> / SN+CN+GN`), a CA for server
 * certificates, and CRLs. Used by the demo (`ensureDemoPki`) and by the tests. Every key is
 * generated on this machine; nothing here is a real certificate.
 */

type CryptoKey = webcrypto.CryptoKey;
type CryptoKeyPair = webcrypto.CryptoKeyPair;

export type KeyKind = 'ec' | 'rsa';

const EC = { name: 'ECDSA', namedCurve: 'P-256', hash: 'SHA-256' } as const;
const RSA = { name: 'RSASSA-PKCS1-v1_5', modulusLength: 2048, publicExponent: new Uint8Array([1, 0, 1]), hash: 'SHA-256' } as const;

const DAY = 86_400_000;

export interface Issued {
  cert: x509.X509Certificate;
  keys: CryptoKeyPair;
}

export const DEMO_CARD_CA_NAME = 'AC TEST CAREGATE DEMO PERSONNES';
export const DEMO_SERVER_CA_NAME = 'AC TEST CAREGATE DEMO ORGANISATIONS';

function algorithmOf(kind: KeyKind) {
  return kind === 'rsa' ? RSA : EC;
}

async function generateKeys(kind: KeyKind): Promise<CryptoKeyPair> {
  return (await webcrypto.subtle.generateKey(algorithmOf(kind), true, ['sign', 'verify'])) as CryptoKeyPair;
}

/** A positive random serial number (hex). */
export function randomSerial(): string {
  const b = randomBytes(12);
  b[0] = b[0]! & 0x7f;
  if (b[0] === 0) b[0] = 1;
  return b.toString('hex');
}

/** Signing algorithm of a CA from its key. */
function signingAlgorithmOf(ca: Issued) {
  return ca.keys.privateKey.algorithm.name === 'ECDSA' ? EC : RSA;
}

/**
 * A CA certificate: self-signed (a root) or issued by `parent` (an intermediate).
 * `name` is an RFC 4514 string such as `CN=AC TEST CAREGATE DEMO PERSONNES, OU=IGC-SANTE TEST, O=TEST, C=FR`.
 */
export async function createCa(opts: {
  name: string;
  parent?: Issued;
  notBefore?: Date;
  notAfter?: Date;
  keyKind?: KeyKind;
}): Promise<Issued> {
  const keys = await generateKeys(opts.keyKind ?? 'ec');
  const notBefore = opts.notBefore ?? new Date(Date.now() - DAY);
  const notAfter = opts.notAfter ?? new Date(Date.now() + 3650 * DAY);
  const extensions = [
    new x509.BasicConstraintsExtension(true, opts.parent ? 0 : 1, true),
    new x509.KeyUsagesExtension(x509.KeyUsageFlags.keyCertSign | x509.KeyUsageFlags.cRLSign, true),
    await x509.SubjectKeyIdentifierExtension.create(keys.publicKey),
  ];
  if (!opts.parent) {
    const cert = await x509.X509CertificateGenerator.createSelfSigned({
      serialNumber: randomSerial(),
      name: opts.name,
      notBefore,
      notAfter,
      keys,
      signingAlgorithm: algorithmOf(opts.keyKind ?? 'ec'),
      extensions,
    });
    return { cert, keys };
  }
  const cert = await x509.X509CertificateGenerator.create({
    serialNumber: randomSerial(),
    subject: opts.name,
    issuer: opts.parent.cert.subjectName,
    notBefore,
    notAfter,
    publicKey: keys.publicKey,
    signingKey: opts.parent.keys.privateKey,
    signingAlgorithm: signingAlgorithmOf(opts.parent),
    extensions: [...extensions, await x509.AuthorityKeyIdentifierExtension.create(opts.parent.cert)],
  });
  return { cert, keys };
}

/** The subject of a CPS card in DER order: C, title, then one RDN with SN + CN + GN. */
export function cardSubject(p: { surname: string; idNatPs: string; givenName: string; professionLabel?: string }): x509.Name {
  const rdns: Array<Record<string, string[]>> = [{ '2.5.4.6': ['FR'] }];
  if (p.professionLabel !== undefined) rdns.push({ '2.5.4.12': [p.professionLabel] });
  rdns.push({ '2.5.4.4': [p.surname], '2.5.4.3': [p.idNatPs], '2.5.4.42': [p.givenName] });
  return new x509.Name(rdns);
}

/** A CPS-shaped client authentication certificate issued by `ca`. */
export async function issueCardCertificate(
  ca: Issued,
  p: {
    surname: string;
    idNatPs: string;
    givenName: string;
    professionLabel?: string;
    notBefore?: Date;
    notAfter?: Date;
    serialNumber?: string;
    keyKind?: KeyKind;
  },
): Promise<Issued> {
  const keys = await generateKeys(p.keyKind ?? 'ec');
  const cert = await x509.X509CertificateGenerator.create({
    serialNumber: p.serialNumber ?? randomSerial(),
    subject: cardSubject(p),
    issuer: ca.cert.subjectName,
    notBefore: p.notBefore ?? new Date(Date.now() - DAY),
    notAfter: p.notAfter ?? new Date(Date.now() + 3 * 365 * DAY),
    publicKey: keys.publicKey,
    signingKey: ca.keys.privateKey,
    signingAlgorithm: signingAlgorithmOf(ca),
    extensions: [
      new x509.BasicConstraintsExtension(false, undefined, true),
      new x509.KeyUsagesExtension(x509.KeyUsageFlags.digitalSignature, true),
      new x509.ExtendedKeyUsageExtension([x509.ExtendedKeyUsage.clientAuth]),
      await x509.SubjectKeyIdentifierExtension.create(keys.publicKey),
      await x509.AuthorityKeyIdentifierExtension.create(ca.cert),
    ],
  });
  return { cert, keys };
}

/** A TLS server certificate for the given DNS names and IP addresses. */
export async function issueServerCertificate(ca: Issued, p: { dnsNames: string[]; ipAddresses?: string[]; notAfter?: Date }): Promise<Issued> {
  const keys = await generateKeys('ec');
  const names = [...p.dnsNames.map((value) => ({ type: 'dns' as const, value })), ...(p.ipAddresses ?? []).map((value) => ({ type: 'ip' as const, value }))];
  const cert = await x509.X509CertificateGenerator.create({
    serialNumber: randomSerial(),
    subject: `CN=${p.dnsNames[0] ?? 'localhost'}, O=TEST, C=FR`,
    issuer: ca.cert.subjectName,
    notBefore: new Date(Date.now() - DAY),
    notAfter: p.notAfter ?? new Date(Date.now() + 825 * DAY),
    publicKey: keys.publicKey,
    signingKey: ca.keys.privateKey,
    signingAlgorithm: signingAlgorithmOf(ca),
    extensions: [
      new x509.BasicConstraintsExtension(false, undefined, true),
      new x509.KeyUsagesExtension(x509.KeyUsageFlags.digitalSignature | x509.KeyUsageFlags.keyEncipherment, true),
      new x509.ExtendedKeyUsageExtension([x509.ExtendedKeyUsage.serverAuth]),
      new x509.SubjectAlternativeNameExtension(names),
      await x509.AuthorityKeyIdentifierExtension.create(ca.cert),
    ],
  });
  return { cert, keys };
}

/** A CRL of `ca` revoking the given serial numbers (hex). */
export async function createCrl(
  ca: Issued,
  p: { revokedSerials?: string[]; thisUpdate?: Date; nextUpdate?: Date } = {},
): Promise<x509.X509Crl> {
  const thisUpdate = p.thisUpdate ?? new Date(Date.now() - 60_000);
  return x509.X509CrlGenerator.create({
    issuer: ca.cert.subjectName,
    thisUpdate,
    nextUpdate: p.nextUpdate ?? new Date(thisUpdate.getTime() + 30 * DAY),
    entries: (p.revokedSerials ?? []).map((serialNumber) => ({
      serialNumber,
      revocationDate: new Date(thisUpdate.getTime() - 60_000),
      reason: x509.X509CrlReason.keyCompromise,
    })),
    extensions: [await x509.AuthorityKeyIdentifierExtension.create(ca.cert)],
    signingKey: ca.keys.privateKey,
    signingAlgorithm: signingAlgorithmOf(ca),
  });
}

/** PKCS#8 PEM of a private key. */
export async function privateKeyPem(key: CryptoKey): Promise<string> {
  const der = Buffer.from(await webcrypto.subtle.exportKey('pkcs8', key));
  return x509.PemConverter.encode(der, 'PRIVATE KEY');
}

async function importPrivateKey(pem: string, cert: x509.X509Certificate): Promise<CryptoKeyPair> {
  const der = x509.PemConverter.decodeFirst(pem);
  const ec = cert.publicKey.algorithm.name === 'ECDSA';
  const alg = ec ? EC : RSA;
  const privateKey = await webcrypto.subtle.importKey('pkcs8', der, alg, true, ['sign']);
  const publicKey = await cert.publicKey.export(alg, ['verify'], webcrypto as unknown as Parameters<typeof cert.publicKey.export>[2]);
  return { privateKey, publicKey: publicKey as unknown as CryptoKey };
}

/** Files of the demo PKI. */
export interface DemoPki {
  dir: string;
  /** The card CA (trust it for client certificates). */
  caFile: string;
  crlFile: string;
  /** The CA of the server certificate (give it to clients: `curl --cacert`). */
  serverCaFile: string;
  serverCertFile: string;
  serverKeyFile: string;
  /** The clinician's card: `curl --cert <certFile> --key <keyFile>`. */
  cards: { clinician: { certFile: string; keyFile: string; thumbprintS256: string } };
}

function writeSecret(path: string, content: string): void {
  writeFileSync(path, content, { mode: 0o600 });
  chmodSync(path, 0o600);
}

function stillValid(file: string, marginMs: number): boolean {
  if (!existsSync(file)) return false;
  try {
    const c = new NodeX509(readFileSync(file));
    return Date.parse(c.validTo) - marginMs > Date.now() && Date.parse(c.validFrom) <= Date.now();
  } catch {
    return false;
  }
}

export function demoPkiPaths(dir: string): DemoPki {
  const cardCert = join(dir, 'clinician-card.pem');
  return {
    dir,
    caFile: join(dir, 'card-ca.pem'),
    crlFile: join(dir, 'card-ca.crl.pem'),
    serverCaFile: join(dir, 'server-ca.pem'),
    serverCertFile: join(dir, 'server.pem'),
    serverKeyFile: join(dir, 'server-key.pem'),
    cards: {
      clinician: {
        certFile: cardCert,
        keyFile: join(dir, 'clinician-card-key.pem'),
        thumbprintS256: existsSync(cardCert) ? thumbprintS256(new NodeX509(readFileSync(cardCert)).raw) : '',
      },
    },
  };
}

/**
 * Creates (once) the demo PKI under `dir`: the card CA "AC TEST CAREGATE DEMO PERSONNES" with
 * its key and a CRL (renewed when it nears its nextUpdate), a server CA and a server certificate
 * for localhost/127.0.0.1/::1, and the clinician persona's card (SN=MARTIN+CN=899700000013+GN=CLAIRE,
 * title=Médecin, C=FR). Existing valid files are kept, so printed curl commands stay usable.
 */
export async function ensureDemoPki(dir: string): Promise<DemoPki> {
  mkdirSync(dir, { recursive: true });
  const paths = demoPkiPaths(dir);
  const caKeyFile = join(dir, 'card-ca-key.pem');
  const serverCaKeyFile = join(dir, 'server-ca-key.pem');
  const clinician = PERSONAS.clinician;

  let cardCa: Issued;
  let newCa = false;
  if (stillValid(paths.caFile, 30 * DAY) && existsSync(caKeyFile) && stillValid(paths.cards.clinician.certFile, DAY)) {
    const cert = new x509.X509Certificate(readFileSync(paths.caFile, 'utf8'));
    cardCa = { cert, keys: await importPrivateKey(readFileSync(caKeyFile, 'utf8'), cert) };
  } else {
    cardCa = await createCa({ name: `CN=${DEMO_CARD_CA_NAME}, OU=IGC-SANTE TEST, O=CAREGATE DEMO, C=FR` });
    newCa = true;
    writeFileSync(paths.caFile, cardCa.cert.toString('pem'));
    writeSecret(caKeyFile, await privateKeyPem(cardCa.keys.privateKey));
    const card = await issueCardCertificate(cardCa, {
      surname: clinician.family,
      idNatPs: clinician.idNatPs,
      givenName: clinician.given.toUpperCase(),
      professionLabel: clinician.profession.label,
    });
    writeFileSync(paths.cards.clinician.certFile, card.cert.toString('pem'));
    writeSecret(paths.cards.clinician.keyFile, await privateKeyPem(card.keys.privateKey));
  }

  if (newCa || !crlCurrent(paths.crlFile, cardCa)) {
    writeFileSync(paths.crlFile, crlToPem(await createCrl(cardCa)));
  }

  if (!(stillValid(paths.serverCaFile, 30 * DAY) && stillValid(paths.serverCertFile, DAY) && existsSync(paths.serverKeyFile))) {
    const serverCa = await createCa({ name: `CN=${DEMO_SERVER_CA_NAME}, OU=IGC-SANTE TEST, O=CAREGATE DEMO, C=FR` });
    const server = await issueServerCertificate(serverCa, { dnsNames: ['localhost'], ipAddresses: ['127.0.0.1', '::1'] });
    writeFileSync(paths.serverCaFile, serverCa.cert.toString('pem'));
    writeSecret(serverCaKeyFile, await privateKeyPem(serverCa.keys.privateKey));
    writeFileSync(paths.serverCertFile, server.cert.toString('pem'));
    writeSecret(paths.serverKeyFile, await privateKeyPem(server.keys.privateKey));
  }
  return demoPkiPaths(dir);
}

function crlCurrent(file: string, ca: Issued): boolean {
  if (!existsSync(file)) return false;
  try {
    const crl = new x509.X509Crl(readFileSync(file, 'utf8'));
    const next = crl.nextUpdate?.getTime() ?? 0;
    return crl.issuer === ca.cert.subject && next - DAY > Date.now();
  } catch {
    return false;
  }
}

/** The `identity.certificates` fragment that trusts the demo card CA (native mTLS). */
export function demoCertificatesConfig(dir: string): CertificatesConfigInput {
  const p = demoPkiPaths(dir);
  return {
    trustedCaFiles: [p.caFile],
    crlFiles: [p.crlFile],
    issuerCommonNames: [DEMO_CARD_CA_NAME],
    requestCert: true,
  };
}
