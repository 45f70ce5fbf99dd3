/**
 * A whole operator (store, records, reconciler, drivers, API) in this process against the bench host,
 * as production wires it (`startOperator`), with a private state folder and a unique team id, plus:
 * an API caller (`app.inject`, or HTTP when listening), a deployment waiter that takes the terminal
 * time from the records' change events (no polling error), a callback sink, and a cleanup that
 * removes every unit, container and route of the team.
 */
import { randomBytes } from 'node:crypto';
import { mkdir, readdir, rm } from 'node:fs/promises';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import path from 'node:path';
import { pino } from 'pino';
import { Client, request } from 'undici';
import { loadConfig, type OperatorConfig } from '../../src/config.ts';
import { ROUTE_ID_PREFIX } from '../../src/drivers/caddy-routes.ts';
import { systemctlWith } from '../../src/host/systemd-user.ts';
import { startOperator, type RunningOperator } from '../../src/operator.ts';
import type { DeploymentStatus } from '../../src/records/records.ts';
import { systemdEnvOf, type TestHost } from './host.ts';

export const TOKEN = 'bench-token-0123456789abcdef';

/** A team id unique to this run (valid in unit, container and route names). */
export function benchTeam(prefix = 'b'): string {
  return `${prefix}-${randomBytes(3).toString('hex')}`;
}

/** A 100-port surge block of 20000-29999, random so parallel runs on one machine rarely meet. */
export function surgeBlock(): { from: number; to: number } {
  const from = 20_000 + Math.floor(Math.random() * 100) * 100;
  return { from, to: from + 99 };
}

/** The operator configuration for the bench host: production defaults (deadlines, probes, grace), private folders. */
export function benchConfig(host: TestHost, stateDir: string, over: Partial<OperatorConfig> = {}): OperatorConfig {
  const base = loadConfig({ env: {}, flags: {} });
  return {
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
    caddyGraceMs: 30_000,
    serverId: 'bench-host',
    resyncMs: 3_600_000,
    allowPrivateNetworks: ['127.0.0.0/8'],
    surgePorts: surgeBlock(),
    ...over,
  };
}

