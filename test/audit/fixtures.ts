import type { FhirInteraction, InteractionKind, SearchParam } from '../../src/fhir/interaction.js';
import type { PatientPrincipal, PractitionerPrincipal } from '../../src/identity/principal.js';
import type { Decision } from '../../src/policy/decision.js';
import type { AuditInput } from '../../src/audit/audit-input.js';

/** Dr Claire Martin (demo persona `clinician`), signed in with a JWT. */
export function practitioner(overrides: Partial<PractitionerPrincipal> = {}): PractitionerPrincipal {
  return {
    kind: 'practitioner',
    method: 'jwt',
    claims: {
      issuer: 'https://idp.chu-demo.example/realms/chu',
      subject: 'f3c1e7a2-kc-user',
      idNatPs: '899700000013',
      professionCodes: ['10'],
      roles: ['clinician'],
      groups: [],
      fhirUser: 'Practitioner/prat-martin',
      patientContext: undefined,
      scopes: undefined,
      clientId: 'dpi-web',
      jti: 'jti-123',
      displayName: 'Claire MARTIN',
      expiresAt: undefined,
    },
    certificate: undefined,
    practitioner: 'Practitioner/prat-martin',
    practitionerRoles: ['PractitionerRole/pr-martin'],
    organizations: ['Organization/cardio'],
    roleCodes: [],
    policyRoles: ['clinician'],
    ...overrides,
  };
}

export function patientPrincipal(): PatientPrincipal {
  return {
    kind: 'patient',
    method: 'jwt',
    claims: {
      issuer: 'https://idp.chu-demo.example/realms/patients',
      subject: 'pat-user-1',
      idNatPs: undefined,
      professionCodes: [],
      roles: [],
      groups: [],
      fhirUser: 'Patient/pat-1',
      patientContext: 'pat-1',
      scopes: undefined,
      clientId: 'patient-portal',
      jti: undefined,
      displayName: 'Jeanne DURAND',
      expiresAt: undefined,
    },
    certificate: undefined,
    patient: 'Patient/pat-1',
    policyRoles: ['patient'],
  };
}

export function interaction(kind: InteractionKind, extra: Partial<FhirInteraction> = {}): FhirInteraction {
  const method = ({ create: 'POST', update: 'PUT', patch: 'PATCH', delete: 'DELETE' } as const)[kind as 'create'] ?? 'GET';
  return {
    kind,
    method,
    head: false,
    resourceType: 'Observation',
    id: undefined,
    versionId: undefined,
    operation: undefined,
    operationLevel: undefined,
    compartment: undefined,
    params: [],
    conditional: undefined,
    body: undefined,
    entries: undefined,
    path: 'Observation',
    prefer: {},
    format: 'json',
    ...extra,
  };
}

export function params(...pairs: [string, string][]): SearchParam[] {
  return pairs.map(([name, value]) => {
    const [n, modifier] = name.split(':');
    return { name: n!, modifier, value };
  });
}

export function permit(overrides: Partial<Decision> = {}): Decision {
  return {
    effect: 'permit',
    reason: 'care-relationship',
    rule: 'care-team',
    message: 'Member of an active care team of the patient',
    evidence: [{ source: 'careteam', reference: 'CareTeam/ct-1' }],
    obligations: [],
    patients: ['pat-1'],
    ...overrides,
  };
}

export function deny(overrides: Partial<Decision> = {}): Decision {
  return {
    effect: 'deny',
    reason: 'no-care-relationship',
    rule: 'default',
    message: 'No care relationship with this patient (L1110-4)',
    evidence: [],
    obligations: [],
    patients: ['pat-1'],
    refuseAs: 'not-found',
    ...overrides,
  };
}

let counter = 0;
/** A deterministic id generator for tests. */
export function seqIds(prefix = '00000000-0000-4000-8000-'): () => string {
  return () => `${prefix}${String(++counter).padStart(12, '0')}`;
}

export function baseInput(overrides: Partial<AuditInput> = {}): AuditInput {
  return {
    newId: seqIds(),
    requestId: 'req-1',
    recorded: '2025-03-04T10:00:00.000Z',
    principal: practitioner(),
    httpStatus: 200,
    clientAddress: '10.0.0.5',
    publicBaseUrl: 'https://fhir.chu-demo.example/fhir',
    site: 'chu-demo',
    patients: ['pat-1'],
    ...overrides,
  };
}
