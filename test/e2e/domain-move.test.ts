/**
 * `POST /v1/app/domain/update` end to end against real Caddy: 200 moves the route (the new domain
 * serves, the old one no longer does, and healing keeps it so: the document moved too), 404 when the
 * app has no route for `old_domain`, 409 when another app has the target domain, 400 for another
 * server id, and 503 from an operator whose Caddy admin API does not answer.
 */
import { describe, expect, it } from 'vitest';
import { freePort, getTestHost } from '../harness/index.ts';
import { routeOf } from './host-view.ts';
import { startTestOperator, type TestOperator } from './operator.ts';

async function deploy(t: TestOperator, app: number, id: number, domain: string, port: number): Promise<void> {
  const r = await t.api('POST', '/v1/app/binary/deploy', {
    app_id: app,
    environment_id: 1,
    team_id: t.team,
    deployment_id: id,
    deployment_strategy: 'rolling',
    domain,
    asset_url: `${getTestHost().assets.baseUrl}/app-v1.tar.gz`,
    callback_url: 'http://127.0.0.1:9/cb',
    env_vars: {},
    health_check_path: '/healthz',
    instances: { [`${t.team}-${app}`]: { port } },
  });
  expect(r.status).toBe(202);
  expect((await t.settle(id)).status).toBe('succeeded');
}

describe('domain move end to end', () => {
  it('moves the route (200) and answers 404, 409, 400 and 503', async () => {
    const t = await startTestOperator({ resyncMs: 1_000 });
    const [d1, d2, other] = [`${t.team}.one.test`, `${t.team}.two.test`, `${t.team}.other.test`];
    await deploy(t, 1, 801, d1, await freePort());
    await deploy(t, 2, 802, other, await freePort());
    const move = (body: Record<string, unknown>) => t.api('POST', '/v1/app/domain/update', { app_id: 1, environment_id: 1, team_id: t.team, server_id: 'test-host', ...body });

    const ok = await move({ old_domain: d1, new_domain: d2 });
    expect(ok.status).toBe(200);
    expect(ok.body).toMatchObject({ status: 'updated', old_domain: d1, domain: d2 });
    // Served at once and from then on (no heal rewrites the old domain in between: one route writer).
    for (let i = 0; i < 10; i++) expect(JSON.parse((await t.viaCaddy(d2)).text)).toMatchObject({ version: 'v1' });
    expect((await t.viaCaddy(d1)).text).toBe('');
    expect(JSON.stringify(await routeOf(t.team, 1, 1))).toContain(d2);
    // The document moved with the route: healing (past a resync) keeps the new domain.
    await new Promise((res) => setTimeout(res, 2_000));
    expect(JSON.stringify(await routeOf(t.team, 1, 1))).toContain(d2);
    expect(JSON.stringify(await routeOf(t.team, 1, 1))).not.toContain(d1);
    // The same move again is a no-op success.
    expect((await move({ old_domain: d1, new_domain: d2 })).status).toBe(200);

    // 404: the app's route does not serve old_domain; an app without a route at all.
    const wrongOld = await move({ old_domain: `${t.team}.nowhere.test`, new_domain: `${t.team}.three.test` });
    expect(wrongOld.status).toBe(404);
    expect(wrongOld.body).toMatchObject({ error: { code: 'E_ROUTE_NOT_FOUND' } });
    const noApp = await t.api('POST', '/v1/app/domain/update', { app_id: 3, environment_id: 1, team_id: t.team, server_id: 'test-host', old_domain: d1, new_domain: `${t.team}.four.test` });
    expect(noApp.status).toBe(404);

    // 409: another app serves the target domain; nothing changed.
    const clash = await move({ old_domain: d2, new_domain: other });
    expect(clash.status).toBe(409);
    expect(clash.body).toMatchObject({ error: { code: 'E_DOMAIN_EXISTS' } });
    expect(JSON.parse((await t.viaCaddy(d2)).text)).toMatchObject({ version: 'v1' });

    // 400: a request for another server.
    const elsewhere = await move({ old_domain: d2, new_domain: `${t.team}.five.test`, server_id: 'another-host' });
    expect(elsewhere.status).toBe(400);

    // 503: an operator whose Caddy admin API is dead (nothing listens on that port).
    const dead = await startTestOperator({ caddyAdmin: `http://127.0.0.1:${await freePort()}` });
    const down = await dead.api('POST', '/v1/app/domain/update', { app_id: 1, environment_id: 1, team_id: dead.team, server_id: 'test-host', old_domain: d2, new_domain: `${t.team}.six.test` });
    expect(down.status).toBe(503);
    expect(down.body).toMatchObject({ error: { code: 'E_CADDY_UNAVAILABLE' } });
    // And the route of the live operator is untouched.
    expect(JSON.parse((await t.viaCaddy(d2)).text)).toMatchObject({ version: 'v1' });
  }, 60_000);
});
