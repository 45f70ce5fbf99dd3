/**
 * End-to-end helpers: a whole operator (store, records, reconciler, drivers) against the harness's
 * real systemd user manager, dockerd and Caddy, driven through its HTTP API with `app.inject`.
 * Each operator gets its own state dir and a unique team id, and `cleanupTeam` removes every unit,
 * container and route of that team afterwards, whatever the test did.
 */
import { readdir, rm } from 'node:fs/promises';
import { pino, type Logger } from 'pino';
import path from 'node:path';
import { loadConfig, type OperatorConfig } from '../../src/config.ts';
import { routeId } from '../../src/core/identity.ts';
import { startOperator, type RunningOperator } from '../../src/operator.ts';
import { caddyApi, cleanupAfter, httpGet, dockerApi, getTestHost, systemctlUser, systemdEnv, tempDir, uniqueName, waitFor } from '../harness/index.ts';

export const TOKEN = 'test-token-0123456789abcdef';

export interface TestOperator {
  op: RunningOperator;
  team: string;
  config: OperatorConfig;
  api(method: 'GET' | 'POST', url: string, body?: unknown): Promise<{ status: number; body: Record<string, unknown> }>;
  /** Wait until the deployment reaches a terminal status; returns its status document. */
  settle(id: string | number, timeoutMs?: number): Promise<Record<string, unknown>>;
  /** GET through Caddy's HTTP port with the given Host. */
  viaCaddy(domain: string, p?: string): Promise<{ status: number; text: string }>;
}

/** The deadlines of test operators: fast probes, short health and drain deadlines. */
export const e2eDeadlines: OperatorConfig['deadlines'] = {
  ...loadConfig({ env: {}, flags: {} }).deadlines,
  probeIntervalMs: 100,
  probeTimeoutMs: 1_000,
  healthyMs: 8_000,
  drainMs: 2_000,
};

/**
 * `opts.logger`: the operator's logger (default: pino at CRATE_LOG_LEVEL or warn, to stdout);
 * `opts.systemdEnv`: the environment of its systemctl calls (default: the harness's user manager).
 */
export async function startTestOperator(over: Partial<OperatorConfig> = {}, opts: { watch?: boolean; logger?: Logger; systemdEnv?: Record<string, string> } = {}): Promise<TestOperator> {
  const host = getTestHost();
  const stateDir = await tempDir();
  const team = uniqueName('e2e');
  const base = loadConfig({ env: {}, flags: {} });
  const config: OperatorConfig = {
    ...base,
    listen: { host: '127.0.0.1', port: 0 },
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
    deadlines: e2eDeadlines,
    // A block of its own below the ephemeral range: parallel operators (and freePort()) never collide.
    surgePorts: surgeBlock(),
    ...over,
  };
  const op = await startOperator(config, { systemdEnv: opts.systemdEnv ?? systemdEnv(), listen: false, logger: opts.logger ?? pino({ level: process.env.CRATE_LOG_LEVEL ?? 'warn' }), ...(opts.watch === undefined ? {} : { watch: opts.watch }) });
  cleanupAfter(() => cleanupTeam(team, config));
  cleanupAfter(() => op.stop());
  const api: TestOperator['api'] = async (method, url, body) => {
    const r = await op.app.inject({ method, url, headers: { authorization: `Bearer ${TOKEN}` }, ...(body === undefined ? {} : { payload: body as object }) });
    return { status: r.statusCode, body: r.body ? (JSON.parse(r.body) as Record<string, unknown>) : {} };
  };
  return {
    op,
    team,
    config,
    api,
    async settle(id, timeoutMs = 30_000) {
      return waitFor(
        `deployment ${id} to finish`,
        async () => {
          const r = await api('GET', `/v1/app/deploy/${id}/status`);
          const s = r.body.status as string | undefined;
          return s && ['succeeded', 'failed', 'rolled_back', 'superseded'].includes(s) ? r.body : undefined;
        },
        timeoutMs,
        100,
      );
    },
    async viaCaddy(domain, p = '/') {
      // fetch() drops a Host header: httpGet sends it. A new connection racing a Caddy reload can be
      // reset (Caddy 2.6, see DESIGN.md); like a browser, retry such a GET once.
      const url = `http://127.0.0.1:${host.caddy.httpPort}${p}`;
      const res = await httpGet(url, { host: domain }).catch((err: unknown) => {
        if ((err as { code?: string }).code !== 'ECONNRESET') throw err;
        return httpGet(url, { host: domain });
      });
      return { status: res.status, text: res.text };
    },
  };
}

/** A random 100-port block of 20000-29999 (outside Linux's ephemeral range 32768-60999). */
export function surgeBlock(): { from: number; to: number } {
  const from = 20_000 + Math.floor(Math.random() * 100) * 100;
  return { from, to: from + 99 };
}

/** Remove every unit, container and route of `team` (units by name, containers by label). */
export async function cleanupTeam(team: string, config: OperatorConfig): Promise<void> {
  const host = getTestHost();
  const listed = await systemctlUser(['list-units', '--all', '--output=json', `crate-${team}:*`], { reject: false });
  const units = (JSON.parse(String(listed.stdout || '[]')) as { unit: string }[]).map((u) => u.unit);
  const files = (await readdir(host.systemd.unitDir).catch(() => [] as string[])).filter((f) => f.startsWith(`crate-${team}:`));
  const all = [...new Set([...units, ...files])];
  if (all.length > 0) {
    await systemctlUser(['disable', '--now', ...all], { reject: false });
    for (const f of all) await rm(path.join(host.systemd.unitDir, f), { force: true });
    await systemctlUser(['daemon-reload'], { reject: false });
    await systemctlUser(['reset-failed', ...all], { reject: false });
  }
  const filters = encodeURIComponent(JSON.stringify({ label: [`crate.team=${team}`] }));
  const list = await dockerApi('GET', `/containers/json?all=1&filters=${filters}`);
  for (const c of (list.body as { Id: string }[] | undefined) ?? []) await dockerApi('DELETE', `/containers/${c.Id}?force=true&v=true`);
  // Every route of the team, whatever its env and app ids (listed, not guessed).
  const routes = (await caddyApi('GET', `/config/apps/http/servers/${host.caddy.serverName}/routes`)).body;
  const prefix = routeId({ team, env: 1, app: 1 }).replace(/-1-1$/, '-');
  const ids = (Array.isArray(routes) ? (routes as { '@id'?: unknown }[]) : []).map((r) => r['@id']).filter((id): id is string => typeof id === 'string' && id.startsWith(prefix));
  for (const id of ids) await caddyApi('DELETE', `/id/${id}`);
  await rm(config.stateDir, { recursive: true, force: true });
}

export { waitFor, getTestHost };
