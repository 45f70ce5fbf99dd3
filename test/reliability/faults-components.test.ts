/**
 * Faults of the components the operator drives, each against a real operator:
 *
 * - Caddy killed (SIGKILL) in the middle of a blue/green deploy, before the traffic switch, and
 *   restarted from its boot config with no routes (a private Caddy: the shared one is never touched): the
 *   deployment fails with E_CADDY_UNAVAILABLE (no traffic switch happened), and once Caddy is back the
 *   operator rebuilds its server and the app's route without being asked; the route is whole (every
 *   upstream answers) and a new deployment succeeds.
 * - dockerd unreachable (the operator talks to it through a socket proxy the test takes down, cutting
 *   every open connection): a Docker deployment waits, `pending` with error E_DOCKER_UNAVAILABLE and
 *   a phase naming Docker; past the deployment deadline it fails with that code; /healthz says so; a
 *   running container is left exactly as it was (same id, still serving); a binary deploy meanwhile
 *   succeeds; one waiting when Docker comes back completes by itself.
 * - systemctl failing (XDG_RUNTIME_DIR leads to no user manager): a binary deployment waits with
 *   E_SYSTEMD_UNAVAILABLE, /healthz says so, a running unit keeps its process, a Docker deploy
 *   meanwhile succeeds; once systemd is reachable again the waiting deployment completes.
 */
import { mkdir, rename, rm, symlink } from 'node:fs/promises';
import { connect, createServer, type Socket } from 'node:net';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { routeId } from '../../src/core/identity.ts';
import { startCaddy } from '../../src/host/caddy.ts';
import { requireBinary, spawnComponent, stopComponent, systemPath, waitReady } from '../../src/host/process.ts';
import { pingCaddy } from '../../src/host/caddy.ts';
import { cleanupAfter, dockerApi, freePort, getTestHost, httpGet, systemctlUser, systemdEnv, tempDir, waitFor } from '../harness/index.ts';
import { e2eDeadlines, startTestOperator, type TestOperator } from '../e2e/operator.ts';
import { report } from './report.ts';

/** Point the symlink `link` at `target` atomically. */
async function repoint(link: string, target: string): Promise<void> {
  const tmp = `${link}.tmp`;
  await rm(tmp, { force: true });
  await symlink(target, tmp);
  await rename(tmp, link);
}

/**
 * A unix-socket proxy to `target` at `at`: `down()` closes the listener, removes the socket file and
 * cuts every open connection (a stopped daemon, as clients see it); `up()` listens again.
 */
async function socketProxy(at: string, target: string): Promise<{ path: string; down(): Promise<void>; up(): void }> {
  const open = new Set<Socket>();
  const server = createServer((client) => {
    const upstream = connect(target);
    open.add(client).add(upstream);
    const drop = (): void => {
      client.destroy();
      upstream.destroy();
      open.delete(client);
      open.delete(upstream);
    };
    client.on('error', drop).on('close', drop);
    upstream.on('error', drop).on('close', drop);
    client.pipe(upstream).pipe(client);
  });
  const listen = (): Promise<void> => new Promise((resolve, reject) => server.once('error', reject).listen(at, () => resolve()));
  await listen();
  const down = async (): Promise<void> => {
    await new Promise<void>((resolve) => {
      server.close(() => resolve());
      for (const s of open) s.destroy();
      open.clear();
    });
    await rm(at, { force: true });
  };
  cleanupAfter(down);
  return { path: at, down, up: () => void listen() };
}

function binaryBody(t: TestOperator, app: number, id: number, version: string, ports: [number, number], env: Record<string, string> = {}): Record<string, unknown> {
  return {
    team_id: t.team,
    environment_id: 1,
    app_id: app,
    deployment_id: id,
    deployment_strategy: 'blue_green',
    domain: `a${app}.${t.team}.faults.test`,
    asset_url: `${getTestHost().assets.baseUrl}/app-${version}.tar.gz`,
    callback_url: 'http://127.0.0.1:9/cb',
    env_vars: env,
    health_check_path: '/healthz',
    target_version: version,
    slots: { blue: { instance_id: `b${app}`, port: ports[0] }, green: { instance_id: `g${app}`, port: ports[1] } },
  };
}

