import { validateResource } from '@medplum/core';
import type {
  CareTeam,
  Consent,
  Encounter,
  Identifier,
  Organization,
  Patient,
  Period,
  Practitioner,
  PractitionerRole,
  Resource,
} from '@medplum/fhirtypes';
import { beforeAll, describe, expect, it } from 'vitest';
import { demoConfigSchema, seedOptionsFromConfig } from '../../src/demo/config.js';
import { DemoRepository, loadFhirDefinitions } from '../../src/demo/engine.js';
import { DEMO_FINESS, IPP_SYSTEM, PERSONAS, STAFF_ID_SYSTEM, STAY_SYSTEM } from '../../src/demo/personas.js';
import {
  DEMO_FIXTURES,
  DEMO_ORGANIZATIONS,
  IDNPS_SYSTEM,
  INS_NIR_TEST_SYSTEM,
  RPPS_SYSTEM,
  TRE_G15_SYSTEM,
  buildHospital,
  isValidInsNir,
  isValidRpps,
  seedHospital,
  type FixtureAssumption,
} from '../../src/demo/seed.js';

const NOW = Date.UTC(2026, 0, 15, 12);
const DAY = 86_400_000;
/** Personas seeded after the generated hospital (src/demo/personas.ts `seededLate`). */
const LATE_PERSONAS = Object.values(PERSONAS).filter((p) => 'seededLate' in p).length;
let hospital: Resource[];
let byRef: Map<string, Resource>;

beforeAll(() => {
  loadFhirDefinitions();
  hospital = buildHospital({ patients: 80, practitioners: 25, now: NOW });
  byRef = new Map(hospital.map((r) => [`${r.resourceType}/${r.id}`, r]));
});

let defaultBuilt: Resource[] | undefined;
/** The default-size hospital (2000 patients), built once for the tests that need it. */
const defaultHospital = (): Resource[] => (defaultBuilt ??= buildHospital({ now: NOW }));

/** Patients with a CareTeam managed by, or an Encounter served by, this service. */
function servicePatients(resources: readonly Resource[], org: string, only?: 'Encounter'): Set<string> {
  return new Set(
    resources
      .filter(
        (r): r is CareTeam | Encounter =>
          (only === undefined && r.resourceType === 'CareTeam' && (r as CareTeam).managingOrganization?.[0]?.reference === org) ||
          (r.resourceType === 'Encounter' && (r as Encounter).serviceProvider?.reference === org),
      )
      .flatMap((r) => (r.subject?.reference?.startsWith('Patient/') ? [r.subject.reference.slice('Patient/'.length)] : [])),
  );
}

const of = <T extends Resource>(type: T['resourceType'], resources: readonly Resource[] = hospital): T[] =>
  resources.filter((r): r is T => r.resourceType === type);
const ident = (r: { identifier?: Identifier[] }, system: string): string | undefined =>
  r.identifier?.find((i) => i.system === system)?.value;

// ----------------------------------------------------------------------------------------------
// A small reference resolver of the care relationships described in ARCHITECTURE.md, used only to
// check that the fixtures say what the data says.
// ----------------------------------------------------------------------------------------------

interface Settings {
  serviceTeams: boolean;
  encounterWindowDays: number;
}

const covers = (p: Period | undefined, t: number): boolean =>
  (!p?.start || Date.parse(p.start) <= t) && (!p?.end || Date.parse(p.end) > t);

