/**
 * Rolling deploy in the instance model (`/v1/app/instance/binary/deploy`, three slots) against real
 * systemd and Caddy: v1 on the slots' ports, then v2 replaces one instance at a time on surge ports;
 * the instance status reports slots, ports and traffic.
 */
import { describe, expect, it } from 'vitest';
import { freePort, getTestHost } from '../harness/index.ts';
import { startCallbackReceiver, terminalOf } from './callbacks.ts';
import { routePorts, teamUnits, watchTraffic } from './host-view.ts';
import { startTestOperator } from './operator.ts';

type Instance = { instance_id: string; slot?: string; port: number; version: string; state: string; healthy: boolean };
type Traffic = { instance_id: string; slot?: string; port: number; weight: number };

describe('instance-model rolling end to end', () => {
  it('rolls three slots one at a time', async () => {
    const t = await startTestOperator();
    const cb = await startCallbackReceiver();
    const host = getTestHost();
    const domain = `${t.team}.iroll.test`;
    const slots = ['a', 'b', 'c'];
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
      target_version: version,
      slots: Object.fromEntries(slots.map((s, n) => [s, { instance_id: `${t.team}-${s}`, port: ports[n] }])),
    });

    expect((await t.api('POST', '/v1/app/instance/binary/deploy', body(501, 'v1'))).status).toBe(202);
    expect((await t.settle(501)).status).toBe('succeeded');
    const st1 = (await t.api('GET', '/v1/app/instance/deploy/501/status')).body;
    expect(st1.traffic).toEqual(slots.map((s, n) => ({ instance_id: `${t.team}-${s}`, slot: s, port: ports[n], weight: n === 0 ? 34 : 33 })));

    const traffic = watchTraffic(domain);
    const t0 = Date.now();
    expect((await t.api('POST', '/v1/app/instance/binary/deploy', body(502, 'v2'))).status).toBe(202);
    const s2 = await t.settle(502);
    const rolled = Date.now() - t0;
    const seen = await traffic.stop();
    expect(s2.status).toBe('succeeded');
    expect(seen.statuses).toEqual({ 200: seen.requests });
    expect(seen.order).toEqual(['v1', 'v2']);
    const names = (s2.steps as { name: string }[]).map((s) => s.name);
    expect(names.filter((n) => n.startsWith('start ')).map((n) => n.split(' ')[1])).toEqual(slots.map((s) => `${t.team}-${s}`));

    const st2 = (await t.api('GET', '/v1/app/instance/deploy/502/status')).body;
    const running = (st2.instances as Instance[]).filter((i) => i.state === 'running');
    expect(running.map((i) => [i.instance_id, i.slot, i.version, i.healthy])).toEqual(slots.map((s) => [`${t.team}-${s}`, s, 'v2', true]));
    const traffic2 = st2.traffic as Traffic[];
    expect(traffic2.map((x) => x.port).sort()).toEqual(running.map((i) => i.port).sort());
    expect(traffic2.reduce((n, x) => n + x.weight, 0)).toBe(100);
    expect(await routePorts(t.team)).toEqual(running.map((i) => i.port).sort((a, b) => a - b));
    expect((await teamUnits(t.team)).map((u) => u.active)).toEqual(['active', 'active', 'active']);
    await cb.waitTerminal(502);
    expect(terminalOf(cb, 502).status).toBe('succeeded');
    console.log(`instance-model rolling x3: ${rolled} ms (${seen.requests} requests, ${seen.connectionErrors} connection errors)`);
  }, 60_000);
});
