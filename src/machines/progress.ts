/**
 * The pure bookkeeping of a deployment run: which action comes next, what happened to each step, when
 * to roll back and how the run ends. The XState machine (deployment-machine.ts) is the execution shell
 * around it; keeping the decisions here makes every path testable without timers or actors.
 *
 * A run goes forward through its steps. A failing step before the commit point rolls back: the undo
 * actions of the finished steps run in reverse order. After the commit point a failure does not roll
 * back (the new version serves); the run ends `failed` and healing finishes the leftovers.
 */
import type { Action, ObservedApp, PlannedAction } from '../reconciler/model.ts';

export type StepStatus = 'pending' | 'running' | 'succeeded' | 'failed' | 'skipped' | 'rolled_back';
export type RunOutcome = 'succeeded' | 'failed' | 'rolled_back' | 'superseded';
export type RunMode = 'forward' | 'rollback';

export interface StepRecord {
  id: string;
  name: string;
  status: StepStatus;
  startedAt: number | null;
  finishedAt: number | null;
  detail: string | null;
}

export interface RunError {
  code: string;
  message: string;
  /** The step that failed (its id and name). */
  step: string | null;
}

/** What the status document is derived from: the observation the plan started from and its target. */
export interface RunMeta {
  start: ObservedApp;
  target: { spec: string; version: string; slots: Record<string, string | undefined> };
}

/** Everything about a run that must survive a crash. JSON-serialisable, never a secret. */
export interface RunContext {
  deploymentId: string;
  meta: RunMeta | null;
  steps: PlannedAction[];
  records: StepRecord[];
  mode: RunMode;
  /** Forward: index into steps. Rollback: index into `undoQueue`. */
  index: number;
  undoQueue: { stepId: string; action: Action }[];
  current: Action | null;
  /** Absolute deadline of the current action (epoch ms), persisted so a resume re-arms it. */
  currentDeadlineAt: number | null;
  deploymentDeadlineAt: number;
  committed: boolean;
  cancelRequested: boolean;
  error: RunError | null;
  outcome: RunOutcome | null;
  /** Times the current action was re-entered after a restart (bounded, see MAX_RESUMES). */
  resumes: number;
}

/** How long each kind of action may take (ms). */
export type StepDeadlines = Record<Action['type'], number>;

export function initialRun(deploymentId: string, steps: PlannedAction[], now: number, deploymentMs: number, meta: RunMeta | null = null): RunContext {
  return {
    deploymentId,
    meta,
    steps,
    records: steps.map((s) => ({ id: s.id, name: s.name, status: 'pending', startedAt: null, finishedAt: null, detail: null })),
    mode: 'forward',
    index: 0,
    undoQueue: [],
    current: null,
    currentDeadlineAt: null,
    deploymentDeadlineAt: now + deploymentMs,
    committed: false,
    cancelRequested: false,
    error: null,
    outcome: null,
    resumes: 0,
  };
}

function withRecord(ctx: RunContext, id: string, patch: Partial<StepRecord>): StepRecord[] {
  return ctx.records.map((r) => (r.id === id ? { ...r, ...patch } : r));
}

/**
 * Choose the next action (or the outcome) from a settled context: called at start and after every
 * finished action. Step boundaries are the only safe points for supersede.
 */
export function advance(ctx: RunContext, now: number, deadlines: StepDeadlines): RunContext {
  if (ctx.outcome) return ctx;
  if (ctx.mode === 'forward') {
    if (ctx.cancelRequested && !ctx.committed) {
      return { ...ctx, current: null, currentDeadlineAt: null, outcome: 'superseded', records: ctx.records.map((r) => (r.status === 'pending' ? { ...r, status: 'skipped' } : r)) };
    }
    if (now > ctx.deploymentDeadlineAt && !ctx.committed) {
      return startRollback({ ...ctx, error: { code: 'E_DEPLOYMENT_TIMEOUT', message: 'the deployment ran past its deadline', step: null } }, now, deadlines);
    }
    const step = ctx.steps[ctx.index];
    if (!step) return { ...ctx, current: null, currentDeadlineAt: null, outcome: ctx.error ? 'failed' : 'succeeded' };
    return {
      ...ctx,
      current: step.action,
      currentDeadlineAt: now + deadlines[step.action.type],
      records: withRecord(ctx, step.id, { status: 'running', startedAt: now }),
    };
  }
  const next = ctx.undoQueue[ctx.index];
  if (!next) {
    return {
      ...ctx,
      current: null,
      currentDeadlineAt: null,
      outcome: 'rolled_back',
      records: ctx.records.map((r) => (r.status === 'pending' ? { ...r, status: 'skipped' } : r)),
    };
  }
  return { ...ctx, current: next.action, currentDeadlineAt: now + deadlines[next.action.type] };
}

