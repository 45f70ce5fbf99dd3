/**
 * The command line: `serve` refuses to start without a token; `start` generates a token once
 * (mode 0600) and reuses it; the server shuts down gracefully, finishing a request in flight.
 */
import { stat, readFile } from 'node:fs/promises';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { execa } from 'execa';
import Fastify from 'fastify';
import { describe, expect, it } from 'vitest';
import { ensureTokenFile, main } from '../../src/cli.ts';
import { loadConfig } from '../../src/config.ts';
import { startServer } from '../../src/server.ts';
import { cleanupAfter, freePort, getTestHost, httpGet, tempDir, waitFor } from '../harness/index.ts';

describe('crate-operator CLI', () => {
  it('serve refuses to start without a token', async () => {
    const dir = await tempDir('cli');
    const lines: string[] = [];
    const saved = process.env.CRATE_API_TOKEN;
    delete process.env.CRATE_API_TOKEN;
    try {
      const rc = await main(['node', 'crate-operator', 'serve', '--state-dir', dir, '--listen', '127.0.0.1:7070'], (l) => lines.push(l));
      expect(rc).toBe(2);
    } finally {
      if (saved !== undefined) process.env.CRATE_API_TOKEN = saved;
    }
    expect(lines.join('\n')).toMatch(/refuses to start without an API token/);
  });

  it('rejects unknown flags and bad values with exit code 2', async () => {
    const lines: string[] = [];
    expect(await main(['node', 'crate-operator', 'serve', '--systemd-scope', 'bogus'], (l) => lines.push(l))).toBe(2);
    expect(await main(['node', 'crate-operator', 'serve', '--token', 'short'], (l) => lines.push(l))).toBe(2);
    expect(lines.join('\n')).toMatch(/bogus/);
  });

  it('start makes a 0600 token under the state dir once and reuses it', async () => {
    const dir = path.join(await tempDir('cli'), 'state');
    const first = await ensureTokenFile(dir);
    expect(first.created).toBe(true);
    expect(first.token.length).toBeGreaterThanOrEqual(32);
    expect((await stat(first.file)).mode & 0o777).toBe(0o600);
    expect((await readFile(first.file, 'utf8')).trim()).toBe(first.token);
    const again = await ensureTokenFile(dir);
    expect(again).toEqual({ ...first, created: false });
  });

  it('the server drains an in-flight request on close, then refuses connections', async () => {
    const dir = await tempDir('cli');
    const config = loadConfig({ env: {}, flags: { listen: `127.0.0.1:${await freePort()}`, stateDir: dir } });
    let release: () => void = () => undefined;
    const gate = new Promise<void>((r) => (release = r));
    const app = Fastify();
    app.get('/slow', async () => {
      await gate;
      return { done: true };
    });
    const server = await startServer(app, config, { handleSignals: false });
    cleanupAfter(() => server.close());
    const inFlight = httpGet(`${server.url}/slow`);
    await new Promise((r) => setTimeout(r, 100));
    const closing = server.close();
    release();
    const res = await inFlight;
    expect(res.status).toBe(200);
    expect(res.body).toEqual({ done: true });
    await closing;
    await server.closed;
    await expect(httpGet(`${server.url}/slow`, { timeoutMs: 1000 })).rejects.toThrow();
  });
});

describe('bin/crate-operator.js start (real process)', () => {
  it('answers /healthz with every backend reachable, and exits 0 on SIGTERM', { timeout: 60_000 }, async () => {
    const host = getTestHost();
    const dir = await tempDir('start');
    const port = await freePort();
    const bin = fileURLToPath(new URL('../../bin/crate-operator.js', import.meta.url));
    const sub = execa(
      process.execPath,
      [bin, 'start', '--listen', `127.0.0.1:${port}`, '--state-dir', dir, '--systemd-scope', 'user', '--docker-socket', host.docker.socket, '--caddy-admin', host.caddy.adminUrl],
      { env: { ...host.systemd.env, CRATE_LOG_LEVEL: 'warn' }, reject: false, timeout: 60_000, all: true },
    );
    cleanupAfter(async () => {
      sub.kill('SIGKILL');
      await sub;
    });
    const res = await waitFor('the operator to answer', async () => {
      if (sub.exitCode !== null) throw new Error(`operator exited: ${String((await sub).all)}`);
      const r = await httpGet(`http://127.0.0.1:${port}/healthz`);
      return r.status === 200 ? r : undefined;
    }, 30_000, 200);
    expect(res.body).toMatchObject({
      status: 'ok',
      backends: { systemd: { reachable: true }, docker: { reachable: true }, caddy: { reachable: true } },
    });
    expect((await stat(path.join(dir, 'token'))).mode & 0o777).toBe(0o600);
    sub.kill('SIGTERM');
    const done = await sub;
    expect(done.exitCode, String(done.all)).toBe(0);
    expect(String(done.all)).toMatch(/generated API token/);
  });
});
