/**
 * Embedded defaults (`crate-operator start`, `npm start`): use what the host has, start what it lacks.
 *
 * For each component the operator drives, in this order of preference:
 * 1. the setting was given (flag, environment, config file): use exactly that;
 * 2. the host runs it: systemd as PID 1 (system scope), a Docker socket at the default path that
 *    answers `/_ping`, a Caddy admin API at the default address that answers;
 * 3. otherwise start a private one with the starters in src/host/ (the test harness uses the same
 *    code): a systemd user manager, dockerd (if installed) and Caddy serving the apps on
 *    `caddy_listen` (127.0.0.1:8080 unless set).
 *
 * The private components live in a workspace under `<state dir>/.host/` (owner file, own cgroups,
 * bridge and sockets; /tmp when that path is too long for unix sockets) and stop with the operator.
 * Units, containers and routes go with them; the apps' desired state stays in `<state dir>/desired`
 * and the reconciler re-creates them on the next start. Docker's data root
 * (`<state dir>/.host/docker-data`) is kept, so images survive a restart. A workspace left behind
 * by an operator that was killed is cleaned up by the next start; one whose owner still runs means
 * another operator uses this state dir, and the start is refused.
 */
import { createHash } from 'node:crypto';
import { existsSync, readFileSync } from 'node:fs';
import { mkdir, readdir, readFile, rename, rm, rmdir, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { execa } from 'execa';
import type { OperatorConfig } from '../config.ts';
import { CrateError, describeError, hasCode } from '../core/errors.ts';
import { pingCaddy, startCaddy, type CaddyHandle } from '../host/caddy.ts';
import { pingDocker, startDockerd, type DockerdHandle } from '../host/dockerd.ts';
import { pidAlive, requireBinary, systemPath } from '../host/process.ts';
import { startSystemdUser, type SystemdUserHandle } from '../host/systemd-user.ts';
import { createWorkspace, reapStaleWorkspaces, type HostWorkspace } from '../host/workspace.ts';

/** Which of the component settings were given explicitly (not defaults). */
export interface GivenSettings {
  systemdScope: boolean;
  dockerSocket: boolean;
  caddyAdmin: boolean;
}

/** How one component is provided. */
export interface ComponentUse {
  how: 'configured' | 'host' | 'private' | 'missing';
  /** One line: what and where (sockets, URLs, scope). */
  detail: string;
}

/** The host the operator runs against, with everything it started. */
export interface EmbeddedHost {
  /** The configuration with the chosen scope, socket, admin URL. */
  config: OperatorConfig;
  /** Environment for systemctl (a private user manager's XDG_RUNTIME_DIR/XDG_CONFIG_HOME), if any. */
  systemdEnv?: Record<string, string>;
  systemd: ComponentUse;
  docker: ComponentUse;
  caddy: ComponentUse;
  /** The private workspace folder, when anything was started. */
  workspace?: string;
  /** Pids of the started components' process groups (for an emergency kill at exit). */
  pids: number[];
  /** Stop everything started here (in parallel), remove the workspace. Idempotent. */
  stop(): Promise<void>;
}

/**
 * Where the private workspaces of a state dir live: `<state dir>/.host`, or, when that path is too
 * long for the unix sockets below it, a folder of this state dir alone under /tmp
 * (`crate-s-<hash of the state dir>`).
 */
export function hostBase(stateDir: string): string {
  const base = path.join(stateDir, '.host');
  // The deepest unix socket below a workspace must fit in sun_path (108 bytes).
  const deepest = (b: string): string => `${b}/crate-h-xxxxxxxx/docker/exec/containerd/containerd.sock`;
  if (deepest(base).length < 100) return base;
  return path.join(tmpdir(), `crate-s-${createHash('sha256').update(path.resolve(stateDir)).digest('hex').slice(0, 12)}`);
}

/** True when systemd is PID 1 and its manager answers. */
export async function systemSystemdRuns(): Promise<boolean> {
  if (!existsSync('/run/systemd/system')) return false;
  try {
    if (readFileSync('/proc/1/comm', 'utf8').trim() !== 'systemd') return false;
  } catch {
    return false;
  }
  const r = await execa('systemctl', ['--no-pager', 'list-units', '--output=json', 'crate-*'], { reject: false, timeout: 5000, env: { PATH: systemPath() }, extendEnv: false });
  return r.exitCode === 0;
}

async function answers(probe: () => Promise<boolean>): Promise<boolean> {
  try {
    return await probe();
  } catch {
    return false;
  }
}

/** Refuse when a live operator already has a private host for this state dir; clean up dead ones. */
async function claimStateDir(base: string): Promise<void> {
  await reapStaleWorkspaces(base);
  let names: string[] = [];
  try {
    names = (await readdir(base)).filter((n) => /^crate-h-[0-9a-f]{8}$/.test(n));
  } catch {
    return;
  }
  for (const n of names) {
    let pid: number | undefined;
    try {
      pid = (JSON.parse(await readFile(path.join(base, n, 'owner.json'), 'utf8')) as { pid?: number }).pid;
    } catch {
      continue;
    }
    if (pid !== undefined && pid !== process.pid && pidAlive(pid)) {
      throw new CrateError('E_CONFIG', `another crate-operator (pid ${pid}) runs with this state dir (${path.join(base, n)}); stop it first or use another --state-dir`);
    }
  }
}

/**
 * Decide and start. `log` receives progress lines. On failure everything started so far is stopped.
 * A component that is missing entirely (no binary) is reported as `missing`; the operator still
 * starts and `/healthz` shows it unreachable.
 */
export async function prepareEmbeddedHost(config: OperatorConfig, given: GivenSettings, log: (line: string) => void = () => undefined): Promise<EmbeddedHost> {
  const cfg: OperatorConfig = { ...config };
  let ws: HostWorkspace | undefined;
  const base = path.join(config.stateDir, '.host');
  const wsBase = hostBase(config.stateDir);
  let systemd: SystemdUserHandle | undefined;
  let docker: DockerdHandle | undefined;
  let caddy: CaddyHandle | undefined;
  let stopped: Promise<void> | undefined;

  const stop = (): Promise<void> => {
    stopped ??= (async () => {
      const results = await Promise.allSettled([caddy?.stop(), docker?.stop(), systemd?.stop()]);
      await ws?.remove();
      // The /tmp folder of a long state dir path holds only this state dir's workspaces: drop it when empty.
      if (wsBase !== base) await rmdir(wsBase).catch((err: NodeJS.ErrnoException) => (err.code === 'ENOENT' || err.code === 'ENOTEMPTY' ? undefined : Promise.reject(err)));
      await rm(path.join(base, 'current.json'), { force: true });
      const failed = results.find((r): r is PromiseRejectedResult => r.status === 'rejected');
      if (failed) throw failed.reason;
    })();
    return stopped;
  };
  // One workspace for every component, created by whichever starts first.
  let creating: Promise<HostWorkspace> | undefined;
  const workspace = (): Promise<HostWorkspace> => {
    creating ??= (async () => {
      await mkdir(wsBase, { recursive: true, mode: 0o700 });
      ws = await createWorkspace(wsBase);
      return ws;
    })();
    return creating;
  };

  try {
    await mkdir(base, { recursive: true, mode: 0o700 });
    await claimStateDir(base);
    if (wsBase !== base) await claimStateDir(wsBase);

    // Decide first (cheap probes, in parallel), then start what is needed in parallel.
    const [sysd, dock, cad] = await Promise.all([
      given.systemdScope ? Promise.resolve(false) : systemSystemdRuns(),
      given.dockerSocket ? Promise.resolve(false) : answers(() => pingDocker(config.dockerSocket, 1000)),
      given.caddyAdmin ? Promise.resolve(false) : answers(() => pingCaddy(config.caddyAdmin, 1000)),
    ]);

    const uses: Record<'systemd' | 'docker' | 'caddy', ComponentUse> = {
      systemd: given.systemdScope
        ? { how: 'configured', detail: `${config.systemdScope} manager (as configured)` }
        : sysd
          ? { how: 'host', detail: 'the host\'s systemd (PID 1), system scope' }
          : { how: 'private', detail: '' },
      docker: given.dockerSocket ? { how: 'configured', detail: `socket ${config.dockerSocket} (as configured)` } : dock ? { how: 'host', detail: `the host's dockerd, socket ${config.dockerSocket}` } : { how: 'private', detail: '' },
      caddy: given.caddyAdmin ? { how: 'configured', detail: `admin ${config.caddyAdmin} (as configured), server "${config.caddyServer}"` } : cad ? { how: 'host', detail: `the host's Caddy, admin ${config.caddyAdmin}, server "${config.caddyServer}"` } : { how: 'private', detail: '' },
    };
    if (uses.systemd.how === 'host') cfg.systemdScope = 'system';

    const jobs: Promise<void>[] = [];
    if (uses.systemd.how === 'private') {
      jobs.push(
        (async () => {
          const w = await workspace();
          try {
            systemd = await startSystemdUser({ dir: await w.dir('systemd'), id: w.id });
          } catch (err) {
            if (!hasCode(err, 'E_HOST_MISSING')) throw err;
            uses.systemd = { how: 'missing', detail: `not available: ${describeError(err).message}; binary apps cannot run` };
            return;
          }
          cfg.systemdScope = 'user';
          uses.systemd.detail = `private user manager (scope user), XDG_RUNTIME_DIR=${systemd.env.XDG_RUNTIME_DIR}, units in ${systemd.unitDir}`;
        })(),
      );
    }
    if (uses.docker.how === 'private') {
      jobs.push(
        (async () => {
          try {
            requireBinary('dockerd', 'docker.io');
          } catch (err) {
            uses.docker = { how: 'missing', detail: `not available: ${describeError(err).message}; docker apps cannot run` };
            return;
          }
          const w = await workspace();
          const dataRoot = path.join(base, 'docker-data');
          await mkdir(dataRoot, { recursive: true, mode: 0o700 });
          docker = await startDockerd({ dir: await w.dir('docker'), id: w.id, dataRoot });
          cfg.dockerSocket = docker.socket;
          uses.docker.detail = `private dockerd, socket ${docker.socket}, bridge ${docker.bridge} (${docker.subnet}), data ${dataRoot}`;
        })(),
      );
    }
    if (uses.caddy.how === 'private') {
      jobs.push(
        (async () => {
          try {
            requireBinary('caddy', 'caddy');
          } catch (err) {
            uses.caddy = { how: 'missing', detail: `not available: ${describeError(err).message}; no app gets a route` };
            return;
          }
          const w = await workspace();
          const listen = config.caddyListen[0] ?? '127.0.0.1:8080';
          caddy = await startCaddy({ dir: await w.dir('caddy'), serverName: config.caddyServer, httpListen: listen });
          cfg.caddyAdmin = caddy.adminUrl;
          uses.caddy.detail = `private Caddy, admin ${caddy.adminUrl}, apps served on http://${listen.startsWith(':') ? `0.0.0.0${listen}` : listen} (server "${caddy.serverName}")`;
        })(),
      );
    }
    const settled = await Promise.allSettled(jobs);
    const failed = settled.find((r): r is PromiseRejectedResult => r.status === 'rejected');
    if (failed) throw failed.reason;

    const pids = [systemd?.pid, docker?.pid, caddy?.pid].filter((p): p is number => p !== undefined);
    const current = {
      pid: process.pid,
      api: `http://${config.listen.host}:${config.listen.port}`,
      state_dir: config.stateDir,
      systemd: { how: uses.systemd.how, scope: cfg.systemdScope, ...(systemd ? { env: systemd.env } : {}) },
      docker: { how: uses.docker.how, socket: cfg.dockerSocket },
      caddy: { how: uses.caddy.how, admin: cfg.caddyAdmin, server: cfg.caddyServer, listen: config.caddyListen },
      workspace: ws?.root ?? null,
    };
    // What this start uses, for people and scripts (removed on stop).
    const tmp = path.join(base, `.current.${process.pid}.tmp`);
    await writeFile(tmp, `${JSON.stringify(current, null, 2)}\n`, { mode: 0o600 });
    await rename(tmp, path.join(base, 'current.json'));
    return {
      config: cfg,
      ...(systemd ? { systemdEnv: { PATH: systemPath(), ...systemd.env } } : {}),
      systemd: uses.systemd,
      docker: uses.docker,
      caddy: uses.caddy,
      ...(ws ? { workspace: ws.root } : {}),
      pids,
      stop,
    };
  } catch (err) {
    log(`crate-operator: could not prepare the host: ${describeError(err).message}`);
    await stop().catch((e: unknown) => log(`crate-operator: cleanup after a failed start: ${describeError(e).message}`));
    throw err;
  }
}
