import type { IncomingMessage } from 'node:http';
import { BlockList, isIP, isIPv4 } from 'node:net';

/**
 * Addresses of the network: CIDR blocks, the matcher of a list of trusted proxies, and the client's
 * own address when caregate runs behind a load balancer or TLS terminator.
 */

/** A parsed CIDR block; `undefined` when `s` is not an address or block. */
export function parseCidr(s: string): { address: string; prefix: number; family: 'ipv4' | 'ipv6' } | undefined {
  const slash = s.indexOf('/');
  const address = slash === -1 ? s : s.slice(0, slash);
  const version = isIP(address);
  if (version === 0) return undefined;
  const max = version === 4 ? 32 : 128;
  let prefix = max;
  if (slash !== -1) {
    const p = s.slice(slash + 1);
    if (!/^\d{1,3}$/.test(p)) return undefined;
    prefix = Number(p);
    if (prefix > max) return undefined;
  }
  return { address, prefix, family: version === 4 ? 'ipv4' : 'ipv6' };
}

/** Address matcher for `trustedProxies`; IPv4-mapped IPv6 addresses (`::ffff:10.0.0.1`) match IPv4 rules. */
export function createAddressMatcher(entries: readonly string[]): (address: string | undefined) => boolean {
  const list = new BlockList();
  for (const e of entries) {
    const c = parseCidr(e);
    if (!c) throw new TypeError(`not an IP address or CIDR block: ${e}`);
    list.addSubnet(c.address, c.prefix, c.family);
  }
  return (address) => {
    if (!address) return false;
    const a = unmapped(address);
    try {
      return list.check(a, isIPv4(a) ? 'ipv4' : 'ipv6');
    } catch {
      return false;
    }
  };
}

/** `::ffff:10.0.0.1` → `10.0.0.1`; any other address unchanged. */
function unmapped(address: string): string {
  const mapped = /^::ffff:(\d{1,3}(?:\.\d{1,3}){3})$/i.exec(address);
  return mapped ? mapped[1]! : address;
}

/** The address of the client that sent a request, as the audit records it. */
export type ClientAddressOf = (req: IncomingMessage) => string | undefined;

/** The TCP peer's address: the client, when nothing stands between it and caregate. */
export const peerAddress: ClientAddressOf = (req) => req.socket.remoteAddress;

/**
 * The client's address: the TCP peer's, or, when the peer is one of `trustedProxies` (the load
 * balancer, the TLS terminator), the nearest address in `X-Forwarded-For` that is not itself a
 * trusted proxy, read from the right as each proxy appends the address it received from.
 * Whatever an untrusted peer writes in that header is ignored, and a hop that is not an IP
 * address stops the walk at the last address known good: a client cannot choose the address
 * its accesses are recorded under. (Express's `trust proxy` does the same, but the FHIR path is
 * dispatched before express, and the review pages need the same answer.)
 */
export function clientAddressResolver(trustedProxies: readonly string[]): ClientAddressOf {
  if (trustedProxies.length === 0) return peerAddress;
  const trusted = createAddressMatcher(trustedProxies);
  return (req) => {
    const peer = req.socket.remoteAddress;
    if (!trusted(peer)) return peer;
    const raw = req.headers['x-forwarded-for'];
    if (raw === undefined) return peer;
    const hops = (Array.isArray(raw) ? raw.join(',') : raw).split(',');
    let client = peer;
    for (let i = hops.length - 1; i >= 0; i--) {
      const hop = hops[i]!.trim();
      if (isIP(hop) === 0) break;
      client = unmapped(hop);
      if (!trusted(hop)) break;
    }
    return client;
  };
}
