/**
 * `systemctl` invocation shared by the systemd driver and observer: scope flag, environment, a deadline
 * on every call, one host-call count per call, and the mapping of failures to stable error codes:
 * - `E_SYSTEMD_UNAVAILABLE`: systemctl missing, no manager to talk to, or no answer before the deadline;
 * - `E_SYSTEMCTL`: the manager answered with an error (message carries the stderr tail);
 * - `E_ABORTED`: the caller's AbortSignal fired.
 */
import path from 'node:path';
import type { SystemdScope } from '../config.ts';
import { CrateError } from '../core/errors.ts';
import { parseUnitName } from '../core/identity.ts';
import { runCommand, tail, type RunResult } from './exec.ts';

/** Where the operator talks to systemd. */
export interface SystemctlOptions {
  scope: SystemdScope;
  /**
   * Environment of every systemctl call (not inherited from the operator). User scope needs
   * XDG_RUNTIME_DIR (the manager's bus) and XDG_CONFIG_HOME (unit files for enable/disable).
   * Default: the operator's own environment.
   */
  env?: Readonly<Record<string, string | undefined>>;
  /** Unit file folder; default per scope (see defaultUnitDir). */
  unitDir?: string;
  /** Deadline of one systemctl call unless a verb says otherwise; default 30 s. */
  timeoutMs?: number;
  /** systemctl binary; default `systemctl` looked up in PATH. */
  systemctl?: string;
}

/** Per-call options of every verb. */
export interface CallOptions {
  timeoutMs?: number;
  signal?: AbortSignal;
}

const FALLBACK_PATH = '/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin';

/**
 * The folder systemd reads the operator's unit files from: `/etc/systemd/system` for the system
 * manager; `$XDG_CONFIG_HOME/systemd/user` (else `$HOME/.config/systemd/user`) for a user manager.
 */
export function defaultUnitDir(scope: SystemdScope, env: Readonly<Record<string, string | undefined>>): string {
  if (scope === 'system') return '/etc/systemd/system';
  const cfg = env.XDG_CONFIG_HOME ?? (env.HOME ? path.join(env.HOME, '.config') : undefined);
  if (!cfg) throw new CrateError('E_CONFIG', 'user scope needs XDG_CONFIG_HOME or HOME to find the unit folder');
  return path.join(cfg, 'systemd', 'user');
}

// stderr of systemctl when there is no manager to talk to (bus socket missing or refused, not booted
// with systemd, no XDG_RUNTIME_DIR). Only used to pick the error code; the text is kept in the message.
const UNAVAILABLE_STDERR =
  /Failed to connect to bus|Failed to get D-Bus connection|System has not been booted with systemd|Transport endpoint is not connected|Connection refused|\$DBUS_SESSION_BUS_ADDRESS and \$XDG_RUNTIME_DIR not defined/;

/** A configured systemctl: run(args) with scope flags, deadline, counting and error mapping. */
export interface Systemctl {
  readonly scope: SystemdScope;
  readonly unitDir: string;
  /** Run `systemctl [--user] --no-pager --no-ask-password args…`; resolves on exit 0, else throws. */
  run(args: readonly string[], call?: CallOptions): Promise<RunResult>;
  /** Like run, but resolves with the result whatever the exit code (still throws for unavailable/abort). */
  runAllowFailure(args: readonly string[], call?: CallOptions): Promise<RunResult>;
}

