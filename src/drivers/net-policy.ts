/**
 * SSRF guard for URLs that requests hand to the operator (callback_url, asset_url).
 *
 * The guard lives in the connector of an undici Agent: it resolves the host name itself (all
 * addresses), checks EVERY resolved address, and only then connects, to a checked address. Checking
 * at connect time (not when the URL is accepted) closes DNS-rebinding gaps, and because WHATWG URL
 * parsing normalises `2130706433`, `0x7f000001`, `0177.0.0.1` and `[::ffff:127.0.0.1]` to their
 * canonical forms before the connector sees them, every spelling of an address meets the same check.
 *
 * Policy: only global unicast addresses are allowed. Link-local (169.254.0.0/16, fe80::/10, which
 * includes cloud metadata endpoints) and the AWS IPv6 metadata address are ALWAYS refused. Loopback,
 * private, unique-local, CGNAT, unspecified, multicast, reserved, documentation, NAT64/6to4/Teredo
 * and other special ranges are refused unless `allowPrivateNetworks` lists a CIDR that contains the
 * address or a host name equal to the URL's host. IPv4-mapped IPv6 addresses are checked as IPv4.
 * Redirects are never followed by the dispatchers built here (undici does not follow them unless
 * asked), so a redirect cannot lead past the guard.
 */
import { promises as dns } from 'node:dns';
import { isIP } from 'node:net';
import ipaddr from 'ipaddr.js';
import { Agent, buildConnector } from 'undici';
import { CrateError } from '../core/errors.ts';

type Address = ipaddr.IPv4 | ipaddr.IPv6;

/** Why an address is refused, or 'allowed'. */
export type AddressVerdict = 'allowed' | 'always-blocked' | 'special';

/** The resolver the guard uses: all addresses of a host (an IP literal resolves to itself). */
export type LookupAll = (hostname: string) => Promise<Array<{ address: string; family: number }>>;

/** The allow-list, parsed. */
export interface NetPolicy {
  /** Decide one resolved address reached through the URL host `hostname`. */
  verdict(address: string, hostname: string): AddressVerdict;
}

const ALWAYS_BLOCKED: Array<[Address, number]> = [
  ipaddr.parseCIDR('169.254.0.0/16'),
  ipaddr.parseCIDR('fe80::/10'),
  // AWS's IPv6 instance-metadata endpoint lives in unique-local space.
  ipaddr.parseCIDR('fd00:ec2::254/128'),
];

function inRange(addr: Address, [net, bits]: [Address, number]): boolean {
  return addr.kind() === net.kind() && addr.match(net, bits);
}

/** IPv4 addresses embedded in NAT64 (64:ff9b::/96) and 6to4 (2002::/16) addresses. */
function embeddedV4(addr: Address): ipaddr.IPv4 | undefined {
  if (addr.kind() !== 'ipv6') return undefined;
  const v6 = addr as ipaddr.IPv6;
  const p = v6.parts;
  const range = v6.range();
  const from = (hi: number, lo: number): ipaddr.IPv4 => new ipaddr.IPv4([hi >> 8, hi & 0xff, lo >> 8, lo & 0xff]);
  if (range === 'rfc6052') return from(p[6] as number, p[7] as number);
  if (range === '6to4') return from(p[1] as number, p[2] as number);
  return undefined;
}

/** Parse an address, turning IPv4-mapped IPv6 into IPv4; undefined when not an IP address. */
export function parseAddress(s: string): Address | undefined {
  const bare = s.startsWith('[') && s.endsWith(']') ? s.slice(1, -1) : s;
  if (isIP(bare) === 0) return undefined;
  return ipaddr.process(bare);
}

/**
 * Build the policy from `allowPrivateNetworks` entries: CIDRs (`10.0.0.0/8`), single addresses
 * (`127.0.0.1`, `::1`) or host names (`callbacks.internal`). Throws E_CONFIG for a malformed CIDR.
 */
