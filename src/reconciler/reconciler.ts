/**
 * The reconciler: for one app key, read the document in force and the latest deployment record, take
 * the host snapshot of the pass, plan, and either hand the plan to a deployment machine (a pending
 * deployment, or a document edited by hand that introduces a new revision) or heal directly (recorded
 * as a heal event). Everything that enqueues work calls `trigger(key)`; nothing else acts on the host.
 */
import type { FSWatcher } from 'chokidar';
import type { OperatorConfig } from '../config.ts';
import { CrateError, describeError } from '../core/errors.ts';
import { appKeyString, parseAppKey, type AppKey } from '../core/identity.ts';
import { readFile, rm } from 'node:fs/promises';
import path from 'node:path';
import { ensureDir, writeFileAtomic } from '../desired/atomic.ts';
import { docKey, parseDesiredYaml, serializeDesired, type DesiredApp } from '../desired/document.ts';
import { KeyedMutex } from '../desired/lock.ts';
import { appLockKey, type DesiredStore } from '../desired/store.ts';
import type { CallbackSender } from '../drivers/callbacks.ts';
import { DeploymentRunner, type StepEvent } from '../machines/runner.ts';
import { ACTION_TYPES, type EffectInput } from '../machines/deployment-machine.ts';
import type { StepDeadlines } from '../machines/progress.ts';
import type { Records } from '../records/records.ts';
import { TERMINAL_STATUSES } from '../records/status.ts';
import { specHash, toDesiredModel } from './desired-model.ts';
import { asRouteWriter, bindEffects, type EffectDrivers } from './effects.ts';
import { ReconcileLoop, type Outcome } from './loop.ts';
import { planApp, type AppFacts, type AppPlan } from './app-plan.ts';
import type { Action, Plan, PlanContext } from './model.ts';
import { observeHost, type HostObservers, type HostSnapshot } from './observe.ts';
import { appFacts, planHost } from './plan-host.ts';
import { watchDesired } from './watch.ts';

/** Where the applied revision (the document of the last succeeded deployment) of an app is kept. */
export function appliedPath(stateDir: string, key: AppKey): string {
  return path.join(stateDir, 'desired-applied', key.team, String(key.env), `${key.app}.yaml`);
}

export interface Logger {
  info(o: object, m: string): void;
  warn(o: object, m: string): void;
  error(o: object, m: string): void;
}

export interface ReconcilerDeps {
  config: OperatorConfig;
  store: DesiredStore;
  records: Records;
  observers: HostObservers;
  drivers: EffectDrivers;
  callbacks: Pick<CallbackSender, 'send'>;
  log: Logger;
  now?: () => number;
  /** Watch state/desired for hand edits (off in some tests). Default true. */
  watch?: boolean;
  /** Per-pass hook (metrics): duration, host calls are counted by the drivers themselves. */
  onPass?: (key: string, outcome: Outcome, ms: number) => void;
  onHeal?: (key: string, plan: Plan, outcome: HealEvent['outcome']) => void;
  /** Per finished deployment step (metrics). */
  onStep?: (e: StepEvent) => void;
}

/** A heal the reconciler carried out, for `GET /v1/apps` and logs. */
export interface HealEvent {
  at: string;
  steps: string[];
  outcome: 'healed' | 'failed';
  error?: { code: string; message: string };
}

/** How long each kind of step may take. */
export function stepDeadlines(cfg: OperatorConfig): StepDeadlines {
  const stop = (cfg.stopTimeoutSec + 30) * 1000;
  return {
    fetchRelease: cfg.deadlines.fetchMs ?? 5 * 60_000,
    pullImage: 10 * 60_000,
    createRun: 10 * 60_000,
    startRun: 60_000,
    restartRun: stop + 60_000,
    waitHealthy: cfg.deadlines.healthyMs,
    setRoute: 30_000,
    drain: cfg.deadlines.drainMs,
    stopRun: stop,
    removeRun: stop,
    removeRoute: 30_000,
    removeFiles: 60_000,
  };
}

