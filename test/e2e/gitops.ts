/**
 * GitOps helpers for end-to-end tests: desired-state documents written by hand, the way a person or a
 * GitOps tool puts them under `<stateDir>/desired/<team>/<env>/<app>.yaml`, and probes of what the
 * host then runs.
 */
import { mkdir, rename, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { routeId, type AppKey } from '../../src/core/identity.ts';
import { caddyApi, dockerApi, getTestHost, systemctlUser } from '../harness/index.ts';

export interface HandDoc {
  team: string;
  env?: number;
  app?: number;
  runtime?: 'binary' | 'docker';
  version: string;
  deploymentId: string;
  domain: string;
  /** Instance id → port (plain model, rolling). */
  instances: Record<string, { port: number; state?: 'running' | 'stopped' }>;
  /** Binary: asset name on the harness asset server (default `app-<version>.tar.gz`). */
  asset?: string;
  /** Docker: image tag of `crate-test/app` (default the version). */
  tag?: string;
  env_vars?: Record<string, string>;
}

/** The YAML a person would write for a plain-model app (rolling, health check on /healthz). */
export function handYaml(d: HandDoc): string {
  const host = getTestHost();
  const artifact =
    (d.runtime ?? 'binary') === 'binary'
      ? `  binary:\n    asset_url: ${host.assets.baseUrl}/${d.asset ?? `app-${d.version}.tar.gz`}\n`
      : `  docker:\n    image: crate-test/app\n    tag: "${d.tag ?? d.version}"\n`;
  const instances = Object.entries(d.instances)
    .map(([id, i]) => `    ${id}: { port: ${i.port}, state: ${i.state ?? 'running'}, generation: 0 }\n`)
    .join('');
  const env = Object.entries(d.env_vars ?? {})
    .map(([k, v]) => `    ${k}: ${JSON.stringify(v)}\n`)
    .join('');
  return (
    `# written by hand\n` +
    `apiVersion: crate-operator/v1\n` +
    `kind: App\n` +
    `metadata: { team: ${d.team}, environment: ${d.env ?? 1}, app: ${d.app ?? 1} }\n` +
    `deployment:\n` +
    `  id: "${d.deploymentId}"\n` +
    `  callback_url: http://127.0.0.1:9/cb\n` +
    `  requested_at: 2025-01-01T00:00:00.000Z\n` +
    `spec:\n` +
    `  runtime: ${d.runtime ?? 'binary'}\n` +
    `  model: plain\n` +
    `  domain: ${d.domain}\n` +
    `  strategy: rolling\n` +
    `  version: "${d.version}"\n` +
    artifact +
    `  health_check_path: /healthz\n` +
    `  instances:\n` +
    instances +
    (env ? `  env:\n${env}` : `  env: {}\n`)
  );
}

/** Where the document of `key` lives under a state dir. */
export function docPath(stateDir: string, key: AppKey): string {
  return path.join(stateDir, 'desired', key.team, String(key.env), `${key.app}.yaml`);
}

/** Write a document as a GitOps tool does: a temp file in the same folder, then rename. */
export async function dropFile(file: string, text: string): Promise<void> {
  await mkdir(path.dirname(file), { recursive: true });
  const tmp = path.join(path.dirname(file), `.${path.basename(file)}.${process.pid}.partial`);
  await writeFile(tmp, text, { mode: 0o600 });
  await rename(tmp, file);
}

/** The active units of an app (`crate-<team>:<env>:<app>:*`), by name. */
export async function unitsOf(key: AppKey): Promise<{ unit: string; active: string; sub: string; description: string }[]> {
  const r = await systemctlUser(['list-units', '--all', '--output=json', `crate-${key.team}:${key.env}:${key.app}:*`]);
  return JSON.parse(String(r.stdout || '[]')) as { unit: string; active: string; sub: string; description: string }[];
}

/** The app's Caddy route object, or undefined when Caddy has none. */
export async function routeOf(key: AppKey): Promise<{ match?: { host?: string[] }[]; handle?: { upstreams?: { dial: string }[] }[] } | undefined> {
  const r = await caddyApi('GET', `/id/${routeId(key)}`);
  return r.status === 200 ? (r.body as never) : undefined;
}

/** The app's containers (all states). */
export async function containersOf(key: AppKey): Promise<{ Id: string; Names: string[]; State: string; Labels: Record<string, string> }[]> {
  const filters = encodeURIComponent(JSON.stringify({ label: [`crate.team=${key.team}`, `crate.env=${key.env}`, `crate.app=${key.app}`] }));
  const r = await dockerApi('GET', `/containers/json?all=1&filters=${filters}`);
  return (r.body as never[] | undefined) ?? [];
}

/** The MainPID of a unit (0 when none). */
export async function mainPid(unit: string): Promise<number> {
  const r = await systemctlUser(['show', '-p', 'MainPID', '--value', unit]);
  return Number(String(r.stdout).trim());
}

/** The unit folder of the harness's user manager. */
export function unitDir(): string {
  return getTestHost().systemd.unitDir;
}

export { writeFile };
