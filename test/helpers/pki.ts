import { createHash } from 'node:crypto';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import {
  createCa,
  createCrl,
  issueCardCertificate,
  issueServerCertificate,
  privateKeyPem,
  type Issued,
} from '../../src/demo/pki.js';
import { thumbprintS256 } from '../../src/identity/certificate.js';
import { crlToPem } from '../../src/identity/trust-store.js';

export { createCa, createCrl, issueCardCertificate, issueServerCertificate, privateKeyPem, type Issued };

/**
 * A complete throw-away PKI for certificate tests, written as PEM files in a temp dir: a trusted
 * card CA with a CRL, an untrusted CA, a server certificate for 127.0.0.1/localhost, and cards:
 * valid, expired, not yet valid, revoked, and one from the untrusted CA.
 */

const DAY = 86_400_000;

export interface CardFiles {
  issued: Issued;
  der: Buffer;
  pem: string;
  certFile: string;
  keyFile: string;
  keyPem: string;
  thumbprint: string;
}

export interface TestPki {
  dir: string;
  ca: Issued;
  caFile: string;
  crlFile: string;
  untrustedCa: Issued;
  serverCaFile: string;
  serverCertFile: string;
  serverKeyFile: string;
  serverCertPem: string;
  serverKeyPem: string;
  cards: {
    clinician: CardFiles;
    nurse: CardFiles;
    expired: CardFiles;
    notYetValid: CardFiles;
    revoked: CardFiles;
    untrusted: CardFiles;
  };
}

export const TEST_CA_NAME = 'AC TEST CAREGATE PERSONNES';

/** Writes a card's PEM files into `dir`. */
export async function writeCard(dir: string, name: string, issued: Issued): Promise<CardFiles> {
  const pem = issued.cert.toString('pem');
  const keyPem = await privateKeyPem(issued.keys.privateKey);
  const certFile = join(dir, `${name}.pem`);
  const keyFile = join(dir, `${name}-key.pem`);
  writeFileSync(certFile, pem);
  writeFileSync(keyFile, keyPem, { mode: 0o600 });
  const der = Buffer.from(issued.cert.rawData);
  return { issued, der, pem, certFile, keyFile, keyPem, thumbprint: thumbprintS256(der) };
}

export async function createTestPki(): Promise<TestPki> {
  const dir = mkdtempSync(join(tmpdir(), 'caregate-pki-'));
  const ca = await createCa({ name: `CN=${TEST_CA_NAME}, OU=IGC-SANTE TEST, O=TEST, C=FR` });
  const untrustedCa = await createCa({ name: `CN=${TEST_CA_NAME}, OU=IGC-SANTE TEST, O=TEST, C=FR` });
  const serverCa = await createCa({ name: 'CN=AC TEST CAREGATE ORGANISATIONS, O=TEST, C=FR' });
  const server = await issueServerCertificate(serverCa, { dnsNames: ['localhost'], ipAddresses: ['127.0.0.1'] });

  const now = Date.now();
  const card = (over: Partial<Parameters<typeof issueCardCertificate>[1]> = {}, issuer: Issued = ca) =>
    issueCardCertificate(issuer, { surname: 'MARTIN', idNatPs: '899700000013', givenName: 'CLAIRE', professionLabel: 'Médecin', ...over });

  const [clinician, nurse, expired, notYetValid, revoked, untrusted] = await Promise.all([
    card(),
    card({ surname: 'BERNARD', idNatPs: '899700000021', givenName: 'JULIEN', professionLabel: 'Infirmier' }),
    card({ notBefore: new Date(now - 400 * DAY), notAfter: new Date(now - DAY) }),
    card({ notBefore: new Date(now + DAY), notAfter: new Date(now + 400 * DAY) }),
    card(),
    card({}, untrustedCa),
  ]);
  const crl = await createCrl(ca, { revokedSerials: [revoked.cert.serialNumber] });

  const caFile = join(dir, 'ca.pem');
  const crlFile = join(dir, 'ca.crl.pem');
  const serverCaFile = join(dir, 'server-ca.pem');
  const serverCertFile = join(dir, 'server.pem');
  const serverKeyFile = join(dir, 'server-key.pem');
  writeFileSync(caFile, ca.cert.toString('pem'));
  writeFileSync(crlFile, crlToPem(crl));
  writeFileSync(serverCaFile, serverCa.cert.toString('pem'));
  const serverCertPem = server.cert.toString('pem');
  const serverKeyPem = await privateKeyPem(server.keys.privateKey);
  writeFileSync(serverCertFile, serverCertPem);
  writeFileSync(serverKeyFile, serverKeyPem, { mode: 0o600 });

  return {
    dir,
    ca,
    caFile,
    crlFile,
    untrustedCa,
    serverCaFile,
    serverCertFile,
    serverKeyFile,
    serverCertPem,
    serverKeyPem,
    cards: {
      clinician: await writeCard(dir, 'clinician', clinician),
      nurse: await writeCard(dir, 'nurse', nurse),
      expired: await writeCard(dir, 'expired', expired),
      notYetValid: await writeCard(dir, 'not-yet-valid', notYetValid),
      revoked: await writeCard(dir, 'revoked', revoked),
      untrusted: await writeCard(dir, 'untrusted', untrusted),
    },
  };
}

/** nginx `$ssl_client_escaped_cert` of a PEM certificate. */
export function nginxEscaped(pem: string): string {
  return encodeURIComponent(pem);
}

/** An Envoy XFCC element for a PEM certificate (`Hash` hex, `Cert` URL-encoded, quoted Subject). */
export function xfccElement(pem: string, der: Buffer, opts: { by?: string; hash?: string } = {}): string {
  const hash = opts.hash ?? createHash('sha256').update(der).digest('hex');
  return [
    `By=${opts.by ?? 'spiffe://caregate.test/proxy'}`,
    `Hash=${hash}`,
    `Cert="${encodeURIComponent(pem)}"`,
    'Subject="/C=FR/title=M\\u00e9decin/SN=MARTIN+CN=899700000013+GN=CLAIRE"',
  ].join(';');
}