/** How far back the start-up looks for terminal deployments whose final callback was never queued. */
const FINAL_CALLBACK_RECOVERY_MS = 24 * 60 * 60_000;

export class Reconciler {
  readonly loop: ReconcileLoop<HostSnapshot>;
  readonly runner: DeploymentRunner;
  private last: HostSnapshot | null = null;
  private readonly heals = new Map<string, HealEvent>();
  private readonly now: () => number;
  private readonly deadlines: StepDeadlines;
  private watcher: FSWatcher | null = null;
  private unsubscribe: (() => void) | null = null;
  /** One route writer per app: deployments, heals and domain moves (see effects.ts asRouteWriter). */
  private readonly routeLock = new KeyedMutex();
  private readonly drivers: EffectDrivers;
  /** Apps whose document was deleted (while watched, or while the operator was down): they are removed. */
  private readonly pruned = new Set<string>();
  /** Abort handles of the heals in flight (stop() aborts them). */
  private readonly healing = new Set<AbortController>();

  constructor(private readonly deps: ReconcilerDeps) {
    this.now = deps.now ?? Date.now;
    // Documents deleted while the operator was down are pruned like those deleted while it watched.
    for (const k of deps.store.removedWhileClosed()) this.pruned.add(appKeyString(k));
    this.deadlines = stepDeadlines(deps.config);
    this.drivers = { ...deps.drivers, routeLock: this.routeLock };
    this.runner = new DeploymentRunner({
      records: {
        status: (id) => deps.records.get(id),
        update: (id, patch) => void deps.records.update(id, patch),
        saveSnapshot: (id, s) => deps.records.saveSnapshot(id, s),
        loadSnapshot: (id) => deps.records.loadSnapshot(id),
        deleteSnapshot: (id) => deps.records.deleteSnapshot(id),
        unfinished: () => deps.records.active().map((r) => ({ id: r.status.deployment_id, key: r.key })),
      },
      effectsFor: (key) => bindEffects(this.drivers, key, () => deps.store.get(key)),
      notify: (id, eventId) => this.notify(id, eventId),
      onFinished: (key, id, outcome) => {
        void this.afterRun(key, id, outcome)
          .catch((err: unknown) => deps.log.warn({ app: appKeyString(key), deployment: id, err: describeError(err) }, 'cannot record the applied revision'))
          .finally(() => this.trigger(key));
      },
      now: this.now,
      deadlines: this.deadlines,
      deploymentMs: deps.config.deadlines.deploymentMs,
      log: deps.log,
      ...(deps.onStep ? { onStep: deps.onStep } : {}),
    });
    this.loop = new ReconcileLoop<HostSnapshot>({
      observe: () => this.observe(),
      keys: () => this.keys(),
      reconcile: (key, snap) => this.reconcile(key, snap),
      concurrency: deps.config.concurrency,
      resyncMs: deps.config.resyncMs,
      onResyncError: (err) => deps.log.warn({ err: describeError(err) }, 'resync could not list the apps'),
      onSettled: (key, outcome, ms) => {
        if (outcome.kind === 'retry' || outcome.kind === 'terminal') deps.log.warn({ app: key, outcome: outcome.kind, error: outcome.error }, 'reconcile did not converge');
        deps.onPass?.(key, outcome, ms);
      },
    });
  }

