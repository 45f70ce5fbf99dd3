/**
 * Drift healing of a Docker app against real dockerd and Caddy (resync 1 s): a container stopped or
 * removed behind the operator's back is put back within one resync; an instance the platform stopped
 * stays stopped; containers the operator does not own (no labels, or labels of an app without a
 * document) are never touched.
 */
import { describe, expect, it } from 'vitest';
import { LABELS } from '../../src/core/identity.ts';
import { cleanupContainer, dockerApi, freePort, getTestHost, uniqueName } from '../harness/index.ts';
import { containersOf, docPath, dropFile, handYaml, routeOf } from './gitops.ts';
import { startTestOperator, waitFor } from './operator.ts';

const RESYNC_MS = 1_000;
/** What a heal may take on top of the resync period: a container start and a health probe, on a busy machine. */
const HEAL_SLACK_MS = 2_000;

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

describe('drift healing: docker apps', () => {
  it('puts back stopped and removed containers; leaves platform-stopped instances and foreign containers alone', async () => {
    const t = await startTestOperator({ resyncMs: RESYNC_MS });
    const host = getTestHost();
    const key = { team: t.team, env: 1, app: 1 };
    const [pa, pb] = [await freePort(), await freePort()];
    const domain = `${t.team}.dheal.test`;

    // Containers the operator does not own: one without labels, one labelled for an app that has no document.
    const foreign = uniqueName('foreign');
    const orphan = uniqueName('orphan');
    for (const [name, labels] of [
      [foreign, {}],
      [orphan, { [LABELS.team]: t.team, [LABELS.env]: '1', [LABELS.app]: '9', [LABELS.instance]: 'x' }],
    ] as const) {
      cleanupContainer(name);
      const c = await dockerApi('POST', `/containers/create?name=${name}`, { Image: host.docker.busyboxImage, Cmd: ['/bin/sleep', '3600'], Labels: labels });
      expect(c.status).toBe(201);
      expect((await dockerApi('POST', `/containers/${name}/start`)).status).toBe(204);
    }

    await dropFile(docPath(t.config.stateDir, key), handYaml({ team: t.team, runtime: 'docker', version: 'v1', deploymentId: '801', domain, instances: { a: { port: pa }, b: { port: pb } } }));
    expect((await t.settle(801, 60_000)).status).toBe('succeeded');
    const byInstance = async (instance: string) => (await containersOf(key)).find((c) => c.Labels[LABELS.instance] === instance);
    const serves = async (): Promise<boolean> => {
      const seen = new Set<string>();
      for (let i = 0; i < 6; i++) {
        const r = await t.viaCaddy(domain);
        if (r.status !== 200) return false;
        seen.add((JSON.parse(r.text) as { instance: string }).instance);
      }
      return seen.size === 2;
    };
    await waitFor('both instances serve', serves);

    const figures: Record<string, number> = {};
    const healed = async (what: string, drift: () => Promise<unknown>, ok: () => Promise<boolean>): Promise<void> => {
      await drift();
      const at = Date.now();
      await waitFor(`${what} healed`, ok, RESYNC_MS + HEAL_SLACK_MS + 5_000, 20);
      figures[what] = Date.now() - at;
    };

    const a = await byInstance('a');
    await healed(
      'docker stop',
      () => dockerApi('POST', `/containers/${a?.Id}/stop?t=1`),
      async () => (await byInstance('a'))?.State === 'running' && (await serves()),
    );
    const b = await byInstance('b');
    await healed(
      'container removed',
      () => dockerApi('DELETE', `/containers/${b?.Id}?force=true`),
      async () => {
        const now = await byInstance('b');
        return now !== undefined && now.Id !== b?.Id && now.State === 'running' && (await serves());
      },
    );

    // The platform stops instance b: it stays stopped through resyncs.
    const stop = await t.api('POST', '/v1/app/stop', { app_id: 1, environment_id: 1, team_id: t.team, domain, callback_url: 'http://127.0.0.1:9/cb', instance_id: 'b' });
    expect(stop.status).toBe(202);
    expect((await t.settle(stop.body.deployment_id as string, 60_000)).status).toBe('succeeded');
    await sleep(RESYNC_MS * 2.5);
    expect((await byInstance('b'))?.State).not.toBe('running');
    expect((await routeOf(key))?.handle?.[0]?.upstreams).toEqual([{ dial: `127.0.0.1:${pa}` }]);
    expect((await t.viaCaddy(domain)).status).toBe(200);

    // Nothing foreign was touched.
    for (const name of [foreign, orphan]) {
      const c = await dockerApi('GET', `/containers/${name}/json`);
      expect(c.status, name).toBe(200);
      expect((c.body as { State: { Running: boolean; StartedAt: string } }).State.Running, name).toBe(true);
    }

    console.log(`docker heal figures (ms after the drift, resync ${RESYNC_MS} ms): ${JSON.stringify(figures)}`);
    for (const [what, ms] of Object.entries(figures)) expect(ms, what).toBeLessThanOrEqual(RESYNC_MS + HEAL_SLACK_MS);
  }, 90_000);
});
