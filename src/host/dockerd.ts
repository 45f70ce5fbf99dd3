/**
 * A private Docker daemon: its own socket, data root, exec root, pid file, containerd namespace and
 * Linux bridge (unique name, random free 10.x.y.0/24), with iptables management off so it never
 * touches the host's firewall or another daemon's network. Port publishing to 127.0.0.1 works
 * through docker-proxy.
 */
import { readFileSync } from 'node:fs';
import { mkdir, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { execa } from 'execa';
import { Client } from 'undici';
import { CrateError } from '../core/errors.ts';
import { destroyCgroupsNamed, killAll, pidsMentioning, removeTree, requireBinary, spawnComponent, stopComponent, systemPath, waitPidGone, waitReady } from './process.ts';

/** Options of startDockerd. */
export interface DockerdOptions {
  /** Private folder (created; removed by stop()). Keep it short: the socket lives in it. */
  dir: string;
  /** Unique id (letters and digits, ≤ 12); names the bridge `crh<id>` and the containerd namespace. */
  id: string;
  /** Readiness deadline; default 30 s. */
  readyDeadlineMs?: number;
  /**
   * Data root (images, containers, volumes) outside `dir`, kept by stop(), so images survive a
   * restart (the operator's dev mode). Default: inside `dir`, removed by stop().
   */
  dataRoot?: string;
}

/** A running private dockerd. */
export interface DockerdHandle {
  readonly pid: number;
  /** Path of the Engine API unix socket. */
  readonly socket: string;
  readonly dataRoot: string;
  readonly execRoot: string;
  /** Name of the private bridge. */
  readonly bridge: string;
  /** The bridge's subnet, `10.x.y.0/24`. */
  readonly subnet: string;
  readonly logFile: string;
  /** Stop dockerd (it stops its containers and containerd), kill leftovers of its own, delete the bridge and folders. Idempotent. */
  stop(): Promise<void>;
}

/** Bridge name of a daemon with this id (Linux allows 15 characters). */
export function bridgeName(id: string): string {
  return `crh${id}`.slice(0, 15);
}

async function ip(args: string[]): Promise<{ exitCode: number; stderr: string; stdout: string }> {
  const r = await execa(requireBinary('ip', 'iproute2'), args, { reject: false, env: { PATH: systemPath() }, extendEnv: false, timeout: 10_000 });
  return { exitCode: r.exitCode ?? -1, stderr: String(r.stderr), stdout: String(r.stdout) };
}

function toInt(a: string): number {
  return a.split('.').reduce((n, o) => n * 256 + Number(o), 0) >>> 0;
}

/** IPv4 ranges [first, last] already configured on any interface of this host. */
async function usedRanges(): Promise<Array<[number, number]>> {
  const r = await ip(['-j', '-4', 'addr', 'show']);
  if (r.exitCode !== 0) throw new CrateError('E_HOST_START', `dockerd: \`ip -j addr\` failed: ${r.stderr}`);
  const links = JSON.parse(r.stdout) as Array<{ addr_info?: Array<{ local?: string; prefixlen?: number }> }>;
  const out: Array<[number, number]> = [];
  for (const l of links) {
    for (const a of l.addr_info ?? []) {
      if (!a.local || a.prefixlen === undefined) continue;
      const size = 2 ** (32 - a.prefixlen);
      const first = Math.floor(toInt(a.local) / size) * size;
      out.push([first, first + size - 1]);
    }
  }
  return out;
}

/** Create the bridge on a random 10.x.y.0/24 that overlaps nothing configured; retries on a race. */
async function createBridge(name: string): Promise<string> {
  const existing = await ip(['link', 'show', 'dev', name]);
  if (existing.exitCode === 0) throw new CrateError('E_HOST_START', `dockerd: bridge ${name} already exists`);
  const add = await ip(['link', 'add', 'name', name, 'type', 'bridge']);
  if (add.exitCode !== 0) throw new CrateError('E_HOST_START', `dockerd: cannot create bridge ${name}: ${add.stderr.trim()}`);
  try {
    for (let attempt = 0; attempt < 20; attempt++) {
      const used = await usedRanges();
      const x = 64 + Math.floor(Math.random() * 190);
      const y = Math.floor(Math.random() * 256);
      const first = toInt(`10.${x}.${y}.0`);
      if (used.some(([a, b]) => a <= first + 255 && first <= b)) continue;
      const r = await ip(['addr', 'add', `10.${x}.${y}.1/24`, 'dev', name]);
      if (r.exitCode !== 0) continue;
      const up = await ip(['link', 'set', 'dev', name, 'up']);
      if (up.exitCode !== 0) throw new CrateError('E_HOST_START', `dockerd: cannot bring ${name} up: ${up.stderr.trim()}`);
      return `10.${x}.${y}.0/24`;
    }
    throw new CrateError('E_HOST_START', 'dockerd: no free 10.x.y.0/24 subnet found for the bridge');
  } catch (err) {
    await ip(['link', 'del', 'dev', name]);
    throw err;
  }
}

/** Delete a bridge; a missing bridge is fine. */
export async function deleteBridge(name: string): Promise<void> {
  const r = await ip(['link', 'del', 'dev', name]);
  if (r.exitCode !== 0 && !/Cannot find device|does not exist/i.test(r.stderr)) {
    throw new CrateError('E_HOST_STOP', `cannot delete bridge ${name}: ${r.stderr.trim()}`);
  }
}

/** GET /_ping on a Docker socket; true on `OK`. */
export async function pingDocker(socket: string, timeoutMs = 2000): Promise<boolean> {
  const client = new Client('http://docker', { socketPath: socket, connectTimeout: timeoutMs, headersTimeout: timeoutMs, bodyTimeout: timeoutMs });
  try {
    const res = await client.request({ method: 'GET', path: '/_ping' });
    const text = await res.body.text();
    return res.statusCode === 200 && text === 'OK';
  } finally {
    await client.close();
  }
}

/**
 * Start a private dockerd and wait (with a deadline) until `GET /_ping` answers. Throws CrateError
 * `E_HOST_MISSING` (naming the package) or `E_HOST_START` (naming the step, with the daemon's log tail).
 */
export async function startDockerd(opts: DockerdOptions): Promise<DockerdHandle> {
  if (!/^[A-Za-z0-9]{1,12}$/.test(opts.id)) throw new CrateError('E_HOST_START', `bad id ${opts.id}`);
  const dockerd = requireBinary('dockerd', 'docker.io');
  requireBinary('containerd', 'containerd');
  requireBinary('runc', 'runc');
  requireBinary('docker-proxy', 'docker.io');
  requireBinary('ip', 'iproute2');

  const socket = path.join(opts.dir, 'docker.sock');
  const dataRoot = opts.dataRoot ?? path.join(opts.dir, 'data');
  const execRoot = path.join(opts.dir, 'exec');
  const configFile = path.join(opts.dir, 'daemon.json');
  const logFile = path.join(opts.dir, 'dockerd.log');
  await mkdir(dataRoot, { recursive: true, mode: 0o700 });
  await mkdir(execRoot, { recursive: true, mode: 0o700 });
  // An explicit empty config keeps a host /etc/docker/daemon.json out of the private daemon.
  await writeFile(configFile, '{}\n');

  const bridge = bridgeName(opts.id);
  const subnet = await createBridge(bridge);
  const namespace = `crate-h-${opts.id}`;
  const proc = spawnComponent(
    dockerd,
    [
      '--host', `unix://${socket}`,
      '--data-root', dataRoot,
      '--exec-root', execRoot,
      '--pidfile', path.join(opts.dir, 'dockerd.pid'),
      '--config-file', configFile,
      '--bridge', bridge,
      '--iptables=false',
      '--ip6tables=false',
      '--ip-masq=false',
      '--containerd-namespace', namespace,
      '--containerd-plugins-namespace', `${namespace}-plugins`,
      // Containers in a cgroup of their own, so leftovers of this daemon can be found and killed.
      '--cgroup-parent', `/${namespace}-docker`,
      '--shutdown-timeout', '3',
      '--log-level', 'warn',
    ],
    { env: { PATH: systemPath(), HOME: opts.dir }, logFile },
  );

  let stopped: Promise<void> | undefined;
  const stop = (): Promise<void> => {
    stopped ??= (async () => {
      const containerd = readPid(path.join(execRoot, 'containerd', 'containerd.pid'));
      await stopComponent(proc, 20_000);
      // dockerd stops its managed containerd on a clean exit; after a SIGKILL it cannot.
      if (containerd !== undefined && !(await waitPidGone(containerd, 3000))) await killAll([containerd]);
      // Shims and anything else started for this daemon name its folders in their arguments.
      await killAll(await pidsMentioning(opts.dir));
      await destroyCgroupsNamed(`${namespace}-docker`);
      await deleteBridge(bridge);
      await removeTree(opts.dir);
    })();
    return stopped;
  };

  try {
    await waitReady('dockerd', proc, () => pingDocker(socket, 1000), opts.readyDeadlineMs ?? 30_000);
  } catch (err) {
    await stop().catch(() => undefined);
    throw err;
  }
  return { pid: proc.pid, socket, dataRoot, execRoot, bridge, subnet, logFile, stop };
}

function readPid(file: string): number | undefined {
  try {
    const n = Number(readFileSync(file, 'utf8').trim());
    return Number.isInteger(n) && n > 0 ? n : undefined;
  } catch {
    return undefined;
  }
}
