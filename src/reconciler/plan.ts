/**
 * `plan(desired, observed, ctx, now) → Plan`: the pure heart of the reconciler. No I/O, no clock reads:
 * everything it knows arrives as arguments, so it is tested with tables and properties.
 *
 * Safety rules it keeps (stated as property tests in test/reconciler/plan.property.test.ts):
 * - a serving run is never stopped before its replacement is healthy and routed (except `recreate`,
 *   which says so in `dropsTraffic`);
 * - the route never points at a run that the plan has not waited healthy for;
 * - an instance the platform stopped is never started by healing;
 * - nothing is removed while the component that holds it could not be observed;
 * - applying a plan and planning again yields no actions (convergence).
 */
import jsonpatch from 'fast-json-patch';
import type {
  Action,
  DesiredInstance,
  DesiredModel,
  ObservedApp,
  ObservedRoute,
  ObservedRun,
  Plan,
  PlanContext,
  PlannedAction,
  RunRef,
  Strategy,
} from './model.ts';

/** The action-side reference to an observed run. */
const ref = (r: ObservedRun): RunRef => ({ instance: r.instance, spec: r.spec, port: r.port, runtime: r.runtime });
const isActive = (r: ObservedRun): boolean => r.state === 'running' || r.state === 'starting';
const sortedPorts = (ports: Iterable<number>): number[] => [...new Set(ports)].sort((a, b) => a - b);
const samePorts = (a: number[], b: number[]): boolean => {
  const x = sortedPorts(a);
  const y = sortedPorts(b);
  return x.length === y.length && x.every((p, i) => p === y[i]);
};

/** Builds the ordered step list, numbering steps and tracking the route as the plan changes it. */
class Steps {
  readonly list: PlannedAction[] = [];
  routePorts: number[];
  routeDomain: string | null;
  /** The observed route was edited by hand beyond its domain and ports: the next route step must write it. */
  private routeDrift: boolean;

  constructor(route: ObservedRoute | null) {
    this.routePorts = route ? [...route.ports] : [];
    this.routeDomain = route ? route.domain : null;
    this.routeDrift = hasDrift(route);
  }

  add(name: string, action: Action, undo: Action[] = [], commit = false): void {
    this.list.push({ id: `s${this.list.length + 1}`, name, action, undo, ...(commit ? { commit: true } : {}) });
  }

  /** Route the app to exactly `ports` (sorted); no step when that is already so. */
  route(domain: string, ports: number[], commit = false): void {
    const next = sortedPorts(ports);
    if (this.routeDomain === domain && samePorts(this.routePorts, next) && !this.routeDrift) return;
    const undo: Action[] = this.routeDomain === null ? [{ type: 'removeRoute' }] : [{ type: 'setRoute', domain: this.routeDomain, ports: sortedPorts(this.routePorts) }];
    const where = next.length > 0 ? next.map((p) => `:${p}`).join(', ') : 'no upstream';
    this.add(`route ${domain} → ${where}`, { type: 'setRoute', domain, ports: next }, undo, commit);
    this.routePorts = next;
    this.routeDomain = domain;
    this.routeDrift = false;
  }
}

const hasDrift = (route: ObservedRoute | null): boolean => (route?.drift?.length ?? 0) > 0;

/**
 * Picks surge ports: the lowest free ports of the range, never one in use or already handed out.
 * `used` (every port of every app on the host) is only asked, never copied: a pass plans every app,
 * so a copy per app would make a pass quadratic in the number of apps.
 */
class PortPicker {
  private readonly claimed: Set<number>;
  constructor(
    private readonly used: ReadonlySet<number>,
    reserved: number[],
    private readonly range: { from: number; to: number },
  ) {
    this.claimed = new Set(reserved);
  }
  take(): number | null {
    for (let p = this.range.from; p <= this.range.to; p++) {
      if (!this.used.has(p) && !this.claimed.has(p)) {
        this.claimed.add(p);
        return p;
      }
    }
    return null;
  }
  claim(p: number): void {
    this.claimed.add(p);
  }
}

