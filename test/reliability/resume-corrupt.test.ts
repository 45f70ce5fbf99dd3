/**
 * Resuming with corrupt machine snapshots (pure: fake records and effects). A snapshot that cannot be
 * read (broken JSON in the database) or restored (not a snapshot of this machine) ends that one
 * deployment `failed` with E_RESUME_FAILED and a final callback; the other deployments resume; the
 * start-up itself never throws. Before the fix an unreadable snapshot threw out of resumeAll and the
 * operator could not start.
 */
import { describe, expect, it } from 'vitest';
import { createActor } from 'xstate';
import type { AppKey } from '../../src/core/identity.ts';
import { ACTION_TYPES, createDeploymentMachine, type EffectInput, type Effects } from '../../src/machines/deployment-machine.ts';
import { advance, initialRun, type StepDeadlines } from '../../src/machines/progress.ts';
import { DeploymentRunner, type RunnerRecords } from '../../src/machines/runner.ts';
import type { PlannedAction } from '../../src/reconciler/model.ts';

const deadlines = Object.fromEntries(ACTION_TYPES.map((t) => [t, 1000])) as StepDeadlines;
const steps: PlannedAction[] = [{ id: 's1', name: 'fetch', action: { type: 'fetchRelease', version: 'v2' }, undo: [] }];
const effects = Object.fromEntries(ACTION_TYPES.map((t) => [t, (_: EffectInput) => Promise.resolve('ok')])) as unknown as Effects;

/** A real persisted snapshot of a run that has not finished its first step. */
function goodSnapshot(id: string): unknown {
  const machine = createDeploymentMachine({ effects: { ...effects, fetchRelease: () => new Promise(() => undefined) }, now: () => 1, deadlines });
  const actor = createActor(machine, { input: advance(initialRun(id, steps, 1, 60_000), 1, deadlines) });
  actor.start();
  const snap = JSON.parse(JSON.stringify(actor.getPersistedSnapshot())) as unknown;
  actor.stop();
  return snap;
}

describe('resume with corrupt snapshots', () => {
  it('an unreadable or unrestorable snapshot fails only its deployment; the others resume', async () => {
    const key = (app: number): AppKey => ({ team: 't', env: 1, app });
    const snapshots = new Map<string, () => unknown>([
      ['1', () => goodSnapshot('1')],
      ['2', () => JSON.parse('{"status":"active","val') as unknown],
      ['3', () => ({ status: 'active', value: 'no-such-state', context: { nonsense: true } })],
      ['4', () => goodSnapshot('4')],
    ]);
    const updates = new Map<string, Record<string, unknown>>();
    const records: RunnerRecords = {
      status: () => ({ status: 'in_progress' }),
      update: (id, patch) => void updates.set(id, { ...updates.get(id), ...patch }),
      saveSnapshot: () => undefined,
      loadSnapshot: (id) => (snapshots.get(id) as () => unknown)(),
      deleteSnapshot: () => undefined,
      unfinished: () => ['1', '2', '3', '4'].map((id) => ({ id, key: key(Number(id)) })),
    };
    const notified: string[] = [];
    const finished: string[] = [];
    const runner = new DeploymentRunner({
      records,
      effectsFor: () => effects,
      notify: (_id, eventId) => void notified.push(eventId),
      onFinished: (_k, id, outcome) => void finished.push(`${id}:${outcome}`),
      now: () => 2,
      deadlines,
      deploymentMs: 60_000,
    });
    const resumed = runner.resumeAll();
    const outcomes = await Promise.all(resumed);
    await runner.idle();
    expect(outcomes.filter((o) => o === 'succeeded')).toHaveLength(2);
    for (const id of ['2', '3']) {
      expect(updates.get(id), id).toMatchObject({ status: 'failed', error: { code: 'E_RESUME_FAILED' } });
      expect(notified).toContain(`${id}:final`);
      expect(finished).toContain(`${id}:failed`);
    }
    for (const id of ['1', '4']) expect(finished).toContain(`${id}:succeeded`);
  });

  it('a transition that cannot be recorded (disk full) stops the run quietly; the app can be planned again', async () => {
    const crashes: unknown[] = [];
    const onCrash = (e: unknown): void => void crashes.push(e);
    process.on('uncaughtException', onCrash);
    try {
      let saves = 0;
      const full = Object.assign(new Error('database or disk is full'), { code: 'SQLITE_FULL' });
      const records: RunnerRecords = {
        status: () => ({ status: 'in_progress' }),
        update: () => undefined,
        saveSnapshot: () => {
          saves += 1;
          if (saves > 1) throw full;
        },
        loadSnapshot: () => undefined,
        deleteSnapshot: () => undefined,
        unfinished: () => [],
      };
      const finished: string[] = [];
      const warned: string[] = [];
      const runner = new DeploymentRunner({
        records,
        effectsFor: () => effects,
        notify: () => undefined,
        onFinished: (_k, id, outcome) => void finished.push(`${id}:${outcome}`),
        now: () => 2,
        deadlines,
        deploymentMs: 60_000,
        log: { info: () => undefined, warn: (_o, m) => void warned.push(m) },
      });
      const key = { team: 't', env: 1, app: 1 };
      const plan = { key, kind: 'deploy' as const, strategy: null, fallback: null, dropsTraffic: false, actions: steps, diff: [], notes: [] };
      const outcome = await runner.start(key, '7', plan);
      await new Promise((r) => setTimeout(r, 50));
      expect(outcome).toBe('failed');
      expect(runner.activeFor(key)).toBeUndefined();
      // Not finished: the record was not written, so nothing may act as if it were.
      expect(finished).toEqual([]);
      expect(warned.join()).toMatch(/cannot record deployment progress/);
      expect(crashes).toEqual([]);
    } finally {
      process.off('uncaughtException', onCrash);
    }
  });
});
