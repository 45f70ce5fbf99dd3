/**
 * The SSRF guard against real sockets: canary listeners on loopback count every connection that
 * reaches them; each spelling of a blocked address must be refused before a connection is made.
 */
import { createServer } from 'node:net';
import type { Server, Socket } from 'node:net';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { request } from 'undici';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createNetPolicy, findCrateError, guardedAgent, resolveChecked } from '../../src/drivers/net-policy.ts';

interface Canary {
  server: Server;
  port: number;
  connections: number;
  sockets: Set<Socket>;
}

async function canary(host: string): Promise<Canary> {
  const c: Canary = { server: createServer(), port: 0, connections: 0, sockets: new Set() };
  c.server.on('connection', (s) => {
    c.connections += 1;
    c.sockets.add(s);
    s.on('close', () => c.sockets.delete(s));
    s.end('HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok');
  });
  await new Promise<void>((resolve, reject) => {
    c.server.once('error', reject);
    c.server.listen(0, host, () => resolve());
  });
  c.port = (c.server.address() as AddressInfo).port;
  return c;
}

async function close(server: Server | http.Server, sockets?: Set<Socket>): Promise<void> {
  for (const s of sockets ?? []) s.destroy();
  await new Promise<void>((resolve) => server.close(() => resolve()));
}

async function blockedCode(url: string, allow: string[] = [], lookup?: Parameters<typeof guardedAgent>[0]['lookup']): Promise<string | undefined> {
  const agent = guardedAgent({ allowPrivateNetworks: allow, ...(lookup ? { lookup } : {}) });
  try {
    const res = await request(url, { dispatcher: agent, signal: AbortSignal.timeout(5_000) });
    await res.body.dump();
    return `HTTP ${res.statusCode}`;
  } catch (err) {
    return findCrateError(err)?.code ?? `other: ${String(err)}`;
  } finally {
    await agent.close();
  }
}

describe('net-policy verdicts', () => {
  const none = createNetPolicy([]);
  it.each([
    ['8.8.8.8', 'allowed'],
    ['2001:4860:4860::8888', 'allowed'],
    ['127.0.0.1', 'special'],
    ['127.255.0.9', 'special'],
    ['10.1.2.3', 'special'],
    ['172.16.0.1', 'special'],
    ['172.31.255.255', 'special'],
    ['192.168.1.1', 'special'],
    ['100.64.0.1', 'special'],
    ['0.0.0.0', 'special'],
    ['224.0.0.1', 'special'],
    ['255.255.255.255', 'special'],
    ['192.0.2.10', 'special'],
    ['::1', 'special'],
    ['::', 'special'],
    ['fc00::1', 'special'],
    ['fd12:3456::1', 'special'],
    ['ff02::1', 'special'],
    ['::ffff:127.0.0.1', 'special'],
    ['::ffff:8.8.8.8', 'allowed'],
    ['64:ff9b::a9fe:a9fe', 'always-blocked'],
    ['2002:a9fe:a9fe::1', 'always-blocked'],
    ['169.254.169.254', 'always-blocked'],
    ['::ffff:169.254.169.254', 'always-blocked'],
    ['fe80::1', 'always-blocked'],
    ['fd00:ec2::254', 'always-blocked'],
    ['not-an-ip', 'special'],
  ])('%s → %s', (addr, verdict) => {
    expect(none.verdict(addr, 'example.com')).toBe(verdict);
  });

  it('allow-list entries: CIDR, single address, mapped CIDR, host name; link-local never', () => {
    const p = createNetPolicy(['10.0.0.0/8', '::1', '::ffff:192.168.0.0/112', 'Callbacks.Internal.', '0.0.0.0/0', 'fe80::/10']);
    expect(p.verdict('10.9.9.9', 'x')).toBe('allowed');
    expect(p.verdict('::1', 'x')).toBe('allowed');
    expect(p.verdict('192.168.3.4', 'x')).toBe('allowed');
    expect(p.verdict('127.0.0.1', 'x')).toBe('allowed'); // 0.0.0.0/0 allows every IPv4 ...
    expect(p.verdict('169.254.169.254', 'x')).toBe('always-blocked'); // ... except link-local
    expect(p.verdict('fe80::1', 'x')).toBe('always-blocked');
    expect(p.verdict('fc00::5', 'callbacks.internal')).toBe('allowed');
    expect(p.verdict('fc00::5', 'other.internal')).toBe('special');
    expect(() => createNetPolicy(['10.0.0.0/99'])).toThrow(/allow_private/);
  });

  it('every resolved address is checked (one private address among public ones blocks)', async () => {
    const lookup = (): Promise<Array<{ address: string; family: number }>> => Promise.resolve([
      { address: '93.184.216.34', family: 4 },
      { address: '127.0.0.1', family: 4 },
    ]);
    await expect(resolveChecked(createNetPolicy([]), 'rebind.example', lookup)).rejects.toMatchObject({ code: 'E_SSRF_BLOCKED' });
    await expect(resolveChecked(createNetPolicy(['127.0.0.1']), 'rebind.example', lookup)).resolves.toEqual(['93.184.216.34', '127.0.0.1']);
  });
});

