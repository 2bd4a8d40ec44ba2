import { describe, expect, it } from 'vitest';
import { createPageLinks } from '../../src/shape/paging.js';

describe('paging links', () => {
  it('seals every link with a fresh IV: a thousand links to one page differ in their IV, and each opens for its user only', () => {
    const pages = createPageLinks({ publicBaseUrl: 'https://gate.example/fhir', ttlSeconds: 600 });
    const tokens = Array.from({ length: 1000 }, () => pages.issue('Observation?patient=p1&_page=2', 'user-a').split('/_page/')[1]!);
    // More links than one refill of the IV pool: no IV is ever used twice under the key.
    const ivs = new Set(tokens.map((t) => Buffer.from(t, 'base64url').subarray(0, 12).toString('hex')));
    expect(ivs.size).toBe(1000);
    for (const t of [tokens[0]!, tokens[511]!, tokens[512]!, tokens[999]!]) {
      expect(pages.open(t, 'user-a').link).toBe('Observation?patient=p1&_page=2');
      expect(() => pages.open(t, 'user-b')).toThrow(/not valid for you/);
    }
  });
});
