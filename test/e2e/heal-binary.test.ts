import { readdir } from 'node:fs/promises';
/**
 * Drift healing of a binary app against real systemd and Caddy (resync 1 s): a killed process, a unit
 * stopped behind the operator's back, a removed unit file, a deleted route and edited upstreams are put
 * back within one resync; an instance the platform stopped stays stopped; units and routes the operator
 * does not own are never touched.
 */
import { rm, stat, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { routeId } from '../../src/core/identity.ts';
import { NO_UPSTREAM_BODY } from '../../src/drivers/caddy-routes.ts';
import { caddyApi, cleanupCaddyId, cleanupUnit, freePort, getTestHost, systemctlUser } from '../harness/index.ts';
import { docPath, dropFile, handYaml, mainPid, routeOf, unitDir, unitsOf } from './gitops.ts';
import { startTestOperator, waitFor } from './operator.ts';

const RESYNC_MS = 1_000;
/** What a heal may take on top of the resync period: a unit start and a health probe, on a busy machine. */
const HEAL_SLACK_MS = 1_500;

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

describe('drift healing: binary apps', () => {
  it('puts back killed processes, stopped units, removed unit files and Caddy routes; leaves platform-stopped instances and foreign things alone', async () => {
    const t = await startTestOperator({ resyncMs: RESYNC_MS });
    const host = getTestHost();
    const key = { team: t.team, env: 1, app: 1 };
    const [pa, pb] = [await freePort(), await freePort()];
    const domain = `${t.team}.heal.test`;

    // Things the operator does not own, created first: a unit, a crate-looking unit it cannot parse, and a route.
    const foreignUnit = `foreign-${t.team}.service`;
    const oddUnit = `crate-${t.team}-not-an-app.service`;
    for (const u of [foreignUnit, oddUnit]) {
      cleanupUnit(u);
      await writeFile(path.join(host.systemd.unitDir, u), `[Unit]\nDescription=not the operator's\n[Service]\nExecStart=/bin/sleep 3600\n`);
    }
    await systemctlUser(['daemon-reload']);
    await systemctlUser(['start', foreignUnit, oddUnit]);
    const foreignRouteId = `foreign-${t.team}`;
    cleanupCaddyId(foreignRouteId);
    const foreignRoute = { '@id': foreignRouteId, match: [{ host: [`${t.team}.foreign.test`] }], handle: [{ handler: 'static_response', body: 'foreign' }] };
    expect((await caddyApi('POST', `/config/apps/http/servers/${host.caddy.serverName}/routes`, foreignRoute)).status).toBe(200);

    await dropFile(docPath(t.config.stateDir, key), handYaml({ team: t.team, version: 'v1', deploymentId: '701', domain, instances: { a: { port: pa }, b: { port: pb } } }));
    expect((await t.settle(701)).status).toBe('succeeded');
    const unitOf = async (instance: string): Promise<string> => {
      // From the unit folder, not list-units: the manager may unload a unit it has no job for.
      const u = (await readdir(unitDir())).find((f) => f.startsWith(`crate-${t.team}:1:1:${instance}:`) && f.endsWith('.service'));
      if (!u) throw new Error(`no unit for ${instance}`);
      return u;
    };
    const ua = await unitOf('a');
    const ub = await unitOf('b');
    const serves = async (): Promise<boolean> => {
      const ports = new Set<number>();
      for (let i = 0; i < 4; i++) {
        const r = await t.viaCaddy(domain);
        if (r.status !== 200) return false;
        ports.add(Number((JSON.parse(r.text) as { instance: string }).instance));
      }
      return ports.size === 2;
    };
    const routePorts = async (): Promise<string[]> => ((await routeOf(key))?.handle?.[0]?.upstreams ?? []).map((u) => u.dial).sort();
    const routeIsRight = async (): Promise<boolean> => JSON.stringify(await routePorts()) === JSON.stringify([`127.0.0.1:${pa}`, `127.0.0.1:${pb}`].sort());
    expect(await serves()).toBe(true);

    const figures: Record<string, number> = {};
    const healed = async (what: string, drift: () => Promise<unknown>, ok: () => Promise<boolean>): Promise<void> => {
      await drift();
      const at = Date.now();
      await waitFor(`${what} healed`, ok, RESYNC_MS + HEAL_SLACK_MS + 5_000, 20);
      figures[what] = Date.now() - at;
    };
    const activeWithNewPid = (unit: string, old: number) => async (): Promise<boolean> => {
      const pid = await mainPid(unit);
      return pid > 0 && pid !== old && (await serves());
    };

    // A killed process: systemd's Restart=on-failure or the operator, whichever is first.
    const pidA = await mainPid(ua);
    await healed('SIGKILL of the main process', () => Promise.resolve(process.kill(pidA, 'SIGKILL')), activeWithNewPid(ua, pidA));

    // Stopped behind the operator's back (systemd does not restart a clean stop): only the operator heals it.
    const pidB = await mainPid(ub);
    await healed('systemctl --user stop', () => systemctlUser(['stop', ub]), activeWithNewPid(ub, pidB));

    // The unit file removed (and systemd told): re-rendered and running.
    const fileB = path.join(unitDir(), ub);
    await healed(
      'unit file removed',
      async () => {
        await rm(fileB);
        await systemctlUser(['daemon-reload']);
      },
      async () => {
        const back = await stat(fileB).then(() => true, () => false);
        return back && (await mainPid(ub)) > 0 && (await serves());
      },
    );

    // The route deleted through the admin API.
    await healed('route deleted', () => caddyApi('DELETE', `/id/${routeId(key)}`), async () => (await routeIsRight()) && (await serves()));

    // Upstreams edited: a wrong port, then a foreign upstream added beside the right ones.
    await healed('upstreams replaced', () => caddyApi('PATCH', `/id/${routeId(key)}/handle/0/upstreams`, [{ dial: '127.0.0.1:1' }]), async () => (await routeIsRight()) && (await serves()));
    await healed(
      'foreign upstream added',
      () => caddyApi('PATCH', `/id/${routeId(key)}/handle/0/upstreams`, [{ dial: `127.0.0.1:${pa}` }, { dial: `127.0.0.1:${pb}` }, { dial: '192.0.2.1:80' }]),
      routeIsRight,
    );
    await healed('extra host added', () => caddyApi('PATCH', `/id/${routeId(key)}/match/0/host`, [domain, `${t.team}.evil.test`]), async () => JSON.stringify((await routeOf(key))?.match?.[0]?.host) === JSON.stringify([domain]));

    // The platform stops instance b: it stays stopped through resyncs, and the route leaves it out.
    const stop = await t.api('POST', '/v1/app/stop', { app_id: 1, environment_id: 1, team_id: t.team, domain, callback_url: 'http://127.0.0.1:9/cb', instance_id: 'b' });
    expect(stop.status).toBe(202);
    expect((await t.settle(stop.body.deployment_id as string)).status).toBe('succeeded');
    const stoppedB = await unitOf('b');
    await sleep(RESYNC_MS * 2.5);
    expect((await unitsOf(key)).find((u) => u.unit === stoppedB)?.active).not.toBe('active');
    expect(await routePorts()).toEqual([`127.0.0.1:${pa}`]);
    // Even when someone starts it by hand, the platform's "stopped" wins at the next resync.
    await systemctlUser(['start', stoppedB]);
    await waitFor('hand-started b stopped again', async () => (await unitsOf(key)).find((u) => u.unit === stoppedB)?.active !== 'active', RESYNC_MS + HEAL_SLACK_MS + 5_000);
    const last = (await t.api('GET', '/v1/apps')).body.apps as { team_id: string; observed: { last_heal: { outcome: string; steps: string[] } | null } }[];
    expect(last.find((a) => a.team_id === t.team)?.observed.last_heal).toMatchObject({ outcome: 'healed' });

    // Nothing foreign was touched.
    const foreign = JSON.parse(String((await systemctlUser(['list-units', '--all', '--output=json', foreignUnit, oddUnit])).stdout)) as { unit: string; active: string }[];
    expect(foreign.map((u) => [u.unit, u.active]).sort()).toEqual([[foreignUnit, 'active'], [oddUnit, 'active']].sort());
    expect((await caddyApi('GET', `/id/${foreignRouteId}`)).body).toMatchObject({ handle: [{ body: 'foreign' }] });

    console.log(`heal figures (ms after the drift, resync ${RESYNC_MS} ms): ${JSON.stringify(figures)}`);
    for (const [what, ms] of Object.entries(figures)) expect(ms, what).toBeLessThanOrEqual(RESYNC_MS + HEAL_SLACK_MS);
  }, 60_000);
  it('every instance stopped by the platform: the domain answers 503 through resyncs, a start serves again', async () => {
    const t = await startTestOperator({ resyncMs: RESYNC_MS });
    const key = { team: t.team, env: 1, app: 2 };
    const domain = `${t.team}.allstopped.test`;
    await dropFile(docPath(t.config.stateDir, key), handYaml({ team: t.team, app: 2, version: 'v1', deploymentId: '702', domain, instances: { only: { port: await freePort() } } }));
    expect((await t.settle(702)).status).toBe('succeeded');
    const body = { app_id: 2, environment_id: 1, team_id: t.team, domain, callback_url: 'http://127.0.0.1:9/cb', instance_id: 'only' };
    const stop = await t.api('POST', '/v1/app/stop', body);
    expect((await t.settle(stop.body.deployment_id as string)).status).toBe('succeeded');
    expect(await t.viaCaddy(domain)).toMatchObject({ status: 503, text: NO_UPSTREAM_BODY });
    await sleep(RESYNC_MS * 2.5);
    expect((await unitsOf(key)).filter((u) => u.active === 'active')).toEqual([]);
    expect(await t.viaCaddy(domain)).toMatchObject({ status: 503 });
    const start = await t.api('POST', '/v1/app/start', body);
    expect((await t.settle(start.body.deployment_id as string)).status).toBe('succeeded');
    expect(JSON.parse((await t.viaCaddy(domain)).text)).toMatchObject({ version: 'v1' });
  }, 40_000);
});
