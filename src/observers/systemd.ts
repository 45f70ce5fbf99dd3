/**
 * The systemd observer: one plain, JSON-serialisable snapshot of every unit the operator owns.
 *
 * Cost per pass is constant in the number of apps: ONE `systemctl list-units --all --output=json
 * 'crate-*'` (state + Description, which carries identity, version, generation and port) and ONE
 * readdir of the unit folder (which unit files exist: a file deleted under a loaded unit, or a file
 * systemd has not loaded). Only unit files the manager does not list are read from disk, to learn their
 * identity. MainPID/NRestarts are not part of the snapshot: ask `observeUnitDetails` for the few units
 * a pass needs them for (one batched `systemctl show`).
 */
import { readdir, readFile } from 'node:fs/promises';
import path from 'node:path';
import type { SystemdScope } from '../config.ts';
import { CrateError, describeError } from '../core/errors.ts';
import { parseUnitName, UNIT_PREFIX, type AppKey } from '../core/identity.ts';
import { checkOwnedUnits, createSystemctl, parseListUnits, parseShow, type CallOptions, type Systemctl, type SystemctlOptions } from '../drivers/systemd-ctl.ts';
import { parseUnitDescription, type UnitIdentity } from '../drivers/unit.ts';

/**
 * systemd's LoadState, plus `not-loaded`: the unit file exists but the manager has no unit object for
 * it (never started since the last daemon-reload, or stopped and garbage-collected). Such a unit is
 * stopped.
 */
export type ObservedLoadState = 'loaded' | 'not-found' | 'bad-setting' | 'error' | 'masked' | 'stub' | 'merged' | 'not-loaded';
/** systemd's ActiveState. */
export type ObservedActiveState = 'active' | 'reloading' | 'inactive' | 'failed' | 'activating' | 'deactivating' | 'maintenance';

/**
 * The reconciler's view of a unit's state: `running` (active), `starting` (activating, including
 * `auto-restart` between crashes), `failed`, `stopped` (inactive, deactivating, maintenance, or a file
 * systemd has not loaded).
 */
export type UnitRunState = 'running' | 'starting' | 'stopped' | 'failed';

/** One unit the operator owns, as the host shows it. */
export interface ObservedUnit {
  unit: string;
  key: AppKey;
  instance: string;
  /** The revision part of the unit name (`crate-…:<instance>:<spec>.service`), if any. */
  spec: string | undefined;
  state: UnitRunState;
  load: ObservedLoadState;
  active: ObservedActiveState;
  /** systemd's SubState (`running`, `dead`, `auto-restart`, `failed`, …). */
  sub: string;
  /** Whether the unit file exists on disk. */
  fileExists: boolean;
  /**
   * Identity from the unit's Description (from the file when systemd does not list the unit).
   * Undefined when neither carries one, e.g. a loaded unit whose file was deleted.
   */
  identity: UnitIdentity | undefined;
}

/** A successful observation. Units sorted by name. */
export interface SystemdSnapshot {
  unavailable: false;
  scope: SystemdScope;
  units: ObservedUnit[];
}

/** systemd could not be asked (no manager, no answer in time): the pass must not act on systemd. */
export interface SystemdUnavailable {
  unavailable: true;
  code: string;
  message: string;
}

export type SystemdObservation = SystemdSnapshot | SystemdUnavailable;

/** Details of a unit that `list-units` does not give (from `systemctl show`). */
export interface UnitDetails {
  unit: string;
  load: string;
  active: string;
  sub: string;
  /** 0 when no main process runs. */
  mainPid: number;
  /** Restarts done by `Restart=` since the unit was last started by hand. */
  nRestarts: number;
  /** `success`, `exit-code`, `signal`, `timeout`, `start-limit-hit`, … */
  result: string;
  /** The unit file changed on disk since the last daemon-reload. */
  needDaemonReload: boolean;
}

/** Map systemd's ActiveState to the reconciler's run state (see UnitRunState). */
export function runState(active: string): UnitRunState {
  switch (active) {
    case 'active':
    case 'reloading':
      return 'running';
    case 'activating':
      return 'starting';
    case 'failed':
      return 'failed';
    default:
      return 'stopped';
  }
}

const DETAIL_PROPS = ['LoadState', 'ActiveState', 'SubState', 'MainPID', 'NRestarts', 'Result', 'NeedDaemonReload'];
const LOAD_STATES = new Set<string>(['loaded', 'not-found', 'bad-setting', 'error', 'masked', 'stub', 'merged']);
const ACTIVE_STATES = new Set<string>(['active', 'reloading', 'inactive', 'failed', 'activating', 'deactivating', 'maintenance']);

