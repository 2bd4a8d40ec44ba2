import type { ProxyError } from '../http/errors.js';
import { invalidToken } from './challenge.js';
import type { ClaimMapping } from './config.js';
import type { Claims } from './principal.js';
import { parseSmartScopes, ScopeSyntaxError } from './scopes.js';

/**
 * Claim mapping: a verified token payload → `Claims`, following the issuer's configured paths.
 * Every value is checked by type and never coerced: a string where a list is expected, an object
 * where a string is expected, a number for a subject, all refuse the token (ERR_CLAIM_TYPE), so that
 * an IdP change or an injected claim cannot be half-read into something else. JSON `null` counts as
 * absent.
 */

/** A verified token, mapped. */
export interface MappedToken {
  claims: Claims;
  /** Local staff id (with `ClaimMapping.staffIdSystem`), when the mapping has one. */
  staffId: string | undefined;
  /** RFC 8705 binding: the `cnf.x5t#S256` thumbprint the presenting certificate must have. */
  boundThumbprint: string | undefined;
}

interface Segment {
  name: string;
  each: boolean;
}

function parsePath(path: string): Segment[] {
  return path.split('.').map((s) => (s.endsWith('[]') ? { name: s.slice(0, -2), each: true } : { name: s, each: false }));
}

function isPlainObject(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

function kind(v: unknown): string {
  return v === null ? 'null' : Array.isArray(v) ? 'array' : typeof v;
}

/** Errors for one mapping run. */
class ClaimReader {
  constructor(
    private readonly payload: Record<string, unknown>,
    private readonly realm: string,
  ) {}

  fail(path: string, expected: string, got: unknown): ProxyError {
    return invalidToken(this.realm, `Token claim "${path}" has an unexpected type: expected ${expected}, got ${kind(got)}.`, {
      code: 'ERR_CLAIM_TYPE',
    });
  }

  failValue(path: string, message: string): ProxyError {
    return invalidToken(this.realm, `Token claim "${path}" ${message}.`, { code: 'ERR_CLAIM_TYPE' });
  }

  /** Terminal values at `path` (absent and null skipped). */
  private walk(path: string): unknown[] {
    let current: unknown[] = [this.payload];
    for (const seg of parsePath(path)) {
      const next: unknown[] = [];
      for (const v of current) {
        if (!isPlainObject(v)) throw this.fail(path, 'an object on the way', v);
        // Own members only: "constructor" or "__proto__" must not reach Object.prototype.
        const child = Object.hasOwn(v, seg.name) ? v[seg.name] : undefined;
        if (child === undefined || child === null) continue;
        if (seg.each) {
          if (!Array.isArray(child)) throw this.fail(path, `an array at "${seg.name}"`, child);
          for (const el of child) if (el !== null && el !== undefined) next.push(el);
        } else {
          next.push(child);
        }
      }
      current = next;
    }
    return current;
  }

  string(path: string): string | undefined {
    const values = this.walk(path);
    if (values.length === 0) return undefined;
    if (values.length > 1) throw this.fail(path, 'a single string', values);
    const v = values[0];
    if (typeof v !== 'string') throw this.fail(path, 'a string', v);
    return v;
  }

  /** A list: an array of strings, or (for paths through `[]`) one string per element. */
  strings(path: string): string[] {
    const through = path.includes('[]');
    const out: string[] = [];
    for (const v of this.walk(path)) {
      if (through) {
        if (typeof v !== 'string') throw this.fail(path, 'a string in each element', v);
        out.push(v);
      } else {
        if (!Array.isArray(v)) throw this.fail(path, 'an array of strings', v);
        for (const el of v) {
          if (typeof el !== 'string') throw this.fail(path, 'an array of strings', el);
          out.push(el);
        }
      }
    }
    return out;
  }

  /** A string or an array of strings (the scope claim has both shapes in the wild). */
  stringOrStrings(path: string): string | string[] | undefined {
    const values = this.walk(path);
    if (values.length === 0) return undefined;
    if (values.length > 1) throw this.fail(path, 'a single value', values);
    const v = values[0];
    if (typeof v === 'string') return v;
    if (Array.isArray(v) && v.every((el) => typeof el === 'string')) return v as string[];
    throw this.fail(path, 'a string or an array of strings', v);
  }
}

const FHIR_ID = /^[A-Za-z0-9\-.]{1,64}$/;
const USER_REF = /^(Practitioner|Patient|RelatedPerson)\/([A-Za-z0-9\-.]{1,64})$/;

/**
 * Normalises a SMART `fhirUser` (absolute or relative URL) to `Practitioner/x`, `Patient/x` or
 * `RelatedPerson/x`. Returns `undefined` for anything else (other types, versions, queries).
 * When `bases` is non-empty, an absolute URL must start with one of them.
 */
export function normaliseFhirUser(value: string, bases: readonly string[] = []): string | undefined {
  let ref = value;
  if (/^[A-Za-z][A-Za-z0-9+.-]*:/.test(value)) {
    let url: URL;
    try {
      url = new URL(value);
    } catch {
      return undefined;
    }
    if (url.search !== '' || url.hash !== '' || (url.protocol !== 'https:' && url.protocol !== 'http:')) return undefined;
    if (bases.length > 0) {
      const base = bases.map((b) => b.replace(/\/+$/, '')).find((b) => value.startsWith(`${b}/`));
      if (base === undefined) return undefined;
      ref = value.slice(base.length + 1);
    } else {
      const segments = url.pathname.split('/').filter((s) => s !== '');
      if (segments.length < 2) return undefined;
      ref = segments.slice(-2).join('/');
    }
  }
  return USER_REF.test(ref) ? ref : undefined;
}

/** `code` of a `code^oid` value (PSC SubjectRole), or the value itself. */
function professionCode(path: string, value: string, reader: ClaimReader): string {
  const code = value.includes('^') ? value.slice(0, value.indexOf('^')) : value;
  if (!/^[A-Za-z0-9]{1,16}$/.test(code)) throw reader.failValue(path, 'is not a profession code');
  return code;
}

const BASE64URL_SHA256 = /^[A-Za-z0-9_-]{43}$/;

/**
 * Maps a verified payload with an issuer's claim mapping.
 * @throws ProxyError ERR_CLAIM_TYPE (401) on a claim of an unexpected type or shape;
 *   ERR_CERT_BINDING (401) for a `cnf` this proxy cannot check.
 */
export function mapClaims(payload: Record<string, unknown>, mapping: ClaimMapping, realm: string): MappedToken {
  const r = new ClaimReader(payload, realm);

  const issuer = r.string('iss');
  if (issuer === undefined) throw r.failValue('iss', 'is missing');
  const subject = r.string(mapping.userId);
  if (subject === undefined || subject === '') throw r.failValue(mapping.userId, 'is missing: the token names no subject');

  const idNatPs = mapping.idNatPs === undefined ? undefined : nonEmpty(r.string(mapping.idNatPs));
  const staffId = mapping.staffId === undefined ? undefined : nonEmpty(r.string(mapping.staffId));

  const professionCodes = unique(mapping.professionCodes.flatMap((p) => r.strings(p).map((v) => professionCode(p, v, r))));
  const roles = unique(mapping.roles.flatMap((p) => r.strings(p)));
  const groups = unique(mapping.groups.flatMap((p) => r.strings(p)));

  let fhirUser: string | undefined;
  const rawFhirUser = r.string(mapping.fhirUser);
  if (rawFhirUser !== undefined) {
    fhirUser = normaliseFhirUser(rawFhirUser, mapping.fhirBaseUrls);
    if (fhirUser === undefined) {
      throw r.failValue(mapping.fhirUser, 'must reference a Practitioner, Patient or RelatedPerson of this FHIR server');
    }
  }

  const patientContext = r.string(mapping.patient);
  if (patientContext !== undefined && !FHIR_ID.test(patientContext)) throw r.failValue(mapping.patient, 'is not a Patient id');

  let scopes: Claims['scopes'];
  if (mapping.scope !== undefined) {
    const raw = r.stringOrStrings(mapping.scope);
    try {
      scopes = raw === undefined ? [] : parseSmartScopes(raw);
    } catch (err) {
      if (err instanceof ScopeSyntaxError) throw r.failValue(mapping.scope, `holds a malformed SMART scope (${err.message})`);
      throw err;
    }
  }

  let clientId: string | undefined;
  for (const p of mapping.clientId) {
    clientId = r.string(p);
    if (clientId !== undefined) break;
  }

  const jti = r.string('jti');
  const exp = payload.exp;
  const expiresAt = typeof exp === 'number' ? exp : undefined;

  let displayName = r.string(mapping.displayName);
  if (displayName === undefined) {
    const given = r.string('given_name');
    const family = r.string('family_name');
    displayName = [given, family].filter((s) => s !== undefined && s !== '').join(' ') || undefined;
  }

  return {
    claims: {
      issuer,
      subject,
      idNatPs,
      professionCodes,
      roles,
      groups,
      fhirUser,
      patientContext,
      scopes,
      clientId,
      jti,
      displayName,
      expiresAt,
    },
    staffId,
    boundThumbprint: readConfirmation(payload, realm),
  };
}

/**
 * RFC 8705 §3.1 confirmation. Only `x5t#S256` (base64url, no padding, of a SHA-256) is understood;
 * a token bound to anything else (DPoP `jkt`, a `jwk`) cannot be checked here and is refused rather
 * than accepted as a plain bearer token.
 */
function readConfirmation(payload: Record<string, unknown>, realm: string): string | undefined {
  const cnf = payload.cnf;
  if (cnf === undefined || cnf === null) return undefined;
  if (!isPlainObject(cnf)) {
    throw invalidToken(realm, 'Token claim "cnf" has an unexpected type: expected an object.', { code: 'ERR_CLAIM_TYPE' });
  }
  const keys = Object.keys(cnf);
  const x5t = cnf['x5t#S256'];
  if (keys.length !== 1 || x5t === undefined) {
    throw invalidToken(realm, 'The token is bound to a key this server cannot verify (only cnf x5t#S256 is supported).', {
      code: 'ERR_CERT_BINDING',
    });
  }
  if (typeof x5t !== 'string' || !BASE64URL_SHA256.test(x5t)) {
    throw invalidToken(realm, 'Token claim "cnf.x5t#S256" is not a base64url SHA-256 thumbprint.', { code: 'ERR_CLAIM_TYPE' });
  }
  return x5t;
}

function nonEmpty(s: string | undefined): string | undefined {
  return s === undefined || s === '' ? undefined : s;
}

function unique(list: string[]): string[] {
  return [...new Set(list)];
}
