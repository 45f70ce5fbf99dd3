/**
 * An API under test: a real DesiredStore and Records in a fresh temp state dir, and the injected deps
 * (reconciler hook, Caddy domain move, observed state, plan) as fakes built from function fields.
 */
import { mkdtemp, readdir, readFile, rm, stat } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import type { LightMyRequestResponse } from 'fastify';
import { buildApp, type ApiInstance, type AppDeps } from '../../src/api/app.ts';
import { loadConfig } from '../../src/config.ts';
import type { AppKey } from '../../src/core/identity.ts';
import { DesiredStore } from '../../src/desired/store.ts';
import { Records } from '../../src/records/records.ts';

export const TOKEN = 'test-token-0123456789abcdef';
export const TOKEN2 = 'rotated-token-0123456789abcdef';
export const AUTH = { authorization: `Bearer ${TOKEN}` };
export const SERVER_ID = 'host-7';

export interface TestApi {
  app: ApiInstance;
  dir: string;
  store: DesiredStore;
  records: Records;
  /** App keys passed to onDesiredChange, in order. */
  changes: AppKey[];
  /** Calls of moveDomain, in order. */
  moves: Array<{ key: AppKey; from: string; to: string }>;
  deps: AppDeps;
  post(url: string, payload: unknown, headers?: Record<string, string>): Promise<LightMyRequestResponse>;
  get(url: string, headers?: Record<string, string>): Promise<LightMyRequestResponse>;
  /** Every file under the state dir (path → content) plus the records' content: equal before and after a refused request. */
  snapshot(): Promise<string>;
  close(): Promise<void>;
}

export async function makeApi(over: Partial<AppDeps> = {}, config: Record<string, unknown> = {}): Promise<TestApi> {
  const dir = await mkdtemp(path.join(tmpdir(), 'crate-api-'));
  const store = await DesiredStore.open(dir);
  const records = Records.open(dir);
  const changes: AppKey[] = [];
  const moves: TestApi['moves'] = [];
  const deps: AppDeps = {
    config: loadConfig({ env: {}, defaults: { stateDir: dir, tokens: [TOKEN, TOKEN2], serverId: SERVER_ID, ...config } }),
    checkBackends: () =>
      Promise.resolve({
        systemd: { reachable: true, detail: 'fake' },
        docker: { reachable: true, detail: 'fake' },
        caddy: { reachable: true, detail: 'fake' },
      }),
    store,
    records,
    onDesiredChange: (k) => {
      changes.push(k);
    },
    moveDomain: (key, from, to) => {
      moves.push({ key, from, to });
      return Promise.resolve();
    },
    ...over,
  };
  const app = await buildApp(deps);
  const snapshot = async (): Promise<string> => {
    const files: string[] = [];
    const walk = async (d: string): Promise<void> => {
      for (const e of (await readdir(d, { withFileTypes: true })).sort((a, b) => a.name.localeCompare(b.name))) {
        const p = path.join(d, e.name);
        if (e.isDirectory()) {
          files.push(`${path.relative(dir, p)}/ ${(await stat(p)).mode.toString(8)}`);
          await walk(p);
        } else if (!e.name.startsWith('records.db')) files.push(`${path.relative(dir, p)} ${(await stat(p)).mode.toString(8)} ${await readFile(p, 'utf8')}`);
      }
    };
    await walk(dir);
    return `${files.join('\n')}\n--records--\n${records.dump()}`;
  };
  return {
    app,
    dir,
    store,
    records,
    changes,
    moves,
    deps,
    post: (url, payload, headers = AUTH) => app.inject({ method: 'POST', url, payload: payload as object, headers }),
    get: (url, headers = AUTH) => app.inject({ method: 'GET', url, headers }),
    snapshot,
    close: async () => {
      await app.close();
      records.close();
      await rm(dir, { recursive: true, force: true });
    },
  };
}

/** Request bodies that are valid, one per endpoint; tests vary one field at a time. */
export const base = {
  team_id: 'acme',
  environment_id: 2,
  app_id: 17,
  domain: 'shop.example.com',
  callback_url: 'https://platform.example.com/hooks/deployments',
};

export function instanceBinary(over: Record<string, unknown> = {}): Record<string, unknown> {
  return {
    ...base,
    deployment_id: 101,
    deployment_strategy: 'blue_green',
    asset_url: 'https://assets.example.com/shop-1.0.0.tar.gz',
    target_version: '1.0.0',
    env_vars: { DATABASE_URL: 'postgres://db/shop', QUOTED: 'a "b" \'c\' $HOME 100% \\n', MULTI: 'line1\nline2' },
    slots: { blue: { instance_id: 'i-101', port: 3001 }, green: { instance_id: 'i-102', port: 3002 } },
    health_check_path: '/healthz',
    ...over,
  };
}

export function instanceDocker(over: Record<string, unknown> = {}): Record<string, unknown> {
  return {
    ...base,
    deployment_id: 102,
    deployment_strategy: 'blue_green',
    image: 'registry.example.com/acme/shop',
    image_tag: '1.0.0',
    target_version: '1.0.0',
    env_vars: { A: '1' },
    slots: { blue: { instance_id: 'i-101', port: 3001 }, green: { instance_id: 'i-102', port: 3002 } },
    docker_command: ['./server', '--port', '$PORT'],
    registry_credentials: { username: 'deploy', password: 'hunter2-registry-secret' },
    volumes: ['shop-data:/var/lib/shop'],
    ...over,
  };
}

export function plainBinary(over: Record<string, unknown> = {}): Record<string, unknown> {
  return {
    ...base,
    deployment_id: 103,
    deployment_strategy: 'rolling',
    asset_url: 'https://assets.example.com/shop-1.0.0.tar.gz',
    env_vars: { A: '1' },
    instances: { 'web-1': { port: 3101 }, 'web-2': { port: 3102 } },
    ...over,
  };
}

export function plainDocker(over: Record<string, unknown> = {}): Record<string, unknown> {
  return {
    ...base,
    deployment_id: 104,
    deployment_strategy: 'recreate',
    image: 'registry.example.com/acme/shop',
    image_tag: '1.0.0',
    instances: { 'web-1': { port: 3201 } },
    ...over,
  };
}

export function instanceAction(over: Record<string, unknown> = {}): Record<string, unknown> {
  return { ...base, instance_id: 'i-101', ...over };
}

export function deleteBody(over: Record<string, unknown> = {}): Record<string, unknown> {
  return { ...base, instance_ids: ['i-101', 'i-102'], ...over };
}

export function domainUpdate(over: Record<string, unknown> = {}): Record<string, unknown> {
  return { team_id: 'acme', environment_id: 2, app_id: 17, old_domain: 'shop.example.com', new_domain: 'store.example.com', server_id: SERVER_ID, ...over };
}

export const KEY: AppKey = { team: 'acme', env: 2, app: 17 };

export interface FieldIssue {
  field: string;
  reason: string;
}

export interface ErrorJson {
  error: { code: string; message: string; details?: { fields?: FieldIssue[] } & Record<string, unknown> };
}

/** JSON body of a response, typed by the caller. */
export function json<T = Record<string, unknown>>(r: LightMyRequestResponse): T {
  return r.json<T>();
}

/** The `error` object of an error answer. */
export function errorOf(r: LightMyRequestResponse): ErrorJson['error'] {
  return r.json<ErrorJson>().error;
}

/** The offending fields of a 400. */
export function fieldsOf(r: LightMyRequestResponse): FieldIssue[] {
  return errorOf(r).details?.fields ?? [];
}
