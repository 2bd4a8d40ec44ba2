import type { IncomingHttpHeaders } from 'node:http';
import type { FhirInteraction } from '../fhir/interaction.js';
import { ProxyError } from '../http/errors.js';
import { parseUpstreamJson } from '../fhir/json.js';
import type { Answer } from '../http/send.js';
import type { UpstreamResponse } from '../upstream/proxy.js';
import type { BaseRewriter } from './rewrite.js';
import { toXml } from './xml.js';

const FHIR_JSON = 'application/fhir+json; charset=utf-8';

/** Response headers that may pass from the upstream, after rewriting. Everything else is dropped. */
const PASSED_HEADERS = ['etag', 'last-modified', 'retry-after'] as const;
const URL_HEADERS = ['location', 'content-location'] as const;

/**
 * Parses an upstream answer. Fails closed: a body that is not JSON, on any interaction, is never
 * passed to the client (caregate asked for JSON; anything else is a fault or an attack), and JSON
 * is parsed strictly (duplicate keys, invalid UTF-8, excessive nesting: 502).
 */
export function parseUpstreamBody(upstream: UpstreamResponse): unknown {
  if (upstream.body.length === 0) return undefined;
  const ct = String(upstream.headers['content-type'] ?? '').toLowerCase();
  if (!/^application\/(fhir\+)?json\b/.test(ct)) {
    throw new ProxyError('ERR_UPSTREAM_BAD_RESPONSE', 'The FHIR server answered in a format caregate cannot check.', {
      expose: true,
      detail: `upstream content-type ${ct.split(';')[0] || 'none'}`,
    });
  }
  // As strictly as a client's body: two readings of one body (duplicate keys) are a 502, not a choice.
  return parseUpstreamJson(upstream.body, 'upstream answer');
}

/** Builds the client answer from a judged body: headers allow-listed and rewritten, body serialized. */
export function buildAnswer(
  interaction: FhirInteraction,
  status: number,
  upstreamHeaders: IncomingHttpHeaders,
  body: unknown,
  rewriter: BaseRewriter,
): Answer {
  const headers: Record<string, string> = {};
  for (const h of PASSED_HEADERS) {
    const v = upstreamHeaders[h];
    if (typeof v === 'string') headers[h] = v;
  }
  for (const h of URL_HEADERS) {
    const v = upstreamHeaders[h];
    if (typeof v === 'string') {
      const r = rewriter.url(v);
      if (r !== undefined) headers[h] = r;
    }
  }
  if (body === undefined) return { status, headers, body: undefined, contentType: undefined };
  rewriter.body(body);
  if (interaction.format === 'xml') {
    return { status, headers, body: toXml(body), contentType: 'application/fhir+xml; charset=utf-8' };
  }
  return { status, headers, body: JSON.stringify(body), contentType: FHIR_JSON };
}
