/**
 * `crate-operator apps`: the apps on this host as a table (from `GET /v1/apps`): app, domain, version,
 * instances up, state (src/app-state.ts) and the last deployment. `--json` prints the API's answer.
 */
import type { Command } from 'commander';
import { CrateError } from '../core/errors.ts';
import { addClientOptions, apiRequest, clientTarget, errorLine, type CliIO } from './client.ts';

/** The parts of one `GET /v1/apps` entry the table shows. */
export interface AppEntry {
  team_id: string;
  environment_id: number;
  app_id: number;
  desired: { spec?: { domain?: string; version?: string; strategy?: string; instances?: Record<string, { state?: string }> } } | null;
  document_error: { error: string } | null;
  observed: {
    state?: string | null;
    unavailable?: Record<string, string>;
    runs?: { instance_id: string; version: string; state: string }[];
    route?: { domain: string } | null;
  } | null;
  last_deployment: { deployment_id: string; action?: string; status: string; updated_at?: string; finished_at?: string | null } | null;
}

/** `12s ago`, `5m ago`, `3h ago`, `2d ago`. */
export function ago(iso: string | null | undefined, now: number): string {
  if (!iso) return '';
  const s = Math.max(0, Math.round((now - Date.parse(iso)) / 1000));
  if (!Number.isFinite(s)) return '';
  if (s < 60) return `${s}s ago`;
  if (s < 3600) return `${Math.floor(s / 60)}m ago`;
  if (s < 86_400) return `${Math.floor(s / 3600)}h ago`;
  return `${Math.floor(s / 86_400)}d ago`;
}

/** One table row per app (pure). */
export function appRows(apps: AppEntry[], now: number): string[][] {
  return apps.map((a) => {
    const spec = a.desired?.spec;
    const runs = a.observed?.runs ?? [];
    const up = runs.filter((r) => r.state === 'running');
    const serving = [...new Set(up.map((r) => r.version))].sort();
    const version = spec?.version ?? '-';
    const versionCell = serving.length > 0 && (serving.length > 1 || serving[0] !== version) ? `${version} (serving ${serving.join(', ')})` : version;
    const desiredCount = Object.keys(spec?.instances ?? {}).length;
    const last = a.last_deployment;
    const lastCell = last ? `${last.deployment_id} ${last.action && last.action !== 'deploy' ? `${last.action} ` : ''}${last.status} ${ago(last.finished_at ?? last.updated_at, now)}`.trim() : '-';
    const state = a.document_error ? 'invalid' : (a.observed?.state ?? (a.observed ? 'unknown' : 'not observed'));
    return [
      `${a.team_id}/${a.environment_id}/${a.app_id}`,
      spec?.domain ?? a.observed?.route?.domain ?? '-',
      versionCell,
      `${new Set(up.map((r) => r.instance_id)).size} up / ${desiredCount}`,
      state,
      lastCell,
    ];
  });
}

/** Left-aligned columns separated by two spaces (pure). */
export function table(header: string[], rows: string[][]): string {
  const all = [header, ...rows];
  const widths = header.map((_, i) => Math.max(...all.map((r) => (r[i] ?? '').length)));
  return all.map((r) => r.map((c, i) => (i === r.length - 1 ? c : c.padEnd(widths[i] ?? 0))).join('  ').trimEnd()).join('\n');
}

export const APPS_HEADER = ['APP', 'DOMAIN', 'VERSION', 'INSTANCES', 'STATE', 'LAST DEPLOYMENT'];

/** Register `apps`. */
export function registerApps(program: Command, io: CliIO, done: (code: number) => void): void {
  addClientOptions(
    program
      .command('apps')
      .description('list the apps on this host: domain, version, instances up, state, last deployment')
      .option('--json', 'print the API\'s answer (GET /v1/apps) as JSON')
      .addHelpText('after', '\nSTATE: deploying, removing, running, stopped, degraded (being healed), failed (last deployment failed or rolled back), invalid (document on disk broken), orphaned, unknown.'),
  ).action(async (flags: { json?: boolean; url?: string; token?: string; stateDir?: string; config?: string }) => {
    const t = clientTarget(flags);
    const r = await apiRequest(t, 'GET', '/v1/apps');
    if (r.status !== 200) throw new CrateError('E_CLIENT', errorLine(r.status, r.body));
    const body = r.body as { apps: AppEntry[]; errors: { path: string; error: string }[] };
    if (flags.json) {
      io.out(`${JSON.stringify(body, null, 2)}\n`);
    } else {
      io.out(body.apps.length === 0 ? 'no apps\n' : `${table(APPS_HEADER, appRows(body.apps, Date.now()))}\n`);
      for (const a of body.apps) if (a.document_error) io.out(`${a.team_id}/${a.environment_id}/${a.app_id}: document error: ${a.document_error.error}\n`);
      for (const e of body.errors) io.out(`${e.path}: ${e.error}\n`);
    }
    done(0);
  });
}
