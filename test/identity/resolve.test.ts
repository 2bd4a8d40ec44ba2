import { describe, expect, it } from 'vitest';
import { ProxyError } from '../../src/http/errors.js';
import type { Claims } from '../../src/identity/principal.js';
import { createPrincipalResolver, practitionerIdentifiers, type ResolveRequest } from '../../src/identity/resolve.js';
import { fakeFhir, IDNATPS, practitioner, practitionerRole, RPPS, type FakeFhir } from './fake-fhir.js';

const STAFF = 'https://chu-demo.example/fhir/staff-id';

function claims(over: Partial<Claims> = {}): Claims {
  return {
    issuer: 'https://idp.test',
    subject: 'u-1',
    idNatPs: undefined,
    professionCodes: [],
    roles: [],
    groups: [],
    fhirUser: undefined,
    patientContext: undefined,
    scopes: undefined,
    clientId: undefined,
    jti: undefined,
    displayName: undefined,
    expiresAt: undefined,
    ...over,
  };
}

function req(over: Partial<Claims> = {}, staff?: ResolveRequest['staff']): ResolveRequest {
  return { claims: claims(over), staff, certificate: undefined };
}

function resolver(fhir: FakeFhir, now = () => Date.parse('2026-06-01T12:00:00Z')) {
  return createPrincipalResolver({
    client: fhir,
    practitionerIdentifierSystems: [IDNATPS, RPPS],
    ttlSeconds: 300,
    max: 100,
    now,
  });
}

async function refusal(p: Promise<unknown>): Promise<ProxyError> {
  const err = await p.then(
    () => undefined,
    (e: unknown) => e,
  );
  expect(err).toBeInstanceOf(ProxyError);
  return err as ProxyError;
}

const hospital = () =>
  fakeFhir([
    practitioner('prat-martin', [
      [IDNATPS, '899700000013'],
      [RPPS, '99700000013'],
    ]),
    practitioner('prat-petit', [[STAFF, 'ADM-0001']]),
    practitionerRole('r-cardio', 'prat-martin', {
      org: 'cardio',
      codes: [['https://mos.esante.gouv.fr/NOS/TRE_G15-ProfessionSante/FHIR/TRE-G15-ProfessionSante', '10']],
      period: { start: '2020-01-01' },
    }),
    practitionerRole('r-old', 'prat-martin', { org: 'urgences', period: { start: '2019-01-01', end: '2020-01-01' } }),
    practitionerRole('r-inactive', 'prat-martin', { org: 'pneumo', active: false }),
    practitionerRole('r-adm', 'prat-petit', { org: 'admissions', codes: [['https://chu-demo.example/roles', 'admission']] }),
    { resourceType: 'Patient', id: 'pat-dupont', active: true },
    { resourceType: 'Patient', id: 'pat-gone', active: false },
    { resourceType: 'RelatedPerson', id: 'rp-dupont', patient: { reference: 'Patient/pat-dupont' } },
  ] as never);

