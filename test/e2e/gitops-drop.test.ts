/**
 * GitOps drops against real systemd and Caddy: a YAML file put under `state/desired/` by hand is
 * deployed without any API call; editing it (new version, new deployment id) rolls the new version
 * out; deleting it removes the app's units, route and files.
 */
import { rm } from 'node:fs/promises';
import { existsSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { appDir } from '../../src/drivers/layout.ts';
import { pino } from 'pino';
import { startOperator } from '../../src/operator.ts';
import { cleanupAfter, freePort, systemdEnv } from '../harness/index.ts';
import { docPath, dropFile, handYaml, routeOf, unitsOf } from './gitops.ts';
import { startTestOperator, waitFor } from './operator.ts';

describe('GitOps drops', () => {
  it('a dropped file deploys, an edit converges, a deletion removes everything', async () => {
    const t = await startTestOperator({ resyncMs: 1_000 });
    const key = { team: t.team, env: 1, app: 1 };
    const port = await freePort();
    const domain = `${t.team}.drop.test`;
    const file = docPath(t.config.stateDir, key);
    const version = async (): Promise<string | undefined> => {
      const r = await t.viaCaddy(domain);
      return r.status === 200 ? (JSON.parse(r.text) as { version: string }).version : undefined;
    };

    const dropped = Date.now();
    await dropFile(file, handYaml({ team: t.team, version: 'v1', deploymentId: '501', domain, instances: { web: { port } } }));
    expect(await waitFor('v1 served through Caddy', async () => (await version()) === 'v1', 20_000)).toBe(true);
    const dropToServe = Date.now() - dropped;
    // The file names a deployment the operator never saw: it is recorded and succeeds like an API deploy.
    expect((await t.settle(501)).status).toBe('succeeded');

    const edited = Date.now();
    await dropFile(file, handYaml({ team: t.team, version: 'v2', deploymentId: '502', domain, instances: { web: { port } } }));
    expect(await waitFor('v2 served through Caddy', async () => (await version()) === 'v2', 20_000)).toBe(true);
    const editToServe = Date.now() - edited;
    const s2 = await t.settle(502);
    expect(s2.status).toBe('succeeded');
    await waitFor('one unit left', async () => (await unitsOf(key)).length === 1);
    expect((await unitsOf(key))[0]?.active).toBe('active');

    const removed = Date.now();
    await rm(file);
    await waitFor('units gone', async () => (await unitsOf(key)).length === 0, 20_000);
    await waitFor('route gone', async () => (await routeOf(key)) === undefined);
    await waitFor('release files gone', () => Promise.resolve(!existsSync(appDir(t.config.appsDir, key))));
    const removeToGone = Date.now() - removed;
    expect((await t.viaCaddy(domain)).text).toBe('');
    // The app stays removed through later resyncs.
    await new Promise((r) => setTimeout(r, 1_500));
    expect(await unitsOf(key)).toEqual([]);
    console.log(`gitops figures: drop→served ${dropToServe} ms, edit→served ${editToServe} ms, delete→removed ${removeToGone} ms`);
  }, 60_000);
  it('a file deleted while the operator was down: the app is removed at the next start', async () => {
    const t = await startTestOperator({ resyncMs: 1_000 });
    const key = { team: t.team, env: 1, app: 2 };
    const domain = `${t.team}.away.test`;
    const file = docPath(t.config.stateDir, key);
    await dropFile(file, handYaml({ team: t.team, app: 2, version: 'v1', deploymentId: '511', domain, instances: { web: { port: await freePort() } } }));
    expect((await t.settle(511)).status).toBe('succeeded');
    await t.op.stop();
    await rm(file);
    expect((await unitsOf(key)).filter((u) => u.active === 'active')).toHaveLength(1);
    const again = await startOperator(t.config, { systemdEnv: systemdEnv(), listen: false, logger: pino({ level: process.env.CRATE_LOG_LEVEL ?? 'warn' }) });
    cleanupAfter(() => again.stop());
    // Generous under a loaded 2-core CI machine: it is usually gone within ~2 s.
    await waitFor('units gone', async () => (await unitsOf(key)).length === 0, 40_000);
    await waitFor('route gone', async () => (await routeOf(key)) === undefined);
  }, 70_000);
});
