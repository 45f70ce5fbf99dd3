/**
 * Supersede end to end (binary blue/green against real systemd and Caddy): a deployment accepted
 * while another is in flight ends the first `superseded` (at once in its record, its machine stops
 * at the next safe point) and the app converges to the second; two deployments accepted back to back
 * (the first never started) likewise. Each deployment sends exactly one terminal callback.
 */
import { describe, expect, it } from 'vitest';
import { freePort, getTestHost, waitFor } from '../harness/index.ts';
import { startCallbackReceiver, terminalOf } from './callbacks.ts';
import { routePorts, teamUnits } from './host-view.ts';
import { startTestOperator } from './operator.ts';

describe('supersede end to end', () => {
  it('a deployment accepted mid-flight supersedes the running one; the app converges to the newer', async () => {
    const t = await startTestOperator();
    const cb = await startCallbackReceiver();
    const host = getTestHost();
    const domain = `${t.team}.sup.test`;
    const [b, g] = [`${t.team}-b`, `${t.team}-g`];
    const slots = { blue: { instance_id: b, port: await freePort() }, green: { instance_id: g, port: await freePort() } };
    const deploy = (id: number, version: string, asset = `app-${version}.tar.gz`) =>
      t.api('POST', '/v1/app/instance/binary/deploy', {
        app_id: 1, environment_id: 1, team_id: t.team, deployment_id: id, deployment_strategy: 'blue_green', domain,
        asset_url: `${host.assets.baseUrl}/${asset}`, callback_url: cb.url(String(id)), env_vars: {},
        health_check_path: '/healthz', target_version: version, slots,
      });

    expect((await deploy(1001, 'v1')).status).toBe(202);
    expect((await t.settle(1001)).status).toBe('succeeded');

    // v2 never gets healthy (a broken build): supersede it while it waits for health. The wait is
    // interrupted (it changes nothing), so v3 does not wait out v2's health deadline.
    expect((await deploy(1002, 'v2', 'app-v2-broken.tar.gz')).status).toBe(202);
    await waitFor('v2 to wait for health', async () => {
      const s = (await t.api('GET', '/v1/app/deploy/1002/status')).body;
      return typeof s.phase === 'string' && s.phase.startsWith('wait until');
    }, 15_000, 20);
    const t0 = Date.now();
    expect((await deploy(1003, 'v3')).status).toBe(202);
    const s2 = (await t.api('GET', '/v1/app/deploy/1002/status')).body;
    expect(s2).toMatchObject({ status: 'superseded', superseded_by: '1003' });
    const s3 = await t.settle(1003);
    const took = Date.now() - t0;
    expect(s3.status).toBe('succeeded');
    expect(took).toBeLessThan(t.config.deadlines.healthyMs);
    expect(JSON.parse((await t.viaCaddy(domain)).text)).toMatchObject({ version: 'v3' });
    // Converged: one active unit (v3), routed; v2 runs nowhere; it stays so past a resync.
    await t.op.reconciler.runner.idle();
    await new Promise((res) => setTimeout(res, 2_500));
    const active = (await teamUnits(t.team)).filter((u) => u.active === 'active');
    expect(active).toHaveLength(1);
    expect(JSON.parse((await t.viaCaddy(domain)).text)).toMatchObject({ version: 'v3' });
    expect((await routePorts(t.team)).length).toBe(1);

    for (const [id, status] of [[1001, 'succeeded'], [1002, 'superseded'], [1003, 'succeeded']] as const) {
      await cb.waitTerminal(id);
      expect(terminalOf(cb, id).status).toBe(status);
    }
    // Nothing about v2 arrives after its terminal callback.
    const after = cb.of(1002);
    const finalAt = after.findIndex((c) => c.body.status === 'superseded');
    expect(after.slice(finalAt + 1)).toEqual([]);
    console.log(`supersede mid-flight: v3 served ${took} ms after it was accepted`);
  }, 60_000);

  it('back-to-back deployments: the first never starts, ends superseded, and says so once', async () => {
    const t = await startTestOperator();
    const cb = await startCallbackReceiver();
    const host = getTestHost();
    const domain = `${t.team}.sup2.test`;
    const instances = { [`${t.team}-a`]: { port: await freePort() } };
    const deploy = (id: number, version: string) =>
      t.api('POST', '/v1/app/binary/deploy', {
        app_id: 1, environment_id: 1, team_id: t.team, deployment_id: id, deployment_strategy: 'rolling', domain,
        asset_url: `${host.assets.baseUrl}/app-${version}.tar.gz`, callback_url: cb.url(String(id)), env_vars: {},
        health_check_path: '/healthz', instances,
      });
    // The loop is held while both are accepted, so the first one never gets a machine.
    await t.op.reconciler.loop.stop();
    expect((await deploy(1011, 'v1')).status).toBe(202);
    expect((await deploy(1012, 'v2')).status).toBe(202);
    await t.op.reconciler.loop.start();
    expect((await t.settle(1012)).status).toBe('succeeded');
    expect((await t.api('GET', '/v1/app/deploy/1011/status')).body).toMatchObject({ status: 'superseded', superseded_by: '1012' });
    expect(JSON.parse((await t.viaCaddy(domain)).text)).toMatchObject({ version: 'v2' });
    for (const [id, status] of [[1011, 'superseded'], [1012, 'succeeded']] as const) {
      await cb.waitTerminal(id);
      expect(terminalOf(cb, id).status).toBe(status);
    }
  }, 60_000);
});