describe('principal resolution', () => {
  it('searches the idNatPs and RPPS systems (RPPS = idNatPs without its 8)', () => {
    expect(practitionerIdentifiers('899700000013', undefined, [IDNATPS, RPPS])).toEqual([
      { system: IDNATPS, value: '899700000013' },
      { system: RPPS, value: '99700000013' },
    ]);
    expect(practitionerIdentifiers('010003461033', undefined, [IDNATPS, RPPS])).toEqual([{ system: IDNATPS, value: '010003461033' }]);
  });

  it('finds the practitioner by idNatPs with active roles covering now, their organisations and codes', async () => {
    const fhir = hospital();
    const r = await resolver(fhir).resolve(req({ idNatPs: '899700000013' }));
    expect(r).toEqual({
      kind: 'practitioner',
      practitioner: 'Practitioner/prat-martin',
      practitionerRoles: ['PractitionerRole/r-cardio'],
      organizations: ['Organization/cardio'],
      roleCodes: ['https://mos.esante.gouv.fr/NOS/TRE_G15-ProfessionSante/FHIR/TRE-G15-ProfessionSante|10'],
    });
    expect(fhir.calls[0]).toBe(
      `Practitioner?${new URLSearchParams({ identifier: `${IDNATPS}|899700000013,${RPPS}|99700000013` }).toString()}`,
    );
  });

  it('finds a staff member by local staff id', async () => {
    const r = await resolver(hospital()).resolve(req({}, { system: STAFF, value: 'ADM-0001' }));
    expect(r).toMatchObject({ kind: 'practitioner', practitioner: 'Practitioner/prat-petit', organizations: ['Organization/admissions'] });
  });

  it('refuses with ERR_UNKNOWN_PRACTITIONER when nobody matches', async () => {
    const err = await refusal(resolver(hospital()).resolve(req({ idNatPs: '899700009999' })));
    expect(err.code).toBe('ERR_UNKNOWN_PRACTITIONER');
    expect(err.status).toBe(403);
  });

  it('refuses with ERR_AMBIGUOUS_PRACTITIONER when two Practitioners match', async () => {
    const fhir = hospital();
    fhir.resources.push(practitioner('prat-martin-dup', [[RPPS, '99700000013']]));
    const err = await refusal(resolver(fhir).resolve(req({ idNatPs: '899700000013' })));
    expect(err.code).toBe('ERR_AMBIGUOUS_PRACTITIONER');
    expect(err.status).toBe(403);
  });

  it('does not take an unrelated Practitioner from an upstream that ignores the identifier parameter', async () => {
    const fhir = fakeFhir([practitioner('someone-else', [[IDNATPS, '899700000021']])]);
    fhir.ignoreParams = true;
    expect((await refusal(resolver(fhir).resolve(req({ idNatPs: '899700000013' })))).code).toBe('ERR_UNKNOWN_PRACTITIONER');
  });

  it('refuses ERR_FHIRUSER_MISMATCH when fhirUser names another practitioner', async () => {
    const err = await refusal(resolver(hospital()).resolve(req({ idNatPs: '899700000013', fhirUser: 'Practitioner/prat-petit' })));
    expect(err.code).toBe('ERR_FHIRUSER_MISMATCH');
    expect(err.status).toBe(403);
  });

  it('refuses ERR_FHIRUSER_MISMATCH when a practitioner identity carries a Patient fhirUser', async () => {
    expect((await refusal(resolver(hospital()).resolve(req({ idNatPs: '899700000013', fhirUser: 'Patient/pat-dupont' })))).code).toBe(
      'ERR_FHIRUSER_MISMATCH',
    );
  });

  it('accepts a fhirUser that agrees with the resolved practitioner', async () => {
    const r = await resolver(hospital()).resolve(req({ idNatPs: '899700000013', fhirUser: 'Practitioner/prat-martin' }));
    expect(r).toMatchObject({ practitioner: 'Practitioner/prat-martin' });
  });

  it('uses fhirUser Practitioner/x alone when the token has no identifier', async () => {
    const r = await resolver(hospital()).resolve(req({ fhirUser: 'Practitioner/prat-martin' }));
    expect(r).toMatchObject({ kind: 'practitioner', practitioner: 'Practitioner/prat-martin' });
    expect((await refusal(resolver(hospital()).resolve(req({ fhirUser: 'Practitioner/nobody' })))).code).toBe('ERR_UNKNOWN_PRACTITIONER');
  });

  it('passes the FhirClient lookup failure through (503)', async () => {
    const fhir = hospital();
    fhir.failing = true;
    const err = await refusal(resolver(fhir).resolve(req({ idNatPs: '899700000013' })));
    expect(err.code).toBe('ERR_LOOKUP_FAILED');
    expect(err.status).toBe(503);
  });

  it('resolves a patient from fhirUser or the SMART patient context, and refuses an inactive or unknown one', async () => {
    expect(await resolver(hospital()).resolve(req({ fhirUser: 'Patient/pat-dupont', patientContext: 'pat-dupont' }))).toEqual({
      kind: 'patient',
      patient: 'Patient/pat-dupont',
    });
    expect(await resolver(hospital()).resolve(req({ patientContext: 'pat-dupont' }))).toEqual({ kind: 'patient', patient: 'Patient/pat-dupont' });
    expect((await refusal(resolver(hospital()).resolve(req({ fhirUser: 'Patient/pat-gone' })))).code).toBe('ERR_UNKNOWN_PRACTITIONER');
    expect((await refusal(resolver(hospital()).resolve(req({ fhirUser: 'Patient/nobody' })))).code).toBe('ERR_UNKNOWN_PRACTITIONER');
    expect((await refusal(resolver(hospital()).resolve(req({ fhirUser: 'Patient/pat-dupont', patientContext: 'pat-gone' })))).code).toBe(
      'ERR_FHIRUSER_MISMATCH',
    );
  });

  it('resolves a related person from fhirUser', async () => {
    expect(await resolver(hospital()).resolve(req({ fhirUser: 'RelatedPerson/rp-dupont', patientContext: 'pat-dupont' }))).toEqual({
      kind: 'related-person',
      relatedPerson: 'RelatedPerson/rp-dupont',
    });
  });

  it('refuses a credential that names nobody', async () => {
    expect((await refusal(resolver(hospital()).resolve(req()))).code).toBe('ERR_UNKNOWN_PRACTITIONER');
  });

  it('caches resolutions and forgets them on invalidatePrincipal', async () => {
    const fhir = hospital();
    const r = resolver(fhir);
    await r.resolve(req({ idNatPs: '899700000013' }));
    await r.resolve(req({ idNatPs: '899700000013' }));
    expect(fhir.calls).toHaveLength(2); // one Practitioner search + one PractitionerRole search
    fhir.resources.push(practitionerRole('r-new', 'prat-martin', { org: 'pneumo' }));
    r.invalidatePrincipal('Practitioner/prat-martin');
    const again = await r.resolve(req({ idNatPs: '899700000013' }));
    expect(fhir.calls).toHaveLength(4);
    expect(again).toMatchObject({ organizations: ['Organization/cardio', 'Organization/pneumo'] });
  });

  it('does not keep a role in cache past the end of its period', async () => {
    const end = new Date(Date.now() + 150).toISOString();
    const fhir = fakeFhir([
      practitioner('p1', [[IDNATPS, '899700000013']]),
      practitionerRole('r-short', 'p1', { org: 'o1', period: { end } }),
    ] as never);
    const r = createPrincipalResolver({ client: fhir, practitionerIdentifierSystems: [IDNATPS], ttlSeconds: 300, max: 10 });
    expect(await r.resolve(req({ idNatPs: '899700000013' }))).toMatchObject({ practitionerRoles: ['PractitionerRole/r-short'] });
    await new Promise((resolve) => setTimeout(resolve, 250));
    expect(await r.resolve(req({ idNatPs: '899700000013' }))).toMatchObject({ practitionerRoles: [] });
    expect(fhir.calls).toHaveLength(4);
  });

  it('shares one lookup between concurrent requests of the same user', async () => {
    const fhir = hospital();
    const r = resolver(fhir);
    await Promise.all([r.resolve(req({ idNatPs: '899700000013' })), r.resolve(req({ idNatPs: '899700000013' }))]);
    expect(fhir.calls).toHaveLength(2);
  });
});
