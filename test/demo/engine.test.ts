import type { Bundle, CapabilityStatement, Observation, OperationOutcome, Patient } from '@medplum/fhirtypes';
import { request } from 'node:http';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { runDemoFhirCli, startDemoFhir, type DemoFhirServer } from '../../src/demo/server.js';

let fhir: DemoFhirServer;

beforeAll(async () => {
  fhir = await startDemoFhir({ seed: { patients: 30, practitioners: 15, now: Date.UTC(2026, 0, 15, 12) }, maxBodyBytes: 64 * 1024 });
});
afterAll(async () => {
  await fhir.close();
});

const JSON_TYPE = 'application/fhir+json';

async function call(
  method: string,
  path: string,
  body?: unknown,
  headers: Record<string, string> = {},
): Promise<{ status: number; headers: Headers; json: any }> {
  const init: RequestInit = { method, headers: { accept: JSON_TYPE, ...headers } };
  if (body !== undefined) {
    init.body = typeof body === 'string' ? body : JSON.stringify(body);
    (init.headers as Record<string, string>)['content-type'] ??= JSON_TYPE;
  }
  const res = await fetch(path.startsWith('http') ? path : `${fhir.url}/${path}`, init);
  const text = await res.text();
  return { status: res.status, headers: res.headers, json: text ? JSON.parse(text) : undefined };
}

const newPatient = (family: string): Patient => ({
  resourceType: 'Patient',
  name: [{ family, given: ['Test'] }],
  identifier: [{ system: 'urn:test', value: family }],
});

