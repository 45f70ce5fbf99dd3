/**
 * Stop, restart and start of one instance through the HTTP API against real components, binary
 * (systemd) and Docker: a stopped instance leaves the route and stays stopped through healing (past a
 * resync); restart gives it a new process (PID / container id); start brings it back into the route.
 * Each request gets an operator deployment id and exactly one terminal callback.
 */
import { describe, expect, it } from 'vitest';
import { unitName } from '../../src/core/identity.ts';
import { freePort, getTestHost } from '../harness/index.ts';
import { startCallbackReceiver, terminalOf, type CallbackReceiver } from './callbacks.ts';
import { activeState, mainPid, routePorts, teamContainers, teamUnitFiles, teamUnits } from './host-view.ts';
import { startTestOperator, type TestOperator } from './operator.ts';

type Instance = { instance_id: string; port: number; state: string };

/** Send start/stop/restart for one instance and wait until it finished; returns its status. */
async function act(t: TestOperator, cb: CallbackReceiver, action: 'start' | 'stop' | 'restart', instance: string, domain: string): Promise<Record<string, unknown>> {
  const r = await t.api('POST', `/v1/app/${action}`, { app_id: 1, environment_id: 1, team_id: t.team, domain, instance_id: instance, callback_url: cb.url(action) });
  expect(r.status).toBe(202);
  const id = r.body.deployment_id as string;
  expect(typeof id).toBe('string');
  const s = await t.settle(id);
  expect(s.status).toBe('succeeded');
  await cb.waitTerminal(id);
  expect(terminalOf(cb, id).status).toBe('succeeded');
  return s;
}

describe('start / stop / restart of one instance end to end', () => {
  it('binary: stop survives healing, restart changes the PID, start brings it back', async () => {
    const t = await startTestOperator({ resyncMs: 1_000 });
    const cb = await startCallbackReceiver();
    const host = getTestHost();
    const domain = `${t.team}.act.test`;
    const [a, b] = [`${t.team}-a`, `${t.team}-b`];
    const ports = [await freePort(), await freePort()];
    const r = await t.api('POST', '/v1/app/binary/deploy', {
      app_id: 1,
      environment_id: 1,
      team_id: t.team,
      deployment_id: 701,
      deployment_strategy: 'rolling',
      domain,
      asset_url: `${host.assets.baseUrl}/app-v1.tar.gz`,
      callback_url: cb.url('deploy'),
      env_vars: {},
      health_check_path: '/healthz',
      instances: { [a]: { port: ports[0] }, [b]: { port: ports[1] } },
    });
    expect(r.status).toBe(202);
    expect((await t.settle(701)).status).toBe('succeeded');
    const units = (await teamUnits(t.team)).map((u) => u.unit);
    const unitOf = (i: string): string => units.find((u) => u.startsWith(unitName({ team: t.team, env: 1, app: 1 }, i).replace(/\.service$/, ':'))) as string;
    expect(unitOf(a)).toBeDefined();

    // Stop b: out of the route, unit inactive, and still so after more than one resync.
    const stopped = await act(t, cb, 'stop', b, domain);
    expect((stopped.instances as Instance[]).find((i) => i.instance_id === b)?.state).toBe('stopped');
    expect(await routePorts(t.team)).toEqual([ports[0]]);
    await new Promise((res) => setTimeout(res, 2_500));
    // (A stopped unit may be unloaded by systemd, so list-units no longer shows it: ask for it by name.)
    expect(await activeState(unitOf(b))).toBe('inactive');
    expect(await activeState(unitOf(a))).toBe('active');
    expect(await teamUnitFiles(t.team)).toHaveLength(2);
    expect(await routePorts(t.team)).toEqual([ports[0]]);

    // Restart a: a new process on the same port.
    const pid = await mainPid(unitOf(a));
    expect(pid).toBeGreaterThan(0);
    await act(t, cb, 'restart', a, domain);
    const pid2 = await mainPid(unitOf(a));
    expect(pid2).toBeGreaterThan(0);
    expect(pid2).not.toBe(pid);
    expect(JSON.parse((await t.viaCaddy(domain)).text)).toMatchObject({ version: 'v1', pid: pid2 });
    // The restart survives healing too: b stays stopped, a keeps its new PID.
    await new Promise((res) => setTimeout(res, 1_500));
    expect(await mainPid(unitOf(a))).toBe(pid2);
    expect(await activeState(unitOf(b))).toBe('inactive');

    // Start b: back in the route.
    await act(t, cb, 'start', b, domain);
    expect((await teamUnits(t.team)).map((u) => u.active)).toEqual(['active', 'active']);
    expect(await routePorts(t.team)).toEqual([...ports].sort((x, y) => x - y));
  }, 60_000);

  it('docker: stop, restart (new container id), start', async () => {
    const t = await startTestOperator({ resyncMs: 1_000 });
    const cb = await startCallbackReceiver();
    const image = getTestHost().docker.images.v1.split(':')[0] as string;
    const domain = `${t.team}.dact.test`;
    const [a, b] = [`${t.team}-a`, `${t.team}-b`];
    const ports = [await freePort(), await freePort()];
    const r = await t.api('POST', '/v1/app/docker/deploy', {
      app_id: 1,
      environment_id: 1,
      team_id: t.team,
      deployment_id: 711,
      deployment_strategy: 'rolling',
      domain,
      image,
      image_tag: 'v1',
      callback_url: cb.url('deploy'),
      health_check_path: '/healthz',
      instances: { [a]: { port: ports[0] }, [b]: { port: ports[1] } },
    });
    expect(r.status).toBe(202);
    expect((await t.settle(711)).status).toBe('succeeded');
    const byInstance = async (i: string) => (await teamContainers(t.team)).find((c) => c.Labels['crate.instance'] === i);

    await act(t, cb, 'stop', b, domain);
    await new Promise((res) => setTimeout(res, 2_500));
    expect((await byInstance(b))?.State).toBe('exited');
    expect(await routePorts(t.team)).toEqual([ports[0]]);

    const before = (await byInstance(a))?.Id;
    await act(t, cb, 'restart', a, domain);
    const after = await byInstance(a);
    expect(after?.State).toBe('running');
    expect(after?.Id).not.toBe(before);
    expect(JSON.parse((await t.viaCaddy(domain)).text)).toMatchObject({ version: 'v1' });

    await act(t, cb, 'start', b, domain);
    expect((await byInstance(b))?.State).toBe('running');
    expect(await routePorts(t.team)).toEqual([...ports].sort((x, y) => x - y));
    expect((await teamContainers(t.team)).length).toBe(2);
  }, 60_000);
});
