/**
 * The demo FHIR engine over HTTP: a small `node:http` adapter in front of medplum's `FhirRouter`
 * and `DemoRepository`. It plays the upstream FHIR server in the demo and in integration tests,
 * so it answers like one: FHIR status codes, `ETag`/`Last-Modified`/`Location` headers, absolute
 * URLs on its own base everywhere (the proxy must rewrite them), OperationOutcome errors.
 *
 * It has no authentication: it binds to 127.0.0.1 by default and must never face a network.
 */
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { parseArgs } from 'node:util';
import { getStatus, isOperationOutcome, type WithId } from '@medplum/core';
import type { FhirRequest, FhirRouter, HttpMethod } from '@medplum/fhir-router';
import type { Bundle, BundleEntry, OperationOutcome, Resource } from '@medplum/fhirtypes';
import type { Logger } from 'pino';
import { DemoRepository, createDemoRouter } from './engine.js';
import { seedHospital, type SeedOptions, type SeedStats } from './seed.js';

export interface DemoFhirOptions {
  /** TCP port; 0 (default) picks a free one. */
  port?: number;
  /** Listen address (default 127.0.0.1). */
  host?: string;
  /** Base path of the FHIR API (default `/fhir`). */
  basePath?: string;
  /** Hospital to load (default: the default hospital); `false` starts empty. */
  seed?: SeedOptions | false;
  /** Largest accepted request body in bytes (default 16 MiB); larger → 413. */
  maxBodyBytes?: number;
  /** Request log (method, resource type, status, duration; never ids, queries or bodies). */
  logger?: Logger;
  /**
   * Build links, `fullUrl` and `Location` on the address a proxy forwards (`X-Forwarded-Proto` and
   * `X-Forwarded-Host`, or `Forwarded`) instead of the engine's own, keeping the engine's path: what
   * HAPI FHIR does with its proxy address strategy behind a reverse proxy.
   */
  linksFromForwardedHeaders?: boolean;
}

export interface DemoFhirServer {
  /** Absolute base URL, e.g. `http://127.0.0.1:8090/fhir`. */
  url: string;
  repo: DemoRepository;
  /** What was seeded, when seeding was asked for. */
  seedStats: SeedStats | undefined;
  close(): Promise<void>;
}

const FHIR_JSON = 'application/fhir+json; charset=utf-8';
const METHODS = new Set<string>(['GET', 'POST', 'PUT', 'PATCH', 'DELETE']);
const STATUS_TEXT: Record<number, string> = {
  200: 'OK', 201: 'Created', 204: 'No Content', 304: 'Not Modified', 400: 'Bad Request', 404: 'Not Found',
  405: 'Method Not Allowed', 409: 'Conflict', 410: 'Gone', 412: 'Precondition Failed', 413: 'Payload Too Large',
  415: 'Unsupported Media Type', 422: 'Unprocessable Entity', 429: 'Too Many Requests', 500: 'Internal Server Error',
};

/** An HTTP answer before serialisation. */
interface Reply {
  status: number;
  headers: Record<string, string>;
  body: Resource | Buffer | undefined;
}

function outcome(status: number, code: string, text: string): Reply {
  const body: OperationOutcome = {
    resourceType: 'OperationOutcome',
    issue: [{ severity: 'error', code: code as 'invalid', details: { text } }],
  };
  return { status, headers: {}, body };
}

class HttpFailure extends Error {
  constructor(readonly reply: Reply) {
    super(reply.status.toString());
  }
}

function mediaType(header: string | undefined): string {
  return (header ?? '').split(';')[0]?.trim().toLowerCase() ?? '';
}

const isJsonType = (t: string): boolean => t === 'application/fhir+json' || t === 'application/json' || t === 'text/json';

function readBody(req: IncomingMessage, limit: number): Promise<Buffer> {
  const tooLarge = (): HttpFailure => new HttpFailure(outcome(413, 'too-costly', `Request body larger than ${limit} bytes`));
  if (Number(req.headers['content-length'] ?? '0') > limit) {
    return Promise.reject(tooLarge());
  }
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    let size = 0;
    let settled = false;
    req.on('data', (chunk: Buffer) => {
      if (settled) return;
      size += chunk.length;
      if (size > limit) {
        // Stop reading; the 413 goes out with `Connection: close` and the socket ends with it.
        settled = true;
        req.pause();
        reject(tooLarge());
        return;
      }
      chunks.push(chunk);
    });
    req.on('end', () => {
      if (!settled) {
        settled = true;
        resolve(Buffer.concat(chunks));
      }
    });
    req.on('error', (err) => {
      if (!settled) {
        settled = true;
        reject(err);
      }
    });
  });
}

