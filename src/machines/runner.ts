/**
 * Runs deployment machines: one per app at a time, each persisted after every transition so a
 * restarted operator resumes it. Maps the machine's progress onto the deployment record (status,
 * phase, steps, error) and emits the callbacks of API.md: one per status change and per finished step,
 * each with an event id derived from (deployment, event) so a replay after a crash re-sends the same id.
 */
import { createActor, type Actor } from 'xstate';
import { describeError } from '../core/errors.ts';
import { appKeyString, type AppKey } from '../core/identity.ts';
import type { Plan } from '../reconciler/model.ts';
import { createDeploymentMachine, restoreDeployment, type DeploymentMachine, type Effects } from './deployment-machine.ts';
import { project, type InstanceView, type TrafficView } from '../reconciler/project.ts';
import { advance, completedActions, initialRun, type RunContext, type RunMeta, type RunOutcome, type StepDeadlines, type StepRecord } from './progress.ts';
import type { ActionType } from '../reconciler/model.ts';

/** The slice of the deployment records the runner uses. */
export interface RunnerRecords {
  status(id: string): { status: string } | undefined;
  update(
    id: string,
    patch: {
      status?: 'in_progress' | RunOutcome;
      phase?: string;
      error?: { code: string; message: string } | null;
      steps?: { name: string; status: StepRecord['status']; started_at: string | null; finished_at: string | null; detail: string | null }[];
      instances?: InstanceView[];
      traffic?: TrafficView[];
    },
  ): void;
  saveSnapshot(id: string, snapshot: unknown): void;
  loadSnapshot(id: string): unknown;
  deleteSnapshot(id: string): void;
  /** Deployments still marked pending or in progress. */
  unfinished(): { id: string; key: AppKey }[];
}

export interface RunnerDeps {
  records: RunnerRecords;
  /** Effects bound for one app (its document and drivers). */
  effectsFor(key: AppKey): Effects;
  /** Emits a callback for the deployment's current record with a stable event id (deduplicated by id). */
  notify(deploymentId: string, eventId: string): void;
  /** Called when a run ends (the reconciler re-checks the app). */
  onFinished(key: AppKey, deploymentId: string, outcome: RunOutcome): void;
  now(): number;
  deadlines: StepDeadlines;
  deploymentMs: number;
  log?: { info(o: object, m: string): void; warn(o: object, m: string): void };
  /** Called once per step that finished (succeeded or failed) while this process watched it (metrics). */
  onStep?(e: StepEvent): void;
}

/** A finished step of a deployment: its action kind, result and how long it ran. */
export interface StepEvent {
  deploymentId: string;
  /** appKeyString of the app. */
  app: string;
  action: ActionType;
  status: 'succeeded' | 'failed';
  ms: number;
}

interface Running {
  id: string;
  key: AppKey;
  actor: Actor<DeploymentMachine>;
  done: Promise<RunOutcome>;
}

const iso = (ms: number | null): string | null => (ms === null ? null : new Date(ms).toISOString());

export class DeploymentRunner {
  private readonly running = new Map<string, Running>();

  constructor(private readonly deps: RunnerDeps) {}

  /** The deployment running for this app, if any. */
  activeFor(key: AppKey): string | undefined {
    return this.running.get(appKeyString(key))?.id;
  }

  /** Start a deployment for `plan`. Throws when the app already runs one (callers check first). */
  start(key: AppKey, deploymentId: string, plan: Plan, meta: RunMeta | null = null): Promise<RunOutcome> {
    const k = appKeyString(key);
    if (this.running.has(k)) throw new Error(`app ${k} already runs deployment ${this.running.get(k)?.id}`);
    const now = this.deps.now();
    const ctx = advance(initialRun(deploymentId, plan.actions, now, this.deps.deploymentMs, meta), now, this.deps.deadlines);
    return this.launch(key, deploymentId, { input: ctx });
  }

  /** Ask the app's running deployment to stop at its next safe point (superseded). */
  cancel(key: AppKey): void {
    this.running.get(appKeyString(key))?.actor.send({ type: 'CANCEL' });
  }

  /**
   * Resume every unfinished deployment that has a persisted snapshot; one without a snapshot never
   * started an effect and is left to the reconciler (it is still pending). One whose snapshot cannot
   * be restored ends `failed` (E_RESUME_FAILED) and healing converges the app.
   */
  resumeAll(): Promise<RunOutcome>[] {
    const out: Promise<RunOutcome>[] = [];
    for (const d of this.deps.records.unfinished()) {
      if (this.running.has(appKeyString(d.key))) continue;
      try {
        // Reading is inside the try too: a snapshot that cannot even be read (corrupt JSON) fails its
        // deployment, never the start-up of the whole operator.
        const snap = this.deps.records.loadSnapshot(d.id);
        if (snap === undefined || snap === null) continue;
        out.push(this.launch(d.key, d.id, { snapshot: snap }));
      } catch (err) {
        this.deps.log?.warn({ deployment: d.id, err: describeError(err) }, 'cannot resume deployment');
        this.deps.records.update(d.id, { status: 'failed', error: { code: 'E_RESUME_FAILED', message: 'the deployment could not be resumed after a restart' } });
        this.deps.notify(d.id, `${d.id}:final`);
        this.deps.onFinished(d.key, d.id, 'failed');
      }
    }
    return out;
  }