export function createNetPolicy(allowPrivateNetworks: readonly string[]): NetPolicy {
  const cidrs: Array<[Address, number]> = [];
  const hosts = new Set<string>();
  for (const raw of allowPrivateNetworks) {
    const entry = raw.trim();
    if (entry === '') continue;
    if (entry.includes('/')) {
      try {
        const [net, bits] = ipaddr.parseCIDR(entry);
        // Addresses are checked in IPv4 form after mapping, so a mapped CIDR must be too.
        const mapped = net.kind() === 'ipv6' && (net as ipaddr.IPv6).isIPv4MappedAddress() && bits >= 96;
        cidrs.push(mapped ? [(net as ipaddr.IPv6).toIPv4Address(), bits - 96] : [net, bits]);
      } catch (err) {
        throw new CrateError('E_CONFIG', `allow_private: not a CIDR: ${entry}`, { cause: err });
      }
      continue;
    }
    const a = parseAddress(entry);
    if (a) cidrs.push([a, a.kind() === 'ipv4' ? 32 : 128]);
    else hosts.add(entry.toLowerCase().replace(/\.$/, ''));
  }
  return {
    verdict(address: string, hostname: string): AddressVerdict {
      const addr = parseAddress(address);
      if (!addr) return 'special';
      const v4 = embeddedV4(addr);
      for (const r of ALWAYS_BLOCKED) if (inRange(addr, r) || (v4 && inRange(v4, r))) return 'always-blocked';
      if (addr.range() === 'unicast') return 'allowed';
      const host = hostname.toLowerCase().replace(/^\[|\]$/g, '').replace(/\.$/, '');
      if (hosts.has(host)) return 'allowed';
      for (const r of cidrs) if (inRange(addr, r)) return 'allowed';
      return 'special';
    },
  };
}

const systemLookup: LookupAll = async (hostname) => dns.lookup(hostname, { all: true, verbatim: true });

/**
 * Resolve `hostname` and check every address. Resolves to the checked addresses (at least one);
 * rejects with CrateError E_SSRF_BLOCKED naming the refused address, or E_DNS when resolution fails.
 */
export async function resolveChecked(policy: NetPolicy, hostname: string, lookup: LookupAll = systemLookup): Promise<string[]> {
  const host = hostname.startsWith('[') && hostname.endsWith(']') ? hostname.slice(1, -1) : hostname;
  let addrs: Array<{ address: string; family: number }>;
  try {
    addrs = isIP(host) !== 0 ? [{ address: host, family: isIP(host) }] : await lookup(host);
  } catch (err) {
    throw new CrateError('E_DNS', `cannot resolve ${host}`, { cause: err });
  }
  if (addrs.length === 0) throw new CrateError('E_DNS', `no addresses for ${host}`);
  for (const a of addrs) {
    const v = policy.verdict(a.address, host);
    if (v !== 'allowed') {
      throw new CrateError('E_SSRF_BLOCKED', `refusing to connect to ${host} (${a.address}): ${v === 'always-blocked' ? 'link-local/metadata address' : 'not a public address and not in allow_private'}`, {
        details: { host, address: a.address },
      });
    }
  }
  return addrs.map((a) => a.address);
}

/** Options of guardedAgent. */
export interface GuardOptions {
  allowPrivateNetworks: readonly string[];
  /** Resolver; defaults to the system's (dns.lookup, all addresses). Tests inject one. */
  lookup?: LookupAll;
  connectTimeoutMs?: number;
  /** Connections per origin. */
  connections?: number;
}

/**
 * An undici Agent that checks every connection against the policy (see module comment) and connects
 * only to an address it checked. Connections through a unix socket are refused. Errors from refused
 * connections reject the request with a cause chain containing CrateError E_SSRF_BLOCKED.
 */
export function guardedAgent(opts: GuardOptions): Agent {
  const policy = createNetPolicy(opts.allowPrivateNetworks);
  const lookup = opts.lookup ?? systemLookup;
  const base = buildConnector({ timeout: opts.connectTimeoutMs ?? 10_000 });
  const connector: buildConnector.connector = (options, callback) => {
    if (options.socketPath) {
      callback(new CrateError('E_SSRF_BLOCKED', 'unix socket connections are refused'), null);
      return;
    }
    const tryConnect = (addresses: string[], i: number, lastErr: Error | undefined): void => {
      const address = addresses[i];
      if (address === undefined) {
        callback(lastErr ?? new CrateError('E_DNS', `no addresses for ${options.hostname}`), null);
        return;
      }
      // Keep `host` (the Host header) so TLS SNI and certificate checks use the name, not the address.
      base({ ...options, hostname: address }, (err, socket) => {
        if (err) tryConnect(addresses, i + 1, err);
        else callback(null, socket);
      });
    };
    resolveChecked(policy, options.hostname, lookup).then(
      (addresses) => tryConnect(addresses, 0, undefined),
      (err: unknown) => callback(err instanceof Error ? err : new Error(String(err)), null),
    );
  };
  return new Agent({ connect: connector, connections: opts.connections ?? 8 });
}

/** The CrateError with `code` somewhere in err's cause chain, if any. */
export function findCrateError(err: unknown, code?: string): CrateError | undefined {
  let e: unknown = err;
  for (let i = 0; i < 8 && e !== null && e !== undefined; i += 1) {
    if (e instanceof CrateError && (code === undefined || e.code === code)) return e;
    e = typeof e === 'object' ? (e as { cause?: unknown }).cause : undefined;
  }
  return undefined;
}
