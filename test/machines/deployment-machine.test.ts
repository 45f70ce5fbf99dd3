import { describe, expect, it } from 'vitest';
import { createActor, waitFor, type SnapshotFrom } from 'xstate';
import { CrateError } from '../../src/core/errors.ts';
import { ACTION_TYPES, createDeploymentMachine, restoreDeployment, type EffectInput, type Effects } from '../../src/machines/deployment-machine.ts';
import { advance, initialRun, type StepDeadlines } from '../../src/machines/progress.ts';
import type { Action, PlannedAction } from '../../src/reconciler/model.ts';

const deadlines = Object.fromEntries(ACTION_TYPES.map((t) => [t, 1000])) as StepDeadlines;

/** A blue/green plan: start green, wait, switch (commit), drain blue, stop blue. */
const steps: PlannedAction[] = [
  { id: 's1', name: 'fetch', action: { type: 'fetchRelease', version: 'v2' }, undo: [] },
  { id: 's2', name: 'start green', action: { type: 'createRun', instance: 'g', spec: 'B', port: 2 }, undo: [{ type: 'removeRun', instance: 'g', spec: 'B', port: 2, runtime: 'binary' }] },
  { id: 's3', name: 'wait green', action: { type: 'waitHealthy', instance: 'g', spec: 'B', port: 2, runtime: 'binary' }, undo: [] },
  { id: 's4', name: 'route', action: { type: 'setRoute', domain: 'a.example', ports: [2] }, undo: [{ type: 'setRoute', domain: 'a.example', ports: [1] }], commit: true },
  { id: 's5', name: 'drain blue', action: { type: 'drain', ports: [1] }, undo: [] },
  { id: 's6', name: 'stop blue', action: { type: 'stopRun', instance: 'b', spec: 'A', port: 1, runtime: 'binary' }, undo: [{ type: 'startRun', instance: 'b', spec: 'A', port: 1, runtime: 'binary' }] },
];

interface Harness {
  calls: string[];
  effects: Effects;
  clock: { t: number };
}

function fakes(fail: Partial<Record<string, CrateError>> = {}, hang?: string): Harness {
  const calls: string[] = [];
  const clock = { t: 1_000 };
  const effect = (input: EffectInput): Promise<string | void> => {
    const a = input.action;
    const label = `${a.type}${'port' in a ? `:${a.port}` : ''}${'ports' in a ? `:${a.ports.join('+')}` : ''}`;
    calls.push(label);
    clock.t += 10;
    const err = fail[label];
    if (err) return Promise.reject(err);
    if (hang === label) return new Promise(() => undefined);
    return Promise.resolve(a.type === 'drain' ? 'drained' : undefined);
  };
  const effects = Object.fromEntries(ACTION_TYPES.map((t) => [t, effect])) as unknown as Effects;
  return { calls, effects, clock };
}

async function run(h: Harness, plan = steps) {
  const machine = createDeploymentMachine({ effects: h.effects, now: () => h.clock.t, deadlines });
  const ctx = advance(initialRun('d1', plan, h.clock.t, 60_000), h.clock.t, deadlines);
  const actor = createActor(machine, { input: ctx });
  const persisted: unknown[] = [];
  actor.subscribe(() => persisted.push(JSON.parse(JSON.stringify(actor.getPersistedSnapshot())) as unknown));
  actor.start();
  const done = await waitFor(actor, (s) => s.status === 'done', { timeout: 2000 });
  return { done, persisted, machine };
}

const statuses = (s: SnapshotFrom<ReturnType<typeof createDeploymentMachine>>): string[] => s.context.records.map((r) => `${r.id}:${r.status}`);

