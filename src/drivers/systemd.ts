/**
 * The systemd driver: the verbs the reconciler and deployment machines use to run binary instances as
 * units. Every verb is idempotent, batches all the units it is given into as few `systemctl` calls as
 * possible, has a deadline, and throws only CrateErrors:
 * `E_INVALID_UNIT_FIELD` (a spec or name that cannot be rendered safely / is not ours; nothing written),
 * `E_SYSTEMCTL` (systemd refused; stderr tail in the message), `E_SYSTEMD_UNAVAILABLE` (no manager
 * or no answer in time), `E_ABORTED`, `E_UNIT_FILE` (a unit or env file could not be written/removed).
 *
 * Units are enabled while they should run (`enable --now` / `disable --now`), so a host reboot brings
 * back exactly the instances that were running, even before the operator is up.
 */
import { existsSync } from 'node:fs';
import { chmod, lstat, readFile } from 'node:fs/promises';
import path from 'node:path';
import type { SystemdScope } from '../config.ts';
import { CrateError } from '../core/errors.ts';
import { parseUnitName, unitName } from '../core/identity.ts';
import { ensureDir, removeFileDurably, writeFileAtomic } from '../desired/atomic.ts';
import { envFilePath } from './layout.ts';
import {
  checkOwnedUnits,
  createSystemctl,
  exactGlob,
  parseListUnits,
  parseShow,
  type CallOptions,
  type SystemctlOptions,
} from './systemd-ctl.ts';
import { instanceEnv, renderEnvFile, renderUnit, type UnitSpec } from './unit.ts';

export type { CallOptions } from './systemd-ctl.ts';

/** Outcome of writing one instance's files. */
export interface UnitWriteResult {
  unit: string;
  /** True when the unit file or the env file was (re)written: a running unit needs a restart to pick it up. */
  changed: boolean;
  unitChanged: boolean;
  envChanged: boolean;
}

/** The verbs. Fakes for tests are plain objects with these function fields. */
export interface SystemdDriver {
  readonly scope: SystemdScope;
  /** Where unit files are written. */
  readonly unitDir: string;
  /**
   * Render every spec first (any invalid spec → E_INVALID_UNIT_FIELD, nothing written), then write each
   * unit file (0644) and env file (0600, folder 0700) atomically, only where the content (or the env
   * file's mode) differs. Does not reload systemd: call daemonReload once after a batch with changes.
   */
  writeUnits(specs: readonly UnitSpec[]): Promise<UnitWriteResult[]>;
  /** `systemctl daemon-reload`. */
  daemonReload(call?: CallOptions): Promise<void>;
  /** Enable and start (`enable --now`); a no-op for units already running. Unit files must exist. */
  start(units: readonly string[], call?: CallOptions): Promise<void>;
  /** Disable and stop (SIGTERM, then SIGKILL after TimeoutStopSec); a no-op for stopped or unknown units. */
  stop(units: readonly string[], call?: CallOptions): Promise<void>;
  /** Enable, then `systemctl restart` (starts stopped units too), keeping "running ⇔ enabled". */
  restart(units: readonly string[], call?: CallOptions): Promise<void>;
  /** Clear the failed state and start-rate counter, so a crash-looped unit can be started again. */
  resetFailed(units: readonly string[], call?: CallOptions): Promise<void>;
  /**
   * Stop, disable, delete unit and env files, reset-failed, daemon-reload. Afterwards the units are
   * gone from `list-units` and from disk. Units that do not exist are fine.
   */
  remove(units: readonly string[], call?: CallOptions): Promise<void>;
  /**
   * `systemctl show -p Id,<props> u1 u2 …` in one call: properties per unit name, as systemd prints
   * them. Unknown units answer with LoadState=not-found. Use for the few units a pass needs details of.
   */
  show(units: readonly string[], props: readonly string[], call?: CallOptions): Promise<Record<string, Record<string, string>>>;
}

/** Options of createSystemdDriver. */
export interface SystemdDriverOptions extends SystemctlOptions {
  /** The apps folder: env files live under it (see layout.ts). */
  appsDir: string;
  /** config.stopTimeoutSec: stop, restart and remove get this plus a margin as their deadline. */
  stopTimeoutSec: number;
}

const PROP_PATTERN = /^[A-Za-z][A-Za-z0-9]*$/;
const WANTS_TARGETS = ['default.target', 'multi-user.target'];
const WRITE_CONCURRENCY = 16;

async function readIfExists(file: string): Promise<string | undefined> {
  try {
    return await readFile(file, 'utf8');
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw err;
  }
}

async function modeOf(file: string): Promise<number | undefined> {
  try {
    return (await lstat(file)).mode & 0o777;
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw err;
  }
}

async function inBatches<T, R>(items: readonly T[], n: number, fn: (t: T) => Promise<R>): Promise<R[]> {
  const out: R[] = [];
  for (let i = 0; i < items.length; i += n) out.push(...(await Promise.all(items.slice(i, i + n).map(fn))));
  return out;
}

function fileError(what: string, file: string, err: unknown): CrateError {
  if (err instanceof CrateError) return err;
  return new CrateError('E_UNIT_FILE', `${what} ${file}: ${(err as Error).message}`, { cause: err, details: { file } });
}

