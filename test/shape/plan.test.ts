import { describe, expect, it } from 'vitest';
import { classify } from '../../src/fhir/classify.js';
import { ProxyError } from '../../src/http/errors.js';
import type { Authorization } from '../../src/policy/authorize.js';
import type { Decision, Obligation } from '../../src/policy/decision.js';
import { createPlanner } from '../../src/shape/plan.js';
import { createRequestShaper } from '../../src/shape/request.js';
import { createBaseRewriter } from '../../src/shape/rewrite.js';

/** The plan stage on its own: what goes upstream for a decision, or what is answered locally. */
const UPSTREAM = 'http://fhir.internal:8080/fhir';
const PUBLIC = 'https://caregate.chu.example/fhir';
const plan = createPlanner({
  shapeRequest: createRequestShaper({ serviceHeaders: { authorization: 'Bearer service' }, publicBaseUrl: PUBLIC }),
  rewriter: createBaseRewriter(UPSTREAM, PUBLIC),
});
const req = { id: 'req-1', clientAddress: '10.0.0.5', headers: {}, body: undefined };

function interaction(line: string, body?: unknown) {
  const [method, target] = line.split(' ') as [string, string];
  const q = target.indexOf('?');
  const text = body === undefined ? undefined : JSON.stringify(body);
  return classify(
    {
      method,
      path: q === -1 ? target : target.slice(0, q),
      query: q === -1 ? '' : target.slice(q + 1),
      headers: text ? { 'content-type': 'application/fhir+json' } : {},
      rawHeaders: text ? ['content-type', 'application/fhir+json'] : [],
      ...(text ? { body: Buffer.from(text) } : {}),
    },
    { maxBodyBytes: 1 << 20 },
  );
}

const permit = (obligations: Obligation[] = [{ kind: 'filter-response' }]): Decision => ({
  effect: 'permit',
  reason: 'care-relationship',
  rule: 'clinician.care-team',
  message: 'ok',
  evidence: [],
  obligations,
  patients: [],
});
const deny = (extra: Partial<Decision> = {}): Decision => ({ ...permit(), effect: 'deny', reason: 'no-care-relationship', message: 'Not in your care.', obligations: [], ...extra });

function authorization(line: string, decision: Decision, extra: Partial<Authorization> = {}, body?: unknown): Authorization {
  return { role: undefined, careSet: undefined, interaction: interaction(line, body), decision, replaced: [], ...extra };
}

function thrown(fn: () => unknown): ProxyError {
  try {
    fn();
  } catch (err) {
    return err as ProxyError;
  }
  throw new Error('did not throw');
}

describe('plan: refusals', () => {
  it('raises a denial as a 403 with the decision’s message', () => {
    const e = thrown(() => plan(req, authorization('GET /Patient/vic', deny())));
    expect(e.code).toBe('ERR_FORBIDDEN');
    expect(e.message).toBe('Not in your care.');
  });

  it('raises a hidden denial as the 404 of a miss', () => {
    const e = thrown(() => plan(req, authorization('GET /Observation/o1', deny({ refuseAs: 'not-found' }))));
    expect(e.code).toBe('ERR_NOT_FOUND');
    expect(e.message).toBe('Resource not found.');
  });

  it('answers a probing search with an empty searchset, without asking the upstream', () => {
    const p = plan(req, authorization('GET /Observation?patient=vic', deny({ refuseAs: 'empty-searchset' })));
    expect(p.kind).toBe('local');
    if (p.kind !== 'local') return;
    expect(p.answer.status).toBe(200);
    expect(JSON.parse(String(p.answer.body))).toEqual({ resourceType: 'Bundle', type: 'searchset', total: 0 });
  });
});

