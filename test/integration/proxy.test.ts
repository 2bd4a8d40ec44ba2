import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import request from 'supertest';
import { Client } from 'fhir-kit-client';
import { gunzipSync } from 'node:zlib';
import { startStack, type Stack } from '../helpers/stack.js';

/**
 * Issue 2: caregate is a transparent FHIR proxy. These tests drive it as the DIM (who may see every
 * record) so that what is checked is the transport: statuses, headers, bodies, links, formats.
 */
let stack: Stack;
let upstreamHost: string;

beforeAll(async () => {
  stack = await startStack();
  upstreamHost = new URL(stack.upstreamUrl).host;
});
afterAll(async () => stack?.close());

function noUpstream(text: string) {
  expect(text).not.toContain(stack.upstreamUrl);
  expect(text).not.toContain(upstreamHost);
}

const path = (p: string) => new URL(stack.url).pathname + p;

describe('transparent proxying', () => {
  it('answers the capability statement without a token, with its implementation URL rewritten to the public base', async () => {
    const res = await request(stack.gate.server).get(path('/metadata'));
    expect(res.status).toBe(200);
    expect(res.body.resourceType).toBe('CapabilityStatement');
    expect(res.body.implementation?.url).toBe(stack.gate.publicBaseUrl);
    noUpstream(res.text);
  });

  it('reads a resource with its ETag and Last-Modified, and never shows the upstream address', async () => {
    const res = await request(stack.gate.server).get(path('/Patient/pat-dupont')).set(stack.auth('dim'));
    expect(res.status).toBe(200);
    expect(res.body.id).toBe('pat-dupont');
    expect(res.headers.etag).toMatch(/^W\/"/);
    expect(res.headers['last-modified']).toBeDefined();
    expect(res.headers['content-type']).toContain('application/fhir+json');
    noUpstream(res.text + JSON.stringify(res.headers));
  });

  it('answers a missing resource with a 404 OperationOutcome', async () => {
    const res = await request(stack.gate.server).get(path('/Patient/does-not-exist')).set(stack.auth('dim'));
    expect(res.status).toBe(404);
    expect(res.body.resourceType).toBe('OperationOutcome');
  });

  it('creates, reads by version, updates, patches, shows history and deletes, with Location on the public base', async () => {
    const srv = stack.gate.server;
    const created = await request(srv)
      .post(path('/Observation'))
      .set(stack.auth('dim'))
      .set('content-type', 'application/fhir+json')
      .set('prefer', 'return=representation')
      .send({ resourceType: 'Observation', status: 'final', code: { text: 'transport test' }, subject: { reference: 'Patient/pat-dupont' } });
    expect(created.status).toBe(201);
    expect(created.headers.location).toMatch(new RegExp(`^${stack.gate.publicBaseUrl}/Observation/`));
    const id = created.body.id as string;

    const updated = await request(srv)
      .put(path(`/Observation/${id}`))
      .set(stack.auth('dim'))
      .set('content-type', 'application/fhir+json')
      .send({ ...created.body, status: 'amended' });
    expect(updated.status).toBe(200);
    expect(updated.body.status).toBe('amended');

    const patched = await request(srv)
      .patch(path(`/Observation/${id}`))
      .set(stack.auth('dim'))
      .set('content-type', 'application/json-patch+json')
      .send([{ op: 'replace', path: '/status', value: 'corrected' }]);
    expect(patched.status).toBe(200);
    expect(patched.body.status).toBe('corrected');

    const v1 = await request(srv).get(path(`/Observation/${id}/_history/${created.body.meta.versionId}`)).set(stack.auth('dim'));
    expect(v1.status).toBe(200);
    expect(v1.body.status).toBe('final');

    const history = await request(srv).get(path(`/Observation/${id}/_history`)).set(stack.auth('dim'));
    expect(history.status).toBe(200);
    expect(history.body.type).toBe('history');
    expect(history.body.entry.length).toBe(3);
    noUpstream(history.text);

    const deleted = await request(srv).delete(path(`/Observation/${id}`)).set(stack.auth('dim'));
    expect([200, 204]).toContain(deleted.status);
    const gone = await request(srv).get(path(`/Observation/${id}`)).set(stack.auth('dim'));
    expect(gone.status).toBe(404);
  });

  it('answers POST _search like the same GET search', async () => {
    const get = await request(stack.gate.server).get(path('/Observation?patient=pat-dupont&_count=5&_sort=_id')).set(stack.auth('dim'));
    const post = await request(stack.gate.server)
      .post(path('/Observation/_search'))
      .set(stack.auth('dim'))
      .type('form')
      .send('patient=pat-dupont&_count=5&_sort=_id');
    expect(get.status).toBe(200);
    expect(post.status).toBe(200);
    const ids = (b: { entry?: { resource: { id: string } }[] }) => (b.entry ?? []).map((e) => e.resource.id);
    expect(ids(post.body)).toEqual(ids(get.body));
    expect(ids(get.body).length).toBeGreaterThan(0);
  });

  it('compresses its answer with gzip for a client that asks', async () => {
    const res = await request(stack.gate.server)
      .get(path('/Observation?_count=50'))
      .set(stack.auth('dim'))
      .set('accept-encoding', 'gzip')
      .buffer(true)
      .parse((r, cb) => {
        const chunks: Buffer[] = [];
        r.on('data', (c: Buffer) => chunks.push(c));
        r.on('end', () => cb(null, Buffer.concat(chunks)));
      });
    expect(res.headers['content-encoding']).toBe('gzip');
    // superagent may already have inflated the body; the header shows what went on the wire.
    const raw = res.body as Buffer;
    const body = JSON.parse((raw[0] === 0x1f ? gunzipSync(raw) : raw).toString('utf8'));
    expect(body.resourceType).toBe('Bundle');
  });

  it('converts the judged JSON to FHIR XML for a client that asks for XML', async () => {
    const res = await request(stack.gate.server).get(path('/Patient/pat-dupont')).set(stack.auth('dim')).set('accept', 'application/fhir+xml');
    expect(res.status).toBe(200);
    expect(res.headers['content-type']).toContain('application/fhir+xml');
    expect(res.text).toContain('<Patient xmlns="http://hl7.org/fhir">');
    noUpstream(res.text);
  });

  it('serves health, readiness and Prometheus metrics', async () => {
    const base = stack.url.replace(/\/fhir$/, '');
    expect((await fetch(`${base}/healthz`)).status).toBe(200);
    const ready = await fetch(`${base}/readyz`);
    expect(ready.status).toBe(200);
    await request(stack.gate.server).get(path('/Patient/pat-dupont')).set(stack.auth('dim'));
    const metrics = await (await fetch(`${base}/metrics`)).text();
    expect(metrics).toMatch(/caregate_requests_total\{interaction="read",status="200"\}/);
    expect(metrics).toContain('caregate_upstream_duration_seconds');
  });
});

describe('an unchanged FHIR client (fhir-kit-client) through caregate', () => {
  it('reads, searches and follows next links, creates, updates, deletes and runs a batch', async () => {
    const client = new Client({ baseUrl: stack.url, customHeaders: stack.auth('dim') });
    const patient = (await client.read({ resourceType: 'Patient', id: 'pat-dupont' })) as unknown as { id: string };
    expect(patient.id).toBe('pat-dupont');

    const first = (await client.search({ resourceType: 'Patient', searchParams: { _count: 20 } })) as unknown as { entry: unknown[]; link: { relation: string; url: string }[] };
    expect(first.entry.length).toBe(20);
    const next = first.link.find((l) => l.relation === 'next');
    expect(next?.url.startsWith(stack.gate.publicBaseUrl)).toBe(true);
    const second = (await client.nextPage({ bundle: first } as never)) as unknown as { entry: { resource: { id: string } }[] };
    expect(second.entry.length).toBeGreaterThan(0);
    const firstIds = new Set((first.entry as { resource: { id: string } }[]).map((e) => e.resource.id));
    expect(second.entry.some((e) => firstIds.has(e.resource.id))).toBe(false);

    const created = (await client.create({
      resourceType: 'Condition',
      body: { resourceType: 'Condition', subject: { reference: 'Patient/pat-dupont' }, code: { text: 'fhir-kit test' } },
    })) as { id: string; resourceType: string };
    expect(created.id).toBeDefined();
    const updated = (await client.update({
      resourceType: 'Condition',
      id: created.id,
      body: { ...created, note: [{ text: 'updated' }] },
    })) as unknown as { note: { text: string }[] };
    expect(updated.note[0]!.text).toBe('updated');
    await client.delete({ resourceType: 'Condition', id: created.id });
    await expect(client.read({ resourceType: 'Condition', id: created.id })).rejects.toMatchObject({ response: { status: 404 } });

    const batch = (await client.batch({
      body: {
        resourceType: 'Bundle',
        type: 'batch',
        entry: [{ request: { method: 'GET', url: 'Patient/pat-dupont' } }, { request: { method: 'GET', url: 'Observation?patient=pat-dupont&_count=2' } }],
      },
    })) as unknown as { type: string; entry: { response: { status: string }; resource?: { resourceType: string } }[] };
    expect(batch.type).toBe('batch-response');
    expect(batch.entry.map((e) => e.response.status.slice(0, 3))).toEqual(['200', '200']);
    expect(JSON.stringify(batch)).not.toContain(upstreamHost);
  });
});

