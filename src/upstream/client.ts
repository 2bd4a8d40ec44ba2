import type { Bundle, Resource } from '@medplum/fhirtypes';
import { ProxyError } from '../http/errors.js';
import { tryParseJsonStrict } from '../fhir/json.js';

/**
 * The proxy's own FHIR client, used with its service credential for principal resolution and
 * care-set lookups. Written on Node's fetch (undici, pooled keep-alive connections) rather than
 * fhir-kit-client because every lookup needs a hard timeout and an abort, and a lookup failure must
 * surface as a typed `ERR_LOOKUP_FAILED` that the pipeline turns into a refusal (fail closed).
 */
export interface FhirClient {
  /** One search; the searchset Bundle as returned (links not followed). */
  search(resourceType: string, params: URLSearchParams | Record<string, string>): Promise<Bundle>;
  /** A search with every page followed, up to `maxPages`. Returns all `match` resources. */
  searchAll<T extends Resource = Resource>(
    resourceType: string,
    params: URLSearchParams | Record<string, string>,
    maxPages?: number,
  ): Promise<T[]>;
  /** A read; `undefined` when the upstream answers 404/410. */
  read<T extends Resource = Resource>(resourceType: string, id: string): Promise<T | undefined>;
  /** POSTs a batch or transaction Bundle to the base. */
  batch(bundle: Bundle): Promise<Bundle>;
  /** GETs `/metadata`, for readiness. */
  capabilities(): Promise<Resource>;
  /** PUTs a resource (by its id); the stored version. */
  update<T extends Resource>(resource: T & { id: string }): Promise<T>;
  readonly baseUrl: string;
}

export interface FhirClientOptions {
  baseUrl: string;
  /** Extra headers carrying the proxy's service credential (e.g. `Authorization`). */
  headers?: Record<string, string>;
  timeoutMs: number;
  /** Custom fetch dispatcher (undici Agent) for mTLS to the upstream. */
  dispatcher?: unknown;
  /**
   * Other bases the server may write its paging links on (caregate's public base, configured
   * aliases: a server that knows its public name). Links on them are followed on `baseUrl`.
   */
  aliases?: readonly string[];
}

