import { describe, expect, it } from 'vitest';
import { pino } from 'pino';
import type { Resource } from '@medplum/fhirtypes';
import { classify } from '../../src/fhir/classify.js';
import { patientsOf } from '../../src/fhir/patients.js';
import type { ProxyError } from '../../src/http/errors.js';
import type { Authorization } from '../../src/policy/authorize.js';
import type { Decision, Obligation } from '../../src/policy/decision.js';
import type { CareSet, Evidence } from '../../src/relate/types.js';
import { createPageLinks } from '../../src/shape/paging.js';
import { createPseudonyms } from '../../src/shape/pseudonyms.js';
import { createResponseShaper, type ShapeInput } from '../../src/shape/response.js';
import { createBaseRewriter } from '../../src/shape/rewrite.js';

/**
 * The response stage on its own: an upstream answer and a decision in, the judged answer out. The
 * stage reads the decision's obligations and the care set, nothing else.
 */
const UPSTREAM = 'http://fhir.internal:8080/fhir';
const PUBLIC = 'https://caregate.chu.example/fhir';
const rewriter = createBaseRewriter(UPSTREAM, PUBLIC);
const pages = createPageLinks({ publicBaseUrl: PUBLIC, ttlSeconds: 600 });
const stored = new Map<string, Resource>();
const shape = createResponseShaper({
  linkOf: (r) => patientsOf(r, { localBases: [UPSTREAM] }),
  read: async (type, id) => stored.get(`${type}/${id}`),
  rewriter,
  pages,
  pseudonyms: createPseudonyms({ secret: Buffer.alloc(32, 7), localBases: [UPSTREAM] }),
  logger: pino({ level: 'silent' }),
});

const careSet = (...ids: string[]): CareSet => ({
  scope: 'listed',
  patients: new Map(ids.map((id) => [id, [{ source: 'careteam', reference: `CareTeam/${id}` } satisfies Evidence]])),
  resolvedAt: 0,
});
const permit = (obligations: Obligation[] = []): Decision => ({
  effect: 'permit',
  reason: 'care-relationship',
  rule: 'clinician.care-team',
  message: 'ok',
  evidence: [],
  obligations: [{ kind: 'filter-response' }, ...obligations],
  patients: [],
});

function input(line: string, set: CareSet, obligations: Obligation[] = [], extra: Partial<Authorization> = {}): ShapeInput {
  const [method, target] = line.split(' ') as [string, string];
  const q = target.indexOf('?');
  const interaction = classify({ method, path: q === -1 ? target : target.slice(0, q), query: q === -1 ? '' : target.slice(q + 1), headers: {}, rawHeaders: [] }, { maxBodyBytes: 1024 });
  return { userKey: 'Practitioner/prat-martin', authorization: { role: undefined, careSet: set, interaction, decision: permit(obligations), replaced: [], ...extra } };
}
const upstream = (body: unknown, status = 200, headers: Record<string, string> = {}) => ({
  status,
  headers: { 'content-type': 'application/fhir+json', ...headers },
  body: Buffer.from(JSON.stringify(body)),
  durationMs: 1,
});
const obs = (id: string, patient: string, extra: Record<string, unknown> = {}) => ({
  resourceType: 'Observation',
  id,
  status: 'final',
  code: { text: 'x' },
  subject: { reference: `Patient/${patient}` },
  ...extra,
});
const json = (s: { answer: { body: unknown } }) => JSON.parse(String(s.answer.body)) as Record<string, unknown> & { entry?: { resource: { id: string } }[]; link?: { relation: string; url: string }[] };

async function rejection(p: Promise<unknown>): Promise<ProxyError> {
  try {
    await p;
  } catch (err) {
    return err as ProxyError;
  }
  throw new Error('did not reject');
}