describe('deployment machine', () => {
  it('runs every step in order and succeeds', async () => {
    const h = fakes();
    const { done } = await run(h);
    expect(done.value).toBe('succeeded');
    expect(h.calls).toEqual(['fetchRelease', 'createRun:2', 'waitHealthy:2', 'setRoute:2', 'drain:1', 'stopRun:1']);
    expect(statuses(done).every((s) => s.endsWith(':succeeded'))).toBe(true);
    expect(done.context.records.find((r) => r.id === 's5')?.detail).toBe('drained');
  });

  it('rolls back when health never passes: the new run is removed, the route untouched', async () => {
    const h = fakes({ 'waitHealthy:2': new CrateError('E_HEALTH_TIMEOUT', 'not healthy within 1s') });
    const { done } = await run(h);
    expect(done.value).toBe('rolled_back');
    expect(h.calls).toEqual(['fetchRelease', 'createRun:2', 'waitHealthy:2', 'removeRun:2']);
    expect(done.context.error).toMatchObject({ code: 'E_HEALTH_TIMEOUT', step: 's3 wait green' });
    expect(statuses(done)).toEqual(['s1:succeeded', 's2:rolled_back', 's3:failed', 's4:skipped', 's5:skipped', 's6:skipped']);
  });

  it.each(['fetchRelease', 'createRun:2', 'setRoute:2'])('rolls back when %s fails before the commit point', async (label) => {
    const h = fakes({ [label]: new CrateError('E_X', 'boom') });
    const { done } = await run(h);
    expect(done.value).toBe('rolled_back');
    expect(h.calls.includes('stopRun:1')).toBe(false);
    // Every step that ran (including the failed one) is undone in reverse order.
    const idx = h.calls.indexOf(label);
    const undo = h.calls.slice(idx + 1);
    if (label === 'setRoute:2') expect(undo).toEqual(['setRoute:1', 'removeRun:2']);
    if (label === 'createRun:2') expect(undo).toEqual(['removeRun:2']);
    if (label === 'fetchRelease') expect(undo).toEqual([]);
  });

  it('does not roll back after the commit point: ends failed, new version keeps serving', async () => {
    const h = fakes({ 'stopRun:1': new CrateError('E_SYSTEMCTL', 'stop failed') });
    const { done } = await run(h);
    expect(done.value).toBe('failed');
    expect(h.calls).not.toContain('setRoute:1');
    expect(done.context.error?.code).toBe('E_SYSTEMCTL');
  });

  it('ends failed when an undo fails (the rest is left to healing)', async () => {
    const h = fakes({ 'waitHealthy:2': new CrateError('E_HEALTH_TIMEOUT', 'x'), 'removeRun:2': new CrateError('E_SYSTEMCTL', 'y') });
    const { done } = await run(h);
    expect(done.value).toBe('failed');
    expect(done.context.error?.code).toBe('E_HEALTH_TIMEOUT');
    expect(done.context.records.find((r) => r.id === 's2')?.detail).toMatch(/rollback failed/);
  });

  it('stops at the next safe point when superseded before the commit', async () => {
    const h = fakes({}, 'createRun:2');
    const machine = createDeploymentMachine({ effects: h.effects, now: () => h.clock.t, deadlines });
    const actor = createActor(machine, { input: advance(initialRun('d1', steps, 0, 60_000), 0, deadlines) }).start();
    await waitFor(actor, (s) => s.value === 'createRun');
    actor.send({ type: 'CANCEL' });
    expect(actor.getSnapshot().status).toBe('active'); // never in the middle of a step that changes the host
    const snap = actor.getPersistedSnapshot();
    actor.stop();
    // The step in flight finishes (resolve it by restoring with a non-hanging effect), then it stops.
    const h2 = fakes();
    const m2 = createDeploymentMachine({ effects: h2.effects, now: () => h2.clock.t, deadlines });
    const restored = restoreDeployment(m2, snap).start();
    const done = await waitFor(restored, (s) => s.status === 'done');
    expect(done.value).toBe('superseded');
    expect(h2.calls).toEqual(['createRun:2']);
    expect(statuses(done)).toEqual(['s1:succeeded', 's2:succeeded', 's3:skipped', 's4:skipped', 's5:skipped', 's6:skipped']);
  });

  it('interrupts a health wait when superseded before the commit (it only reads): ends superseded at once', async () => {
    let aborted = false;
    const h = fakes();
    const effects = {
      ...h.effects,
      // A probe that would wait for the whole healthy deadline (a broken version).
      waitHealthy: ({ signal }: EffectInput) =>
        new Promise<void>((_resolve, reject) => signal.addEventListener('abort', () => {
          aborted = true;
          reject(new CrateError('E_ABORTED', 'aborted'));
        })),
    } as Effects;
    const machine = createDeploymentMachine({ effects, now: () => h.clock.t, deadlines });
    const actor = createActor(machine, { input: advance(initialRun('d1', steps, 0, 60_000), 0, deadlines) }).start();
    await waitFor(actor, (s) => s.value === 'waitHealthy');
    actor.send({ type: 'CANCEL' });
    const done = await waitFor(actor, (s) => s.status === 'done', { timeout: 500 });
    expect(done.value).toBe('superseded');
    expect(aborted).toBe(true);
    expect(statuses(done)).toEqual(['s1:succeeded', 's2:succeeded', 's3:skipped', 's4:skipped', 's5:skipped', 's6:skipped']);
    expect(done.context.records.find((r) => r.id === 's3')?.detail).toMatch(/superseded/);
    // Nothing ran after the cancel: no route switch, no rollback.
    expect(h.calls).toEqual(['fetchRelease', 'createRun:2']);
  });

  it('does not interrupt a health wait of a rollback', async () => {
    // Rolling back after the route switch failed: undo waits for the old run (a health wait in rollback mode).
    const plan = [...steps.slice(0, 3), { ...(steps[3] as PlannedAction), undo: [{ type: 'waitHealthy' as const, instance: 'b', spec: 'A', port: 1, runtime: 'binary' as const }] }];
    const h = fakes({ 'setRoute:2': new CrateError('E_X', 'boom') }, 'waitHealthy:1');
    const machine = createDeploymentMachine({ effects: h.effects, now: () => h.clock.t, deadlines });
    const actor = createActor(machine, { input: advance(initialRun('d1', plan, 0, 60_000), 0, deadlines) }).start();
    await waitFor(actor, (s) => s.value === 'waitHealthy' && s.context.mode === 'rollback');
    actor.send({ type: 'CANCEL' });
    await new Promise((r) => setTimeout(r, 20));
    expect(actor.getSnapshot().status).toBe('active');
    expect(actor.getSnapshot().context.mode).toBe('rollback');
    actor.stop();
  });

  it('ignores a cancel after the commit point and finishes', async () => {
    const h = fakes({}, 'drain:1');
    const machine = createDeploymentMachine({ effects: h.effects, now: () => h.clock.t, deadlines });
    const actor = createActor(machine, { input: advance(initialRun('d1', steps, 0, 60_000), 0, deadlines) }).start();
    await waitFor(actor, (s) => s.value === 'drain');
    actor.send({ type: 'CANCEL' });
    const h2 = fakes();
    const m2 = createDeploymentMachine({ effects: h2.effects, now: () => h2.clock.t, deadlines });
    const snap = actor.getPersistedSnapshot();
    actor.stop();
    const done = await waitFor(restoreDeployment(m2, snap).start(), (s) => s.status === 'done');
    expect(done.value).toBe('succeeded');
  });

  it('rolls back once the deployment deadline has passed (checked at step boundaries)', async () => {
    const h = fakes();
    const machine = createDeploymentMachine({ effects: h.effects, now: () => h.clock.t, deadlines });
    const ctx = advance(initialRun('d1', steps, h.clock.t, 15), h.clock.t, deadlines);
    const done = await waitFor(createActor(machine, { input: ctx }).start(), (s) => s.status === 'done');
    expect(done.value).toBe('rolled_back');
    expect(done.context.error?.code).toBe('E_DEPLOYMENT_TIMEOUT');
  });

  it('resumes from every persisted state to the same outcome, re-running only the in-flight step', async () => {
    const reference = fakes();
    const { done, persisted } = await run(reference);
    expect(done.value).toBe('succeeded');
    for (const snap of persisted) {
      const h = fakes();
      const m = createDeploymentMachine({ effects: h.effects, now: () => h.clock.t, deadlines });
      const restored = await waitFor(restoreDeployment(m, snap).start(), (s) => s.status === 'done');
      expect(restored.value).toBe('succeeded');
      // The resumed run only repeats the tail of the reference run (idempotent effects re-run once at most).
      expect(reference.calls.slice(reference.calls.length - h.calls.length)).toEqual(h.calls);
    }
  });

  it('resumes a rollback from every persisted state', async () => {
    const failing = { 'waitHealthy:2': new CrateError('E_HEALTH_TIMEOUT', 'x') };
    const { persisted } = await run(fakes(failing));
    for (const snap of persisted) {
      const s = snap as { status: string; context: { mode: string; index: number } };
      if (s.status === 'done') continue;
      const h = fakes(s.context.mode === 'forward' ? failing : {});
      const m = createDeploymentMachine({ effects: h.effects, now: () => h.clock.t, deadlines });
      const restored = await waitFor(restoreDeployment(m, snap).start(), (x) => x.status === 'done');
      expect(restored.value).toBe('rolled_back');
      expect(h.calls.at(-1)).toBe('removeRun:2');
    }
  });

  it('re-arms the persisted deadline instead of restarting it', async () => {
    const seen: number[] = [];
    const h = fakes({}, 'waitHealthy:2');
    const machine = createDeploymentMachine({ effects: h.effects, now: () => h.clock.t, deadlines });
    const actor = createActor(machine, { input: advance(initialRun('d1', steps, 0, 60_000), 0, deadlines) }).start();
    await waitFor(actor, (s) => s.value === 'waitHealthy');
    const deadlineAt = actor.getSnapshot().context.currentDeadlineAt;
    const snap = actor.getPersistedSnapshot();
    actor.stop();
    const h2 = fakes();
    h2.clock.t = 500_000; // much later
    const capture = { ...h2.effects, waitHealthy: (i: EffectInput<Extract<Action, { type: 'waitHealthy' }>>) => (seen.push(i.deadlineAt), Promise.resolve()) };
    const m2 = createDeploymentMachine({ effects: capture, now: () => h2.clock.t, deadlines });
    await waitFor(restoreDeployment(m2, snap).start(), (s) => s.status === 'done');
    expect(seen).toEqual([deadlineAt]);
  });
});
