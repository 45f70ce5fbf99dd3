/**
 * `crate-operator deploy <file.yaml|json>`: send a request body (any of the API's POST endpoints) to
 * the operator and print its answer. The endpoint follows from the body's fields (ENDPOINT_RULES) or
 * from `--endpoint`; start, stop and restart share one body shape, so they need `--endpoint`.
 */
import { readFile } from 'node:fs/promises';
import type { Command } from 'commander';
import { parse as parseYaml } from 'yaml';
import { CrateError } from '../core/errors.ts';
import { addClientOptions, apiRequest, clientTarget, errorLine, type CliIO } from './client.ts';
import { exitCodeFor, follow } from './status.ts';

/** Short names accepted by `--endpoint`, and the API path each stands for. */
export const ENDPOINTS = {
  'instance-binary': '/v1/app/instance/binary/deploy',
  'instance-docker': '/v1/app/instance/docker/deploy',
  binary: '/v1/app/binary/deploy',
  docker: '/v1/app/docker/deploy',
  delete: '/v1/app/delete',
  domain: '/v1/app/domain/update',
  start: '/v1/app/start',
  stop: '/v1/app/stop',
  restart: '/v1/app/restart',
} as const;

export type EndpointName = keyof typeof ENDPOINTS;

/**
 * The endpoint a body is meant for (pure): `slots` → instance model, `instances` → plain model, each
 * with `asset_url` (binary) or `image` (docker); `instance_ids` → delete; `new_domain` → domain
 * update. `override` (a short name or a `/v1/...` path) wins. Throws E_CONFIG when it cannot tell.
 */
export function pickEndpoint(body: Record<string, unknown>, override?: string): string {
  if (override !== undefined) {
    if (Object.hasOwn(ENDPOINTS, override)) return ENDPOINTS[override as EndpointName];
    if ((Object.values(ENDPOINTS) as string[]).includes(override)) return override;
    throw new CrateError('E_CONFIG', `--endpoint: unknown endpoint ${JSON.stringify(override)}; one of ${Object.keys(ENDPOINTS).join(', ')} or its /v1 path`);
  }
  const has = (k: string): boolean => Object.hasOwn(body, k);
  const runtime = has('asset_url') ? 'binary' : has('image') ? 'docker' : undefined;
  if (has('slots') && runtime) return ENDPOINTS[`instance-${runtime}`];
  if (has('instances') && runtime) return ENDPOINTS[runtime];
  if (has('instance_ids')) return ENDPOINTS.delete;
  if (has('new_domain')) return ENDPOINTS.domain;
  if (has('instance_id')) throw new CrateError('E_CONFIG', 'a start/stop/restart body: pass --endpoint start, stop or restart');
  throw new CrateError('E_CONFIG', 'cannot tell the endpoint from the body (no slots/instances with asset_url/image, instance_ids or new_domain): pass --endpoint');
}

/** Read a request body from a `.json`, `.yaml` or `.yml` file (a JSON or YAML mapping). */
export async function readBody(file: string): Promise<Record<string, unknown>> {
  let text: string;
  try {
    text = await readFile(file, 'utf8');
  } catch (err) {
    throw new CrateError('E_CONFIG', `cannot read ${file}: ${(err as Error).message}`, { cause: err });
  }
  let value: unknown;
  try {
    value = /\.ya?ml$/i.test(file) ? parseYaml(text, { maxAliasCount: 16, uniqueKeys: true }) : JSON.parse(text);
  } catch (err) {
    throw new CrateError('E_CONFIG', `${file}: ${(err as Error).message.split('\n')[0] ?? 'parse error'}`, { cause: err });
  }
  if (typeof value !== 'object' || value === null || Array.isArray(value)) throw new CrateError('E_CONFIG', `${file}: the body must be a mapping`);
  return value as Record<string, unknown>;
}

/** Register `deploy`. `done(code)` receives the exit code. */
export function registerDeploy(program: Command, io: CliIO, done: (code: number) => void): void {
  addClientOptions(
    program
      .command('deploy')
      .description('send a request body (JSON or YAML) to the operator\'s API and print the answer')
      .argument('<file>', 'the request body: .json, .yaml or .yml (see examples/requests/)')
      .option('-e, --endpoint <name>', `endpoint, when the body does not tell: ${Object.keys(ENDPOINTS).join(', ')} (or a /v1 path)`)
      .option('--dry-run', 'ask for the plan only (?dry_run=true): nothing changes')
      .option('-f, --follow', 'after the 202, follow the deployment like `status --follow` (exit code from its end)')
      .option('--timeout <seconds>', 'with --follow: give up after this long', '3600')
      .addHelpText(
        'after',
        [
          '',
          'The endpoint follows from the body: slots + asset_url → instance/binary, slots + image → instance/docker,',
          'instances + asset_url → binary, instances + image → docker, instance_ids → delete, new_domain → domain update.',
          'Start, stop and restart bodies look alike: pass --endpoint start|stop|restart.',
          'Exit codes: 0 accepted (with --follow: as `status`), 1 refused by the API or unreachable, 2 usage.',
        ].join('\n'),
      ),
  ).action(async (file: string, flags: { endpoint?: string; dryRun?: boolean; follow?: boolean; timeout: string; url?: string; token?: string; stateDir?: string; config?: string }) => {
    const body = await readBody(file);
    const endpoint = pickEndpoint(body, flags.endpoint);
    const t = clientTarget(flags);
    const r = await apiRequest(t, 'POST', `${endpoint}${flags.dryRun ? '?dry_run=true' : ''}`, body);
    if (r.status >= 300) throw new CrateError('E_CLIENT', `${endpoint}: ${errorLine(r.status, r.body)}`);
    io.out(`${endpoint}: HTTP ${r.status}\n${JSON.stringify(r.body, null, 2)}\n`);
    const id = (r.body as { deployment_id?: unknown } | null)?.deployment_id;
    if (flags.follow && r.status === 202 && (typeof id === 'string' || typeof id === 'number')) {
      const timeout = Number(flags.timeout);
      if (!Number.isFinite(timeout) || timeout <= 0) throw new CrateError('E_CONFIG', '--timeout: expected a positive number of seconds');
      const d = await follow(t, String(id), io, timeout * 1000);
      done(exitCodeFor(d.status));
      return;
    }
    done(0);
  });
}
