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