  /**
   * Resume interrupted deployments, send terminal callbacks a crash may have lost, start the loop
   * (every app once) and the file watcher.
   */
  async start(): Promise<void> {
    // A deployment superseded by a newer request is terminal at once: its terminal callback goes now,
    // whether or not a machine ran it (a running one stops at its next safe point and sends nothing more).
    this.unsubscribe = this.deps.records.onChange((c) => {
      if (c.status.status === 'superseded') this.notify(c.status.deployment_id, `${c.status.deployment_id}:final`);
    });
    // The terminal status and its callback are two writes: a crash between them must not lose the
    // callback. Re-sending a final event that was stored is a no-op (same event id).
    for (const r of this.deps.records.finishedSince(new Date(this.now() - FINAL_CALLBACK_RECOVERY_MS).toISOString())) {
      this.notify(r.status.deployment_id, `${r.status.deployment_id}:final`);
    }
    void this.runner.resumeAll();
    if (this.deps.watch !== false) {
      this.watcher = await watchDesired({
        root: this.deps.store.root,
        reloadFile: (f) => this.deps.store.reloadFile(f),
        keyForPath: (f) => this.deps.store.keyForPath(f),
        trigger: (key, outcome) => {
          if (outcome === 'removed') this.pruned.add(appKeyString(key));
          this.trigger(key);
        },
        log: this.deps.log,
      });
    }
    await this.loop.start();
  }

  /**
   * Stop the watcher and the loop; running deployments stop where they are and resume on the next
   * start. Heals in flight are aborted at their next step boundary. Resolves once no reconcile runs,
   * so the caller may close the records and drivers afterwards.
   */
  async stop(): Promise<void> {
    this.unsubscribe?.();
    this.unsubscribe = null;
    await this.watcher?.close();
    this.watcher = null;
    for (const ac of this.healing) ac.abort();
    await this.loop.stop();
    this.runner.stopAll();
  }

  /**
   * Run `fn` as the app's only route writer: no deployment or heal writes the app's route meanwhile.
   * The domain update moves the route and writes the document inside one such call.
   */
  asRouteWriter<T>(key: AppKey, fn: () => Promise<T>): Promise<T> {
    return asRouteWriter(this.routeLock, key, fn);
  }

  trigger(key: AppKey): void {
    this.loop.trigger(appKeyString(key));
  }

  /** The last observation of one app and its last heal, for `GET /v1/apps` (no secrets). */
  observedView(key: AppKey): unknown {
    const k = appKeyString(key);
    if (!this.last) return undefined;
    const app = this.last.apps.get(k);
    return {
      observed_at: new Date(this.last.at).toISOString(),
      unavailable: this.last.unavailable,
      runs: (app?.runs ?? []).map((r) => ({ instance_id: r.instance, revision: r.spec, port: r.port, version: r.version, state: r.state, runtime: r.runtime, name: r.name })),
      route: app?.route ?? null,
      deployment_running: this.runner.activeFor(key) ?? null,
      last_heal: this.heals.get(k) ?? null,
    };
  }

  /**
   * The plan an API request would get now (`?dry_run=true`): the request becomes a new pending
   * deployment of `doc` (undefined: a delete). Nothing is changed.
   */
  async planFor(key: AppKey, doc: DesiredApp | undefined): Promise<Plan> {
    const snap = await this.observe();
    const facts = { ...this.facts(key, snap), doc, latest: { id: 'dry-run', action: doc ? 'deploy' : 'delete', status: 'pending' } };
    return planApp(facts, this.planContext(snap), this.now()).plan;
  }

  /**
   * What the next pass would do if `doc` were the app's document (`POST /v1/plan`: a document dropped
   * into state/desired), decided exactly as a pass decides. Nothing is changed.
   */
  async planDocument(doc: DesiredApp): Promise<AppPlan> {
    const snap = await this.observe();
    const key = docKey(doc);
    return planApp({ ...this.facts(key, snap), doc, docRecorded: this.deps.records.getRecord(doc.deployment.id) !== undefined }, this.planContext(snap), this.now());
  }

  /**
   * What the next pass would do for every app with a document, a deployment in flight or a footprint
   * on the host, from one observation (the `diff` command), sorted by app key. Nothing is changed.
   */
  async planAll(): Promise<AppPlan[]> {
    const snap = await this.observe();
    return planHost(snap, this.deps.store.list(), this.deps.records, this.pruned, this.planContext(snap), this.now());
  }

