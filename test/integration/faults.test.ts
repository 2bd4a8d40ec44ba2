import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import request from 'supertest';
import { startFaultStack, type FaultStack } from '../helpers/fault-stack.js';
import { startStack, type Stack } from '../helpers/stack.js';

/** Upstream faults get a clear OperationOutcome with the right status, and nothing unjudged leaks. */
let env: FaultStack;
let faults: FaultStack['faults'];
let stack: Stack;

beforeAll(async () => {
  env = await startFaultStack({ patients: 100, server: 'maxResponseBytes: 1mb, maxRequestBytes: 64kb' });
  ({ faults, stack } = env);
});
afterAll(async () => {
  await env?.close();
});

const path = (p: string) => new URL(stack.url).pathname + p;
const get = (p: string) => request(stack.gate.server).get(path(p)).set(stack.auth('dim'));

describe('upstream faults', () => {
  it('answers 504 with an OperationOutcome when the upstream does not answer in time', async () => {
    const res = await get('/Observation/fault-timeout');
    expect(res.status).toBe(504);
    expect(res.body.resourceType).toBe('OperationOutcome');
    expect(res.body.issue[0].code).toBe('timeout');
  });

  it('answers 502 with an OperationOutcome when the upstream cannot be reached', async () => {
    const s = await startStack({ upstreamUrl: 'http://127.0.0.1:9/fhir' });
    try {
      const res = await request(s.gate.server).get(new URL(s.url).pathname + '/metadata');
      expect(res.status).toBe(502);
      expect(res.body.resourceType).toBe('OperationOutcome');
    } finally {
      await s.close();
    }
  });

  it('keeps only the codes of an upstream 500, never its diagnostics', async () => {
    const res = await get('/Observation/fault-error500');
    expect(res.status).toBe(500);
    expect(res.body.resourceType).toBe('OperationOutcome');
    expect(res.text).not.toContain('secret-123');
  });

  it('reads a gzip body the upstream sent although identity was asked', async () => {
    const res = await get('/Observation/fault-gzip');
    // The resource is judged like any other.
    expect(res.status).toBe(200);
    expect(res.body.code.text).toBe('Gzipped');
  });

  it('refuses to pass a non-FHIR body (HTML) with a 502, without its content', async () => {
    const res = await get('/Observation/fault-html');
    expect(res.status).toBe(502);
    expect(res.text).not.toContain('Dupont');
  });

  it('refuses to pass a truncated JSON body with a 502', async () => {
    const res = await get('/Observation/fault-notjson');
    expect(res.status).toBe(502);
    expect(res.body.resourceType).toBe('OperationOutcome');
  });

  it('refuses an upstream resource with a duplicate key (two subjects) with a 502, never judging one reading of it', async () => {
    // JSON.parse would keep the last subject (the clinician's patient) while the client reads the first.
    const res = await request(stack.gate.server).get(path('/Observation/fault-dupkey')).set(stack.auth('clinician'));
    expect(res.status).toBe(502);
    expect(res.body.resourceType).toBe('OperationOutcome');
    expect(res.text).not.toContain('pat-outside');
  });

  it('refuses an upstream body that is not valid UTF-8 with a 502', async () => {
    const res = await get('/Observation/fault-badutf8');
    expect(res.status).toBe(502);
    expect(res.body.resourceType).toBe('OperationOutcome');
  });

  it('refuses an upstream body nested too deeply with a 502, not a 500', async () => {
    const res = await get('/Observation/fault-deep');
    expect(res.status).toBe(502);
    expect(res.body.resourceType).toBe('OperationOutcome');
  });

  it('refuses a search page whose entry holds a duplicate key with a 502', async () => {
    faults.rewriteWhen(/\/Observation\?/, (body) => body.replace('"resourceType":"Observation",', '"resourceType":"Observation","resourceType":"Observation",'));
    try {
      const res = await get('/Observation?patient=pat-dupont');
      expect(res.status).toBe(502);
      expect(res.body.resourceType).toBe('OperationOutcome');
    } finally {
      faults.rewriteWhen(undefined);
    }
  });

  it('answers 502 when the upstream answer is larger than the configured limit', async () => {
    const res = await get('/Observation/fault-huge');
    expect(res.status).toBe(502);
    expect(res.body.issue[0].details.text).toMatch(/larger/);
  });

  it('answers 413 when the request body is larger than the configured limit', async () => {
    const res = await request(stack.gate.server)
      .post(path('/Observation'))
      .set(stack.auth('dim'))
      .set('content-type', 'application/fhir+json')
      .send(JSON.stringify({ resourceType: 'Observation', status: 'final', code: { text: 'x'.repeat(100 * 1024) } }));
    expect(res.status).toBe(413);
    expect(res.body.resourceType).toBe('OperationOutcome');
  });
});

describe('care-relationship lookups that fail', () => {
  it('refuses with 503 when the CareTeam lookup fails, and never passes the data', async () => {
    faults.failWhen(/\/CareTeam\?/);
    try {
      // The surgeon's care set (cached or not) lacks this patient: the refusal is confirmed by a fresh lookup, which fails.
      const res = await request(stack.gate.server).get(path('/Patient/pat-dupont')).set(stack.auth('surgeon'));
      expect(res.status).toBe(503);
      expect(res.body.resourceType).toBe('OperationOutcome');
      expect(res.body.id).toBeUndefined();
    } finally {
      faults.failWhen(undefined);
    }
  });
});

describe('care-relationship lookups answered ambiguously', () => {
  it('refuses with 503 when a CareTeam lookup answers a duplicate key', async () => {
    // The nurse's care set is not cached yet in this file: it is resolved through the rewritten answer.
    faults.rewriteWhen(/\/CareTeam\?/, (body) => body.replace('"resourceType":"Bundle",', '"resourceType":"Bundle","resourceType":"Bundle",'));
    try {
      const res = await request(stack.gate.server).get(path('/Patient/pat-dupont')).set(stack.auth('nurse'));
      expect(res.status).toBe(503);
      expect(res.body.id).toBeUndefined();
    } finally {
      faults.rewriteWhen(undefined);
    }
  });
});

describe('narrowing', () => {
  it('sends a search the client limited to patients of her care set as it was sent', async () => {
    const seen = faults.urls.length;
    const res = await request(stack.gate.server).get(path('/Observation?patient=pat-dupont&_count=5')).set(stack.auth('clinician'));
    expect(res.status).toBe(200);
    const sent = faults.urls.slice(seen).filter((u) => u.includes('/Observation?'));
    expect(sent).toEqual(['/fhir/Observation?patient=pat-dupont&_count=5']);
  });

  it('narrows an unrestricted search to the care set', async () => {
    const seen = faults.urls.length;
    await request(stack.gate.server).get(path('/Observation?_count=5')).set(stack.auth('clinician'));
    const sent = faults.urls.slice(seen).filter((u) => u.includes('/Observation?'));
    expect(sent).toHaveLength(1);
    expect(sent[0]).toMatch(/&(patient|subject)=Patient\/[^&]*pat-dupont/);
  });
});

describe('request bodies', () => {
  it('sends the client’s bytes upstream, keeping the precision of FHIR decimals', async () => {
    const sent = '{"resourceType":"Observation","status":"final","code":{"text":"k"},"subject":{"reference":"Patient/pat-dupont"},"valueQuantity":{"value":1.50,"unit":"mmol/L"}}';
    const res = await request(stack.gate.server).post(path('/Observation')).set(stack.auth('dim')).set('content-type', 'application/fhir+json').send(sent);
    expect(res.status).toBe(201);
    expect(faults.bodies).toContain(sent);
  });
});
