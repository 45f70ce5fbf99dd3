/**
 * Rolling deploy of a Docker app over 3 instances through the plain-model endpoint
 * (`/v1/app/docker/deploy`) against real dockerd and Caddy: create v1, roll to v2 one container at a
 * time with traffic answered throughout, the v1 containers gone afterwards.
 */
import { describe, expect, it } from 'vitest';
import { freePort, getTestHost } from '../harness/index.ts';
import { startCallbackReceiver, terminalOf } from './callbacks.ts';
import { routePorts, teamContainers, watchTraffic } from './host-view.ts';
import { startTestOperator } from './operator.ts';

type Step = { name: string; status: string };
type Instance = { instance_id: string; port: number; version: string; state: string };

describe('docker rolling end to end (plain model)', () => {
  it('creates 3 containers and replaces them one at a time', async () => {
    const t = await startTestOperator();
    const cb = await startCallbackReceiver();
    const image = getTestHost().docker.images.v1.split(':')[0] as string;
    const domain = `${t.team}.droll.test`;
    const ids = ['c1', 'c2', 'c3'].map((w) => `${t.team}-${w}`);
    const ports = [await freePort(), await freePort(), await freePort()];
    const body = (id: number, tag: string) => ({
      app_id: 1,
      environment_id: 1,
      team_id: t.team,
      deployment_id: id,
      deployment_strategy: 'rolling',
      domain,
      image,
      image_tag: tag,
      callback_url: cb.url(String(id)),
      health_check_path: '/healthz',
      instances: Object.fromEntries(ids.map((iid, n) => [iid, { port: ports[n] }])),
    });

    let t0 = Date.now();
    expect((await t.api('POST', '/v1/app/docker/deploy', body(401, 'v1'))).status).toBe(202);
    const s1 = await t.settle(401);
    const created = Date.now() - t0;
    expect(s1.status).toBe('succeeded');
    expect(await routePorts(t.team)).toEqual([...ports].sort((a, b) => a - b));
    expect((await teamContainers(t.team)).map((c) => c.State)).toEqual(['running', 'running', 'running']);

    const traffic = watchTraffic(domain);
    t0 = Date.now();
    expect((await t.api('POST', '/v1/app/docker/deploy', body(402, 'v2'))).status).toBe(202);
    const s2 = await t.settle(402);
    const rolled = Date.now() - t0;
    const seen = await traffic.stop();
    expect(s2.status).toBe('succeeded');
    const names = (s2.steps as Step[]).map((s) => s.name);
    // One instance at a time: each start is followed by its wait, route, drain and stop.
    const starts = names.flatMap((n, i) => (n.startsWith('start ') ? [i] : []));
    expect(starts.map((i) => names[i]?.split(' ')[1])).toEqual(ids);
    for (const i of starts) expect(names.slice(i + 1, i + 5).map((n) => n.split(' ')[0])).toEqual(['wait', 'route', 'drain', 'stop']);
    expect(seen.statuses).toEqual({ 200: seen.requests });
    expect(seen.order).toEqual(['v1', 'v2']);

    const st = (await t.api('GET', '/v1/app/instance/deploy/402/status')).body;
    const running = (st.instances as Instance[]).filter((i) => i.state === 'running');
    expect(running.map((i) => [i.instance_id, i.version])).toEqual(ids.map((i) => [i, 'v2']));
    expect(await routePorts(t.team)).toEqual(running.map((i) => i.port).sort((a, b) => a - b));
    // Only the three v2 containers are left, all running.
    const left = await teamContainers(t.team);
    expect(left.map((c) => [c.Labels['crate.version'], c.State])).toEqual([['v2', 'running'], ['v2', 'running'], ['v2', 'running']]);
    await cb.waitTerminal(402);
    expect(terminalOf(cb, 401).status).toBe('succeeded');
    expect(terminalOf(cb, 402).status).toBe('succeeded');
    console.log(`docker rolling x3: create ${created} ms, roll ${rolled} ms (${seen.requests} requests, ${seen.connectionErrors} connection errors)`);
  }, 60_000);
});
