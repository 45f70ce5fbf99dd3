/**
 * Small building blocks shared by the component starters in `src/host/`: spawning a long-running
 * component in its own process group with its output in a log file, waiting for readiness with a
 * deadline, stopping exactly one process group, picking free loopback ports, and cleaning up the
 * private temp folders a component leaves behind. Everything here takes argv arrays, never shell strings.
 */
import { closeSync, existsSync, openSync, readFileSync } from 'node:fs';
import { readdir, readFile, rm, rmdir, stat } from 'node:fs/promises';
import net from 'node:net';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { execa } from 'execa';
import { CrateError } from '../core/errors.ts';

/** A component process started by `spawnComponent`. */
export interface ComponentProcess {
  /** Pid of the component; also the id of its process group (it was started detached). */
  readonly pid: number;
  /** Where its stdout and stderr go. */
  readonly logFile: string;
  /** Resolves with the exit code (or signal name) once the process has exited; never rejects. */
  readonly exited: Promise<string>;
  /** True once the process has exited. */
  hasExited(): boolean;
}

/** Options of spawnComponent. */
export interface SpawnOptions {
  /** Full environment of the component (not merged with the caller's). */
  env: Record<string, string>;
  logFile: string;
  cwd?: string;
}

/** The directories where apt packages put the binaries the starters need. */
const SEARCH_PATH = ['/usr/local/sbin', '/usr/local/bin', '/usr/sbin', '/usr/bin', '/sbin', '/bin'];

/**
 * Absolute path of `binary`, looked up on PATH and the usual system directories. Throws CrateError
 * `E_HOST_MISSING` naming the package to install when the binary is absent.
 */
export function requireBinary(binary: string, aptPackage: string): string {
  if (binary.startsWith('/')) {
    if (existsSync(binary)) return binary;
  } else {
    const dirs = [...(process.env.PATH ?? '').split(':').filter((d) => d.startsWith('/')), ...SEARCH_PATH];
    for (const d of dirs) {
      const p = path.join(d, binary);
      if (existsSync(p)) return p;
    }
  }
  throw new CrateError('E_HOST_MISSING', `${binary} not found: run \`npm run setup\` or \`apt-get install -y ${aptPackage}\``, {
    details: { binary, package: aptPackage },
  });
}

/** A PATH value that finds system binaries whatever the caller's PATH is. */
export function systemPath(): string {
  const own = (process.env.PATH ?? '').split(':').filter((d) => d.startsWith('/'));
  return [...new Set([...own, ...SEARCH_PATH])].join(':');
}

/**
 * Start `file argv…` detached (own session and process group) with stdout/stderr appended to
 * `logFile`. The returned handle never produces an unhandled rejection.
 */
export function spawnComponent(file: string, args: string[], opts: SpawnOptions): ComponentProcess {
  // Create the log private before execa opens it (for append) on both streams.
  closeSync(openSync(opts.logFile, 'a', 0o600));
  const sub = execa(file, args, {
    env: opts.env,
    extendEnv: false,
    detached: true,
    cleanup: false,
    reject: false,
    stdin: 'ignore',
    stdout: { file: opts.logFile, append: true },
    stderr: { file: opts.logFile, append: true },
    cwd: opts.cwd ?? '/',
  });
  const pid = sub.pid;
  if (pid === undefined) {
    throw new CrateError('E_HOST_START', `could not spawn ${file}`, { details: { file, log: logTail(opts.logFile) } });
  }
  let done = false;
  const exited = sub.then(
    (r) => {
      done = true;
      return r.signal ?? String(r.exitCode ?? 'unknown');
    },
    (err: unknown) => {
      done = true;
      return `spawn error: ${err instanceof Error ? err.message : String(err)}`;
    },
  );
  return { pid, logFile: opts.logFile, exited, hasExited: () => done };
}

/** The last `lines` lines of a log file ('' when it cannot be read), for error messages. */
export function logTail(file: string, lines = 20): string {
  try {
    const text = readFileSync(file, 'utf8');
    return text.split('\n').slice(-lines - 1).join('\n').trim();
  } catch {
    return '';
  }
}

/**
 * Poll `probe` until it returns true, the component exits, or `deadlineMs` passes. Throws CrateError
 * `E_HOST_START` naming `what`, with the log tail of the component, on exit or timeout.
 */
