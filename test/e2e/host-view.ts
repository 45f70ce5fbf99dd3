/**
 * What end-to-end tests look at on the host, straight from the components (never through the
 * operator): a team's units, unit files, containers and routes, and a traffic watcher that keeps
 * requesting an app through Caddy while a deployment runs.
 */
import { readdir } from 'node:fs/promises';
import { routeId } from '../../src/core/identity.ts';
import { caddyApi, dockerApi, getTestHost, httpGet, systemctlUser } from '../harness/index.ts';

export interface UnitView {
  unit: string;
  load: string;
  active: string;
  sub: string;
}

/** Units of the team known to the user manager (loaded, active or failed). */
export async function teamUnits(team: string): Promise<UnitView[]> {
  const r = await systemctlUser(['list-units', '--all', '--output=json', `crate-${team}:*`]);
  return JSON.parse(String(r.stdout || '[]')) as UnitView[];
}

/** Unit files of the team in the user unit folder. */
export async function teamUnitFiles(team: string): Promise<string[]> {
  return (await readdir(getTestHost().systemd.unitDir).catch(() => [] as string[])).filter((f) => f.startsWith(`crate-${team}:`));
}

/** The unit's ActiveState (`inactive` also for a unit systemd unloaded after it stopped). */
export async function activeState(unit: string): Promise<string> {
  const r = await systemctlUser(['show', '-p', 'ActiveState', '--value', unit]);
  return String(r.stdout).trim();
}

/** The unit's main PID (0 when not running). */
export async function mainPid(unit: string): Promise<number> {
  const r = await systemctlUser(['show', '-p', 'MainPID', '--value', unit]);
  return Number(String(r.stdout).trim());
}

export interface ContainerView {
  Id: string;
  Names: string[];
  State: string;
  Labels: Record<string, string>;
}

/** Every container (running or not) labelled with the team. */
export async function teamContainers(team: string): Promise<ContainerView[]> {
  const filters = encodeURIComponent(JSON.stringify({ label: [`crate.team=${team}`] }));
  return (await dockerApi('GET', `/containers/json?all=1&filters=${filters}`)).body as ContainerView[];
}

/** The app's route object in Caddy, or null when there is none. */
export async function routeOf(team: string, env = 1, app = 1): Promise<unknown> {
  const r = await caddyApi('GET', `/id/${routeId({ team, env, app })}`);
  return r.status === 200 ? r.body : null;
}

/** Upstream ports of the app's route (sorted), [] when there is no route. */
export async function routePorts(team: string, env = 1, app = 1): Promise<number[]> {
  const text = JSON.stringify((await routeOf(team, env, app)) ?? {});
  return [...text.matchAll(/"dial":"127\.0\.0\.1:(\d+)"/g)].map((m) => Number(m[1])).sort((a, b) => a - b);
}

export interface TrafficReport {
  requests: number;
  /** Answers by status code. */
  statuses: Record<number, number>;
  /** `version` of each 200 answer, counted. */
  versions: Record<string, number>;
  /** New connections that failed (Caddy closes listeners on each config reload; see DESIGN.md). */
  connectionErrors: number;
  /** Versions in the order they were first seen. */
  order: string[];
}

/**
 * Request `http://<caddy>/` with Host `domain` in a loop (new connection each time) until `stop()`.
 * Reports answer statuses and versions; connection errors are counted, not thrown.
 */
export function watchTraffic(domain: string, pauseMs = 20): { stop(): Promise<TrafficReport> } {
  const host = getTestHost();
  const report: TrafficReport = { requests: 0, statuses: {}, versions: {}, connectionErrors: 0, order: [] };
  let stopped = false;
  const loop = (async () => {
    while (!stopped) {
      try {
        const r = await httpGet(`http://127.0.0.1:${host.caddy.httpPort}/`, { host: domain, timeoutMs: 5_000 });
        report.requests += 1;
        report.statuses[r.status] = (report.statuses[r.status] ?? 0) + 1;
        if (r.status === 200) {
          const v = String((r.body as { version?: string }).version);
          report.versions[v] = (report.versions[v] ?? 0) + 1;
          if (!report.order.includes(v)) report.order.push(v);
        }
      } catch {
        report.connectionErrors += 1;
      }
      await new Promise((res) => setTimeout(res, pauseMs));
    }
  })();
  return {
    async stop() {
      stopped = true;
      await loop;
      return report;
    },
  };
}
