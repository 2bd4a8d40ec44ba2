import { describe, expect, it } from 'vitest';
import type { AuditEvent, AuditEventAgent, AuditEventEntity } from '@medplum/fhirtypes';
import { auditOutcome, buildAuditEvents } from '../../src/audit/build.js';
import { AgentType, DetailType, EntityName, EntityType, ObjectRole, Systems } from '../../src/audit/codes.js';
import { baseInput, deny, interaction, params, patientPrincipal, permit, practitioner } from './fixtures.js';

const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/;

function agentOfType(ev: AuditEvent, code: string): AuditEventAgent | undefined {
  return ev.agent.find((a) => a.type?.coding?.some((c) => c.code === code));
}
function user(ev: AuditEvent): AuditEventAgent | undefined {
  return ev.agent.find((a) => a.requestor && a.type?.coding?.[0]?.code === AgentType.informationRecipient.code);
}
function entities(ev: AuditEvent, pred: (e: AuditEventEntity) => boolean): AuditEventEntity[] {
  return (ev.entity ?? []).filter(pred);
}
const isPatient = (e: AuditEventEntity) => e.type?.code === EntityType.person.code && e.role?.code === ObjectRole.patient.code;
const isQuery = (e: AuditEventEntity) => e.role?.code === ObjectRole.query.code;
const isRequestId = (e: AuditEventEntity) => e.type?.code === EntityType.requestId.code;
const isData = (e: AuditEventEntity) => e.role?.code === ObjectRole.domainResource.code;

/** The elements every caregate AuditEvent must carry (IHE BALP, R4). */
function expectBalpCore(ev: AuditEvent, opts: { user: boolean } = { user: true }): void {
  expect(ev.resourceType).toBe('AuditEvent');
  expect(ev.id).toBeTruthy();
  expect(ev.type.system).toBeTruthy();
  expect(ev.type.code).toBeTruthy();
  expect(ev.subtype?.length).toBeGreaterThan(0);
  expect(ev.action).toMatch(/^[CRUDE]$/);
  expect(ev.recorded).toBe('2025-03-04T10:00:00.000Z');
  expect(['0', '4', '8', '12']).toContain(ev.outcome);
  expect(ev.outcomeDesc).toBeTruthy();
  expect(ev.source.site).toBe('chu-demo');
  expect(ev.source.observer.display).toBe('caregate');
  expect(ev.source.type?.[0]).toMatchObject({ system: Systems.securitySourceType, code: '4' });
  const rid = entities(ev, isRequestId);
  expect(rid).toHaveLength(1);
  expect(rid[0]!.type?.system).toBe(Systems.balpEntityType);
  expect(rid[0]!.what?.identifier?.value).toBe('req-1');
  for (const a of ev.agent) expect(typeof a.requestor).toBe('boolean');
  if (opts.user) {
    const u = user(ev);
    expect(u).toBeDefined();
    expect(u!.requestor).toBe(true);
    expect(u!.who?.identifier?.value).toBeTruthy();
    expect(u!.purposeOfUse?.[0]?.coding?.[0]?.system).toBe(Systems.actReason);
    expect(u!.network).toBeUndefined();
    expect(ev.purposeOfEvent?.[0]?.coding?.[0]?.system).toBe(Systems.actReason);
  } else {
    expect(user(ev)).toBeUndefined();
  }
}

/** BALP RESTful: client and server agents with `who` and `network`, subtype from restful-interaction. */
function expectBalpRest(ev: AuditEvent, subtype: string, action: string, clientCode: string, serverCode: string): void {
  expect(ev.type).toMatchObject({ system: Systems.auditEventType, code: 'rest' });
  expect(ev.subtype).toEqual([{ system: Systems.restfulInteraction, code: subtype }]);
  expect(ev.action).toBe(action);
  const client = agentOfType(ev, clientCode);
  const server = agentOfType(ev, serverCode);
  expect(client?.who).toBeDefined();
  expect(client?.network).toEqual({ address: '10.0.0.5', type: '2' });
  expect(client?.requestor).toBe(false);
  expect(server?.who?.display).toBe('caregate');
  expect(server?.network).toEqual({ address: 'https://fhir.chu-demo.example/fhir', type: '5' });
}

