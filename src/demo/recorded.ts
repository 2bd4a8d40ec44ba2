import type { AuditEvent } from '@medplum/fhirtypes';
import type { AuditInput } from '../audit/audit-input.js';
import { buildAuditEvents } from '../audit/build.js';
import { classify } from '../fhir/classify.js';
import type { PractitionerPrincipal } from '../identity/principal.js';
import { PERSONAS, type PersonaName } from './personas.js';

/**
 * What caregate would have recorded of the demo hospital's past: the pieces the seeded trail
 * (src/demo/oversight.ts, src/demo/patient-rights.ts) is built from, with caregate's own builders.
 */

export const DAY = 86_400_000;
export const HOUR = 3_600_000;
export const PUBLIC_BASE = 'https://fhir.chu-demo.example/fhir';
export const SITE = 'chu-demo';
const ISSUER = 'https://idp.chu-demo.example/realms/chu';
export const CLIENT = 'dpi-web';

/** A time as the trail writes it: whole seconds, UTC. */
export const iso = (t: number): string => new Date(Math.floor(t / 1000) * 1000).toISOString().replace('.000Z', 'Z');

/** The one AuditEvent of an interaction that names at most one patient. */
export function recordedEvent(input: AuditInput): AuditEvent {
  const [e] = buildAuditEvents(input);
  return e!;
}

/** A GET as the classifier reads it. */
export function recordedRequest(path: string, query = '') {
  return classify({ method: 'GET', path, query, headers: {} }, { maxBodyBytes: 0 });
}

/** The verified caller a demo persona's token makes (what caregate records of her). */
export function personaPrincipal(name: PersonaName): PractitionerPrincipal {
  const p = PERSONAS[name];
  if (p.kind !== 'practitioner') throw new TypeError(`${name} is not a practitioner`);
  return {
    kind: 'practitioner',
    method: 'jwt',
    claims: {
      issuer: ISSUER,
      subject: `demo-${p.name}`,
      idNatPs: 'idNatPs' in p ? p.idNatPs : undefined,
      professionCodes: 'profession' in p ? [p.profession.code] : [],
      roles: [...p.idpRoles],
      groups: [],
      fhirUser: `Practitioner/${p.id}`,
      patientContext: undefined,
      scopes: undefined,
      clientId: CLIENT,
      jti: undefined,
      displayName: `${p.given} ${p.family}`,
      expiresAt: undefined,
    },
    certificate: undefined,
    practitioner: `Practitioner/${p.id}`,
    practitionerRoles: [],
    organizations: [],
    roleCodes: [],
    // The demo policy's role for these personas (the first that matches).
    policyRoles: [name === 'emergency' ? 'emergency' : name === 'dim' ? 'dim' : 'clinician'],
  };
}
