/**
 * Local commands for drivers: execa with an argv array (never a shell), a deadline on every call, an
 * optional AbortSignal, and one host-call count per call for the component it talks to.
 */
import { execa } from 'execa';
import { countHostCall, type HostComponent } from '../core/hostcalls.ts';

/** Options of runCommand. */
export interface RunOptions {
  /** The complete environment of the command (the operator's own is NOT inherited). */
  env: Readonly<Record<string, string>>;
  /** Deadline of the whole call; SIGTERM at the deadline, SIGKILL 2 s later. */
  timeoutMs: number;
  /** Counted once per call when set. */
  component?: HostComponent;
  signal?: AbortSignal;
}

/** What a finished (or failed to start, or killed) command left behind. Never thrown. */
export interface RunResult {
  /** Process exit code; undefined when it did not exit by itself (spawn error, timeout, abort, signal). */
  exitCode: number | undefined;
  stdout: string;
  stderr: string;
  timedOut: boolean;
  aborted: boolean;
  /** errno-style code of a spawn failure (ENOENT: binary missing), if any. */
  spawnError: string | undefined;
  durationMs: number;
}

/**
 * Run `file args…` and resolve with its outcome; never rejects for the command's own failures
 * (non-zero exit, timeout, abort, missing binary): callers map them to their CrateError codes.
 */
export async function runCommand(file: string, args: readonly string[], opts: RunOptions): Promise<RunResult> {
  if (opts.component) countHostCall(opts.component);
  const started = performance.now();
  const r = await execa(file, args, {
    env: { ...opts.env },
    extendEnv: false,
    reject: false,
    timeout: opts.timeoutMs,
    forceKillAfterDelay: 2000,
    stdin: 'ignore',
    stripFinalNewline: false,
    encoding: 'utf8',
    ...(opts.signal ? { cancelSignal: opts.signal } : {}),
  });
  const code = (r as { code?: unknown }).code;
  return {
    exitCode: typeof r.exitCode === 'number' && !r.timedOut && !r.isCanceled ? r.exitCode : undefined,
    stdout: typeof r.stdout === 'string' ? r.stdout : '',
    stderr: typeof r.stderr === 'string' ? r.stderr : '',
    timedOut: r.timedOut,
    aborted: r.isCanceled,
    spawnError: typeof code === 'string' && r.exitCode === undefined ? code : undefined,
    durationMs: performance.now() - started,
  };
}

/** The last `max` characters of `s` (trimmed), for error messages that must stay short. */
export function tail(s: string, max = 600): string {
  const t = s.trim();
  return t.length <= max ? t : `…${t.slice(-max)}`;
}