/** A local endpoint that accepts every callback (204), so the callback outbox stays quiet. */
export async function callbackSink(): Promise<{ url(id: string): string; received(): number; close(): Promise<void> }> {
  let n = 0;
  const server = http.createServer((req, res) => {
    req.resume();
    req.on('end', () => {
      n += 1;
      res.writeHead(204).end();
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', () => resolve()));
  const port = (server.address() as AddressInfo).port;
  return {
    url: (id) => `http://127.0.0.1:${port}/cb/${encodeURIComponent(id)}`,
    received: () => n,
    close: async () => {
      server.closeAllConnections();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}

export interface ApiAnswer {
  status: number;
  body: Record<string, unknown>;
}

export interface BenchOperator {
  op: RunningOperator;
  team: string;
  config: OperatorConfig;
  callbackUrl(id: string): string;
  /** In-process API call (`app.inject`). */
  api(method: 'GET' | 'POST', url: string, body?: unknown): Promise<ApiAnswer>;
  /**
   * Wait (deadline `timeoutMs`) until deployment `id` is terminal. `at` is performance.now() of the
   * record change that made it terminal.
   */
  settle(id: string, timeoutMs?: number): Promise<{ status: DeploymentStatus; at: number }>;
  /**
   * Wait until the reconcile loop is idle. Benchmarks call it before each POST: a pass triggered by
   * the previous deployment's end that runs while the API writes the next document adopts that
   * document as a hand-written one before the API records it, and the API then answers 500
   * (E_INTERNAL "appeared while its lock was held"; see bench/README.md, open issues).
   */
  quiesce(): Promise<void>;
  /** Stop the operator, remove the team's units/containers/routes and the state folder. */
  close(): Promise<void>;
}

const TERMINAL = new Set(['succeeded', 'failed', 'rolled_back', 'superseded']);

/** Start an operator for `host` in the folder `stateDir` (created). */
export async function startBenchOperator(
  host: TestHost,
  stateDir: string,
  opts: { team?: string; listen?: boolean; watch?: boolean; config?: Partial<OperatorConfig> } = {},
): Promise<BenchOperator> {
  await mkdir(stateDir, { recursive: true });
  const team = opts.team ?? benchTeam();
  const config = benchConfig(host, stateDir, opts.config);
  const sink = await callbackSink();
  const logger = pino({ level: process.env.CRATE_LOG_LEVEL ?? 'warn' });
  const op = await startOperator(config, { systemdEnv: systemdEnvOf(host), listen: opts.listen ?? false, watch: opts.watch ?? false, logger });
  const api: BenchOperator['api'] = async (method, url, body) => {
    const r = await op.app.inject({ method, url, headers: { authorization: `Bearer ${TOKEN}` }, ...(body === undefined ? {} : { payload: body as object }) });
    return { status: r.statusCode, body: r.body ? (JSON.parse(r.body) as Record<string, unknown>) : {} };
  };
  return {
    op,
    team,
    config,
    callbackUrl: (id) => sink.url(id),
    api,
    settle(id, timeoutMs = 60_000) {
      return new Promise((resolve, reject) => {
        const done = (status: DeploymentStatus, at: number): void => {
          clearTimeout(timer);
          off();
          resolve({ status, at });
        };
        const off = op.records.subscribe(id, (c) => {
          if (TERMINAL.has(c.status.status)) done(c.status, performance.now());
        });
        const timer = setTimeout(() => {
          off();
          reject(new Error(`deployment ${id} not finished after ${timeoutMs} ms (status ${op.records.get(id)?.status ?? 'unknown'})`));
        }, timeoutMs);
        const now = op.records.get(id);
        if (now && TERMINAL.has(now.status)) done(now, performance.now());
      });
    },
    quiesce: () => op.reconciler.loop.idle(),
    async close() {
      await op.stop();
      await cleanupTeam(host, team);
      await sink.close();
      await rm(stateDir, { recursive: true, force: true });
    },
  };
}

/** Remove every unit (by name), container (by label) and route (by `@id`) of `team` from the host. */
export async function cleanupTeam(host: TestHost, team: string): Promise<void> {
  const env = host.systemd.env;
  const listed = await systemctlWith(env, ['list-units', '--all', '--output=json', `crate-${team}:*`]);
  const units = (JSON.parse(String(listed.stdout || '[]')) as { unit: string }[]).map((u) => u.unit);
  const files = (await readdir(host.systemd.unitDir).catch(() => [] as string[])).filter((f) => f.startsWith(`crate-${team}:`));
  const all = [...new Set([...units, ...files])];
  for (let i = 0; i < all.length; i += 500) {
    const batch = all.slice(i, i + 500);
    await systemctlWith(env, ['disable', '--now', ...batch], 120_000);
    await systemctlWith(env, ['reset-failed', ...batch], 60_000);
  }
  if (all.length > 0) {
    for (const f of files) await rm(path.join(host.systemd.unitDir, f), { force: true });
    await systemctlWith(env, ['daemon-reload'], 60_000);
  }
  const docker = new Client('http://docker', { socketPath: host.docker.socket, headersTimeout: 60_000, bodyTimeout: 60_000 });
  try {
    const filters = encodeURIComponent(JSON.stringify({ label: [`crate.team=${team}`] }));
    const res = await docker.request({ method: 'GET', path: `/containers/json?all=1&filters=${filters}` });
    const list = (await res.body.json()) as { Id: string }[];
    await Promise.all(
      list.map(async (c) => {
        const r = await docker.request({ method: 'DELETE', path: `/containers/${c.Id}?force=true&v=true` });
        await r.body.dump();
      }),
    );
  } finally {
    await docker.close();
  }
  // One config change: the server's routes without the team's.
  const routesPath = `${host.caddy.adminUrl}/config/apps/http/servers/${host.caddy.serverName}/routes`;
  const res = await request(routesPath, { reset: true });
  const routes = ((await res.body.json()) as { '@id'?: string }[] | null) ?? [];
  const mine = (r: { '@id'?: string }): boolean => typeof r['@id'] === 'string' && r['@id'].startsWith(`${ROUTE_ID_PREFIX}${team}-`);
  if (routes.some(mine)) {
    const r = await request(routesPath, { method: 'PATCH', reset: true, body: JSON.stringify(routes.filter((x) => !mine(x))), headers: { 'content-type': 'application/json' } });
    if (r.statusCode !== 200) throw new Error(`caddy: cannot remove routes of ${team}: ${r.statusCode} ${await r.body.text()}`);
    await r.body.dump();
  }
}