function parseJson(buf: Buffer): unknown {
  try {
    return JSON.parse(buf.toString('utf8'));
  } catch {
    throw new HttpFailure(outcome(400, 'structure', 'Body is not valid JSON'));
  }
}

function formToQuery(text: string, into: Record<string, string | string[]>): void {
  for (const [k, v] of new URLSearchParams(text)) {
    const prev = into[k];
    into[k] = prev === undefined ? v : Array.isArray(prev) ? [...prev, v] : [prev, v];
  }
}

/** The client asked only for a format we do not serve (XML, Turtle): 406. */
function refusesJson(accept: string | undefined, format: string | null): boolean {
  if (format) return !/json/i.test(format);
  return accept !== undefined && /xml|turtle/i.test(accept) && !/json|\*\/\*/i.test(accept);
}

/** A Binary is served in its own content type when the client does not ask for JSON. */
function wantsRawBinary(accept: string | undefined): boolean {
  return accept !== undefined && accept !== '' && !/json|\*\/\*/i.test(accept);
}

const httpDate = (iso: string | undefined): string | undefined => (iso ? new Date(iso).toUTCString() : undefined);

/** The HTTP adapter; exported separately from `startDemoFhir` for embedding. */
export function createDemoHandler(
  repo: DemoRepository,
  router: FhirRouter,
  opts: { basePath: string; maxBodyBytes: number; logger?: Logger; linksFromForwardedHeaders?: boolean },
): (req: IncomingMessage, res: ServerResponse) => void {
  const basePath = `/${opts.basePath.replace(/^\/+|\/+$/g, '')}`.replace(/^\/$/, '');

  async function answer(req: IncomingMessage): Promise<{ reply: Reply; type: string }> {
    const url = new URL(req.url ?? '/', 'http://engine.invalid');
    const path = url.pathname;
    if (basePath && path !== basePath && !path.startsWith(`${basePath}/`)) {
      return { reply: outcome(404, 'not-found', 'Not a FHIR endpoint'), type: '-' };
    }
    const rel = path.slice(basePath.length).replace(/^\/+/, '').replace(/\/+$/, '');
    // Logged: only a resource type or a known endpoint, never an arbitrary path segment.
    const first = rel.split('/')[0] ?? '';
    const type = first === '' ? 'system' : /^([A-Z][A-Za-z]{1,63}|\$[a-z-]{1,40}|_history|metadata)$/.test(first) ? first : 'other';
    let method = (req.method ?? 'GET').toUpperCase();
    if (method === 'HEAD') method = 'GET';
    if (!METHODS.has(method)) {
      return { reply: outcome(405, 'not-supported', `Method ${method} not supported`), type };
    }
    const binaryRead = method === 'GET' && /^Binary\/[^/]+(\/_history\/[^/]+)?$/.test(rel);
    if (!binaryRead && refusesJson(req.headers.accept, url.searchParams.get('_format'))) {
      return { reply: outcome(406, 'not-supported', 'Only JSON is served'), type };
    }

    const buf = method === 'GET' || method === 'DELETE' ? Buffer.alloc(0) : await readBody(req, opts.maxBodyBytes);
    const contentType = mediaType(req.headers['content-type']);
    let body: unknown;
    let routeUrl = rel + url.search;
    if (method === 'POST' && rel.endsWith('/_search')) {
      if (buf.length > 0 && contentType !== 'application/x-www-form-urlencoded') {
        return { reply: outcome(415, 'not-supported', 'POST _search takes application/x-www-form-urlencoded'), type };
      }
      // Parameters may come in the URL and in the body; both count.
      const query: Record<string, string | string[]> = {};
      formToQuery(url.search.slice(1), query);
      formToQuery(buf.toString('utf8'), query);
      body = query;
      routeUrl = rel;
    } else if (method === 'PATCH') {
      if (contentType !== 'application/json-patch+json') {
        return { reply: outcome(415, 'not-supported', 'PATCH takes application/json-patch+json (FHIRPath Patch is not supported)'), type };
      }
      body = parseJson(buf);
    } else if (buf.length > 0) {
      if (isJsonType(contentType)) {
        body = parseJson(buf);
      } else if ((method === 'POST' && rel === 'Binary') || (method === 'PUT' && /^Binary\/[^/]+$/.test(rel))) {
        // FHIR lets a Binary be written in its native content type.
        body = {
          resourceType: 'Binary',
          ...(method === 'PUT' ? { id: rel.split('/')[1] } : {}),
          contentType: contentType || 'application/octet-stream',
          data: buf.toString('base64'),
        };
      } else {
        return { reply: outcome(415, 'not-supported', `Unsupported content type ${contentType || '(none)'}`), type };
      }
    } else if ((method === 'POST' && !/^Patient\/[^/]+\/\$everything$/.test(rel)) || method === 'PUT') {
      // `$everything` may be POSTed without parameters; every other POST needs a body.
      return { reply: outcome(400, 'required', 'Missing request body'), type };
    }

    if (rel === '' && method === 'POST' && body && typeof body === 'object') {
      normaliseBatchUrls(body as Bundle, repo.baseUrl);
    }

    // If-Match on PATCH and DELETE (medplum checks it on PUT only).
    const ifMatch = req.headers['if-match'];
    if (ifMatch && (method === 'PATCH' || method === 'DELETE')) {
      const [rt, id] = rel.split('/');
      if (rt && id) {
        const current = await repo.readResource(rt, id).catch(() => undefined);
        const wanted = /"([^"]+)"/.exec(ifMatch)?.[1] ?? ifMatch;
        if (!current || current.meta?.versionId !== wanted) {
          return { reply: outcome(412, 'conflict', 'Version mismatch (If-Match)'), type };
        }
      }
    }

    const fhirRequest: FhirRequest = {
      method: method as HttpMethod,
      url: routeUrl,
      pathname: '',
      params: {},
      query: {},
      body,
      headers: req.headers,
      config: { transactions: true },
    };
    const [result, resource] = await router.handleRequest(fhirRequest, repo);
    let status = getStatus(result);
    const headers: Record<string, string> = {};

    if (status >= 400 || !resource) {
      return { reply: { status, headers, body: result }, type };
    }
    if (resource.resourceType === 'Bundle' && (resource.type === 'batch-response' || resource.type === 'transaction-response')) {
      completeBatchResponse(resource, repo.baseUrl);
    }
    const meta = resource.meta;
    const single = resource.resourceType !== 'Bundle' && meta?.versionId !== undefined && resource.id !== undefined;
    if (single) {
      headers['etag'] = `W/"${meta.versionId}"`;
      const lm = httpDate(meta.lastUpdated);
      if (lm) headers['last-modified'] = lm;
      // An update that created the resource is a 201, as FHIR asks.
      if (method === 'PUT' && status === 200 && meta.versionId === '1') status = 201;
      if (status === 201) {
        headers['location'] = `${repo.baseUrl}/${resource.resourceType}/${resource.id}/_history/${meta.versionId}`;
      }
      if (method === 'GET' && req.headers['if-none-match'] === headers['etag']) {
        return { reply: { status: 304, headers, body: undefined }, type };
      }
      if (binaryRead && resource.resourceType === 'Binary' && wantsRawBinary(req.headers.accept)) {
        const binary = resource as WithId<Resource> & { contentType?: string; data?: string };
        headers['content-type'] = binary.contentType ?? 'application/octet-stream';
        return { reply: { status, headers, body: Buffer.from(binary.data ?? '', 'base64') }, type };
      }
    }
    if (method !== 'GET' && method !== 'DELETE') {
      const prefer = String(req.headers['prefer'] ?? '');
      if (/return=minimal/.test(prefer)) return { reply: { status, headers, body: undefined }, type };
      if (/return=OperationOutcome/i.test(prefer)) return { reply: { status, headers, body: result }, type };
    }
    return { reply: { status, headers, body: resource }, type };
  }

  return (req, res) => {
    const started = performance.now();
    answer(req)
      .catch((err: unknown) => {
        if (err instanceof HttpFailure) return { reply: err.reply, type: '-' };
        opts.logger?.error({ err: err instanceof Error ? err.name : 'unknown' }, 'demo-fhir internal error');
        return { reply: outcome(500, 'exception', 'Internal error'), type: '-' };
      })
      .then(({ reply, type }) => {
        const forwarded = opts.linksFromForwardedHeaders ? forwardedBase(req, basePath) : undefined;
        send(req, res, reply, forwarded && forwarded !== repo.baseUrl ? { from: repo.baseUrl, to: forwarded } : undefined);
        opts.logger?.debug(
          { method: req.method, type, status: reply.status, ms: Math.round(performance.now() - started) },
          'demo-fhir request',
        );
      })
      .catch(() => res.destroy());
  };
}

