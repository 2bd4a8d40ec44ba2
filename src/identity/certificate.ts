import { createHash } from 'node:crypto';
import { invalidCertificate } from './challenge.js';
import type { CertificateIdentity } from './principal.js';
import { x509 } from './x509.js';

/**
 * CPS / IGC-Santé card certificates: reading the identity printed on a card (one multi-valued RDN
 * SN+CN+GN, the profession label in `title`), its RFC 8705 thumbprint, and PEM blocks. Verifying a
 * card is trust-store.ts; where it comes from is mtls.ts (native peer) and forwarded.ts (a header).
 */

/** Attribute type OIDs read from card subjects and issuers. */
export const OID = {
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

/** Parses a DER certificate. @throws ProxyError ERR_CERT_INVALID when it cannot be parsed. */
export function parseDer(der: Uint8Array, realm: string): x509.X509Certificate {
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

/** The identity printed on a parsed card. @throws ProxyError ERR_CERT_INVALID when the subject is ambiguous. */
export function identityOf(cert: x509.X509Certificate, der: Uint8Array, source: CertificateIdentity['source'], realm: string): CertificateIdentity {
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

const PEM_BLOCK = /-----BEGIN ([A-Z0-9 ]+)-----([\s\S]*?)-----END \1-----/g;

/** DER contents of the PEM blocks of `text` whose label is one of `labels`. */
export function pemBlocks(text: string, ...labels: string[]): Uint8Array[] {
  const out: Uint8Array[] = [];
  for (const m of text.matchAll(PEM_BLOCK)) {
    if (labels.includes(m[1]!)) out.push(Buffer.from(m[2]!.replace(/\s+/g, ''), 'base64'));
  }
  return out;
}
