import type { FhirInteraction, SearchParam } from '../fhir/interaction.js';
import type { UpstreamRequest } from '../upstream/proxy.js';

/**
 * Rebuilds the upstream request from the canonical interaction (threats.md invariant 2: forward
 * exactly what was checked). Client headers do not pass through: the header set is built here.
 */
export interface RequestShaperOptions {
  /** Headers carrying the proxy's own credential towards the upstream. */
  serviceHeaders: Record<string, string>;
  /** The public base URL, for `Forwarded`/`X-Forwarded-*`. */
  publicBaseUrl: string;
  /** Send the forwarded headers (`upstream.forwardedHeaders`). */
  forwardedHeaders?: boolean;
}

/** Serializes search parameters the way FHIR servers read them: `name:modifier=value`, OR commas kept. */
export function serializeParams(params: readonly SearchParam[]): string {
  return params
    .map((p) => `${encodeName(p.modifier === undefined ? p.name : `${p.name}:${p.modifier}`)}=${encodeValue(p.value)}`)
    .join('&');
}

function encodeName(n: string): string {
  return encodeURIComponent(n).replace(/%3A/gi, ':');
}

function encodeValue(v: string): string {
  // Keep the FHIR separators readable; they mean the same decoded or not.
  return encodeURIComponent(v).replace(/%2C/gi, ',').replace(/%7C/gi, '|').replace(/%3A/gi, ':').replace(/%2F/gi, '/');
}

export function createRequestShaper(opts: RequestShaperOptions) {
  const pub = new URL(opts.publicBaseUrl);
  const proto = pub.protocol.replace(':', '');
  const forwarded = opts.forwardedHeaders ?? true;

  return function shapeRequest(
    interaction: FhirInteraction,
    ctx: { id: string; clientAddress: string | undefined; headers: Record<string, string | string[] | undefined>; body?: Buffer | undefined },
    override?: { params?: readonly SearchParam[]; body?: unknown },
  ): UpstreamRequest {
    const params = override?.params ?? interaction.params;
    const headers: Record<string, string> = {
      accept: 'application/fhir+json',
      'accept-encoding': 'identity',
      'x-request-id': ctx.id,
      ...(forwarded
        ? {
            forwarded: `for=${quoteForwarded(ctx.clientAddress ?? 'unknown')};proto=${proto};host=${quoteForwarded(pub.host)}`,
            'x-forwarded-for': ctx.clientAddress ?? 'unknown',
            'x-forwarded-proto': proto,
            'x-forwarded-host': pub.host,
          }
        : {}),
      ...opts.serviceHeaders,
    };
    const prefer: string[] = [];
    if (interaction.prefer.return) prefer.push(`return=${interaction.prefer.return}`);
    if (interaction.prefer.handling) prefer.push(`handling=${interaction.prefer.handling}`);
    if (prefer.length) headers.prefer = prefer.join(', ');

    let path = `/${interaction.path}`;
    let body: Buffer | undefined;
    const bodyJson = override?.body ?? interaction.body;

    switch (interaction.kind) {
      case 'search-type':
      case 'search-system':
      case 'search-compartment':
        if (interaction.method === 'POST') {
          // POST _search: query and body were merged by the classifier; send them once, in the body.
          headers['content-type'] = 'application/x-www-form-urlencoded';
          body = Buffer.from(serializeParams(params));
        } else if (params.length) {
          path += `?${serializeParams(params)}`;
        }
        break;
      case 'create':
        if (interaction.conditional?.length) headers['if-none-exist'] = serializeParams(interaction.conditional);
        break;
      case 'update':
      case 'patch':
      case 'delete':
        if (interaction.conditional?.length) path += `?${serializeParams(interaction.conditional)}`;
        break;
      default:
        if (params.length) path += `?${serializeParams(params)}`;
    }
    if (bodyJson !== undefined && body === undefined) {
      headers['content-type'] = interaction.kind === 'patch' ? 'application/json-patch+json' : 'application/fhir+json';
      // The client's own bytes when the body was judged as sent (strictly parsed: no duplicate keys):
      // re-serialising would lose FHIR decimal precision (1.50 → 1.5).
      body = override?.body === undefined && ctx.body !== undefined ? ctx.body : Buffer.from(JSON.stringify(bodyJson));
    }
    if (interaction.method === 'PUT' || interaction.method === 'PATCH' || interaction.method === 'DELETE') {
      // Optimistic locking is the only client precondition passed on; a weak ETag has a fixed shape.
      const ifMatch = ctx.headers['if-match'];
      if (typeof ifMatch === 'string' && /^W\/"[A-Za-z0-9.-]{1,64}"$/.test(ifMatch)) headers['if-match'] = ifMatch;
    }
    return { method: interaction.method, path, headers, body };
  };
}

function quoteForwarded(v: string): string {
  return /^[A-Za-z0-9.\-_]+$/.test(v) ? v : `"${v.replace(/["\\]/g, '')}"`;
}
