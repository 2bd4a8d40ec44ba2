import { createServer, request, type Server } from 'node:https';
import type { AddressInfo } from 'node:net';
import { readFileSync } from 'node:fs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { outcomeFor } from '../../src/http/outcome.js';
import { tlsServerOptions } from '../../src/identity/mtls.js';
import { identityConfigSchema } from '../../src/identity/config.js';
import { createIdentifier, identifyInputFrom, type Identifier } from '../../src/identity/identify.js';
import { createTestPki, type CardFiles, type TestPki } from '../helpers/pki.js';
import { fakeFhir, IDNATPS, practitioner, practitionerRole } from './fake-fhir.js';

/**
 * Real mutual TLS: an https server built with `tlsServerOptions`, clients presenting card
 * certificates generated for the test. The server runs the identify stage and answers the
 * principal or the refusal.
 */
describe('CPS card over native mTLS', () => {
  let pki: TestPki;
  let server: Server;
  let port: number;
  let identifier: Identifier;

  beforeAll(async () => {
    pki = await createTestPki();
    const config = identityConfigSchema.parse({
      certificates: { trustedCaFiles: [pki.caFile], crlFiles: [pki.crlFile] },
    });
    const fhir = fakeFhir([
      practitioner('prat-martin', [[IDNATPS, '899700000013']]),
      practitionerRole('role-1', 'prat-martin', { org: 'cardio', codes: [['urn:oid:1.2.250.1.213.1.1.4.5', '10']] }),
    ]);
    identifier = createIdentifier({ config, client: fhir, mapRoles: () => ['clinician'] });
    server = createServer(
      { ...tlsServerOptions(config), cert: pki.serverCertPem, key: pki.serverKeyPem },
      (req, res) => {
        identifier.identify(identifyInputFrom(req)).then(
          (principal) => res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify(principal)),
          (err: unknown) => {
            const o = outcomeFor(err);
            res.writeHead(o.status, o.headers).end(JSON.stringify(o.body));
          },
        );
      },
    );
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    port = (server.address() as AddressInfo).port;
  });

  afterAll(async () => {
    identifier.close();
    server.closeAllConnections();
    await new Promise((resolve) => server.close(resolve));
  });

  function call(card?: CardFiles): Promise<{ status: number; body: Record<string, unknown> }> {
    return new Promise((resolve, reject) => {
      const req = request(
        {
          host: '127.0.0.1',
          port,
          path: '/fhir/Patient',
          ca: readFileSync(pki.serverCaFile),
          servername: 'localhost',
          ...(card ? { cert: card.pem, key: card.keyPem } : {}),
          agent: false,
        },
        (res) => {
          let data = '';
          res.on('data', (c: Buffer) => (data += c.toString()));
          res.on('end', () => resolve({ status: res.statusCode!, body: JSON.parse(data) as Record<string, unknown> }));
        },
      );
      req.on('error', reject);
      req.end();
    });
  }

  function text(body: Record<string, unknown>): string {
    return ((body.issue as Array<{ details?: { text?: string } }>)[0]?.details?.text ?? '') as string;
  }

  it('identifies the clinician from a valid card (idNatPs from CN, profession from title)', async () => {
    const { status, body } = await call(pki.cards.clinician);
    expect(status).toBe(200);
    expect(body.kind).toBe('practitioner');
    expect(body.method).toBe('mtls');
    expect(body.practitioner).toBe('Practitioner/prat-martin');
    const claims = body.claims as Record<string, unknown>;
    expect(claims.idNatPs).toBe('899700000013');
    expect(claims.professionCodes).toEqual(['10']);
    const cert = body.certificate as Record<string, unknown>;
    expect(cert.source).toBe('tls');
    expect(cert.thumbprintS256).toBe(pki.cards.clinician.thumbprint);
  });

  it('answers 401 ERR_NO_CREDENTIAL without a card or token', async () => {
    const { status, body } = await call();
    expect(status).toBe(401);
    expect(text(body)).toMatch(/Authentication required/);
  });

  it('refuses an expired card', async () => {
    const { status, body } = await call(pki.cards.expired);
    expect(status).toBe(401);
    expect(text(body)).toMatch(/expired/);
  });

  it('refuses a card that is not yet valid', async () => {
    const { status, body } = await call(pki.cards.notYetValid);
    expect(status).toBe(401);
    expect(text(body)).toMatch(/not yet valid/);
  });

  it('refuses a card from an untrusted CA', async () => {
    const { status, body } = await call(pki.cards.untrusted);
    expect(status).toBe(401);
    expect(text(body)).toMatch(/not issued by a trusted CA|could not be verified|signature/);
  });

  it('refuses a card revoked by the CRL', async () => {
    const { status, body } = await call(pki.cards.revoked);
    expect(status).toBe(401);
    expect(text(body)).toMatch(/revoked/);
  });
});

describe('native mTLS CRL checking covers the whole chain (OpenSSL CRL_CHECK_ALL)', () => {
  it('needs the root CRL for the intermediate as well as the intermediate CRL for the card', async () => {
    const { createCa, createCrl, issueCardCertificate, issueServerCertificate, privateKeyPem } = await import('../helpers/pki.js');
    const { crlToPem } = await import('../../src/identity/trust-store.js');
    const { tlsInfoFromSocket, certificateFromTls } = await import('../../src/identity/mtls.js');
    const root = await createCa({ name: 'CN=AC RACINE TEST, C=FR' });
    const inter = await createCa({ name: 'CN=AC TEST PERSONNES, C=FR', parent: root });
    const card = await issueCardCertificate(inter, { surname: 'A', idNatPs: '899700000013', givenName: 'B' });
    const cardKey = await privateKeyPem(card.keys.privateKey);
    const srv = await issueServerCertificate(root, { dnsNames: ['localhost'] });
    const srvKey = await privateKeyPem(srv.keys.privateKey);

    const outcome = async (crlOf: Array<typeof root>) => {
      const crl = await Promise.all(crlOf.map(async (c) => crlToPem(await createCrl(c))));
      const s = createServer(
        {
          cert: srv.cert.toString('pem'),
          key: srvKey,
          ca: [root.cert.toString('pem'), inter.cert.toString('pem')],
          crl,
          requestCert: true,
          rejectUnauthorized: false,
        },
        (req, res) => {
          try {
            certificateFromTls(tlsInfoFromSocket(req.socket as import('node:tls').TLSSocket), { issuerCommonNames: undefined });
            res.end('ok');
          } catch (err) {
            res.end((err as Error).message);
          }
        },
      );
      await new Promise<void>((resolve) => s.listen(0, '127.0.0.1', resolve));
      const p = (s.address() as AddressInfo).port;
      try {
        return await new Promise<string>((resolve, reject) => {
          const r = request(
            { host: '127.0.0.1', port: p, ca: root.cert.toString('pem'), servername: 'localhost', cert: card.cert.toString('pem'), key: cardKey, agent: false },
            (res) => {
              let d = '';
              res.on('data', (c: Buffer) => (d += c.toString()));
              res.on('end', () => resolve(d));
            },
          );
          r.on('error', reject);
          r.end();
        });
      } finally {
        s.closeAllConnections();
        s.close();
      }
    };

    expect(await outcome([inter])).toMatch(/no CRL is available/);
    expect(await outcome([inter, root])).toBe('ok');
  });
});
