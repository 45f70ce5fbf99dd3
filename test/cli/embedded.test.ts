/**
 * Embedded defaults (src/cli/embedded.ts) against real components: a Docker socket and a Caddy admin
 * API that answer at the configured defaults are used as the host's; systemd (not PID 1 here) gets a
 * private user manager under `<state dir>/.host/`; stop() removes everything it started. A workspace
 * left by a killed operator is cleaned up; one of a live operator refuses the start; a taken Caddy
 * listen address fails the start cleanly.
 */
import { spawn } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { mkdir, mkdtemp, readdir, readFile, rm, writeFile } from 'node:fs/promises';
import net from 'node:net';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { hostBase, prepareEmbeddedHost, systemSystemdRuns } from '../../src/cli/embedded.ts';
import { loadConfig, type OperatorConfig } from '../../src/config.ts';
import { pidAlive, pidsMentioning } from '../../src/host/process.ts';
import { systemctlWith } from '../../src/host/systemd-user.ts';
import { cleanupAfter, freePort, getTestHost, tempDir } from '../harness/index.ts';

const notGiven = { systemdScope: false, dockerSocket: false, caddyAdmin: false };

async function configIn(dir: string, over: Partial<OperatorConfig> = {}): Promise<OperatorConfig> {
  const host = getTestHost();
  // Short: the private components' sockets live below it.
  const stateDir = path.join(dir, 's');
  await mkdir(stateDir, { recursive: true });
  return { ...loadConfig({ env: {}, flags: {} }), stateDir, dockerSocket: host.docker.socket, caddyAdmin: host.caddy.adminUrl, ...over };
}

function startTime(pid: number): string | undefined {
  const s = readFileSync(`/proc/${pid}/stat`, 'utf8');
  return s.slice(s.lastIndexOf(')') + 2).split(' ')[19];
}

/** A process whose command line names `dir` (as a component of a workspace would), not a child of ours. */
function strayMentioning(dir: string): number {
  const p = spawn('/bin/sh', ['-c', 'sleep 600', dir], { detached: true, stdio: 'ignore' });
  p.unref();
  return p.pid as number;
}

describe('embedded defaults', () => {
  it('uses the answering Docker and Caddy, starts a private systemd, and stops it all', { timeout: 60_000 }, async () => {
    // A short state dir path: the workspace goes to <state dir>/.host (longer ones use /tmp/crate-s-<hash>).
    const dir = await mkdtemp('/tmp/ce-');
    cleanupAfter(() => rm(dir, { recursive: true, force: true }));
    const config = await configIn(dir);
    expect(hostBase(config.stateDir)).toBe(path.join(config.stateDir, '.host'));
    const h = await prepareEmbeddedHost(config, notGiven);
    cleanupAfter(() => h.stop());
    expect(h.docker.how).toBe('host');
    expect(h.caddy.how).toBe('host');
    expect(h.config.dockerSocket).toBe(config.dockerSocket);
    expect(h.config.caddyAdmin).toBe(config.caddyAdmin);
    if (await systemSystemdRuns()) {
      expect(h.systemd.how).toBe('host');
      return;
    }
    expect(h.systemd.how).toBe('private');
    expect(h.config.systemdScope).toBe('user');
    expect(h.workspace?.startsWith(path.join(config.stateDir, '.host', 'crate-h-'))).toBe(true);
    expect(h.systemd.detail).toContain(h.workspace);
    const env = h.systemdEnv as Record<string, string>;
    expect((await systemctlWith(env, ['list-units', '--output=json'])).exitCode).toBe(0);
    const current = JSON.parse(await readFile(path.join(config.stateDir, '.host', 'current.json'), 'utf8')) as Record<string, { how: string }>;
    expect(current.systemd?.how).toBe('private');
    expect(current.docker?.how).toBe('host');

    await h.stop();
    expect(h.pids.every((p) => !pidAlive(p))).toBe(true);
    expect(await pidsMentioning(h.workspace as string)).toEqual([]);
    expect(await readdir(path.join(config.stateDir, '.host'))).toEqual([]);
  });

  it('cleans up after a killed operator and refuses to run beside a live one', { timeout: 60_000 }, async () => {
    const config = await configIn(await tempDir('emb'), { systemdScope: 'user' });
    const base = path.join(config.stateDir, '.host');
    // A workspace whose owner died, with a process of it still running.
    const dead = path.join(base, 'crate-h-0000dead');
    await mkdir(dead, { recursive: true });
    await writeFile(path.join(dead, 'owner.json'), JSON.stringify({ pid: 2 ** 22 + 7, start: '1' }));
    const stray = strayMentioning(dead);
    cleanupAfter(() => {
      try {
        process.kill(stray, 'SIGKILL');
      } catch {
        // Gone, as it should be.
      }
    });
    const given = { systemdScope: true, dockerSocket: true, caddyAdmin: true };
    const h = await prepareEmbeddedHost(config, given);
    await h.stop();
    expect(pidAlive(stray) && !readFileSync(`/proc/${stray}/stat`, 'utf8').includes(') Z')).toBe(false);
    expect((await readdir(base)).includes('crate-h-0000dead')).toBe(false);

    // A workspace whose owner lives: another operator uses this state dir.
    const other = spawn('/bin/sleep', ['600'], { stdio: 'ignore' });
    cleanupAfter(() => other.kill('SIGKILL'));
    const live = path.join(base, 'crate-h-0000beef');
    await mkdir(live, { recursive: true });
    await writeFile(path.join(live, 'owner.json'), JSON.stringify({ pid: other.pid, start: startTime(other.pid as number) }));
    await expect(prepareEmbeddedHost(config, given)).rejects.toThrow(/another crate-operator \(pid \d+\) runs with this state dir/);
  });

  it('a taken Caddy listen address fails the start and leaves nothing behind', { timeout: 60_000 }, async () => {
    const busy = net.createServer();
    await new Promise<void>((r) => busy.listen(0, '127.0.0.1', () => r()));
    cleanupAfter(() => new Promise<void>((r) => busy.close(() => r())));
    const port = (busy.address() as net.AddressInfo).port;
    const config = await configIn(await tempDir('emb'), { caddyAdmin: `http://127.0.0.1:${await freePort()}`, caddyListen: [`127.0.0.1:${port}`] });
    // This state dir's path is long: its workspaces live in /tmp/crate-s-<hash>, removed when empty.
    expect(hostBase(config.stateDir)).toMatch(/^\/tmp\/crate-s-[0-9a-f]{12}$/);
    await expect(prepareEmbeddedHost(config, notGiven)).rejects.toThrow(new RegExp(`127\\.0\\.0\\.1:${port} is already in use`));
    expect(await readdir(path.join(config.stateDir, '.host'))).toEqual([]);
    await expect(readdir(hostBase(config.stateDir))).rejects.toThrow(/ENOENT/);
    expect(await pidsMentioning(config.stateDir)).toEqual([]);
  });
});
