import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { readFileSync, writeFileSync, mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import request from 'supertest';
import { startStack, type Stack } from '../helpers/stack.js';

/** A member removed from a care team loses access within the care-set cache lifetime. */
let stack: Stack;
beforeAll(async () => {
  const dir = mkdtempSync(join(tmpdir(), 'caregate-policy-'));
  const file = join(dir, 'policy.yaml');
  writeFileSync(file, readFileSync(resolve(import.meta.dirname, '../../config/policy.yaml'), 'utf8').replace('ttlSeconds: 60', 'ttlSeconds: 1'));
  stack = await startStack({ policyFile: file });
});
afterAll(async () => stack?.close());

const path = (p: string) => new URL(stack.url).pathname + p;

describe('policy.careRelationships.cache.ttlSeconds', () => {
  it('removes access within the TTL once a member leaves the care team', async () => {
    const dim = stack.auth('dim');
    const created = await request(stack.gate.server)
      .post(path('/CareTeam'))
      .set(dim)
      .set('content-type', 'application/fhir+json')
      .set('prefer', 'return=representation')
      .send({ resourceType: 'CareTeam', status: 'active', subject: { reference: 'Patient/pat-fx-direct' }, participant: [{ member: { reference: 'Practitioner/prat-girard' } }] });
    expect(created.status).toBe(201);
    expect((await request(stack.gate.server).get(path('/Patient/pat-fx-direct')).set(stack.auth('surgeon'))).status).toBe(200);

    const ended = await request(stack.gate.server)
      .put(path(`/CareTeam/${created.body.id}`))
      .set(dim)
      .set('content-type', 'application/fhir+json')
      .send({ ...created.body, status: 'inactive' });
    expect(ended.status).toBe(200);
    await new Promise((r) => setTimeout(r, 1200));
    expect((await request(stack.gate.server).get(path('/Patient/pat-fx-direct')).set(stack.auth('surgeon'))).status).toBe(403);
  });
});
