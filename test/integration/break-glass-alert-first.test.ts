import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { pino } from 'pino';
import { parseConfig } from '../../src/config/load.js';
import { startDemoFhir, type DemoFhirServer } from '../../src/demo/server.js';
import { demoToken } from '../../src/demo/tokens.js';
import { ProxyError } from '../../src/http/errors.js';
import { loadPolicy } from '../../src/policy/load.js';
import { createMemoryState } from '../../src/shared/state.js';
import { buildStages, type BuiltStages } from '../../src/stages.js';
import type { Received } from '../../src/state.js';
import { demoIdentityYaml } from '../helpers/stack.js';

/**
 * A break-the-glass grant is recorded before it is stored: when its alert cannot be made durable,
 * the request fails and no grant is open (the stages on their own, the audit made to fail).
 */
const ROOT = resolve(import.meta.dirname, '../..');
const BTG = 'http://terminology.hl7.org/CodeSystem/v3-ActReason#BTG; scheme="http://hl7.org/fhir/tag/security"';
let dir: string;
let demo: DemoFhirServer;
let built: BuiltStages;
let auditWorks = true;
const shared = createMemoryState();

beforeAll(async () => {
  dir = mkdtempSync(join(tmpdir(), 'caregate-btg-'));
  demo = await startDemoFhir({ port: 0, host: '127.0.0.1', seed: { seed: 42, patients: 50 } });
  const loaded = parseConfig(`upstream: { url: "${demo.url}" }\n${demoIdentityYaml(dir)}`, join(dir, 'caregate.yaml'), {}, dir);
  const policy = loadPolicy(join(ROOT, 'config/policy.yaml'));
  built = buildStages({
    loaded,
    upstreamUrl: demo.url,
    publicBaseUrl: 'http://127.0.0.1:8080/fhir',
    logger: pino({ level: 'silent' }),
    policy: () => policy,
    audit: async () => {
      if (!auditWorks) throw new ProxyError('ERR_AUDIT_UNAVAILABLE', 'The audit trail cannot be written; the request is refused.');
    },
    shared,
  });
}, 60_000);

afterAll(async () => {
  await built?.close();
  await demo?.close();
  if (dir) rmSync(dir, { recursive: true, force: true });
});

async function authorize(headers: Record<string, string>) {
  const all = { authorization: `Bearer ${demoToken('emergency', { dir })}`, ...headers };
  const received: Received = {
    head: {
      id: 'req-btg',
      receivedAt: new Date(),
      started: performance.now(),
      method: 'GET',
      url: '/fhir/Patient/pat-fx-direct',
      rawPath: '/Patient/pat-fx-direct',
      rawQuery: '',
      headers: all,
      rawHeaders: Object.entries(all).flatMap(([k, v]) => [k, v]),
      clientAddress: '127.0.0.1',
      tls: undefined,
    },
    body: undefined,
  };
  const identified = { ...received, identity: await built.stages.identify(received) };
  const classified = { ...identified, classified: built.stages.classify(identified) };
  return built.stages.authorize(classified);
}

describe('break-the-glass, alert first', () => {
  it('opens no grant when its alert cannot be recorded, and opens it once it can', async () => {
    auditWorks = false;
    await expect(authorize({ category: BTG, 'x-btg-reason': 'unconscious patient in resuscitation' })).rejects.toMatchObject({ code: 'ERR_AUDIT_UNAVAILABLE' });
    expect(shared.grants.open('Practitioner/prat-roux', Date.now())).toEqual([]);
    expect((await authorize({})).decision.effect).toBe('deny');

    auditWorks = true;
    const opened = await authorize({ category: BTG, 'x-btg-reason': 'unconscious patient in resuscitation' });
    expect(opened.grant?.patient).toBe('pat-fx-direct');
    expect(shared.grants.open('Practitioner/prat-roux', Date.now()).map((g) => g.patient)).toEqual(['pat-fx-direct']);
    expect((await authorize({})).decision.effect).toBe('permit');
  });
});
