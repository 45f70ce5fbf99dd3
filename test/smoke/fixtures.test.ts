/**
 * The test fixtures behave as documented (test/fixtures/README.md): the asset server serves the
 * app's tarball with a Procfile for any version, and the app answers, fails health when broken,
 * starts late when asked to, holds requests and drains them on SIGTERM.
 */
import { mkdir, readFile, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { execa } from 'execa';
import { extract } from 'tar';
import { describe, expect, it } from 'vitest';
import { cleanupAfter, freePort, getTestHost, httpGet, tempDir, waitFor } from '../harness/index.ts';

async function fetchApp(file: string): Promise<string> {
  const host = getTestHost();
  const dir = await tempDir('asset');
  const res = await fetch(`${host.assets.baseUrl}/${file}`);
  expect(res.status).toBe(200);
  const tgz = path.join(dir, file);
  await writeFile(tgz, Buffer.from(await res.arrayBuffer()));
  const out = path.join(dir, 'x');
  await mkdir(out);
  await extract({ file: tgz, cwd: out });
  return out;
}

/** Start the app from `dir`; killed after the test. The handle is wrapped so it is not a floating promise. */
function runApp(dir: string, env: Record<string, string>) {
  const sub = execa('/usr/bin/node', ['server.mjs'], { cwd: dir, env, reject: false, timeout: 30_000 });
  cleanupAfter(async () => {
    sub.kill('SIGKILL');
    await sub;
  });
  return { sub };
}

describe('fixtures', () => {
  it('serves the app tarball with Procfile and VERSION for any version', async () => {
    const dir = await fetchApp('app-1.2.3.tar.gz');
    expect(await readFile(path.join(dir, 'Procfile'), 'utf8')).toBe('web: node server.mjs\n');
    expect((await readFile(path.join(dir, 'VERSION'), 'utf8')).trim()).toBe('1.2.3');
    const missing = await httpGet(`${getTestHost().assets.baseUrl}/app-..%2Fx.tar.gz`);
    expect(missing.status).toBe(404);
  });

  it('the app answers, holds, drains on SIGTERM and exits 0', async () => {
    const dir = await fetchApp('app-v7.tar.gz');
    const port = await freePort();
    const { sub: app } = runApp(dir, { PORT: String(port), INSTANCE_ID: 'i-1', SLOW_START_MS: '300' });
    const started = Date.now();
    const res = await waitFor('the app to listen', async () => (await httpGet(`http://127.0.0.1:${port}/`)).body as object);
    expect(Date.now() - started).toBeGreaterThanOrEqual(250);
    expect(res).toMatchObject({ version: 'v7', instance: 'i-1' });
    expect((await httpGet(`http://127.0.0.1:${port}/healthz`)).status).toBe(200);

    const held = httpGet(`http://127.0.0.1:${port}/hold?ms=500`);
    await new Promise((r) => setTimeout(r, 100));
    app.kill('SIGTERM');
    expect((await held).body).toMatchObject({ held_ms: 500 });
    const done = await app;
    expect(done.exitCode).toBe(0);
  });

  it('the broken variant and FAIL_HEALTH fail the health check', async () => {
    const dir = await fetchApp('app-v8-broken.tar.gz');
    const p1 = await freePort();
    runApp(dir, { PORT: String(p1) });
    const h1 = await waitFor('broken app', async () => httpGet(`http://127.0.0.1:${p1}/healthz`));
    expect(h1.status).toBe(500);

    const p2 = await freePort();
    runApp(dir, { PORT: String(p2), APP_VERSION: 'v8', FAIL_HEALTH: '1' });
    const h2 = await waitFor('failing app', async () => httpGet(`http://127.0.0.1:${p2}/healthz`));
    expect(h2.status).toBe(500);
  });
});
