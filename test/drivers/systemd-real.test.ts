// The systemd driver and observer against the harness's real user manager (systemd 252):
// lifecycle create → observe → change → observe → stop → remove → gone, env and argv byte-exact
// round trips via /proc, systemd-analyze verify, typed failures, and constant observer cost.
import { copyFile, lstat, mkdir, readFile, readdir, stat, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { execa } from 'execa';
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { hasCode } from '../../src/core/errors.ts';
import { hostCallCounts } from '../../src/core/hostcalls.ts';
import { unitName, type AppKey } from '../../src/core/identity.ts';
import { fetchRelease } from '../../src/drivers/assets.ts';
import { waitHealthy } from '../../src/drivers/health.ts';
import { appDir, envFilePath, releaseDir } from '../../src/drivers/layout.ts';
import { createSystemdDriver, type SystemdDriver } from '../../src/drivers/systemd.ts';
import { instanceUnitSpec, renderUnit, type ExecArg, type UnitSpec } from '../../src/drivers/unit.ts';
import { createSystemdObserver, type ObservedUnit, type SystemdSnapshot } from '../../src/observers/systemd.ts';
import { cleanupAfter, freePort, getTestHost, httpGet, systemdEnv, tempDir, uniqueName, waitFor } from '../harness/index.ts';

const APP_SOURCE = fileURLToPath(new URL('../fixtures/app/server.mjs', import.meta.url));

interface Rig {
  appsDir: string;
  key: AppKey;
  driver: SystemdDriver;
  observer: ReturnType<typeof createSystemdObserver>;
  spec(instance: string, patch?: Partial<UnitSpec>): UnitSpec;
}

async function rig(stopTimeoutSec = 5): Promise<Rig> {
  const host = getTestHost();
  const appsDir = await tempDir('apps');
  const key: AppKey = { team: uniqueName('sd'), env: 1, app: 1 };
  const opts = { scope: 'user' as const, env: systemdEnv(), unitDir: host.systemd.unitDir, appsDir, stopTimeoutSec, timeoutMs: 20_000 };
  const driver = createSystemdDriver(opts);
  const observer = createSystemdObserver(opts);
  const created = new Set<string>();
  // Whatever a test made, remove it afterwards (remove is idempotent).
  cleanupAfter(() => driver.remove([...created]));
  return {
    appsDir,
    key,
    driver,
    observer,
    spec(instance, patch = {}) {
      const spec: UnitSpec = {
        key,
        instance,
        version: 'v1',
        generation: 0,
        port: 1,
        workingDirectory: appsDir,
        argv: ['/bin/sleep', '300'],
        envFile: envFilePath(appsDir, key, instance),
        env: {},
        stopTimeoutSec,
        scope: 'user',
        ...patch,
      };
      created.add(unitName(spec.key, spec.instance, spec.spec));
      return { ...spec, envFile: envFilePath(appsDir, spec.key, spec.instance, spec.spec) };
    },
  };
}

async function observed(r: Rig): Promise<ObservedUnit[]> {
  const snap = await r.observer.observe();
  expect(snap.unavailable, JSON.stringify(snap)).toBe(false);
  return (snap as SystemdSnapshot).units.filter((u) => u.key.team === r.key.team);
}

async function mainPid(r: Rig, unit: string): Promise<number> {
  const [d] = await r.observer.details([unit]);
  return d?.mainPid ?? 0;
}

async function readProcStrings(pid: number, file: 'environ' | 'cmdline'): Promise<string[]> {
  const buf = await readFile(`/proc/${pid}/${file}`);
  const parts = buf.toString('utf8').split('\0');
  parts.pop();
  return parts;
}

async function release(r: Rig, version: string): Promise<string> {
  const dir = releaseDir(r.appsDir, r.key, version);
  await mkdir(dir, { recursive: true });
  await copyFile(APP_SOURCE, path.join(dir, 'server.mjs'));
  await writeFile(path.join(dir, 'VERSION'), `${version}\n`);
  return dir;
}

describe('systemd driver + observer on a real user manager', () => {
  it('create → observe → change → observe → stop → remove → gone', async () => {
    const r = await rig();
    const port = await freePort();
    const unit = unitName(r.key, 'web-1');
    const v1 = r.spec('web-1', { slot: 'blue', version: 'v1', port, workingDirectory: await release(r, 'v1'), argv: ['node', 'server.mjs'], env: { GREETING: 'hello world' }, deployment: 'd1' });

    const [w1] = await r.driver.writeUnits([v1]);
    expect(w1).toEqual({ unit, changed: true, unitChanged: true, envChanged: true });
    expect((await stat(v1.envFile)).mode & 0o777).toBe(0o600);
    expect((await stat(path.dirname(v1.envFile))).mode & 0o777).toBe(0o700);
    await r.driver.daemonReload();
    await r.driver.start([unit]);
    await r.driver.start([unit]); // idempotent
    const hello = await waitFor('v1 answers', async () => (await httpGet(`http://127.0.0.1:${port}/`)).body as { version: string });
    expect(hello.version).toBe('v1');
    expect(((await httpGet(`http://127.0.0.1:${port}/env?name=GREETING`)).body as { value: string }).value).toBe('hello world');

    let [o] = await observed(r);
    expect(o).toMatchObject({ unit, spec: undefined, state: 'running', load: 'loaded', active: 'active', sub: 'running', fileExists: true });
    expect(o?.identity).toEqual({ key: r.key, instance: 'web-1', slot: 'blue', version: 'v1', generation: 0, port, deployment: 'd1', spec: undefined });
    const pid1 = await mainPid(r, unit);
    expect(pid1).toBeGreaterThan(0);

    // Unchanged spec: nothing written.
    expect((await r.driver.writeUnits([v1]))[0]?.changed).toBe(false);

    // Change: new release, new generation.
    const v2 = { ...v1, version: 'v2', generation: 1, workingDirectory: await release(r, 'v2') };
    expect((await r.driver.writeUnits([v2]))[0]).toMatchObject({ changed: true, unitChanged: true, envChanged: false });
    await r.driver.daemonReload();
    await r.driver.restart([unit]);
    await waitFor('v2 answers', async () => ((await httpGet(`http://127.0.0.1:${port}/`)).body as { version: string }).version === 'v2');
    [o] = await observed(r);
    expect(o?.identity).toMatchObject({ version: 'v2', generation: 1 });
    expect(await mainPid(r, unit)).not.toBe(pid1);

    // Only the env changes.
    expect((await r.driver.writeUnits([{ ...v2, env: { GREETING: 'bye' } }]))[0]).toMatchObject({ changed: true, unitChanged: false, envChanged: true });

    const wants = path.join(r.driver.unitDir, 'default.target.wants', unit);
    expect((await lstat(wants)).isSymbolicLink()).toBe(true);
    await r.driver.stop([unit]);
    await r.driver.stop([unit]); // idempotent
    await expect(lstat(wants)).rejects.toMatchObject({ code: 'ENOENT' });
    [o] = await observed(r);
    expect(o).toMatchObject({ unit, state: 'stopped', active: 'inactive', fileExists: true });
    expect(o?.identity?.version).toBe('v2');
    await expect(httpGet(`http://127.0.0.1:${port}/`, { timeoutMs: 1000 })).rejects.toThrow();

    // restart starts a stopped unit and enables it again
    await r.driver.restart([unit]);
    expect((await lstat(wants)).isSymbolicLink()).toBe(true);
    await waitFor('v2 answers again', async () => ((await httpGet(`http://127.0.0.1:${port}/`)).body as { version: string }).version === 'v2');

    await r.driver.remove([unit]);
    await r.driver.remove([unit]); // idempotent
    await expect(lstat(wants)).rejects.toMatchObject({ code: 'ENOENT' });
    expect(await observed(r)).toEqual([]);
    await expect(stat(path.join(r.driver.unitDir, unit))).rejects.toMatchObject({ code: 'ENOENT' });
    await expect(stat(v1.envFile)).rejects.toMatchObject({ code: 'ENOENT' });
  });

  it('a release from the asset server runs as a unit and turns healthy (assets → unit → health → observe)', async () => {
    const r = await rig();
    const port = await freePort();
    const rel = await fetchRelease({ assetUrl: `${getTestHost().assets.baseUrl}/app-3.1.4.tar.gz`, appDir: appDir(r.appsDir, r.key), version: '3.1.4' });
    const spec = instanceUnitSpec(
      { appsDir: r.appsDir, scope: 'user', stopTimeoutSec: 5 },
      { key: r.key, instance: 'green-1', slot: 'green', version: rel.version, generation: 0, port, env: { INSTANCE_ID: 'green-1' }, release: rel },
    );
    r.spec('green-1'); // registers cleanup
    const unit = unitName(r.key, 'green-1');
    await r.driver.writeUnits([spec]);
    await r.driver.daemonReload();
    await r.driver.start([unit]);
    const health = await waitHealthy({ port, path: '/healthz', timeoutMs: 1000, intervalMs: 50, deadlineMs: 10_000 });
    expect(health).toMatchObject({ healthy: true });
    expect((await httpGet(`http://127.0.0.1:${port}/`)).body).toMatchObject({ version: '3.1.4', instance: 'green-1' });
    const [o] = await observed(r);
    expect(o).toMatchObject({ unit, active: 'active', identity: { slot: 'green', version: '3.1.4', port } });
  });

  it('two revisions of one instance run side by side (spec in the unit name), removed one by one', async () => {
    const r = await rig();
    const [pa, pb] = [await freePort(), await freePort()];
    const dir = await release(r, 'v1');
    const a = r.spec('web', { spec: 'aaaaaa', port: pa, workingDirectory: dir, argv: ['node', 'server.mjs'], env: { INSTANCE_ID: 'old' } });
    const b = r.spec('web', { spec: 'bbbbbb', port: pb, workingDirectory: dir, argv: ['node', 'server.mjs'], env: { INSTANCE_ID: 'new' } });
    expect(a.envFile).not.toBe(b.envFile);
    const results = await r.driver.writeUnits([a, b]);
    expect(results.map((x) => x.unit)).toEqual([unitName(r.key, 'web', 'aaaaaa'), unitName(r.key, 'web', 'bbbbbb')]);
    await r.driver.daemonReload();
    await r.driver.start(results.map((x) => x.unit));
    for (const [port, id] of [[pa, 'old'], [pb, 'new']] as const) {
      await waitFor(`${id} answers`, async () => ((await httpGet(`http://127.0.0.1:${port}/`)).body as { instance: string }).instance === id);
    }
    let units = await observed(r);
    expect(units.map((u) => [u.instance, u.spec, u.state, u.identity?.port, u.identity?.spec])).toEqual([
      ['web', 'aaaaaa', 'running', pa, 'aaaaaa'],
      ['web', 'bbbbbb', 'running', pb, 'bbbbbb'],
    ]);
    await r.driver.remove([unitName(r.key, 'web', 'aaaaaa')]);
    units = await observed(r);
    expect(units.map((u) => u.spec)).toEqual(['bbbbbb']);
    await expect(stat(a.envFile)).rejects.toMatchObject({ code: 'ENOENT' });
    expect((await stat(b.envFile)).isFile()).toBe(true);
  });

  it('sees drift: a killed process is restarted (NRestarts), a deleted file, a file systemd never loaded', async () => {
    const r = await rig();
    const a = r.spec('a');
    const b = r.spec('b');
    await r.driver.writeUnits([a, b]);
    await r.driver.daemonReload();
    const ua = unitName(r.key, 'a');
    const ub = unitName(r.key, 'b');
    await r.driver.start([ua]);
    const pid = await mainPid(r, ua);
    process.kill(pid, 'SIGKILL');
    const d = await waitFor('restart after SIGKILL', async () => {
      const [x] = await r.observer.details([ua]);
      return x && x.nRestarts === 1 && x.mainPid !== 0 && x.mainPid !== pid && x.active === 'active' ? x : undefined;
    }, 10_000, 100);
    expect(d.result).toBe('success');

    // b: written, never started → listed from its file only.
    let units = await observed(r);
    expect(units.find((u) => u.unit === ub)).toMatchObject({ load: 'not-loaded', active: 'inactive', fileExists: true, identity: { instance: 'b', version: 'v1' } });

    // a's file deleted under the running unit.
    await execa('rm', [path.join(r.driver.unitDir, ua)]);
    await r.driver.daemonReload();
    units = await observed(r);
    expect(units.find((u) => u.unit === ua)).toMatchObject({ load: 'not-found', active: 'active', fileExists: false, identity: undefined });
    const [da] = await r.observer.details([ua]);
    expect(da?.mainPid).toBeGreaterThan(0);

    // stop and remove still work without the file.
    await r.driver.stop([ua]);
    await r.driver.remove([ua, ub]);
    expect(await observed(r)).toEqual([]);
  });

  it('stop sends SIGTERM, then SIGKILL after TimeoutStopSec', async () => {
    const r = await rig(1);
    const unit = unitName(r.key, 'stubborn');
    await r.driver.writeUnits([r.spec('stubborn', { argv: ['/bin/sh', '-c', 'trap "" TERM; while :; do sleep 0.1; done'] })]);
    await r.driver.daemonReload();
    await r.driver.start([unit]);
    const t0 = performance.now();
    await r.driver.stop([unit]);
    const ms = performance.now() - t0;
    expect(ms).toBeGreaterThanOrEqual(900);
    expect(ms).toBeLessThan(5000);
    const [d] = await r.observer.details([unit]);
    expect(d?.active).not.toBe('active');
    expect(d?.result).toBe('timeout');
  });

  it('env values reach the process byte for byte (/proc/<pid>/environ), including random strings', async () => {
    const r = await rig();
    const tricky: Record<string, string> = {
      NEWLINES: 'line1\nline2\n\n',
      CRLF: 'a\r\nb\r',
      QUOTES: `he said "hi" and 'yo'`,
      PERCENT: '100% %n %% %i',
      DOLLAR: '$HOME ${HOME} $$ $',
      BACKSLASH: 'back\\slash \\n \\\\ end\\',
      BACKSLASH_NEWLINE: 'x\\\ny',
      SPACES: '  spaced  ',
      HASH: '#notcomment # x',
      SEMI: 'a;b; c',
      UNICODE: 'héllo ✓ 😀 日本',
      BACKTICK: 'tick`cmd` $(x)',
      EMPTY: '',
      TAB: 'a\tb',
      EQUALS: 'k=v==',
      CONTROL: '\u0001\u001b[0m\u007f',
      SINGLE_QUOTE_ONLY: "'",
      DOUBLE_QUOTE_ONLY: '"',
      LONG: 'z'.repeat(100_000),
    };
    const random = fc.sample(fc.string({ unit: 'grapheme', maxLength: 40 }).filter((s) => !s.includes('\u0000')), { numRuns: 150, seed: 4242 });
    random.forEach((v, i) => {
      tricky[`RANDOM_${i}`] = v;
    });
    const unit = unitName(r.key, 'env');
    await r.driver.writeUnits([r.spec('env', { env: tricky, port: 12345 })]);
    await r.driver.daemonReload();
    await r.driver.start([unit]);
    const pid = await mainPid(r, unit);
    const environ = new Map((await readProcStrings(pid, 'environ')).map((e) => [e.slice(0, e.indexOf('=')), e.slice(e.indexOf('=') + 1)]));
    for (const [k, v] of Object.entries(tricky)) expect(environ.get(k), k).toBe(v);
    expect(environ.get('PORT')).toBe('12345');
    expect(environ.get('HOST')).toBe('127.0.0.1');
  });

  it('ExecStart arguments reach the process byte for byte (/proc/<pid>/cmdline); ${VAR} parts are expanded', async () => {
    const r = await rig();
    const literal = ['plain', 'with space', 'q"uote', "s'ingle", 'back\\slash', '100%n %i', '$HOME', '${HOME}', '$$', ';', '\\;', '&&', '|', 'uni✓😀', '#hash', '', '-dash', '--opt=a b'];
    const argv: ExecArg[] = ['/bin/sh', '-c', 'sleep 300; :', 'argv0', ...literal, { parts: ['--port=', { env: 'PORT' }, '%$'] }, { parts: [{ env: 'MISSING' }] }];
    const unit = unitName(r.key, 'args');
    await r.driver.writeUnits([r.spec('args', { argv, port: 23456 })]);
    await r.driver.daemonReload();
    await r.driver.start([unit]);
    const cmdline = await readProcStrings(await mainPid(r, unit), 'cmdline');
    expect(cmdline).toEqual(['/bin/sh', '-c', 'sleep 300; :', 'argv0', ...literal, '--port=23456%$', '']);
  });

  it('every rendered unit passes systemd-analyze verify', async () => {
    const r = await rig();
    const dir = await tempDir('verify');
    const specs: UnitSpec[] = [
      r.spec('plain'),
      r.spec('full', { slot: 'green', deployment: '123', generation: 99, port: 65535, version: '2.0.0-rc.1+x', argv: ['node', 'server.mjs', '--port', { parts: [{ env: 'PORT' }] }] }),
      r.spec('tricky', { argv: ['/bin/sh', '-c', 'echo "$1" 100% \\ ; exit 0', 'x', "'", '`', '%%', '$$', '${A}', ''] }),
      { ...r.spec('system'), scope: 'system' },
    ];
    for (const [i, s] of specs.entries()) {
      // systemd-analyze reads `FILE:ALIAS`, so a name with `:` must be given as an alias of a plain file name.
      const file = path.join(dir, `u${i}.service`);
      await writeFile(file, renderUnit(s));
      const res = await execa('systemd-analyze', ['--user', 'verify', `${file}:${unitName(s.key, s.instance)}`], { env: systemdEnv(), extendEnv: false, reject: false, timeout: 15_000 });
      expect({ exit: res.exitCode, out: `${String(res.stdout)}${String(res.stderr)}` }, s.instance).toEqual({ exit: 0, out: '' });
    }
    // And verify does catch a broken unit (so the check above can fail).
    const broken = path.join(dir, 'broken.service');
    await writeFile(broken, renderUnit(specs[0] as UnitSpec).replace('ExecStart="/bin/sleep"', 'ExecStart="sleep/x"'));
    const bad = await execa('systemd-analyze', ['--user', 'verify', broken], { env: systemdEnv(), extendEnv: false, reject: false, timeout: 15_000 });
    expect(bad.exitCode).not.toBe(0);
  });

  it('typed errors: no manager → E_SYSTEMD_UNAVAILABLE, refused verb → E_SYSTEMCTL, hung systemctl → deadline', async () => {
    const host = getTestHost();
    const appsDir = await tempDir('apps');
    const nowhere = await tempDir('no-runtime');
    const opts = { scope: 'user' as const, env: { ...systemdEnv(), XDG_RUNTIME_DIR: nowhere }, unitDir: host.systemd.unitDir, appsDir, stopTimeoutSec: 5 };
    const snap = await createSystemdObserver(opts).observe();
    expect(snap).toMatchObject({ unavailable: true, code: 'E_SYSTEMD_UNAVAILABLE' });
    await expect(createSystemdDriver(opts).daemonReload()).rejects.toSatisfy((e) => hasCode(e, 'E_SYSTEMD_UNAVAILABLE'));

    const r = await rig();
    const ghost = unitName(r.key, 'ghost');
    r.spec('ghost');
    const err = await r.driver.start([ghost]).then(() => undefined, (e: unknown) => e);
    expect(hasCode(err, 'E_SYSTEMCTL'), String(err)).toBe(true);
    expect((err as Error).message).toMatch(/ghost/);

    // Type=exec: a program that cannot be executed fails the start instead of "starting" forever.
    const missing = unitName(r.key, 'missing');
    await r.driver.writeUnits([r.spec('missing', { argv: ['/nonexistent/bin/server'] })]);
    await r.driver.daemonReload();
    const startErr = await r.driver.start([missing]).then(() => undefined, (e: unknown) => e);
    expect(hasCode(startErr, 'E_SYSTEMCTL'), String(startErr)).toBe(true);
    const failed = (await observed(r)).find((u) => u.unit === missing);
    expect(failed?.state === 'failed' || failed?.state === 'starting', JSON.stringify(failed)).toBe(true);

    const fake = path.join(appsDir, 'hung-systemctl');
    await writeFile(fake, '#!/bin/sh\nexec sleep 30\n', { mode: 0o755 });
    const t0 = performance.now();
    const hung = await createSystemdObserver({ ...opts, env: systemdEnv(), systemctl: fake, timeoutMs: 300 }).observe();
    expect(hung).toMatchObject({ unavailable: true, code: 'E_SYSTEMD_UNAVAILABLE' });
    expect(performance.now() - t0).toBeLessThan(3000);

    await expect(r.driver.start(['sshd.service'])).rejects.toSatisfy((e) => hasCode(e, 'E_INVALID_UNIT_FIELD'));
    await expect(r.driver.writeUnits([r.spec('x', { argv: ['node', 'a\nExecStartPre=/bin/false'] })])).rejects.toSatisfy((e) => hasCode(e, 'E_INVALID_UNIT_FIELD'));
    expect((await readdir(r.driver.unitDir)).filter((f) => f.includes(r.key.team))).toEqual([missing]);
  });

  it('observer cost is one systemctl call for 1 and for 50 apps', async () => {
    const r = await rig();
    const calls = async (): Promise<{ calls: number; mine: number }> => {
      const before = hostCallCounts().systemctl;
      const snap = await r.observer.observe();
      const mine = snap.unavailable ? -1 : snap.units.filter((u) => u.key.team === r.key.team).length;
      return { calls: hostCallCounts().systemctl - before, mine };
    };
    const specs = Array.from({ length: 50 }, (_, i) => r.spec(`i${i}`, { key: { ...r.key, app: i + 1 } }));
    await r.driver.writeUnits(specs.slice(0, 1));
    await r.driver.daemonReload();
    await r.driver.start([unitName(specs[0]!.key, 'i0')]);
    const one = await calls();
    await r.driver.writeUnits(specs.slice(1));
    await r.driver.daemonReload();
    // Half running, half only on disk: both kinds are in the snapshot.
    await r.driver.start(specs.slice(1, 25).map((s) => unitName(s.key, s.instance)));
    const fifty = await calls();
    expect(one).toEqual({ calls: 1, mine: 1 });
    expect(fifty).toEqual({ calls: 1, mine: 50 });
    await r.driver.remove(specs.map((s) => unitName(s.key, s.instance)));
  });
});