function dockerBody(t: TestOperator, app: number, id: number, port: number): Record<string, unknown> {
  return {
    team_id: t.team,
    environment_id: 1,
    app_id: app,
    deployment_id: id,
    deployment_strategy: 'recreate',
    domain: `a${app}.${t.team}.faults.test`,
    callback_url: 'http://127.0.0.1:9/cb',
    env_vars: {},
    image: 'crate-test/app',
    image_tag: 'v1',
    target_version: 'v1',
    health_check_path: '/healthz',
    slots: { main: { instance_id: `c${app}`, port } },
  };
}

async function deploy(t: TestOperator, url: string, body: Record<string, unknown>): Promise<Record<string, unknown>> {
  const r = await t.api('POST', url, body);
  expect(r.status, JSON.stringify(r.body)).toBe(202);
  return t.settle(body.deployment_id as number, 60_000);
}

const errorCode = (s: Record<string, unknown>): string | undefined => (s.error as { code?: string } | null)?.code;

describe('component faults', () => {
  it('Caddy killed mid-deploy and restarted without routes: E_CADDY_UNAVAILABLE, no switch, route rebuilt, then deploys again', async () => {
    const dir = await tempDir('caddy');
    const caddy = await startCaddy({ dir: path.join(dir, 'a'), gracePeriod: '2s' });
    cleanupAfter(() => caddy.stop());
    const t = await startTestOperator({ caddyAdmin: caddy.adminUrl, caddyServer: 'crate', caddyListen: [`127.0.0.1:${caddy.httpPort}`] });
    const ports: [number, number] = [await freePort(), await freePort()];
    const via = async (): Promise<{ status: number; version?: string }> => {
      const r = await httpGet(`http://127.0.0.1:${caddy.httpPort}/`, { host: `a1.${t.team}.faults.test`, timeoutMs: 2_000 }).catch(() => ({ status: 0, body: undefined }));
      return { status: r.status, version: (r.body as { version?: string } | undefined)?.version };
    };
    expect((await deploy(t, '/v1/app/instance/binary/deploy', binaryBody(t, 1, 1, 'v1', ports))).status).toBe('succeeded');
    expect(await via()).toEqual({ status: 200, version: 'v1' });

    // v2 starts slowly: Caddy dies while the operator waits for it to be healthy.
    const r = await t.api('POST', '/v1/app/instance/binary/deploy', binaryBody(t, 1, 2, 'v2', ports, { SLOW_START_MS: '2500' }));
    expect(r.status).toBe(202);
    await waitFor('v2 waiting for health', async () => String((await t.api('GET', '/v1/app/deploy/2/status')).body.phase).startsWith('wait until'), 20_000);
    process.kill(caddy.pid, 'SIGKILL');
    const s2 = await t.settle(2, 60_000);
    expect(['failed', 'rolled_back']).toContain(s2.status);
    expect(errorCode(s2)).toBe('E_CADDY_UNAVAILABLE');
    const steps = s2.steps as { name: string; status: string }[];
    expect(steps.find((s) => s.name.startsWith('route'))?.status).toBe('failed');
    expect((await t.api('GET', '/healthz')).body).toMatchObject({ backends: { caddy: { reachable: false } } });

    // Back from its boot configuration (nothing persisted): the server, but none of the routes.
    const again = path.join(dir, 'b');
    await mkdir(again, { recursive: true });
    const proc = spawnComponent(requireBinary('caddy', 'caddy'), ['run', '--config', caddy.configFile], { env: { PATH: systemPath(), HOME: again, XDG_DATA_HOME: again, XDG_CONFIG_HOME: again }, logFile: path.join(again, 'log'), cwd: again });
    cleanupAfter(() => stopComponent(proc, 5_000));
    await waitReady('restarted caddy', proc, () => pingCaddy(caddy.adminUrl, 1_000), 15_000);
    expect(((await httpGet(`${caddy.adminUrl}/config/apps/http/servers/crate/routes`)).body as unknown[] | null) ?? []).toEqual([]);
    const t0 = Date.now();
    const back = await waitFor('route rebuilt by the operator', async () => {
      const v = await via();
      // Caddy answers an empty 200 for a host no route matches: only the app's own answer counts.
      return v.status === 200 && v.version !== undefined ? v : undefined;
    }, 30_000, 100).catch(async (err: unknown) => {
      throw new Error(`${String(err)}; caddy config: ${(await httpGet(`${caddy.adminUrl}/config/`)).text}`);
    });
    const healedMs = Date.now() - t0;
    // The route is whole: every upstream it names answers.
    const route = (await httpGet(`${caddy.adminUrl}/id/${routeId({ team: t.team, env: 1, app: 1 })}`)).body as { handle: { upstreams: { dial: string }[] }[] };
    const dials = route.handle.flatMap((h) => h.upstreams ?? []).map((u) => u.dial);
    expect(dials.length).toBeGreaterThan(0);
    for (const d of dials) expect((await httpGet(`http://${d}/healthz`)).status, d).toBe(200);
    expect(['v1', 'v2']).toContain(back.version);

    expect((await deploy(t, '/v1/app/instance/binary/deploy', binaryBody(t, 1, 3, 'v2', ports))).status).toBe('succeeded');
    expect(await via()).toEqual({ status: 200, version: 'v2' });
    report('fault-caddy', { error: errorCode(s2), route_rebuilt_ms: healedMs, upstreams: dials.length });
  }, 90_000);

  it('dockerd unreachable: deployments wait with E_DOCKER_UNAVAILABLE (fail at the deadline), containers untouched, binary deploys go on, recovery', async () => {
    const host = getTestHost();
    const dir = await tempDir('dsock');
    const proxy = await socketProxy(path.join(dir, 'docker.sock'), host.docker.socket);
    const t = await startTestOperator({ dockerSocket: proxy.path, deadlines: { ...e2eDeadlines, deploymentMs: 8_000 } });
    const [pA, pB] = [await freePort(), await freePort()];
    expect((await deploy(t, '/v1/app/instance/docker/deploy', dockerBody(t, 1, 1, pA))).status).toBe('succeeded');
    const filters = encodeURIComponent(JSON.stringify({ label: [`crate.team=${t.team}`, 'crate.app=1'] }));
    const before = ((await dockerApi('GET', `/containers/json?filters=${filters}`)).body as { Id: string }[]).map((c) => c.Id);
    expect(before).toHaveLength(1);

    await proxy.down();
    // Waits, saying why; past the deployment deadline it fails with the component's code.
    expect((await t.api('POST', '/v1/app/instance/docker/deploy', dockerBody(t, 2, 2, pB))).status).toBe(202);
    const waiting = await waitFor('deployment 2 waiting for docker', async () => {
      const s = (await t.api('GET', '/v1/app/deploy/2/status')).body;
      return s.status === 'pending' && errorCode(s) === 'E_DOCKER_UNAVAILABLE' ? s : undefined;
    }, 15_000);
    expect(String(waiting.phase)).toMatch(/docker/);
    expect((await t.api('GET', '/healthz')).body).toMatchObject({ backends: { docker: { reachable: false } } });
    expect((await deploy(t, '/v1/app/instance/binary/deploy', binaryBody(t, 3, 3, 'v1', [await freePort(), await freePort()]))).status).toBe('succeeded');
    const gaveUp = await t.settle(2, 30_000);
    expect(gaveUp.status).toBe('failed');
    expect(errorCode(gaveUp)).toBe('E_DOCKER_UNAVAILABLE');
    // A second one, posted while Docker is down, completes by itself once it is back.
    expect((await t.api('POST', '/v1/app/instance/docker/deploy', dockerBody(t, 2, 4, pB))).status).toBe(202);
    await waitFor('deployment 4 waiting', async () => errorCode((await t.api('GET', '/v1/app/deploy/4/status')).body) === 'E_DOCKER_UNAVAILABLE', 15_000);
    expect((await t.viaCaddy(`a1.${t.team}.faults.test`)).status).toBe(200);

    proxy.up();
    const s4 = await t.settle(4, 60_000);
    expect(s4.status).toBe('succeeded');
    expect(s4.error).toBeNull();
    expect((await t.viaCaddy(`a2.${t.team}.faults.test`)).status).toBe(200);
    expect(((await dockerApi('GET', `/containers/json?filters=${filters}`)).body as { Id: string }[]).map((c) => c.Id)).toEqual(before);
    report('fault-docker', { waiting: errorCode(waiting), gave_up_after_ms: Date.parse(String(gaveUp.finished_at)) - Date.parse(String(gaveUp.started_at)), recovered: s4.status });
  }, 90_000);

  it('systemctl failing: deployments wait with E_SYSTEMD_UNAVAILABLE, running units untouched, Docker deploys go on, recovery', async () => {
    const env = systemdEnv();
    const dir = await tempDir('xdg');
    const link = path.join(dir, 'runtime');
    await mkdir(path.join(dir, 'empty'));
    await symlink(env.XDG_RUNTIME_DIR as string, link);
    const t = await startTestOperator({}, { systemdEnv: { ...env, XDG_RUNTIME_DIR: link } });
    const pA: [number, number] = [await freePort(), await freePort()];
    expect((await deploy(t, '/v1/app/instance/binary/deploy', binaryBody(t, 1, 1, 'v1', pA))).status).toBe('succeeded');
    const units = JSON.parse(String((await systemctlUser(['list-units', '--all', '--output=json', `crate-${t.team}:1:1:*`])).stdout)) as { unit: string; active: string }[];
    const unit = units.find((u) => u.active === 'active')?.unit as string;
    const pid = String((await systemctlUser(['show', '-p', 'MainPID', '--value', unit])).stdout).trim();

    await repoint(link, path.join(dir, 'empty'));
    expect((await t.api('POST', '/v1/app/instance/binary/deploy', binaryBody(t, 2, 2, 'v1', [await freePort(), await freePort()]))).status).toBe(202);
    const waiting = await waitFor('deployment 2 waiting for systemd', async () => {
      const s = (await t.api('GET', '/v1/app/deploy/2/status')).body;
      return s.status === 'pending' && errorCode(s) === 'E_SYSTEMD_UNAVAILABLE' ? s : undefined;
    }, 15_000);
    expect(String(waiting.phase)).toMatch(/systemd/);
    expect((await t.api('GET', '/healthz')).body).toMatchObject({ backends: { systemd: { reachable: false } } });
    expect((await deploy(t, '/v1/app/instance/docker/deploy', dockerBody(t, 3, 3, await freePort()))).status).toBe('succeeded');
    expect(String((await systemctlUser(['show', '-p', 'MainPID', '--value', unit])).stdout).trim()).toBe(pid);
    expect((await t.viaCaddy(`a1.${t.team}.faults.test`)).status).toBe(200);

    await repoint(link, env.XDG_RUNTIME_DIR as string);
    const s2 = await t.settle(2, 60_000);
    expect(s2.status).toBe('succeeded');
    expect(s2.error).toBeNull();
    expect((await t.viaCaddy(`a2.${t.team}.faults.test`)).status).toBe(200);
    expect(String((await systemctlUser(['show', '-p', 'MainPID', '--value', unit])).stdout).trim()).toBe(pid);
    report('fault-systemd', { waiting: errorCode(waiting), recovered: s2.status });
  }, 90_000);
});
