import { randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Bundle } from '@medplum/fhirtypes';
import { startDemoFhir } from '../../src/demo/server.js';
import type { PersonaName } from '../../src/demo/personas.js';
import { redisServerInstalled, startRedis, within, type RedisServer } from '../helpers/redis.js';
import { startStack, type Stack } from '../helpers/stack.js';

/**
 * Two caregate instances on one upstream, sharing their state through a real redis-server
 * (`state.mode: redis`): what one does, the other honours within a second; Redis killed, what needs
 * it fails closed and the rest keeps working; Redis back, both recover by themselves.
 */
const BTG = 'http://terminology.hl7.org/CodeSystem/v3-ActReason#BTG; scheme="http://hl7.org/fhir/tag/security"';

describe.skipIf(!redisServerInstalled())('several instances sharing their state through Redis', () => {
  let redis: RedisServer;
  let demo: Awaited<ReturnType<typeof startDemoFhir>>;
  let keysDir: string;
  let a: Stack;
  let b: Stack;
  const stateYaml = () => `state: { mode: redis, redis: { url: "${redis.url}", keyPrefix: "test:", connectTimeoutMs: 500, commandTimeoutMs: 500 } }`;
  const start = () => startStack({ upstreamUrl: demo.url, keysDir, extraYaml: stateYaml() });

  const previousSecret = process.env.CAREGATE_PSEUDONYM_SECRET;
  beforeAll(async () => {
    // Required with state.mode redis: every instance issues the same contractor pseudonyms.
    process.env.CAREGATE_PSEUDONYM_SECRET = randomBytes(32).toString('hex');
    redis = await startRedis();
    demo = await startDemoFhir({ port: 0, host: '127.0.0.1', seed: { seed: 42, patients: 300 } });
    keysDir = mkdtempSync(join(tmpdir(), 'caregate-keys-'));
    [a, b] = await Promise.all([start(), start()]);
  });
  afterAll(async () => {
    await Promise.all([a?.close(), b?.close()]);
    await demo?.close();
    await redis?.stop();
    if (keysDir) rmSync(keysDir, { recursive: true, force: true });
    if (previousSecret === undefined) delete process.env.CAREGATE_PSEUDONYM_SECRET;
    else process.env.CAREGATE_PSEUDONYM_SECRET = previousSecret;
  });

  const get = (s: Stack, persona: PersonaName, path: string, headers: Record<string, string> = {}) =>
    fetch(`${s.url}${path}`, { headers: { ...s.auth(persona), accept: 'application/fhir+json', ...headers } });
  const status = async (s: Stack, persona: PersonaName, path: string, headers?: Record<string, string>) => {
    const res = await get(s, persona, path, headers);
    await res.arrayBuffer();
    return res.status;
  };
  const write = async (s: Stack, method: 'POST' | 'PUT', path: string, body: unknown) => {
    const res = await fetch(`${s.url}${path}`, {
      method,
      headers: { ...s.auth('dim'), 'content-type': 'application/fhir+json', prefer: 'return=representation' },
      body: JSON.stringify(body),
    });
    return { status: res.status, json: (await res.json()) as Record<string, unknown> & { id: string } };
  };
  const readyz = async (s: Stack) => (await fetch(`${s.url.replace(/\/fhir$/, '')}/readyz`)).json() as Promise<{ status: string; checks: { name: string; ok: boolean }[] }>;
  const metric = async (s: Stack, line: RegExp) => {
    const text = await (await fetch(`${s.url.replace(/\/fhir$/, '')}/metrics`)).text();
    const m = new RegExp(`^${line.source} (\\d+(?:\\.\\d+)?)$`, 'm').exec(text);
    return m ? Number(m[1]) : undefined;
  };

  it('honours on B, within a second, a break-the-glass grant opened on A, and keeps it across a restart of A', async () => {
    expect(await status(b, 'emergency', '/Patient/pat-fx-direct')).toBe(403);
    const opened = await get(a, 'emergency', '/Patient/pat-fx-direct', { category: BTG, 'x-btg-reason': 'unconscious patient in resuscitation' });
    expect(opened.status).toBe(200);
    expect(opened.headers.get('x-caregate-break-glass')).toBe('active');

    await within(1000, async () => (await status(b, 'emergency', '/Patient/pat-fx-direct')) === 200, 'the grant honoured on B');
    const onB = await get(b, 'emergency', '/Patient/pat-fx-direct');
    expect(onB.headers.get('x-caregate-break-glass')).toBe('active');

    await a.close();
    a = await start();
    expect(await status(a, 'emergency', '/Patient/pat-fx-direct')).toBe(200);
    // Only the patient named: the grant opens nothing else.
    expect(await status(a, 'emergency', '/Patient/pat-fx-ortho')).toBe(403);
  });

  it('removes access on B within a second when a CareTeam change goes through A', async () => {
    const team = { resourceType: 'CareTeam', status: 'active', subject: { reference: 'Patient/pat-fx-direct' }, participant: [{ member: { reference: 'Practitioner/prat-girard' } }] };
    const created = await write(a, 'POST', '/CareTeam', team);
    expect(created.status).toBe(201);
    expect(await status(b, 'surgeon', '/Patient/pat-fx-direct')).toBe(200);
    // B now holds the surgeon's care set in its cache (60 s in the demo policy).
    const ended = await write(a, 'PUT', `/CareTeam/${created.json.id}`, { ...created.json, participant: [{ member: { reference: 'Practitioner/prat-martin' } }] });
    expect(ended.status).toBe(200);
    await within(1000, async () => (await status(b, 'surgeon', '/Patient/pat-fx-direct')) === 403, 'access removed on B');
  });

  it('opens on B a paging link sealed by A, for the user it was issued to only', async () => {
    const first = await get(a, 'clinician', '/Observation?_count=2');
    expect(first.status).toBe(200);
    const next = ((await first.json()) as Bundle).link?.find((l) => l.relation === 'next')?.url;
    expect(next).toBeDefined();
    const onB = next!.replace(a.url, b.url);
    expect(onB.startsWith(b.url)).toBe(true);
    const page = await fetch(onB, { headers: { ...b.auth('clinician'), accept: 'application/fhir+json' } });
    expect(page.status).toBe(200);
    expect(((await page.json()) as Bundle).entry?.length).toBeGreaterThan(0);
    const stolen = await fetch(onB, { headers: { ...b.auth('nurse'), accept: 'application/fhir+json' } });
    expect(stolen.status).toBe(403);
    await stolen.arrayBuffer();
  });

  it('maps back on B the pseudonyms a coding contractor was given by A', async () => {
    const encounters = await get(a, 'coder', '/Encounter?_count=100');
    expect(encounters.status).toBe(200);
    const enc = ((await encounters.json()) as Bundle).entry![0]!.resource as { id: string; subject: { reference: string } };
    expect(enc.id).toMatch(/^p-/);
    const patient = await get(b, 'coder', `/${enc.subject.reference}`);
    expect(patient.status).toBe(200);
    expect(((await patient.json()) as { id: string }).id).toBe(enc.subject.reference.slice('Patient/'.length));
    const obs = await get(b, 'coder', `/Observation?encounter=Encounter/${enc.id}&_count=50`);
    expect(obs.status).toBe(200);
    expect(((await obs.json()) as Bundle).entry?.length).toBeGreaterThan(0);
    expect(await status(b, 'coder', '/Encounter/p-AAAAAAAAAAAAAAAAAAAAAA')).toBe(404);
  });

  it('fails closed while Redis is down, keeps answering what needs nothing shared, and recovers by itself', async () => {
    await redis.kill();
    await within(3000, async () => (await readyz(a)).checks.some((c) => c.name === 'shared-state' && !c.ok), 'A notices');
    await within(3000, async () => (await readyz(b)).checks.some((c) => c.name === 'shared-state' && !c.ok), 'B notices');
    const ready = await readyz(a);
    expect(ready.status).toBe('degraded');

    // No grant can be opened: 503 with an OperationOutcome, and nothing opened.
    const btg = await get(a, 'emergency', '/Patient/pat-fx-ortho', { category: BTG, 'x-btg-reason': 'unconscious patient in resuscitation' });
    expect(btg.status).toBe(503);
    expect(btg.headers.get('retry-after')).toBe('1');
    const outcome = (await btg.json()) as { resourceType: string; issue: { code: string; details: { text: string } }[] };
    expect(outcome.resourceType).toBe('OperationOutcome');
    expect(outcome.issue[0]!.code).toBe('transient');
    expect(outcome.issue[0]!.details.text).toMatch(/No grant was opened/);
    // A refusal that a grant opened elsewhere could have changed cannot be confirmed: 503, not 403.
    expect(await status(b, 'surgeon', '/Patient/pat-dupont')).toBe(503);
    // What needs nothing shared keeps working: a clinician's own patient, the DIM.
    expect(await status(a, 'clinician', '/Patient/pat-dupont')).toBe(200);
    expect(await status(b, 'dim', '/Patient/pat-fx-ortho')).toBe(200);
    // A grant known before the outage is still honoured (grants are only added, and end on their own).
    expect(await status(b, 'emergency', '/Patient/pat-fx-direct')).toBe(200);
    // A contractor's pseudonym B has not seen may have been issued by A: it cannot tell, 503 rather than 404.
    expect(await status(b, 'coder', '/Encounter/p-AAAAAAAAAAAAAAAAAAAAAA')).toBe(503);

    // A CareTeam change through A while Redis is down: B cannot hear of it, and drops its caches every second.
    const team = { resourceType: 'CareTeam', status: 'active', subject: { reference: 'Patient/pat-dupont' }, participant: [{ member: { reference: 'Practitioner/prat-girard' } }] };
    const created = await write(a, 'POST', '/CareTeam', team);
    expect(created.status).toBe(201);
    // Within the one-second tick, plus the time of a request.
    await within(1500, async () => (await status(b, 'surgeon', '/Patient/pat-dupont')) === 200, 'the new member let in on B');
    const ended = await write(a, 'PUT', `/CareTeam/${created.json.id}`, { ...created.json, status: 'inactive' });
    expect(ended.status).toBe(200);
    await within(1500, async () => (await status(b, 'surgeon', '/Patient/pat-dupont')) !== 200, 'access removed on B during the outage');

    expect(await metric(a, /caregate_shared_state_up/)).toBe(0);
    expect(await metric(a, /caregate_shared_state_unavailable_total\{need="grant"\}/)).toBeGreaterThanOrEqual(1);
    expect(await metric(b, /caregate_shared_state_unavailable_total\{need="confirm"\}/)).toBeGreaterThanOrEqual(1);

    await redis.restart();
    await within(5000, async () => (await readyz(a)).status === 'ready' && (await readyz(b)).status === 'ready', 'both recover');
    expect(await metric(a, /caregate_shared_state_up/)).toBe(1);
    const reopened = await get(a, 'emergency', '/Patient/pat-fx-ortho', { category: BTG, 'x-btg-reason': 'unconscious patient in resuscitation' });
    expect(reopened.status).toBe(200);
    await within(1000, async () => (await status(b, 'emergency', '/Patient/pat-fx-ortho')) === 200, 'the new grant honoured on B');
    expect(await status(b, 'surgeon', '/Patient/pat-dupont')).toBe(403);
  });
});