function visiblePatients(personaRef: string, settings: Settings, resources: readonly Resource[] = hospital): Set<string> {
  const ofType = <T extends Resource>(type: T['resourceType']): T[] => of<T>(type, resources);
  const out = new Set<string>();
  if (personaRef.startsWith('Patient/')) {
    out.add(personaRef.slice('Patient/'.length));
    return out;
  }
  if (personaRef.startsWith('RelatedPerson/')) {
    for (const c of ofType<Consent>('Consent')) {
      const actor = c.provision?.actor?.some((a) => a.reference.reference === personaRef);
      if (c.status === 'active' && actor && covers(c.provision?.period, NOW) && c.patient?.reference) {
        out.add(c.patient.reference.slice('Patient/'.length));
      }
    }
    return out;
  }
  const practitionerId = personaRef.slice('Practitioner/'.length);
  const roles = ofType<PractitionerRole>('PractitionerRole').filter(
    (r) => r.practitioner?.reference === personaRef && r.active === true && covers(r.period, NOW),
  );
  const members = new Set<string>([personaRef, ...roles.map((r) => `PractitionerRole/${r.id}`)]);
  if (settings.serviceTeams) {
    for (const r of roles) if (r.organization?.reference) members.add(r.organization.reference);
  }
  const activeTeams = ofType<CareTeam>('CareTeam').filter((t) => t.status === 'active' && covers(t.period, NOW));
  // Nested teams: a team counts when one of its live participants is already a member; depth 5.
  for (let depth = 0; depth < 5; depth++) {
    for (const team of activeTeams) {
      if (team.participant?.some((p) => p.member?.reference && members.has(p.member.reference) && covers(p.period, NOW))) {
        members.add(`CareTeam/${team.id}`);
      }
    }
  }
  for (const team of activeTeams) {
    if (members.has(`CareTeam/${team.id}`) && team.subject?.reference?.startsWith('Patient/')) {
      out.add(team.subject.reference.slice('Patient/'.length));
    }
  }
  const personal = new Set([...members].filter((m) => !m.startsWith('Organization/') && !m.startsWith('CareTeam/')));
  for (const enc of ofType<Encounter>('Encounter')) {
    const takesPart = enc.participant?.some((p) => p.individual?.reference && personal.has(p.individual.reference) && covers(p.period, NOW));
    if (!takesPart || !enc.subject?.reference) continue;
    const current = ['arrived', 'triaged', 'in-progress', 'onleave'].includes(enc.status);
    const end = enc.period?.end ? Date.parse(enc.period.end) : undefined;
    const recent = enc.status === 'finished' && end !== undefined && NOW - end < settings.encounterWindowDays * DAY;
    if (current || recent) out.add(enc.subject.reference.slice('Patient/'.length));
  }
  // The patient's opposition (CSP L1110-4): an active deny Consent naming one of the practitioner's references.
  for (const c of of<Consent>('Consent')) {
    const opposed = c.provision?.type === 'deny' && c.provision.actor?.some((a) => a.reference.reference && members.has(a.reference.reference));
    if (c.status === 'active' && opposed && covers(c.provision?.period, NOW) && c.patient?.reference) out.delete(c.patient.reference.slice('Patient/'.length));
  }
  void practitionerId;
  return out;
}

const DEFAULT: Settings = { serviceTeams: true, encounterWindowDays: 7 };
const without = (a: FixtureAssumption): Settings =>
  a === 'service-teams' ? { ...DEFAULT, serviceTeams: false } : { ...DEFAULT, encounterWindowDays: 2 };

