import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import request from 'supertest';
import { join } from 'node:path';
import type { AuditEvent, Bundle } from '@medplum/fhirtypes';
import { readSpoolDir } from '../../src/audit/spool.js';
import { EntityName, ObjectRole } from '../../src/audit/codes.js';
import { startStack, type Stack } from '../helpers/stack.js';

/**
 * The DIM review served by caregate: authenticated like the FHIR API, allowed only to `readAudit`
 * roles, read from the FHIR server, and every view itself audited.
 */
let stack: Stack;
const BTG = 'http://terminology.hl7.org/CodeSystem/v3-ActReason#BTG; scheme="http://hl7.org/fhir/tag/security"; label="break the glass"';
const REASON = 'Patient inconscient au SAU, <script>alert(1)</script>';
const fhir = (p: string) => new URL(stack.url).pathname + p;

beforeAll(async () => {
  stack = await startStack({ patients: 50 });
  // An emergency physician breaks the glass on a patient outside her care relationships.
  const opened = await request(stack.gate.server)
    .get(fhir('/Patient/pat-dupont'))
    .set(stack.auth('emergency'))
    .set('category', BTG)
    .set('x-btg-reason', encodeURIComponent(REASON))
    .set('x-request-id', 'review-btg-open');
  expect(opened.status).toBe(200);
  const read = await request(stack.gate.server).get(fhir('/Patient/pat-dupont')).set(stack.auth('emergency')).set('x-request-id', 'review-btg-read');
  expect(read.status).toBe(200);
  // Wait until the shipper has put them on the FHIR server, where the review reads the trail.
  await waitFor(async () => {
    const b = (await (await fetch(`${stack.upstreamUrl}/AuditEvent?_count=1000`)).json()) as Bundle<AuditEvent>;
    const ids = (b.entry ?? []).flatMap((e) => e.resource?.entity?.map((en) => en.what?.identifier?.value) ?? []);
    return ids.includes('review-btg-open') && ids.includes('review-btg-read') ? true : undefined;
  });
}, 30_000);
afterAll(async () => stack?.close());

async function waitFor<T>(probe: () => Promise<T | undefined>, ms = 10_000): Promise<T> {
  const end = Date.now() + ms;
  for (;;) {
    const v = await probe();
    if (v !== undefined) return v;
    if (Date.now() > end) throw new Error('timed out');
    await new Promise((r) => setTimeout(r, 100));
  }
}

async function spooledOf(requestId: string): Promise<AuditEvent[]> {
  const { events } = await readSpoolDir(join(stack.dir, 'audit'));
  return events.filter((e) => e.entity?.some((en) => en.what?.identifier?.value === requestId));
}

