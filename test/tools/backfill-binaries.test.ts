import type { Binary } from '@medplum/fhirtypes';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import request from 'supertest';
import { backfillBinaries } from '../../src/tools/backfill-binaries.js';
import { createFhirClient } from '../../src/upstream/client.js';
import { startStack, type Stack } from '../helpers/stack.js';

/** `caregate backfill-binaries` against the embedded engine, then caregate reading the result. */
let s: Stack;
beforeAll(async () => {
  s = await startStack({ patients: 20 });
});
afterAll(async () => s?.close());

describe('caregate backfill-binaries', () => {
  it('gives each Binary without securityContext the one resource that points at it, and counts the rest', async () => {
    const client = createFhirClient({ baseUrl: s.upstreamUrl, timeoutMs: 10_000 });
    const dry = await backfillBinaries(client, { dryRun: true, localBases: [s.upstreamUrl] });
    expect(dry.updated).toBe(3);
    expect((await client.read<Binary>('Binary', 'bin-fx-dupont-echo'))?.securityContext).toBeUndefined();

    const done = await backfillBinaries(client, { localBases: [s.upstreamUrl] });
    expect(done.updated).toBe(3);
    expect(done.alreadySet).toBeGreaterThan(0);
    expect((await client.read<Binary>('Binary', 'bin-fx-dupont-echo'))?.securityContext).toEqual({ reference: 'DiagnosticReport/dr-fx-dupont-echo' });
    expect((await backfillBinaries(client, { localBases: [s.upstreamUrl] })).updated).toBe(0);

    // caregate now judges the report's Binary by its own content, without having seen the report.
    const res = await request(s.gate.server).get(new URL(s.url).pathname + '/Binary/bin-fx-dupont-echo').set(s.auth('clinician'));
    expect(res.status).toBe(200);
    expect((await request(s.gate.server).get(new URL(s.url).pathname + '/Binary/bin-fx-dupont-echo').set(s.auth('surgeon'))).status).toBe(404);
  });
});
