import { describe, expect, it } from 'vitest';
import { buildAuditEvents } from '../../src/audit/build.js';
import { notificationEvent } from '../../src/audit/notification-event.js';
import { buildReviewModel } from '../../src/audit/review-model.js';
import { reviewCsvFiles } from '../../src/audit/review-csv.js';
import { practitioner } from './fixtures.js';

/** The DIM's review shows, for each break-the-glass opening, whether the patient and her physician were told. */
const at = '2026-03-04T10:00:00.000Z';
const opened = (id: string, patient: string) =>
  buildAuditEvents({ kind: 'break-glass-start', ids: [id], requestId: `r-${id}`, recorded: at, principal: practitioner(), publicBaseUrl: 'x', site: 's', patients: [patient], breakGlass: { reason: 'Patient inconscient' } })[0]!;
const told = (of: string, status: 'sent' | 'failed', id: string) =>
  notificationEvent({ id, recorded: at, site: 's', requestId: `n-${id}`, patients: ['pat-1'], of, status, channel: 'communication', recipients: ['patient', 'attending'] });

describe('DIM review: notification of break-the-glass openings', () => {
  it('shows each opening as sent, failed (being retried) or pending, a later success winning over a failure', () => {
    const events = [opened('btg-a', 'pat-1'), opened('btg-b', 'pat-2'), opened('btg-c', 'pat-3'), told('btg-a', 'failed', 'n1'), told('btg-a', 'sent', 'n2'), told('btg-b', 'failed', 'n3')];
    const model = buildReviewModel(events, { from: '2026-03-04', to: '2026-03-04' });
    const byEvent = Object.fromEntries(model.breakGlass.map((r) => [r.eventId, r.notification]));
    expect(byEvent).toEqual({ 'btg-a': 'sent', 'btg-b': 'failed', 'btg-c': 'pending' });
    const csv = reviewCsvFiles(model)['break-glass.csv']!;
    expect(csv.split('\r\n')[0]).toContain(',notification,');
    expect(csv).toMatch(/btg-b\r\n|,failed,/);
  });
});
