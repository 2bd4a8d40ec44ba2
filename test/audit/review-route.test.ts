import { describe, expect, it } from 'vitest';
import { parseQuery } from '../../src/audit/review-route.js';
import { buildReviewModel } from '../../src/audit/review-model.js';
import { renderReviewHtml } from '../../src/audit/report-html.js';

const opts = { hours: { timeZone: 'Europe/Paris', offHoursStart: 20, offHoursEnd: 7, weekends: true }, maxDays: 92 };

describe('review route query', () => {
  it('defaults to the last seven days, today included, in the review time zone', () => {
    // 23:30 UTC on 31 March is already 1 April in Paris.
    const q = parseQuery('', opts, new Date('2026-03-31T23:30:00Z'));
    expect(q.fromInput).toBe('2026-03-26');
    expect(q.toInput).toBe('2026-04-01');
    expect(q.from).toBe('2026-03-25T23:00:00.000Z');
    expect(q.to).toBe('2026-04-01T21:59:59.999Z');
    expect(q.patient).toBeUndefined();
  });

  it('takes a patient as an id or Patient/<id>, and instants as well as dates', () => {
    const q = parseQuery('from=2026-01-01T08:00:00Z&to=2026-01-02&patient=Patient/pat-1', opts, new Date());
    expect(q.from).toBe('2026-01-01T08:00:00.000Z');
    expect(q.patient).toBe('pat-1');
  });

  it('refuses what it does not understand', () => {
    const now = new Date('2026-03-01T12:00:00Z');
    for (const raw of ['x=1', 'from=a', 'to=2026-01-01&to=2026-01-02', 'from=2026-03-01&to=2026-02-01', 'patient=a%2Fb', 'patient=', 'from=2025-01-01&to=2026-01-01']) {
      if (raw === 'patient=') expect(parseQuery(raw, opts, now).patient).toBeUndefined();
      else expect(() => parseQuery(raw, opts, now), raw).toThrow();
    }
  });
});

describe('served report controls', () => {
  it('adds a period form and CSV links relative to the page, escaped', () => {
    const model = buildReviewModel([], { from: '2026-01-01', to: '2026-01-07' });
    const html = renderReviewHtml(model, { nonce: 'n1', nav: { from: '2026-01-01', to: '2026-01-07', patient: 'a"b', files: ['refusals.csv'] } });
    expect(html).toContain('<form method="get" action="review">');
    expect(html).toContain('value="a&quot;b"');
    expect(html).toContain('href="review/refusals.csv?from=2026-01-01&amp;to=2026-01-07&amp;patient=a%22b"');
    expect(renderReviewHtml(model)).not.toContain('<form');
  });
});
