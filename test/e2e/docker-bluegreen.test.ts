/**
 * Blue/green of a Docker app (instance model) through the HTTP API against real dockerd and Caddy:
 * deploy v1, blue/green to v2 (Caddy serves v2, the v1 container stopped), a broken image that never
 * gets healthy is rolled back while v2 serves throughout (its container removed), each deployment
 * sends exactly one terminal callback, then delete leaves no container and no route.
 */
import { describe, expect, it } from 'vitest';
import { routeId } from '../../src/core/identity.ts';
import { caddyApi, dockerApi, freePort, getTestHost } from '../harness/index.ts';
import { startCallbackReceiver, terminalOf } from './callbacks.ts';
import { e2eDeadlines, startTestOperator } from './operator.ts';

interface Container {
  Id: string;
  State: string;
  Labels: Record<string, string>;
}

async function containers(team: string): Promise<Container[]> {
  const filters = encodeURIComponent(JSON.stringify({ label: [`crate.team=${team}`] }));
  return (await dockerApi('GET', `/containers/json?all=1&filters=${filters}`)).body as Container[];
}

describe('docker blue/green end to end', () => {
  it('deploys, switches, rolls back a broken image and deletes', async () => {
    const t = await startTestOperator({ deadlines: { ...e2eDeadlines, healthyMs: 4_000 } });
    const cb = await startCallbackReceiver();
    const host = getTestHost();
    const [blue, green] = [await freePort(), await freePort()];
    const domain = `${t.team}.dbg.test`;
    const [b, g] = [`${t.team}-b`, `${t.team}-g`];
    const body = (id: number, tag: string) => ({
      app_id: 1,
      environment_id: 1,
      team_id: t.team,
      deployment_id: id,
      deployment_strategy: 'blue_green',
      domain,
      image: host.docker.images.v1.split(':')[0],
      image_tag: tag,
      callback_url: cb.url(String(id)),
      env_vars: { GREETING: 'hello' },
      health_check_path: '/healthz',
      target_version: tag,
      slots: { blue: { instance_id: b, port: blue }, green: { instance_id: g, port: green } },
    });

    const t0 = Date.now();
    expect((await t.api('POST', '/v1/app/instance/docker/deploy', body(201, 'v1'))).status).toBe(202);
    const s1 = await t.settle(201);
    const d1 = Date.now() - t0;
    expect(s1.status).toBe('succeeded');
    expect(JSON.parse((await t.viaCaddy(domain)).text)).toMatchObject({ version: 'v1' });
    const i1 = (await t.api('GET', '/v1/app/instance/deploy/201/status')).body;
    expect(i1.traffic).toEqual([{ instance_id: b, slot: 'blue', port: blue, weight: 100 }]);
    expect(i1.instances).toEqual([{ instance_id: b, slot: 'blue', port: blue, version: 'v1', state: 'running', healthy: true }]);

    const t1 = Date.now();
    expect((await t.api('POST', '/v1/app/instance/docker/deploy', body(202, 'v2'))).status).toBe(202);
    const s2 = await t.settle(202);
    const d2 = Date.now() - t1;
    expect(s2.status).toBe('succeeded');
    expect(JSON.parse((await t.viaCaddy(domain)).text)).toMatchObject({ version: 'v2' });
    const names = (s2.steps as { name: string; status: string }[]).map((s) => s.name);
    expect(names).toEqual([`pull image crate-test/app:v2`, `start ${g} v2 on :${green}`, `wait until ${g} is healthy`, `route ${domain} → :${green}`, `drain :${blue}`, `stop ${b} v1 on :${blue}`]);
    expect((s2.steps as { status: string }[]).every((s) => s.status === 'succeeded')).toBe(true);
    const i2 = (await t.api('GET', '/v1/app/instance/deploy/202/status')).body;
    expect(i2.traffic).toEqual([{ instance_id: g, slot: 'green', port: green, weight: 100 }]);
    expect(i2.instances).toEqual([
      { instance_id: b, slot: 'blue', port: blue, version: 'v1', state: 'stopped', healthy: false },
      { instance_id: g, slot: 'green', port: green, version: 'v2', state: 'running', healthy: true },
    ]);
    const afterV2 = await containers(t.team);
    expect(afterV2.filter((c) => c.State === 'running').map((c) => c.Labels['crate.version'])).toEqual(['v2']);
    expect(afterV2.find((c) => c.Labels['crate.version'] === 'v1')?.State).toBe('exited');

    // The broken image never gets healthy: rolled back, v2 serves throughout, its container removed.
    const t2 = Date.now();
    expect((await t.api('POST', '/v1/app/instance/docker/deploy', body(203, 'broken'))).status).toBe(202);
    let served = 0;
    const watcher = (async () => {
      for (;;) {
        const s = (await t.api('GET', '/v1/app/deploy/203/status')).body.status as string;
        if (s !== 'pending' && s !== 'in_progress') return;
        const r = await t.viaCaddy(domain);
        expect(r.status).toBe(200);
        expect(JSON.parse(r.text)).toMatchObject({ version: 'v2' });
        served += 1;
      }
    })();
    const s3 = await t.settle(203);
    await watcher;
    const d3 = Date.now() - t2;
    expect(s3.status).toBe('rolled_back');
    expect(s3.error).toMatchObject({ code: 'E_HEALTH_TIMEOUT' });
    expect(String((s3.error as { message: string }).message)).toContain('wait until');
    expect(served).toBeGreaterThan(0);
    expect(JSON.parse((await t.viaCaddy(domain)).text)).toMatchObject({ version: 'v2' });
    const afterBroken = await containers(t.team);
    expect(afterBroken.some((c) => c.Labels['crate.version'] === 'broken')).toBe(false);
    expect(afterBroken.filter((c) => c.State === 'running').map((c) => c.Labels['crate.version'])).toEqual(['v2']);

    // One terminal callback each, with the documented status document.
    await cb.waitTerminal(203);
    for (const [id, status] of [[201, 'succeeded'], [202, 'succeeded'], [203, 'rolled_back']] as const) {
      await cb.waitTerminal(id);
      expect(terminalOf(cb, id).status).toBe(status);
    }
    const final203 = cb.of(203).find((c) => c.body.status === 'rolled_back')?.body;
    expect(final203).toMatchObject({ deployment_id: '203', team_id: t.team, kind: 'docker', strategy: 'blue_green', target_version: 'broken', error: { code: 'E_HEALTH_TIMEOUT' } });
    expect(cb.of(202).every((c) => c.path === '/cb/202')).toBe(true);

    // Delete: containers and route gone.
    const del = await t.api('POST', '/v1/app/delete', { app_id: 1, environment_id: 1, team_id: t.team, domain, callback_url: cb.url('del'), instance_ids: [b, g] });
    expect(del.status).toBe(202);
    const sd = await t.settle(del.body.deployment_id as string);
    expect(sd.status).toBe('succeeded');
    expect(await containers(t.team)).toEqual([]);
    expect((await caddyApi('GET', `/id/${routeId({ team: t.team, env: 1, app: 1 })}`)).status).toBe(404);
    console.log(`docker blue/green: v1 ${d1} ms, v2 ${d2} ms, broken rolled back ${d3} ms`);
  }, 60_000);
});