function emptyPlan(observed: ObservedApp, diff: Plan['diff']): Plan {
  return { key: observed.key, kind: 'noop', strategy: null, fallback: null, dropsTraffic: false, actions: [], diff, notes: [] };
}

/** The comparable views of desired and observed state that the JSON-Patch diff is taken between. */
export function diffViews(desired: DesiredModel | null, observed: ObservedApp): { desired: unknown; observed: unknown } {
  const runView = (r: ObservedRun): Record<string, unknown> => ({ port: r.port, version: r.version, spec: r.spec, state: r.state, generation: r.generation });
  const obsInstances: Record<string, Record<string, Record<string, unknown>>> = {};
  for (const r of observed.runs) {
    (obsInstances[r.instance] ??= {})[`${r.spec}@${r.port}`] = runView(r);
  }
  const obs = {
    instances: obsInstances,
    route: observed.route
      ? {
          domain: observed.route.domain,
          upstreams: Object.fromEntries(sortedPorts(observed.route.ports).map((p) => [`127.0.0.1:${p}`, true])),
          ...(hasDrift(observed.route) ? { drift: [...(observed.route.drift ?? [])] } : {}),
        }
      : null,
  };
  if (!desired) return { desired: { instances: {}, route: null }, observed: obs };
  const want: Record<string, Record<string, Record<string, unknown>>> = {};
  const serving = servingInstances(desired, observed);
  const ports: number[] = [];
  for (const i of desired.instances) {
    if (!serving.has(i.id)) {
      // A standby slot or a stopped instance: whatever runs it has should be stopped.
      const runs: Record<string, Record<string, unknown>> = {};
      for (const r of observed.runs.filter((x) => x.instance === i.id)) runs[`${r.spec}@${r.port}`] = { ...runView(r), state: 'stopped' };
      want[i.id] = runs;
      continue;
    }
    const cur = observed.runs.find((r) => r.instance === i.id && r.spec === desired.spec);
    const port = cur?.port ?? i.port;
    ports.push(port);
    want[i.id] = { [`${desired.spec}@${port}`]: { port, version: desired.version, spec: desired.spec, state: 'running', generation: i.generation } };
  }
  return {
    desired: { instances: want, route: { domain: desired.domain, upstreams: Object.fromEntries(sortedPorts(ports).map((p) => [`127.0.0.1:${p}`, true])) } },
    observed: obs,
  };
}

/**
 * The instances that should serve traffic. Every running instance, except in the blue/green instance
 * model, where exactly one slot serves: the live one (routed and running), else the first eligible slot.
 */
export function servingInstances(desired: DesiredModel, observed: ObservedApp): Set<string> {
  const eligible = desired.instances.filter((i) => i.state === 'running');
  if (!(desired.strategy === 'blue_green' && desired.model === 'instance')) return new Set(eligible.map((i) => i.id));
  const live = liveSlot(desired, observed, eligible);
  if (live) return new Set([live.id]);
  const withCurrent = eligible.find((i) => observed.runs.some((r) => r.instance === i.id && r.spec === desired.spec));
  const first = withCurrent ?? [...eligible].sort(bySlot)[0];
  return new Set(first ? [first.id] : []);
}

const bySlot = (a: DesiredInstance, b: DesiredInstance): number => (a.slot ?? a.id).localeCompare(b.slot ?? b.id) || a.id.localeCompare(b.id);

/** The slot currently serving: an eligible instance with an active run in the route (else any active run). */
function liveSlot(desired: DesiredModel, observed: ObservedApp, eligible: DesiredInstance[]): DesiredInstance | undefined {
  const routed = new Set(observed.route?.ports ?? []);
  const activeIn = (i: DesiredInstance, pred: (r: ObservedRun) => boolean): boolean =>
    observed.runs.some((r) => r.instance === i.id && isActive(r) && pred(r));
  const sorted = [...eligible].sort(bySlot);
  return (
    sorted.find((i) => activeIn(i, (r) => routed.has(r.port) && r.spec === desired.spec)) ??
    sorted.find((i) => activeIn(i, (r) => routed.has(r.port))) ??
    sorted.find((i) => activeIn(i, (r) => r.spec === desired.spec)) ??
    sorted.find((i) => activeIn(i, () => true))
  );
}