/** The current action finished. */
export function actionSucceeded(ctx: RunContext, now: number, detail: string | null, deadlines: StepDeadlines): RunContext {
  if (ctx.mode === 'forward') {
    const step = ctx.steps[ctx.index] as PlannedAction;
    const records = withRecord(ctx, step.id, { status: 'succeeded', finishedAt: now, detail });
    return advance({ ...ctx, records, index: ctx.index + 1, committed: ctx.committed || step.commit === true, resumes: 0 }, now, deadlines);
  }
  const u = ctx.undoQueue[ctx.index] as { stepId: string };
  const lastOfStep = ctx.undoQueue[ctx.index + 1]?.stepId !== u.stepId;
  const records = lastOfStep ? withRecord(ctx, u.stepId, { status: 'rolled_back' }) : ctx.records;
  return advance({ ...ctx, records, index: ctx.index + 1, resumes: 0 }, now, deadlines);
}

/** The current action failed with `error`. */
export function actionFailed(ctx: RunContext, now: number, error: { code: string; message: string }, deadlines: StepDeadlines): RunContext {
  if (ctx.mode === 'forward') {
    const step = ctx.steps[ctx.index] as PlannedAction;
    const records = withRecord(ctx, step.id, { status: 'failed', finishedAt: now, detail: `${error.code}: ${error.message}` });
    const err: RunError = { ...error, step: `${step.id} ${step.name}` };
    if (ctx.committed) {
      return {
        ...ctx,
        records: records.map((r) => (r.status === 'pending' ? { ...r, status: 'skipped' } : r)),
        current: null,
        currentDeadlineAt: null,
        error: err,
        outcome: 'failed',
      };
    }
    return startRollback({ ...ctx, records, error: err }, now, deadlines);
  }
  // An undo failed: stop undoing (the state is unknown) and leave the rest to healing.
  const u = ctx.undoQueue[ctx.index] as { stepId: string };
  return {
    ...ctx,
    records: withRecord(ctx, u.stepId, { detail: `rollback failed: ${error.code}: ${error.message}` }).map((r) => (r.status === 'pending' ? { ...r, status: 'skipped' } : r)),
    current: null,
    currentDeadlineAt: null,
    error: ctx.error ?? { ...error, step: null },
    outcome: 'failed',
  };
}

function startRollback(ctx: RunContext, now: number, deadlines: StepDeadlines): RunContext {
  const done = ctx.steps.slice(0, ctx.index + 1).filter((s) => {
    const r = ctx.records.find((x) => x.id === s.id);
    // The failed step may have half-happened (a run created, then its start failed): undo it too.
    return r?.status === 'succeeded' || r?.status === 'failed';
  });
  const undoQueue = done.reverse().flatMap((s) => s.undo.map((action) => ({ stepId: s.id, action })));
  return advance({ ...ctx, mode: 'rollback', index: 0, undoQueue, current: null, currentDeadlineAt: null }, now, deadlines);
}

/** Ask the run to stop at its next safe point (a newer deployment superseded it). */
export function requestCancel(ctx: RunContext): RunContext {
  return ctx.outcome ? ctx : { ...ctx, cancelRequested: true };
}

/**
 * Actions that change nothing on the host (or only fill a cache): a supersede may interrupt them
 * instead of waiting for them to finish (a health wait of a broken version lasts the whole deadline).
 */
export const INTERRUPTIBLE: ReadonlySet<Action['type']> = new Set(['fetchRelease', 'pullImage', 'waitHealthy']);

/** Whether a cancel may stop the run now, in the middle of its current action. */
export function canInterrupt(ctx: RunContext): boolean {
  return !ctx.outcome && ctx.mode === 'forward' && !ctx.committed && ctx.current !== null && INTERRUPTIBLE.has(ctx.current.type);
}

/**
 * Superseded in the middle of an interruptible action (see canInterrupt): the run ends `superseded`
 * now; the interrupted step and every pending one are `skipped`. Otherwise the same as requestCancel.
 */
export function interruptForCancel(ctx: RunContext, now: number): RunContext {
  if (!canInterrupt(ctx)) return requestCancel(ctx);
  const step = ctx.steps[ctx.index];
  const records = ctx.records.map((r): StepRecord => {
    if (r.id === step?.id) return { ...r, status: 'skipped', finishedAt: now, detail: 'interrupted: a newer deployment superseded this one' };
    return r.status === 'pending' ? { ...r, status: 'skipped' } : r;
  });
  return { ...ctx, records, cancelRequested: true, current: null, currentDeadlineAt: null, outcome: 'superseded' };
}

/** The actions that completed so far, in order: finished forward steps, then finished undo actions. */
export function completedActions(ctx: RunContext): Action[] {
  const forward = ctx.steps.filter((s) => ctx.records.find((r) => r.id === s.id)?.status === 'succeeded' || ctx.records.find((r) => r.id === s.id)?.status === 'rolled_back').map((s) => s.action);
  const undone = ctx.mode === 'rollback' ? ctx.undoQueue.slice(0, ctx.outcome ? ctx.undoQueue.length : ctx.index).map((u) => u.action) : [];
  return [...forward, ...undone];
}
