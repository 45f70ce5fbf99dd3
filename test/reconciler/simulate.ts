/**
 * A pure model of the host for planner tests: applies a plan's actions to an ObservedApp the way the
 * real drivers would, and checks the safety rules while doing so.
 */
import type { Action, DesiredModel, ObservedApp, ObservedRun, Plan } from '../../src/reconciler/model.ts';

export interface SimOptions {
  /** Runs that never become healthy (by `${instance}/${spec}`). */
  unhealthy?: Set<string>;
}

export const runName = (instance: string, spec: string): string => `${instance}/${spec}`;
const active = (r: ObservedRun): boolean => r.state === 'running' || r.state === 'starting';

/** Applies `plan` to `observed`; throws on any safety violation. Returns the new observed state. */
export function applyPlan(plan: Plan, desired: DesiredModel | null, observed: ObservedApp, opts: SimOptions = {}): ObservedApp {
  let runs = observed.runs.map((r) => ({ ...r }));
  let route = observed.route ? { ...observed.route, ports: [...observed.route.ports] } : null;
  const healthy = new Set<number>(); // ports waited healthy in this plan
  const find = (instance: string, spec: string): ObservedRun | undefined => runs.find((r) => r.name === runName(instance, spec));

  const step = (a: Action): void => {
    switch (a.type) {
      case 'fetchRelease':
      case 'pullImage':
      case 'removeFiles':
      case 'drain':
        return;
      case 'createRun': {
        if (!desired) throw new Error('createRun without desired');
        const gen = desired.instances.find((i) => i.id === a.instance)?.generation ?? 0;
        const clash = runs.find((r) => active(r) && r.port === a.port && r.name !== runName(a.instance, desired.spec));
        if (clash) throw new Error(`createRun ${a.instance} on :${a.port} clashes with ${clash.name}`);
        runs = runs.filter((r) => r.name !== runName(a.instance, desired.spec));
        runs.push({ instance: a.instance, spec: desired.spec, port: a.port, version: desired.version, generation: gen, runtime: desired.runtime, name: runName(a.instance, desired.spec), state: 'running', fileMissing: false });
        return;
      }
      case 'startRun':
      case 'restartRun': {
        const r = find(a.instance, a.spec);
        if (!r) throw new Error(`${a.type} of missing run ${a.instance}`);
        const clash = runs.find((x) => x !== r && active(x) && x.port === r.port);
        if (clash) throw new Error(`${a.type} ${r.name} clashes with ${clash.name}`);
        r.state = 'running';
        if (a.type === 'restartRun') r.generation = a.generation;
        return;
      }
      case 'waitHealthy': {
        const r = find(a.instance, a.spec);
        if (!r || !active(r) || r.port !== a.port) throw new Error(`waitHealthy on a run that does not run: ${a.instance}:${a.port}`);
        if (opts.unhealthy?.has(r.name)) throw new Error(`UNHEALTHY ${r.name}`);
        healthy.add(a.port);
        return;
      }
      case 'setRoute': {
        for (const p of a.ports) {
          const r = runs.find((x) => x.port === p && active(x));
          if (!r) throw new Error(`route to :${p} where nothing runs`);
          const wasRouted = route?.ports.includes(p) === true;
          if (!healthy.has(p) && !wasRouted) throw new Error(`route to :${p} before it was waited healthy`);
        }
        route = { domain: a.domain, ports: [...a.ports] };
        return;
      }
      case 'stopRun':
      case 'removeRun': {
        const r = find(a.instance, a.spec);
        if (r && active(r) && route?.ports.includes(r.port) && plan.strategy !== 'recreate') {
          throw new Error(`${a.type} of ${r.name} while it is routed`);
        }
        if (a.type === 'stopRun' && r) r.state = 'stopped';
        if (a.type === 'removeRun') runs = runs.filter((x) => x.name !== runName(a.instance, a.spec));
        return;
      }
      case 'removeRoute':
        route = null;
        return;
    }
  };
  for (const s of plan.actions) step(s.action);
  return { key: observed.key, runs, route };
}

/** Like applyPlan, but on failure runs the undo actions of the steps so far (as the machine does). */
export function applyWithRollback(plan: Plan, desired: DesiredModel | null, observed: ObservedApp, opts: SimOptions): { state: ObservedApp; outcome: 'succeeded' | 'rolled_back' | 'failed' } {
  let state = observed;
  const done: Plan['actions'] = [];
  let committed = false;
  for (const s of plan.actions) {
    try {
      state = applyPlan({ ...plan, actions: [s] }, desired, state, opts);
      done.push(s);
      committed ||= s.commit === true;
    } catch (err) {
      if (!String(err).includes('UNHEALTHY')) throw err;
      if (committed) return { state, outcome: 'failed' };
      done.push(s);
      const undo = done.reverse().flatMap((d) => d.undo);
      state = applyPlan({ ...plan, strategy: 'recreate', actions: undo.map((a, i) => ({ id: `u${i}`, name: '', action: a, undo: [] })) }, desired, state, {});
      return { state, outcome: 'rolled_back' };
    }
  }
  return { state, outcome: 'succeeded' };
}