export async function waitReady(
  what: string,
  proc: ComponentProcess,
  probe: () => Promise<boolean>,
  deadlineMs: number,
  intervalMs = 50,
): Promise<void> {
  const until = Date.now() + deadlineMs;
  let lastError: unknown;
  for (;;) {
    if (proc.hasExited()) {
      const code = await proc.exited;
      throw new CrateError('E_HOST_START', `${what} exited during start (${code}):\n${logTail(proc.logFile)}`, {
        details: { what, log: proc.logFile },
      });
    }
    try {
      if (await probe()) return;
    } catch (err) {
      lastError = err;
    }
    if (Date.now() >= until) {
      const why = lastError instanceof Error ? ` (last probe: ${lastError.message})` : '';
      throw new CrateError('E_HOST_START', `${what} not ready within ${deadlineMs} ms${why}:\n${logTail(proc.logFile)}`, {
        cause: lastError,
        details: { what, log: proc.logFile },
      });
    }
    await sleep(intervalMs);
  }
}

function signalGroup(pid: number, signal: NodeJS.Signals): void {
  try {
    process.kill(-pid, signal);
  } catch (err) {
    // ESRCH: the group is already gone, which is what we want.
    if ((err as NodeJS.ErrnoException).code !== 'ESRCH') throw err;
  }
}

/**
 * Stop one component: SIGTERM to its process group, wait up to `graceMs`, then SIGKILL the group
 * and wait up to 5 s more. Only this process group is signalled. Resolves once the process has exited.
 */
export async function stopComponent(proc: ComponentProcess, graceMs: number): Promise<void> {
  if (proc.hasExited()) return;
  signalGroup(proc.pid, 'SIGTERM');
  if (await exitsWithin(proc, graceMs)) return;
  signalGroup(proc.pid, 'SIGKILL');
  if (await exitsWithin(proc, 5000)) return;
  throw new CrateError('E_HOST_STOP', `process ${proc.pid} did not exit after SIGKILL`, { details: { pid: proc.pid } });
}

async function exitsWithin(proc: ComponentProcess, ms: number): Promise<boolean> {
  const timer = sleep(ms, false, { ref: false });
  return Promise.race([proc.exited.then(() => true), timer]);
}

/** True while a process with this pid exists (zombies included). */
export function pidAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
}

/** Wait until `pid` is gone (or a zombie), up to `ms`. True when it is gone. */
export async function waitPidGone(pid: number, ms: number): Promise<boolean> {
  const until = Date.now() + ms;
  while (Date.now() < until) {
    if (!pidAlive(pid) || isZombie(pid)) return true;
    await sleep(25);
  }
  return !pidAlive(pid) || isZombie(pid);
}

function isZombie(pid: number): boolean {
  try {
    const s = readFileSync(`/proc/${pid}/stat`, 'utf8');
    return s.slice(s.lastIndexOf(')') + 2).startsWith('Z');
  } catch {
    return true;
  }
}

/** Send `signal` to a single pid, ignoring a pid that is already gone. */
export function killPid(pid: number, signal: NodeJS.Signals): void {
  try {
    process.kill(pid, signal);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'ESRCH') throw err;
  }
}

/**
 * A TCP port that was free on 127.0.0.1 a moment ago (the kernel picked it). Another process may
 * take it before the caller binds it; callers that can, retry with a new port on EADDRINUSE.
 */
export async function freePort(host = '127.0.0.1'): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = net.createServer();
    srv.unref();
    srv.once('error', reject);
    srv.listen({ host, port: 0, exclusive: true }, () => {
      const addr = srv.address();
      srv.close(() => {
        if (addr && typeof addr === 'object') resolve(addr.port);
        else reject(new Error('no port'));
      });
    });
  });
}

/** Mount points at or below `dir`, deepest first (read from /proc/self/mountinfo). */
export async function mountsUnder(dir: string): Promise<string[]> {
  const info = await readFile('/proc/self/mountinfo', 'utf8');
  const prefix = dir.endsWith('/') ? dir : `${dir}/`;
  const out: string[] = [];
  for (const line of info.split('\n')) {
    const mp = line.split(' ')[4];
    if (mp === undefined) continue;
    // mountinfo escapes space, tab, newline and backslash as octal.
    const p = mp.replace(/\\([0-7]{3})/g, (_m, o: string) => String.fromCharCode(parseInt(o, 8)));
    if (p === dir || p.startsWith(prefix)) out.push(p);
  }
  return out.sort((a, b) => b.length - a.length);
}

/**
 * Unmount everything below `dir` (lazily, so a busy mount cannot block teardown) and remove the
 * folder. Throws CrateError `E_HOST_STOP` when the folder cannot be removed.
 */
