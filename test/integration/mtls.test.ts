import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import https from 'node:https';
import { mkdtempSync, readFileSync, copyFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { pino } from 'pino';
import { parseConfig } from '../../src/config/load.js';
import { startCaregate, type Caregate } from '../../src/server.js';
import { startDemoFhir } from '../../src/demo/server.js';
import { ensureDemoPki, demoPkiPaths } from '../../src/demo/pki.js';
import { demoToken, ensureDemoSigningKey } from '../../src/demo/tokens.js';

/** A CPS-shaped card over real mutual TLS, through the whole proxy (config/examples/demo-mtls.yaml's shape). */
let dir: string;
let gate: Caregate;
let demo: Awaited<ReturnType<typeof startDemoFhir>>;

beforeAll(async () => {
  dir = mkdtempSync(join(tmpdir(), 'caregate-mtls-'));
  await ensureDemoPki(join(dir, 'pki'));
  const { jwksFile } = ensureDemoSigningKey(join(dir, 'keys'));
  copyFileSync(resolve(import.meta.dirname, '../../config/policy.yaml'), join(dir, 'policy.yaml'));
  demo = await startDemoFhir({ seed: { seed: 42, patients: 50 } });
  const yaml = readFileSync(resolve(import.meta.dirname, '../../config/examples/demo-mtls.yaml'), 'utf8')
    .replaceAll('../../var/demo-pki', join(dir, 'pki'))
    .replace('../../var/demo-keys/jwks.json', jwksFile)
    .replace('../../var/audit-mtls', join(dir, 'audit'))
    .replace('../policy.yaml', 'policy.yaml')
    .replace('port: 8443', 'port: 0')
    .replace(/\ndemo:[\s\S]*$/, '\nlogging: { level: silent }\n');
  const loaded = parseConfig(yaml, join(dir, 'caregate.yaml'), {}, dir);
  gate = await startCaregate({ loaded, upstreamUrl: demo.url, logger: pino({ level: 'silent' }) });
});
afterAll(async () => {
  await gate?.close();
  await demo?.close();
  rmSync(dir, { recursive: true, force: true });
});

function get(path: string, opts: { card?: boolean; token?: string } = {}): Promise<{ status: number; body: string }> {
  const p = demoPkiPaths(join(dir, 'pki'));
  const url = new URL(gate.url + path);
  return new Promise((resolveP, reject) => {
    const req = https.request(
      {
        host: url.hostname,
        port: url.port,
        path: url.pathname + url.search,
        ca: readFileSync(p.serverCaFile),
        servername: 'localhost',
        ...(opts.card ? { cert: readFileSync(p.cards.clinician.certFile), key: readFileSync(p.cards.clinician.keyFile) } : {}),
        headers: opts.token ? { authorization: `Bearer ${opts.token}` } : {},
      },
      (res) => {
        let body = '';
        res.on('data', (c) => (body += c));
        res.on('end', () => resolveP({ status: res.statusCode ?? 0, body }));
      },
    );
    req.on('error', reject);
    req.end();
  });
}

describe('identity.certificates (native mutual TLS)', () => {
  it('identifies Dr Martin by her CPS card alone and lets her read her patient', async () => {
    const res = await get('/Patient/pat-dupont', { card: true });
    expect(res.status).toBe(200);
    expect(JSON.parse(res.body).id).toBe('pat-dupont');
  });

  it('still refuses her card a patient outside her care relationships', async () => {
    expect((await get('/Patient/pat-fx-ortho', { card: true })).status).toBe(403);
  });

  it('answers 401 without a card or a token', async () => {
    expect((await get('/Patient/pat-dupont')).status).toBe(401);
  });

  it('refuses a card and a token of two different people', async () => {
    const token = demoToken('surgeon', { dir: join(dir, 'keys') });
    expect((await get('/Patient/pat-dupont', { card: true, token })).status).toBe(400);
  });
});
