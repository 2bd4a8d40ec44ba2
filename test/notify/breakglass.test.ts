import type { AuditEvent, Bundle, BundleEntry, Communication, Encounter, PractitionerRole, Resource } from '@medplum/fhirtypes';
import { pino } from 'pino';
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import { buildAuditEvents } from '../../src/audit/build.js';
import { DetailType, EntityName } from '../../src/audit/codes.js';
import { notificationEvent } from '../../src/audit/notification-event.js';
import { ProxyError } from '../../src/http/errors.js';
import { notificationsSchema } from '../../src/notify/config.js';
import { createBreakGlassNotifier } from '../../src/notify/breakglass.js';
import type { Opening } from '../../src/notify/messages.js';
import type { FhirClient } from '../../src/upstream/client.js';
import { practitioner } from '../audit/fixtures.js';

/**
 * Told after an emergency access: the notifier writes the Communications (or calls the webhook)
 * without holding the access, retries until it succeeds, records each outcome in the trail, and
 * finds again in the trail an opening whose notification a restart lost.
 */
const NOW = Date.UTC(2026, 2, 4, 10);
const opening: Opening = {
  eventId: 'btg-1',
  patient: 'pat-1',
  practitioner: 'Practitioner/prat-roux',
  name: 'Sophie ROUX',
  professions: ['10'],
  reason: 'Patient inconscient',
  at: NOW,
  until: NOW + 3_600_000,
};
const stay: Encounter = {
  resourceType: 'Encounter',
  status: 'in-progress',
  class: { code: 'IMP' },
  subject: { reference: 'Patient/pat-1' },
  period: { start: '2026-03-01' },
  participant: [
    { type: [{ coding: [{ code: 'ATND' }] }], individual: { reference: 'PractitionerRole/role-martin' } },
    { type: [{ coding: [{ code: 'PART' }] }], individual: { reference: 'Practitioner/prat-nurse' } },
    { type: [{ coding: [{ code: 'ATND' }] }], individual: { reference: 'Practitioner/prat-roux' } },
  ],
};
const role: PractitionerRole = { resourceType: 'PractitionerRole', id: 'role-martin', active: true, practitioner: { reference: 'Practitioner/prat-martin' } };

function fakeUpstream(opts: { failBatches?: number; trail?: AuditEvent[]; consents?: Resource[] } = {}) {
  const written: Communication[] = [];
  let failures = opts.failBatches ?? 0;
  const client: FhirClient = {
    baseUrl: 'http://fhir.test',
    async searchAll<T extends Resource>(type: string, params: URLSearchParams | Record<string, string>): Promise<T[]> {
      if (type === 'Encounter') return [stay] as unknown as T[];
      if (type === 'Consent') return (opts.consents ?? []) as unknown as T[];
      if (type === 'AuditEvent') {
        const subtype = (params as Record<string, string>).subtype!;
        return (opts.trail ?? []).filter((e) => e.subtype?.some((c) => `${c.system}|${c.code}` === subtype)) as unknown as T[];
      }
      return [];
    },
    search: async () => ({ resourceType: 'Bundle', type: 'searchset' }) as Bundle,
    read: async <T extends Resource>(): Promise<T | undefined> => role as unknown as T,
    async batch(b: Bundle): Promise<Bundle> {
      if (failures-- > 0) throw new ProxyError('ERR_LOOKUP_FAILED', 'A lookup on the FHIR server failed; access cannot be decided.');
      const entry: BundleEntry[] = (b.entry ?? []).map((e) => {
        written.push(e.resource as Communication);
        return { response: { status: '201 Created' } };
      });
      return { resourceType: 'Bundle', type: 'batch-response', entry };
    },
    capabilities: async () => ({ resourceType: 'CapabilityStatement' }) as Resource,
    update: async <T extends Resource>(r: T) => r,
  };
  return { client, written };
}

function notifierWith(client: FhirClient, extra: Record<string, unknown> = {}, fetchImpl?: typeof fetch) {
  const recorded: AuditEvent[] = [];
  const config = notificationsSchema.parse({ breakGlass: { retry: { initialMs: 1000, maxMs: 8000 }, ...extra } }).breakGlass;
  const notifier = createBreakGlassNotifier({
    client,
    trail: client,
    audit: async (events) => {
      recorded.push(...events);
    },
    config: () => config,
    encounterStatuses: () => ['in-progress'],
    site: 'chu-demo',
    logger: pino({ level: 'silent' }),
    now: () => Date.now(),
    ...(fetchImpl ? { fetch: fetchImpl } : {}),
  });
  return { notifier, recorded };
}
const statusOf = (e: AuditEvent) => e.entity?.find((x) => x.name === EntityName.notification)?.detail?.find((d) => d.type === DetailType.notificationStatus)?.valueString;

beforeEach(() => {
  vi.useFakeTimers();
  vi.setSystemTime(NOW);
});
afterEach(() => {
  vi.useRealTimers();
});

