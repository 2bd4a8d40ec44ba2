import { mkdtempSync, readFileSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { beforeAll, describe, expect, it } from 'vitest';
import { demoCertificatesConfig, ensureDemoPki, type DemoPki } from '../../src/demo/pki.js';
import { PERSONAS, STAFF_ID_SYSTEM, type PersonaName } from '../../src/demo/personas.js';
import { demoClaims, demoCurl, demoIssuerConfig, demoToken, DEMO_ISSUER } from '../../src/demo/tokens.js';
import { parseCardCertificate } from '../../src/identity/certificate.js';
import { identityConfigSchema } from '../../src/identity/config.js';
import { createIdentifier, type Identifier } from '../../src/identity/identify.js';
import { fakeFhir, IDNATPS, practitioner } from './fake-fhir.js';

describe('demo issuer and PKI', () => {
  let dir: string;
  let pki: DemoPki;
  let identifier: Identifier;

  beforeAll(async () => {
    dir = mkdtempSync(join(tmpdir(), 'caregate-demo-'));
    pki = await ensureDemoPki(dir);
    const config = identityConfigSchema.parse({ issuers: [demoIssuerConfig(dir)], certificates: demoCertificatesConfig(dir) });
    const resources = Object.values(PERSONAS).map((p) => {
      if (p.kind === 'patient') return { resourceType: 'Patient', id: p.id };
      if (p.kind === 'related-person') return { resourceType: 'RelatedPerson', id: p.id };
      const ids: Array<[string, string]> = [];
      if ('idNatPs' in p) ids.push([IDNATPS, p.idNatPs]);
      if ('staffId' in p) ids.push([STAFF_ID_SYSTEM, p.staffId]);
      return practitioner(p.id, ids);
    });
    identifier = createIdentifier({ config, client: fakeFhir(resources as never), mapRoles: (c) => [...c.roles] });
  });

  it('keeps its signing key across calls and protects private keys', () => {
    const a = JSON.parse(readFileSync(join(dir, 'jwks.json'), 'utf8')) as { keys: Array<{ kid: string }> };
    demoToken('clinician', { dir });
    const b = JSON.parse(readFileSync(join(dir, 'jwks.json'), 'utf8')) as { keys: Array<{ kid: string }> };
    expect(b.keys[0]!.kid).toBe(a.keys[0]!.kid);
    expect(statSync(join(dir, 'issuer-key.jwk.json')).mode & 0o077).toBe(0);
    expect(statSync(pki.cards.clinician.keyFile).mode & 0o077).toBe(0);
  });

  it('issues Keycloak-shaped tokens valid for 8 hours', () => {
    const c = demoClaims('clinician', { now: 1_700_000_000_000 });
    expect(c).toMatchObject({
      iss: DEMO_ISSUER,
      aud: 'caregate',
      preferred_username: '899700000013',
      idnat_ps: '899700000013',
      realm_access: { roles: ['clinician'] },
      fhirUser: 'Practitioner/prat-martin',
    });
    expect((c.exp as number) - (c.iat as number)).toBe(8 * 3600);
    expect(demoClaims('patient')).toMatchObject({ patient: 'pat-dupont', scope: expect.stringContaining('patient/*.rs') });
  });

  it.each(Object.keys(PERSONAS) as PersonaName[])('a demo token for %s is accepted and resolves to the persona', async (name) => {
    const persona = PERSONAS[name];
    const p = await identifier.identify({ method: 'GET', url: '/fhir/metadata', headers: { authorization: `Bearer ${demoToken(name, { dir })}` }, rawHeaders: ['Authorization', 'x'] });
    expect(p.kind).toBe(persona.kind);
    const ref = p.kind === 'practitioner' ? p.practitioner : p.kind === 'patient' ? p.patient : p.relatedPerson;
    expect(ref.endsWith(`/${persona.id}`)).toBe(true);
    expect(p.policyRoles).toEqual(persona.idpRoles);
  });

  it('writes a CPS-shaped clinician card that the demo certificates config accepts', async () => {
    const der = new Uint8Array(Buffer.from(readFileSync(pki.cards.clinician.certFile, 'utf8').replace(/-----[^-]+-----|\s/g, ''), 'base64'));
    const card = parseCardCertificate(der, 'tls');
    expect(card).toMatchObject({ idNatPs: '899700000013', surname: 'MARTIN', givenName: 'CLAIRE', professionLabel: 'Médecin', professionCode: '10' });
    expect(card.issuer).toContain('AC TEST CAREGATE DEMO PERSONNES');
    const p = await identifier.identify({
      method: 'GET',
      url: '/fhir/Patient',
      headers: { authorization: `Bearer ${demoToken('clinician', { dir, bindToCard: true })}` },
      rawHeaders: ['Authorization', 'x'],
      tls: { authorized: true, peerCertificateDer: Buffer.from(der) },
    });
    expect(p.method).toBe('jwt+cert');
  });

  it('is idempotent: a second ensureDemoPki keeps the card', async () => {
    const again = await ensureDemoPki(dir);
    expect(again.cards.clinician.thumbprintS256).toBe(pki.cards.clinician.thumbprintS256);
  });

  it('prints a curl command with quoted arguments', () => {
    expect(demoCurl({ url: 'https://localhost:8443/fhir/Patient', token: 'abc', card: pki.cards.clinician, caFile: pki.serverCaFile })).toMatch(
      /^curl -sS --cacert '.+server-ca\.pem' --cert '.+clinician-card\.pem' --key '.+clinician-card-key\.pem' -H 'Authorization: Bearer abc' 'https:\/\/localhost:8443\/fhir\/Patient'$/,
    );
  });
});