export async function removeTree(dir: string): Promise<void> {
  for (const m of await mountsUnder(dir)) {
    await execa(requireBinary('umount', 'mount'), ['-l', m], { reject: false, env: { PATH: systemPath() } });
  }
  try {
    await rm(dir, { recursive: true, force: true, maxRetries: 3, retryDelay: 50 });
  } catch (err) {
    throw new CrateError('E_HOST_STOP', `cannot remove ${dir}`, { cause: err });
  }
}

/** Pids listed in `cgroup.procs` of `cgroupDir` and every cgroup below it. */
export async function cgroupPids(cgroupDir: string): Promise<number[]> {
  const pids: number[] = [];
  const walk = async (d: string): Promise<void> => {
    let entries;
    try {
      entries = await readdir(d, { withFileTypes: true });
    } catch {
      return;
    }
    try {
      const procs = await readFile(path.join(d, 'cgroup.procs'), 'utf8');
      for (const l of procs.split('\n')) if (/^[0-9]+$/.test(l)) pids.push(Number(l));
    } catch {
      // A cgroup removed while walking has no processes left.
    }
    for (const e of entries) if (e.isDirectory()) await walk(path.join(d, e.name));
  };
  await walk(cgroupDir);
  return pids;
}

/** Remove a cgroup folder tree (cgroup folders are removed with rmdir, deepest first). */
export async function removeCgroupTree(cgroupDir: string): Promise<void> {
  const dirs: string[] = [];
  const walk = async (d: string): Promise<void> => {
    let entries;
    try {
      entries = await readdir(d, { withFileTypes: true });
    } catch {
      return;
    }
    dirs.push(d);
    for (const e of entries) if (e.isDirectory()) await walk(path.join(d, e.name));
  };
  await walk(cgroupDir);
  for (const d of dirs.reverse()) {
    try {
      await rmdir(d);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'ENOENT') {
        throw new CrateError('E_HOST_STOP', `cannot remove cgroup ${d}`, { cause: err });
      }
    }
  }
}

/** True when `p` exists. */
export async function exists(p: string): Promise<boolean> {
  try {
    await stat(p);
    return true;
  } catch {
    return false;
  }
}

/**
 * Pids (other than this process) whose command line or environment contains `needle`, e.g. the
 * private folder of a component: everything a starter launched names its folder somewhere.
 */
export async function pidsMentioning(needle: string): Promise<number[]> {
  const out: number[] = [];
  const entries = await readdir('/proc');
  for (const e of entries) {
    if (!/^[0-9]+$/.test(e)) continue;
    const pid = Number(e);
    if (pid === process.pid) continue;
    for (const f of ['cmdline', 'environ']) {
      try {
        const text = await readFile(`/proc/${pid}/${f}`, 'latin1');
        if (text.includes(needle)) {
          out.push(pid);
          break;
        }
      } catch {
        // The process exited while we looked, or is not readable: not ours to kill.
      }
    }
  }
  return out;
}

/** SIGKILL every pid in `pids` and wait up to `ms` for them to be gone. */
export async function killAll(pids: number[], ms = 3000): Promise<void> {
  for (const p of pids) killPid(p, 'SIGKILL');
  for (const p of pids) await waitPidGone(p, ms);
}

/**
 * Every existing cgroup folder called `name` directly below a hierarchy root: `/sys/fs/cgroup/<name>`
 * on a pure cgroup v2 host, `/sys/fs/cgroup/<controller>/<name>` for each v1 controller otherwise.
 */
export async function cgroupDirsNamed(name: string): Promise<string[]> {
  const base = '/sys/fs/cgroup';
  const candidates = [path.join(base, name)];
  try {
    for (const e of await readdir(base, { withFileTypes: true })) {
      if (e.isDirectory()) candidates.push(path.join(base, e.name, name));
    }
  } catch {
    return [];
  }
  const out: string[] = [];
  for (const c of candidates) if (await exists(path.join(c, 'cgroup.procs'))) out.push(c);
  return out;
}

/** Kill every process in the named cgroup trees (all hierarchies) and remove the folders. */
export async function destroyCgroupsNamed(name: string): Promise<void> {
  const dirs = await cgroupDirsNamed(name);
  const pids = (await Promise.all(dirs.map((d) => cgroupPids(d)))).flat();
  await killAll([...new Set(pids)]);
  for (const d of dirs) await removeCgroupTree(d);
}