describe('shape: single resources', () => {
  it('answers a resource of the care set, and names its patient for the audit', async () => {
    const s = await shape(input('GET /Observation/o1', careSet('a')), upstream(obs('o1', 'a')));
    expect(json(s).id).toBe('o1');
    expect([...s.patients]).toEqual(['a']);
    expect(s.resources).toEqual(['Observation/o1']);
  });

  it('withholds a resource of another patient with the 404 of a miss', async () => {
    const e = await rejection(shape(input('GET /Observation/o1', careSet('a')), upstream(obs('o1', 'vic'))));
    expect(e.code).toBe('ERR_NOT_FOUND');
  });

  it('answers an upstream 404 with caregate’s own miss, and keeps only the codes of other errors', async () => {
    expect((await rejection(shape(input('GET /Observation/o1', careSet('a')), upstream({}, 404)))).code).toBe('ERR_NOT_FOUND');
    const s = await shape(input('GET /Observation/o1', careSet('a')), upstream({ resourceType: 'OperationOutcome', issue: [{ severity: 'error', code: 'exception', diagnostics: 'Patient/vic is Jean Dupont' }] }, 500));
    expect(s.answer.status).toBe(500);
    expect(String(s.answer.body)).not.toContain('Dupont');
  });

  it('withholds from a subject-only caller a resource she performed but is not the subject of', async () => {
    const o = { resourceType: 'Observation', id: 'o1', status: 'final', code: { text: 'x' }, performer: [{ reference: 'Patient/a' }] };
    expect(json(await shape(input('GET /Observation/o1', careSet('a')), upstream(o))).id).toBe('o1');
    const e = await rejection(shape(input('GET /Observation/o1', careSet('a'), [{ kind: 'subject-only' }]), upstream(o)));
    expect(e.code).toBe('ERR_NOT_FOUND');
  });

  it('shows AuditEvents only under the show-audit-trail obligation', async () => {
    const ev = { resourceType: 'AuditEvent', id: 'ae1', type: { code: 'rest' }, recorded: '2026-01-01T00:00:00Z', agent: [], source: { observer: {} }, entity: [{ what: { reference: 'Patient/a' } }] };
    expect((await rejection(shape(input('GET /AuditEvent/ae1', careSet('a')), upstream(ev)))).code).toBe('ERR_NOT_FOUND');
    const s = await shape(input('GET /AuditEvent/ae1', { scope: 'all', patients: new Map(), resolvedAt: 0 }, [{ kind: 'show-audit-trail' }]), upstream(ev));
    expect(json(s).id).toBe('ae1');
  });

  it('rewrites the upstream base into the public base, in the body and in Location', async () => {
    const s = await shape(input('GET /Observation/o1', careSet('a')), upstream(obs('o1', 'a', { derivedFrom: [{ reference: `${UPSTREAM}/Observation/o0` }] }), 200, { location: `${UPSTREAM}/Observation/o1/_history/1` }));
    expect(String(s.answer.body)).not.toContain('fhir.internal');
    expect(s.answer.headers.location).toBe(`${PUBLIC}/Observation/o1/_history/1`);
  });

  it('judges a Binary by the DocumentReference that points at it', async () => {
    stored.set('DocumentReference/d1', { resourceType: 'DocumentReference', id: 'd1', status: 'current', subject: { reference: 'Patient/vic' }, content: [{ attachment: { url: 'Binary/b1' } }] } as Resource);
    const binary = { resourceType: 'Binary', id: 'b1', contentType: 'text/plain', securityContext: { reference: 'DocumentReference/d1' }, data: 'eA==' };
    expect((await rejection(shape(input('GET /Binary/b1', careSet('a')), upstream(binary)))).code).toBe('ERR_NOT_FOUND');
    const s = await shape(input('GET /Binary/b1', careSet('vic')), upstream(binary));
    expect(json(s).id).toBe('b1');
  });
});

