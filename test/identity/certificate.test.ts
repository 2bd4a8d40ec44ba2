import { webcrypto } from 'node:crypto';
import { readFileSync, writeFileSync } from 'node:fs';
import { beforeAll, describe, expect, it } from 'vitest';
import { ProxyError } from '../../src/http/errors.js';
import { parseCardCertificate, professionCodeForLabel } from '../../src/identity/certificate.js';
import { certificatesSchema, identityConfigSchema } from '../../src/identity/config.js';
import { createAddressMatcher } from '../../src/http/addresses.js';
import {
  certificateFromHeader,
  identityHeaderNames,
  verifiedForwardedCertificate,
} from '../../src/identity/forwarded.js';
import { loadTrustStore, type TrustStore } from '../../src/identity/trust-store.js';
import { createCa, createCrl, createTestPki, issueCardCertificate, nginxEscaped, xfccElement, type TestPki } from '../helpers/pki.js';

async function refusal(p: Promise<unknown> | (() => unknown)): Promise<ProxyError> {
  try {
    await (typeof p === 'function' ? p() : p);
  } catch (err) {
    expect(err).toBeInstanceOf(ProxyError);
    return err as ProxyError;
  }
  throw new Error('expected a refusal');
}

describe('CPS card certificates', () => {
  let pki: TestPki;
  let store: TrustStore;
  beforeAll(async () => {
    pki = await createTestPki();
    store = loadTrustStore(certificatesSchema.parse({ trustedCaFiles: [pki.caFile], crlFiles: [pki.crlFile] }));
  });

  it('reads SN, CN (idNatPs) and GN from the multi-valued RDN, and maps the title to TRE-G15', () => {
    const c = parseCardCertificate(pki.cards.clinician.der, 'tls');
    expect(c.idNatPs).toBe('899700000013');
    expect(c.surname).toBe('MARTIN');
    expect(c.givenName).toBe('CLAIRE');
    expect(c.professionLabel).toBe('Médecin');
    expect(c.professionCode).toBe('10');
    expect(c.thumbprintS256).toBe(pki.cards.clinician.thumbprint);
    expect(c.thumbprintS256).toMatch(/^[A-Za-z0-9_-]{43}$/);
    expect(c.issuer).toContain('AC TEST CAREGATE PERSONNES');
    expect(c.serialNumber).toBe(pki.cards.clinician.issued.cert.serialNumber);
  });

  it('maps profession labels case- and accent-insensitively (and never Infirmier=40)', () => {
    expect(professionCodeForLabel('MEDECIN')).toBe('10');
    expect(professionCodeForLabel('Pharmacien')).toBe('21');
    expect(professionCodeForLabel('chirurgien-dentiste')).toBe('40');
    expect(professionCodeForLabel('Sage-femme')).toBe('50');
    expect(professionCodeForLabel('Infirmier')).toBe('60');
    expect(professionCodeForLabel('Masseur-Kinesitherapeute')).toBe('70');
    expect(professionCodeForLabel('masseur kinésithérapeute')).toBe('70');
    expect(professionCodeForLabel('Pédicure-Podologue')).toBe('80');
    expect(professionCodeForLabel('Astronaute')).toBeUndefined();
  });

  it('refuses a subject with two CNs', async () => {
    const { x509 } = await import('../../src/identity/x509.js');
    const ca = await createCa({ name: 'CN=AC TWO CN, C=FR' });
    const keys = (await webcrypto.subtle.generateKey({ name: 'ECDSA', namedCurve: 'P-256' }, true, [
      'sign',
      'verify',
    ])) as webcrypto.CryptoKeyPair;
    const cert = await x509.X509CertificateGenerator.create({
      subject: new x509.Name([{ '2.5.4.6': ['FR'] }, { '2.5.4.3': ['899700000013', '899700000021'] }]),
      issuer: ca.cert.subjectName,
      publicKey: keys.publicKey,
      signingKey: ca.keys.privateKey,
      signingAlgorithm: { name: 'ECDSA', hash: 'SHA-256' },
      serialNumber: '0a',
    });
    const err = await refusal(() => parseCardCertificate(new Uint8Array(cert.rawData), 'header'));
    expect(err.code).toBe('ERR_CERT_INVALID');
    expect(err.message).toMatch(/several CN/);
  });

  describe('verification of a forwarded certificate (chain, dates, CRL)', () => {
    const now = () => new Date();

    it('accepts a card issued by the trusted CA', async () => {
      const c = await verifiedForwardedCertificate(pki.cards.clinician.der, store, now());
      expect(c.source).toBe('header');
      expect(c.idNatPs).toBe('899700000013');
    });

    it('refuses an expired card', async () => {
      expect((await refusal(verifiedForwardedCertificate(pki.cards.expired.der, store, now()))).message).toMatch(/expired/);
    });

    it('refuses a card that is not yet valid', async () => {
      expect((await refusal(verifiedForwardedCertificate(pki.cards.notYetValid.der, store, now()))).message).toMatch(/not yet valid/);
    });

    it('refuses a card from an untrusted CA with the same name as the trusted one', async () => {
      const err = await refusal(verifiedForwardedCertificate(pki.cards.untrusted.der, store, now()));
      expect(err.code).toBe('ERR_CERT_INVALID');
      expect(err.message).toMatch(/not issued by a trusted CA/);
    });

    it('refuses a card revoked by the CRL', async () => {
      expect((await refusal(verifiedForwardedCertificate(pki.cards.revoked.der, store, now()))).message).toMatch(/revoked/);
    });

    it('refuses when the CRL is past its nextUpdate', async () => {
      const later = new Date(Date.now() + 40 * 86_400_000);
      const err = await refusal(verifiedForwardedCertificate(pki.cards.nurse.der, store, later));
      expect(err.message).toMatch(/CRL .* not current/);
    });

    it('refuses when CRLs are configured but none is from the card issuer', async () => {
      const other = await createCa({ name: 'CN=AC OTHER, C=FR' });
      const file = `${pki.dir}/other.crl.pem`;
      writeFileSync(file, (await createCrl(other)).toString('pem')); // @peculiar/x509's "CRL" label is accepted too
      const s = loadTrustStore(certificatesSchema.parse({ trustedCaFiles: [pki.caFile], crlFiles: [file] }));
      expect((await refusal(verifiedForwardedCertificate(pki.cards.clinician.der, s, now()))).message).toMatch(/no CRL/);
    });

    it('follows an intermediate CA up to a trusted root', async () => {
      const root = await createCa({ name: 'CN=AC RACINE TEST, C=FR' });
      const inter = await createCa({ name: 'CN=AC IGC-SANTE TEST PERSONNES, C=FR', parent: root });
      const card = await issueCardCertificate(inter, { surname: 'ROUX', idNatPs: '899700000039', givenName: 'SOPHIE', professionLabel: 'Médecin' });
      const bundle = `${pki.dir}/chain.pem`;
      writeFileSync(bundle, root.cert.toString('pem') + inter.cert.toString('pem'));
      const s = loadTrustStore(certificatesSchema.parse({ trustedCaFiles: [bundle], issuerCommonNames: ['AC IGC-SANTE TEST PERSONNES'] }));
      const c = await verifiedForwardedCertificate(new Uint8Array(card.cert.rawData), s, now());
      expect(c.idNatPs).toBe('899700000039');
      // A card issued directly by the root is not from an accepted card CA.
      const direct = await issueCardCertificate(root, { surname: 'X', idNatPs: '899700000047', givenName: 'Y' });
      expect((await refusal(verifiedForwardedCertificate(new Uint8Array(direct.cert.rawData), s, now()))).message).toMatch(/accepted card CA/);
    });

    it('refuses a CA certificate presented as a card', async () => {
      const der = new Uint8Array(pki.ca.cert.rawData);
      expect((await refusal(verifiedForwardedCertificate(der, store, now()))).message).toMatch(/CA certificate is not a card/);
    });
  });

  it('caches a verified forwarded card, never past its notAfter', async () => {
    const { createForwardedCertificateVerifier } = await import('../../src/identity/forwarded.js');
    const s = loadTrustStore(certificatesSchema.parse({ trustedCaFiles: [pki.caFile] }));
    const notAfter = pki.cards.nurse.issued.cert.notAfter.getTime();
    let now = notAfter - 100; // 100 ms of validity left: the cache entry may live 100 ms at most
    const verify = createForwardedCertificateVerifier(s, { now: () => now, realm: 'caregate' });
    const first = await verify(pki.cards.nurse.der);
    expect(await verify(pki.cards.nurse.der)).toBe(first);
    await new Promise((resolve) => setTimeout(resolve, 250));
    now = notAfter + 1000;
    expect((await refusal(verify(pki.cards.nurse.der))).message).toMatch(/expired/);
  });

  describe('forwarded header formats', () => {
    it('decodes the nginx $ssl_client_escaped_cert form', () => {
      const der = certificateFromHeader(nginxEscaped(pki.cards.clinician.pem), 'nginx-escaped-pem');
      expect(Buffer.from(der!).equals(pki.cards.clinician.der)).toBe(true);
      expect(certificateFromHeader('', 'nginx-escaped-pem')).toBeUndefined();
    });

    it('takes the Cert of the last XFCC element and checks its Hash', () => {
      const first = xfccElement(pki.cards.nurse.pem, pki.cards.nurse.der, { by: 'spiffe://edge' });
      const last = xfccElement(pki.cards.clinician.pem, pki.cards.clinician.der);
      const der = certificateFromHeader(`${first},${last}`, 'envoy-xfcc');
      expect(Buffer.from(der!).equals(pki.cards.clinician.der)).toBe(true);
    });

    it('refuses an XFCC element whose Hash does not match its Cert', async () => {
      const el = xfccElement(pki.cards.clinician.pem, pki.cards.clinician.der, { hash: 'ab'.repeat(32) });
      expect((await refusal(() => certificateFromHeader(el, 'envoy-xfcc'))).message).toMatch(/Hash does not match/);
    });

    it('refuses an XFCC element without Cert, and malformed values', async () => {
      expect((await refusal(() => certificateFromHeader('By=spiffe://x;Hash=abcd', 'envoy-xfcc'))).message).toMatch(/no Cert/);
      expect((await refusal(() => certificateFromHeader('Cert="abc', 'envoy-xfcc'))).message).toMatch(/unterminated/);
      expect((await refusal(() => certificateFromHeader('%E0%A4%A', 'nginx-escaped-pem'))).message).toMatch(/URL encoding/);
      const two = nginxEscaped(pki.cards.clinician.pem + pki.cards.nurse.pem);
      expect((await refusal(() => certificateFromHeader(two, 'nginx-escaped-pem'))).message).toMatch(/exactly one/);
    });
  });

  it('matches trusted proxies by address and CIDR, IPv4-mapped IPv6 included', () => {
    const m = createAddressMatcher(['10.1.0.0/16', '192.168.1.10', 'fd00::/8']);
    expect(m('10.1.2.3')).toBe(true);
    expect(m('::ffff:10.1.2.3')).toBe(true);
    expect(m('::FFFF:192.168.1.10')).toBe(true);
    expect(m('192.168.1.11')).toBe(false);
    expect(m('10.2.0.1')).toBe(false);
    expect(m('fd12::1')).toBe(true);
    expect(m('fe80::1')).toBe(false);
    expect(m(undefined)).toBe(false);
    expect(m('not-an-ip')).toBe(false);
  });

  it('lists the identity headers to strip, including the configured one', () => {
    const cfg = identityConfigSchema.parse({
      certificates: { trustedCaFiles: ['/ca.pem'], forwarded: { format: 'envoy-xfcc', header: 'X-Card', trustedProxies: ['::1'] } },
    });
    const names = identityHeaderNames(cfg);
    for (const h of ['authorization', 'x-card', 'ssl-client-cert', 'x-forwarded-client-cert', 'x-remote-user', 'client-cert']) {
      expect(names).toContain(h);
    }
    expect(names.every((n) => n === n.toLowerCase())).toBe(true);
  });

  it('loads DER and PEM CA files; refuses an unreadable one with its path', () => {
    const derFile = `${pki.dir}/ca.der`;
    writeFileSync(derFile, Buffer.from(pki.ca.cert.rawData));
    expect(loadTrustStore(certificatesSchema.parse({ trustedCaFiles: [derFile] })).cas).toHaveLength(1);
    expect(() => loadTrustStore(certificatesSchema.parse({ trustedCaFiles: [`${pki.dir}/missing.pem`] }))).toThrow(/missing\.pem/);
    expect(readFileSync(pki.caFile, 'utf8')).toContain('BEGIN CERTIFICATE');
  });
});