/** Plan one app. `desired === null` means the app was deleted. `now` is epoch milliseconds. */
export function plan(desired: DesiredModel | null, observed: ObservedApp, ctx: PlanContext, now: number): Plan {
  void now; // part of the contract so time-dependent rules can be added without touching callers
  const views = diffViews(desired, observed);
  const diff = jsonpatch.compare(views.observed as object, views.desired as object);
  const base = emptyPlan(observed, diff);

  const blind = blindSpots(desired, observed, ctx);
  if (blind.length > 0) {
    return { ...base, notes: [`cannot plan while ${blind.join(', ')} ${blind.length > 1 ? 'are' : 'is'} unavailable`] };
  }
  if (!desired) return planDelete(observed, base);

  const serving = servingInstances(desired, observed);
  const needsNew = [...serving].filter((id) => !observed.runs.some((r) => r.instance === id && r.spec === desired.spec));
  const hasOldServing = observed.runs.some((r) => isActive(r) && r.spec !== desired.spec);
  if (ctx.deploy && needsNew.length > 0 && hasOldServing) return planDeploy(desired, observed, ctx, base);
  return planHeal(desired, observed, ctx, base, serving);
}

function blindSpots(desired: DesiredModel | null, observed: ObservedApp, ctx: PlanContext): string[] {
  const out: string[] = [];
  if (!ctx.availability.caddy) out.push('caddy');
  const runtimes = new Set(observed.runs.map((r) => r.runtime));
  if (desired) runtimes.add(desired.runtime);
  if (runtimes.has('binary') && !ctx.availability.systemd) out.push('systemd');
  if (runtimes.has('docker') && !ctx.availability.docker) out.push('docker');
  if (!desired && (!ctx.availability.systemd || !ctx.availability.docker) && observed.runs.length === 0) {
    // A deleted app whose runs we cannot see at all: removing "nothing" would leave orphans behind.
    for (const c of ['systemd', 'docker'] as const) if (!ctx.availability[c] && !out.includes(c)) out.push(c);
  }
  return out;
}

function planDelete(observed: ObservedApp, base: Plan): Plan {
  const s = new Steps(observed.route);
  if (observed.route) s.add(`remove route ${observed.route.domain}`, { type: 'removeRoute' });
  const routed = observed.route?.ports ?? [];
  const drainPorts = observed.runs.filter((r) => isActive(r) && routed.includes(r.port)).map((r) => r.port);
  if (drainPorts.length > 0) s.add(`drain ${drainPorts.map((p) => `:${p}`).join(', ')}`, { type: 'drain', ports: sortedPorts(drainPorts) });
  for (const r of observed.runs) s.add(`remove ${r.instance} ${r.version} (:${r.port})`, { type: 'removeRun', ...ref(r) });
  if (observed.route || observed.runs.length > 0) s.add('remove release files', { type: 'removeFiles' });
  return { ...base, kind: s.list.length > 0 ? 'delete' : 'noop', actions: s.list };
}

function releaseStep(desired: DesiredModel): { name: string; action: Action } {
  return desired.runtime === 'binary'
    ? { name: `fetch release ${desired.version}`, action: { type: 'fetchRelease', version: desired.version } }
    : { name: `pull image ${desired.image?.name ?? ''}:${desired.image?.tag ?? ''}`, action: { type: 'pullImage', image: desired.image?.name ?? '', tag: desired.image?.tag ?? '' } };
}

function runLabel(instance: string, version: string, port: number): string {
  return `${instance} ${version} on :${port}`;
}

