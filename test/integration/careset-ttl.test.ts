import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import request from 'supertest';
import { startStack, type Stack } from '../helpers/stack.js';

/**
 * policy.careRelationships.cache.ttlSeconds: a change made on the FHIR server behind caregate's
 * back (not through it, which would drop the cache at once) applies within the cache lifetime.
 * caregate runs on a fake clock, moved by the test.
 */
let stack: Stack;
let clock = Date.now();
beforeAll(async () => {
  stack = await startStack({ now: () => clock });
});
afterAll(async () => stack?.close());

const path = (p: string) => new URL(stack.url).pathname + p;
const surgeonReads = async () => (await request(stack.gate.server).get(path('/Patient/pat-fx-direct')).set(stack.auth('surgeon'))).status;

async function upstream(method: string, p: string, body?: unknown): Promise<{ status: number; json: Record<string, unknown> }> {
  const res = await fetch(`${stack.upstreamUrl}${p}`, {
    method,
    headers: { 'content-type': 'application/fhir+json', accept: 'application/fhir+json', prefer: 'return=representation' },
    ...(body ? { body: JSON.stringify(body) } : {}),
  });
  return { status: res.status, json: (await res.json()) as Record<string, unknown> };
}

describe('policy.careRelationships.cache.ttlSeconds', () => {
  it('removes access within the cache lifetime once a member leaves the care team on the FHIR server', async () => {
    expect(await surgeonReads()).toBe(403);
    const team = { resourceType: 'CareTeam', status: 'active', subject: { reference: 'Patient/pat-fx-direct' }, participant: [{ member: { reference: 'Practitioner/prat-girard' } }] };
    const created = await upstream('POST', '/CareTeam', team);
    expect(created.status).toBe(201);
    // A refusal is confirmed against a fresh care set: the new member is let in at once.
    expect(await surgeonReads()).toBe(200);

    expect((await upstream('PUT', `/CareTeam/${created.json.id as string}`, { ...created.json, status: 'inactive' })).status).toBe(200);
    // Within the lifetime (60 s in the demo policy), the cached care set still grants.
    clock += 59_000;
    expect(await surgeonReads()).toBe(200);
    clock += 2_000;
    expect(await surgeonReads()).toBe(403);
  });

  it('drops the cached care set at once when the change is made through caregate', async () => {
    const dim = stack.auth('dim');
    const created = await request(stack.gate.server)
      .post(path('/CareTeam'))
      .set(dim)
      .set('content-type', 'application/fhir+json')
      .set('prefer', 'return=representation')
      .send({ resourceType: 'CareTeam', status: 'active', subject: { reference: 'Patient/pat-fx-direct' }, participant: [{ member: { reference: 'Practitioner/prat-girard' } }] });
    expect(created.status).toBe(201);
    expect(await surgeonReads()).toBe(200);
    // The member is removed from the team (the new version no longer names him): no time passes.
    const ended = await request(stack.gate.server)
      .put(path(`/CareTeam/${created.body.id}`))
      .set(dim)
      .set('content-type', 'application/fhir+json')
      .send({ ...created.body, participant: [{ member: { reference: 'Practitioner/prat-martin' } }] });
    expect(ended.status).toBe(200);
    expect(await surgeonReads()).toBe(403);
  });
});
