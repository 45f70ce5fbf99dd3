/**
 * The deployment machine (XState v5): executes a plan's steps one by one, rolls back on failure before
 * the commit point, stops at a safe point when superseded. Each kind of action is a named actor bound
 * to the real drivers at wiring time (fakes in tests). Decisions live in progress.ts; this file only
 * sequences them.
 *
 * Supersede (CANCEL): the run stops at the next step boundary, or at once when the action in flight
 * changes nothing on the host (progress.ts INTERRUPTIBLE), and never after the commit point.
 *
 * Crash safety: the whole context (steps, records, current action and its absolute deadline) is in the
 * persisted snapshot. On restore XState re-runs the in-flight invoked actor, so every effect must be
 * idempotent; its deadline is the persisted `currentDeadlineAt`, so it is re-armed, not restarted.
 */
import { assign, createActor, fromPromise, setup, type Actor, type ActorLogicFrom } from 'xstate';
import { CrateError, describeError } from '../core/errors.ts';
import type { Action, ActionType } from '../reconciler/model.ts';
import { actionFailed, actionSucceeded, canInterrupt, interruptForCancel, requestCancel, type RunContext, type StepDeadlines } from './progress.ts';

export const ACTION_TYPES: readonly ActionType[] = [
  'fetchRelease',
  'pullImage',
  'createRun',
  'startRun',
  'restartRun',
  'waitHealthy',
  'setRoute',
  'drain',
  'stopRun',
  'removeRun',
  'removeRoute',
  'removeFiles',
];

/** What an effect is told: the action, its absolute deadline, a signal aborted when the run stops. */
export interface EffectInput<A extends Action = Action> {
  action: A;
  deadlineAt: number;
  deploymentId: string;
  signal: AbortSignal;
}

/** One function per action kind; resolves with an optional detail line for the step record. */
export type Effects = { [T in ActionType]: (input: EffectInput<Extract<Action, { type: T }>>) => Promise<string | void> };

export interface MachineDeps {
  effects: Effects;
  now: () => number;
  deadlines: StepDeadlines;
}

type ActorInput = { action: Action; deadlineAt: number; deploymentId: string };

/** Builds the machine with its effects bound. `input` is an advanced RunContext (see progress.ts). */
export function createDeploymentMachine(deps: MachineDeps) {
  const actors = Object.fromEntries(
    ACTION_TYPES.map((t) => [
      t,
      fromPromise<string | null, ActorInput>(async ({ input, signal }) => {
        const effect = deps.effects[t] as (i: EffectInput) => Promise<string | void>;
        const detail = await effect({ action: input.action, deadlineAt: input.deadlineAt, deploymentId: input.deploymentId, signal });
        return detail ?? null;
      }),
    ]),
  ) as Record<ActionType, ReturnType<typeof fromPromise<string | null, ActorInput>>>;

  const actionStates = Object.fromEntries(
    ACTION_TYPES.map((t) => [
      t,
      {
        invoke: {
          src: t,
          input: ({ context }: { context: RunContext }): ActorInput => ({
            action: context.current as Action,
            deadlineAt: context.currentDeadlineAt ?? deps.now(),
            deploymentId: context.deploymentId,
          }),
          onDone: {
            target: 'dispatch',
            actions: assign(({ context, event }: { context: RunContext; event: { type: string; output?: unknown } }) =>
              actionSucceeded(context, deps.now(), typeof event.output === 'string' ? event.output : null, deps.deadlines),
            ),
          },
          onError: {
            target: 'dispatch',
            actions: assign(({ context, event }: { context: RunContext; event: { type: string; error?: unknown } }) =>
              actionFailed(context, deps.now(), describeError(event.error), deps.deadlines),
            ),
          },
        },
        // Superseded while an action that changes nothing runs (a health wait...): stop now; leaving the
        // state stops the invoked actor, which aborts its signal. Any other action finishes first.
        on: {
          CANCEL: [
            { guard: ({ context }: { context: RunContext }) => canInterrupt(context), target: 'dispatch', actions: assign(({ context }: { context: RunContext }) => interruptForCancel(context, deps.now())) },
            { actions: assign(({ context }: { context: RunContext }) => requestCancel(context)) },
          ],
        },
      },
    ]),
  );

  return setup({
    types: {
      context: {} as RunContext,
      input: {} as RunContext,
      events: {} as { type: 'CANCEL' },
    },
    actors,
  }).createMachine({
    id: 'deployment',
    context: ({ input }) => input,
    initial: 'dispatch',
    on: { CANCEL: { actions: assign(({ context }) => requestCancel(context)) } },
    states: {
      dispatch: {
        always: [
          { guard: ({ context }) => context.outcome === 'succeeded', target: 'succeeded' },
          { guard: ({ context }) => context.outcome === 'failed', target: 'failed' },
          { guard: ({ context }) => context.outcome === 'rolled_back', target: 'rolled_back' },
          { guard: ({ context }) => context.outcome === 'superseded', target: 'superseded' },
          ...ACTION_TYPES.map((t) => ({ guard: ({ context }: { context: RunContext }) => context.current?.type === t, target: t })),
          { target: 'failed', actions: assign({ outcome: 'failed' as const, error: { code: 'E_INTERNAL', message: 'no action to run', step: null } }) },
        ],
      },
      ...(actionStates as Record<ActionType, object>),
      succeeded: { type: 'final' },
      failed: { type: 'final' },
      rolled_back: { type: 'final' },
      superseded: { type: 'final' },
    },
  });
}

export type DeploymentMachine = ReturnType<typeof createDeploymentMachine>;
export type DeploymentLogic = ActorLogicFrom<DeploymentMachine>;

/**
 * Restore a machine from a persisted snapshot (XState re-runs the in-flight invoked actor). Throws
 * CrateError E_RESUME_FAILED for anything that is not a snapshot of this machine (a corrupt or foreign
 * record), before an actor exists.
 */
export function restoreDeployment(machine: DeploymentMachine, snapshot: unknown): Actor<DeploymentMachine> {
  const s = snapshot as { status?: unknown; value?: unknown; context?: Partial<RunContext> } | null;
  const c = s?.context;
  const shaped =
    typeof s === 'object' && s !== null && (s.status === 'active' || s.status === 'done') && typeof c === 'object' && c !== null &&
    typeof c.deploymentId === 'string' && Array.isArray(c.steps) && Array.isArray(c.records) && Array.isArray(c.undoQueue) &&
    typeof c.index === 'number' && (c.mode === 'forward' || c.mode === 'rollback');
  if (!shaped) throw new CrateError('E_RESUME_FAILED', 'the stored machine snapshot is not a deployment snapshot');
  try {
    machine.resolveState({ value: s.value as string, context: c as RunContext });
  } catch (err) {
    throw new CrateError('E_RESUME_FAILED', 'the stored machine snapshot names a state this machine does not have', { cause: err });
  }
  // The options type demands `input` for machines that take one; a restored actor has its context already.
  return createActor(machine, { snapshot } as unknown as Parameters<typeof createActor<DeploymentMachine>>[1]);
}
