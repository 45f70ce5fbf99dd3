/**
 * Recreate through the HTTP API against real components, binary (plain model) and Docker (instance
 * model): the plan (dry run) and the deployment status say traffic drops; every old run stops before
 * the new ones start on the instances' own ports; afterwards only the new version runs and serves.
 */
import { describe, expect, it } from 'vitest';
import { freePort, getTestHost } from '../harness/index.ts';
import { startCallbackReceiver, terminalOf } from './callbacks.ts';
import { routePorts, teamContainers, teamUnits, watchTraffic } from './host-view.ts';
import { startTestOperator } from './operator.ts';

type Step = { name: string; status: string; detail: string | null };

describe('recreate end to end', () => {
  it('binary, plain model: says it drops traffic, stops all, starts the new version on the same ports', async () => {
    const t = await startTestOperator();
    const cb = await startCallbackReceiver();
    const host = getTestHost();
    const domain = `${t.team}.rec.test`;
    const ids = [`${t.team}-r1`, `${t.team}-r2`];
    const ports = [await freePort(), await freePort()];
    const body = (id: number, version: string) => ({
      app_id: 1,
      environment_id: 1,
      team_id: t.team,
      deployment_id: id,
      deployment_strategy: 'recreate',
      domain,
      asset_url: `${host.assets.baseUrl}/app-${version}.tar.gz`,
      callback_url: cb.url(String(id)),
      env_vars: {},
      health_check_path: '/healthz',
      instances: Object.fromEntries(ids.map((iid, n) => [iid, { port: ports[n] }])),
    });
    expect((await t.api('POST', '/v1/app/binary/deploy', body(601, 'v1'))).status).toBe(202);
    expect((await t.settle(601)).status).toBe('succeeded');

    // Dry run: the plan says traffic drops, and why.
    const dry = await t.api('POST', '/v1/app/binary/deploy?dry_run=true', body(602, 'v2'));
    expect(dry.status).toBe(200);
    const plan = dry.body.plan as { strategy: string; drops_traffic: boolean; steps: string[]; notes: string[] };
    expect(plan).toMatchObject({ strategy: 'recreate', drops_traffic: true });
    expect(plan.notes.join(' ')).toMatch(/requests in between fail/);

    const traffic = watchTraffic(domain);
    const t0 = Date.now();
    expect((await t.api('POST', '/v1/app/binary/deploy', body(602, 'v2'))).status).toBe(202);
    const s2 = await t.settle(602);
    const took = Date.now() - t0;
    const seen = await traffic.stop();
    expect(s2.status).toBe('succeeded');
    const steps = s2.steps as Step[];
    // Both stops come before any start, and the status says that traffic drops there.
    const kinds = steps.map((s) => s.name.split(' ')[0]);
    expect(kinds.lastIndexOf('stop')).toBeLessThan(kinds.indexOf('start'));
    expect(steps.filter((s) => s.name.startsWith('stop ')).every((s) => /traffic drops/.test(s.name))).toBe(true);
    expect(seen.order).toEqual(['v1', 'v2']);
    // New version on the instances' own ports; old runs removed.
    expect(await routePorts(t.team)).toEqual([...ports].sort((a, b) => a - b));
    expect((await teamUnits(t.team)).map((u) => u.active)).toEqual(['active', 'active']);
    const st = (await t.api('GET', '/v1/app/instance/deploy/602/status')).body;
    expect((st.instances as { port: number; state: string }[]).filter((i) => i.state === 'running').map((i) => i.port).sort()).toEqual([...ports].sort());
    await cb.waitTerminal(602);
    expect(terminalOf(cb, 602).status).toBe('succeeded');
    console.log(`binary recreate x2: ${took} ms; traffic: ${JSON.stringify(seen.statuses)}, ${seen.connectionErrors} connection errors`);
  }, 60_000);

  it('docker, instance model: recreates the slots in place', async () => {
    const t = await startTestOperator();
    const cb = await startCallbackReceiver();
    const image = getTestHost().docker.images.v1.split(':')[0] as string;
    const domain = `${t.team}.drec.test`;
    const ports = [await freePort(), await freePort()];
    const body = (id: number, tag: string) => ({
      app_id: 1,
      environment_id: 1,
      team_id: t.team,
      deployment_id: id,
      deployment_strategy: 'recreate',
      domain,
      image,
      image_tag: tag,
      target_version: tag,
      callback_url: cb.url(String(id)),
      env_vars: {},
      health_check_path: '/healthz',
      slots: { one: { instance_id: `${t.team}-1`, port: ports[0] }, two: { instance_id: `${t.team}-2`, port: ports[1] } },
    });
    expect((await t.api('POST', '/v1/app/instance/docker/deploy', body(611, 'v1'))).status).toBe(202);
    expect((await t.settle(611)).status).toBe('succeeded');
    const t0 = Date.now();
    expect((await t.api('POST', '/v1/app/instance/docker/deploy', body(612, 'v2'))).status).toBe(202);
    const s2 = await t.settle(612);
    const took = Date.now() - t0;
    expect(s2.status).toBe('succeeded');
    const kinds = (s2.steps as Step[]).map((s) => s.name.split(' ')[0]);
    expect(kinds.lastIndexOf('stop')).toBeLessThan(kinds.indexOf('start'));
    expect(JSON.parse((await t.viaCaddy(domain)).text)).toMatchObject({ version: 'v2' });
    expect(await routePorts(t.team)).toEqual([...ports].sort((a, b) => a - b));
    const left = await teamContainers(t.team);
    expect(left.map((c) => [c.Labels['crate.version'], c.State])).toEqual([['v2', 'running'], ['v2', 'running']]);
    const st = (await t.api('GET', '/v1/app/instance/deploy/612/status')).body;
    expect((st.traffic as { slot: string; weight: number }[]).map((x) => [x.slot, x.weight])).toEqual([['one', 50], ['two', 50]]);
    await cb.waitTerminal(612);
    expect(terminalOf(cb, 612).status).toBe('succeeded');
    console.log(`docker recreate x2: ${took} ms`);
  }, 60_000);
});
