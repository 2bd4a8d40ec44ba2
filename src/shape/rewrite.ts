/**
 * Upstream base URL → public base URL, on parsed JSON. The upstream's address is internal
 * infrastructure: it never reaches a client, in a body or a header (threats.md invariant 5).
 *
 * Every string value that is the upstream base or starts with `<upstream base>/` is rewritten,
 * wherever it sits: Bundle.link, entry.fullUrl, entry.response.location,
 * CapabilityStatement.implementation.url, absolute references, attachment URLs. Walking all
 * strings is cheaper than it sounds (one pass, no allocation unless a value changes) and does not
 * depend on knowing every element that may hold a URL.
 */
export interface BaseRewriter {
  /** Rewrites in place; returns the number of values changed. */
  body(json: unknown): number;
  /** Rewrites one header value (Location, Content-Location); `undefined` if it points elsewhere than the upstream. */
  url(value: string): string | undefined;
  readonly upstreamBases: readonly string[];
  /** The base URL clients use. */
  readonly publicBase: string;
}

export function createBaseRewriter(upstreamBase: string, publicBase: string, aliases: readonly string[] = []): BaseRewriter {
  // Longest first: a base that extends another (`…/fhir/r4` beside `…/fhir`) must match before it.
  const bases = [...new Set([upstreamBase, ...aliases].map((b) => b.replace(/\/+$/, '')))].sort((a, b) => b.length - a.length);
  const pub = publicBase.replace(/\/+$/, '');

  function rewriteString(s: string): string | undefined {
    for (const b of bases) {
      if (s === b) return pub;
      if (s.length > b.length && s.startsWith(b) && (s[b.length] === '/' || s[b.length] === '?')) {
        return pub + s.slice(b.length);
      }
    }
    return undefined;
  }

  function walk(node: unknown): number {
    let n = 0;
    if (Array.isArray(node)) {
      for (let i = 0; i < node.length; i++) {
        const v = node[i];
        if (typeof v === 'string') {
          const r = rewriteString(v);
          if (r !== undefined) {
            node[i] = r;
            n++;
          }
        } else if (v && typeof v === 'object') n += walk(v);
      }
    } else if (node && typeof node === 'object') {
      const o = node as Record<string, unknown>;
      for (const k in o) {
        const v = o[k];
        if (typeof v === 'string') {
          if (v.length >= 7 && (v.charCodeAt(0) === 104 /* h */ || v.charCodeAt(0) === 72)) {
            const r = rewriteString(v);
            if (r !== undefined) {
              o[k] = r;
              n++;
            }
          }
        } else if (v && typeof v === 'object') n += walk(v);
      }
    }
    return n;
  }

  return {
    upstreamBases: bases,
    publicBase: pub,
    body: walk,
    url(value) {
      const r = rewriteString(value.trim());
      if (r !== undefined) return r;
      // A relative Location is relative to the upstream base: re-anchor it on the public base.
      if (!/^[a-z][a-z0-9+.-]*:/i.test(value) && !value.startsWith('//')) {
        return `${pub}/${value.replace(/^\/+/, '')}`;
      }
      return undefined;
    },
  };
}
