import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startDemoFhir } from '../../src/demo/server.js';
import { checkUpstream, type UpstreamFinding } from '../../src/tools/check-upstream.js';

/** `caregate check-upstream` against the embedded engine in its two link modes. */
let own: Awaited<ReturnType<typeof startDemoFhir>>;
let forwarded: Awaited<ReturnType<typeof startDemoFhir>>;
beforeAll(async () => {
  own = await startDemoFhir({ seed: { seed: 42, patients: 10 } });
  forwarded = await startDemoFhir({ seed: { seed: 42, patients: 10 }, linksFromForwardedHeaders: true, basePath: '/hapi/fhir' });
});
afterAll(async () => {
  await own?.close();
  await forwarded?.close();
});

const PUBLIC = 'https://caregate.chu.example/fhir';
const find = (f: UpstreamFinding[], check: string): UpstreamFinding => f.find((x) => x.check === check)!;

describe('caregate check-upstream', () => {
  it('finds an R4 server whose links caregate recognises, attachments it can attribute, and compartments that answer', async () => {
    const f = await checkUpstream(own.url, { publicBaseUrl: PUBLIC, aliases: [], forwardedHeaders: true });
    expect(find(f, 'FHIR version').ok).toBe(true);
    expect(find(f, 'paging links')).toMatchObject({ ok: true });
    expect(find(f, 'attachments').ok).toBe(true);
    expect(find(f, 'compartment search').ok).toBe(true);
    expect(find(f, '$everything').ok).toBe(true);
  });

  it('names the base to declare when the server builds its links on a base caregate does not know', async () => {
    const f = await checkUpstream(forwarded.url, { publicBaseUrl: PUBLIC, aliases: [], forwardedHeaders: true });
    expect(find(f, 'paging links')).toMatchObject({ ok: false });
    expect(find(f, 'paging links').detail).toContain('https://caregate.chu.example/hapi/fhir');
    const fixed = await checkUpstream(forwarded.url, { publicBaseUrl: PUBLIC, aliases: ['https://caregate.chu.example/hapi/fhir'], forwardedHeaders: true });
    expect(find(fixed, 'paging links').ok).toBe(true);
  });
});
