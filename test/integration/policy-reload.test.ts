import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { readFileSync, renameSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import request from 'supertest';
import { startStack, type Stack } from '../helpers/stack.js';

/** The security team changes the policy file; caregate applies it without a restart, and keeps the old one when the new is invalid. */
let stack: Stack;
let original: string;
beforeAll(async () => {
  stack = await startStack({ watchPolicy: true });
  original = readFileSync(join(stack.dir, 'policy.yaml'), 'utf8');
});
afterAll(async () => stack?.close());

const path = (p: string) => new URL(stack.url).pathname + p;
const surgeonReadsDupont = async () => (await request(stack.gate.server).get(path('/Patient/pat-dupont')).set(stack.auth('surgeon'))).status;

async function eventually(check: () => Promise<boolean>, ms = 5000): Promise<boolean> {
  const end = Date.now() + ms;
  while (Date.now() < end) {
    if (await check()) return true;
    await new Promise((r) => setTimeout(r, 100));
  }
  return false;
}

describe('policy.watch (hot reload)', () => {
  it('applies an edited policy file without a restart, and keeps the active one when the new file is invalid', async () => {
    expect(await surgeonReadsDupont()).toBe(403);
    const before = stack.gate.policyRevision();

    // Written beside and renamed over, as editors and deployment tools do.
    writeFileSync(join(stack.dir, 'policy.yaml.new'), original.replace('urlDecided: 403', 'urlDecided: 404'));
    renameSync(join(stack.dir, 'policy.yaml.new'), join(stack.dir, 'policy.yaml'));
    expect(await eventually(async () => (await surgeonReadsDupont()) === 404)).toBe(true);
    const edited = stack.gate.policyRevision();
    expect(edited).not.toBe(before);

    writeFileSync(join(stack.dir, 'policy.yaml'), original.replace('profile: care-team', 'profile: everything'));
    await new Promise((r) => setTimeout(r, 800));
    expect(stack.gate.policyRevision()).toBe(edited);
    expect(await surgeonReadsDupont()).toBe(404);

    // SIGHUP calls the same reload; an explicit reload of the invalid file is refused with its problems.
    const r = stack.gate.reloadPolicy();
    expect(r.ok).toBe(false);
    if (!r.ok) expect(r.problems.join('\n')).toMatch(/roles\[\d+\]\.profile/);
  });
});

describe('a reload applies everything the policy holds', () => {
  let s: Stack;
  let clock = Date.now();
  beforeAll(async () => {
    s = await startStack({ now: () => clock });
  });
  afterAll(async () => s?.close());
  const p = (x: string) => new URL(s.url).pathname + x;

  it('takes the new care-set cache lifetime and paging-link lifetime without a restart', async () => {
    const policyFile = join(s.dir, 'policy.yaml');
    const text = readFileSync(policyFile, 'utf8');
    expect(text).toContain('ttlSeconds: 60');
    writeFileSync(policyFile, text.replace('ttlSeconds: 60', 'ttlSeconds: 5').replace(/linkTtlSeconds: \d+/, 'linkTtlSeconds: 120'));
    expect(s.gate.reloadPolicy().ok).toBe(true);

    // Paging links issued now expire after the new lifetime.
    const first = await request(s.gate.server).get(p('/Patient?_count=2')).set(s.auth('dim'));
    const next = (first.body.link as { relation: string; url: string }[]).find((l) => l.relation === 'next')!.url;
    clock += 119_000;
    expect((await request(s.gate.server).get(new URL(next).pathname).set(s.auth('dim'))).status).toBe(200);
    clock += 2_000;
    expect((await request(s.gate.server).get(new URL(next).pathname).set(s.auth('dim'))).status).toBe(403);

    // A member removed on the FHIR server (behind caregate) loses access after the new 5 s.
    const res = await fetch(`${s.upstreamUrl}/CareTeam`, {
      method: 'POST',
      headers: { 'content-type': 'application/fhir+json', prefer: 'return=representation' },
      body: JSON.stringify({ resourceType: 'CareTeam', status: 'active', subject: { reference: 'Patient/pat-fx-direct' }, participant: [{ member: { reference: 'Practitioner/prat-girard' } }] }),
    });
    const team = (await res.json()) as Record<string, unknown>;
    const surgeon = async () => (await request(s.gate.server).get(p('/Patient/pat-fx-direct')).set(s.auth('surgeon'))).status;
    expect(await surgeon()).toBe(200);
    await fetch(`${s.upstreamUrl}/CareTeam/${team.id as string}`, { method: 'PUT', headers: { 'content-type': 'application/fhir+json' }, body: JSON.stringify({ ...team, status: 'inactive' }) });
    clock += 4_000;
    expect(await surgeon()).toBe(200);
    clock += 2_000;
    expect(await surgeon()).toBe(403);
  });
});
