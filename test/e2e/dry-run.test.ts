/**
 * Dry runs against a real operator (systemd, Docker, Caddy): `POST /v1/plan` with a document and
 * `?dry_run=true` on a mutating endpoint answer the plan the reconciler would carry out and change
 * nothing (no unit, route, document, record); `planOffline` (the `diff` command) sees what a pass sees.
 */
import { existsSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import type { DesiredApp } from '../../src/desired/document.ts';
import { parseDesiredYaml } from '../../src/desired/document.ts';
import { planOffline } from '../../src/reconciler/plan-host.ts';
import { freePort, systemctlUser, systemdEnv } from '../harness/index.ts';
import { docPath, dropFile, handYaml, routeOf, unitsOf } from './gitops.ts';
import { startTestOperator } from './operator.ts';

interface PlanAnswer {
  mode: string;
  deployment_id: string | null;
  plan: { kind: string; steps: string[]; diff: unknown[]; notes: string[] };
  diff: unknown[];
}

describe('dry runs against a real operator', () => {
  it('POST /v1/plan and ?dry_run=true answer the plan and change nothing; the plan follows the host', async () => {
    // A long resync: drift made by the test stays until the test looks at it.
    const t = await startTestOperator({ resyncMs: 600_000 });
    const key = { team: t.team, env: 1, app: 1 };
    const port = await freePort();
    const domain = `${t.team}.dry.test`;
    const doc = (version: string, id: string): DesiredApp => {
      const r = parseDesiredYaml(handYaml({ team: t.team, version, deploymentId: id, domain, instances: { web: { port } } }));
      if (!r.ok) throw new Error(r.error);
      return r.doc;
    };
    const nothingChanged = async (id: string): Promise<void> => {
      expect(await unitsOf(key)).toEqual([]);
      expect(await routeOf(key)).toBeUndefined();
      expect(existsSync(docPath(t.config.stateDir, key))).toBe(false);
      expect((await t.api('GET', `/v1/app/deploy/${id}/status`)).status).toBe(404);
      expect(t.op.store.get(key)).toBeUndefined();
    };

    // A new app: a deployment of the document's id, every step named.
    const first = await t.api('POST', '/v1/plan', doc('v1', '901'));
    expect(first.status).toBe(200);
    const p1 = first.body as unknown as PlanAnswer;
    expect([p1.mode, p1.deployment_id, p1.plan.kind]).toEqual(['deploy', '901', 'deploy']);
    expect(p1.plan.steps).toEqual(['fetch release v1', `start web v1 on :${port}`, `wait until web on :${port} is healthy`, `route ${domain} → :${port}`]);
    await nothingChanged('901');

    // The same through a mutating endpoint's dry run.
    const body = { app_id: 1, environment_id: 1, team_id: t.team, deployment_id: 902, deployment_strategy: 'rolling', domain, asset_url: doc('v1', '1').spec.binary?.asset_url, callback_url: 'http://127.0.0.1:9/cb', env_vars: {}, health_check_path: '/healthz', instances: { web: { port } } };
    const dry = await t.api('POST', '/v1/app/binary/deploy?dry_run=true', body);
    expect(dry.status).toBe(200);
    expect(dry.body).toMatchObject({ dry_run: true, plan: { kind: 'deploy' } });
    expect((dry.body.plan as { steps: string[] }).steps).toContain(`route ${domain} → :${port}`);
    await nothingChanged('902');

    // Deployed for real: the same document plans nothing; a new version with a new id is a rollout;
    // with the id already used it would only heal (the new revision waits for a deployment).
    await dropFile(docPath(t.config.stateDir, key), handYaml({ team: t.team, version: 'v1', deploymentId: '903', domain, instances: { web: { port } } }));
    expect((await t.settle(903)).status).toBe('succeeded');
    const same = (await t.api('POST', '/v1/plan', doc('v1', '903'))).body as unknown as PlanAnswer;
    expect([same.mode, same.plan.kind, same.plan.steps, same.plan.diff, same.diff]).toEqual(['heal', 'noop', [], [], []]);
    const v2 = (await t.api('POST', '/v1/plan', doc('v2', '904'))).body as unknown as PlanAnswer;
    expect([v2.mode, v2.plan.kind]).toEqual(['deploy', 'deploy']);
    expect(v2.plan.steps[0]).toBe('fetch release v2');
    expect(v2.diff).toHaveLength(3);
    expect(v2.diff).toEqual(expect.arrayContaining([{ op: 'replace', path: '/spec/version', value: 'v2' }, { op: 'replace', path: '/deployment/id', value: '904' }]));
    const sameId = (await t.api('POST', '/v1/plan', doc('v2', '903'))).body as unknown as PlanAnswer;
    expect([sameId.mode, sameId.plan.steps]).toEqual(['heal', []]);
    expect(sameId.plan.notes.join()).toMatch(/waits for a deployment/);

    // Drift: the dry run shows the heal, and heals nothing; the offline planner agrees.
    const unit = (await unitsOf(key))[0]?.unit as string;
    await systemctlUser(['stop', unit]);
    const heal = (await t.api('POST', '/v1/plan', doc('v1', '903'))).body as unknown as PlanAnswer;
    expect([heal.mode, heal.plan.kind, heal.plan.steps]).toEqual(['heal', 'heal', [`start web v1 on :${port}`, `wait until web on :${port} is healthy`]]);
    const offline = await planOffline(t.config, { systemdEnv: systemdEnv() });
    const mine = offline.plans.find((a) => a.key.team === t.team && a.key.app === 1);
    expect([mine?.mode, mine?.plan.actions.map((a) => a.name)]).toEqual(['heal', heal.plan.steps]);
    expect(offline.unavailable).toEqual({});
    expect((await unitsOf(key)).find((u) => u.unit === unit)?.active).not.toBe('active');
    expect(await t.api('GET', '/v1/app/deploy/904/status')).toMatchObject({ status: 404 });
  }, 60_000);
});