  private planContext(snap: HostSnapshot): Omit<PlanContext, 'deploy'> {
    return { usedPorts: snap.usedPorts, surgePorts: this.deps.config.surgePorts, availability: snap.availability };
  }

  /** The facts a reconcile of `key` decides from, read now. */
  private facts(key: AppKey, snap: HostSnapshot): AppFacts {
    return appFacts(key, this.deps.store.get(key), snap, this.deps.records, this.pruned);
  }

  /**
   * After a run: a succeeded deployment's document becomes the app's applied revision
   * (`<stateDir>/desired-applied/...`, 0600, like the document itself). When a deployment rolls back
   * (or fails before its switch), the document is put back to the applied revision, keeping the
   * failed request's deployment id: what the host runs and what the document says agree again, so a
   * later start/stop/restart or a restart of an emptied host does not roll the failed version out.
   */
  private async afterRun(key: AppKey, id: string, outcome: string): Promise<void> {
    const file = appliedPath(this.deps.config.stateDir, key);
    await this.deps.store.appLock.run([appLockKey(key)], async () => {
      const doc = this.deps.store.get(key);
      if (!doc || doc.deployment.id !== id) {
        if (!doc && outcome === 'succeeded') await rm(file, { force: true });
        return;
      }
      if (outcome === 'succeeded') {
        await ensureDir(path.dirname(file));
        await writeFileAtomic(file, serializeDesired(doc));
        return;
      }
      if (outcome !== 'rolled_back') return;
      let text: string;
      try {
        text = await readFile(file, 'utf8');
      } catch {
        return; // a first deployment: there is no earlier revision to return to
      }
      const applied = parseDesiredYaml(text);
      if (!applied.ok || specHash(applied.doc) === specHash(doc)) return;
      const instances = Object.fromEntries(
        Object.entries(applied.doc.spec.instances).map(([iid, inst]) => {
          const now = doc.spec.instances[iid];
          return [iid, now ? { ...inst, state: now.state, generation: now.generation } : inst];
        }),
      );
      await this.deps.store.write({ ...doc, spec: { ...applied.doc.spec, instances } });
      this.deps.log.info({ app: appKeyString(key), deployment: id, state: 'reverted', was: doc.spec.version, version: applied.doc.spec.version }, 'document put back to the applied revision after a rollback');
    });
  }

  private async observe(): Promise<HostSnapshot> {
    const snap = await observeHost(this.deps.observers, this.now);
    this.last = snap;
    return snap;
  }

  /**
   * Every key the resync visits. The resync first re-reads state/desired from disk, so a file event
   * the watcher missed or coalesced (a burst in a new folder, an inotify overflow, edits while the
   * watcher was off) is caught within one resync: the watcher only makes it faster.
   */
  private async keys(): Promise<string[]> {
    try {
      for (const [k, outcome] of await this.deps.store.reloadAll()) if (outcome === 'removed') this.pruned.add(k);
    } catch (err) {
      this.deps.log.warn({ err: describeError(err) }, 'cannot re-read state/desired; planning from the documents in memory');
    }
    const keys = new Set<string>();
    for (const d of this.deps.store.list()) keys.add(appKeyString({ team: d.metadata.team, env: d.metadata.environment, app: d.metadata.app }));
    if (this.last) for (const k of this.last.apps.keys()) keys.add(k);
    for (const r of this.deps.records.active()) keys.add(appKeyString(r.key));
    // Pruned apps have no document and may not be observed yet (an operator started with no document
    // never observes until some key is visited).
    for (const k of this.pruned) keys.add(k);
    return [...keys];
  }

