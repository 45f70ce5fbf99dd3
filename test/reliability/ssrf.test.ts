/**
 * SSRF policy end to end: deployments through a real operator whose allow-list is EMPTY point their
 * asset_url and callback_url at loopback, the unspecified address, the host's own private (bridge)
 * address, cloud metadata and link-local, in every spelling (decimal, hex, octal, short, IPv4-mapped
 * and NAT64 IPv6, `localhost`). A canary listening on every local address (IPv4 and IPv6, one port)
 * must see 0 connections; each deployment fails with E_SSRF_BLOCKED; no callback is delivered (each
 * is given up at once with E_SSRF_BLOCKED). With an allow-list of one host (127.0.0.2), redirects
 * from that host to blocked addresses are refused for assets, and callbacks never follow redirects.
 */
import http from 'node:http';
import { createServer, type AddressInfo, type Socket } from 'node:net';
import { describe, expect, it } from 'vitest';
import { cleanupAfter, freePort, getTestHost } from '../harness/index.ts';
import { startTestOperator, waitFor, type TestOperator } from '../e2e/operator.ts';
import { report } from './report.ts';

interface Canary {
  port: number;
  connections: string[];
}

/** A listener on every local address (dual-stack `::`), counting connections. */
async function canary(): Promise<Canary> {
  const c: Canary = { port: 0, connections: [] };
  const sockets = new Set<Socket>();
  const server = createServer((s) => {
    c.connections.push(`${s.remoteAddress ?? '?'} → ${s.localAddress ?? '?'}`);
    sockets.add(s);
    s.on('close', () => sockets.delete(s));
    s.end('HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok');
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen({ port: 0, host: '::', ipv6Only: false }, () => resolve());
  });
  c.port = (server.address() as AddressInfo).port;
  cleanupAfter(
    () =>
      new Promise<void>((resolve) => {
        for (const s of sockets) s.destroy();
        server.close(() => resolve());
      }),
  );
  return c;
}

function bodyFor(t: TestOperator, app: number, asset: string, callback: string, port: number): Record<string, unknown> {
  return {
    team_id: t.team,
    environment_id: 1,
    app_id: app,
    deployment_id: app,
    deployment_strategy: 'recreate',
    domain: `a${app}.${t.team}.ssrf.test`,
    asset_url: asset,
    callback_url: callback,
    env_vars: {},
    target_version: 'v1',
    slots: { main: { instance_id: `i${app}`, port } },
  };
}

/** Wait until every callback of `id` was given up, and return them. */
async function callbacksGivenUp(t: TestOperator, id: number): Promise<{ attempts: number; last_error: string | null; delivered_at: string | null }[]> {
  return waitFor(`callbacks of ${id} given up`, () => {
    const cbs = t.op.records.callbacksFor(String(id));
    return Promise.resolve(cbs.length > 0 && cbs.every((c) => c.next_attempt_at === null) ? cbs : undefined);
  }, 20_000, 100);
}

