/**
 * The Caddy observer against the harness's real Caddy: one admin request per observation whatever
 * the number of apps, owned routes parsed back to app keys, a missing server and an unreachable admin
 * API reported as data.
 */
import { describe, expect, it } from 'vitest';
import { hostCallCounts } from '../../src/core/hostcalls.ts';
import type { AppKey } from '../../src/core/identity.ts';
import { createCaddyDriver } from '../../src/drivers/caddy.ts';
import { createCaddyObserver } from '../../src/observers/caddy.ts';
import type { CaddySnapshot } from '../../src/observers/caddy.ts';
import { caddyApi, caddyServer, cleanupAfter, freePort, getTestHost, uniqueName, waitFor } from '../harness/index.ts';

const host = getTestHost();

/** Let Caddy's admin listener come back after the last change, so the counted call is not retried. */
async function settle(): Promise<void> {
  await waitFor('caddy admin listening', async () => (await caddyApi('GET', '/config/apps/http/grace_period')).status === 200, 5_000, 20);
}

async function setup(): Promise<{ drv: ReturnType<typeof createCaddyDriver>; observe: () => Promise<CaddySnapshot> }> {
  const srv = await caddyServer('co');
  const drv = createCaddyDriver({ admin: host.caddy.adminUrl, server: srv.name, serverSettings: { listen: [`127.0.0.1:${srv.port}`], gracePeriodMs: 5_000, disableAutomaticHttps: true } });
  const obs = createCaddyObserver(host.caddy.adminUrl, srv.name);
  cleanupAfter(async () => {
    await drv.close();
    await obs.close();
  });
  const observe = async (): Promise<CaddySnapshot> => {
    const o = await obs.observe();
    if (o.unavailable) throw new Error(`caddy unavailable: ${o.message}`);
    return o;
  };
  return { drv, observe };
}

const appKey = (app: number, team: string): AppKey => ({ team, env: 1, app });

describe('caddy observer cost', () => {
  it('one host call per observation, for 1 app and for 50 apps', async () => {
    const { drv, observe } = await setup();
    const team = uniqueName('oc');
    await drv.upsertRoute(appKey(1, team), `a1.${team}.test`, [20001]);
    await settle();
    let before = hostCallCounts().caddy;
    expect((await observe()).routes).toHaveLength(1);
    expect(hostCallCounts().caddy - before).toBe(1);

    for (let app = 2; app <= 50; app += 1) await drv.upsertRoute(appKey(app, team), `a${app}.${team}.test`, [20000 + app]);
    await settle();
    before = hostCallCounts().caddy;
    const snap = await observe();
    expect(hostCallCounts().caddy - before).toBe(1);
    expect(snap.routes).toHaveLength(50);
    expect(new Set(snap.routes.map((r) => r.key.app)).size).toBe(50);
  });
});

describe('caddy observer: missing server, unreachable admin', () => {
  it('a server that does not exist is serverExists: false; no admin API is unavailable', async () => {
    const missing = createCaddyObserver(host.caddy.adminUrl, uniqueName('none').replace(/-/g, '_'));
    const down = createCaddyObserver(`http://127.0.0.1:${await freePort()}`, 'crate');
    cleanupAfter(async () => {
      await missing.close();
      await down.close();
    });
    expect(await missing.observe()).toEqual({ unavailable: false, serverExists: false, routes: [], duplicateIds: [], foreignRoutes: 0 });
    expect(await down.observe()).toMatchObject({ unavailable: true, code: 'E_CADDY_UNAVAILABLE' });
  });
});
