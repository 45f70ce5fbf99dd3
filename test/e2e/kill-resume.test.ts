/**
 * Kill test: the operator runs as a child process (`bin/crate-operator.js serve`) against the harness's
 * real systemd user manager and Caddy, and is SIGKILLed in the middle of a binary blue/green and of a
 * binary rolling deploy, then started again on the same state dir. Each deployment must converge to
 * its target version (or cleanly back), leave no orphan unit or route, and send exactly one terminal
 * callback (the same event id on any retry).
 *
 * Kill points are chosen by polling the status endpoint for the running step (its name prefix and,
 * for rolling, which occurrence): the operator is killed as soon as the deployment reached that step
 * or a later one. `CRATE_KILL_POINTS=n` runs n kill points per scenario (default 3, for CI; a soak run
 * uses 10+, cycling through the list).
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { createWriteStream } from 'node:fs';
import http from 'node:http';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import type { OperatorConfig } from '../../src/config.ts';
import { cleanupAfter, freePort, getTestHost, tempDir, uniqueName, waitFor } from '../harness/index.ts';
import { startCallbackReceiver, terminalOf, type CallbackReceiver } from './callbacks.ts';
import { routePorts, teamUnitFiles, teamUnits } from './host-view.ts';
import { cleanupTeam, surgeBlock } from './operator.ts';

const TOKEN = 'kill-test-token-0123456789';
const KILL_POINTS = Math.max(1, Number(process.env.CRATE_KILL_POINTS ?? 3) || 3);
const REPO = path.resolve(import.meta.dirname, '../..');

/**
 * Blue/green kill points, most telling first: before any step, during probing, right after the switch
 * (drain), ... `broken:` deploys a version whose health check fails, killed while it is probed or
 * while it is rolled back: it must end `rolled_back` with the previous version serving throughout.
 */
const BLUE_GREEN_POINTS = ['accepted', 'wait until', 'drain', 'broken:rolling back', 'route', 'start', 'stop', 'broken:wait until', 'fetch release'];
/** Rolling kill points (`step#n`: the n-th step of that kind), most telling first. */
const ROLLING_POINTS = ['wait until#2', 'drain#1', 'stop#3', 'route#2', 'start#1', 'remove#1', 'wait until#3', 'drain#3', 'start#2', 'stop#1', 'route#3', 'fetch release#1'];

/** The first n points, cycling through the list when n exceeds it. */
export function pickPoints(list: readonly string[], n: number): string[] {
  return Array.from({ length: n }, (_, i) => list[i % list.length] as string);
}

interface Step {
  name: string;
  status: string;
}

/** The operator as a child process on a fixed state dir and API port. */
class ChildOperator {
  child: ChildProcess | null = null;
  readonly url: string;
  starts = 0;
  constructor(
    private readonly stateDir: string,
    private readonly port: number,
    private readonly logFile: string,
    private readonly env: Record<string, string>,
  ) {
    this.url = `http://127.0.0.1:${port}`;
  }

