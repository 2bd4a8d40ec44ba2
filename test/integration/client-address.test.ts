import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { join } from 'node:path';
import type { AuditEvent } from '@medplum/fhirtypes';
import { readSpoolDir } from '../../src/audit/spool.js';
import { startStack, type Stack } from '../helpers/stack.js';

/** Behind a load balancer, the AuditEvent records the workstation, not the balancer. */
let behind: Stack;
let direct: Stack;

beforeAll(async () => {
  [behind, direct] = await Promise.all([startStack({ patients: 30, server: "trustedProxies: ['127.0.0.1', '::1']" }), startStack({ patients: 30 })]);
});
afterAll(async () => {
  await behind?.close();
  await direct?.close();
});

async function clientAddressOf(stack: Stack, requestId: string): Promise<string | undefined> {
  const events = (await readSpoolDir(join(stack.dir, 'audit'))).events.filter((e: AuditEvent) =>
    e.entity?.some((en) => en.what?.identifier?.value === requestId && en.type?.code === 'XrequestId'),
  );
  expect(events).toHaveLength(1);
  return events[0]!.agent.find((a) => a.network?.type === '2')?.network?.address;
}

async function read(stack: Stack, requestId: string, xff: string): Promise<number> {
  const res = await fetch(`${stack.url}/Patient/pat-dupont`, { headers: { ...stack.auth('clinician'), 'x-request-id': requestId, 'x-forwarded-for': xff } });
  await res.arrayBuffer();
  return res.status;
}

describe('the client address in the AuditEvent', () => {
  it('is the workstation X-Forwarded-For names when the request comes from a trusted balancer', async () => {
    expect(await read(behind, 'xff-behind', '192.0.2.44')).toBe(200);
    expect(await clientAddressOf(behind, 'xff-behind')).toBe('192.0.2.44');
  });

  it('is not what a client writes in X-Forwarded-For when it reaches caregate directly', async () => {
    expect(await read(direct, 'xff-direct', '192.0.2.44')).toBe(200);
    expect(await clientAddressOf(direct, 'xff-direct')).toMatch(/^(::ffff:)?127\.0\.0\.1$|^::1$/);
  });

  it('is read on the review pages too, where a refused clinician is recorded from her workstation', async () => {
    const res = await fetch(`${behind.url.replace(/\/fhir$/, '')}/caregate/review`, { headers: { ...behind.auth('clinician'), 'x-request-id': 'xff-review', 'x-forwarded-for': '192.0.2.45' } });
    await res.arrayBuffer();
    expect(res.status).toBe(403);
    expect(await clientAddressOf(behind, 'xff-review')).toBe('192.0.2.45');
  });
});