/** A rollout of a new spec while an older one serves, by the requested strategy (or its fallback). */
function planDeploy(desired: DesiredModel, observed: ObservedApp, ctx: PlanContext, base: Plan): Plan {
  const s = new Steps(observed.route);
  const notes: string[] = [];
  const active = observed.runs.filter(isActive);
  const picker = new PortPicker(ctx.usedPorts, desired.instances.map((i) => i.port), ctx.surgePorts);
  for (const r of observed.runs) picker.claim(r.port);
  let strategy: Strategy = desired.strategy;
  let fallback: Plan['fallback'] = null;
  const rel = releaseStep(desired);
  s.add(rel.name, rel.action);

  if (strategy === 'blue_green' && desired.model === 'instance') {
    const eligible = desired.instances.filter((i) => i.state === 'running');
    const live = liveSlot(desired, observed, eligible);
    const idle = [...eligible].sort(bySlot).find((i) => i.id !== live?.id);
    const idleBlocked = idle && active.some((r) => r.port === idle.port && s.routePorts.includes(r.port));
    if (idle && !idleBlocked) {
      const isTarget = (r: ObservedRun): boolean => r.instance === idle.id && r.spec === desired.spec;
      // The idle slot's port may hold a stray run of an earlier spec: stop it first (it serves nothing).
      const preStop = active.filter((r) => r.port === idle.port && !isTarget(r));
      for (const r of preStop) {
        s.add(`stop ${runLabel(r.instance, r.version, r.port)}`, { type: 'stopRun', ...ref(r) }, [{ type: 'startRun', ...ref(r) }]);
      }
      s.add(`start ${runLabel(idle.id, desired.version, idle.port)}`, { type: 'createRun', instance: idle.id, spec: desired.spec, port: idle.port, slot: idle.slot }, [
        { type: 'removeRun', instance: idle.id, spec: desired.spec, port: idle.port, runtime: desired.runtime },
      ]);
      s.add(`wait until ${idle.id} is healthy`, { type: 'waitHealthy', instance: idle.id, spec: desired.spec, port: idle.port, runtime: desired.runtime });
      s.route(desired.domain, [idle.port], true);
      // Everything else that runs retires: the old live slot (kept, stopped) and unknown instances (removed).
      const retire = active.filter((r) => !preStop.includes(r) && !isTarget(r));
      finishOld(s, retire);
      const listed = new Set(desired.instances.map((i) => i.id));
      for (const r of [...preStop, ...retire].filter((x) => !listed.has(x.instance) || x.instance === idle.id)) {
        s.add(`remove ${runLabel(r.instance, r.version, r.port)}`, { type: 'removeRun', ...ref(r) });
      }
      cleanupStale(s, observed, desired, new Set([idle.id]), new Set([...preStop, ...retire].map((r) => r.name)));
      return { ...base, kind: 'deploy', strategy, fallback, dropsTraffic: false, actions: s.list, notes };
    }
    fallback = { from: 'blue_green', to: 'recreate', reason: idle ? `the idle slot's port ${idle.port} is serving traffic` : 'no idle slot is eligible (the other slot is stopped)' };
    strategy = 'recreate';
  }

  const serving = [...servingInstances(desired, observed)];
  const targets = desired.instances.filter((i) => serving.includes(i.id));
  const currentRun = (id: string): ObservedRun | undefined => active.find((r) => r.instance === id && r.spec === desired.spec);
  const fresh = targets.filter((i) => !currentRun(i.id));
  const keptPorts = targets.flatMap((i) => currentRun(i.id)?.port ?? []);
  // Old runs leave for good when their instance now runs the new revision or is no longer listed;
  // a stopped instance's run is only stopped.
  const listed = new Set(desired.instances.map((i) => i.id));
  const leaves = (r: ObservedRun): boolean => !listed.has(r.instance) || serving.includes(r.instance);

  if (strategy === 'rolling' || strategy === 'blue_green') {
    // Current runs that serve no traffic yet are checked before the route includes them.
    // They are healed on the way: a removed unit file is rendered again, a bumped generation restarts.
    for (const i of targets) {
      const r = currentRun(i.id);
      if (!r) continue;
      let changed = true;
      if (r.fileMissing) s.add(`re-create ${runLabel(i.id, desired.version, r.port)}`, { type: 'createRun', instance: i.id, spec: desired.spec, port: r.port, slot: i.slot });
      else if (r.generation < i.generation) s.add(`restart ${runLabel(i.id, r.version, r.port)}`, { type: 'restartRun', ...ref(r), generation: i.generation });
      else changed = false;
      if (changed || !s.routePorts.includes(r.port)) s.add(`wait until ${i.id} on :${r.port} is healthy`, { type: 'waitHealthy', ...ref(r) });
    }
    // Each successor needs a free port beside its predecessor: its own port if free, else a surge port.
    const plannedPorts = new Map<string, number>();
    for (const i of fresh) {
      const occupied = active.some((r) => r.port === i.port);
      const port = occupied ? picker.take() : i.port;
      if (port === null) {
        fallback = { from: strategy, to: 'recreate', reason: `no free port in the surge range ${ctx.surgePorts.from}-${ctx.surgePorts.to}` };
        strategy = 'recreate';
        break;
      }
      picker.claim(port);
      plannedPorts.set(i.id, port);
    }
    if (strategy === 'rolling') {
      const retired: ObservedRun[] = [];
      for (const i of fresh) {
        const port = plannedPorts.get(i.id) as number;
        const old = active.filter((r) => r.instance === i.id);
        s.add(`start ${runLabel(i.id, desired.version, port)}`, { type: 'createRun', instance: i.id, spec: desired.spec, port, slot: i.slot }, [{ type: 'removeRun', instance: i.id, spec: desired.spec, port, runtime: desired.runtime }]);
        s.add(`wait until ${i.id} on :${port} is healthy`, { type: 'waitHealthy', instance: i.id, spec: desired.spec, port, runtime: desired.runtime });
        const oldPorts = old.map((r) => r.port);
        s.route(desired.domain, [...s.routePorts.filter((p) => !oldPorts.includes(p)), port]);
        finishOld(s, old);
        retired.push(...old);
      }
      const newPorts = [...plannedPorts.values()];
      const rest = active.filter((r) => !retired.includes(r) && !keptPorts.includes(r.port));
      s.route(desired.domain, [...keptPorts, ...newPorts]);
      finishOld(s, rest);
      retired.push(...rest);
      markLastCommit(s);
      cleanupStale(s, observed, desired, new Set(targets.map((t) => t.id)), new Set(retired.map((r) => r.name)));
      for (const r of retired.filter(leaves)) s.add(`remove ${runLabel(r.instance, r.version, r.port)}`, { type: 'removeRun', ...ref(r) });
      return { ...base, kind: 'deploy', strategy, fallback, dropsTraffic: false, actions: s.list, notes };
    }
    if (strategy === 'blue_green') {
      const newPorts: number[] = [];
      for (const i of fresh) {
        const port = plannedPorts.get(i.id) as number;
        newPorts.push(port);
        s.add(`start ${runLabel(i.id, desired.version, port)}`, { type: 'createRun', instance: i.id, spec: desired.spec, port, slot: i.slot }, [{ type: 'removeRun', instance: i.id, spec: desired.spec, port, runtime: desired.runtime }]);
      }
      for (const i of fresh) {
        const port = plannedPorts.get(i.id) as number;
        s.add(`wait until ${i.id} on :${port} is healthy`, { type: 'waitHealthy', instance: i.id, spec: desired.spec, port, runtime: desired.runtime });
      }
      s.route(desired.domain, [...keptPorts, ...newPorts], true);
      const old = active.filter((r) => !keptPorts.includes(r.port));
      finishOld(s, old);
      cleanupStale(s, observed, desired, new Set(targets.map((t) => t.id)), new Set(old.map((r) => r.name)));
      for (const r of old.filter(leaves)) s.add(`remove ${runLabel(r.instance, r.version, r.port)}`, { type: 'removeRun', ...ref(r) });
      return { ...base, kind: 'deploy', strategy, fallback, dropsTraffic: false, actions: s.list, notes };
    }
  }

  // recreate: the only strategy that drops traffic; it says so.
  const old = active.filter((r) => r.spec !== desired.spec || !targets.some((t) => t.id === r.instance && t.port === r.port));
  const routedNow = new Set(observed.route?.ports ?? []);
  for (const r of old) {
    // The step name is what the deployment status shows: it says where requests start to fail.
    const drop = routedNow.has(r.port) ? ' (traffic drops until the new version serves)' : '';
    s.add(`stop ${runLabel(r.instance, r.version, r.port)}${drop}`, { type: 'stopRun', ...ref(r) }, [
      { type: 'startRun', ...ref(r) },
      { type: 'waitHealthy', ...ref(r) },
    ]);
  }
  for (const i of targets) {
    s.add(`start ${runLabel(i.id, desired.version, i.port)}`, { type: 'createRun', instance: i.id, spec: desired.spec, port: i.port, slot: i.slot }, [{ type: 'removeRun', instance: i.id, spec: desired.spec, port: i.port, runtime: desired.runtime }]);
  }
  for (const i of targets) s.add(`wait until ${i.id} is healthy`, { type: 'waitHealthy', instance: i.id, spec: desired.spec, port: i.port, runtime: desired.runtime });
  s.route(desired.domain, targets.map((t) => t.port), true);
  if (s.list.length > 0 && !s.list.some((x) => x.commit)) markLastCommit(s);
  cleanupStale(s, observed, desired, new Set(targets.map((t) => t.id)), new Set(old.map((r) => r.name)));
  // A run of the new spec that only moved port was re-rendered in place above: it stays.
  const reRendered = (r: ObservedRun): boolean => r.spec === desired.spec && targets.some((t) => t.id === r.instance);
  for (const r of old.filter((x) => !reRendered(x) && (!listed.has(x.instance) || targets.some((t) => t.id === x.instance)))) {
    s.add(`remove ${runLabel(r.instance, r.version, r.port)}`, { type: 'removeRun', ...ref(r) });
  }
  notes.push('recreate stops the old version before the new one serves: requests in between fail');
  return { ...base, kind: 'deploy', strategy, fallback, dropsTraffic: old.length > 0, actions: s.list, notes };
}

