import { createHmac, randomBytes, timingSafeEqual } from 'node:crypto';
import { ProxyError } from '../http/errors.js';

/**
 * Paging links issued by caregate: the upstream's `next`/`previous`/... link is wrapped in a token
 * signed with a per-process key, bound to the user and to an expiry. A replayed link from another
 * user, an edited link, or an expired one is refused; the upstream link itself never reaches the client.
 */
export interface PageLinks {
  /** Wraps an upstream link (relative to the upstream base) into a public URL. */
  issue(upstreamRelative: string, userKey: string): string;
  /** Verifies a token from `/_page/<token>` and returns the upstream-relative link it carries. */
  open(token: string, userKey: string): string;
}

export const PAGE_PATH = '_page';

export function createPageLinks(opts: { publicBaseUrl: string; ttlSeconds: number; key?: Buffer; now?: () => number }): PageLinks {
  const key = opts.key ?? randomBytes(32);
  const now = opts.now ?? Date.now;
  const pub = opts.publicBaseUrl.replace(/\/+$/, '');

  const sign = (payload: string) => createHmac('sha256', key).update(payload).digest();

  return {
    issue(link, userKey) {
      const body = Buffer.from(JSON.stringify({ l: link, u: userKey, e: Math.floor(now() / 1000) + opts.ttlSeconds })).toString('base64url');
      return `${pub}/${PAGE_PATH}/${body}.${sign(body).toString('base64url')}`;
    },
    open(token, userKey) {
      const refuse = (why: string) =>
        new ProxyError('ERR_PAGE_LINK', 'This paging link is not valid for you, has been altered, or has expired. Run the search again.', {
          detail: why,
        });
      const dot = token.indexOf('.');
      if (dot <= 0 || token.length > 8192) throw refuse('malformed page token');
      const body = token.slice(0, dot);
      const sig = token.slice(dot + 1);
      const given = Buffer.from(sig, 'base64url');
      // Non-canonical base64url (other trailing bits) decodes to the same bytes: refuse it as an edit.
      if (given.toString('base64url') !== sig) throw refuse('non-canonical page token');
      const expected = sign(body);
      if (given.length !== expected.length || !timingSafeEqual(given, expected)) throw refuse('bad page token signature');
      let payload: { l?: unknown; u?: unknown; e?: unknown };
      try {
        payload = JSON.parse(Buffer.from(body, 'base64url').toString('utf8'));
      } catch {
        throw refuse('unreadable page token');
      }
      if (typeof payload.l !== 'string' || typeof payload.u !== 'string' || typeof payload.e !== 'number') throw refuse('page token fields');
      if (payload.u !== userKey) throw refuse('page token of another user');
      if (payload.e * 1000 < now()) throw refuse('page token expired');
      return payload.l;
    },
  };
}
