/**
 * The Caddy driver and observer against the harness's real Caddy 2.6.2: routes created, observed,
 * switched, moved and removed while requests go through Caddy's HTTP port to real local upstreams;
 * faults (Caddy down, restarted empty, concurrent writers) and the observer's constant cost.
 * Each test works in a Caddy server of its own (`caddyServer()`), so parallel test files never collide.
 */
import http from 'node:http';
import path from 'node:path';
import type { AddressInfo } from 'node:net';
import { describe, expect, it } from 'vitest';
import { hostCallCounts } from '../../src/core/hostcalls.ts';
import { routeId } from '../../src/core/identity.ts';
import type { AppKey } from '../../src/core/identity.ts';
import { startCaddy } from '../../src/host/caddy.ts';
import { createCaddyDriver } from '../../src/drivers/caddy.ts';
import { NO_UPSTREAM_BODY } from '../../src/drivers/caddy-routes.ts';
import type { CaddyOptions } from '../../src/drivers/caddy.ts';
import { createCaddyObserver } from '../../src/observers/caddy.ts';
import type { CaddySnapshot } from '../../src/observers/caddy.ts';
import { caddyApi, caddyServer, cleanupAfter, cleanupCaddyPath, freePort, getTestHost, httpGet, tempDir, uniqueName, waitFor } from '../harness/index.ts';

const host = getTestHost();

