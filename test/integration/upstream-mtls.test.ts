import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import https from 'node:https';
import http from 'node:http';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import request from 'supertest';
import { startDemoFhir } from '../../src/demo/server.js';
import { demoPkiPaths, ensureDemoPki } from '../../src/demo/pki.js';
import { startStack, type Stack } from '../helpers/stack.js';

/**
 * upstream.auth.type: mtls — a FHIR server that only answers clients with a certificate. Every
 * request caregate makes to it (proxied interactions, principal and care-set lookups, audit
 * shipping) must present caregate's own certificate, never the user's credential.
 */
let dir: string;
let demo: Awaited<ReturnType<typeof startDemoFhir>>;
let front: https.Server;
let stack: Stack;
let unauthenticatedAttempts = 0;

beforeAll(async () => {
  dir = mkdtempSync(join(tmpdir(), 'caregate-upmtls-'));
  await ensureDemoPki(dir);
  const p = demoPkiPaths(dir);
  demo = await startDemoFhir({ seed: { seed: 42, patients: 50 } });
  const target = new URL(demo.url);
  // The "hospital FHIR server": TLS with a required client certificate, relaying to the engine.
  front = https.createServer(
    { cert: readFileSync(p.serverCertFile), key: readFileSync(p.serverKeyFile), ca: readFileSync(p.caFile), requestCert: true, rejectUnauthorized: false },
    (req, res) => {
      if (!(req.socket as import('node:tls').TLSSocket).authorized) {
        unauthenticatedAttempts++;
        res.writeHead(401, { 'content-type': 'application/fhir+json' });
        res.end('{"resourceType":"OperationOutcome","issue":[{"severity":"error","code":"login"}]}');
        return;
      }
      const up = http.request({ host: target.hostname, port: target.port, method: req.method, path: req.url, headers: req.headers }, (r) => {
        res.writeHead(r.statusCode ?? 502, r.headers);
        r.pipe(res);
      });
      req.pipe(up);
    },
  );
  await new Promise<void>((r) => front.listen(0, '127.0.0.1', () => r()));
  const port = (front.address() as { port: number }).port;
  stack = await startStack({
    upstreamUrl: `https://localhost:${port}/fhir`,
    upstreamYaml: `auth: { type: mtls, certFile: ${p.cards.clinician.certFile}, keyFile: ${p.cards.clinician.keyFile}, caFile: ${p.serverCaFile} }`,
  });
});
afterAll(async () => {
  await stack?.close();
  front?.closeAllConnections();
  await new Promise((r) => front?.close(r));
  await demo?.close();
  rmSync(dir, { recursive: true, force: true });
});

describe('upstream.auth mtls', () => {
  it('presents caregate’s certificate on proxied requests and on its own lookups', async () => {
    const res = await request(stack.gate.server).get(new URL(stack.url).pathname + '/Patient/pat-dupont').set(stack.auth('clinician'));
    // 200 needs the principal lookup, the care-set lookups and the proxied read all to pass mTLS.
    expect(res.status).toBe(200);
    expect(res.body.id).toBe('pat-dupont');
    expect(unauthenticatedAttempts).toBe(0);
  });
});
