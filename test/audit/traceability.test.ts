import { readdirSync, readFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import type { AuditEvent } from '@medplum/fhirtypes';
import { describe, expect, it } from 'vitest';
import { buildVerdictEvent } from '../../src/audit/verdict.js';
import { practitioner } from './fixtures.js';

/**
 * The AuditEvents caregate writes against the CI-SIS profile "Traçabilité des événements"
 * (ans.fhir.fr.tde, TDEAuditEvent: subtype 0..1, period.start 1..1, agent 0..2 with who 1..1),
 * as far as it goes (docs/TRACEABILITY.md). The one deviation, BALP's three agents, is asserted as
 * such, so that a change either way is noticed.
 */
const DIR = resolve(import.meta.dirname, '../../docs/audit-examples');
const examples: [string, AuditEvent][] = readdirSync(DIR)
  .filter((f) => f.endsWith('.json'))
  .flatMap((f) => (JSON.parse(readFileSync(join(DIR, f), 'utf8')) as AuditEvent[]).map((e): [string, AuditEvent] => [f, e]));
const verdict = buildVerdictEvent({
  requestId: 'r1',
  recorded: '2026-03-03T09:00:00.000Z',
  principal: practitioner({ practitioner: 'Practitioner/prat-leroy', policyRoles: ['dim'] }),
  clientAddress: '10.0.0.5',
  publicBaseUrl: 'https://fhir.example/fhir',
  site: 'chu-demo',
  opening: { id: 'ae-1', patient: 'pat-1', openedBy: 'Practitioner/prat-roux' },
  verdict: 'unjustified',
  comment: 'no emergency that day',
});
const events: [string, AuditEvent][] = [...examples, ['break-glass-verdict', verdict]];

describe('CI-SIS traceability profile (TDE)', () => {
  it('has every kind of event to check', () => {
    expect(new Set(events.map(([f]) => f)).size).toBeGreaterThanOrEqual(10);
  });

  it.each(events)('%s: one subtype at most, the date of occurrence, and who every agent is', (_f, e) => {
    expect((e.subtype ?? []).length).toBeLessThanOrEqual(1);
    expect(e.period?.start).toBe(e.recorded);
    for (const a of e.agent) expect(a.who?.identifier ?? a.who?.reference ?? a.who?.display).toBeTruthy();
    // source.observer is a reference by display only (Device, Practitioner… as a type constraint).
    expect(e.source.observer).toEqual({ display: 'caregate' });
  });

  it.each(events.filter(([, e]) => e.agent.some((a) => a.requestor && a.type?.coding?.[0]?.code === 'IRCP')))(
    '%s: deviates on purpose with BALP’s client, server and user agents (TDE allows two)',
    (_f, e) => {
      expect(e.agent).toHaveLength(3);
      expect(e.agent.filter((a) => a.requestor)).toHaveLength(1);
    },
  );
});