/** A local upstream answering its label; `/hold?ms=N` answers after N ms. */
async function upstream(label: string): Promise<number> {
  const server = http.createServer((req, res) => {
    const m = /^\/hold\?ms=([0-9]+)$/.exec(req.url ?? '');
    const answer = (): void => {
      res.writeHead(200, { 'content-type': 'text/plain' }).end(label);
    };
    if (m) setTimeout(answer, Number(m[1]));
    else answer();
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', () => resolve()));
  cleanupAfter(async () => {
    server.closeAllConnections();
    await new Promise<void>((resolve) => server.close(() => resolve()));
  });
  return (server.address() as AddressInfo).port;
}

type Driver = ReturnType<typeof createCaddyDriver>;

/** A driver and observer on a private server of this test. */
async function setup(admin = host.caddy.adminUrl): Promise<{ drv: Driver; observe: () => Promise<CaddySnapshot>; port: number; server: string }> {
  const srv = await caddyServer('cd');
  const opts: CaddyOptions = { admin, server: srv.name, serverSettings: { listen: [`127.0.0.1:${srv.port}`], gracePeriodMs: 5_000, disableAutomaticHttps: true } };
  const drv = createCaddyDriver(opts);
  const obs = createCaddyObserver(admin, srv.name);
  cleanupAfter(async () => {
    await drv.close();
    await obs.close();
  });
  const observe = async (): Promise<CaddySnapshot> => {
    const o = await obs.observe();
    if (o.unavailable) throw new Error(`caddy unavailable: ${o.message}`);
    return o;
  };
  return { drv, observe, port: srv.port, server: srv.name };
}

/**
 * Wait until Caddy's admin listener accepts connections again after a config change, so a counted
 * call that follows does not hit the restart window (the driver would retry it, counting twice).
 */
async function settle(): Promise<void> {
  await waitFor('caddy admin listening', async () => (await caddyApi('GET', '/config/apps/http/grace_period')).status === 200, 5_000, 20);
}

const appKey = (app: number, team = uniqueName('cd')): AppKey => ({ team, env: 1, app });

async function via(port: number, domain: string, path = '/'): Promise<string> {
  const r = await httpGet(`http://127.0.0.1:${port}${path}`, { host: domain });
  return `${r.status} ${r.text}`;
}

describe('caddy driver (real Caddy 2.6.2)', () => {
  it('upsert → observe → proxy → no-op upsert → switch → observe → remove → gone', async () => {
    const { drv, observe, port } = await setup();
    const [blue, green] = [await upstream('blue'), await upstream('green')];
    const key = appKey(1);
    const domain = `${key.team}.example.test`;

    expect(await drv.upsertRoute(key, domain, [blue])).toEqual({ changed: true });
    let snap = await observe();
    expect(snap.routes).toEqual([{ id: routeId(key), key, index: 0, domains: [domain], dials: [`127.0.0.1:${blue}`], ports: [blue], drift: [] }]);
    expect(await via(port, domain)).toBe('200 blue');

    // Unchanged: one read, no write (no reload).
    await settle();
    const before = hostCallCounts().caddy;
    expect(await drv.upsertRoute(key, domain, [blue])).toEqual({ changed: false });
    expect(hostCallCounts().caddy - before).toBe(1);

    await settle();
    const b2 = hostCallCounts().caddy;
    expect(await drv.setUpstreams(key, [green])).toEqual({ changed: true });
    expect(hostCallCounts().caddy - b2).toBe(2); // one read + exactly one config change
    expect(await via(port, domain)).toBe('200 green');
    expect(await drv.setUpstreams(key, [green])).toEqual({ changed: false });
    snap = await observe();
    expect(snap.routes[0]?.ports).toEqual([green]);

    expect(await drv.removeRoute(key)).toEqual({ changed: true });
    expect(await drv.removeRoute(key)).toEqual({ changed: false });
    snap = await observe();
    expect(snap).toMatchObject({ serverExists: true, routes: [] });
    expect(await via(port, domain)).not.toMatch(/blue|green/);
    await expect(drv.setUpstreams(key, [blue])).rejects.toMatchObject({ code: 'E_ROUTE_NOT_FOUND' });
  });

  it('a route without upstreams answers 503 and keeps its domain; observed without drift; upstreams come back', async () => {
    const { drv, observe, port } = await setup();
    const up = await upstream('back');
    const key = appKey(1);
    const domain = `${key.team}.stopped.test`;
    expect(await drv.upsertRoute(key, domain, [])).toEqual({ changed: true });
    expect(await via(port, domain)).toBe(`503 ${NO_UPSTREAM_BODY}`);
    expect((await observe()).routes).toMatchObject([{ domains: [domain], dials: [], ports: [], drift: [] }]);
    expect(await drv.upsertRoute(key, domain, [])).toEqual({ changed: false });
    expect(await drv.upsertRoute(key, domain, [up])).toEqual({ changed: true });
    expect(await via(port, domain)).toBe('200 back');
  });

  it('moveDomain: 404 without a route for the old domain, 409 when the new one is served, moves, idempotent', async () => {
    const { drv, observe, port } = await setup();
    const up = await upstream('app');
    const other = await upstream('other');
    const team = uniqueName('mv');
    const key = appKey(1, team);
    const key2 = appKey(2, team);
    const [d1, d2, taken] = [`one.${team}.test`, `two.${team}.test`, `taken.${team}.test`];

    await expect(drv.moveDomain(key, d1, d2)).rejects.toMatchObject({ code: 'E_ROUTE_NOT_FOUND' });
    await drv.upsertRoute(key, d1, [up]);
    await drv.upsertRoute(key2, taken, [other]);
    await expect(drv.moveDomain(key, `nope.${team}.test`, d2)).rejects.toMatchObject({ code: 'E_ROUTE_NOT_FOUND' });
    await expect(drv.moveDomain(key, d1, taken)).rejects.toMatchObject({ code: 'E_DOMAIN_EXISTS' });
    // Another app's route on the domain also blocks a plain upsert.
    await expect(drv.upsertRoute(key, taken, [up])).rejects.toMatchObject({ code: 'E_DOMAIN_EXISTS' });

    expect(await drv.moveDomain(key, d1, d2)).toEqual({ changed: true });
    expect(await via(port, d2)).toBe('200 app');
    expect(await via(port, d1)).not.toMatch(/app/);
    expect(await drv.moveDomain(key, d1, d2)).toEqual({ changed: false }); // a retried request
    const snap = await observe();
    expect(snap.routes.map((r) => [r.key.app, r.domains, r.ports])).toEqual([
      [2, [taken], [other]],
      [1, [d2], [up]],
    ]);
  });

  it('exact hosts win over a wildcard whatever the order they were added in', async () => {
    const { drv, port } = await setup();
    const team = uniqueName('wc');
    const [w, e] = [await upstream('wild'), await upstream('exact')];
    await drv.upsertRoute(appKey(1, team), `*.${team}.test`, [w]);
    await drv.upsertRoute(appKey(2, team), `shop.${team}.test`, [e]);
    expect(await via(port, `shop.${team}.test`)).toBe('200 exact');
    expect(await via(port, `any.${team}.test`)).toBe('200 wild');
  });

  it('a dial failure is retried on another upstream (try_duration): bodyless requests never see a 502', async () => {
    const { drv, port } = await setup();
    const live = await upstream('live');
    const dead = await freePort(); // nothing listens there
    const key = appKey(1);
    const domain = `${key.team}.test`;
    await drv.upsertRoute(key, domain, [dead, live]);
    const answers = await Promise.all(Array.from({ length: 30 }, () => via(port, domain)));
    expect(answers.filter((a) => a !== '200 live')).toEqual([]);
  });

  it('upstreamCounts shows requests in flight to an upstream, then none', async () => {
    const { drv, port } = await setup();
    const slow = await upstream('slow');
    const key = appKey(1);
    const domain = `${key.team}.test`;
    await drv.upsertRoute(key, domain, [slow]);
    const held = via(port, domain, '/hold?ms=1500');
    const during = await waitFor('request in flight', async () => {
      const c = (await drv.upstreamCounts()).find((u) => u.port === slow);
      return c && c.numRequests === 1 ? c : undefined;
    });
    expect(during).toMatchObject({ address: `127.0.0.1:${slow}`, numRequests: 1 });
    expect(await held).toBe('200 slow');
    const after = (await drv.upstreamCounts()).find((u) => u.port === slow);
    expect(after?.numRequests ?? 0).toBe(0);
  });

  it('ensureServer creates a missing server once and leaves other servers alone', async () => {
    const name = uniqueName('ens').replace(/-/g, '_');
    const listen = `127.0.0.1:${await freePort()}`;
    cleanupCaddyPath(`/config/apps/http/servers/${name}`);
    const drv = createCaddyDriver({ admin: host.caddy.adminUrl, server: name, serverSettings: { listen: [listen], gracePeriodMs: 7_000, disableAutomaticHttps: true } });
    cleanupAfter(() => drv.close());
    const othersBefore = (await caddyApi('GET', `/config/apps/http/servers/${host.caddy.serverName}/listen`)).body;
    const graceBefore = (await caddyApi('GET', '/config/apps/http/grace_period')).body;

    expect(await drv.ensureServer()).toEqual({ changed: true });
    expect(await drv.ensureServer()).toEqual({ changed: false });
    expect((await caddyApi('GET', `/config/apps/http/servers/${name}`)).body).toEqual({ listen: [listen], routes: [], automatic_https: { disable: true } });
    // An existing grace_period and the other servers are untouched.
    expect((await caddyApi('GET', '/config/apps/http/grace_period')).body).toEqual(graceBefore);
    expect((await caddyApi('GET', `/config/apps/http/servers/${host.caddy.serverName}/listen`)).body).toEqual(othersBefore);
  });

  it('concurrent writers (two drivers, two lock names, one Caddy): no change is lost', async () => {
    const srv = await caddyServer('cc');
    const adminPort = new URL(host.caddy.adminUrl).port;
    const mk = (admin: string): Driver => createCaddyDriver({ admin, server: srv.name, serverSettings: { listen: [`127.0.0.1:${srv.port}`], gracePeriodMs: 5_000 } });
    // Different admin spellings: different in-process locks, so only If-Match keeps them from losing updates.
    const [a, b] = [mk(`http://127.0.0.1:${adminPort}`), mk(`http://localhost:${adminPort}`)];
    cleanupAfter(async () => {
      await a.close();
      await b.close();
    });
    const team = uniqueName('cc');
    const up = await upstream('x');
    await Promise.all(Array.from({ length: 12 }, (_, i) => (i % 2 === 0 ? a : b).upsertRoute(appKey(i + 1, team), `r${i + 1}.${team}.test`, [up])));
    const obs = createCaddyObserver(host.caddy.adminUrl, srv.name);
    cleanupAfter(() => obs.close());
    const snap = await obs.observe();
    expect(snap.unavailable).toBe(false);
    expect((snap as CaddySnapshot).routes.map((r) => r.key.app).sort((x, y) => x - y)).toEqual(Array.from({ length: 12 }, (_, i) => i + 1));
  });

  it('a change made by someone else between read and write is not lost (If-Match → 412 → re-read)', async () => {
    const { drv, observe, server } = await setup();
    const team = uniqueName('im');
    const up = await upstream('x');
    const foreign = { '@id': `${team}-foreign`, match: [{ host: [`foreign.${team}.test`] }], handle: [{ handler: 'static_response', body: 'f' }], terminal: true };
    const realRead = drv.admin.read.bind(drv.admin);
    let interfered = 0;
    drv.admin.read = async (p) => {
      const r = await realRead(p);
      if (interfered === 0 && p.endsWith('/routes')) {
        interfered += 1;
        const w = await caddyApi('POST', `/config/apps/http/servers/${server}/routes`, foreign);
        expect(w.status).toBe(200);
      }
      return r;
    };
    const statuses: number[] = [];
    const realCall = drv.admin.call.bind(drv.admin);
    drv.admin.call = async (...args) => {
      const r = await realCall(...args);
      statuses.push(r.status);
      return r;
    };
    expect(await drv.upsertRoute(appKey(1, team), `a.${team}.test`, [up])).toEqual({ changed: true });
    expect(statuses).toContain(412);
    const snap = await observe();
    expect(snap.routes.map((r) => r.key.app)).toEqual([1]);
    expect(snap.foreignRoutes).toBe(1);
  });

  it('Caddy down: every verb is E_CADDY_UNAVAILABLE, the observer says unavailable', async () => {
    const admin = `http://127.0.0.1:${await freePort()}`;
    const drv = createCaddyDriver({ admin, server: 'crate', serverSettings: { listen: [':1'], gracePeriodMs: 1000 } });
    const obs = createCaddyObserver(admin, 'crate');
    cleanupAfter(async () => {
      await drv.close();
      await obs.close();
    });
    const key = appKey(1);
    const verbs = [
      () => drv.ensureServer(),
      () => drv.upsertRoute(key, 'a.test', [1]),
      () => drv.setUpstreams(key, [1]),
      () => drv.removeRoute(key),
      () => drv.moveDomain(key, 'a.test', 'b.test'),
      () => drv.upstreamCounts(),
    ];
    for (const verb of verbs) await expect(verb()).rejects.toMatchObject({ code: 'E_CADDY_UNAVAILABLE' });
    expect(await obs.observe()).toMatchObject({ unavailable: true, code: 'E_CADDY_UNAVAILABLE' });
  });

  it('an admin API on a unix socket (`unix:/path`) works the same', async () => {
    const dir = await tempDir('caddyu');
    const own = await startCaddy({ dir: path.join(dir, 'c'), serverName: 'crate' });
    cleanupAfter(() => own.stop());
    const sock = path.join(dir, 'admin.sock');
    const { request } = await import('undici');
    const load = await request(`${own.adminUrl}/load`, {
      method: 'POST',
      reset: true,
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ admin: { listen: `unix/${sock}`, config: { persist: false } } }),
    });
    expect(load.statusCode, await load.body.text()).toBe(200);
    const listen = await freePort();
    const drv = createCaddyDriver({ admin: `unix:${sock}`, server: 'crate', serverSettings: { listen: [`127.0.0.1:${listen}`], gracePeriodMs: 2_000, disableAutomaticHttps: true } });
    const obs = createCaddyObserver(`unix:${sock}`, 'crate');
    cleanupAfter(async () => {
      await drv.close();
      await obs.close();
    });
    const key = appKey(1);
    const up = await upstream('unix-admin');
    await waitFor('admin on the unix socket', async () => !(await obs.observe()).unavailable, 5_000);
    expect(await drv.upsertRoute(key, `u.${key.team}.test`, [up])).toEqual({ changed: true });
    expect(await via(listen, `u.${key.team}.test`)).toBe('200 unix-admin');
    expect(await drv.moveDomain(key, `u.${key.team}.test`, `v.${key.team}.test`)).toEqual({ changed: true });
    expect(await obs.observe()).toMatchObject({ serverExists: true, routes: [{ key, domains: [`v.${key.team}.test`], ports: [up] }] });
    expect((await drv.upstreamCounts()).map((u) => u.port)).toContain(up);
  });

  it('Caddy restarted with an empty config: upserts recreate the server and every route', async () => {
    const dir = await tempDir('caddy');
    const own = await startCaddy({ dir, serverName: 'crate' });
    cleanupAfter(() => own.stop());
    // Keep only the admin block: what a restart without the operator's config leaves.
    const adminCfg = (await httpGet(`${own.adminUrl}/config/admin`)).body;
    const { request } = await import('undici');
    const load = await request(`${own.adminUrl}/load`, { method: 'POST', reset: true, headers: { 'content-type': 'application/json' }, body: JSON.stringify({ admin: adminCfg }) });
    expect(load.statusCode, await load.body.text()).toBe(200);
    expect((await httpGet(`${own.adminUrl}/config/apps`)).text.trim()).toBe('null');

    const listen = await freePort();
    const drv = createCaddyDriver({ admin: own.adminUrl, server: 'crate', serverSettings: { listen: [`127.0.0.1:${listen}`], gracePeriodMs: 3_000, disableAutomaticHttps: true } });
    const obs = createCaddyObserver(own.adminUrl, 'crate');
    cleanupAfter(async () => {
      await drv.close();
      await obs.close();
    });
    expect(await obs.observe()).toMatchObject({ unavailable: false, serverExists: false, routes: [] });
    const team = uniqueName('re');
    const ups = [await upstream('one'), await upstream('two'), await upstream('three')];
    for (const [i, p] of ups.entries()) await drv.upsertRoute(appKey(i + 1, team), `a${i + 1}.${team}.test`, [p]);
    expect((await httpGet(`${own.adminUrl}/config/apps/http/grace_period`)).body).toBe('3s');
    expect(await via(listen, `a1.${team}.test`)).toBe('200 one');
    expect(await via(listen, `a3.${team}.test`)).toBe('200 three');
    expect(await obs.observe()).toMatchObject({ serverExists: true, routes: [{ key: { app: 3 } }, { key: { app: 2 } }, { key: { app: 1 } }] });
  });
});