/**
 * The base a proxy in front of the engine forwards (scheme and host from `X-Forwarded-Proto` and
 * `X-Forwarded-Host`, else from `Forwarded`), with the engine's own path; undefined when none is sent.
 */
function forwardedBase(req: IncomingMessage, basePath: string): string | undefined {
  const first = (v: string | string[] | undefined) => (Array.isArray(v) ? v[0] : v)?.split(',')[0]?.trim();
  let proto = first(req.headers['x-forwarded-proto']);
  let host = first(req.headers['x-forwarded-host']);
  if (!host) {
    const fwd = first(req.headers['forwarded']) ?? '';
    host = /(?:^|;)\s*host="?([^";]+)"?/i.exec(fwd)?.[1];
    proto = /(?:^|;)\s*proto="?([^";]+)"?/i.exec(fwd)?.[1] ?? proto;
  }
  if (!host || !/^[A-Za-z0-9.\-:[\]]+$/.test(host) || (proto !== undefined && !/^https?$/.test(proto))) return undefined;
  return `${proto ?? 'http'}://${host}${basePath}`;
}

function send(req: IncomingMessage, res: ServerResponse, reply: Reply, rebase?: { from: string; to: string }): void {
  let payload: Buffer | undefined;
  const headers: Record<string, string> = { ...reply.headers };
  if (reply.body instanceof Buffer) {
    payload = reply.body;
  } else if (reply.body !== undefined) {
    const pretty = /[?&]_pretty=true(&|$)/.test(req.url ?? '');
    let text = JSON.stringify(reply.body, undefined, pretty ? 2 : undefined);
    // Stored resources hold relative references: the engine's base appears only in what it builds
    // (links, fullUrl, locations), which a proxy-aware server builds on the forwarded base.
    if (rebase) text = text.split(rebase.from).join(rebase.to);
    payload = Buffer.from(text, 'utf8');
    headers['content-type'] = FHIR_JSON;
  }
  if (rebase && headers['location']?.startsWith(rebase.from)) headers['location'] = rebase.to + headers['location'].slice(rebase.from.length);
  if (reply.status === 413) {
    // The rest of the body was not read: do not reuse the connection.
    headers['connection'] = 'close';
  }
  if (payload && reply.status !== 304) {
    headers['content-length'] = String(payload.length);
  }
  res.writeHead(reply.status, headers);
  res.end(req.method === 'HEAD' || reply.status === 304 ? undefined : payload);
}