  async start(): Promise<void> {
    const host = getTestHost();
    const args = [
      'bin/crate-operator.js', 'serve',
      '--listen', `127.0.0.1:${this.port}`,
      '--token', TOKEN,
      '--state-dir', this.stateDir,
      '--systemd-scope', 'user',
      '--docker-socket', host.docker.socket,
      '--caddy-admin', host.caddy.adminUrl,
      '--caddy-server', host.caddy.serverName,
      '--server-id', 'kill-host',
    ];
    const log = createWriteStream(this.logFile, { flags: 'a' });
    const child = spawn(process.execPath, args, {
      cwd: REPO,
      env: {
        PATH: process.env.PATH ?? '/usr/bin:/bin',
        ...host.systemd.env,
        CRATE_ALLOW_PRIVATE: '127.0.0.0/8',
        CRATE_CADDY_LISTEN: `127.0.0.1:${host.caddy.httpPort}`,
        CRATE_LOG_FORMAT: 'json',
        CRATE_LOG_LEVEL: 'info',
        ...this.env,
      },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    child.stdout?.pipe(log, { end: false });
    child.stderr?.pipe(log, { end: false });
    this.child = child;
    this.starts += 1;
    await waitFor('the operator to answer', async () => (await this.call('GET', '/healthz')).status === 200, 20_000, 50);
  }

  /** SIGKILL the child (only the process this test started) and wait until it is gone. */
  async kill(): Promise<void> {
    const c = this.child;
    if (!c || c.exitCode !== null || c.signalCode !== null) return;
    const gone = new Promise<void>((resolve) => c.once('exit', () => resolve()));
    c.kill('SIGKILL');
    await gone;
    this.child = null;
  }

  call(method: 'GET' | 'POST', p: string, body?: unknown): Promise<{ status: number; body: Record<string, unknown> }> {
    return new Promise((resolve, reject) => {
      const data = body === undefined ? undefined : JSON.stringify(body);
      const req = http.request(`${this.url}${p}`, { method, agent: false, headers: { authorization: `Bearer ${TOKEN}`, ...(data ? { 'content-type': 'application/json' } : {}) }, timeout: 10_000 }, (res) => {
        const chunks: Buffer[] = [];
        res.on('data', (c: Buffer) => chunks.push(c));
        res.on('end', () => {
          const text = Buffer.concat(chunks).toString('utf8');
          resolve({ status: res.statusCode ?? 0, body: text ? (JSON.parse(text) as Record<string, unknown>) : {} });
        });
      });
      req.on('timeout', () => req.destroy(new Error('timeout')));
      req.on('error', reject);
      req.end(data);
    });
  }

  async status(id: number): Promise<Record<string, unknown>> {
    return (await this.call('GET', `/v1/app/deploy/${id}/status`)).body;
  }

  /** Wait for a terminal status (the operator may be restarting meanwhile: errors count as "not yet"). */
  settle(id: number, timeoutMs = 40_000): Promise<Record<string, unknown>> {
    return waitFor(`deployment ${id} to finish`, async () => {
      const s = await this.status(id);
      return ['succeeded', 'failed', 'rolled_back', 'superseded'].includes(String(s.status)) ? s : undefined;
    }, timeoutMs, 100);
  }
}

/**
 * Poll the status of deployment `id` until it reached kill point `point` (`accepted`: at once, the
 * 202 just came back) or a later step; returns what was running when it matched.
 */
async function reach(op: ChildOperator, id: number, point: string): Promise<string> {
  if (point === 'accepted') return 'accepted (nothing ran yet)';
  if (point === 'rolling back') {
    return waitFor(`deployment ${id} to roll back`, async () => {
      const s = await op.status(id);
      if (s.phase === 'rolling back') return 'rolling back';
      return String(s.status) === 'in_progress' || String(s.status) === 'pending' ? undefined : `finished (${String(s.status)}) before rolling back`;
    }, 30_000, 10);
  }
  const [prefix, nth] = point.split('#') as [string, string | undefined];
  const n = Number(nth ?? 1);
  return waitFor(`deployment ${id} to reach ${point}`, async () => {
    const s = await op.status(id);
    const steps = (s.steps ?? []) as Step[];
    const idx = steps.map((x, i) => [x, i] as const).filter(([x]) => x.name.startsWith(prefix))[n - 1]?.[1];
    if (String(s.status) !== 'in_progress' && String(s.status) !== 'pending') return `finished (${String(s.status)}) before ${point}`;
    if (idx === undefined) return steps.length > 0 ? `no step ${point}; killed at ${String(s.phase)}` : undefined;
    const running = steps.findIndex((x) => x.status === 'running');
    if (running >= idx) return `${point} → running: ${steps[running]?.name ?? '?'}`;
    if (running === -1 && steps.slice(idx).every((x) => x.status !== 'pending')) return `${point} → past it (${String(s.phase)})`;
    return undefined;
  }, 30_000, 15);
}

async function setup(prefix: string, env: Record<string, string>) {
  const dir = await tempDir(prefix);
  const team = uniqueName(prefix);
  const op = new ChildOperator(path.join(dir, 'state'), await freePort(), path.join(dir, 'operator.log'), env);
  cleanupAfter(() => cleanupTeam(team, { stateDir: path.join(dir, 'state') } as OperatorConfig));
  cleanupAfter(() => op.kill());
  const cb = await startCallbackReceiver();
  await op.start();
  return { op, team, cb, dir };
}

/** Every deployment sent exactly one terminal callback, with the expected status. */
async function expectOneTerminal(cb: CallbackReceiver, id: number, status: string): Promise<void> {
  await cb.waitTerminal(id, 20_000);
  expect(terminalOf(cb, id).status).toBe(status);
}

// The two scenarios use their own operators, teams and ports: they run side by side.
describe.concurrent('SIGKILL of the operator mid-deployment', () => {
  it(`blue/green: converges after a kill at ${KILL_POINTS} point(s)`, async () => {
    const host = getTestHost();
    const { op, team, cb } = await setup('kbg', { CRATE_DRAIN_TIMEOUT: '3', CRATE_HEALTHY_TIMEOUT: '5', CRATE_STOP_TIMEOUT: '5', CRATE_RESYNC_SECONDS: '2', CRATE_SURGE_PORTS: (({ from, to }) => `${from}-${to}`)(surgeBlock()) });
    const domain = `${team}.kill.test`;
    const slots = { blue: { instance_id: `${team}-b`, port: await freePort() }, green: { instance_id: `${team}-g`, port: await freePort() } };
    const deploy = (id: number, version: string, broken = false) =>
      op.call('POST', '/v1/app/instance/binary/deploy', {
        app_id: 1, environment_id: 1, team_id: team, deployment_id: id, deployment_strategy: 'blue_green', domain,
        asset_url: `${host.assets.baseUrl}/app-${version}${broken ? '-broken' : ''}.tar.gz`, callback_url: cb.url(String(id)),
        // A slow start keeps the probing step open long enough to be killed in.
        env_vars: { SLOW_START_MS: '1500' }, health_check_path: '/healthz', target_version: version, slots,
      });
    expect((await deploy(1, 'v1')).status).toBe(202);
    expect((await op.settle(1)).status).toBe('succeeded');
    let serving = 'v1';
    const report: string[] = [];

    for (const [i, killPoint] of pickPoints(BLUE_GREEN_POINTS, KILL_POINTS).entries()) {
      const id = 2 + i;
      const version = `v${id}`;
      const broken = killPoint.startsWith('broken:');
      const point = killPoint.replace(/^broken:/, '');
      // A request held in flight by the live version makes the drain step last (up to the drain deadline).
      const held = point.startsWith('drain') ? httpHold(host.caddy.httpPort, domain, 6_000) : Promise.resolve();
      const t0 = Date.now();
      expect((await deploy(id, version, broken)).status).toBe(202);
      const at = await reach(op, id, point);
      await op.kill();
      await op.start();
      const s = await op.settle(id);
      await held;
      const took = Date.now() - t0;
      expect(s.status, `${killPoint} (killed at ${at}): ${JSON.stringify(s.error)}`).toBe(broken ? 'rolled_back' : 'succeeded');
      if (s.status === 'succeeded') serving = version;
      report.push(`${killPoint}: killed at ${at}; ${String(s.status)} in ${took} ms`);
      // Converged: one active unit serving `serving`, the route on its port only, at most the two slots' units.
      await waitFor(`blue/green to converge after the kill at ${point}`, async () => {
        const active = (await teamUnits(team)).filter((u) => u.active === 'active');
        const files = await teamUnitFiles(team);
        const ports = await routePorts(team);
        const body = await getVia(host.caddy.httpPort, domain);
        return active.length === 1 && files.length <= 2 && ports.length === 1 && body.includes(`"version":"${serving}"`);
      }, 20_000, 200);
      await expectOneTerminal(cb, id, String(s.status));
    }
    await expectOneTerminal(cb, 1, 'succeeded');
    console.log(`blue/green kill points (operator started ${op.starts} times):\n  ${report.join('\n  ')}`);
  }, 40_000 + KILL_POINTS * 25_000);

  it(`rolling over 3 instances: converges after a kill at ${KILL_POINTS} point(s)`, async () => {
    const host = getTestHost();
    const { op, team, cb } = await setup('kro', { CRATE_DRAIN_TIMEOUT: '3', CRATE_HEALTHY_TIMEOUT: '15', CRATE_STOP_TIMEOUT: '5', CRATE_RESYNC_SECONDS: '2', CRATE_SURGE_PORTS: (({ from, to }) => `${from}-${to}`)(surgeBlock()) });
    const domain = `${team}.kill.test`;
    const ids = ['w1', 'w2', 'w3'].map((w) => `${team}-${w}`);
    const instances = Object.fromEntries(await Promise.all(ids.map(async (iid) => [iid, { port: await freePort() }] as const)));
    const deploy = (id: number, version: string) =>
      op.call('POST', '/v1/app/binary/deploy', {
        app_id: 1, environment_id: 1, team_id: team, deployment_id: id, deployment_strategy: 'rolling', domain,
        asset_url: `${host.assets.baseUrl}/app-${version}.tar.gz`, callback_url: cb.url(String(id)), env_vars: {},
        health_check_path: '/healthz', instances,
      });
    expect((await deploy(1, 'v1')).status).toBe(202);
    expect((await op.settle(1)).status).toBe('succeeded');
    let serving = 'v1';
    const report: string[] = [];

    for (const [i, point] of pickPoints(ROLLING_POINTS, KILL_POINTS).entries()) {
      const id = 2 + i;
      const version = `v${id}`;
      const held = point.startsWith('drain') ? Promise.all([0, 1, 2, 3, 4, 5].map(() => httpHold(host.caddy.httpPort, domain, 6_000))) : Promise.resolve();
      const t0 = Date.now();
      expect((await deploy(id, version)).status).toBe(202);
      const at = await reach(op, id, point);
      await op.kill();
      await op.start();
      const s = await op.settle(id);
      await held;
      const took = Date.now() - t0;
      expect(s.status, `${point} (killed at ${at}): ${JSON.stringify(s.error)}`).toBe('succeeded');
      if (s.status === 'succeeded') serving = version;
      report.push(`${point}: killed at ${at}; ${String(s.status)} in ${took} ms`);
      // Converged: three active units, all on one version, the route on exactly their ports, no leftovers.
      await waitFor(`rolling to converge after the kill at ${point}`, async () => {
        const units = await teamUnits(team);
        const active = units.filter((u) => u.active === 'active');
        const files = await teamUnitFiles(team);
        const ports = await routePorts(team);
        if (active.length !== 3 || files.length !== 3 || ports.length !== 3) return false;
        const seen = new Set<string>();
        for (let n = 0; n < 6; n++) seen.add(/"version":"([^"]+)"/.exec(await getVia(host.caddy.httpPort, domain))?.[1] ?? '?');
        return seen.size === 1 && seen.has(serving);
      }, 20_000, 200);
      await expectOneTerminal(cb, id, String(s.status));
    }
    await expectOneTerminal(cb, 1, 'succeeded');
    console.log(`rolling kill points (operator started ${op.starts} times):\n  ${report.join('\n  ')}`);
  }, 40_000 + KILL_POINTS * 30_000);
});

/** GET / through Caddy with Host `domain` (a new connection); the body, or '' on a connection error. */
function getVia(port: number, domain: string): Promise<string> {
  return new Promise((resolve) => {
    const req = http.get({ host: '127.0.0.1', port, path: '/', headers: { host: domain }, agent: false, timeout: 5_000 }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('end', () => resolve(Buffer.concat(chunks).toString('utf8')));
    });
    req.on('timeout', () => req.destroy());
    req.on('error', () => resolve(''));
  });
}

/** A request held in flight for `ms` by whatever version serves it (drain tests); never rejects. */
function httpHold(port: number, domain: string, ms: number): Promise<void> {
  return new Promise((resolve) => {
    const req = http.get({ host: '127.0.0.1', port, path: `/hold?ms=${ms}`, headers: { host: domain }, agent: false, timeout: ms + 10_000 }, (res) => {
      res.resume();
      res.on('end', () => resolve());
    });
    req.on('timeout', () => req.destroy());
    req.on('error', () => resolve());
  });
}
