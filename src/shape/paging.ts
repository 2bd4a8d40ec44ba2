import { createCipheriv, createDecipheriv, randomBytes } from 'node:crypto';
import { ProxyError } from '../http/errors.js';

/**
 * Paging links issued by caregate: the upstream's `next`/`previous`/... link is sealed in a token
 * (AES-256-GCM with the key of the shared state: random per process with `state.mode: memory`,
 * the same on every instance with `redis` or a configured secret), bound to the user and to an
 * expiry. A replayed link from another user, an edited link, or an expired one is refused (a link
 * issued by one instance opens on every other); the upstream link itself never reaches the client,
 * not even readable inside the token (it holds real ids, which a coding contractor must not learn,
 * and the upstream's own paging state).
 */
export interface PageLinks {
  /**
   * Seals an upstream link (relative to the upstream base) into a public URL. `renarrow`: the
   * link was taken out of the narrowing caregate added (it is added again, from the care set of the
   * moment, when the link is followed), which keeps links short whatever the care set's size.
   */
  issue(upstreamRelative: string, userKey: string, opts?: { renarrow?: boolean }): string;
  /** Opens a token from `/_page/<token>`: the upstream-relative link it carries. */
  open(token: string, userKey: string): OpenedLink;
}

export interface OpenedLink {
  link: string;
  /** The search is narrowed to the care set again before it is sent (see `issue`). */
  renarrow: boolean;
}

export const PAGE_PATH = '_page';
const IV_BYTES = 12;
const TAG_BYTES = 16;

/**
 * IVs drawn from a pool of random bytes refilled 512 IVs at a time: one call into the CSPRNG per
 * 512 links instead of one per link (a search answer seals two or three; each `randomBytes` call
 * cost ~10 µs on the bench machine, more than the sealing itself). AES-GCM only needs that no 96-bit
 * IV repeats under one key; IVs are random draws from the CSPRNG either way, each used once.
 */
let ivPool = Buffer.alloc(0);
let ivAt = 0;
function nextIv(): Buffer {
  if (ivAt + IV_BYTES > ivPool.length) {
    ivPool = randomBytes(IV_BYTES * 512);
    ivAt = 0;
  }
  const iv = ivPool.subarray(ivAt, ivAt + IV_BYTES);
  ivAt += IV_BYTES;
  return iv;
}

export function createPageLinks(opts: {
  publicBaseUrl: string;
  /** Lifetime of a link, read at each issue (a policy reload changes it). */
  ttlSeconds: number | (() => number);
  /** The sealing key, or where to read it at each use (it throws a 503 while the shared key is unknown). */
  key?: Buffer | (() => Buffer);
  now?: () => number;
}): PageLinks {
  const fixed = typeof opts.key === 'function' ? undefined : (opts.key ?? randomBytes(32));
  const keyOf = typeof opts.key === 'function' ? opts.key : () => fixed!;
  const now = opts.now ?? Date.now;
  const pub = opts.publicBaseUrl.replace(/\/+$/, '');

  return {
    issue(link, userKey, o) {
      const iv = nextIv();
      const cipher = createCipheriv('aes-256-gcm', keyOf(), iv);
      const ttl = typeof opts.ttlSeconds === 'function' ? opts.ttlSeconds() : opts.ttlSeconds;
      const plain = Buffer.from(JSON.stringify({ l: link, e: Math.floor(now() / 1000) + ttl, ...(o?.renarrow ? { r: 1 } : {}) }));
      // The user is authenticated data: a token opened by anyone else fails its tag check.
      cipher.setAAD(Buffer.from(userKey));
      const sealed = Buffer.concat([iv, cipher.update(plain), cipher.final(), cipher.getAuthTag()]);
      return `${pub}/${PAGE_PATH}/${sealed.toString('base64url')}`;
    },
    open(token, userKey) {
      const refuse = (why: string) =>
        new ProxyError('ERR_PAGE_LINK', 'This paging link is not valid for you, has been altered, or has expired. Run the search again.', {
          detail: why,
        });
      if (token.length > 8192 || !/^[A-Za-z0-9_-]+$/.test(token)) throw refuse('malformed page token');
      const raw = Buffer.from(token, 'base64url');
      // Non-canonical base64url decodes to the same bytes: refuse it as an edit.
      if (raw.toString('base64url') !== token || raw.length < IV_BYTES + TAG_BYTES + 2) throw refuse('malformed page token');
      let payload: { l?: unknown; e?: unknown; r?: unknown };
      const key = keyOf();
      try {
        const decipher = createDecipheriv('aes-256-gcm', key, raw.subarray(0, IV_BYTES));
        decipher.setAAD(Buffer.from(userKey));
        decipher.setAuthTag(raw.subarray(raw.length - TAG_BYTES));
        const plain = Buffer.concat([decipher.update(raw.subarray(IV_BYTES, raw.length - TAG_BYTES)), decipher.final()]);
        payload = JSON.parse(plain.toString('utf8'));
      } catch {
        throw refuse('page token does not open for this user');
      }
      if (typeof payload.l !== 'string' || typeof payload.e !== 'number') throw refuse('page token fields');
      if (payload.e * 1000 < now()) throw refuse('page token expired');
      return { link: payload.l, renarrow: payload.r === 1 };
    },
  };
}