describe('plan: upstream requests built from the decision', () => {
  it('narrows a search to the care set named by the decision', () => {
    const p = plan(req, authorization('GET /Observation?code=8867-4', permit([{ kind: 'filter-response' }, { kind: 'narrow', param: 'patient', patients: ['a', 'b'] }])));
    expect(p.kind === 'upstream' && p.request.path).toBe('/Observation?code=8867-4&patient=Patient/a,Patient/b');
  });

  it('narrows a Patient search by _id', () => {
    const p = plan(req, authorization('GET /Patient?gender=female', permit([{ kind: 'narrow', param: '_id', patients: ['a'] }])));
    expect(p.kind === 'upstream' && p.request.path).toBe('/Patient?gender=female&_id=a');
  });

  it('answers an empty searchset locally when the decision narrows to no patient', () => {
    const p = plan(req, authorization('GET /Observation', permit([{ kind: 'narrow', param: '', patients: [] }])));
    expect(p.kind).toBe('local');
  });

  it('takes _elements out of the upstream query and keeps it for the response', () => {
    const p = plan(req, authorization('GET /Observation?patient=a&_elements=code,status', permit()));
    expect(p.kind).toBe('upstream');
    if (p.kind !== 'upstream') return;
    expect(p.request.path).toBe('/Observation?patient=a');
    expect([...(p.subsetting?.elements ?? [])]).toEqual(['code', 'status']);
  });

  it('sends the proxy’s own credential and forwarded headers, never the client’s', () => {
    const p = plan({ ...req, headers: { authorization: 'Bearer user-token', cookie: 'x' } }, authorization('GET /Patient/a', permit()));
    expect(p.kind === 'upstream' && p.request.headers).toMatchObject({ authorization: 'Bearer service', 'x-forwarded-host': 'caregate.chu.example' });
    expect(p.kind === 'upstream' && p.request.headers.cookie).toBeUndefined();
  });

  it('answers an opened break-the-glass locally with the end of the grant', () => {
    const until = Date.UTC(2026, 11, 7, 10, 0, 0);
    const p = plan(req, authorization('POST /Patient/vic/$break-glass', permit(), { grant: { patient: 'vic', reason: 'r', until } }, { resourceType: 'Parameters' }));
    expect(p.kind).toBe('local');
    if (p.kind !== 'local') return;
    expect(String(p.answer.body)).toContain('2026-12-07T10:00:00.000Z');
  });
});

describe('plan: batches', () => {
  const batch = {
    resourceType: 'Bundle',
    type: 'batch',
    entry: [{ request: { method: 'GET', url: 'Patient/a' } }, { request: { method: 'GET', url: 'Patient/vic' } }, { request: { method: 'GET', url: 'Observation?code=x' } }],
  };

  it('sends only the permitted entries, each narrowed by its own decision', () => {
    const a = authorization('POST /', permit(), {
      entries: [{ decision: permit() }, { decision: deny() }, { decision: permit([{ kind: 'narrow', param: 'patient', patients: ['a'] }]) }],
    }, batch);
    const p = plan(req, a);
    expect(p.kind).toBe('upstream');
    if (p.kind !== 'upstream') return;
    const sent = JSON.parse(p.request.body!.toString()) as { entry: { request: { url: string } }[] };
    expect(sent.entry.map((e) => e.request.url)).toEqual(['Patient/a', 'Observation?code=x&patient=Patient/a']);
  });

  it('answers every refusal locally when no entry is permitted', () => {
    const a = authorization('POST /', permit(), { entries: [{ decision: deny() }, { decision: deny({ refuseAs: 'not-found' }) }, { decision: deny() }] }, batch);
    const p = plan(req, a);
    expect(p.kind).toBe('local');
    if (p.kind !== 'local') return;
    const b = JSON.parse(String(p.answer.body)) as { type: string; entry: { response: { status: string } }[] };
    expect(b.type).toBe('batch-response');
    expect(b.entry.map((e) => e.response.status)).toEqual(['403 Forbidden', '404 Not Found', '403 Forbidden']);
  });

  it('does not send a permitted entry that failed on its own, and answers its error', () => {
    const a = authorization('POST /', permit(), {
      entries: [{ decision: permit(), error: new ProxyError('ERR_NOT_FOUND', 'Resource not found.') }, { decision: deny() }, { decision: deny() }],
    }, batch);
    const p = plan(req, a);
    expect(p.kind).toBe('local');
  });
});