describe('audit.build: IHE BALP shape per kind of event', () => {
  it('records a permitted read with the user (idNatPs, profession, requestor), client, server, patient and resource', () => {
    const [ev, ...rest] = buildAuditEvents(
      baseInput({ interaction: interaction('read', { id: 'obs-1', path: 'Observation/obs-1' }), decision: permit() }),
    );
    expect(rest).toHaveLength(0);
    expectBalpCore(ev!);
    expectBalpRest(ev!, 'read', 'R', '110152', '110153');
    expect(ev!.outcome).toBe('0');
    const u = user(ev!)!;
    expect(u.who).toEqual({
      reference: 'Practitioner/prat-martin',
      identifier: { system: Systems.idNatPs, value: '899700000013' },
    });
    expect(u.name).toBe('Claire MARTIN');
    expect(u.altId).toBe('f3c1e7a2-kc-user');
    expect(u.role).toContainEqual({ coding: [{ system: Systems.professionSante, code: '10' }] });
    expect(u.role).toContainEqual({ coding: [{ system: Systems.policyRole, code: 'clinician' }] });
    expect(u.policy).toEqual(['urn:ietf:params:oauth:jti:jti-123']);
    expect(u.purposeOfUse).toEqual([{ coding: [expect.objectContaining({ code: 'TREAT' })] }]);
    expect(agentOfType(ev!, '110152')!.who).toEqual({ identifier: { value: 'dpi-web' } });
    expect(entities(ev!, isPatient).map((e) => e.what?.reference)).toEqual(['Patient/pat-1']);
    expect(entities(ev!, isData).map((e) => e.what?.reference)).toEqual(['Observation/obs-1']);
    // The decision and its evidence are readable by a DIM.
    const decision = entities(ev!, (e) => e.name === EntityName.decision)[0]!;
    expect(decision.detail).toEqual(
      expect.arrayContaining([
        { type: DetailType.decisionEffect, valueString: 'permit' },
        { type: DetailType.decisionReason, valueString: 'care-relationship' },
        { type: DetailType.decisionRule, valueString: 'care-team' },
        { type: DetailType.httpStatus, valueString: '200' },
      ]),
    );
    expect(ev!.outcomeDesc).toContain('Permitted: care-relationship');
    const evidence = entities(ev!, (e) => e.name === EntityName.evidence);
    expect(evidence).toEqual([expect.objectContaining({ what: { reference: 'CareTeam/ct-1' }, role: ObjectRole.securityResource })]);
  });

  it('gives every event a fresh UUID v4 by default', () => {
    const input = baseInput({ interaction: interaction('read', { id: 'obs-1' }), decision: permit() });
    delete input.newId;
    const a = buildAuditEvents(input)[0]!;
    const b = buildAuditEvents(input)[0]!;
    expect(a.id).toMatch(UUID);
    expect(b.id).toMatch(UUID);
    expect(a.id).not.toBe(b.id);
  });

  it('uses explicit ids in order and refuses to run short of them', () => {
    const input = baseInput({
      ids: ['id-a', 'id-b'],
      interaction: interaction('search-type', { params: params(['code', '1234-5']) }),
      patients: ['p1', 'p2'],
    });
    expect(buildAuditEvents(input).map((e) => e.id)).toEqual(['id-a', 'id-b']);
    expect(() => buildAuditEvents({ ...input, ids: ['id-a'] })).toThrow(TypeError);
  });

  it('splits a multi-patient search into one event per patient, each with the base64 query', () => {
    const raw = 'code=http%3A%2F%2Floinc.org%7C8867-4&_count=50';
    const evs = buildAuditEvents(
      baseInput({
        interaction: interaction('search-type', {
          params: params(['code', 'http://loinc.org|8867-4'], ['_count', '50']),
        }),
        decision: permit({ reason: 'filtered-search', evidence: [] }),
        rawQuery: raw,
        patients: ['p1', 'Patient/p2', 'p3', 'p1'],
        resourceRefs: ['Observation/o1', 'Observation/o2'],
        evidenceByPatient: new Map([
          ['p1', [{ source: 'careteam', reference: 'CareTeam/ct-p1' }]],
          ['p2', [{ source: 'encounter', reference: 'Encounter/e-p2' }]],
        ]),
      }),
    );
    expect(evs).toHaveLength(3);
    expect(new Set(evs.map((e) => e.id)).size).toBe(3);
    expect(evs.map((e) => entities(e, isPatient).map((x) => x.what?.reference))).toEqual([
      ['Patient/p1'],
      ['Patient/p2'],
      ['Patient/p3'],
    ]);
    for (const ev of evs) {
      expectBalpCore(ev);
      expectBalpRest(ev, 'search-type', 'E', '110153', '110152');
      const q = entities(ev, isQuery);
      expect(q).toHaveLength(1);
      expect(Buffer.from(q[0]!.query!, 'base64').toString()).toBe(raw);
      expect(q[0]!.description).toBe('Observation?code=http://loinc.org|8867-4&_count=50');
      expect(q[0]!.what).toBeUndefined();
      // Another patient's resources are not listed on this patient's event.
      expect(entities(ev, isData)).toHaveLength(0);
    }
    expect(entities(evs[0]!, (e) => e.name === EntityName.evidence)[0]!.what?.reference).toBe('CareTeam/ct-p1');
    expect(entities(evs[1]!, (e) => e.name === EntityName.evidence)[0]!.what?.reference).toBe('Encounter/e-p2');
  });

  it('records a search without patients as one event without a patient entity, query rebuilt when raw is absent', () => {
    const evs = buildAuditEvents(
      baseInput({ interaction: interaction('search-type', { resourceType: 'Practitioner', path: 'Practitioner', params: params(['name', 'Mar']) }), patients: [] }),
    );
    expect(evs).toHaveLength(1);
    expect(entities(evs[0]!, isPatient)).toHaveLength(0);
    expect(Buffer.from(entities(evs[0]!, isQuery)[0]!.query!, 'base64').toString()).toBe('name=Mar');
  });

  it('records a create, an update and a patch with BALP agent types 110153/110152', () => {
    const cases = [
      ['create', 'C', 'create'],
      ['update', 'U', 'update'],
      ['patch', 'U', 'patch'],
    ] as const;
    for (const [kind, action, subtype] of cases) {
      const [ev] = buildAuditEvents(
        baseInput({
          interaction: interaction(kind, { id: kind === 'create' ? undefined : 'o9' }),
          decision: permit(),
          httpStatus: kind === 'create' ? 201 : 200,
          resourceRefs: ['Observation/o9'],
        }),
      );
      expectBalpCore(ev!);
      expectBalpRest(ev!, subtype, action, '110153', '110152');
      expect(entities(ev!, isData)[0]!.what?.reference).toBe('Observation/o9');
      expect(ev!.outcome).toBe('0');
    }
  });

  it('records a delete with agent types application (110150) and custodian', () => {
    const [ev] = buildAuditEvents(baseInput({ interaction: interaction('delete', { id: 'o9' }), decision: permit() }));
    expectBalpCore(ev!);
    expectBalpRest(ev!, 'delete', 'D', '110150', 'custodian');
    expect(agentOfType(ev!, 'custodian')!.type!.coding![0]!.system).toBe(Systems.provenanceParticipantType);
  });

  it('records a refused read with outcome 4, the reason and no evidence', () => {
    const [ev] = buildAuditEvents(
      baseInput({
        interaction: interaction('read', { resourceType: 'Patient', id: 'pat-1', path: 'Patient/pat-1' }),
        decision: deny(),
        httpStatus: 404,
        failure: { code: 'ERR_NOT_FOUND', message: 'Not found' },
      }),
    );
    expectBalpCore(ev!);
    expectBalpRest(ev!, 'read', 'R', '110152', '110153');
    expect(ev!.outcome).toBe('4');
    expect(ev!.outcomeDesc).toContain('Denied: no-care-relationship (rule default)');
    expect(ev!.outcomeDesc).toContain('L1110-4');
    const decision = entities(ev!, (e) => e.name === EntityName.decision)[0]!;
    expect(decision.detail).toContainEqual({ type: DetailType.failureCode, valueString: 'ERR_NOT_FOUND' });
    expect(entities(ev!, isPatient)[0]!.what?.reference).toBe('Patient/pat-1');
  });

  it('marks a refused search answered with an empty Bundle as outcome 4', () => {
    const [ev] = buildAuditEvents(baseInput({ interaction: interaction('search-type'), decision: deny(), httpStatus: 200 }));
    expect(ev!.outcome).toBe('4');
  });

  it('records a break-the-glass read with purpose BTG + ETREAT and the justification', () => {
    const [ev] = buildAuditEvents(
      baseInput({
        interaction: interaction('read', { id: 'obs-1' }),
        decision: permit({
          reason: 'break-glass',
          rule: 'break-glass',
          evidence: [{ source: 'break-glass', reference: undefined, reason: 'Unconscious patient in ER', until: '2025-03-04T11:00:00Z' }],
          obligations: [{ kind: 'mark-break-glass' }],
          purposeOfUse: 'BTG',
        }),
      }),
    );
    expectBalpCore(ev!);
    expect(ev!.outcome).toBe('0');
    expect(ev!.purposeOfEvent).toEqual([{ coding: [expect.objectContaining({ system: Systems.actReason, code: 'BTG' })] }]);
    expect(user(ev!)!.purposeOfUse![0]!.coding!.map((c) => c.code)).toEqual(['BTG', 'ETREAT']);
    const just = entities(ev!, (e) => e.name === EntityName.breakGlass)[0]!;
    expect(just.type).toEqual(EntityType.systemObject);
    expect(just.description).toBe('BTG justification: Unconscious patient in ER');
    expect(just.detail).toContainEqual({ type: DetailType.breakGlassUntil, valueString: '2025-03-04T11:00:00Z' });
  });

  it('records a break-the-glass start as DCM 110113/110127, one per patient, apart from the access event of the request', () => {
    const only = buildAuditEvents(
      baseInput({ kind: 'break-glass-start', breakGlass: { reason: 'Cardiac arrest', until: '2025-03-04T11:00:00Z' } }),
    );
    expect(only).toHaveLength(1);
    const ev = only[0]!;
    expectBalpCore(ev);
    expect(ev.type).toMatchObject({ system: Systems.dcm, code: '110113' });
    expect(ev.subtype).toEqual([expect.objectContaining({ system: Systems.dcm, code: '110127' })]);
    expect(ev.outcome).toBe('0');
    expect(ev.purposeOfEvent![0]!.coding![0]!.code).toBe('BTG');
    expect(entities(ev, isPatient)[0]!.what?.reference).toBe('Patient/pat-1');
    expect(entities(ev, (e) => e.name === EntityName.breakGlass)[0]!.description).toBe('BTG justification: Cardiac arrest');

    // The request that opened the grant is audited on its own when answered: no second access event here.
    const withInteraction = buildAuditEvents(
      baseInput({
        kind: 'break-glass-start',
        breakGlass: { reason: 'Cardiac arrest' },
        patients: ['pat-1', 'pat-2'],
        interaction: interaction('read', { resourceType: 'Patient', id: 'pat-1' }),
      }),
    );
    expect(withInteraction.map((e) => e.type.code)).toEqual(['110113', '110113']);
    expect(withInteraction.map((e) => entities(e, isPatient)[0]!.what?.reference)).toEqual(['Patient/pat-1', 'Patient/pat-2']);
  });

  it('records a refused break-the-glass attempt with outcome 4', () => {
    const [ev] = buildAuditEvents(
      baseInput({ kind: 'break-glass-start', breakGlass: { reason: 'curious' }, decision: deny({ reason: 'role-forbidden' }), httpStatus: 403 }),
    );
    expect(ev!.outcome).toBe('4');
    expect(ev!.outcomeDesc).toContain('Denied: role-forbidden');
  });

  it('records a policy reload as DCM 110113/110129 with the revision, requested by caregate itself', () => {
    const [ev] = buildAuditEvents(
      baseInput({ kind: 'policy-reload', principal: undefined, clientAddress: undefined, httpStatus: undefined, patients: [], policy: { revision: 'sha256:abc', previousRevision: 'sha256:old' } }),
    );
    expectBalpCore(ev!, { user: false });
    expect(ev!.type.code).toBe('110113');
    expect(ev!.subtype![0]!.code).toBe('110129');
    expect(ev!.outcome).toBe('0');
    expect(ev!.agent).toEqual([expect.objectContaining({ requestor: true, type: { coding: [AgentType.application] } })]);
    const pol = entities(ev!, (e) => e.name === EntityName.policy)[0]!;
    expect(pol.what?.identifier).toEqual({ system: Systems.policyRevision, value: 'sha256:abc' });
    expect(pol.detail).toContainEqual({ type: DetailType.policyPreviousRevision, valueString: 'sha256:old' });

    const [failed] = buildAuditEvents(
      baseInput({ kind: 'policy-reload', policy: { revision: 'sha256:bad', previousRevision: 'sha256:old' }, failure: { code: 'ERR_POLICY_INVALID', message: 'rules[2].when: unknown key' } }),
    );
    expect(failed!.outcome).toBe('8');
    expect(failed!.outcomeDesc).toContain('sha256:old stays in force');
    expect(user(failed!)?.who?.reference).toBe('Practitioner/prat-martin');
  });

  it('records a failed identification as DCM 110114/110122 with only what is known (the address)', () => {
    const [ev] = buildAuditEvents(
      baseInput({
        kind: 'login-failure',
        principal: undefined,
        httpStatus: 401,
        failure: { code: 'ERR_TOKEN_EXPIRED', message: 'The access token has expired.' },
        interaction: interaction('read', { resourceType: 'Patient', id: 'pat-1', path: 'Patient/pat-1' }),
      }),
    );
    expectBalpCore(ev!, { user: false });
    expect(ev!.type.code).toBe('110114');
    expect(ev!.subtype![0]!.code).toBe('110122');
    expect(ev!.outcome).toBe('4');
    expect(ev!.purposeOfEvent).toBeUndefined();
    expect(ev!.agent.find((a) => a.network?.type === '2')).toMatchObject({
      who: { display: 'unidentified client application' },
      network: { address: '10.0.0.5' },
    });
    expect(ev!.outcomeDesc).toContain('ERR_TOKEN_EXPIRED');
    expect(entities(ev!, isPatient)[0]!.what?.reference).toBe('Patient/pat-1');
  });

  it('names a patient user by issuer and subject, with purpose PATRQT', () => {
    const [ev] = buildAuditEvents(
      baseInput({ principal: patientPrincipal(), interaction: interaction('read', { id: 'o1' }), decision: permit({ reason: 'own-record' }) }),
    );
    const u = user(ev!)!;
    expect(u.who).toEqual({
      reference: 'Patient/pat-1',
      identifier: { system: 'https://idp.chu-demo.example/realms/patients', value: 'pat-user-1' },
    });
    expect(u.altId).toBeUndefined();
    expect(u.purposeOfUse![0]!.coding![0]!.code).toBe('PATRQT');
  });

  it('takes the idNatPs, names and profession from a CPS card when the claims lack them', () => {
    const p = practitioner({
      method: 'mtls',
      certificate: {
        source: 'tls',
        thumbprintS256: 'x',
        idNatPs: '899700000021',
        surname: 'BERNARD',
        givenName: 'Julien',
        professionLabel: 'Infirmier',
        professionCode: '60',
        issuer: 'CN=TEST',
        serialNumber: '01',
        notAfter: '2030-01-01T00:00:00Z',
      },
    });
    p.claims = { ...p.claims, idNatPs: undefined, professionCodes: [], displayName: undefined, subject: '899700000021' };
    const [ev] = buildAuditEvents(baseInput({ principal: p, interaction: interaction('read', { id: 'o1' }) }));
    const u = user(ev!)!;
    expect(u.who?.identifier?.value).toBe('899700000021');
    expect(u.altId).toBeUndefined();
    expect(u.name).toBe('BERNARD Julien');
    expect(u.role).toContainEqual({ coding: [{ system: Systems.professionSante, code: '60' }] });
  });

  it('maps outcomes: success 0, refusals 4, upstream and lookup failures 8, internal errors 12', () => {
    expect(auditOutcome({ httpStatus: 200, decision: permit() })).toBe('0');
    expect(auditOutcome({ httpStatus: 304 })).toBe('0');
    expect(auditOutcome({ httpStatus: 403, decision: deny() })).toBe('4');
    expect(auditOutcome({ httpStatus: 404, decision: deny() })).toBe('4');
    expect(auditOutcome({ httpStatus: 401 })).toBe('4');
    expect(auditOutcome({ httpStatus: 400, failure: { code: 'ERR_BAD_REQUEST', message: 'x' } })).toBe('4');
    expect(auditOutcome({ kind: 'login-failure', httpStatus: 401 })).toBe('4');
    expect(auditOutcome({ httpStatus: 502, failure: { code: 'ERR_UPSTREAM_UNREACHABLE', message: 'x' } })).toBe('8');
    expect(auditOutcome({ httpStatus: 503, failure: { code: 'ERR_LOOKUP_FAILED', message: 'x' } })).toBe('8');
    expect(auditOutcome({ httpStatus: 500, upstreamStatus: 500 })).toBe('8');
    expect(auditOutcome({ httpStatus: 504 })).toBe('8');
    expect(auditOutcome({ httpStatus: 500, failure: { code: 'ERR_INTERNAL', message: 'x' } })).toBe('12');
    expect(auditOutcome({ httpStatus: 500 })).toBe('12');
  });

  it('records a capabilities request without patient or data entity', () => {
    const [ev] = buildAuditEvents(
      baseInput({ interaction: interaction('capabilities', { resourceType: undefined, path: 'metadata' }), patients: [], decision: permit({ reason: 'capabilities', evidence: [] }) }),
    );
    expectBalpCore(ev!);
    expect(ev!.subtype![0]!.code).toBe('capabilities');
    expect(entities(ev!, isPatient)).toHaveLength(0);
    expect(entities(ev!, isData)).toHaveLength(0);
  });
});
