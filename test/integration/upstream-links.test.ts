import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import request from 'supertest';
import { startStack, type Stack } from '../helpers/stack.js';

/**
 * In front of a server that builds its links on its own address, and of one that builds them on the
 * address caregate forwards (HAPI FHIR's proxy address strategy): an unchanged client pages through
 * long searches, finds what it created, and no link works for anyone else.
 */
const PUBLIC = 'http://caregate.test/fhir';

type Link = { relation: string; url: string };
type Page = { link?: Link[]; entry?: { fullUrl?: string; resource: { id: string; resourceType: string } }[] };

async function pageThrough(s: Stack, first: string, auth: Record<string, string>): Promise<{ ids: string[]; pages: number; links: string[] }> {
  const ids: string[] = [];
  const links: string[] = [];
  let pages = 0;
  let res = await request(s.gate.server).get(new URL(s.url).pathname + first).set(auth);
  for (;;) {
    expect(res.status).toBe(200);
    pages++;
    const b = res.body as Page;
    for (const e of b.entry ?? []) {
      ids.push(e.resource.id);
      expect(e.fullUrl?.startsWith(`${PUBLIC}/`)).toBe(true);
    }
    const next = b.link?.find((l) => l.relation === 'next')?.url;
    if (!next) return { ids, pages, links };
    expect(next.startsWith(`${PUBLIC}/_page/`)).toBe(true);
    // Short whatever the care set: a link that repeats caregate's narrowing is sealed without it.
    expect(next.length).toBeLessThanOrEqual(512);
    links.push(next);
    res = await request(s.gate.server).get(new URL(next).pathname).set(auth);
  }
}

describe.each([
  ['its own address', false],
  ['the forwarded address', true],
])('a FHIR server building links on %s', (_name, forwarded) => {
  let s: Stack;
  beforeAll(async () => {
    s = await startStack({ demo: { linksFromForwardedHeaders: forwarded }, server: `publicBaseUrl: "${PUBLIC}"` });
  });
  afterAll(async () => s?.close());

  it('lets the DIM page through a search of several pages, every page sealed for her', async () => {
    const r = await pageThrough(s, '/Patient?_count=40&_sort=_id', s.auth('dim'));
    expect(r.pages).toBeGreaterThan(3);
    expect(new Set(r.ids).size).toBe(r.ids.length);
    expect(r.ids.length).toBeGreaterThan(120);
  });

  it('lets a clinician page through a narrowed search of her patients', async () => {
    const r = await pageThrough(s, '/Observation?_count=5', s.auth('clinician'));
    expect(r.pages).toBeGreaterThan(1);
    expect(new Set(r.ids).size).toBe(r.ids.length);
  });

  it('refuses a paging link replayed by another user, anonymously, or edited', async () => {
    const first = await request(s.gate.server).get(new URL(s.url).pathname + '/Patient?_count=10').set(s.auth('dim'));
    const next = (first.body as Page).link!.find((l) => l.relation === 'next')!.url;
    const path = new URL(next).pathname;
    expect((await request(s.gate.server).get(path).set(s.auth('clinician'))).status).toBe(403);
    expect((await request(s.gate.server).get(path)).status).toBe(401);
    const token = path.split('/').pop()!;
    const flipped = token.slice(0, 20) + (token[20] === 'A' ? 'B' : 'A') + token.slice(21);
    expect((await request(s.gate.server).get(path.replace(token, flipped)).set(s.auth('dim'))).status).toBe(403);
    expect((await request(s.gate.server).get(path).set(s.auth('dim'))).status).toBe(200);
  });

  it('answers a create with a Location on the public base, which the client can read back', async () => {
    const created = await request(s.gate.server)
      .post(new URL(s.url).pathname + '/Observation')
      .set(s.auth('clinician'))
      .set('content-type', 'application/fhir+json')
      .send({ resourceType: 'Observation', status: 'final', code: { text: 'links test' }, subject: { reference: 'Patient/pat-dupont' } });
    expect(created.status).toBe(201);
    const location = created.headers.location as string;
    expect(location.startsWith(`${PUBLIC}/Observation/`)).toBe(true);
    const read = await request(s.gate.server).get(new URL(location).pathname).set(s.auth('clinician'));
    expect(read.status).toBe(200);
    expect(read.body.code.text).toBe('links test');
  });
});

describe('a FHIR server whose path differs from caregate’s, building links on the forwarded host', () => {
  it('drops its links unless its base is declared in upstream.publicBaseAliases', async () => {
    const bare = await startStack({ demo: { linksFromForwardedHeaders: true, basePath: '/hapi/fhir' }, server: `publicBaseUrl: "${PUBLIC}"` });
    try {
      const res = await request(bare.gate.server).get(new URL(bare.url).pathname + '/Patient?_count=10').set(bare.auth('dim'));
      expect(res.status).toBe(200);
      expect((res.body as Page).link?.find((l) => l.relation === 'next')).toBeUndefined();
      expect(JSON.stringify(res.body)).not.toContain('/hapi/fhir');
    } finally {
      await bare.close();
    }
    const aliased = await startStack({
      demo: { linksFromForwardedHeaders: true, basePath: '/hapi/fhir' },
      server: `publicBaseUrl: "${PUBLIC}"`,
      upstreamYaml: 'publicBaseAliases: ["http://caregate.test/hapi/fhir"]',
    });
    try {
      const r = await pageThrough(aliased, '/Patient?_count=40', aliased.auth('dim'));
      expect(r.pages).toBeGreaterThan(3);
    } finally {
      await aliased.close();
    }
  });

  it('leaves the upstream to build links on its own address when caregate sends no forwarded headers', async () => {
    const s = await startStack({ demo: { linksFromForwardedHeaders: true }, server: `publicBaseUrl: "${PUBLIC}"`, upstreamYaml: 'forwardedHeaders: false' });
    try {
      const r = await pageThrough(s, '/Patient?_count=40', s.auth('dim'));
      expect(r.pages).toBeGreaterThan(3);
    } finally {
      await s.close();
    }
  });
});