describe('guardedAgent against canary listeners', () => {
  let v4: Canary;
  let v6: Canary;
  let redirector: http.Server;
  let redirectorPort = 0;

  beforeAll(async () => {
    v4 = await canary('127.0.0.1');
    v6 = await canary('::1');
    redirector = http.createServer((_req, res) => {
      res.writeHead(302, { location: `http://[::1]:${v6.port}/` }).end();
    });
    await new Promise<void>((resolve) => redirector.listen(0, '127.0.0.1', () => resolve()));
    redirectorPort = (redirector.address() as AddressInfo).port;
  });
  afterAll(async () => {
    await close(v4.server, v4.sockets);
    await close(v6.server, v6.sockets);
    redirector.closeAllConnections();
    await close(redirector);
  });

  it('refuses every spelling of loopback without connecting', async () => {
    const p = v4.port;
    const urls = [
      `http://127.0.0.1:${p}/`,
      `http://2130706433:${p}/`,
      `http://0x7f000001:${p}/`,
      `http://0177.0.0.1:${p}/`,
      `http://0x7f.1:${p}/`,
      `http://127.1:${p}/`,
      `http://[::ffff:127.0.0.1]:${p}/`,
      `http://[::ffff:7f00:1]:${p}/`,
      `http://localhost:${p}/`,
      `http://[::1]:${v6.port}/`,
      `http://[0:0:0:0:0:0:0:1]:${v6.port}/`,
    ];
    for (const url of urls) expect(await blockedCode(url), url).toBe('E_SSRF_BLOCKED');
    expect(v4.connections).toBe(0);
    expect(v6.connections).toBe(0);
  });

  it('refuses metadata addresses even when the allow-list is wide open', async () => {
    for (const url of ['http://169.254.169.254/latest/meta-data/', 'http://[::ffff:169.254.169.254]/', 'http://2852039166/', 'http://[fe80::1]/']) {
      expect(await blockedCode(url, ['0.0.0.0/0', '::/0']), url).toBe('E_SSRF_BLOCKED');
    }
  });

  it('a host name resolving to a private address among public ones is refused', async () => {
    const lookup = (): Promise<Array<{ address: string; family: number }>> => Promise.resolve([
      { address: '93.184.216.34', family: 4 },
      { address: '127.0.0.1', family: 4 },
    ]);
    expect(await blockedCode(`http://rebind.example:${v4.port}/`, [], lookup)).toBe('E_SSRF_BLOCKED');
    expect(v4.connections).toBe(0);
  });

  it('connects when the allow-list covers the address or names the host', async () => {
    expect(await blockedCode(`http://127.0.0.1:${v4.port}/`, ['127.0.0.1/32'])).toBe('HTTP 200');
    expect(await blockedCode(`http://localhost:${v4.port}/`, ['localhost'])).toBe('HTTP 200');
    expect(v4.connections).toBe(2);
  });

  it('does not follow a redirect to a blocked address', async () => {
    const before = v6.connections;
    expect(await blockedCode(`http://127.0.0.1:${redirectorPort}/`, ['127.0.0.1'])).toBe('HTTP 302');
    expect(v6.connections).toBe(before);
  });
});
