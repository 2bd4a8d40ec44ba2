import type { Bundle, Resource } from '@medplum/fhirtypes';
import { ProxyError } from '../../src/http/errors.js';
import type { FhirClient } from '../../src/upstream/client.js';

/**
 * A plain-object FhirClient over an in-memory list of resources, enough for principal resolution:
 * `Practitioner?identifier=` (token OR lists, escaped), `PractitionerRole?practitioner=&active=`,
 * and reads. `failing = true` makes every call fail like the real client on an outage.
 */
export interface FakeFhir extends FhirClient {
  resources: Resource[];
  calls: string[];
  failing: boolean;
  /** When set, the fake ignores search parameters (like an upstream that does not support them). */
  ignoreParams: boolean;
}

function splitUnescaped(s: string, sep: string): string[] {
  const out: string[] = [];
  let cur = '';
  for (let i = 0; i < s.length; i++) {
    const c = s[i]!;
    if (c === '\\' && i + 1 < s.length) {
      cur += s[i + 1];
      i++;
    } else if (c === sep) {
      out.push(cur);
      cur = '';
    } else cur += c;
  }
  out.push(cur);
  return out;
}

/** Splits on an unescaped separator, keeping escapes for the next level. */
function splitKeep(s: string, sep: string): string[] {
  const out: string[] = [];
  let cur = '';
  for (let i = 0; i < s.length; i++) {
    const c = s[i]!;
    if (c === '\\' && i + 1 < s.length) {
      cur += c + s[i + 1];
      i++;
    } else if (c === sep) {
      out.push(cur);
      cur = '';
    } else cur += c;
  }
  out.push(cur);
  return out;
}

export function fakeFhir(resources: Resource[] = []): FakeFhir {
  const self: FakeFhir = {
    resources,
    calls: [],
    failing: false,
    ignoreParams: false,
    baseUrl: 'http://fhir.test/fhir',
    async search(resourceType, params) {
      const p = new URLSearchParams(params as Record<string, string>);
      self.calls.push(`${resourceType}?${p.toString()}`);
      if (self.failing) {
        throw new ProxyError('ERR_LOOKUP_FAILED', 'A lookup on the FHIR server failed; access cannot be decided.', { expose: true });
      }
      let matches = self.resources.filter((r) => r.resourceType === resourceType);
      if (!self.ignoreParams) {
        const identifier = p.get('identifier');
        if (identifier !== null) {
          const wanted = splitKeep(identifier, ',').map((t) => splitUnescaped(t, '|'));
          matches = matches.filter((r) =>
            ((r as { identifier?: Array<{ system?: string; value?: string }> }).identifier ?? []).some((i) =>
              wanted.some(([system, value]) => i.system === system && i.value === value),
            ),
          );
        }
        const practitioner = p.get('practitioner');
        if (practitioner !== null) {
          matches = matches.filter((r) => (r as { practitioner?: { reference?: string } }).practitioner?.reference === practitioner);
        }
        if (p.get('active') === 'true') matches = matches.filter((r) => (r as { active?: boolean }).active !== false);
      }
      const bundle: Bundle = {
        resourceType: 'Bundle',
        type: 'searchset',
        entry: matches.map((resource) => ({ resource, search: { mode: 'match' } })),
      };
      return bundle;
    },
    async searchAll<T extends Resource = Resource>(resourceType: string, params: URLSearchParams | Record<string, string>) {
      const b = await self.search(resourceType, params);
      return (b.entry ?? []).map((e) => e.resource as T);
    },
    async read<T extends Resource = Resource>(resourceType: string, id: string) {
      self.calls.push(`${resourceType}/${id}`);
      if (self.failing) {
        throw new ProxyError('ERR_LOOKUP_FAILED', 'A lookup on the FHIR server failed; access cannot be decided.', { expose: true });
      }
      return self.resources.find((r) => r.resourceType === resourceType && r.id === id) as T | undefined;
    },
    async batch() {
      throw new Error('not used by identity');
    },
    async capabilities() {
      return { resourceType: 'CapabilityStatement' } as Resource;
    },
    async update() {
      throw new Error('not used by identity');
    },
  };
  return self;
}

/** The demo hospital's people as FHIR resources, for resolution tests. */
export const IDNATPS = 'urn:oid:1.2.250.1.71.4.2.1';
export const RPPS = 'https://rpps.esante.gouv.fr';

export function practitioner(id: string, ids: Array<[string, string]>, extra: Record<string, unknown> = {}): Resource {
  return {
    resourceType: 'Practitioner',
    id,
    identifier: ids.map(([system, value]) => ({ system, value })),
    ...extra,
  } as Resource;
}

export function practitionerRole(
  id: string,
  practitionerId: string,
  opts: { org?: string; codes?: Array<[string, string]>; period?: { start?: string; end?: string }; active?: boolean } = {},
): Resource {
  return {
    resourceType: 'PractitionerRole',
    id,
    active: opts.active ?? true,
    practitioner: { reference: `Practitioner/${practitionerId}` },
    ...(opts.org ? { organization: { reference: `Organization/${opts.org}` } } : {}),
    ...(opts.codes ? { code: [{ coding: opts.codes.map(([system, code]) => ({ system, code })) }] } : {}),
    ...(opts.period ? { period: opts.period } : {}),
  } as Resource;
}