describe('the demo hospital seed', () => {
  it('is deterministic: the same options give byte-identical resources', () => {
    const a = JSON.stringify(buildHospital({ seed: 7, patients: 25, practitioners: 20, now: NOW }));
    const b = JSON.stringify(buildHospital({ seed: 7, patients: 25, practitioners: 20, now: NOW }));
    const c = JSON.stringify(buildHospital({ seed: 8, patients: 25, practitioners: 20, now: NOW }));
    expect(a).toBe(b);
    expect(a).not.toBe(c);
  });

  it('builds the default-size hospital (timing is in docs/DEMO-HOSPITAL.md, not asserted)', () => {
    const all = defaultHospital();
    const patients = all.filter((r) => r.resourceType === 'Patient').length;
    const fixturePatients = of<Patient>('Patient').filter((p) => !/^pat-\d+$/.test(p.id ?? '')).length;
    expect(patients).toBe(2000 + fixturePatients);
    // The personas seeded with the late fixtures come on top of the configured staff.
    expect(all.filter((r) => r.resourceType === 'Practitioner')).toHaveLength(50 + LATE_PERSONAS);
    expect(new Set(all.map((r) => `${r.resourceType}/${r.id}`)).size).toBe(all.length);
  });

  it('is valid FHIR R4 throughout (fixtures and a few generated patients)', () => {
    for (const r of buildHospital({ patients: 6, practitioners: 14, now: NOW })) {
      expect(() => validateResource(r), `${r.resourceType}/${r.id}`).not.toThrow();
    }
  });

  it('has the establishment with its FINESS and idNatSt, and services part of it', () => {
    const chu = byRef.get(`Organization/${DEMO_ORGANIZATIONS.establishment}`) as Organization;
    expect(ident(chu, 'https://finess.esante.gouv.fr')).toBe(DEMO_FINESS);
    expect(ident(chu, 'urn:oid:1.2.250.1.71.4.2.2')).toBe(`1${DEMO_FINESS}`);
    for (const id of Object.values(DEMO_ORGANIZATIONS).filter((o) => o !== DEMO_ORGANIZATIONS.establishment)) {
      expect((byRef.get(`Organization/${id}`) as Organization).partOf?.reference).toBe('Organization/org-chu-demo');
    }
  });

  it('carries every persona with its exact id and identifiers', () => {
    for (const persona of Object.values(PERSONAS)) {
      const type = persona.kind === 'practitioner' ? 'Practitioner' : persona.kind === 'patient' ? 'Patient' : 'RelatedPerson';
      const r = byRef.get(`${type}/${persona.id}`) as Practitioner | undefined;
      expect(r, persona.id).toBeDefined();
      expect(r?.name?.[0]?.family).toBe(persona.family);
      if ('rpps' in persona) {
        expect(ident(r as Practitioner, RPPS_SYSTEM)).toBe(persona.rpps);
        expect(ident(r as Practitioner, IDNPS_SYSTEM)).toBe(persona.idNatPs);
        expect(r?.qualification?.[0]?.code.coding?.[0]).toMatchObject({ system: TRE_G15_SYSTEM, code: persona.profession.code });
      }
      if ('staffId' in persona) {
        expect(ident(r as Practitioner, STAFF_ID_SYSTEM)).toBe(persona.staffId);
      }
    }
  });

  it('gives health professionals valid test RPPS (Luhn) with idNatPs = 8 + RPPS, and staff a staff id', () => {
    const rpps = new Set<string>();
    for (const p of of<Practitioner>('Practitioner')) {
      const value = ident(p, RPPS_SYSTEM);
      if (value) {
        expect(isValidRpps(value), value).toBe(true);
        expect(value.startsWith('997')).toBe(true);
        expect(ident(p, IDNPS_SYSTEM)).toBe(`8${value}`);
        expect(p.qualification?.[0]?.code.coding?.[0]?.system).toBe(TRE_G15_SYSTEM);
        rpps.add(value);
      } else {
        expect(ident(p, STAFF_ID_SYSTEM), p.id).toBeDefined();
      }
      const roles = of<PractitionerRole>('PractitionerRole').filter((r) => r.practitioner?.reference === `Practitioner/${p.id}`);
      expect(roles.some((r) => r.active), p.id).toBe(true);
    }
    expect(rpps.size).toBe(of<Practitioner>('Practitioner').filter((p) => ident(p, RPPS_SYSTEM)).length);
    expect(of<PractitionerRole>('PractitionerRole').some((r) => r.active === false)).toBe(true);
  });

  it('gives patients unique valid INS-NIR (key 97 − n mod 97) and unique IPP; stays unique numbers', () => {
    const ins = of<Patient>('Patient').map((p) => ident(p, INS_NIR_TEST_SYSTEM) ?? '');
    expect(ins.every(isValidInsNir)).toBe(true);
    expect(new Set(ins).size).toBe(ins.length);
    const ipp = of<Patient>('Patient').map((p) => ident(p, IPP_SYSTEM));
    expect(new Set(ipp).size).toBe(ipp.length);
    const stays = of<Encounter>('Encounter').map((e) => ident(e, STAY_SYSTEM));
    expect(stays.every(Boolean)).toBe(true);
    expect(new Set(stays).size).toBe(stays.length);
  });

  it('links documents to Binaries whose security context is the patient or the document, or none (as most servers store them)', () => {
    const docs = hospital.filter((r) => r.resourceType === 'DocumentReference') as { id: string; content: { attachment: { url: string } }[] }[];
    expect(docs.length).toBeGreaterThan(0);
    const contexts = new Set<string>();
    for (const d of docs) {
      const binary = byRef.get(d.content[0]?.attachment.url ?? '') as { securityContext?: { reference?: string } } | undefined;
      expect(binary, d.id).toBeDefined();
      contexts.add(binary?.securityContext?.reference?.split('/')[0] ?? '');
    }
    // '' : the fixtures' Binaries stored without securityContext (bin-fx-*), attributed through their DocumentReference.
    expect([...contexts].sort()).toEqual(['', 'DocumentReference', 'Patient']);
  });

  it('keeps the mandate Consent of rp-dupont on pat-dupont active and valid now', () => {
    const consent = byRef.get('Consent/consent-dupont-mandate') as Consent;
    expect(consent.status).toBe('active');
    expect(consent.patient?.reference).toBe('Patient/pat-dupont');
    expect(consent.provision?.actor?.[0]?.reference.reference).toBe('RelatedPerson/rp-dupont');
    expect(covers(consent.provision?.period, NOW)).toBe(true);
  });
});

