import type { Patient, Period, Practitioner, PractitionerRole, RelatedPerson, Resource } from '@medplum/fhirtypes';
import { LRUCache } from 'lru-cache';
import { ProxyError } from '../http/errors.js';
import type { CacheStats } from '../ops/metrics.js';
import type { FhirClient } from '../upstream/client.js';
import { RPPS_SYSTEM } from './config.js';
import type { CertificateIdentity, Claims } from './principal.js';

/**
 * Principal resolution: the verified identity (idNatPs, staff id, fhirUser, patient context) →
 * the FHIR resource that is this user on the upstream, plus their active PractitionerRoles.
 * Lookups use the proxy's own FhirClient (service credential). Results are cached for a short
 * TTL, keyed by everything that went into the lookup, and dropped when a PractitionerRole write
 * passes through the proxy.
 */

/** What resolution found. */
export type Resolved =
  | {
      kind: 'practitioner';
      practitioner: string;
      practitionerRoles: readonly string[];
      organizations: readonly string[];
      roleCodes: readonly string[];
    }
  | { kind: 'patient'; patient: string }
  | { kind: 'related-person'; relatedPerson: string };

export interface ResolveRequest {
  claims: Claims;
  /** A local staff id and the identifier system it lives in. */
  staff: { system: string; value: string } | undefined;
  /** The card presented with the request, if any (part of the cache key only: identity comes from `claims`). */
  certificate: CertificateIdentity | undefined;
}

export interface PrincipalResolver {
  /**
   * @throws ProxyError ERR_UNKNOWN_PRACTITIONER / ERR_AMBIGUOUS_PRACTITIONER /
   *   ERR_FHIRUSER_MISMATCH (403); the client's ERR_LOOKUP_FAILED (503) when a lookup fails.
   */
  resolve(req: ResolveRequest): Promise<Resolved>;
  /** Forgets cached resolutions of `Practitioner/<id>` (or a Patient/RelatedPerson reference). */
  invalidatePrincipal(reference: string): void;
  clear(): void;
  /** The principal cache's counters (metrics): a miss is a lookup started. */
  cacheStats(): CacheStats;
}

export interface PrincipalResolverOptions {
  client: FhirClient;
  /** Practitioner.identifier systems searched with the idNatPs. */
  practitionerIdentifierSystems: readonly string[];
  ttlSeconds: number;
  max: number;
  /** Clock, epoch milliseconds (role periods). */
  now?: () => number;
}

const FHIR_ID = /^[A-Za-z0-9\-.]{1,64}$/;
const ORG_REF = /^Organization\/[A-Za-z0-9\-.]{1,64}$/;
/** Upper bound on PractitionerRole pages for one person. */
const MAX_ROLE_PAGES = 5;

/** Escapes a value for a FHIR token search parameter (`\`, `,`, `|`, `$`). */
function escapeToken(v: string): string {
  return v.replace(/[\\,|$]/g, (c) => `\\${c}`);
}

/** `system|value` pairs under which a practitioner may be recorded. */
export function practitionerIdentifiers(
  idNatPs: string | undefined,
  staff: ResolveRequest['staff'],
  systems: readonly string[],
): Array<{ system: string; value: string }> {
  const out: Array<{ system: string; value: string }> = [];
  if (idNatPs !== undefined) {
    for (const system of systems) {
      if (system === RPPS_SYSTEM) {
        // idNatPs type 8 = "8" + the 11-digit RPPS number (TRE_G08).
        if (/^8\d{11}$/.test(idNatPs)) out.push({ system, value: idNatPs.slice(1) });
      } else {
        out.push({ system, value: idNatPs });
      }
    }
  }
  if (staff) out.push(staff);
  return out;
}

function forbidden(code: 'ERR_UNKNOWN_PRACTITIONER' | 'ERR_AMBIGUOUS_PRACTITIONER' | 'ERR_FHIRUSER_MISMATCH', message: string, detail?: string) {
  return new ProxyError(code, message, { detail });
}

function periodCovers(period: Period | undefined, nowMs: number): boolean {
  if (!period) return true;
  const start = period.start ? Date.parse(period.start) : undefined;
  const end = period.end ? Date.parse(period.end) : undefined;
  // An unreadable date is not "open": the role does not count.
  if (Number.isNaN(start) || Number.isNaN(end)) return false;
  return (start === undefined || start <= nowMs) && (end === undefined || nowMs <= end);
}

function endOf(period: Period | undefined): number | undefined {
  return period?.end ? Date.parse(period.end) : undefined;
}