/** Entry URLs given on our own absolute base become relative, as medplum's batch router expects. */
function normaliseBatchUrls(bundle: Bundle, baseUrl: string): void {
  if (bundle.resourceType !== 'Bundle') return;
  for (const entry of bundle.entry ?? []) {
    const url = entry.request?.url;
    if (url?.startsWith(`${baseUrl}/`)) {
      (entry.request as { url: string }).url = url.slice(baseUrl.length + 1);
    }
  }
}

/** Status lines, absolute `location`, `etag`, `lastModified` and `fullUrl` on each entry. */
function completeBatchResponse(bundle: Bundle, baseUrl: string): void {
  bundle.entry = (bundle.entry ?? []).map((e) => {
    // medplum puts a bare OperationOutcome where an entry could not be processed.
    const entry: BundleEntry = isOperationOutcome(e)
      ? { response: { status: String(getStatus(e)), outcome: e } }
      : e;
    const response = entry.response;
    if (!response) return entry;
    const code = Number.parseInt(response.status, 10);
    response.status = `${code} ${STATUS_TEXT[code] ?? ''}`.trim();
    const r = entry.resource;
    if (r?.id && r.meta?.versionId && r.resourceType !== 'Bundle' && r.resourceType !== 'OperationOutcome') {
      entry.fullUrl = `${baseUrl}/${r.resourceType}/${r.id}`;
      response.etag = `W/"${r.meta.versionId}"`;
      if (r.meta.lastUpdated) response.lastModified = r.meta.lastUpdated;
      if (response.location) {
        response.location = `${baseUrl}/${r.resourceType}/${r.id}/_history/${r.meta.versionId}`;
      }
    }
    if (code < 300 && response.outcome && response.outcome.issue?.every((i) => i.severity === 'information')) {
      delete response.outcome;
    }
    return entry;
  });
}

/**
 * Starts the demo FHIR engine, seeded with the demo hospital unless `seed: false`.
 *
 * @example
 * const fhir = await startDemoFhir({ seed: { patients: 20, practitioners: 15 } });
 * await fetch(`${fhir.url}/Patient/pat-dupont`);
 * await fhir.close();
 */