describe('DEMO_FIXTURES', () => {
  const personas = Object.values(DEMO_FIXTURES);

  it('names resources that exist with the claimed status and concern the claimed patient', () => {
    for (const fixture of personas) {
      for (const c of [...fixture.mustSee, ...fixture.mustNotSee]) {
        const r = byRef.get(c.via) as (Resource & { status?: string; subject?: { reference?: string }; patient?: { reference?: string } }) | undefined;
        expect(r, c.via).toBeDefined();
        expect(byRef.get(`Patient/${c.patient}`), c.patient).toBeDefined();
        if ('status' in c) expect(r?.status, c.via).toBe(c.status);
        if (r?.resourceType !== 'Patient') {
          expect(r?.subject?.reference ?? r?.patient?.reference, c.via).toBe(`Patient/${c.patient}`);
        }
      }
    }
  });

  it('hold against the data under the default policy, and flip when their assumption is off', () => {
    for (const fixture of personas) {
      const visible = visiblePatients(fixture.reference, DEFAULT);
      for (const c of fixture.mustSee) {
        expect(visible.has(c.patient), `${fixture.persona} must see ${c.patient}`).toBe(true);
        if ('assumes' in c) {
          expect(visiblePatients(fixture.reference, without(c.assumes)).has(c.patient), `${c.patient} without ${c.assumes}`).toBe(false);
        }
      }
      for (const c of fixture.mustNotSee) {
        expect(visible.has(c.patient), `${fixture.persona} must not see ${c.patient}`).toBe(false);
      }
    }
  });

  it('gives the surgeon orthopaedics patients only and the emergency physician emergency stays only', () => {
    const surgeon = visiblePatients('Practitioner/prat-girard', DEFAULT);
    expect(surgeon.size).toBeGreaterThan(1);
    const ortho = servicePatients(hospital, 'Organization/org-ortho');
    for (const p of surgeon) expect(ortho.has(p), p).toBe(true);
    const emergency = visiblePatients('Practitioner/prat-roux', DEFAULT);
    expect(emergency.size).toBeGreaterThan(2);
    const viaEmergency = servicePatients(hospital, 'Organization/org-urgences', 'Encounter');
    // Besides: the stay of Dr Girard (a staff member) she admitted in cardiology (src/demo/oversight.ts).
    for (const p of emergency) if (p !== 'pat-fx-staff-girard') expect(viaEmergency.has(p), p).toBe(true);
    expect(emergency.has('pat-fx-staff-girard')).toBe(true);
  });

  it('gives the ward clinicians the care sets of a ward (100+ patients) and the emergency physician several hundred', () => {
    // The default hospital under the default policy (service teams, finished stays count 30 days).
    const all = defaultHospital();
    const policy: Settings = { serviceTeams: true, encounterWindowDays: 30 };
    const size = (ref: string) => visiblePatients(ref, policy, all).size;
    const martin = size('Practitioner/prat-martin');
    expect(martin).toBeGreaterThanOrEqual(100);
    expect(martin).toBeLessThanOrEqual(200);
    expect(size('Practitioner/prat-bernard')).toBeGreaterThanOrEqual(100);
    expect(size('Practitioner/prat-girard')).toBeGreaterThanOrEqual(100);
    const roux = visiblePatients('Practitioner/prat-roux', policy, all);
    expect(roux.size).toBeGreaterThanOrEqual(250);
    const viaEmergency = servicePatients(all, 'Organization/org-urgences', 'Encounter');
    for (const p of roux) if (p !== 'pat-fx-staff-girard') expect(viaEmergency.has(p), p).toBe(true);
    // Drawn from the generated patients of their service, not the fixtures alone.
    // (the fixtures: her two emergency stays and the staff member she admitted)
    expect([...roux].filter((p) => /^pat-\d+$/.test(p)).length).toBe(roux.size - 3);
  });
});

describe('demo config', () => {
  it('fills defaults and reports an error at its dotted path', () => {
    const config = demoConfigSchema.parse({});
    expect(seedOptionsFromConfig(config)).toEqual({ seed: 42, patients: 2000, practitioners: 50, observationsPerPatient: 8 });
    const bad = demoConfigSchema.safeParse({ patients: -1 });
    expect(bad.success).toBe(false);
    expect(bad.error?.issues[0]?.path).toEqual(['patients']);
  });

  it('seeds a repository with the configured sizes', async () => {
    const repo = new DemoRepository();
    const stats = await seedHospital(repo, { ...seedOptionsFromConfig(demoConfigSchema.parse({ patients: 5, practitioners: 14 })), now: NOW });
    expect(repo.counts()['Patient']).toBe(stats.byType['Patient']);
    expect(stats.byType['Practitioner']).toBe(14 + LATE_PERSONAS);
  });
});