/** Drain and stop the runs that served before (after the route left them); undo starts them again. */
function finishOld(s: Steps, old: ObservedRun[]): void {
  if (old.length === 0) return;
  s.add(`drain ${old.map((r) => `:${r.port}`).join(', ')}`, { type: 'drain', ports: sortedPorts(old.map((r) => r.port)) });
  for (const r of old) {
    s.add(`stop ${runLabel(r.instance, r.version, r.port)}`, { type: 'stopRun', ...ref(r) }, [
      { type: 'startRun', ...ref(r) },
      { type: 'waitHealthy', ...ref(r) },
    ]);
  }
}

function markLastCommit(s: Steps): void {
  const last = s.list[s.list.length - 1];
  if (last) last.commit = true;
}

/**
 * Removes leftovers no longer needed: stopped runs of older specs of instances that now run the
 * desired spec, and runs of instances the document no longer lists. Standby blue/green slots keep
 * their stopped run (the previous version, for a quick switch back by the next deploy).
 */
function cleanupStale(s: Steps, observed: ObservedApp, desired: DesiredModel, servingNow: Set<string>, handled: Set<string>): void {
  const listed = new Set(desired.instances.map((i) => i.id));
  for (const r of observed.runs) {
    if (handled.has(r.name) || isActive(r)) continue;
    const orphan = !listed.has(r.instance);
    const superseded = servingNow.has(r.instance) && r.spec !== desired.spec;
    if (orphan || superseded) s.add(`remove ${runLabel(r.instance, r.version, r.port)}`, { type: 'removeRun', ...ref(r) });
  }
}

