/**
 * checkBackends against the harness's real components, and against addresses where nothing answers.
 */
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { loadConfig } from '../../src/config.ts';
import { checkBackends } from '../../src/host/reachability.ts';
import { getTestHost, tempDir } from '../harness/index.ts';

describe('checkBackends', () => {
  it('reaches the real user manager, dockerd and caddy', async () => {
    const host = getTestHost();
    const config = loadConfig({
      env: {},
      flags: { systemdScope: 'user', dockerSocket: host.docker.socket, caddyAdmin: host.caddy.adminUrl, stateDir: host.tmpRoot },
    });
    const s = await checkBackends(config, { env: { PATH: process.env.PATH, ...host.systemd.env } });
    expect(s.systemd).toMatchObject({ reachable: true });
    expect(s.docker).toMatchObject({ reachable: true, detail: expect.stringContaining('1.41') as unknown });
    expect(s.caddy).toMatchObject({ reachable: true });
  });

  it('reports each unreachable component with a reason, within its deadline', async () => {
    const dir = await tempDir('reach');
    const config = loadConfig({
      env: {},
      flags: { systemdScope: 'user', dockerSocket: path.join(dir, 'none.sock'), caddyAdmin: 'http://127.0.0.1:1', stateDir: dir },
    });
    const t = Date.now();
    const s = await checkBackends(config, { timeoutMs: 1000, env: { PATH: process.env.PATH, XDG_RUNTIME_DIR: dir } });
    expect(Date.now() - t).toBeLessThan(3000);
    expect(s.systemd.reachable).toBe(false);
    expect(s.docker).toMatchObject({ reachable: false, detail: expect.stringContaining('none.sock') as unknown });
    expect(s.caddy).toMatchObject({ reachable: false, detail: expect.stringContaining('127.0.0.1:1') as unknown });
  });

  it('reaches caddy through a unix admin socket', async () => {
    const dir = await tempDir('reach');
    const config = loadConfig({ env: {}, flags: { caddyAdmin: `unix:${path.join(dir, 'admin.sock')}`, stateDir: dir } });
    const s = await checkBackends(config, { timeoutMs: 1000 });
    expect(s.caddy).toMatchObject({ reachable: false, detail: expect.stringContaining('admin.sock') as unknown });
  });
});
