/**
 * packaging/: the systemd unit passes `systemd-analyze verify` and keeps its hardening; the sample
 * config.yaml is read by loadConfig as documented and `serve` with it still demands a token (it comes
 * from the unit's EnvironmentFile); the Caddy boot config runs in a real Caddy (ports moved to free
 * loopback ones) and the operator's Caddy driver routes an app through its `crate` server.
 */
import { readFile, writeFile } from 'node:fs/promises';
import http from 'node:http';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { execa } from 'execa';
import { describe, expect, it } from 'vitest';
import { main } from '../../src/cli.ts';
import { loadConfig, SETTING_NAMES } from '../../src/config.ts';
import { createCaddyDriver } from '../../src/drivers/caddy.ts';
import { pingCaddy } from '../../src/host/caddy.ts';
import { requireBinary, spawnComponent, stopComponent, waitReady } from '../../src/host/process.ts';
import { cleanupAfter, freePort, httpGet, tempDir } from '../harness/index.ts';

const dir = fileURLToPath(new URL('../../packaging/', import.meta.url));

describe('packaging', () => {
  it('the unit verifies and is hardened', async () => {
    const r = await execa('systemd-analyze', ['verify', path.join(dir, 'crate-operator.service')], { reject: false, all: true });
    expect(r.exitCode, String(r.all)).toBe(0);
    expect(String(r.all).trim()).toBe('');
    const unit = await readFile(path.join(dir, 'crate-operator.service'), 'utf8');
    for (const line of [
      'ExecStart=/usr/bin/node /opt/crate-operator/bin/crate-operator.js serve --config /etc/crate-operator/config.yaml',
      'EnvironmentFile=/etc/crate-operator/env',
      'StateDirectory=crate-operator',
      'StateDirectoryMode=0700',
      'Restart=on-failure',
      'NoNewPrivileges=yes',
      'ProtectSystem=strict',
      'ReadWritePaths=/etc/systemd/system',
      'PrivateTmp=yes',
    ]) {
      expect(unit.split('\n'), line).toContain(line);
    }
  });

  it('config.yaml is read as documented, and serve still needs the token from the environment', async () => {
    const file = path.join(dir, 'config.yaml');
    const c = loadConfig({ env: {}, flags: {}, configFile: file });
    expect(c).toMatchObject({
      listen: { host: '127.0.0.1', port: 7070 },
      tokens: [],
      stateDir: '/var/lib/crate-operator',
      appsDir: '/var/lib/crate-operator/apps',
      systemdScope: 'system',
      dockerSocket: '/var/run/docker.sock',
      caddyAdmin: 'http://127.0.0.1:2019',
      caddyServer: 'crate',
      caddyListen: [':80'],
      surgePorts: { from: 20000, to: 29999 },
      stopTimeoutSec: 30,
    });
    const keys = (await readFile(file, 'utf8')).split('\n').map((l) => /^#? ?([a-z_]+):/.exec(l)?.[1]).filter((k): k is string => k !== undefined);
    const known = new Set(Object.values(SETTING_NAMES).map((s) => s.file));
    expect(keys.filter((k) => !known.has(k))).toEqual([]);
    expect(new Set(keys)).toEqual(new Set([...known].filter((k) => k !== 'token' && k !== 'callback_secret')));

    const err: string[] = [];
    const saved = process.env.CRATE_API_TOKEN;
    delete process.env.CRATE_API_TOKEN;
    try {
      expect(await main(['node', 'crate-operator', 'serve', '--config', file], (l) => err.push(l))).toBe(2);
    } finally {
      if (saved !== undefined) process.env.CRATE_API_TOKEN = saved;
    }
    expect(err.join('\n')).toMatch(/refuses to start without an API token/);
  });

  it('the Caddy boot config serves the operator\'s routes', { timeout: 60_000 }, async () => {
    const work = await tempDir('caddy');
    const boot = JSON.parse(await readFile(path.join(dir, 'caddy.json'), 'utf8')) as {
      admin: { listen: string };
      apps: { http: { servers: { crate: { listen: string[]; automatic_https?: unknown } } } };
    };
    expect(boot.admin.listen).toBe('127.0.0.1:2019');
    // Same config on free loopback ports, and without certificates (no ACME from a test).
    const [admin, port] = [await freePort(), await freePort()];
    boot.admin.listen = `127.0.0.1:${admin}`;
    boot.apps.http.servers.crate.listen = [`127.0.0.1:${port}`];
    boot.apps.http.servers.crate.automatic_https = { disable: true };
    const file = path.join(work, 'caddy.json');
    await writeFile(file, JSON.stringify(boot));
    const proc = spawnComponent(requireBinary('caddy', 'caddy'), ['run', '--config', file], {
      env: { PATH: '/usr/bin:/bin', HOME: work, XDG_DATA_HOME: path.join(work, 'data'), XDG_CONFIG_HOME: path.join(work, 'config') },
      logFile: path.join(work, 'caddy.log'),
      cwd: work,
    });
    cleanupAfter(() => stopComponent(proc, 10_000));
    const adminUrl = `http://127.0.0.1:${admin}`;
    await waitReady('caddy', proc, () => pingCaddy(adminUrl, 1000), 15_000);

    const upstream = http.createServer((_req, res) => res.end('from the app'));
    await new Promise<void>((r) => upstream.listen(0, '127.0.0.1', () => r()));
    cleanupAfter(() => new Promise<void>((r) => upstream.close(() => r())));
    const upPort = (upstream.address() as { port: number }).port;
    const caddy = createCaddyDriver({ admin: adminUrl, server: 'crate', serverSettings: { listen: [`127.0.0.1:${port}`], gracePeriodMs: 5_000 } });
    cleanupAfter(() => caddy.close());
    expect((await caddy.ensureServer()).changed).toBe(false);
    await caddy.upsertRoute({ team: 'pkg', env: 1, app: 1 }, 'pkg.test', [upPort]);
    const res = await httpGet(`http://127.0.0.1:${port}/`, { host: 'pkg.test' });
    expect(res.status).toBe(200);
    expect(res.text).toBe('from the app');
  });
});
