/**
 * `POST /v1/app/delete` end to end against real components: nothing is left afterwards, checked on
 * the host itself (systemctl units and unit files, `docker ps -a` by label, the Caddy route, files under
 * the apps folder). A delete of some instances removes only those; the route goes with the last one.
 */
import { existsSync } from 'node:fs';
import { readdir } from 'node:fs/promises';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { appDir } from '../../src/drivers/layout.ts';
import { freePort, getTestHost } from '../harness/index.ts';
import { startCallbackReceiver, terminalOf } from './callbacks.ts';
import { routeOf, routePorts, teamContainers, teamUnitFiles, teamUnits } from './host-view.ts';
import { startTestOperator } from './operator.ts';

describe('delete end to end', () => {
  it('binary blue/green app: units, unit files, env files, releases and route are gone', async () => {
    const t = await startTestOperator();
    const cb = await startCallbackReceiver();
    const host = getTestHost();
    const domain = `${t.team}.del.test`;
    const [b, g] = [`${t.team}-b`, `${t.team}-g`];
    const slots = { blue: { instance_id: b, port: await freePort() }, green: { instance_id: g, port: await freePort() } };
    for (const [id, v] of [[901, 'v1'], [902, 'v2']] as const) {
      const r = await t.api('POST', '/v1/app/instance/binary/deploy', {
        app_id: 1, environment_id: 1, team_id: t.team, deployment_id: id, deployment_strategy: 'blue_green', domain,
        asset_url: `${host.assets.baseUrl}/app-${v}.tar.gz`, callback_url: cb.url(), env_vars: { SECRET: 's3cret' },
        health_check_path: '/healthz', target_version: v, slots,
      });
      expect(r.status).toBe(202);
      expect((await t.settle(id)).status).toBe('succeeded');
    }
    // Before: one active unit, the standby slot's stopped unit file, two releases, env files, a route.
    const dir = appDir(t.config.appsDir, { team: t.team, env: 1, app: 1 });
    expect((await readdir(path.join(dir, 'releases'))).sort()).toEqual(['v1', 'v2']);
    expect((await readdir(path.join(dir, 'env'))).length).toBe(2);
    expect(await teamUnitFiles(t.team)).toHaveLength(2);
    expect(await routeOf(t.team)).not.toBeNull();

    const t0 = Date.now();
    const del = await t.api('POST', '/v1/app/delete', { app_id: 1, environment_id: 1, team_id: t.team, domain, callback_url: cb.url('del'), instance_ids: [b, g], deployment_id: 903 });
    expect(del.status).toBe(202);
    expect(del.body).toMatchObject({ deployment_id: 903, status: 'accepted', status_url: '/v1/app/deploy/903/status' });
    expect((await t.settle(903)).status).toBe('succeeded');
    const took = Date.now() - t0;
    expect(await teamUnits(t.team)).toEqual([]);
    expect(await teamUnitFiles(t.team)).toEqual([]);
    expect(await routeOf(t.team)).toBeNull();
    expect(existsSync(dir)).toBe(false);
    expect((await t.viaCaddy(domain)).text).toBe('');
    await cb.waitTerminal(903);
    expect(terminalOf(cb, 903).status).toBe('succeeded');
    // And it stays so (no heal brings anything back).
    await new Promise((res) => setTimeout(res, 2_500));
    expect(await teamUnitFiles(t.team)).toEqual([]);
    expect(await routeOf(t.team)).toBeNull();
    console.log(`binary delete: ${took} ms`);
  }, 60_000);

  it('docker plain app: deleting one instance keeps the other serving; deleting the last removes everything', async () => {
    const t = await startTestOperator();
    const cb = await startCallbackReceiver();
    const image = getTestHost().docker.images.v1.split(':')[0] as string;
    const domain = `${t.team}.ddel.test`;
    const [a, b] = [`${t.team}-a`, `${t.team}-b`];
    const [pa, pb] = [await freePort(), await freePort()];
    const r = await t.api('POST', '/v1/app/docker/deploy', {
      app_id: 1, environment_id: 1, team_id: t.team, deployment_id: 911, deployment_strategy: 'rolling', domain,
      image, image_tag: 'v1', callback_url: cb.url(), health_check_path: '/healthz', instances: { [a]: { port: pa }, [b]: { port: pb } },
    });
    expect(r.status).toBe(202);
    expect((await t.settle(911)).status).toBe('succeeded');
    expect(await teamContainers(t.team)).toHaveLength(2);

    const one = await t.api('POST', '/v1/app/delete', { app_id: 1, environment_id: 1, team_id: t.team, domain, callback_url: cb.url('del1'), instance_ids: [b] });
    expect(one.status).toBe(202);
    const id1 = one.body.deployment_id as string;
    expect((await t.settle(id1)).status).toBe('succeeded');
    expect((await teamContainers(t.team)).map((c) => c.Labels['crate.instance'])).toEqual([a]);
    expect(await routePorts(t.team)).toEqual([pa]);
    expect(JSON.parse((await t.viaCaddy(domain)).text)).toMatchObject({ version: 'v1' });

    const all = await t.api('POST', '/v1/app/delete', { app_id: 1, environment_id: 1, team_id: t.team, domain, callback_url: cb.url('del2'), instance_ids: [a] });
    const id2 = all.body.deployment_id as string;
    expect((await t.settle(id2)).status).toBe('succeeded');
    expect(await teamContainers(t.team)).toEqual([]);
    expect(await routeOf(t.team)).toBeNull();
    expect(existsSync(appDir(t.config.appsDir, { team: t.team, env: 1, app: 1 }))).toBe(false);
    for (const id of [id1, id2]) {
      await cb.waitTerminal(id);
      expect(terminalOf(cb, id).status).toBe('succeeded');
    }
  }, 60_000);
});