describe('SSRF policy through the operator', () => {
  it('empty allow-list: every spelling of a local, private or metadata address is refused before connecting', async () => {
    const c = await canary();
    const host = getTestHost();
    const bridge = host.docker.subnet.replace(/\.0\/24$/, '.1');
    const p = c.port;
    const targets = [
      `http://127.0.0.1:${p}/a.tgz`,
      `http://localhost:${p}/a.tgz`,
      `http://2130706433:${p}/a.tgz`,
      `http://0x7f000001:${p}/a.tgz`,
      `http://0177.0.0.1:${p}/a.tgz`,
      `http://0x7f.1:${p}/a.tgz`,
      `http://127.1:${p}/a.tgz`,
      `http://127.255.255.254:${p}/a.tgz`,
      `http://0.0.0.0:${p}/a.tgz`,
      `http://0:${p}/a.tgz`,
      `http://[::1]:${p}/a.tgz`,
      `http://[::]:${p}/a.tgz`,
      `http://[::ffff:127.0.0.1]:${p}/a.tgz`,
      `http://[::ffff:7f00:1]:${p}/a.tgz`,
      `http://[0:0:0:0:0:ffff:127.0.0.1]:${p}/a.tgz`,
      `http://[64:ff9b::7f00:1]:${p}/a.tgz`,
      `http://${bridge}:${p}/a.tgz`,
      `http://169.254.169.254/latest/meta-data/`,
      `http://2852039166/latest/meta-data/`,
      `http://[::ffff:169.254.169.254]/latest/meta-data/`,
      `http://[fe80::1]:${p}/a.tgz`,
      `http://[fd00:ec2::254]/latest/meta-data/`,
      `http://10.255.255.1:${p}/a.tgz`,
      `http://192.168.0.1:${p}/a.tgz`,
      `http://100.64.0.1:${p}/a.tgz`,
    ];
    const t = await startTestOperator({ allowPrivateNetworks: [] });
    const ids: number[] = [];
    for (const [i, url] of targets.entries()) {
      const app = i + 1;
      // Each deployment uses one spelling for its asset and the next one for its callback.
      const callback = (targets[(i + 1) % targets.length] as string).replace('/a.tgz', '/cb');
      const r = await t.api('POST', '/v1/app/instance/binary/deploy', bodyFor(t, app, url, callback, await freePort()));
      expect(r.status, `${url}: ${JSON.stringify(r.body)}`).toBe(202);
      ids.push(app);
    }
    for (const [i, id] of ids.entries()) {
      const s = await t.settle(id, 30_000);
      expect(['failed', 'rolled_back'], `${targets[i]}: ${JSON.stringify(s)}`).toContain(s.status);
      expect((s.error as { code: string }).code, `${targets[i]}: ${JSON.stringify(s.error)}`).toBe('E_SSRF_BLOCKED');
    }
    let callbacks = 0;
    for (const id of ids) {
      for (const cb of await callbacksGivenUp(t, id)) {
        callbacks += 1;
        expect(cb.delivered_at).toBeNull();
        expect(cb.attempts).toBe(1);
        expect(cb.last_error).toMatch(/^E_SSRF_BLOCKED/);
      }
    }
    expect(c.connections).toEqual([]);
    report('ssrf', { spellings: targets.length, deployments: ids.length, callbacks_refused: callbacks, canary_connections: c.connections.length });
  }, 90_000);

  it('an allowed host that redirects to a blocked one: assets refused at the redirect, callbacks never follow', async () => {
    const c = await canary();
    const p = c.port;
    const hops = [`http://127.0.0.1:${p}/a.tgz`, `http://[::ffff:127.0.0.1]:${p}/a.tgz`, `http://2130706433:${p}/a.tgz`, 'http://169.254.169.254/latest/meta-data/', `http://localhost:${p}/a.tgz`];
    let redirected = 0;
    const redirector = http.createServer((req, res) => {
      redirected += 1;
      const i = Number(/\/(\d+)/.exec(req.url ?? '')?.[1] ?? 0);
      res.writeHead(302, { location: hops[i % hops.length] as string }).end();
    });
    const rport = await freePort();
    await new Promise<void>((resolve) => redirector.listen(rport, '127.0.0.2', () => resolve()));
    cleanupAfter(() => new Promise<void>((resolve) => redirector.close(() => resolve())));

    const t = await startTestOperator({ allowPrivateNetworks: ['127.0.0.2'] });
    for (const [i] of hops.entries()) {
      const r = await t.api('POST', '/v1/app/instance/binary/deploy', bodyFor(t, i + 1, `http://127.0.0.2:${rport}/${i}/app.tgz`, `http://127.0.0.2:${rport}/${i}/cb`, await freePort()));
      expect(r.status).toBe(202);
    }
    for (const [i] of hops.entries()) {
      const s = await t.settle(i + 1, 30_000);
      expect(['failed', 'rolled_back']).toContain(s.status);
      expect((s.error as { code: string }).code, `${hops[i]}: ${JSON.stringify(s.error)}`).toBe('E_SSRF_BLOCKED');
      // The callback got the redirect as its answer (not delivered, retried later), never followed it.
      const cbs = await waitFor('a callback attempt', () => {
        const all = t.op.records.callbacksFor(String(i + 1));
        return Promise.resolve(all.some((x) => x.attempts > 0) ? all : undefined);
      }, 20_000, 100);
      for (const cb of cbs.filter((x) => x.attempts > 0)) {
        expect(cb.delivered_at).toBeNull();
        expect(cb.last_error).toBe('HTTP 302');
      }
    }
    expect(redirected).toBeGreaterThanOrEqual(hops.length * 2);
    expect(c.connections).toEqual([]);
    report('ssrf-redirects', { redirects: hops.length, redirector_hits: redirected, canary_connections: c.connections.length });
  }, 90_000);
});
