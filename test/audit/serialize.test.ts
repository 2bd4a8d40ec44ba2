import { describe, expect, it } from 'vitest';
import { buildAuditEvents } from '../../src/audit/build.js';
import { serializeAuditEvents } from '../../src/audit/serialize.js';
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
    json.forEach((text, i) => expect(text).toBe(JSON.stringify(events[i])));
  });

  it('gives the one event of a read unchanged', () => {
    const events = buildAuditEvents({ ...baseInput(), interaction: interaction('read', { resourceType: 'Patient', id: 'p', path: 'Patient/p' }), decision: permit(), patients: ['p'] });
    expect(serializeAuditEvents(events)).toEqual([JSON.stringify(events[0])]);
  });
});