export function createFhirClient(opts: FhirClientOptions): FhirClient {
  const base = opts.baseUrl.replace(/\/+$/, '');
  const headers: Record<string, string> = {
    accept: 'application/fhir+json',
    'accept-encoding': 'identity',
    ...opts.headers,
  };

  const aliases = (opts.aliases ?? []).map((a) => a.replace(/\/+$/, '')).filter((a) => a !== base);
  /** A link on an alias of the server, re-anchored on the base caregate talks to. */
  function onBase(link: string): string {
    for (const a of aliases) if (link.startsWith(`${a}/`) || link.startsWith(`${a}?`)) return base + link.slice(a.length);
    return link;
  }

  async function request(method: string, url: string, body?: unknown): Promise<{ status: number; json: unknown }> {
    let res: Response;
    try {
      res = await fetch(url, {
        method,
        headers: body === undefined ? headers : { ...headers, 'content-type': 'application/fhir+json' },
        body: body === undefined ? undefined : JSON.stringify(body),
        signal: AbortSignal.timeout(opts.timeoutMs),
        ...(opts.dispatcher ? { dispatcher: opts.dispatcher } : {}),
      } as RequestInit);
    } catch (err) {
      const timeout = err instanceof Error && (err.name === 'TimeoutError' || err.name === 'AbortError');
      throw new ProxyError('ERR_LOOKUP_FAILED', 'A lookup on the FHIR server failed; access cannot be decided.', {
        detail: timeout ? 'lookup timeout' : `lookup error: ${(err as Error).message}`,
        expose: true,
        cause: err,
      });
    }
    const raw = Buffer.from(await res.arrayBuffer());
    if (raw.length === 0) return { status: res.status, json: undefined };
    // Care relationships are decided on these answers: read as strictly as any other upstream body
    // (a CareTeam with two `participant` keys must not be read one way here and another upstream).
    const parsed = tryParseJsonStrict(raw);
    if (!parsed.ok) {
      throw new ProxyError('ERR_LOOKUP_FAILED', 'A lookup on the FHIR server failed; access cannot be decided.', {
        detail: `lookup answered ${parsed.problem.kind === 'duplicate-key' ? 'ambiguous JSON (duplicate key)' : 'non-JSON'} (status ${res.status})`,
        expose: true,
      });
    }
    return { status: res.status, json: parsed.value };
  }

  function fail(status: number, what: string): never {
    throw new ProxyError('ERR_LOOKUP_FAILED', 'A lookup on the FHIR server failed; access cannot be decided.', {
      detail: `${what} answered ${status}`,
      expose: true,
    });
  }

  function asBundle(json: unknown, what: string): Bundle {
    if (!json || typeof json !== 'object' || (json as Resource).resourceType !== 'Bundle') {
      throw new ProxyError('ERR_LOOKUP_FAILED', 'A lookup on the FHIR server failed; access cannot be decided.', {
        detail: `${what} did not answer a Bundle`,
        expose: true,
      });
    }
    return json as Bundle;
  }

  const client: FhirClient = {
    baseUrl: base,
    async search(resourceType, params) {
      const qs = new URLSearchParams(params as Record<string, string>).toString();
      const { status, json } = await request('GET', `${base}/${resourceType}${qs ? `?${qs}` : ''}`);
      if (status !== 200) fail(status, `search ${resourceType}`);
      return asBundle(json, `search ${resourceType}`);
    },
    async searchAll<T extends Resource = Resource>(
      resourceType: string,
      params: URLSearchParams | Record<string, string>,
      maxPages = 50,
    ): Promise<T[]> {
      const out: T[] = [];
      let bundle = await client.search(resourceType, params);
      for (let page = 1; ; page++) {
        for (const e of bundle.entry ?? []) {
          if (e.resource && (e.search?.mode ?? 'match') === 'match') out.push(e.resource as T);
        }
        const next = bundle.link?.find((l) => l.relation === 'next')?.url;
        if (!next) return out;
        if (page >= maxPages) {
          throw new ProxyError('ERR_LOOKUP_FAILED', 'A lookup on the FHIR server returned too many pages.', {
            detail: `search ${resourceType} exceeded ${maxPages} pages`,
            expose: true,
          });
        }
        // Follow the server's own next link, but only to the configured upstream.
        const url = new URL(onBase(next), `${base}/`);
        if (!url.href.startsWith(`${base}/`) && url.origin !== new URL(base).origin) {
          fail(0, 'next link to another origin');
        }
        const { status, json } = await request('GET', url.href);
        if (status !== 200) fail(status, `search ${resourceType} page ${page + 1}`);
        bundle = asBundle(json, `search ${resourceType}`);
      }
    },
    async read<T extends Resource = Resource>(resourceType: string, id: string): Promise<T | undefined> {
      const { status, json } = await request('GET', `${base}/${resourceType}/${encodeURIComponent(id)}`);
      if (status === 404 || status === 410) return undefined;
      if (status !== 200) fail(status, `read ${resourceType}`);
      return json as T;
    },
    async batch(bundle) {
      const { status, json } = await request('POST', `${base}/`, bundle);
      if (status !== 200) fail(status, 'batch');
      return asBundle(json, 'batch');
    },
    async capabilities() {
      const { status, json } = await request('GET', `${base}/metadata`);
      if (status !== 200) fail(status, 'metadata');
      return json as Resource;
    },
    async update<T extends Resource>(resource: T & { id: string }): Promise<T> {
      const { status, json } = await request('PUT', `${base}/${resource.resourceType}/${encodeURIComponent(resource.id)}`, resource);
      if (status !== 200 && status !== 201) fail(status, `update ${resource.resourceType}`);
      return (json as T | undefined) ?? resource;
    },
  };
  return client;
}