/** Build a Systemctl from options; throws E_CONFIG when the unit folder cannot be determined. */
export function createSystemctl(opts: SystemctlOptions): Systemctl {
  const env: Record<string, string> = {};
  for (const [k, v] of Object.entries(opts.env ?? process.env)) if (v !== undefined) env[k] = v;
  env.PATH ??= FALLBACK_PATH;
  // systemctl's human-oriented output must not vary with the caller's locale or terminal.
  env.LC_ALL = 'C';
  env.SYSTEMD_COLORS = '0';
  delete env.SYSTEMD_PAGER;
  const unitDir = opts.unitDir ?? defaultUnitDir(opts.scope, env);
  const bin = opts.systemctl ?? 'systemctl';
  const base = [...(opts.scope === 'user' ? ['--user'] : []), '--no-pager', '--no-ask-password'];
  const defaultTimeout = opts.timeoutMs ?? 30_000;

  const exec = async (args: readonly string[], call: CallOptions | undefined): Promise<RunResult> => {
    const r = await runCommand(bin, [...base, ...args], {
      env,
      timeoutMs: call?.timeoutMs ?? defaultTimeout,
      component: 'systemctl',
      ...(call?.signal ? { signal: call.signal } : {}),
    });
    const what = `systemctl ${args.slice(0, 3).join(' ')}${args.length > 3 ? ' …' : ''}`;
    const details = { args: args.slice(0, 20), exitCode: r.exitCode, stderr: tail(r.stderr) };
    if (r.aborted) throw new CrateError('E_ABORTED', `${what}: aborted`, { details });
    if (r.spawnError) throw new CrateError('E_SYSTEMD_UNAVAILABLE', `${what}: cannot run ${bin} (${r.spawnError})`, { details });
    if (r.timedOut) {
      throw new CrateError('E_SYSTEMD_UNAVAILABLE', `${what}: no answer within ${call?.timeoutMs ?? defaultTimeout} ms`, {
        details: { ...details, timedOut: true },
      });
    }
    if (r.exitCode !== 0 && UNAVAILABLE_STDERR.test(r.stderr)) {
      throw new CrateError('E_SYSTEMD_UNAVAILABLE', `${what}: ${tail(r.stderr, 300)}`, { details });
    }
    return r;
  };

  return {
    scope: opts.scope,
    unitDir,
    async run(args, call) {
      const r = await exec(args, call);
      if (r.exitCode !== 0) {
        throw new CrateError('E_SYSTEMCTL', `systemctl ${args[0] ?? ''} failed (exit ${r.exitCode}): ${tail(r.stderr, 400)}`, {
          details: { args: args.slice(0, 20), exitCode: r.exitCode, stderr: tail(r.stderr) },
        });
      }
      return r;
    },
    runAllowFailure: exec,
  };
}

/**
 * Guard: the driver only ever touches units the operator owns. Throws E_INVALID_UNIT_FIELD for any
 * other name (which also keeps option-like or glob strings out of systemctl's argv).
 */
export function checkOwnedUnits(units: readonly string[]): void {
  for (const u of units) {
    if (!parseUnitName(u)) {
      throw new CrateError('E_INVALID_UNIT_FIELD', `unit: ${JSON.stringify(u)} is not a unit the operator owns`, { details: { field: 'unit' } });
    }
  }
}

/** One entry of `systemctl list-units --output=json`. */
export interface ListedUnit {
  unit: string;
  load: string;
  active: string;
  sub: string;
  description: string;
}

/** Parse `list-units --output=json`; throws E_SYSTEMCTL when systemctl printed something else. */
export function parseListUnits(stdout: string): ListedUnit[] {
  let doc: unknown;
  try {
    doc = JSON.parse(stdout);
  } catch (err) {
    throw new CrateError('E_SYSTEMCTL', 'list-units did not print JSON', { cause: err, details: { stdout: tail(stdout, 200) } });
  }
  if (!Array.isArray(doc)) throw new CrateError('E_SYSTEMCTL', 'list-units did not print a JSON array');
  const out: ListedUnit[] = [];
  for (const e of doc as unknown[]) {
    if (typeof e !== 'object' || e === null) continue;
    const r = e as Record<string, unknown>;
    const s = (k: string): string => (typeof r[k] === 'string' ? r[k] : '');
    if (s('unit') === '') continue;
    out.push({ unit: s('unit'), load: s('load'), active: s('active'), sub: s('sub'), description: s('description') });
  }
  return out;
}

/**
 * Parse `systemctl show -p Id,… u1 u2 …`: one block per unit (blank-line separated, in argument
 * order), keyed by the block's `Id`. Values are kept as systemd prints them.
 */
export function parseShow(stdout: string, units: readonly string[]): Record<string, Record<string, string>> {
  const out: Record<string, Record<string, string>> = {};
  const blocks = stdout.split(/\n\n+/).filter((b) => b.trim() !== '');
  blocks.forEach((block, i) => {
    const props: Record<string, string> = {};
    for (const line of block.split('\n')) {
      const eq = line.indexOf('=');
      if (eq > 0) props[line.slice(0, eq)] = line.slice(eq + 1);
    }
    const id = props.Id ?? units[i];
    if (id !== undefined) out[id] = props;
  });
  return out;
}

/**
 * A glob that matches exactly `unit` (last character in brackets). systemctl treats plain names as
 * "must be loaded" but globs as filters, so reset-failed with it is a no-op for unloaded units.
 */
export function exactGlob(unit: string): string {
  return `${unit.slice(0, -1)}[${unit.slice(-1)}]`;
}
