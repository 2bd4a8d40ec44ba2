import { describe, expect, it } from 'vitest';
import type { IncomingMessage } from 'node:http';
import { clientAddressResolver, createAddressMatcher } from '../../src/http/addresses.js';

const req = (peer: string | undefined, xff?: string | string[]) =>
  ({ socket: { remoteAddress: peer }, headers: xff === undefined ? {} : { 'x-forwarded-for': xff } }) as unknown as IncomingMessage;

describe('the client address the audit records', () => {
  const behindBalancer = clientAddressResolver(['10.0.0.0/24', 'fd00::/8']);

  it('is the TCP peer when no proxy is trusted, whatever X-Forwarded-For says', () => {
    expect(clientAddressResolver([])(req('192.0.2.7', '198.51.100.1'))).toBe('192.0.2.7');
  });

  it('ignores X-Forwarded-For from a peer that is not a trusted proxy', () => {
    expect(behindBalancer(req('192.0.2.7', '198.51.100.1'))).toBe('192.0.2.7');
  });

  it('takes the address the trusted balancer received the request from', () => {
    expect(behindBalancer(req('10.0.0.5', '198.51.100.1'))).toBe('198.51.100.1');
    expect(behindBalancer(req('::ffff:10.0.0.5', '198.51.100.1'))).toBe('198.51.100.1');
  });

  it('walks back through trusted hops only: an address the client wrote itself is not believed', () => {
    // The client sent "X-Forwarded-For: 203.0.113.9"; the terminator appended the client's address, the balancer the terminator's.
    expect(behindBalancer(req('10.0.0.5', '203.0.113.9, 198.51.100.1, 10.0.0.8'))).toBe('198.51.100.1');
    expect(behindBalancer(req('10.0.0.5', ['203.0.113.9', '198.51.100.1']))).toBe('198.51.100.1');
    expect(behindBalancer(req('fd00::1', '2001:db8::42'))).toBe('2001:db8::42');
  });

  it('stops at the last good address when a hop is not an IP address', () => {
    expect(behindBalancer(req('10.0.0.5', '198.51.100.1, unknown'))).toBe('10.0.0.5');
    expect(behindBalancer(req('10.0.0.5', 'garbage, 10.0.0.8'))).toBe('10.0.0.8');
  });

  it('is the peer when a trusted proxy sends no X-Forwarded-For', () => {
    expect(behindBalancer(req('10.0.0.5'))).toBe('10.0.0.5');
  });
});

describe('trusted proxy lists', () => {
  it('refuses an entry that is neither an address nor a CIDR block', () => {
    expect(() => createAddressMatcher(['10.0.0.0/33'])).toThrow(/not an IP address or CIDR block/);
  });
});
