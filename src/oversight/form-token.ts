import { createHmac, hkdfSync, randomBytes, timingSafeEqual } from 'node:crypto';

/**
 * Anti-forgery tokens for the DIM's verdict forms. A DIM physician who signs in with a CPS card
 * (mutual TLS) presents it on every request her browser makes, a forged cross-site form included:
 * a form POST is accepted only with a token issued to her, by this installation, less than
 * `ttlMs` ago (an HMAC of who and when). The key derives from the pseudonym secret when there is
 * one (every instance then accepts every instance's tokens), else it is random per process (a
 * restart asks the DIM to reload the page).
 */
export interface FormTokens {
  issue(userKey: string): string;
  valid(userKey: string, token: string): boolean;
}

export function createFormTokens(opts: { secret?: Buffer; now: () => number; ttlMs?: number }): FormTokens {
  const key = opts.secret ? Buffer.from(hkdfSync('sha256', opts.secret, Buffer.alloc(0), 'caregate review forms v1', 32)) : randomBytes(32);
  const ttl = opts.ttlMs ?? 12 * 3_600_000;
  const mac = (user: string, at: string) => createHmac('sha256', key).update(`${user}\n${at}`).digest('base64url');
  return {
    issue(user) {
      const at = String(opts.now());
      return `${at}.${mac(user, at)}`;
    },
    valid(user, token) {
      const m = /^(\d{1,16})\.([A-Za-z0-9_-]{43})$/.exec(token);
      if (!m) return false;
      const age = opts.now() - Number(m[1]);
      if (age < 0 || age > ttl) return false;
      const expected = Buffer.from(mac(user, m[1]!));
      const given = Buffer.from(m[2]!);
      return expected.length === given.length && timingSafeEqual(expected, given);
    },
  };
}