export async function startDemoFhir(opts: DemoFhirOptions = {}): Promise<DemoFhirServer> {
  const host = opts.host ?? '127.0.0.1';
  const basePath = opts.basePath ?? '/fhir';
  const repo = new DemoRepository();
  const router = createDemoRouter();
  const handler = createDemoHandler(repo, router, {
    basePath,
    maxBodyBytes: opts.maxBodyBytes ?? 16 * 1024 * 1024,
    ...(opts.logger ? { logger: opts.logger } : {}),
    ...(opts.linksFromForwardedHeaders ? { linksFromForwardedHeaders: true } : {}),
  });
  const server: Server = createServer({ keepAlive: true }, handler);
  // Longer than common client idle timeouts, so that the client closes idle sockets first.
  server.keepAliveTimeout = 65_000;
  server.headersTimeout = 66_000;
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(opts.port ?? 0, host, () => {
      server.off('error', reject);
      resolve();
    });
  });
  const { port } = server.address() as AddressInfo;
  const urlHost = host === '0.0.0.0' || host === '::' ? '127.0.0.1' : host.includes(':') ? `[${host}]` : host;
  const cleanBase = `/${basePath.replace(/^\/+|\/+$/g, '')}`.replace(/^\/$/, '');
  const url = `http://${urlHost}:${port}${cleanBase}`;
  repo.baseUrl = url;
  let seedStats: SeedStats | undefined;
  if (opts.seed !== false) {
    seedStats = await seedHospital(repo, opts.seed ?? {});
    opts.logger?.info({ resources: seedStats.resources, buildMs: seedStats.buildMs, loadMs: seedStats.loadMs }, 'demo hospital seeded');
  }
  return {
    url,
    repo,
    seedStats,
    close: () =>
      new Promise<void>((resolve, reject) => {
        server.close((err) => (err ? reject(err) : resolve()));
        server.closeAllConnections();
      }),
  };
}

/**
 * `caregate demo-fhir [--port 8090] [--host 127.0.0.1] [--patients 2000] [--practitioners 50]
 * [--observations-per-patient 8] [--seed 42] [--base-path /fhir]`: starts the engine, prints its
 * URL and resource counts (no PHI), and stops on SIGINT/SIGTERM.
 */
export async function runDemoFhirCli(
  argv: readonly string[],
  out: (line: string) => void = (line) => process.stdout.write(`${line}\n`),
): Promise<DemoFhirServer> {
  const { values } = parseArgs({
    args: [...argv],
    options: {
      port: { type: 'string', default: '8090' },
      host: { type: 'string', default: '127.0.0.1' },
      'base-path': { type: 'string', default: '/fhir' },
      patients: { type: 'string' },
      practitioners: { type: 'string' },
      'observations-per-patient': { type: 'string' },
      seed: { type: 'string' },
    },
    strict: true,
  });
  const int = (name: string, v: string | undefined): number | undefined => {
    if (v === undefined) return undefined;
    if (!/^\d+$/.test(v)) throw new TypeError(`--${name} must be a non-negative integer`);
    return Number(v);
  };
  const seed: SeedOptions = {};
  const patients = int('patients', values.patients);
  const practitioners = int('practitioners', values.practitioners);
  const obs = int('observations-per-patient', values['observations-per-patient']);
  const seedValue = int('seed', values.seed);
  if (patients !== undefined) seed.patients = patients;
  if (practitioners !== undefined) seed.practitioners = practitioners;
  if (obs !== undefined) seed.observationsPerPatient = obs;
  if (seedValue !== undefined) seed.seed = seedValue;
  const server = await startDemoFhir({
    port: int('port', values.port) ?? 8090,
    host: values.host,
    basePath: values['base-path'],
    seed,
  });
  const stats = server.seedStats;
  out(`demo FHIR engine listening on ${server.url}`);
  if (stats) {
    out(`seed ${stats.seed}, now ${stats.now}: ${stats.resources} resources (built in ${stats.buildMs} ms, loaded in ${stats.loadMs} ms)`);
    for (const [type, n] of Object.entries(stats.byType).sort(([a], [b]) => a.localeCompare(b))) {
      out(`  ${type.padEnd(20)} ${n}`);
    }
  }
  const stop = (): void => {
    void server.close().finally(() => process.exit(0));
  };
  process.once('SIGINT', stop);
  process.once('SIGTERM', stop);
  return server;
}