describe('shape: searches', () => {
  const page = {
    resourceType: 'Bundle',
    type: 'searchset',
    total: 2,
    link: [
      { relation: 'self', url: `${UPSTREAM}/Observation?code=x` },
      { relation: 'next', url: `${UPSTREAM}?_getpages=abc&_getpagesoffset=2` },
      { relation: 'alternate', url: 'https://elsewhere.example/fhir/Observation' },
    ],
    entry: [
      { fullUrl: `${UPSTREAM}/Observation/o1`, resource: obs('o1', 'a'), search: { mode: 'match' } },
      { fullUrl: `${UPSTREAM}/Observation/o2`, resource: obs('o2', 'vic'), search: { mode: 'match' } },
    ],
  };

  it('withholds the entries of other patients and the total they would reveal', async () => {
    const s = await shape(input('GET /Observation?code=x', careSet('a')), upstream(page));
    const b = json(s);
    expect(b.entry!.map((e) => e.resource.id)).toEqual(['o1']);
    expect(b.total).toBeUndefined();
  });

  it('keeps an exact total when every match is shown', async () => {
    const s = await shape(input('GET /Observation?code=x', careSet('a', 'vic')), upstream(page));
    expect(json(s).total).toBe(2);
  });

  it('seals upstream paging links for the caller, and drops links to elsewhere', async () => {
    const s = await shape(input('GET /Observation?code=x', careSet('a')), upstream(page));
    const links = json(s).link!;
    expect(links.map((l) => l.relation)).toEqual(['self', 'next']);
    for (const l of links) expect(l.url.startsWith(`${PUBLIC}/_page/`)).toBe(true);
    const token = links[1]!.url.slice(`${PUBLIC}/_page/`.length);
    expect(pages.open(token, 'Practitioner/prat-martin').link).toBe('?_getpages=abc&_getpagesoffset=2');
    expect(() => pages.open(token, 'Practitioner/prat-girard')).toThrow();
  });

  it('gives a first page the same sealed link for self and first, opening to its query', async () => {
    const first = { ...page, link: [page.link[0]!, { relation: 'first', url: `${UPSTREAM}/Observation?code=x` }, page.link[1]!] };
    const links = json(await shape(input('GET /Observation?code=x', careSet('a')), upstream(first))).link!;
    expect(links.map((l) => l.relation)).toEqual(['self', 'first', 'next']);
    expect(links[1]!.url).toBe(links[0]!.url);
    expect(links[2]!.url).not.toBe(links[0]!.url);
    expect(pages.open(links[1]!.url.slice(`${PUBLIC}/_page/`.length), 'Practitioner/prat-martin').link).toBe('Observation?code=x');
  });

  it('answers the history of a resource with a withheld version as a miss', async () => {
    const history = { resourceType: 'Bundle', type: 'history', entry: [{ resource: obs('o1', 'a') }, { resource: obs('o1', 'vic') }] };
    expect((await rejection(shape(input('GET /Observation/o1/_history', careSet('a')), upstream(history)))).code).toBe('ERR_NOT_FOUND');
  });

  it('reports data of a patient reached only through break-the-glass as a break-the-glass use', async () => {
    const s = await shape(input('GET /Observation?code=x', careSet('a', 'vic'), [{ kind: 'break-glass-patients', patients: ['vic'] }]), upstream(page));
    expect(s.breakGlassUse).toEqual(['vic']);
  });

  it('masks clinical content under the mask-clinical obligation', async () => {
    const enc = { resourceType: 'Encounter', id: 'e1', status: 'in-progress', class: { code: 'IMP' }, subject: { reference: 'Patient/a' }, reasonCode: [{ text: 'chest pain' }] };
    const s = await shape(input('GET /Encounter/e1', { scope: 'all', patients: new Map(), resolvedAt: 0 }, [{ kind: 'mask-clinical' }]), upstream(enc));
    expect(String(s.answer.body)).not.toContain('chest pain');
  });

  it('keeps a contractor to the engagement’s stays, de-identified', async () => {
    const set: CareSet = { ...careSet('a'), encounters: new Set(['e1']) };
    const bundle = {
      resourceType: 'Bundle',
      type: 'searchset',
      entry: [
        { resource: { resourceType: 'Condition', id: 'c1', subject: { reference: 'Patient/a' }, encounter: { reference: 'Encounter/e1' }, code: { text: 'x' } } },
        { resource: { resourceType: 'Condition', id: 'c2', subject: { reference: 'Patient/a' }, encounter: { reference: 'Encounter/e9' }, code: { text: 'y' } } },
      ],
    };
    const s = await shape(input('GET /Condition?code=x', set, [{ kind: 'stays-only' }, { kind: 'de-identify', engagement: 'codage' }], { engagement: { id: 'codage', dateMode: 'month' } as never }), upstream(bundle));
    const b = json(s);
    expect(b.entry).toHaveLength(1);
    expect(b.entry![0]!.resource.id).toMatch(/^p-/);
  });
});