  /**
   * Queue the callback of one event of a deployment with its current status document. Once the record
   * is terminal only its final event goes out: a superseded deployment whose machine is still winding
   * down must not send more documents after its terminal one.
   */
  private notify(deploymentId: string, eventId: string): void {
    const rec = this.deps.records.getRecord(deploymentId);
    if (!rec?.callback_url) return;
    if (TERMINAL_STATUSES.has(rec.status.status) && eventId !== `${deploymentId}:final`) return;
    this.deps.callbacks.send(rec.callback_url, rec.status, { orderKey: deploymentId, eventId }).catch((err: unknown) => {
      this.deps.log.warn({ deployment: deploymentId, err: describeError(err) }, 'cannot queue callback');
    });
  }

  /** One reconcile of one app against the pass's snapshot. */
  private async reconcile(keyStr: string, snap: HostSnapshot): Promise<Outcome> {
    const key = parseAppKey(keyStr);
    if (!key) return { kind: 'terminal', error: { code: 'E_BAD_KEY', message: `not an app key: ${keyStr}` } };
    // Decide under the app's lock: the API writes a document and then records its deployment under
    // the same lock, so a pass never mistakes an API document whose record is not written yet for a
    // hand-written one. Heals (host effects) run after the lock is released.
    const d = await this.deps.store.appLock.run([appLockKey(key)], () => Promise.resolve(this.decide(key, keyStr, snap)));
    return 'heal' in d ? this.heal(key, keyStr, d.heal) : d;
  }

  /** The decision of one pass (and what can be done at once); a heal plan is returned, not run. */
  private decide(key: AppKey, keyStr: string, snap: HostSnapshot): Outcome | { heal: Plan } {
    const running = this.runner.activeFor(key);
    const latest = this.deps.records.latestForApp(key);
    if (running) {
      // A newer deployment was accepted: ask the running one to stop at its next safe point.
      if (latest && latest.status.deployment_id !== running) this.runner.cancel(key);
      return { kind: 'done' };
    }
    const doc = this.deps.store.get(key);
    const ap = planApp(this.facts(key, snap), this.planContext(snap), this.now());
    const p = ap.plan;
    if (ap.mode === 'left_alone') {
      // Never remove what we cannot account for: no document and no delete request.
      if (p.notes.length > 0) this.deps.log.warn({ app: keyStr }, 'app found on the host without a document or a delete request: left alone');
      return { kind: 'done' };
    }
    const blocked = Object.entries(snap.unavailable).filter(([c]) => p.notes.some((n) => n.includes(c)));
    if (p.actions.length === 0 && blocked.length > 0) {
      if (ap.mode === 'deploy' && ap.deploymentId !== null && !ap.newRecord) this.blockedDeployment(ap.deploymentId, blocked);
      return { kind: 'retry', error: { code: 'E_COMPONENT_UNAVAILABLE', message: blocked.map(([c, m]) => `${c}: ${m}`).join('; ') } };
    }

    if (ap.mode === 'deploy' && ap.deploymentId !== null) {
      const id = ap.deploymentId;
      if (ap.newRecord && doc) {
        // A document written by hand (GitOps) names a deployment the operator never saw: record it.
        const res = this.deps.records.accept({
          id,
          key,
          action: 'deploy',
          kind: doc.spec.runtime,
          model: doc.spec.model,
          strategy: doc.spec.strategy,
          target_version: doc.spec.version,
          callback_url: doc.deployment.callback_url,
          request_hash: null,
          endpoint: 'state/desired (file)',
          response: {},
        });
        // Recorded meanwhile (e.g. by the API): the next pass decides again from the records.
        if (res.outcome !== 'created') return { kind: 'requeue', afterMs: 0, reason: `deployment ${id} was recorded meanwhile` };
      }
      if (p.actions.length === 0) {
        this.deps.records.update(id, { status: 'succeeded', phase: 'succeeded', steps: [] });
        this.notify(id, `${id}:final`);
        if (!doc) this.pruned.delete(keyStr);
        return { kind: 'done' };
      }
      const desired = doc ? toDesiredModel(doc) : null;
      const slots = Object.fromEntries(Object.entries(doc?.spec.instances ?? {}).map(([iid, i]) => [iid, i.slot]));
      void this.runner.start(key, id, p, { start: ap.observed, target: { spec: desired?.spec ?? '', version: desired?.version ?? '', slots } });
      return { kind: 'done' };
    }

    if (p.actions.length === 0) {
      if (!doc) this.pruned.delete(keyStr);
      return { kind: 'done' };
    }
    return { heal: p };
  }