/** Build the systemd driver for one scope. Throws E_CONFIG when the unit folder cannot be determined. */
export function createSystemdDriver(opts: SystemdDriverOptions): SystemdDriver {
  const ctl = createSystemctl(opts);
  const unitDir = ctl.unitDir;
  const slowMs = (opts.stopTimeoutSec + 15) * 1000;
  const slow = (call: CallOptions | undefined): CallOptions => ({ timeoutMs: slowMs, ...call });
  const unitPath = (u: string): string => path.join(unitDir, u);

  const loadedAmong = async (units: readonly string[], call?: CallOptions) => {
    if (units.length === 0) return [];
    const r = await ctl.run(['list-units', '--all', '--output=json', ...units], call);
    return parseListUnits(r.stdout);
  };

  const writeOne = async (spec: UnitSpec, unit: string, env: string): Promise<UnitWriteResult> => {
    const uPath = unitPath(unitName(spec.key, spec.instance, spec.spec));
    try {
      const unitChanged = (await readIfExists(uPath)) !== unit;
      const envChanged = (await readIfExists(spec.envFile)) !== env || (await modeOf(spec.envFile)) !== 0o600;
      if (envChanged) {
        await ensureDir(path.dirname(spec.envFile), 0o700);
        await writeFileAtomic(spec.envFile, env, 0o600);
        // An existing file keeps its mode through rename of a new inode, but be explicit about it.
        await chmod(spec.envFile, 0o600);
      }
      if (unitChanged) await writeFileAtomic(uPath, unit, 0o644);
      return { unit: unitName(spec.key, spec.instance, spec.spec), changed: unitChanged || envChanged, unitChanged, envChanged };
    } catch (err) {
      throw fileError('cannot write files of', uPath, err);
    }
  };

  return {
    scope: ctl.scope,
    unitDir,

    async writeUnits(specs) {
      const rendered = specs.map((spec) => {
        const expected = envFilePath(opts.appsDir, spec.key, spec.instance, spec.spec);
        if (spec.envFile !== expected) {
          throw new CrateError('E_INVALID_UNIT_FIELD', `envFile: must be ${expected}, got ${spec.envFile}`, { details: { field: 'envFile' } });
        }
        return { spec, unit: renderUnit(spec), env: renderEnvFile(instanceEnv(spec)) };
      });
      const names = rendered.map((r) => unitName(r.spec.key, r.spec.instance, r.spec.spec));
      const dup = names.find((n, i) => names.indexOf(n) !== i);
      if (dup) throw new CrateError('E_INVALID_UNIT_FIELD', `unit: ${dup} appears twice in one batch`, { details: { field: 'unit' } });
      if (rendered.length === 0) return [];
      try {
        await ensureDir(unitDir, 0o755);
      } catch (err) {
        throw fileError('cannot create', unitDir, err);
      }
      return inBatches(rendered, WRITE_CONCURRENCY, (r) => writeOne(r.spec, r.unit, r.env));
    },

    async daemonReload(call) {
      await ctl.run(['daemon-reload'], call);
    },

    async start(units, call) {
      checkOwnedUnits(units);
      if (units.length === 0) return;
      await ctl.run(['enable', '--now', '--no-reload', ...units], slow(call));
    },

    async stop(units, call) {
      checkOwnedUnits(units);
      const withFile = units.filter((u) => existsSync(unitPath(u)));
      const withoutFile = units.filter((u) => !withFile.includes(u));
      if (withFile.length > 0) await ctl.run(['disable', '--now', '--no-reload', ...withFile], slow(call));
      // A unit whose file is gone cannot be disabled; stop it if systemd still has it loaded.
      const loaded = (await loadedAmong(withoutFile, call)).map((l) => l.unit);
      if (loaded.length > 0) await ctl.run(['stop', ...loaded], slow(call));
    },

    async restart(units, call) {
      checkOwnedUnits(units);
      if (units.length === 0) return;
      await ctl.run(['enable', '--no-reload', ...units], call);
      await ctl.run(['restart', ...units], slow(call));
    },

    async resetFailed(units, call) {
      checkOwnedUnits(units);
      if (units.length === 0) return;
      await ctl.run(['reset-failed', ...units.map(exactGlob)], call);
    },

    async remove(units, call) {
      checkOwnedUnits(units);
      if (units.length === 0) return;
      const withFile = units.filter((u) => existsSync(unitPath(u)));
      if (withFile.length > 0) await ctl.run(['disable', '--no-reload', ...withFile], call);
      const loaded = (await loadedAmong(units, call)).filter((l) => l.active !== 'inactive').map((l) => l.unit);
      if (loaded.length > 0) await ctl.run(['stop', ...loaded], slow(call));
      for (const u of units) {
        const parsed = parseUnitName(u);
        if (!parsed) continue;
        const files = [unitPath(u), ...WANTS_TARGETS.map((t) => path.join(unitDir, `${t}.wants`, u)), envFilePath(opts.appsDir, parsed.key, parsed.instance, parsed.spec)];
        for (const f of files) {
          try {
            await removeFileDurably(f);
          } catch (err) {
            if ((err as NodeJS.ErrnoException).code !== 'ENOTDIR') throw fileError('cannot remove', f, err);
          }
        }
      }
      await ctl.run(['daemon-reload'], call);
      // Failed units stay listed (not-found, failed) until their failed state is reset.
      await ctl.run(['reset-failed', ...units.map(exactGlob)], call);
    },

    async show(units, props, call) {
      checkOwnedUnits(units);
      for (const p of props) {
        if (!PROP_PATTERN.test(p)) throw new CrateError('E_INVALID_UNIT_FIELD', `property: ${JSON.stringify(p)}`, { details: { field: 'props' } });
      }
      if (units.length === 0) return {};
      const r = await ctl.run(['show', '-p', ['Id', ...props.filter((p) => p !== 'Id')].join(','), ...units], call);
      return parseShow(r.stdout, units);
    },
  };
}
