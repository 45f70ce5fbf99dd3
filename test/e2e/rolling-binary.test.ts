/**
 * Rolling deploys of a binary app over 3 instances through the plain-model endpoint
 * (`/v1/app/binary/deploy`) against real systemd and Caddy: create v1, roll to v2 one instance at a
 * time (every successor on a surge port beside its predecessor, traffic answered throughout), then a
 * v3 whose second instance never gets healthy: the rollout stops and the instance already replaced is
 * restored (auto-revert), so the app ends on v2 everywhere.
 */
import http from 'node:http';
import { describe, expect, it } from 'vitest';
import { cleanupAfter, freePort, getTestHost } from '../harness/index.ts';
import { startCallbackReceiver, terminalOf } from './callbacks.ts';
import { routePorts, teamUnits, watchTraffic } from './host-view.ts';
import { e2eDeadlines, startTestOperator, surgeBlock } from './operator.ts';

type Step = { name: string; status: string };
type Instance = { instance_id: string; port: number; version: string; state: string; healthy: boolean };

describe('binary rolling end to end (plain model)', () => {
  it('creates, rolls one instance at a time, and auto-reverts a rollout that fails halfway', async () => {
    const surge = surgeBlock();
    const t = await startTestOperator({ surgePorts: surge, deadlines: { ...e2eDeadlines, healthyMs: 4_000 } });
    const cb = await startCallbackReceiver();
    const host = getTestHost();
    const domain = `${t.team}.roll.test`;
    const ids = ['w1', 'w2', 'w3'].map((w) => `${t.team}-${w}`);
    const ports = [await freePort(), await freePort(), await freePort()];
    const body = (id: number, version: string) => ({
      app_id: 1,
      environment_id: 1,
      team_id: t.team,
      deployment_id: id,
      deployment_strategy: 'rolling',
      domain,
      asset_url: `${host.assets.baseUrl}/app-${version}.tar.gz`,
      callback_url: cb.url(String(id)),
      env_vars: {},
      health_check_path: '/healthz',
      instances: Object.fromEntries(ids.map((iid, n) => [iid, { port: ports[n] }])),
    });

    // Create: nothing there yet, all three start on their own ports.
    let t0 = Date.now();
    const r1 = await t.api('POST', '/v1/app/binary/deploy', body(301, 'v1'));
    expect(r1.status).toBe(202);
    expect(r1.body.status_url).toBe('/v1/app/deploy/301/status');
    const s1 = await t.settle(301);
    const created = Date.now() - t0;
    expect(s1.status).toBe('succeeded');
    expect(await routePorts(t.team)).toEqual([...ports].sort((a, b) => a - b));
    expect(((await teamUnits(t.team)).filter((u) => u.active === 'active')).length).toBe(3);

    // Roll to v2: one instance at a time, traffic served throughout.
    const traffic = watchTraffic(domain);
    t0 = Date.now();
    expect((await t.api('POST', '/v1/app/binary/deploy', body(302, 'v2'))).status).toBe(202);
    const s2 = await t.settle(302);
    const rolled = Date.now() - t0;
    const seen = await traffic.stop();
    expect(s2.status).toBe('succeeded');
    const names = (s2.steps as Step[]).map((s) => s.name);
    // Per instance: start on a surge port, wait healthy, route, drain and stop the predecessor.
    const starts = names.map((n, i) => [n, i] as const).filter(([n]) => n.startsWith('start '));
    expect(starts.map(([n]) => n.split(' ')[1])).toEqual(ids);
    for (const [n, i] of starts) {
      const [, iid] = n.split(' ');
      expect(names[i + 1]).toMatch(new RegExp(`^wait until ${iid} on :\\d+ is healthy$`));
      expect(names[i + 2]).toMatch(/^route /);
      expect(names[i + 3]).toMatch(/^drain :\d+$/);
      expect(names[i + 4]).toMatch(new RegExp(`^stop ${iid} `));
    }
    expect(seen.statuses).toEqual({ 200: seen.requests });
    expect(seen.order).toEqual(['v1', 'v2']);
    // The app status endpoint has no traffic; the instance one (int32 ids) adds slots and traffic.
    const i2 = (await t.api('GET', '/v1/app/instance/deploy/302/status')).body;
    const running = (i2.instances as Instance[]).filter((i) => i.state === 'running');
    expect(running.map((i) => i.instance_id)).toEqual(ids);
    for (const i of running) expect(i.port).toBeGreaterThanOrEqual(surge.from);
    expect((i2.traffic as { port: number; weight: number }[]).map((x) => x.port).sort()).toEqual(running.map((i) => i.port).sort());
    expect((i2.traffic as { weight: number }[]).reduce((n, x) => n + x.weight, 0)).toBe(100);
    expect(await routePorts(t.team)).toEqual(running.map((i) => i.port).sort((a, b) => a - b));
    const v2Ports = running.map((i) => i.port);

    // v3: its second instance cannot get healthy (its port answers 500: a foreign listener the
    // operator does not know about), so the rollout stops and w1 goes back to v2.
    const blocker = http.createServer((_req, res) => res.writeHead(500).end('not me'));
    await new Promise<void>((resolve) => blocker.listen(ports[1], '127.0.0.1', resolve));
    cleanupAfter(() => new Promise<void>((resolve) => blocker.close(() => resolve())));
    const traffic3 = watchTraffic(domain);
    t0 = Date.now();
    expect((await t.api('POST', '/v1/app/binary/deploy', body(303, 'v3'))).status).toBe(202);
    const s3 = await t.settle(303);
    const reverted = Date.now() - t0;
    const seen3 = await traffic3.stop();
    expect(s3.status).toBe('rolled_back');
    expect(s3.error).toMatchObject({ code: 'E_HEALTH_TIMEOUT' });
    expect(String((s3.error as { message: string }).message)).toContain(`wait until ${ids[1]}`);
    const steps3 = s3.steps as Step[];
    expect(steps3.filter((s) => s.status === 'rolled_back').map((s) => s.name.split(' ')[0])).toEqual(expect.arrayContaining(['start', 'route', 'stop']));
    expect(seen3.statuses).toEqual({ 200: seen3.requests });
    expect(seen3.versions.v2).toBeGreaterThan(0);
    // Back on v2 everywhere, on the same ports, nothing of v3 left running.
    expect(await routePorts(t.team)).toEqual([...v2Ports].sort((a, b) => a - b));
    // Exactly the three v2 units are left (v1 removed by the rollout, v3 by the revert).
    const left = await teamUnits(t.team);
    expect(left.map((u) => u.active)).toEqual(['active', 'active', 'active']);
    for (let n = 0; n < 3; n++) expect(JSON.parse((await t.viaCaddy(domain)).text)).toMatchObject({ version: 'v2' });
    const i3 = (await t.api('GET', '/v1/app/instance/deploy/303/status')).body;
    expect((i3.traffic as { port: number }[]).map((x) => x.port).sort()).toEqual([...v2Ports].sort());

    for (const [id, status] of [[301, 'succeeded'], [302, 'succeeded'], [303, 'rolled_back']] as const) {
      await cb.waitTerminal(id);
      expect(terminalOf(cb, id).status).toBe(status);
    }
    // Step callbacks arrive too, each with its own event id.
    const stepEvents = cb.of(302).filter((c) => c.body.status === 'in_progress');
    expect(new Set(stepEvents.map((c) => c.eventId)).size).toBe(stepEvents.length);
    expect(stepEvents.length).toBeGreaterThanOrEqual(names.length);
    console.log(`binary rolling x3: create ${created} ms, roll ${rolled} ms (${seen.requests} requests, ${seen.connectionErrors} connection errors), failed rollout reverted in ${reverted} ms`);
  }, 60_000);
});
