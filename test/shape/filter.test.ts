import { describe, expect, it } from 'vitest';
import type { Observation, Resource } from '@medplum/fhirtypes';
import { patientsOf } from '../../src/fhir/patients.js';
import { present, type FilterContext } from '../../src/shape/filter.js';
import type { CareSet } from '../../src/relate/types.js';

const BASE = 'http://fhir.internal/fhir';

function context(careSet: CareSet): FilterContext {
  return {
    careSet,
    subjectOnly: false,
    linkOf: (r: Resource) => patientsOf(r, { localBases: [BASE] }),
    read: async () => undefined,
    localBases: [BASE],
    publicBase: 'https://caregate.example/fhir',
  };
}
const careTeam = context({ scope: 'listed', patients: new Map([['pat-dupont', []]]), resolvedAt: Date.now() });
const everyone = context({ scope: 'all', patients: new Map(), resolvedAt: Date.now() });

/** An Observation of the caller's patient whose references carry display texts. */
function observation(): Observation {
  return {
    resourceType: 'Observation',
    id: 'obs-1',
    status: 'final',
    code: { text: 'Température' },
    subject: { reference: 'Patient/pat-dupont', display: 'Marie-Claire DUPONT' },
    performer: [{ reference: 'Practitioner/prat-martin', display: 'Dr Claire MARTIN' }],
    encounter: { reference: 'Encounter/enc-dupont', display: 'Séjour de Mme DUPONT' },
    derivedFrom: [{ reference: 'Observation/obs-vic', display: 'Température de Cyril BOYER' }],
    hasMember: [{ type: 'Observation', identifier: { value: 'x-42' }, display: 'Mesure de Cyril BOYER' }],
  };
}

describe('shape.filter: display texts', () => {
  it('removes the displays of references to other patient records, which may name someone outside the care set', async () => {
    const shown = await present(observation(), careTeam);
    const o = shown!.resource as Observation;
    expect(o.derivedFrom![0]).toEqual({ reference: 'Observation/obs-vic' });
    expect(o.hasMember![0]).toEqual({ type: 'Observation', identifier: { value: 'x-42' } });
    expect(o.encounter).toEqual({ reference: 'Encounter/enc-dupont' });
    expect(JSON.stringify(o)).not.toContain('BOYER');
  });

  it('keeps the displays of the caller’s own patient and of practitioners', async () => {
    const o = (await present(observation(), careTeam))!.resource as Observation;
    expect(o.subject?.display).toBe('Marie-Claire DUPONT');
    expect(o.performer![0]!.display).toBe('Dr Claire MARTIN');
  });

  it('keeps every display for a role that sees every record', async () => {
    expect((await present(observation(), everyone))!.resource).toEqual(observation());
  });
});
