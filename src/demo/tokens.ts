import { createHash, createPrivateKey, createPublicKey, generateKeyPairSync, randomUUID, sign, X509Certificate, type JsonWebKey, type KeyObject } from 'node:crypto';
import { chmodSync, existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import type { IssuerConfigInput } from '../identity/config.js';
import { PERSONAS, STAFF_ID_SYSTEM, type DemoPersona, type PersonaName } from './personas.js';

/**
 * The demo token issuer: a local stand-in for the hospital's Keycloak realm. It keeps one ES256
 * key pair under a directory (created once), publishes the public key as a JWKS file, and signs
 * Keycloak-shaped tokens for the demo personas. Synchronous on purpose (CLI use).
 */

export const DEMO_ISSUER = 'https://idp.chu-demo.example/realms/chu';
export const DEMO_AUDIENCE = 'caregate';
export const DEMO_CLIENT_ID = 'caregate-demo';
export const DEFAULT_DEMO_DIR = 'var/demo-keys';
export const DEMO_TOKEN_LIFETIME_SECONDS = 8 * 3600;
/** PSC-style `SubjectRole` OID suffix (`<TRE-G15>^<OID>`). */
const SUBJECT_ROLE_OID = '1.2.250.1.213.1.1.5.5';

export interface DemoSigningKey {
  kid: string;
  privateKey: KeyObject;
  jwksFile: string;
}

/** RFC 7638 thumbprint of an EC public JWK. */
function jwkThumbprint(jwk: JsonWebKey): string {
  const canonical = JSON.stringify({ crv: jwk.crv, kty: jwk.kty, x: jwk.x, y: jwk.y });
  return createHash('sha256').update(canonical).digest('base64url');
}

/** Loads, or creates once, the demo issuer's ES256 key pair and its JWKS file under `dir`. */
export function ensureDemoSigningKey(dir: string = DEFAULT_DEMO_DIR): DemoSigningKey {
  const keyFile = join(dir, 'issuer-key.jwk.json');
  const jwksFile = join(dir, 'jwks.json');
  let privateKey: KeyObject;
  if (existsSync(keyFile)) {
    privateKey = createPrivateKey({ key: JSON.parse(readFileSync(keyFile, 'utf8')) as JsonWebKey, format: 'jwk' });
  } else {
    mkdirSync(dir, { recursive: true });
    privateKey = generateKeyPairSync('ec', { namedCurve: 'P-256' }).privateKey;
    writeFileSync(keyFile, JSON.stringify(privateKey.export({ format: 'jwk' })), { mode: 0o600 });
    chmodSync(keyFile, 0o600);
  }
  const publicJwk = createPublicKey(privateKey).export({ format: 'jwk' });
  const kid = jwkThumbprint(publicJwk);
  const jwks = { keys: [{ ...publicJwk, kid, alg: 'ES256', use: 'sig' }] };
  const text = `${JSON.stringify(jwks, null, 2)}\n`;
  if (!existsSync(jwksFile) || readFileSync(jwksFile, 'utf8') !== text) writeFileSync(jwksFile, text);
  return { kid, privateKey, jwksFile };
}

export interface DemoTokenOptions {
  /** Key directory (default `var/demo-keys`). */
  dir?: string;
  /** Clock, epoch milliseconds. */
  now?: number;
  lifetimeSeconds?: number;
  /** Replaces the persona's default scopes. */
  scope?: string;
  /** Absolute FHIR base for `fhirUser` (default: a relative reference). */
  fhirBaseUrl?: string;
  /** RFC 8705: bind the token to this certificate thumbprint (`x5t#S256`). */
  certificateThumbprint?: string;
  /** Bind the token to the persona's demo card in `dir` (`<persona>-card.pem`). */
  bindToCard?: boolean;
  /** Extra claims, merged last (tests, experiments). */
  claims?: Record<string, unknown>;
}

function resourceTypeOf(p: DemoPersona): 'Practitioner' | 'Patient' | 'RelatedPerson' {
  return p.kind === 'practitioner' ? 'Practitioner' : p.kind === 'patient' ? 'Patient' : 'RelatedPerson';
}

/** A stable Keycloak-like subject (UUID shape) per persona. */
function subjectOf(name: string): string {
  const h = createHash('sha256').update(`caregate-demo:${name}`).digest('hex');
  return `${h.slice(0, 8)}-${h.slice(8, 12)}-4${h.slice(13, 16)}-a${h.slice(17, 20)}-${h.slice(20, 32)}`;
}

/** The payload `demoToken` signs, for inspection and tests. */
export function demoClaims(persona: PersonaName, opts: DemoTokenOptions = {}): Record<string, unknown> {
  const p: DemoPersona = PERSONAS[persona];
  const iat = Math.floor((opts.now ?? Date.now()) / 1000);
  const patientScopes = 'openid fhirUser launch/patient patient/*.rs';
  const ref = `${resourceTypeOf(p)}/${p.id}`;
  const claims: Record<string, unknown> = {
    iss: DEMO_ISSUER,
    aud: DEMO_AUDIENCE,
    sub: subjectOf(p.name),
    typ: 'Bearer',
    azp: DEMO_CLIENT_ID,
    iat,
    exp: iat + (opts.lifetimeSeconds ?? DEMO_TOKEN_LIFETIME_SECONDS),
    jti: randomUUID(),
    preferred_username: p.idNatPs ?? p.staffId ?? `${p.given}.${p.family}`.toLowerCase(),
    name: `${p.given} ${p.family}`,
    given_name: p.given,
    family_name: p.family,
    realm_access: { roles: [...p.idpRoles] },
    fhirUser: opts.fhirBaseUrl ? `${opts.fhirBaseUrl.replace(/\/+$/, '')}/${ref}` : ref,
    scope: opts.scope ?? (p.kind === 'practitioner' ? 'openid fhirUser user/*.cruds' : patientScopes),
  };
  // Keycloak user-attribute mappers: one claim per identifier kind, so that a staff id can never
  // be read as a national practitioner id.
  if (p.idNatPs) claims.idnat_ps = p.idNatPs;
  if (p.staffId) claims.staff_id = p.staffId;
  if (p.profession) claims.SubjectRole = [`${p.profession.code}^${SUBJECT_ROLE_OID}`];
  if (p.kind === 'patient') claims.patient = p.id;
  if (p.kind === 'related-person') claims.patient = PERSONAS.patient.id;

  let thumbprint = opts.certificateThumbprint;
  if (opts.bindToCard) {
    const file = join(opts.dir ?? DEFAULT_DEMO_DIR, `${persona}-card.pem`);
    if (!existsSync(file)) throw new TypeError(`no demo card for ${persona} (run ensureDemoPki first): ${file}`);
    thumbprint = createHash('sha256').update(new X509Certificate(readFileSync(file)).raw).digest('base64url');
  }
  if (thumbprint) claims.cnf = { 'x5t#S256': thumbprint };
  return { ...claims, ...opts.claims };
}

/**
 * A signed demo access token for a persona: `iss` https://idp.chu-demo.example/realms/chu,
 * `aud` caregate, Keycloak `realm_access.roles`, `preferred_username`, `fhirUser`, SMART `scope`
 * (patient personas get a `patient` context and `patient/*.rs`), 8 h lifetime.
 */
export function demoToken(persona: PersonaName, opts: DemoTokenOptions = {}): string {
  const key = ensureDemoSigningKey(opts.dir ?? DEFAULT_DEMO_DIR);
  const header = { alg: 'ES256', typ: 'JWT', kid: key.kid };
  const input = `${b64(header)}.${b64(demoClaims(persona, opts))}`;
  const signature = sign('sha256', Buffer.from(input), { key: key.privateKey, dsaEncoding: 'ieee-p1363' });
  return `${input}.${signature.toString('base64url')}`;
}

function b64(v: unknown): string {
  return Buffer.from(JSON.stringify(v)).toString('base64url');
}

/**
 * The `identity.issuers[]` entry that trusts the demo issuer (creates the key and JWKS file if
 * needed, since the identifier reads the JWKS file when it starts).
 */
export function demoIssuerConfig(dir: string = DEFAULT_DEMO_DIR): IssuerConfigInput {
  const { jwksFile } = ensureDemoSigningKey(dir);
  return {
    id: 'demo',
    issuer: DEMO_ISSUER,
    audience: DEMO_AUDIENCE,
    algorithms: ['ES256'],
    jwksFile,
    claims: {
      idNatPs: 'idnat_ps',
      staffId: 'staff_id',
      staffIdSystem: STAFF_ID_SYSTEM,
      professionCodes: ['SubjectRole'],
      roles: ['realm_access.roles'],
      groups: ['groups'],
      scope: 'scope',
    },
  };
}

/** POSIX shell single-quoting. */
function sq(s: string): string {
  return `'${s.replace(/'/g, `'\\''`)}'`;
}

/** A ready-to-paste curl command for the demo (token and/or card). */
export function demoCurl(opts: { url: string; token?: string; card?: { certFile: string; keyFile: string }; caFile?: string }): string {
  const parts = ['curl', '-sS'];
  if (opts.caFile) parts.push('--cacert', sq(opts.caFile));
  if (opts.card) parts.push('--cert', sq(opts.card.certFile), '--key', sq(opts.card.keyFile));
  if (opts.token) parts.push('-H', sq(`Authorization: Bearer ${opts.token}`));
  parts.push(sq(opts.url));
  return parts.join(' ');
}
