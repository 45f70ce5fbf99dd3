/**
 * Start and stop the real components of one test run: a private systemd user manager, dockerd (with
 * the test images imported), Caddy and the asset server, all inside one workspace folder. Used by
 * the vitest globalSetup; usable from any script that needs a throwaway host.
 */
import { readdir } from 'node:fs/promises';
import path from 'node:path';
import { Client, request } from 'undici';
import { describeError } from '../../src/core/errors.ts';
import { startCaddy, type CaddyHandle } from '../../src/host/caddy.ts';
import { startDockerd, type DockerdHandle } from '../../src/host/dockerd.ts';
import { systemctlWith, startSystemdUser, type SystemdUserHandle } from '../../src/host/systemd-user.ts';
import { createWorkspace, reapStaleWorkspaces, type HostWorkspace } from '../../src/host/workspace.ts';
import { startAssetServer, type AssetServer } from '../fixtures/asset-server.ts';
import { importTestImages, TEST_IMAGES } from '../fixtures/images.ts';
import type { TestHost } from './types.ts';

/** A started test host. */
export interface RunningTestHost {
  readonly info: TestHost;
  /** Milliseconds each start phase took. */
  readonly timings: Record<string, number>;
  /** Pids of the component process groups (for an emergency kill on process exit). */
  readonly pids: number[];
  /** Leftover units/containers/routes tests did not clean up (for a warning), then stop everything. */
  stop(): Promise<{ leftovers: string[]; ms: number }>;
}

async function timed<T>(timings: Record<string, number>, name: string, f: () => Promise<T>): Promise<T> {
  const t = performance.now();
  try {
    return await f();
  } finally {
    timings[name] = Math.round(performance.now() - t);
  }
}

/** What tests left behind: `crate-*`/test units, all containers, all routes of every Caddy server. */
async function findLeftovers(info: TestHost): Promise<string[]> {
  const out: string[] = [];
  for (const f of await readdir(info.systemd.unitDir)) out.push(`unit file ${f}`);
  const units = await systemctlWith(info.systemd.env, ['list-units', '--all', '--output=json', '--type=service', 'crate-*']);
  if (units.exitCode === 0) {
    const list = JSON.parse(String(units.stdout)) as Array<{ unit: string; active: string }>;
    for (const u of list) if (u.active !== 'inactive') out.push(`unit ${u.unit} (${u.active})`);
  }
  const client = new Client('http://docker', { socketPath: info.docker.socket });
  try {
    const res = await client.request({ method: 'GET', path: '/containers/json?all=true' });
    const list = (await res.body.json()) as Array<{ Names: string[] }>;
    for (const c of list) out.push(`container ${c.Names.join(',')}`);
  } finally {
    await client.close();
  }
  const res = await request(`${info.caddy.adminUrl}/config/apps/http/servers`, { reset: true });
  const servers = (await res.body.json()) as Record<string, { routes?: unknown[] }> | null;
  for (const [name, s] of Object.entries(servers ?? {})) {
    if (name !== info.caddy.serverName) out.push(`caddy server ${name}`);
    else if ((s.routes ?? []).length > 0) out.push(`caddy routes in ${name}: ${s.routes?.length}`);
  }
  return out;
}

/**
 * Start every component (in parallel), import the test images, start the asset server. On any
 * failure, stops what did start and rethrows the first error (a CrateError naming the missing
 * package or the failed step).
 */
export async function startTestHost(): Promise<RunningTestHost> {
  const timings: Record<string, number> = {};
  const t0 = performance.now();
  await timed(timings, 'reap', () => reapStaleWorkspaces());
  const ws: HostWorkspace = await createWorkspace();
  let systemd: SystemdUserHandle | undefined;
  let docker: DockerdHandle | undefined;
  let caddy: CaddyHandle | undefined;
  let assets: AssetServer | undefined;

  const stopAll = async (): Promise<void> => {
    const results = await Promise.allSettled([caddy?.stop(), docker?.stop(), systemd?.stop(), assets?.close()]);
    await ws.remove();
    const failed = results.find((r): r is PromiseRejectedResult => r.status === 'rejected');
    if (failed) throw failed.reason;
  };

  try {
    const started = await Promise.allSettled([
      timed(timings, 'systemd', async () => (systemd = await startSystemdUser({ dir: await ws.dir('systemd'), id: ws.id }))),
      timed(timings, 'docker', async () => {
        docker = await startDockerd({ dir: await ws.dir('docker'), id: ws.id });
        const socket = docker.socket;
        await timed(timings, 'images', async () => importTestImages(socket, await ws.dir('images')));
      }),
      timed(timings, 'caddy', async () => (caddy = await startCaddy({ dir: await ws.dir('caddy') }))),
      timed(timings, 'assets', async () => (assets = await startAssetServer(await ws.dir('assets')))),
    ]);
    const failed = started.find((r): r is PromiseRejectedResult => r.status === 'rejected');
    if (failed) throw failed.reason;
  } catch (err) {
    await stopAll().catch((e: unknown) => console.error(`crate harness: cleanup after failed start: ${describeError(e).message}`));
    throw err;
  }
  timings.total = Math.round(performance.now() - t0);
  const s = systemd as SystemdUserHandle;
  const d = docker as DockerdHandle;
  const c = caddy as CaddyHandle;
  const a = assets as AssetServer;

  const info: TestHost = {
    tmpRoot: ws.root,
    systemd: { env: { ...s.env }, unitDir: s.unitDir },
    docker: {
      socket: d.socket,
      image: TEST_IMAGES.v1,
      images: { v1: TEST_IMAGES.v1, v2: TEST_IMAGES.v2, broken: TEST_IMAGES.broken },
      busyboxImage: TEST_IMAGES.busybox,
      subnet: d.subnet,
    },
    caddy: { adminUrl: c.adminUrl, httpPort: c.httpPort, serverName: c.serverName },
    assets: { baseUrl: a.baseUrl, filesDir: a.filesDir },
  };
  await ws.dir('tests');
  return {
    info,
    timings,
    pids: [s.pid, d.pid, c.pid],
    stop: async () => {
      const t = performance.now();
      let leftovers: string[] = [];
      try {
        leftovers = await findLeftovers(info);
      } catch (err) {
        leftovers = [`(could not list leftovers: ${describeError(err).message})`];
      }
      await stopAll();
      return { leftovers, ms: Math.round(performance.now() - t) };
    },
  };
}

/** The per-test scratch folder root inside a test host. */
export function testsDir(info: TestHost): string {
  return path.join(info.tmpRoot, 'tests');
}
