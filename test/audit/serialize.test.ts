import { describe, expect, it } from 'vitest';
import { buildAuditEvents } from '../../src/audit/build.js';
import { lineText, serializeAuditEvents, SharedText } from '../../src/audit/serialize.js';
import { baseInput, interaction, permit } from './fixtures.js';

describe('serializeAuditEvents', () => {
  it('gives exactly the text JSON.stringify gives, for the hundred per-patient events of a search', () => {
    const patients = Array.from({ length: 100 }, (_, i) => `pat-${i}`);
    const events = buildAuditEvents({
      ...baseInput(),
      interaction: interaction('search-type', { resourceType: 'Patient', path: 'Patient' }),
      decision: permit(),
      patients,
      evidenceByPatient: new Map(patients.map((p) => [p, [{ source: 'careteam' as const, reference: `CareTeam/ct-${p}` }]])),
      breakGlassPatients: new Set(['pat-7']),
    });
    expect(events).toHaveLength(100);
    const json = serializeAuditEvents(events);
    json.forEach((line, i) => expect(lineText(line)).toBe(JSON.stringify(events[i])));
    // The frame the events share is one piece, the same object in every line that has it.
    const shared = json.flatMap((line) => (typeof line === 'string' ? [] : line.filter((p) => p instanceof SharedText)));
    expect(shared.length).toBeGreaterThanOrEqual(99);
    expect(new Set(shared).size).toBeLessThanOrEqual(3);
  });

  it('gives the one event of a read unchanged', () => {
    const events = buildAuditEvents({ ...baseInput(), interaction: interaction('read', { resourceType: 'Patient', id: 'p', path: 'Patient/p' }), decision: permit(), patients: ['p'] });
    expect(serializeAuditEvents(events)).toEqual([JSON.stringify(events[0])]);
  });
});
