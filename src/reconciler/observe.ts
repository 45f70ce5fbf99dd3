/**
 * One observation of the whole host, shared by every app of a pass: one `systemctl list-units` (plus
 * a read of the unit folder), one Docker `/containers/json`, one Caddy config read. The cost does not
 * grow with the number of apps. A component that does not answer is marked unavailable; the planner
 * then plans nothing that depends on it.
 */
import { appKeyString } from '../core/identity.ts';
import type { CaddyObservation } from '../observers/caddy.ts';
import type { DockerObservation } from '../observers/docker.ts';
import type { SystemdObservation } from '../observers/systemd.ts';
import type { Availability, ObservedApp, ObservedRun, RunState } from './model.ts';

/** Everything one pass knows about the host. Plain data. */
export interface HostSnapshot {
  /** Epoch ms when the observation started. */
  at: number;
  availability: Availability;
  /** Why a component is unavailable (code: message), for status and logs. */
  unavailable: Partial<Record<keyof Availability, string>>;
  /** By appKeyString. Apps with no run and no route are absent. */
  apps: Map<string, ObservedApp>;
  /** Every 127.0.0.1 port a run of any app holds (for surge port choice). */
  usedPorts: Set<number>;
  /** Units and containers carrying the operator's name/label but no readable identity (reported only). */
  unidentified: string[];
}

export interface HostObservers {
  systemd(): Promise<SystemdObservation>;
  docker(): Promise<DockerObservation>;
  caddy(): Promise<CaddyObservation>;
}

function dockerState(state: string, exitCode: number | undefined): RunState {
  switch (state) {
    case 'running':
      return 'running';
    case 'restarting':
      return 'starting';
    case 'exited':
    case 'dead':
      return exitCode === 0 || exitCode === undefined ? 'stopped' : 'failed';
    default:
      return 'stopped';
  }
}

/** Build the snapshot from the three observations (pure). */
export function assembleSnapshot(at: number, sd: SystemdObservation, dk: DockerObservation, cd: CaddyObservation): HostSnapshot {
  const apps = new Map<string, ObservedApp>();
  const usedPorts = new Set<number>();
  const unidentified: string[] = [];
  const appOf = (k: ObservedApp['key']): ObservedApp => {
    const id = appKeyString(k);
    let a = apps.get(id);
    if (!a) {
      a = { key: k, runs: [], route: null };
      apps.set(id, a);
    }
    return a;
  };
  const add = (run: ObservedRun, k: ObservedApp['key']): void => {
    appOf(k).runs.push(run);
    if (run.state === 'running' || run.state === 'starting') usedPorts.add(run.port);
  };

  if (!sd.unavailable) {
    for (const u of sd.units) {
      const id = u.identity;
      if (!id && !u.spec) {
        unidentified.push(u.unit);
        continue;
      }
      add(
        {
          instance: u.instance,
          // Units without a spec part predate revision naming: they are their own revision.
          spec: u.spec ?? id?.spec ?? 'legacy',
          // 0 = unknown (a loaded unit whose file and description are gone); the reconciler fills it in.
          port: id?.port ?? 0,
          version: id?.version ?? 'unknown',
          generation: id?.generation ?? 0,
          runtime: 'binary',
          name: u.unit,
          state: u.state,
          fileMissing: !u.fileExists,
        },
        u.key,
      );
    }
  }
  if (!dk.unavailable) {
    for (const c of dk.containers) {
      const id = c.identity;
      const port = id?.port ?? c.ports.find((p) => p.hostIp === '127.0.0.1')?.hostPort;
      if (!id || port === undefined) {
        unidentified.push(c.name);
        continue;
      }
      add(
        {
          instance: id.instance,
          spec: id.spec ?? 'legacy',
          port,
          version: id.version ?? 'unknown',
          generation: id.generation ?? 0,
          runtime: 'docker',
          name: c.name,
          state: dockerState(c.state, c.exitCode),
          fileMissing: false,
        },
        id.key,
      );
    }
  }
  if (!cd.unavailable) {
    for (const r of cd.routes) {
      const a = appOf(r.key);
      // Duplicated ids: the first copy is the one Caddy matches first; upserting repairs the rest.
      if (!a.route) a.route = { domain: r.domains[0] ?? '', ports: [...r.ports], ...(r.drift.length > 0 ? { drift: [...r.drift] } : {}) };
    }
  }
  return {
    at,
    availability: { systemd: !sd.unavailable, docker: !dk.unavailable, caddy: !cd.unavailable },
    unavailable: {
      ...(sd.unavailable ? { systemd: `${sd.code}: ${sd.message}` } : {}),
      ...(dk.unavailable ? { docker: `${dk.code}: ${dk.message}` } : {}),
      ...(cd.unavailable ? { caddy: `${cd.code}: ${cd.message}` } : {}),
    },
    apps,
    usedPorts,
    unidentified,
  };
}

/** Observe the host once (the three components in parallel). */
export async function observeHost(o: HostObservers, now: () => number): Promise<HostSnapshot> {
  const at = now();
  const [sd, dk, cd] = await Promise.all([o.systemd(), o.docker(), o.caddy()]);
  return assembleSnapshot(at, sd, dk, cd);
}