describe('break-the-glass notifications', () => {
  it('writes a Communication to the patient and one to her attending physician (never the opener), and records that they were sent', async () => {
    const { client, written } = fakeUpstream();
    const { notifier, recorded } = notifierWith(client);
    notifier.notify(opening);
    await vi.advanceTimersByTimeAsync(10);
    expect(written.map((c) => [c.id, c.recipient])).toEqual([
      ['btg-btg-1-patient', [{ reference: 'Patient/pat-1' }]],
      ['btg-btg-1-attending', [{ reference: 'Practitioner/prat-martin' }]],
    ]);
    expect(written[0]!.payload![0]!.contentString).toContain('Sophie ROUX (Médecin)');
    expect(written[0]!.payload![0]!.contentString).toContain('« Patient inconscient »');
    expect(recorded.map(statusOf)).toEqual(['sent']);
    expect(recorded[0]!.entity!.filter((e) => e.role?.code === '1').map((e) => e.what?.reference)).toEqual(['Patient/pat-1']);
    expect(notifier.pending).toBe(0);
    await notifier.stop();
  });

  it('does not tell an attending physician the patient opposed', async () => {
    const opposition = {
      resourceType: 'Consent',
      id: 'c1',
      status: 'active',
      scope: { coding: [{ system: 'http://terminology.hl7.org/CodeSystem/consentscope', code: 'patient-privacy' }] },
      category: [{ text: 'opposition' }],
      patient: { reference: 'Patient/pat-1' },
      provision: { type: 'deny', actor: [{ role: { text: 'x' }, reference: { reference: 'Practitioner/prat-martin' } }] },
    } as Resource;
    const { client, written } = fakeUpstream({ consents: [opposition] });
    const { notifier, recorded } = notifierWith(client);
    notifier.notify(opening);
    await vi.advanceTimersByTimeAsync(10);
    expect(written.map((c) => c.id)).toEqual(['btg-btg-1-patient']);
    expect(recorded[0]!.entity!.find((e) => e.name === EntityName.notification)?.detail).toContainEqual({ type: DetailType.notificationRecipients, valueString: 'patient' });
    await notifier.stop();
  });

  it('retries a failed notification with backoff until it is sent, recording the failure once for the DIM', async () => {
    const { client, written } = fakeUpstream({ failBatches: 2 });
    const { notifier, recorded } = notifierWith(client);
    notifier.notify(opening);
    await vi.advanceTimersByTimeAsync(10);
    expect(recorded.map(statusOf)).toEqual(['failed']);
    expect(notifier.pending).toBe(1);
    await vi.advanceTimersByTimeAsync(1000);
    expect(written).toEqual([]);
    await vi.advanceTimersByTimeAsync(2000);
    expect(written).toHaveLength(2);
    expect(recorded.map(statusOf)).toEqual(['failed', 'sent']);
    expect(notifier.pending).toBe(0);
    await notifier.stop();
  });

  it('posts the webhook with the opening as idempotency key, when configured', async () => {
    const calls: { url: string; init: RequestInit }[] = [];
    const fetchImpl = (async (url: string, init: RequestInit) => {
      calls.push({ url, init });
      return new Response(null, { status: 202 });
    }) as unknown as typeof fetch;
    const { notifier, recorded } = notifierWith(fakeUpstream().client, { channel: 'webhook', webhook: { url: 'https://hooks.chu.example/btg' } }, fetchImpl);
    notifier.notify(opening);
    await vi.advanceTimersByTimeAsync(10);
    expect(calls).toHaveLength(1);
    expect((calls[0]!.init.headers as Record<string, string>)['idempotency-key']).toBe('btg-1');
    expect(JSON.parse(calls[0]!.init.body as string)).toMatchObject({ type: 'break-glass', patient: 'Patient/pat-1', reason: 'Patient inconscient', notify: { patient: true, attending: ['Practitioner/prat-martin'] } });
    expect(recorded.map(statusOf)).toEqual(['sent']);
    await notifier.stop();
  });

  it('finds in the trail an opening whose notification was lost, and leaves one already sent', async () => {
    const start = (id: string) =>
      buildAuditEvents({ kind: 'break-glass-start', ids: [id], requestId: 'r', recorded: new Date(NOW).toISOString(), principal: practitioner(), publicBaseUrl: 'x', site: 's', patients: ['pat-1'], breakGlass: { reason: 'Patient inconscient', until: new Date(NOW + 60_000).toISOString() } })[0]!;
    const sent = notificationEvent({ id: 'n', recorded: new Date(NOW).toISOString(), site: 's', requestId: 'r', patients: ['pat-1'], of: 'btg-sent', status: 'sent', channel: 'communication', recipients: ['patient'] });
    const { client, written } = fakeUpstream({ trail: [start('btg-lost'), start('btg-sent'), sent] });
    const { notifier } = notifierWith(client);
    expect(await notifier.reconcile()).toBe(1);
    await vi.advanceTimersByTimeAsync(10);
    expect(written.map((c) => c.id)).toEqual(['btg-btg-lost-patient', 'btg-btg-lost-attending']);
    expect(written[0]!.payload![0]!.contentString).toContain('Claire MARTIN');
    await notifier.stop();
  });
});