/** Reads systemd for the reconciler. */
export interface SystemdObserver {
  /** One snapshot; never throws for an unreachable systemd (returns `unavailable`), only E_ABORTED. */
  observe(call?: CallOptions): Promise<SystemdObservation>;
  /** One batched `systemctl show` for the given units (owned names only). Throws the driver's codes. */
  details(units: readonly string[], call?: CallOptions): Promise<UnitDetails[]>;
}

async function ownedUnitFiles(unitDir: string): Promise<string[]> {
  try {
    const entries = await readdir(unitDir, { withFileTypes: true });
    return entries.filter((e) => (e.isFile() || e.isSymbolicLink()) && e.name.startsWith(UNIT_PREFIX) && parseUnitName(e.name)).map((e) => e.name);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return [];
    throw new CrateError('E_SYSTEMD_UNAVAILABLE', `cannot read unit folder ${unitDir}: ${(err as Error).message}`, { cause: err });
  }
}

async function identityFromFile(file: string): Promise<UnitIdentity | undefined> {
  let text: string;
  try {
    text = await readFile(file, 'utf8');
  } catch (err) {
    // Deleted between readdir and read: the unit is simply gone.
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw err;
  }
  const line = text.split('\n').find((l) => l.startsWith('Description='));
  return line === undefined ? undefined : parseUnitDescription(line.slice('Description='.length));
}

/** Build an observer from the same options as the driver (scope, env, unitDir, timeoutMs). */
export function createSystemdObserver(opts: SystemctlOptions): SystemdObserver {
  const ctl: Systemctl = createSystemctl(opts);
  return {
    async observe(call) {
      try {
        const [listed, files] = await Promise.all([
          ctl.run(['list-units', '--all', '--output=json', `${UNIT_PREFIX}*`], call).then((r) => parseListUnits(r.stdout)),
          ownedUnitFiles(ctl.unitDir),
        ]);
        const fileSet = new Set(files);
        const units: ObservedUnit[] = [];
        const seen = new Set<string>();
        for (const l of listed) {
          const parsed = parseUnitName(l.unit);
          if (!parsed) continue;
          seen.add(l.unit);
          units.push({
            unit: l.unit,
            key: parsed.key,
            instance: parsed.instance,
            spec: parsed.spec,
            state: runState(l.active),
            load: (LOAD_STATES.has(l.load) ? l.load : 'error') as ObservedLoadState,
            active: (ACTIVE_STATES.has(l.active) ? l.active : 'inactive') as ObservedActiveState,
            sub: l.sub,
            fileExists: fileSet.has(l.unit),
            identity: parseUnitDescription(l.description),
          });
        }
        const unlisted = files.filter((f) => !seen.has(f));
        const identities = await Promise.all(unlisted.map((f) => identityFromFile(path.join(ctl.unitDir, f))));
        unlisted.forEach((f, i) => {
          const parsed = parseUnitName(f);
          if (!parsed) return;
          units.push({
            unit: f,
            key: parsed.key,
            instance: parsed.instance,
            spec: parsed.spec,
            state: 'stopped',
            load: 'not-loaded',
            active: 'inactive',
            sub: 'dead',
            fileExists: true,
            identity: identities[i],
          });
        });
        units.sort((a, b) => (a.unit < b.unit ? -1 : a.unit > b.unit ? 1 : 0));
        return { unavailable: false, scope: ctl.scope, units };
      } catch (err) {
        if (err instanceof CrateError && err.code === 'E_ABORTED') throw err;
        return { unavailable: true, ...describeError(err) };
      }
    },

    async details(units, call) {
      checkOwnedUnits(units);
      if (units.length === 0) return [];
      const r = await ctl.run(['show', '-p', ['Id', ...DETAIL_PROPS].join(','), ...units], call);
      const byId = parseShow(r.stdout, units);
      return units.map((u) => {
        const p = byId[u] ?? {};
        const int = (s: string | undefined): number => (s !== undefined && /^[0-9]+$/.test(s) ? Number(s) : 0);
        return {
          unit: u,
          load: p.LoadState ?? 'not-found',
          active: p.ActiveState ?? 'inactive',
          sub: p.SubState ?? 'dead',
          mainPid: int(p.MainPID),
          nRestarts: int(p.NRestarts),
          result: p.Result ?? '',
          needDaemonReload: p.NeedDaemonReload === 'yes',
        };
      });
    },
  };
}

/** Convenience for one-off calls: build an observer and observe once. */
export async function observeSystemd(opts: SystemctlOptions, call?: CallOptions): Promise<SystemdObservation> {
  return createSystemdObserver(opts).observe(call);
}
