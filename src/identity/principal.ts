/**
 * Who is calling, once verified. Produced by `identity/`, consumed by every later stage.
 * Plain data: no framework types, serialisable into the AuditEvent.
 */

/** How the identity was proven. */
export type AuthMethod = 'jwt' | 'mtls' | 'forwarded-cert' | 'jwt+cert';

/** A verified CPS (or other IGC-Santé) client certificate. */
export interface CertificateIdentity {
  /** Where it came from: the TLS socket or a header set by a trusted TLS terminator. */
  source: 'tls' | 'header';
  /** base64url (no padding) SHA-256 of the DER, as RFC 8705 `x5t#S256`. */
  thumbprintS256: string;
  /** Subject CN: the idNatPs for a CPS card (e.g. `899700123456`). */
  idNatPs: string | undefined;
  surname: string | undefined;
  givenName: string | undefined;
  /** The `title` label as on the card (e.g. `Médecin`). */
  professionLabel: string | undefined;
  /** TRE-G15 code mapped from the label (e.g. `10`). */
  professionCode: string | undefined;
  issuer: string;
  serialNumber: string;
  notAfter: string;
}

/** SMART v2 scope, parsed. `patient/Observation.rs?category=...` */
export interface SmartScope {
  context: 'patient' | 'user' | 'system';
  /** Resource type or `*`. */
  resourceType: string;
  /** Subset of c, r, u, d, s. */
  permissions: ReadonlySet<'c' | 'r' | 'u' | 'd' | 's'>;
  /** Restriction parameters (`?category=...`), raw pairs. */
  params: ReadonlyArray<readonly [string, string]>;
  raw: string;
}

/** What the verified credentials say, before resolution to a FHIR resource. */
export interface Claims {
  /** Token issuer (or certificate issuer DN for card-only identities). */
  issuer: string;
  /** Token `sub`, or the card's idNatPs. */
  subject: string;
  /** Practitioner national id (idNatPs with its type prefix), when known. */
  idNatPs: string | undefined;
  /** TRE-G15 profession codes. */
  professionCodes: readonly string[];
  /** Roles and groups from the IdP (e.g. Keycloak realm roles). */
  roles: readonly string[];
  groups: readonly string[];
  /** SMART `fhirUser` (relative `Practitioner/123` form after normalisation). */
  fhirUser: string | undefined;
  /** SMART patient launch context (id only). */
  patientContext: string | undefined;
  /** Parsed SMART scopes; `undefined` when the credential carries no scopes (card only). */
  scopes: readonly SmartScope[] | undefined;
  clientId: string | undefined;
  jti: string | undefined;
  /** Names for the AuditEvent only; never logged. */
  displayName: string | undefined;
  /** Token expiry (epoch seconds), if any. */
  expiresAt: number | undefined;
}

export interface PractitionerPrincipal {
  kind: 'practitioner';
  method: AuthMethod;
  claims: Claims;
  certificate: CertificateIdentity | undefined;
  /** `Practitioner/<id>` on the upstream. */
  practitioner: string;
  /** `PractitionerRole/<id>` of active roles. */
  practitionerRoles: readonly string[];
  /** `Organization/<id>` of those roles. */
  organizations: readonly string[];
  /** PractitionerRole.code and .specialty codings, as `system|code`. */
  roleCodes: readonly string[];
  /** Roles resolved by the policy's role mapping (e.g. `clinician`, `dim`, `admission`). */
  policyRoles: readonly string[];
}

export interface PatientPrincipal {
  kind: 'patient';
  method: AuthMethod;
  claims: Claims;
  certificate: CertificateIdentity | undefined;
  /** `Patient/<id>` on the upstream. */
  patient: string;
  policyRoles: readonly string[];
}

export interface RelatedPersonPrincipal {
  kind: 'related-person';
  method: AuthMethod;
  claims: Claims;
  certificate: CertificateIdentity | undefined;
  /** `RelatedPerson/<id>` on the upstream. */
  relatedPerson: string;
  policyRoles: readonly string[];
}

export type Principal = PractitionerPrincipal | PatientPrincipal | RelatedPersonPrincipal;

/** Stable user key for caches, audit and paging-link binding. */
export function principalKey(p: Principal): string {
  switch (p.kind) {
    case 'practitioner':
      return p.practitioner;
    case 'patient':
      return p.patient;
    case 'related-person':
      return p.relatedPerson;
  }
}

/**
 * The claims of a practitioner named by reference only, with no credential behind them (the DIM's
 * "which patients can she see", the benchmark): resolution reads her record and active roles.
 */
export function referenceClaims(ref: string, issuer: string): Claims {
  return {
    issuer,
    subject: ref,
    idNatPs: undefined,
    professionCodes: [],
    roles: [],
    groups: [],
    fhirUser: ref,
    patientContext: undefined,
    scopes: undefined,
    clientId: undefined,
    jti: undefined,
    displayName: undefined,
    expiresAt: undefined,
  };
}