  /** Resolves when no deployment runs (tests, shutdown). */
  async idle(): Promise<void> {
    while (this.running.size > 0) await Promise.allSettled([...this.running.values()].map((r) => r.done));
  }

  /** Stop all actors without recording anything (shutdown: they resume on the next start). */
  stopAll(): void {
    for (const r of this.running.values()) r.actor.stop();
    this.running.clear();
  }

  private launch(key: AppKey, id: string, opts: { input: RunContext } | { snapshot: unknown }): Promise<RunOutcome> {
    const machine = createDeploymentMachine({ effects: this.deps.effectsFor(key), now: () => this.deps.now(), deadlines: this.deps.deadlines });
    const actor =
      'input' in opts ? createActor(machine, { input: opts.input }) : restoreDeployment(machine, opts.snapshot);
    const k = appKeyString(key);
    let seen = new Map<string, string>();
    let lastStatus: string | null = null;
    const done = new Promise<RunOutcome>((resolve) => {
      const sub = actor.subscribe({
        next: (snap) => {
          try {
            const ctx = snap.context;
            // Persist first: the journal must never be behind an effect that already started.
            this.deps.records.saveSnapshot(id, actor.getPersistedSnapshot());
            const status = ctx.outcome ?? 'in_progress';
            const current = ctx.records.find((r) => r.status === 'running');
            this.deps.records.update(id, {
              status,
              phase: ctx.outcome ?? (ctx.mode === 'rollback' ? 'rolling back' : (current?.name ?? 'starting')),
              error: ctx.error ? { code: ctx.error.code, message: ctx.error.step ? `${ctx.error.step}: ${ctx.error.message}` : ctx.error.message } : null,
              steps: ctx.records.map((r) => ({ name: r.name, status: r.status, started_at: iso(r.startedAt), finished_at: iso(r.finishedAt), detail: r.detail })),
              ...(ctx.meta ? project(ctx.meta.start, completedActions(ctx), ctx.meta.target) : {}),
            });
            if (status !== lastStatus) {
              lastStatus = status;
              this.deps.notify(id, ctx.outcome ? `${id}:final` : `${id}:${status}`);
            }
            const next = new Map(ctx.records.map((r) => [r.id, r.status]));
            for (const [i, r] of ctx.records.entries()) {
              const was = seen.get(r.id);
              if (was !== r.status && (r.status === 'succeeded' || r.status === 'failed' || r.status === 'rolled_back') && !ctx.outcome) {
                this.deps.notify(id, `${id}:${r.id}:${r.status}`);
              }
              // `was` is undefined only on the first snapshot of a launch (a resume): not a transition seen here.
              const action = ctx.steps[i]?.action.type;
              if (was !== undefined && was !== r.status && (r.status === 'succeeded' || r.status === 'failed') && action && r.startedAt !== null && r.finishedAt !== null) {
                this.deps.onStep?.({ deploymentId: id, app: k, action, status: r.status, ms: r.finishedAt - r.startedAt });
              }
            }
            seen = next;
            if (snap.status === 'done') {
              sub.unsubscribe();
              this.running.delete(k);
              this.deps.records.deleteSnapshot(id);
              const outcome = ctx.outcome ?? 'failed';
              this.deps.onFinished(key, id, outcome);
              resolve(outcome);
            }
          } catch (err) {
            // Progress could not be recorded (e.g. the state dir is full): stop here rather than go on
            // with effects the journal does not know of. The record stays as last written; a later pass
            // (the periodic resync) plans the deployment again from the host once records can be written.
            sub.unsubscribe();
            this.running.delete(k);
            queueMicrotask(() => actor.stop());
            this.deps.log?.warn({ app: k, deployment: id, err: describeError(err) }, 'cannot record deployment progress: stopped; it is planned again at a later pass');
            resolve('failed');
          }
        },
        error: (err) => {
          this.running.delete(k);
          try {
            this.deps.records.update(id, { status: 'failed', error: describeError(err) });
            this.deps.notify(id, `${id}:final`);
            this.deps.onFinished(key, id, 'failed');
          } catch (e) {
            this.deps.log?.warn({ app: k, deployment: id, err: describeError(e) }, 'cannot record the failed deployment');
          }
          resolve('failed');
        },
      });
    });
    this.running.set(k, { id, key, actor, done });
    actor.start();
    return done;
  }
}