  /**
   * A deployment that cannot start because a component it needs does not answer: it stays pending
   * (it proceeds by itself once the component is back) and says so: phase `waiting for <component>`,
   * error the component's code (E_SYSTEMD_UNAVAILABLE, E_DOCKER_UNAVAILABLE, E_CADDY_UNAVAILABLE).
   * Past the deployment deadline (counted from its acceptance) it fails with that code.
   */
  private blockedDeployment(id: string, blocked: [string, string][]): void {
    const rec = this.deps.records.getRecord(id);
    if (!rec || TERMINAL_STATUSES.has(rec.status.status)) return;
    const code = /^(E_[A-Z0-9_]+)/.exec(blocked[0]?.[1] ?? '')?.[1] ?? 'E_COMPONENT_UNAVAILABLE';
    const message = blocked.map(([c, m]) => `${c}: ${m}`).join('; ');
    if (this.now() - Date.parse(rec.created_at) > this.deps.config.deadlines.deploymentMs) {
      this.deps.log.warn({ deployment: id, app: appKeyString(rec.key), error: message }, 'deployment gave up waiting for an unavailable component');
      this.deps.records.update(id, { status: 'failed', phase: 'failed', error: { code, message: `gave up waiting (deployment deadline): ${message}` } });
      this.notify(id, `${id}:final`);
      return;
    }
    const phase = `waiting for ${blocked.map(([c]) => c).join(', ')} (unavailable)`;
    if (rec.status.phase !== phase || rec.status.error?.message !== message) this.deps.records.update(id, { phase, error: { code, message } });
  }

  /** Carry out a heal plan directly, step by step; the first failure ends it (retried with backoff). */
  private async heal(key: AppKey, keyStr: string, p: Plan): Promise<Outcome> {
    // Effects read the document in force when they run: a domain move may change it mid-heal.
    const effects = bindEffects(this.drivers, key, () => this.deps.store.get(key));
    const ac = new AbortController();
    this.healing.add(ac);
    const done: string[] = [];
    try {
      for (const step of p.actions) {
        if (ac.signal.aborted) throw new CrateError('E_ABORTED', 'the operator is stopping');
        const deadlineAt = this.now() + this.deadlines[step.action.type];
        const run = effects[step.action.type] as (i: EffectInput<Action>) => Promise<string | void>;
        await run({ action: step.action, deadlineAt, deploymentId: `heal-${this.now()}`, signal: ac.signal });
        done.push(step.name);
      }
    } catch (err) {
      const error = describeError(err);
      this.heals.set(keyStr, { at: new Date(this.now()).toISOString(), steps: done, outcome: 'failed', error });
      this.deps.log.warn({ app: keyStr, state: 'heal_failed', steps: done, error }, 'heal failed');
      this.deps.onHeal?.(keyStr, p, 'failed');
      return { kind: 'retry', error };
    } finally {
      this.healing.delete(ac);
    }
    this.heals.set(keyStr, { at: new Date(this.now()).toISOString(), steps: done, outcome: 'healed' });
    this.deps.log.info({ app: keyStr, state: p.kind === 'delete' ? 'removed' : 'healed', was: 'drifted', steps: done }, p.kind === 'delete' ? 'app removed' : 'drift healed');
    this.deps.onHeal?.(keyStr, p, 'healed');
    if (p.kind === 'delete') this.pruned.delete(keyStr);
    return { kind: 'done' };
  }
}

export { ACTION_TYPES };