function refOf(r: Resource): string {
  return `${r.resourceType}/${r.id}`;
}

/** Creates the resolver with its cache. */
export function createPrincipalResolver(opts: PrincipalResolverOptions): PrincipalResolver {
  const { client } = opts;
  const now = opts.now ?? Date.now;
  const ttlMs = opts.ttlSeconds * 1000;
  const cache = ttlMs > 0 ? new LRUCache<string, Resolved>({ max: opts.max, ttl: ttlMs }) : undefined;
  const pending = new Map<string, Promise<Resolved>>();
  let hits = 0;
  let misses = 0;
  // Bumped by every invalidation: a lookup that started before it must not cache its answer.
  let generation = 0;

  async function findPractitioner(req: ResolveRequest): Promise<Practitioner | undefined> {
    const ids = practitionerIdentifiers(req.claims.idNatPs, req.staff, opts.practitionerIdentifierSystems);
    if (ids.length === 0) return undefined;
    const found = await client.searchAll<Practitioner>(
      'Practitioner',
      { identifier: ids.map((i) => `${escapeToken(i.system)}|${escapeToken(i.value)}`).join(',') },
      2,
    );
    // Keep only resources that really carry one of the identifiers: an upstream that ignored the
    // parameter would otherwise hand us someone else.
    const matching = new Map<string, Practitioner>();
    for (const p of found) {
      if (p.resourceType !== 'Practitioner' || !p.id || !FHIR_ID.test(p.id)) continue;
      const carries = (p.identifier ?? []).some((pi) => ids.some((i) => pi.system === i.system && pi.value === i.value));
      if (carries) matching.set(p.id, p);
    }
    if (matching.size === 0) {
      throw forbidden('ERR_UNKNOWN_PRACTITIONER', 'No Practitioner on this server matches the authenticated identity.', 'no match');
    }
    if (matching.size > 1) {
      throw forbidden(
        'ERR_AMBIGUOUS_PRACTITIONER',
        'Several Practitioners on this server match the authenticated identity; access cannot be attributed.',
        `${matching.size} matches`,
      );
    }
    return [...matching.values()][0];
  }

  async function practitionerFor(req: ResolveRequest): Promise<Extract<Resolved, { kind: 'practitioner' }> & { until?: number }> {
    const { fhirUser } = req.claims;
    let practitioner = await findPractitioner(req);
    if (practitioner) {
      if (fhirUser !== undefined && fhirUser !== refOf(practitioner)) {
        throw forbidden('ERR_FHIRUSER_MISMATCH', 'The token fhirUser does not designate the authenticated practitioner.');
      }
    } else {
      // No national or staff identifier: fhirUser Practitioner/x is the identity.
      if (fhirUser === undefined || !fhirUser.startsWith('Practitioner/')) {
        throw forbidden('ERR_UNKNOWN_PRACTITIONER', 'The credential names no practitioner identifier, fhirUser or patient.', 'no identifier');
      }
      practitioner = await client.read<Practitioner>('Practitioner', fhirUser.slice('Practitioner/'.length));
      if (!practitioner || practitioner.resourceType !== 'Practitioner' || refOf(practitioner) !== fhirUser) {
        throw forbidden('ERR_UNKNOWN_PRACTITIONER', 'The practitioner named by fhirUser does not exist on this server.', 'fhirUser not found');
      }
    }
    if (practitioner.active === false) {
      throw forbidden('ERR_UNKNOWN_PRACTITIONER', 'The authenticated practitioner is inactive on this server.', 'inactive');
    }
    const ref = refOf(practitioner);
    const nowMs = now();
    const roles = await client.searchAll<PractitionerRole>('PractitionerRole', { practitioner: ref, active: 'true' }, MAX_ROLE_PAGES);
    const practitionerRoles: string[] = [];
    const organizations = new Set<string>();
    const roleCodes = new Set<string>();
    let until: number | undefined;
    for (const role of roles) {
      if (role.resourceType !== 'PractitionerRole' || !role.id || !FHIR_ID.test(role.id)) continue;
      // Same defence as above: only roles that really point at this practitioner.
      if (role.practitioner?.reference !== ref || role.active === false || !periodCovers(role.period, nowMs)) continue;
      practitionerRoles.push(refOf(role));
      const org = role.organization?.reference;
      if (org && ORG_REF.test(org)) organizations.add(org);
      // Codes and specialties both: the policy's roles and minimisation rows match either
      // (a psychiatrist is a physician whose role's specialty is psychiatry).
      for (const c of [...(role.code ?? []), ...(role.specialty ?? [])]) {
        for (const coding of c.coding ?? []) {
          if (coding.system && coding.code) roleCodes.add(`${coding.system}|${coding.code}`);
        }
      }
      const end = endOf(role.period);
      if (end !== undefined) until = Math.min(until ?? end, end);
    }
    return {
      kind: 'practitioner',
      practitioner: ref,
      practitionerRoles,
      organizations: [...organizations],
      roleCodes: [...roleCodes],
      ...(until === undefined ? {} : { until }),
    };
  }

  async function readActive<T extends Patient | RelatedPerson>(type: T['resourceType'], id: string, what: string): Promise<T> {
    const r = await client.read<T>(type, id);
    if (!r || r.resourceType !== type || r.id !== id) {
      throw forbidden('ERR_UNKNOWN_PRACTITIONER', `The ${what} named by the credential does not exist on this server.`, `${type} not found`);
    }
    if (r.active === false) {
      throw forbidden('ERR_UNKNOWN_PRACTITIONER', `The ${what} named by the credential is inactive on this server.`, `${type} inactive`);
    }
    return r;
  }

  async function lookup(req: ResolveRequest): Promise<Resolved & { until?: number }> {
    const { fhirUser, patientContext, idNatPs } = req.claims;
    const practitionerId = idNatPs !== undefined || req.staff !== undefined;
    if (practitionerId || fhirUser?.startsWith('Practitioner/')) {
      if (fhirUser !== undefined && !fhirUser.startsWith('Practitioner/')) {
        throw forbidden('ERR_FHIRUSER_MISMATCH', 'The token fhirUser does not designate the authenticated practitioner.');
      }
      return practitionerFor(req);
    }
    if (fhirUser?.startsWith('RelatedPerson/')) {
      const rp = await readActive<RelatedPerson>('RelatedPerson', fhirUser.slice('RelatedPerson/'.length), 'related person');
      return { kind: 'related-person', relatedPerson: refOf(rp) };
    }
    if (fhirUser?.startsWith('Patient/') || patientContext !== undefined) {
      const fromUser = fhirUser?.slice('Patient/'.length);
      if (fromUser !== undefined && patientContext !== undefined && fromUser !== patientContext) {
        throw forbidden('ERR_FHIRUSER_MISMATCH', 'The token fhirUser and patient context designate different patients.');
      }
      const p = await readActive<Patient>('Patient', (fromUser ?? patientContext)!, 'patient');
      return { kind: 'patient', patient: refOf(p) };
    }
    throw forbidden('ERR_UNKNOWN_PRACTITIONER', 'The credential names no practitioner identifier, fhirUser or patient.', 'no identifier');
  }

  function keyOf(req: ResolveRequest): string {
    const c = req.claims;
    return JSON.stringify([
      c.issuer,
      c.subject,
      req.certificate?.thumbprintS256 ?? null,
      c.idNatPs ?? null,
      req.staff?.system ?? null,
      req.staff?.value ?? null,
      c.fhirUser ?? null,
      c.patientContext ?? null,
    ]);
  }

  return {
    async resolve(req) {
      const key = keyOf(req);
      const hit = cache?.get(key);
      if (hit) {
        hits++;
        return hit;
      }
      const inflight = pending.get(key);
      if (inflight) {
        hits++;
        return inflight;
      }
      misses++;
      const started = generation;
      const p = lookup(req)
        .then(({ until, ...resolved }) => {
          const value = resolved as Resolved;
          if (cache && started === generation) {
            // A role that ends before the TTL must not outlive its period in the cache.
            const ttl = until === undefined ? ttlMs : Math.min(ttlMs, until - now());
            if (ttl > 0) cache.set(key, value, { ttl });
          }
          return value;
        })
        .finally(() => {
          if (pending.get(key) === p) pending.delete(key);
        });
      pending.set(key, p);
      return p;
    },
    invalidatePrincipal(reference) {
      generation++;
      pending.clear();
      if (!cache) return;
      for (const [key, value] of cache.entries()) {
        const ref = value.kind === 'practitioner' ? value.practitioner : value.kind === 'patient' ? value.patient : value.relatedPerson;
        if (ref === reference) cache.delete(key);
      }
    },
    clear() {
      generation++;
      pending.clear();
      cache?.clear();
    },
    cacheStats: () => ({ hits, misses, entries: cache?.size ?? 0 }),
  };
}
