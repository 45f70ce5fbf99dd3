/**
 * Blue/green of a binary app through the HTTP API against real systemd, Caddy and an asset server:
 * deploy v1, blue/green to v2 (Caddy serves v2, v1 stopped), a v3 that fails health is rolled back
 * while v2 keeps serving, then delete removes everything.
 */
import { describe, expect, it } from 'vitest';
import { routeId } from '../../src/core/identity.ts';
import { caddyApi, freePort, getTestHost, systemctlUser } from '../harness/index.ts';
import { startTestOperator, waitFor } from './operator.ts';

describe('binary blue/green end to end', () => {
  it('deploys, switches, rolls back a failing version and deletes', async () => {
    const t = await startTestOperator();
    const host = getTestHost();
    const [blue, green] = [await freePort(), await freePort()];
    const domain = `${t.team}.bg.test`;
    const body = (id: number, version: string, asset = `app-${version}.tar.gz`) => ({
      app_id: 1,
      environment_id: 1,
      team_id: t.team,
      deployment_id: id,
      deployment_strategy: 'blue_green',
      domain,
      asset_url: `${host.assets.baseUrl}/${asset}`,
      callback_url: 'http://127.0.0.1:9/callback',
      env_vars: { GREETING: 'hi "there" $HOME %d' },
      health_check_path: '/healthz',
      target_version: version,
      slots: { blue: { instance_id: `${t.team}-b`, port: blue }, green: { instance_id: `${t.team}-g`, port: green } },
    });

    const r1 = await t.api('POST', '/v1/app/instance/binary/deploy', body(101, 'v1'));
    expect(r1.status).toBe(202);
    const s1 = await t.settle(101);
    expect(s1.status).toBe('succeeded');
    expect(JSON.parse((await t.viaCaddy(domain)).text)).toMatchObject({ version: 'v1' });
    const i1 = (await t.api('GET', '/v1/app/instance/deploy/101/status')).body;
    expect(i1.traffic).toEqual([{ instance_id: `${t.team}-b`, slot: 'blue', port: blue, weight: 100 }]);

    expect((await t.api('POST', '/v1/app/instance/binary/deploy', body(102, 'v2'))).status).toBe(202);
    const s2 = await t.settle(102);
    expect(s2.status).toBe('succeeded');
    expect(JSON.parse((await t.viaCaddy(domain)).text)).toMatchObject({ version: 'v2' });
    expect((s2.steps as { name: string }[]).map((s) => s.name)).toEqual([
      'fetch release v2',
      `start ${t.team}-g v2 on :${green}`,
      `wait until ${t.team}-g is healthy`,
      `route ${domain} → :${green}`,
      `drain :${blue}`,
      `stop ${t.team}-b v1 on :${blue}`,
    ]);
    const units = JSON.parse(String((await systemctlUser(['list-units', '--all', '--output=json', `crate-${t.team}:*`])).stdout)) as { unit: string; active: string }[];
    expect(units.filter((u) => u.active === 'active')).toHaveLength(1);

    // v3 never gets healthy: rolled back, v2 serves throughout.
    expect((await t.api('POST', '/v1/app/instance/binary/deploy', body(103, 'v3', 'app-v3-broken.tar.gz'))).status).toBe(202);
    let served = 0;
    const watcher = (async () => {
      for (;;) {
        const s = (await t.api('GET', '/v1/app/deploy/103/status')).body.status as string;
        if (s !== 'pending' && s !== 'in_progress') return;
        const r = await t.viaCaddy(domain);
        expect(r.status).toBe(200);
        expect(JSON.parse(r.text)).toMatchObject({ version: 'v2' });
        served += 1;
      }
    })();
    const s3 = await t.settle(103);
    await watcher;
    expect(s3.status).toBe('rolled_back');
    expect(s3.error).toMatchObject({ code: 'E_HEALTH_TIMEOUT' });
    expect(served).toBeGreaterThan(0);
    expect(JSON.parse((await t.viaCaddy(domain)).text)).toMatchObject({ version: 'v2' });
    // The document is put back to the applied revision, so lifecycle operations do not roll v3 out again.
    await waitFor('document reverted to v2', () => Promise.resolve(t.op.store.get({ team: t.team, env: 1, app: 1 })?.spec.version === 'v2'));
    const restart = await t.api('POST', '/v1/app/restart', { app_id: 1, environment_id: 1, team_id: t.team, domain, callback_url: 'http://127.0.0.1:9/cb', instance_id: `${t.team}-g` });
    expect(restart.status).toBe(202);
    expect((await t.settle(restart.body.deployment_id as string)).status).toBe('succeeded');
    expect(JSON.parse((await t.viaCaddy(domain)).text)).toMatchObject({ version: 'v2' });

    // Delete: units, files and route gone.
    const del = await t.api('POST', '/v1/app/delete', { app_id: 1, environment_id: 1, team_id: t.team, domain, callback_url: 'http://127.0.0.1:9/cb', instance_ids: [`${t.team}-b`, `${t.team}-g`] });
    expect(del.status).toBe(202);
    const sd = await t.settle(del.body.deployment_id as string);
    expect(sd.status).toBe('succeeded');
    await waitFor('units gone', async () => {
      const left = JSON.parse(String((await systemctlUser(['list-units', '--all', '--output=json', `crate-${t.team}:*`])).stdout)) as unknown[];
      return left.length === 0;
    });
    expect((await caddyApi('GET', `/id/${routeId({ team: t.team, env: 1, app: 1 })}`)).status).toBe(404);
    expect((await t.viaCaddy(domain)).text).toBe('');
  }, 90_000);
});
