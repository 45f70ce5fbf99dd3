/**
 * The apps benchmarks deploy, and how fast they start on their own:
 * - a binary app made of busybox httpd (`/files/bench-busybox.tar.gz` on the host's asset server):
 *   healthy the moment it listens, so the operator's overhead is all that is left;
 * - the harness's test app images (`crate-test/app:v1|v2`, busybox httpd in a container);
 * - the harness's Node test app tarballs (`/app-<version>.tar.gz`: graceful drain, `/hold?ms=`).
 */
import { mkdir, rm, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { execa } from 'execa';
import { create as createTar, extract as extractTar } from 'tar';
import { request } from 'undici';
import { containerName } from '../../src/core/identity.ts';
import { createDockerDriver } from '../../src/drivers/docker.ts';
import type { TestHost } from './host.ts';
import { freePorts } from './ports.ts';
import { median } from './report.ts';

export const BUSYBOX = '/usr/bin/busybox';

/** Write the busybox app tarball into the asset server's files; returns its URL (append `?b=<n>` to vary it). */
export async function busyboxAsset(host: TestHost): Promise<string> {
  const stage = path.join(host.tmpRoot, 'bench', 'busybox-app');
  await mkdir(path.join(stage, 'www'), { recursive: true });
  await writeFile(path.join(stage, 'Procfile'), `web: ${BUSYBOX} httpd -f -p 127.0.0.1:$PORT -h www\n`);
  await writeFile(path.join(stage, 'www', 'healthz'), 'ok\n');
  await writeFile(path.join(stage, 'www', 'index.html'), 'busybox app\n');
  const file = path.join(host.assets.filesDir, 'bench-busybox.tar.gz');
  await createTar({ gzip: true, cwd: stage, file, portable: true }, ['Procfile', 'www']);
  return `${host.assets.baseUrl}/files/bench-busybox.tar.gz`;
}

/** One GET with a short deadline; the status, or 0 when the connection failed. */
export async function probe(url: string, host?: string): Promise<number> {
  try {
    const r = await request(url, { reset: true, headersTimeout: 1_000, bodyTimeout: 1_000, ...(host ? { headers: { host } } : {}) });
    await r.body.dump();
    return r.statusCode;
  } catch {
    return 0;
  }
}

/** Poll `url` every `everyMs` until it answers 2xx; ms from `t0` (performance.now) to that answer. */
export async function untilHealthy(url: string, t0: number, everyMs = 2, deadlineMs = 30_000): Promise<number> {
  for (;;) {
    const s = await probe(url);
    if (s >= 200 && s < 300) return performance.now() - t0;
    if (performance.now() - t0 > deadlineMs) throw new Error(`${url} not healthy after ${deadlineMs} ms`);
    await new Promise((r) => setTimeout(r, everyMs));
  }
}

/** The busybox app started by hand `times` times: median ms from spawn to the first 2xx of /healthz. */
export async function busyboxOwnStart(host: TestHost, times: number): Promise<number> {
  const www = path.join(host.tmpRoot, 'bench', 'busybox-app', 'www');
  const [port] = await freePorts(1);
  const out: number[] = [];
  for (let i = 0; i < times; i++) {
    const t0 = performance.now();
    const p = execa(BUSYBOX, ['httpd', '-f', '-p', `127.0.0.1:${port}`, '-h', www], { reject: false });
    try {
      out.push(await untilHealthy(`http://127.0.0.1:${port}/healthz`, t0));
    } finally {
      p.kill('SIGKILL');
      await p;
    }
  }
  return median(out);
}

/**
 * The Node test app (the harness's `/app-<version>.tar.gz`) unpacked and started by hand `times`
 * times (`node server.mjs`, as its Procfile says): median ms from spawn to the first 2xx of /healthz.
 */
export async function nodeAppOwnStart(host: TestHost, times: number): Promise<number> {
  const dir = path.join(host.tmpRoot, 'bench', 'node-app');
  await mkdir(dir, { recursive: true });
  const res = await request(`${host.assets.baseUrl}/app-own.tar.gz`);
  if (res.statusCode !== 200) throw new Error(`asset server: ${res.statusCode}`);
  const file = path.join(dir, 'app.tar.gz');
  await writeFile(file, Buffer.from(await res.body.arrayBuffer()));
  await extractTar({ file, cwd: dir });
  const [port] = await freePorts(1);
  const out: number[] = [];
  for (let i = 0; i < times; i++) {
    const t0 = performance.now();
    const p = execa(process.execPath, ['server.mjs'], { cwd: dir, env: { PORT: String(port) }, reject: false });
    try {
      out.push(await untilHealthy(`http://127.0.0.1:${port}/healthz`, t0));
    } finally {
      p.kill('SIGKILL');
      await p;
    }
  }
  return median(out);
}

/**
 * The test app image run by hand `times` times through the Docker driver: median ms from create to
 * the first 2xx of /healthz (create + start + the app's own start).
 */
export async function dockerOwnStart(host: TestHost, times: number): Promise<{ createToHealthy: number; startToHealthy: number }> {
  const driver = createDockerDriver({ socketPath: host.docker.socket });
  const [port] = await freePorts(1);
  const key = { team: 'bench-own', env: 1, app: 1 };
  const total: number[] = [];
  const fromStart: number[] = [];
  try {
    for (let i = 0; i < times; i++) {
      const name = containerName(key, 'own', `0000${i}`.slice(-6));
      const t0 = performance.now();
      try {
        await driver.create({ key, instance: 'own', version: 'v1', deployment: '1', generation: 0, name, image: 'crate-test/app', tag: 'v1', port: port as number, env: {}, restart: 'unless-stopped', stopTimeoutSec: 1 });
        const t1 = performance.now();
        await driver.start(name);
        const ms = await untilHealthy(`http://127.0.0.1:${port}/healthz`, t0);
        total.push(ms);
        fromStart.push(ms - (t1 - t0));
      } finally {
        await driver.remove(name);
      }
    }
  } finally {
    await driver.close();
  }
  return { createToHealthy: median(total), startToHealthy: median(fromStart) };
}

/** Remove a folder, ignoring absence. */
export async function removeDir(dir: string): Promise<void> {
  await rm(dir, { recursive: true, force: true });
}