describe('DIM review served by caregate', () => {
  it('refuses a request without credential with a 401 OperationOutcome, recorded as a failed login', async () => {
    const res = await request(stack.gate.server).get('/caregate/review').set('x-request-id', 'review-anon');
    expect(res.status).toBe(401);
    expect(res.body.resourceType).toBe('OperationOutcome');
    expect(res.headers['www-authenticate']).toMatch(/^Bearer/);
    const [ev] = await spooledOf('review-anon');
    expect(ev!.type.code).toBe('110114');
  });

  it('refuses a clinician with a 403 OperationOutcome, and records the attempt', async () => {
    const res = await request(stack.gate.server).get('/caregate/review?patient=pat-dupont').set(stack.auth('clinician')).set('x-request-id', 'review-clinician');
    expect(res.status).toBe(403);
    expect(res.body.resourceType).toBe('OperationOutcome');
    expect(res.text).not.toContain(REASON);
    const csv = await request(stack.gate.server).get('/caregate/review/break-glass.csv').set(stack.auth('clinician'));
    expect(csv.status).toBe(403);
    const [ev] = await spooledOf('review-clinician');
    expect(ev!.outcome).toBe('4');
    expect(ev!.entity!.some((e) => e.what?.reference === 'Patient/pat-dupont')).toBe(true);
    expect(ev!.entity!.find((e) => e.name === EntityName.decision)!.detail).toContainEqual({ type: 'decision-reason', valueString: 'role-forbidden' });
  });

  it('refuses every other role without readAudit, including the patient asking about herself', async () => {
    for (const persona of ['emergency', 'surgeon', 'director', 'patient'] as const) {
      expect((await request(stack.gate.server).get('/caregate/review').set(stack.auth(persona))).status, persona).toBe(403);
    }
  });

  it('shows the DIM the report under a strict nonce CSP, never cached, listing the break-the-glass access with its reason', async () => {
    const res = await request(stack.gate.server).get('/caregate/review').set(stack.auth('dim')).set('x-request-id', 'review-dim-html');
    expect(res.status).toBe(200);
    expect(res.headers['content-type']).toMatch(/^text\/html/);
    expect(res.headers['cache-control']).toBe('no-store');
    const csp = res.headers['content-security-policy'] as string;
    const nonce = /script-src 'nonce-([^']+)'/.exec(csp)?.[1];
    expect(nonce).toBeDefined();
    expect(csp).toContain("default-src 'none'");
    expect(csp).toContain(`style-src 'nonce-${nonce}'`);
    expect(res.text).toContain(`<script nonce="${nonce}">`);
    expect(res.text).toContain(`<style nonce="${nonce}">`);
    // The reason as typed, escaped: the page never runs what a user typed.
    expect(res.text).toContain('Patient inconscient au SAU, &lt;script&gt;alert(1)&lt;/script&gt;');
    expect(res.text).not.toContain('<script>alert(1)</script>');
    expect(res.text).toContain('Patient/pat-dupont');
    // Links to the CSV files of the same period, relative to the page.
    expect(res.text).toMatch(/href="review\/break-glass\.csv\?from=\d{4}-\d\d-\d\d&amp;to=\d{4}-\d\d-\d\d"/);
  });

  it('answers "who saw this patient" with every access to her, and the CSV files', async () => {
    const page = await request(stack.gate.server).get('/caregate/review?patient=pat-dupont').set(stack.auth('dim'));
    expect(page.status).toBe(200);
    expect(page.text).toContain('Every access to Patient/pat-dupont');
    const whoSaw = await request(stack.gate.server).get('/caregate/review/patient-pat-dupont.csv?patient=pat-dupont').set(stack.auth('dim'));
    expect(whoSaw.status).toBe(200);
    expect(whoSaw.headers['content-type']).toMatch(/^text\/csv/);
    expect(whoSaw.headers['content-disposition']).toBe('attachment; filename="patient-pat-dupont.csv"');
    expect(whoSaw.headers['cache-control']).toBe('no-store');
    const rows = whoSaw.text.split('\r\n').filter((l) => l.includes('review-btg-read'));
    expect(rows.length).toBeGreaterThan(0);
    expect(rows[0]).toContain('BTG');
    expect(rows[0]).toContain('Patient inconscient au SAU');
    const btg = await request(stack.gate.server).get('/caregate/review/break-glass.csv').set(stack.auth('dim'));
    expect(btg.status).toBe(200);
    const opened = btg.text.split('\r\n').find((l) => l.includes('review-btg-open') && l.includes(',opened,'));
    expect(opened).toContain('Patient/pat-dupont');
    expect(opened).toContain('Patient inconscient au SAU');
  });

  it('audits each view before it is sent: a search on AuditEvent, purpose HOPERAT, with the patient asked about', async () => {
    const res = await request(stack.gate.server).get('/caregate/review/refusals.csv?patient=pat-dupont').set(stack.auth('dim')).set('x-request-id', 'review-dim-csv');
    expect(res.status).toBe(200);
    // Strict audit: the event is in the spool once the answer is out.
    const [ev, ...more] = await spooledOf('review-dim-csv');
    expect(more).toEqual([]);
    expect(ev!.outcome).toBe('0');
    expect(ev!.subtype?.[0]?.code).toBe('search-type');
    expect(ev!.purposeOfEvent?.[0]?.coding?.[0]?.code).toBe('HOPERAT');
    const query = ev!.entity!.find((e) => e.role?.code === ObjectRole.query.code)!;
    expect(query.description).toMatch(/^AuditEvent\?date=ge.*&date=le.*&entity=Patient\/pat-dupont$/);
    expect(ev!.entity!.some((e) => e.what?.reference === 'Patient/pat-dupont')).toBe(true);
    expect(ev!.agent.find((a) => a.requestor)?.who?.reference).toMatch(/^Practitioner\//);
  });

  it('refuses malformed views: unknown or repeated parameters, bad dates, a too long period, unknown files, other methods', async () => {
    const dim = stack.auth('dim');
    const srv = stack.gate.server;
    expect((await request(srv).get('/caregate/review?user=x').set(dim)).status).toBe(400);
    expect((await request(srv).get('/caregate/review?from=2026-01-01&from=2026-01-02').set(dim)).status).toBe(400);
    expect((await request(srv).get('/caregate/review?from=yesterday').set(dim)).status).toBe(400);
    expect((await request(srv).get('/caregate/review?from=2026-02-01&to=2026-01-01').set(dim)).status).toBe(400);
    expect((await request(srv).get('/caregate/review?from=2020-01-01&to=2026-01-01').set(dim)).status).toBe(400);
    expect((await request(srv).get('/caregate/review?patient=../x').set(dim)).status).toBe(400);
    expect((await request(srv).get('/caregate/review/report.html').set(dim)).status).toBe(404);
    expect((await request(srv).get('/caregate/review/nothing.csv').set(dim)).status).toBe(404);
    expect((await request(srv).get('/caregate/review/').set(dim)).status).toBe(404);
    const post = await request(srv).post('/caregate/review').set(dim);
    expect(post.status).toBe(405);
    expect(post.body.resourceType).toBe('OperationOutcome');
    expect((await request(srv).get('/caregate/review?access_token=abc').set(dim)).status).toBe(400);
  });
});
