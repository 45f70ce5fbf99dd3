/**
 * Metrics and logs of a whole operator against the harness's real systemd, Caddy and asset server:
 * `/metrics` (no token) is valid Prometheus text and its counters move during a blue/green deploy and
 * a rolled-back one; the operator's real logger (createLogger) writes one `{app, state, was}` line per
 * app state change, and no secret of the request (env value, callback URL query, API token) appears
 * in any log line at debug level.
 */
import path from 'node:path';
import { Writable } from 'node:stream';
import { describe, expect, it } from 'vitest';
import { loadConfig, type OperatorConfig } from '../../src/config.ts';
import { createLogger, startOperator } from '../../src/operator.ts';
import { cleanupTeam } from '../e2e/operator.ts';
import { cleanupAfter, freePort, getTestHost, systemdEnv, tempDir, uniqueName, waitFor } from '../harness/index.ts';
import { parsePrometheusText, sumOf, valueOf } from './prom-text.ts';

const SENTINEL = 'sntl-7f3a9c1e';
const TOKEN = `tok-${SENTINEL}-0123456789`;

describe('telemetry of a running operator', () => {
  it('metrics move during deploys; logs carry state changes and no secret', { timeout: 60_000 }, async () => {
    const host = getTestHost();
    const stateDir = await tempDir('obs');
    const team = uniqueName('obs');
    const base = loadConfig({ env: {}, flags: {} });
    const config: OperatorConfig = {
      ...base,
      tokens: [TOKEN],
      stateDir,
      appsDir: path.join(stateDir, 'apps'),
      systemdScope: 'user',
      dockerSocket: host.docker.socket,
      caddyAdmin: host.caddy.adminUrl,
      caddyServer: host.caddy.serverName,
      caddyListen: [`127.0.0.1:${host.caddy.httpPort}`],
      caddyGraceMs: 5_000,
      serverId: 'test-host',
      resyncMs: 2_000,
      stopTimeoutSec: 5,
      allowPrivateNetworks: ['127.0.0.0/8'],
      surgePorts: { from: 20_000 + Math.floor(Math.random() * 100) * 100, to: 0 },
      deadlines: { ...base.deadlines, probeIntervalMs: 100, probeTimeoutMs: 1_000, healthyMs: 3_000, drainMs: 2_000 },
    };
    config.surgePorts.to = config.surgePorts.from + 99;

    let logs = '';
    const sink = new Writable({
      write(chunk: Buffer, _enc, done) {
        logs += chunk.toString('utf8');
        done();
      },
    });
    const logger = createLogger(sink);
    logger.level = 'debug';
    const op = await startOperator(config, { systemdEnv: systemdEnv(), listen: false, logger });
    cleanupAfter(() => cleanupTeam(team, config));
    cleanupAfter(() => op.stop());

    const api = async (method: 'GET' | 'POST', url: string, body?: object) => {
      const r = await op.app.inject({ method, url, headers: { authorization: `Bearer ${TOKEN}` }, ...(body ? { payload: body } : {}) });
      return { status: r.statusCode, body: JSON.parse(r.body) as Record<string, unknown> };
    };
    const metrics = async () => {
      const r = await op.app.inject({ method: 'GET', url: '/metrics' });
      expect(r.statusCode).toBe(200);
      expect(r.headers['content-type']).toMatch(/^text\/plain; version=0\.0\.4/);
      expect(r.body).not.toContain(SENTINEL);
      expect(r.body).not.toContain(team);
      return parsePrometheusText(r.body);
    };
    const settle = (id: number) =>
      waitFor(`deployment ${id}`, async () => {
        const s = (await api('GET', `/v1/app/deploy/${id}/status`)).body;
        return ['succeeded', 'failed', 'rolled_back', 'superseded'].includes(s.status as string) ? s : undefined;
      }, 30_000, 100);

    const m0 = await metrics();
    const [blue, green] = [await freePort(), await freePort()];
    const body = (id: number, version: string, asset = `app-${version}.tar.gz`) => ({
      app_id: 1,
      environment_id: 1,
      team_id: team,
      deployment_id: id,
      deployment_strategy: 'blue_green',
      domain: `${team}.obs.test`,
      asset_url: `${host.assets.baseUrl}/${asset}`,
      callback_url: `http://127.0.0.1:9/cb?token=${SENTINEL}`,
      env_vars: { API_KEY: SENTINEL, PASSWORD: `pw-${SENTINEL}` },
      health_check_path: '/healthz',
      target_version: version,
      slots: { blue: { instance_id: `${team}-b`, port: blue }, green: { instance_id: `${team}-g`, port: green } },
    });

    expect((await api('POST', '/v1/app/instance/binary/deploy', body(201, 'v1'))).status).toBe(202);
    expect((await settle(201)).status).toBe('succeeded');
    await waitFor('app state running', () => Promise.resolve(op.telemetry.apps.stateOf({ team, env: 1, app: 1 }) === 'running'), 10_000);
    const m1 = await metrics();
    const deployed = { action: 'deploy', strategy: 'blue_green' };
    expect(valueOf(m1, 'crate_deployments_total', { ...deployed, result: 'succeeded' }) - valueOf(m0, 'crate_deployments_total', { ...deployed, result: 'succeeded' })).toBe(1);
    expect(valueOf(m1, 'crate_deployment_step_duration_seconds_count', { step: 'waitHealthy', result: 'succeeded' })).toBeGreaterThanOrEqual(1);
    expect(valueOf(m1, 'crate_deployment_step_duration_seconds_count', { step: 'setRoute', result: 'succeeded' })).toBeGreaterThanOrEqual(1);
    expect(sumOf(m1, 'crate_reconcile_duration_seconds_count')).toBeGreaterThan(sumOf(m0, 'crate_reconcile_duration_seconds_count'));
    for (const c of ['systemctl', 'caddy']) {
      expect(valueOf(m1, 'crate_host_calls_total', { component: c })).toBeGreaterThan(valueOf(m0, 'crate_host_calls_total', { component: c }));
    }
    expect(valueOf(m1, 'crate_apps', { state: 'running' })).toBe(1);
    // The callback URL points at a closed port: attempts fail and are retried.
    await waitFor('a callback attempt', async () => valueOf(await metrics(), 'crate_callback_deliveries_total', { result: 'retry' }) > 0, 15_000, 200);

    // A version that never gets healthy is rolled back.
    expect((await api('POST', '/v1/app/instance/binary/deploy', body(202, 'v2', 'app-v2-broken.tar.gz'))).status).toBe(202);
    expect((await settle(202)).status).toBe('rolled_back');
    const m2 = await metrics();
    expect(valueOf(m2, 'crate_deployments_total', { ...deployed, result: 'rolled_back' }) - valueOf(m0, 'crate_deployments_total', { ...deployed, result: 'rolled_back' })).toBe(1);
    expect(valueOf(m2, 'crate_deployment_step_duration_seconds_count', { step: 'waitHealthy', result: 'failed' })).toBeGreaterThanOrEqual(1);
    await waitFor('app state failed', async () => valueOf(await metrics(), 'crate_apps', { state: 'failed' }) === 1, 10_000, 200);

    // Logs: JSON lines, one per app state change, never a secret.
    const lines = logs.trim().split('\n').map((l) => JSON.parse(l) as Record<string, unknown>);
    const app = `${team}/1/1`;
    const states = lines.filter((l) => l.app === app && l.msg === 'app state changed').map((l) => `${String(l.was)}→${String(l.state)}`);
    expect(states).toEqual(['null→deploying', 'deploying→running', 'running→deploying', 'deploying→failed']);
    const deployments = lines.filter((l) => l.deployment === '202' && l.msg === 'deployment state changed').map((l) => l.state);
    expect(deployments).toEqual(['pending', 'in_progress', 'rolled_back']);
    expect(logs).not.toContain(SENTINEL);
  });
});