describe('demo FHIR engine over HTTP', () => {
  it('reads a resource with 200, FHIR JSON, a weak ETag and Last-Modified', async () => {
    const res = await call('GET', 'Patient/pat-dupont');
    expect(res.status).toBe(200);
    expect(res.headers.get('content-type')).toBe('application/fhir+json; charset=utf-8');
    expect(res.headers.get('etag')).toBe('W/"1"');
    expect(res.headers.get('last-modified')).toBe(new Date(Date.UTC(2026, 0, 15, 12)).toUTCString());
    expect(res.json.name[0].family).toBe('DUPONT');
  });

  it('answers 404 with an OperationOutcome for an unknown id', async () => {
    const res = await call('GET', 'Patient/nope');
    expect(res.status).toBe(404);
    expect(res.json.resourceType).toBe('OperationOutcome');
  });

  it('answers 304 to a read whose If-None-Match is the current ETag', async () => {
    const res = await fetch(`${fhir.url}/Patient/pat-dupont`, { headers: { 'if-none-match': 'W/"1"' } });
    expect(res.status).toBe(304);
  });

  it('creates with 201 and an absolute Location on its own base, ignoring a client id', async () => {
    const res = await call('POST', 'Patient', { ...newPatient('CREATE'), id: 'client-chosen' });
    expect(res.status).toBe(201);
    expect(res.json.id).not.toBe('client-chosen');
    expect(res.headers.get('location')).toBe(`${fhir.url}/Patient/${res.json.id}/_history/1`);
    expect(res.headers.get('etag')).toBe('W/"1"');
  });

  it('updates, reads versions with vread and lists the instance history newest first', async () => {
    const created = await call('POST', 'Patient', newPatient('VERSIONS'));
    const id = created.json.id as string;
    const updated = await call('PUT', `Patient/${id}`, { ...created.json, gender: 'female' });
    expect(updated.status).toBe(200);
    expect(updated.headers.get('etag')).toBe('W/"2"');
    const v1 = await call('GET', `Patient/${id}/_history/1`);
    expect(v1.status).toBe(200);
    expect(v1.json.gender).toBeUndefined();
    const history = await call('GET', `Patient/${id}/_history`);
    expect(history.json.type).toBe('history');
    expect(history.json.entry.map((e: any) => e.resource.meta.versionId)).toEqual(['2', '1']);
    expect(history.json.entry[0].fullUrl).toBe(`${fhir.url}/Patient/${id}`);
    expect(history.json.entry[1].request).toEqual({ method: 'POST', url: 'Patient' });
    // Asking twice gives the same order (medplum's MemoryRepository reversed it in place).
    const again = await call('GET', `Patient/${id}/_history`);
    expect(again.json.entry.map((e: any) => e.resource.meta.versionId)).toEqual(['2', '1']);
  });

  it('refuses an update whose If-Match is stale with 412', async () => {
    const created = await call('POST', 'Patient', newPatient('IFMATCH'));
    const res = await call('PUT', `Patient/${created.json.id}`, created.json, { 'if-match': 'W/"7"' });
    expect(res.status).toBe(412);
  });

  it('creates by update with 201 when the id is new', async () => {
    const res = await call('PUT', 'Patient/put-created', { ...newPatient('PUTCREATE'), id: 'put-created' });
    expect(res.status).toBe(201);
    expect(res.headers.get('location')).toBe(`${fhir.url}/Patient/put-created/_history/1`);
  });

  it('applies a JSON Patch and refuses other patch formats', async () => {
    const created = await call('POST', 'Patient', newPatient('PATCH'));
    const id = created.json.id as string;
    const ok = await call('PATCH', `Patient/${id}`, [{ op: 'add', path: '/birthDate', value: '1990-01-01' }], {
      'content-type': 'application/json-patch+json',
    });
    expect(ok.status).toBe(200);
    expect(ok.json.birthDate).toBe('1990-01-01');
    expect(ok.headers.get('etag')).toBe('W/"2"');
    const failedTest = await call('PATCH', `Patient/${id}`, [{ op: 'test', path: '/gender', value: 'male' }], {
      'content-type': 'application/json-patch+json',
    });
    expect(failedTest.status).toBe(400);
    const fhirPath = await call('PATCH', `Patient/${id}`, { resourceType: 'Parameters' });
    expect(fhirPath.status).toBe(415);
  });

  it('deletes, then reads 410 Gone, vread of the deletion 410, history still listed', async () => {
    const created = await call('POST', 'Patient', newPatient('DELETE'));
    const id = created.json.id as string;
    const del = await call('DELETE', `Patient/${id}`);
    expect(del.status).toBe(200);
    expect((await call('GET', `Patient/${id}`)).status).toBe(410);
    expect((await call('GET', `Patient/${id}/_history/2`)).status).toBe(410);
    expect((await call('GET', `Patient/${id}/_history/1`)).status).toBe(200);
    const history = await call('GET', `Patient/${id}/_history`);
    expect(history.json.entry[0].request.method).toBe('DELETE');
    expect(history.json.entry[0].resource).toBeUndefined();
    const search = await call('GET', `Patient?_id=${id}`);
    expect(search.json.total).toBe(0);
  });

  it('serves type and system history with paging links on its own base', async () => {
    const type = await call('GET', 'Patient/_history?_count=2');
    expect(type.status).toBe(200);
    expect(type.json.entry).toHaveLength(2);
    expect(type.json.entry.every((e: any) => e.fullUrl.startsWith(`${fhir.url}/Patient/`))).toBe(true);
    expect(type.json.link.find((l: any) => l.relation === 'next').url).toBe(`${fhir.url}/Patient/_history?_count=2&_offset=2`);
    const system = await call('GET', '_history?_count=3');
    expect(system.json.entry).toHaveLength(3);
    expect((await call('GET', 'Patient/_history?_at=2020')).status).toBe(400);
  });

  it('answers the same to search by GET and by POST _search', async () => {
    const get = await call('GET', 'Observation?patient=Patient/pat-dupont&_count=2');
    const post = await call('POST', 'Observation/_search', '_count=2', { 'content-type': 'application/x-www-form-urlencoded' });
    const postMixed = await fetch(`${fhir.url}/Observation/_search?patient=Patient/pat-dupont`, {
      method: 'POST',
      headers: { 'content-type': 'application/x-www-form-urlencoded' },
      body: '_count=2',
    }).then((r) => r.json() as Promise<Bundle>);
    expect(get.status).toBe(200);
    expect(post.status).toBe(200);
    expect(get.json.total).toBe(3);
    expect(postMixed.total).toBe(get.json.total);
    expect(postMixed.entry?.map((e) => e.fullUrl)).toEqual(get.json.entry.map((e: any) => e.fullUrl));
  });

  it('pages searches with absolute self and next links that can be followed', async () => {
    const first = await call('GET', 'Patient?_count=5');
    expect(first.json.entry).toHaveLength(5);
    expect(first.json.entry[0].search).toEqual({ mode: 'match' });
    expect(first.json.entry[0].fullUrl).toMatch(new RegExp(`^${fhir.url}/Patient/`));
    const next = first.json.link.find((l: any) => l.relation === 'next').url as string;
    expect(next.startsWith(`${fhir.url}/Patient?`)).toBe(true);
    const second = await call('GET', next);
    expect(second.json.entry).toHaveLength(5);
    expect(second.json.entry[0].fullUrl).not.toBe(first.json.entry[0].fullUrl);
  });

  it('refuses an unknown search parameter with 400 instead of an empty page', async () => {
    const res = await call('GET', 'Patient?not-a-param=1');
    expect(res.status).toBe(400);
    expect((res.json as OperationOutcome).issue[0]?.severity).toBe('error');
  });

  it('adds _include and _revinclude resources with search mode include', async () => {
    const res = await call('GET', 'CareTeam?_id=ct-dupont&_include=CareTeam:participant&_revinclude=Provenance:target');
    const modes = res.json.entry.map((e: any) => `${e.search.mode}:${e.resource.resourceType}/${e.resource.id}`);
    expect(modes).toContain('match:CareTeam/ct-dupont');
    expect(modes).toContain('include:Practitioner/prat-martin');
    expect(modes).toContain('include:PractitionerRole/role-bernard-cardio');
    expect(res.json.total).toBe(1);
  });

  it('creates conditionally: 201 the first time, 200 with the same resource the second', async () => {
    const headers = { 'if-none-exist': 'identifier=urn:test|COND' };
    const first = await call('POST', 'Patient', newPatient('COND'), headers);
    const second = await call('POST', 'Patient', newPatient('COND'), headers);
    expect(first.status).toBe(201);
    expect(second.status).toBe(200);
    expect(second.json.id).toBe(first.json.id);
  });

  it('updates and deletes conditionally', async () => {
    const up = await call('PUT', 'Patient?identifier=urn:test|CONDUP', newPatient('CONDUP'));
    expect(up.status).toBe(201);
    const up2 = await call('PUT', 'Patient?identifier=urn:test|CONDUP', { ...newPatient('CONDUP'), gender: 'male' });
    expect(up2.status).toBe(200);
    expect(up2.json.id).toBe(up.json.id);
    const del = await call('DELETE', 'Patient?identifier=urn:test|CONDUP');
    expect(del.status).toBe(200);
    expect((await call('GET', `Patient/${up.json.id}`)).status).toBe(410);
  });

  it('processes a batch: each entry answered on its own, with absolute locations', async () => {
    const res = await call('POST', '', {
      resourceType: 'Bundle',
      type: 'batch',
      entry: [
        { request: { method: 'GET', url: 'Patient/pat-dupont' } },
        { request: { method: 'GET', url: 'Patient/nope' } },
        { resource: newPatient('BATCH'), request: { method: 'POST', url: 'Patient' } },
        { request: { method: 'GET', url: `${fhir.url}/Observation?patient=pat-dupont` } },
      ],
    });
    expect(res.status).toBe(200);
    expect(res.json.type).toBe('batch-response');
    const [read, missing, created, search] = res.json.entry;
    expect(read.response.status).toBe('200 OK');
    expect(read.fullUrl).toBe(`${fhir.url}/Patient/pat-dupont`);
    expect(missing.response.status).toBe('404 Not Found');
    expect(created.response.status).toBe('201 Created');
    expect(created.response.location).toBe(`${fhir.url}/Patient/${created.resource.id}/_history/1`);
    expect(created.response.etag).toBe('W/"1"');
    expect(search.resource.total).toBe(3);
  });

  it('processes a transaction atomically, resolving urn:uuid references', async () => {
    const ok = await call('POST', '', {
      resourceType: 'Bundle',
      type: 'transaction',
      entry: [
        { fullUrl: 'urn:uuid:8f9d0c6e-3c55-4a57-9a43-2f2e1c5b9a01', resource: newPatient('TX'), request: { method: 'POST', url: 'Patient' } },
        {
          resource: {
            resourceType: 'Observation',
            status: 'final',
            code: { text: 'x' },
            subject: { reference: 'urn:uuid:8f9d0c6e-3c55-4a57-9a43-2f2e1c5b9a01' },
          } satisfies Observation,
          request: { method: 'POST', url: 'Observation' },
        },
      ],
    });
    expect(ok.status).toBe(200);
    expect(ok.json.type).toBe('transaction-response');
    const patientId = ok.json.entry[0].resource.id as string;
    expect(ok.json.entry[1].resource.subject.reference).toBe(`Patient/${patientId}`);

    const before = (await call('GET', 'Patient?identifier=urn:test|TXFAIL')).json.total;
    const failed = await call('POST', '', {
      resourceType: 'Bundle',
      type: 'transaction',
      entry: [
        { resource: newPatient('TXFAIL'), request: { method: 'POST', url: 'Patient' } },
        { resource: { resourceType: 'Patient', id: 'x', foo: 1 }, request: { method: 'PUT', url: 'Patient/x' } },
      ],
    });
    expect(failed.status).toBe(400);
    expect((await call('GET', 'Patient?identifier=urn:test|TXFAIL')).json.total).toBe(before);
  });

  it('publishes a CapabilityStatement whose implementation.url is its own base', async () => {
    const res = await call('GET', 'metadata');
    expect(res.status).toBe(200);
    const cs = res.json as CapabilityStatement;
    expect(cs.resourceType).toBe('CapabilityStatement');
    expect(cs.fhirVersion).toBe('4.0.1');
    expect(cs.implementation?.url).toBe(fhir.url);
    expect(cs.rest?.[0]?.resource?.find((r) => r.type === 'Patient')?.interaction?.map((i) => i.code)).toContain('patch');
  });

  it('rejects invalid resources, unknown types and non-JSON bodies', async () => {
    expect((await call('POST', 'Patient', { resourceType: 'Patient', foo: 1 })).status).toBe(400);
    expect((await call('POST', 'Patient', '{not json')).status).toBe(400);
    expect((await call('POST', 'Patient', '<Patient/>', { 'content-type': 'application/fhir+xml' })).status).toBe(415);
    expect((await call('GET', 'Nonsense/1')).status).toBe(404);
    expect((await call('GET', 'Patient/pat-dupont', undefined, { accept: 'application/fhir+xml' })).status).toBe(406);
    expect((await call('GET', 'Patient/pat-dupont?_format=xml')).status).toBe(406);
    expect((await call('GET', 'Patient/pat-dupont', undefined, { accept: 'text/html,*/*;q=0.8' })).status).toBe(200);
  });

  it('answers 413 to a body larger than the configured limit', async () => {
    const big = { ...newPatient('BIG'), text: { status: 'generated', div: `<div xmlns="http://www.w3.org/1999/xhtml">${'x'.repeat(70_000)}</div>` } };
    const res = await call('POST', 'Patient', big);
    expect(res.status).toBe(413);
  });

  it('answers 413 to a chunked body that grows past the limit', async () => {
    const status = await new Promise<number>((resolve, reject) => {
      const req = request(`${fhir.url}/Patient`, { method: 'POST', headers: { 'content-type': JSON_TYPE } }, (res) => {
        res.resume();
        resolve(res.statusCode ?? 0);
      });
      req.on('error', reject);
      for (let i = 0; i < 10; i++) req.write('x'.repeat(10_000));
      req.end();
    });
    expect(status).toBe(413);
  });

  it('serves a Binary as FHIR JSON, or raw when its content type is asked for', async () => {
    const doc = (await call('GET', 'DocumentReference?patient=pat-dupont')).json.entry?.[0]?.resource;
    const binaryId = doc.content[0].attachment.url.split('/')[1];
    const json = await call('GET', `Binary/${binaryId}`);
    expect(json.json.resourceType).toBe('Binary');
    const raw = await fetch(`${fhir.url}/Binary/${binaryId}`, { headers: { accept: 'text/plain' } });
    expect(raw.headers.get('content-type')).toBe('text/plain');
    expect(await raw.text()).toContain('DUPONT');
  });

  it('reuses the connection (keep-alive)', async () => {
    const res = await fetch(`${fhir.url}/metadata`);
    await res.arrayBuffer();
    expect(res.headers.get('connection') ?? 'keep-alive').toBe('keep-alive');
    expect(res.headers.get('keep-alive')).toMatch(/timeout=65/);
  });

  it('answers 404 outside its base path', async () => {
    const res = await fetch(fhir.url.replace('/fhir', '/other'));
    expect(res.status).toBe(404);
  });
});

describe('demo-fhir command', () => {
  it('starts the engine, prints its URL and resource counts, and no names', async () => {
    const lines: string[] = [];
    const server = await runDemoFhirCli(['--port', '0', '--patients', '3', '--practitioners', '13', '--seed', '5'], (l) => lines.push(l));
    try {
      expect(lines[0]).toBe(`demo FHIR engine listening on ${server.url}`);
      expect(lines.join('\n')).toMatch(/Patient\s+\d+/);
      expect(lines.join('\n')).not.toMatch(/DUPONT|MARTIN/);
      expect((await fetch(`${server.url}/Patient/pat-dupont`)).status).toBe(200);
    } finally {
      await server.close();
    }
  });

  it('refuses a malformed option', async () => {
    await expect(runDemoFhirCli(['--patients', 'many'], () => undefined)).rejects.toThrow(/--patients/);
  });
});
