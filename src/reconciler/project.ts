/**
 * What the app looks like after some of a plan's actions ran: the instance states and traffic that
 * deployment status documents report, derived (purely) from the observation the plan started from and
 * the actions that completed. No host call: the status stays exact between observations and after a
 * crash (the completed actions are in the persisted machine snapshot).
 */
import type { Action, ObservedApp } from './model.ts';

export interface InstanceView {
  instance_id: string;
  slot?: string;
  port: number;
  version: string;
  state: 'starting' | 'running' | 'stopped' | 'failed' | 'removed';
  healthy: boolean;
}

export interface TrafficView {
  instance_id: string;
  slot?: string;
  port: number;
  weight: number;
}

interface RunView {
  instance: string;
  spec: string;
  slot: string | undefined;
  port: number;
  version: string;
  state: InstanceView['state'];
  healthy: boolean;
}

/**
 * @param start the observation the plan was made from
 * @param done actions that completed, in order (forward steps, then undo steps of a rollback)
 * @param target the revision the plan rolls out: its spec, version and the slot of each instance
 */
export function project(start: ObservedApp, done: readonly Action[], target: { spec: string; version: string; slots: Record<string, string | undefined> }): { instances: InstanceView[]; traffic: TrafficView[] } {
  const runs = new Map<string, RunView>();
  const name = (instance: string, spec: string): string => `${instance}/${spec}`;
  let route: number[] | null = start.route ? [...start.route.ports] : null;
  for (const r of start.runs) {
    const active = r.state === 'running' || r.state === 'starting';
    runs.set(name(r.instance, r.spec), {
      instance: r.instance,
      spec: r.spec,
      slot: target.slots[r.instance],
      port: r.port,
      version: r.version,
      state: r.state,
      healthy: active && (route?.includes(r.port) ?? false),
    });
  }
  for (const a of done) {
    switch (a.type) {
      case 'createRun':
        runs.set(name(a.instance, a.spec), { instance: a.instance, spec: a.spec, slot: a.slot, port: a.port, version: target.version, state: 'starting', healthy: false });
        break;
      case 'startRun':
      case 'restartRun': {
        const r = runs.get(name(a.instance, a.spec));
        if (r) Object.assign(r, { state: 'starting', healthy: false });
        break;
      }
      case 'waitHealthy': {
        const r = runs.get(name(a.instance, a.spec));
        if (r) Object.assign(r, { state: 'running', healthy: true });
        break;
      }
      case 'stopRun': {
        const r = runs.get(name(a.instance, a.spec));
        if (r) Object.assign(r, { state: 'stopped', healthy: false });
        break;
      }
      case 'removeRun': {
        const r = runs.get(name(a.instance, a.spec));
        if (r) Object.assign(r, { state: 'removed', healthy: false });
        break;
      }
      case 'setRoute':
        route = [...a.ports];
        break;
      case 'removeRoute':
        route = null;
        break;
      default:
        break;
    }
  }
  const list = [...runs.values()].sort((a, b) => a.instance.localeCompare(b.instance) || a.port - b.port);
  const instances = list.map((r) => ({ instance_id: r.instance, ...(r.slot !== undefined ? { slot: r.slot } : {}), port: r.port, version: r.version, state: r.state, healthy: r.healthy }));
  const routed = route ?? [];
  const servers = list.filter((r) => routed.includes(r.port) && r.state !== 'removed');
  const share = servers.length > 0 ? Math.floor(100 / servers.length) : 0;
  const traffic = servers.map((r, i) => ({
    instance_id: r.instance,
    ...(r.slot !== undefined ? { slot: r.slot } : {}),
    port: r.port,
    // The remainder goes to the first upstream so weights always sum to 100.
    weight: share + (i === 0 ? 100 - share * servers.length : 0),
  }));
  return { instances, traffic };
}
