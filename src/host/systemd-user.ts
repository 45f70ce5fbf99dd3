/**
 * A private systemd user manager: `systemd --user` in its own mount namespace (with a tmpfs on
 * /run/systemd so it believes it runs under systemd), its own XDG_RUNTIME_DIR and XDG_CONFIG_HOME,
 * and, where the cgroup file system is writable, its own cgroup subtree so that units of two managers
 * with the same name never share a cgroup. `systemctl --user` with `handle.env` talks to it.
 */
import { existsSync } from 'node:fs';
import { mkdir, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { execa } from 'execa';
import { CrateError } from '../core/errors.ts';
import {
  cgroupPids,
  killAll,
  pidsMentioning,
  removeCgroupTree,
  removeTree,
  requireBinary,
  spawnComponent,
  stopComponent,
  systemPath,
  waitReady,
} from './process.ts';

/** Options of startSystemdUser. */
export interface SystemdUserOptions {
  /** Private folder for the manager (created; removed by stop()). Keep it short and unique. */
  dir: string;
  /** Unique id (letters, digits, `-`); names the cgroup subtree `crate-h-<id>`. */
  id: string;
  /** Readiness deadline; default 15 s. */
  readyDeadlineMs?: number;
  /** DefaultTimeoutStopSec of the manager, so a stuck unit cannot stall teardown; default 5. */
  defaultStopTimeoutSec?: number;
}

/** A running private user manager. */
export interface SystemdUserHandle {
  readonly pid: number;
  /** Environment that points `systemctl --user` (and the operator's systemd driver) at this manager. */
  readonly env: { XDG_RUNTIME_DIR: string; XDG_CONFIG_HOME: string };
  /** Where unit files go: `<XDG_CONFIG_HOME>/systemd/user`. */
  readonly unitDir: string;
  /** Cgroup folders owned by this manager (empty when cgroups were not writable). */
  readonly cgroups: string[];
  readonly logFile: string;
  /** Stop the manager (it stops its units), kill leftovers of its own, remove its folders. Idempotent. */
  stop(): Promise<void>;
}

/** Cgroup roots to place the manager into: the unified hierarchy and, on hybrid hosts, name=systemd. */
function cgroupRoots(): string[] {
  if (existsSync('/sys/fs/cgroup/cgroup.controllers')) return ['/sys/fs/cgroup'];
  return ['/sys/fs/cgroup/systemd', '/sys/fs/cgroup/unified'].filter((d) => existsSync(path.join(d, 'cgroup.procs')));
}

/** The cgroup folders a manager with this id uses. */
export function systemdCgroupDirs(id: string): string[] {
  return cgroupRoots().map((r) => path.join(r, `crate-h-${id}`));
}

// Fixed script; every variable part arrives as a positional argument. It joins the private cgroups,
// hides the host's /run/systemd behind a tmpfs (only inside the new mount namespace) and becomes systemd.
const BOOT_SCRIPT = [
  'for d in "$@"; do echo $$ > "$d/cgroup.procs" || exit 71; done',
  'mount -t tmpfs tmpfs /run/systemd || exit 72',
  'mkdir /run/systemd/system || exit 73',
  'exec "$SYSTEMD_BIN" --user',
].join('\n');

/** Run `systemctl --user ...` against a manager; never throws, returns the execa result. */
export async function systemctlWith(env: Record<string, string>, args: string[], timeoutMs = 10_000) {
  return execa(requireBinary('systemctl', 'systemd'), ['--user', '--no-pager', ...args], {
    env: { PATH: systemPath(), ...env },
    extendEnv: false,
    reject: false,
    timeout: timeoutMs,
  });
}

/**
 * Start a private user manager and wait (with a deadline) until `systemctl --user list-units` answers.
 * Throws CrateError `E_HOST_MISSING` (naming the package) or `E_HOST_START` (naming the step, with the
 * manager's log tail).
 */
export async function startSystemdUser(opts: SystemdUserOptions): Promise<SystemdUserHandle> {
  if (!/^[A-Za-z0-9-]{1,32}$/.test(opts.id)) throw new CrateError('E_HOST_START', `bad id ${opts.id}`);
  const systemdBin = requireBinary('/lib/systemd/systemd', 'systemd');
  requireBinary('systemctl', 'systemd');
  const unshare = requireBinary('unshare', 'util-linux');
  requireBinary('mount', 'mount');

  const runtimeDir = path.join(opts.dir, 'run');
  const configHome = path.join(opts.dir, 'config');
  const unitDir = path.join(configHome, 'systemd', 'user');
  const home = path.join(opts.dir, 'home');
  const logFile = path.join(opts.dir, 'systemd.log');
  await mkdir(runtimeDir, { recursive: true, mode: 0o700 });
  await mkdir(unitDir, { recursive: true });
  await mkdir(home, { recursive: true });
  await writeFile(
    path.join(configHome, 'systemd', 'user.conf'),
    `[Manager]\nDefaultTimeoutStopSec=${opts.defaultStopTimeoutSec ?? 5}s\n`,
  );
  // The tmpfs needs a mount point; creating the empty folder on the host is harmless.
  await mkdir('/run/systemd', { recursive: true });

  const cgroups: string[] = [];
  for (const d of systemdCgroupDirs(opts.id)) {
    try {
      await mkdir(d);
      cgroups.push(d);
    } catch (err) {
      // Read-only cgroup file systems (unprivileged containers) only lose the isolation, not the manager.
      if ((err as NodeJS.ErrnoException).code !== 'EROFS' && (err as NodeJS.ErrnoException).code !== 'EACCES') {
        await removeCgroupTree(cgroups[0] ?? d).catch(() => undefined);
        throw new CrateError('E_HOST_START', `systemd: cannot create cgroup ${d}`, { cause: err });
      }
    }
  }

  const env = { XDG_RUNTIME_DIR: runtimeDir, XDG_CONFIG_HOME: configHome };
  const proc = spawnComponent(
    unshare,
    ['--mount', '--propagation', 'private', '/bin/sh', '-c', BOOT_SCRIPT, 'crate-systemd-boot', ...cgroups],
    {
      env: {
        PATH: systemPath(),
        HOME: home,
        SYSTEMD_BIN: systemdBin,
        XDG_DATA_HOME: path.join(home, 'data'),
        XDG_STATE_HOME: path.join(home, 'state'),
        XDG_CACHE_HOME: path.join(home, 'cache'),
        ...env,
      },
      logFile,
    },
  );

  let stopped: Promise<void> | undefined;
  const stop = (): Promise<void> => {
    stopped ??= (async () => {
      // systemd --user answers SIGTERM by stopping every unit, then exiting.
      await stopComponent(proc, 15_000);
      const leftovers = [...(await Promise.all(cgroups.map((c) => cgroupPids(c)))).flat(), ...(await pidsMentioning(opts.dir))];
      await killAll([...new Set(leftovers)]);
      for (const c of cgroups) await removeCgroupTree(c);
      await removeTree(opts.dir);
    })();
    return stopped;
  };

  try {
    await waitReady(
      'systemd user manager',
      proc,
      async () => (await systemctlWith(env, ['list-units', '--output=json'], 2000)).exitCode === 0,
      opts.readyDeadlineMs ?? 15_000,
    );
  } catch (err) {
    await stop().catch(() => undefined);
    throw err;
  }
  return { pid: proc.pid, env, unitDir, cgroups, logFile, stop };
}