/** Converge without a rollout: restart what died, re-render what vanished, fix the route, stop what should not run. */
function planHeal(desired: DesiredModel, observed: ObservedApp, ctx: PlanContext, base: Plan, serving: Set<string>): Plan {
  const s = new Steps(observed.route);
  const notes: string[] = [];
  const picker = new PortPicker(ctx.usedPorts, desired.instances.map((i) => i.port), ctx.surgePorts);
  for (const r of observed.runs) picker.claim(r.port);
  const servePorts: number[] = [];
  const keep = new Set<string>();
  let needRelease = false;
  const starts: PlannedAction[] = [];
  const waits: Action[] = [];
  // Ports held by a running process now or by a run this plan starts.
  const busy = new Set(observed.runs.filter(isActive).map((r) => r.port));

  for (const i of desired.instances) {
    if (!serving.has(i.id)) continue;
    const runs = observed.runs.filter((r) => r.instance === i.id);
    const cur = runs.filter((r) => r.spec === desired.spec).sort((a, b) => Number(isActive(b)) - Number(isActive(a)) || a.port - b.port)[0];
    if (!cur) {
      if (runs.some(isActive)) {
        notes.push(`${i.id} runs another revision; the desired one (${desired.version}) waits for a deployment`);
        for (const r of runs.filter(isActive)) {
          keep.add(r.name);
          servePorts.push(r.port);
          if (!(observed.route?.ports ?? []).includes(r.port)) waits.push({ type: 'waitHealthy', ...ref(r) });
        }
        continue;
      }
      // Healing restores what was there: a stopped run of an earlier revision (e.g. after a rollback)
      // is started again rather than rolling the new revision out without a deployment.
      const earlier = runs
        .filter((r) => !r.fileMissing && !busy.has(r.port))
        .sort((a, b) => Number((observed.route?.ports ?? []).includes(b.port)) - Number((observed.route?.ports ?? []).includes(a.port)) || a.port - b.port)[0];
      if (earlier && !ctx.deploy) {
        notes.push(`${i.id} runs another revision; the desired one (${desired.version}) waits for a deployment`);
        keep.add(earlier.name);
        busy.add(earlier.port);
        servePorts.push(earlier.port);
        starts.push(mk(`start ${runLabel(i.id, earlier.version, earlier.port)}`, { type: 'startRun', ...ref(earlier) }, desired.runtime));
        waits.push({ type: 'waitHealthy', ...ref(earlier) });
        continue;
      }
      const port = busy.has(i.port) ? picker.take() : i.port;
      if (port === null) {
        notes.push(`no free port for ${i.id}`);
        continue;
      }
      busy.add(port);
      needRelease = true;
      starts.push(mk(`start ${runLabel(i.id, desired.version, port)}`, { type: 'createRun', instance: i.id, spec: desired.spec, port, slot: i.slot }, desired.runtime));
      waits.push({ type: 'waitHealthy', instance: i.id, spec: desired.spec, port, runtime: desired.runtime });
      servePorts.push(port);
      continue;
    }
    if (!isActive(cur) && busy.has(cur.port)) {
      // Its port went to another run meanwhile: render it again on a free port.
      const port = busy.has(i.port) ? picker.take() : i.port;
      if (port === null) {
        notes.push(`no free port for ${i.id}`);
        continue;
      }
      keep.add(cur.name);
      busy.add(port);
      servePorts.push(port);
      needRelease = true;
      starts.push({ ...mk(`re-create ${runLabel(i.id, desired.version, port)}`, { type: 'createRun', instance: i.id, spec: desired.spec, port, slot: i.slot }, desired.runtime), undo: [] });
      waits.push({ type: 'waitHealthy', instance: i.id, spec: desired.spec, port, runtime: desired.runtime });
      continue;
    }
    keep.add(cur.name);
    servePorts.push(cur.port);
    if (cur.fileMissing) {
      needRelease = true;
      // Re-rendering a run that exists: there is nothing earlier to restore, so no undo.
      starts.push({ ...mk(`re-create ${runLabel(i.id, desired.version, cur.port)}`, { type: 'createRun', instance: i.id, spec: desired.spec, port: cur.port, slot: i.slot }, desired.runtime), undo: [] });
      waits.push({ type: 'waitHealthy', instance: i.id, spec: desired.spec, port: cur.port, runtime: desired.runtime });
    } else if (!isActive(cur)) {
      busy.add(cur.port);
      const a: Action =
        cur.generation < i.generation
          ? { type: 'restartRun', ...ref(cur), generation: i.generation }
          : { type: 'startRun', ...ref(cur) };
      starts.push(mk(`start ${runLabel(i.id, cur.version, cur.port)}`, a, desired.runtime));
      waits.push({ type: 'waitHealthy', ...ref(cur) });
    } else if (cur.generation < i.generation) {
      starts.push(mk(`restart ${runLabel(i.id, cur.version, cur.port)}`, { type: 'restartRun', ...ref(cur), generation: i.generation }, desired.runtime));
      waits.push({ type: 'waitHealthy', ...ref(cur) });
    } else if (!(observed.route?.ports ?? []).includes(cur.port) || observed.route?.domain !== desired.domain) {
      waits.push({ type: 'waitHealthy', ...ref(cur) });
    }
  }

  if (needRelease) {
    const rel = releaseStep(desired);
    s.add(rel.name, rel.action);
  }
  for (const a of starts) s.add(a.name, a.action, a.undo);
  const routeChanges = observed.route === null ? servePorts.length > 0 : observed.route.domain !== desired.domain || !samePorts(observed.route.ports, servePorts) || hasDrift(observed.route);
  if (observed.route && hasDrift(observed.route)) notes.push(`route edited by hand (${(observed.route.drift ?? []).join(', ')}): written again`);
  if (routeChanges) {
    for (const w of waits) if (w.type === 'waitHealthy') s.add(`wait until ${w.instance} on :${w.port} is healthy`, w);
    s.route(desired.domain, servePorts);
  } else {
    for (const w of waits) if (w.type === 'waitHealthy') s.add(`wait until ${w.instance} on :${w.port} is healthy`, w);
  }

  // Everything else that runs should not: standby slots, stopped instances, old revisions, unknown instances.
  const stray = observed.runs.filter((r) => isActive(r) && !keep.has(r.name));
  const strayRouted = stray.filter((r) => (observed.route?.ports ?? []).includes(r.port));
  if (strayRouted.length > 0) s.add(`drain ${strayRouted.map((r) => `:${r.port}`).join(', ')}`, { type: 'drain', ports: sortedPorts(strayRouted.map((r) => r.port)) });
  const listed = new Set(desired.instances.map((i) => i.id));
  const keptInstances = new Set(observed.runs.filter((r) => keep.has(r.name)).map((r) => r.instance));
  for (const r of stray) {
    // Unknown instances and old revisions left beside a current run (e.g. after a crash) go; standby
    // slots and instances the platform stopped are only stopped.
    const remove = !listed.has(r.instance) || (keptInstances.has(r.instance) && r.spec !== desired.spec);
    const ref_ = ref(r);
    s.add(`${remove ? 'remove' : 'stop'} ${runLabel(r.instance, r.version, r.port)}`, remove ? { type: 'removeRun', ...ref_ } : { type: 'stopRun', ...ref_ });
  }
  const created = new Set(starts.flatMap((a) => (a.action.type === 'createRun' ? [a.action.instance] : [])));
  const current = new Set([...serving].filter((id) => created.has(id) || observed.runs.some((r) => r.instance === id && r.spec === desired.spec)));
  cleanupStale(s, observed, desired, current, new Set(stray.map((r) => r.name)));
  // A first deployment is a deployment even though nothing old is replaced: its route switch commits it.
  const kind = s.list.length === 0 ? 'noop' : ctx.deploy ? 'deploy' : 'heal';
  if (kind === 'deploy') {
    const routeStep = s.list.find((x) => x.action.type === 'setRoute');
    if (routeStep) routeStep.commit = true;
  }
  return { ...base, kind, strategy: kind === 'deploy' ? desired.strategy : null, actions: s.list, notes };
}

/** A heal step; creating a run is undone by removing it (when a first deployment rolls back). */
function mk(name: string, action: Action, runtime: DesiredModel['runtime']): PlannedAction {
  const undo: Action[] = action.type === 'createRun' ? [{ type: 'removeRun', instance: action.instance, spec: action.spec, port: action.port, runtime }] : [];
  return { id: '', name, action, undo };
}
