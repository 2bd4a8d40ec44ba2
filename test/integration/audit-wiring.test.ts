import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import request from 'supertest';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import type { AuditEvent } from '@medplum/fhirtypes';
import { readSpoolDir } from '../../src/audit/spool.js';
import { DcmSubtype, DetailType, EntityName, EventType } from '../../src/audit/codes.js';
import { startStack, type Stack } from '../helpers/stack.js';

/** How server.ts feeds the audit: the kind of event, its evidence, policy reloads. */
let stack: Stack;
const path = (p: string) => new URL(stack.url).pathname + p;

beforeAll(async () => {
  stack = await startStack({ patients: 50 });
});
afterAll(async () => stack?.close());

async function spooled(): Promise<AuditEvent[]> {
  return (await readSpoolDir(join(stack.dir, 'audit'))).events;
}

async function eventsOf(requestId: string): Promise<AuditEvent[]> {
  return (await spooled()).filter((e) =>
    e.entity?.some((en) => en.what?.identifier?.value === requestId && en.type?.code === 'XrequestId'),
  );
}

async function waitFor<T>(probe: () => Promise<T | undefined>, ms = 5000): Promise<T> {
  const end = Date.now() + ms;
  for (;;) {
    const v = await probe();
    if (v !== undefined) return v;
    if (Date.now() > end) throw new Error('timed out');
    await new Promise((r) => setTimeout(r, 50));
  }
}

describe('audit wiring', () => {
  it('records a request without a valid credential as a failed login, not as an access', async () => {
    const res = await request(stack.gate.server).get(path('/Patient/pat-dupont')).set('x-request-id', 'wiring-no-token');
    expect(res.status).toBe(401);
    const bad = await request(stack.gate.server)
      .get(path('/Patient/pat-dupont'))
      .set('x-request-id', 'wiring-bad-token')
      .set('authorization', 'Bearer not.a.token');
    expect(bad.status).toBe(401);
    for (const id of ['wiring-no-token', 'wiring-bad-token']) {
      const [ev, ...more] = await eventsOf(id);
      expect(more).toEqual([]);
      expect(ev!.type.code).toBe(EventType.userAuthentication.code);
      expect(ev!.subtype?.[0]?.code).toBe(DcmSubtype.login.code);
      expect(ev!.outcome).toBe('4');
    }
  });

  it('keeps a refusal after identification an access event', async () => {
    const res = await request(stack.gate.server).get(path('/Patient/pat-dupont')).set(stack.auth('surgeon')).set('x-request-id', 'wiring-surgeon');
    expect(res.status).toBe(403);
    const [ev] = await eventsOf('wiring-surgeon');
    expect(ev!.type.code).toBe(EventType.rest.code);
    expect(ev!.outcome).toBe('4');
  });

  it('puts the care-set evidence of the patient on the event of a granted read', async () => {
    const res = await request(stack.gate.server).get(path('/Patient/pat-dupont')).set(stack.auth('clinician')).set('x-request-id', 'wiring-evidence');
    expect(res.status).toBe(200);
    const [ev] = await eventsOf('wiring-evidence');
    const evidence = ev!.entity!.filter((e) => e.name === EntityName.evidence);
    expect(evidence.length).toBeGreaterThan(0);
    expect(evidence.map((e) => e.what?.reference).join(' ')).toMatch(/(CareTeam|Encounter)\//);
  });

  it('audits a policy reload, and a refused reload with its failure, without stopping on a spool error', async () => {
    const file = join(stack.dir, 'policy.yaml');
    const good = readFileSync(file, 'utf8');
    const before = stack.gate.policyRevision();

    writeFileSync(file, `${good}\n# touched\n`);
    const ok = stack.gate.reloadPolicy();
    expect(ok.ok).toBe(true);
    writeFileSync(file, 'version: 1\nroles: []\n');
    const refused = stack.gate.reloadPolicy();
    expect(refused.ok).toBe(false);
    writeFileSync(file, good);
    expect(stack.gate.reloadPolicy().ok).toBe(true);

    const reloads = await waitFor(async () => {
      const r = (await spooled()).filter((e) => e.subtype?.[0]?.code === DcmSubtype.securityConfiguration.code);
      return r.length >= 3 ? r : undefined;
    });
    const [applied, failed] = reloads;
    expect(applied!.outcome).toBe('0');
    expect(applied!.entity![0]!.detail).toContainEqual({ type: DetailType.policyPreviousRevision, valueString: before });
    expect(failed!.outcome).toBe('8');
    expect(failed!.outcomeDesc).toContain('ERR_POLICY_INVALID');
    expect(failed!.outcomeDesc).toContain(`revision ${ok.ok ? ok.revision : ''} stays in force`);
    expect(failed!.entity![0]!.detail).toContainEqual({ type: DetailType.failureCode, valueString: 'ERR_POLICY_INVALID' });
  });
});
