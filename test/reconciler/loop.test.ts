import { describe, expect, it } from 'vitest';
import { ReconcileLoop, type Outcome, type Timers } from '../../src/reconciler/loop.ts';

/** A virtual clock: timers fire only when the test advances time. */
function virtualTimers(): Timers & { advance(ms: number): Promise<void> } {
  let now = 0;
  let seq = 0;
  const pending = new Map<number, { at: number; fn: () => void }>();
  return {
    now: () => now,
    setTimeout: (fn, ms) => {
      seq += 1;
      pending.set(seq, { at: now + ms, fn });
      return seq;
    },
    clearTimeout: (h) => void pending.delete(h as number),
    async advance(ms: number) {
      const end = now + ms;
      for (;;) {
        const next = [...pending.entries()].filter(([, t]) => t.at <= end).sort((a, b) => a[1].at - b[1].at)[0];
        if (!next) break;
        pending.delete(next[0]);
        now = next[1].at;
        next[1].fn();
        await flush();
      }
      now = end;
      await flush();
    },
  };
}

const flush = async (): Promise<void> => {
  for (let i = 0; i < 20; i++) await Promise.resolve();
};

function setup(over: { outcome?: (key: string, n: number) => Outcome; concurrency?: number; keys?: string[] } = {}) {
  const timers = virtualTimers();
  const calls: string[] = [];
  let observations = 0;
  let active = 0;
  let maxActive = 0;
  const gates = new Map<string, () => void>();
  const counts = new Map<string, number>();
  const loop = new ReconcileLoop<number>({
    observe: () => Promise.resolve(++observations),
    keys: () => over.keys ?? [],
    reconcile: async (key, snap) => {
      active += 1;
      maxActive = Math.max(maxActive, active);
      calls.push(`${key}@${snap}`);
      const n = (counts.get(key) ?? 0) + 1;
      counts.set(key, n);
      if (key.startsWith('slow')) await new Promise<void>((r) => gates.set(key, r));
      active -= 1;
      return over.outcome?.(key, n) ?? { kind: 'done' };
    },
    concurrency: over.concurrency ?? 4,
    resyncMs: 10_000,
    backoff: { baseMs: 100, maxMs: 1000 },
    timers,
  });
  return { loop, timers, calls, gates, obs: () => observations, maxActive: () => maxActive };
}

describe('reconcile loop', () => {
  it('serves keys triggered together with one shared observation', async () => {
    const t = setup({ keys: Array.from({ length: 100 }, (_, i) => `a${i}`), concurrency: 8 });
    await t.loop.start();
    await t.loop.idle();
    expect(t.calls).toHaveLength(100);
    expect(t.obs()).toBe(1);
    expect(t.maxActive()).toBeLessThanOrEqual(8);
    await t.loop.stop();
  });

  it('never runs one key twice at once; a trigger during a run runs it again after', async () => {
    const t = setup();
    await t.loop.start();
    t.loop.trigger('slow1');
    await flush();
    t.loop.trigger('slow1');
    t.loop.trigger('slow1');
    await flush();
    expect(t.calls).toEqual(['slow1@1']);
    t.gates.get('slow1')?.();
    await flush();
    expect(t.calls).toHaveLength(2);
    // The second run uses a snapshot taken after its trigger.
    expect(t.calls[1]).toBe('slow1@2');
    t.gates.get('slow1')?.();
    await t.loop.idle();
    expect(t.calls).toHaveLength(2);
    await t.loop.stop();
  });

  it('retries with exponential backoff and stops on done', async () => {
    const t = setup({ outcome: (_k, n) => (n < 4 ? { kind: 'retry', error: { code: 'E_X', message: 'x' } } : { kind: 'done' }) });
    await t.loop.start();
    t.loop.trigger('a');
    await flush();
    expect(t.calls).toHaveLength(1);
    await t.timers.advance(99);
    expect(t.calls).toHaveLength(1);
    await t.timers.advance(1); // 100 ms
    expect(t.calls).toHaveLength(2);
    await t.timers.advance(200); // 200 ms
    expect(t.calls).toHaveLength(3);
    await t.timers.advance(400); // 400 ms
    expect(t.calls).toHaveLength(4);
    await t.timers.advance(5000);
    expect(t.calls).toHaveLength(4);
    expect(t.loop.outcomes().get('a')).toEqual({ kind: 'done' });
    await t.loop.stop();
  });

  it('does not retry a terminal error, requeues after the asked delay', async () => {
    const t = setup({ outcome: (k) => (k === 'bad' ? { kind: 'terminal', error: { code: 'E_INVALID', message: 'no' } } : { kind: 'requeue', afterMs: 300, reason: 'wait' }) });
    await t.loop.start();
    t.loop.trigger('bad');
    t.loop.trigger('later');
    await flush();
    await t.timers.advance(299);
    expect(t.calls.filter((c) => c.startsWith('later'))).toHaveLength(1);
    await t.timers.advance(1);
    expect(t.calls.filter((c) => c.startsWith('later'))).toHaveLength(2);
    expect(t.calls.filter((c) => c.startsWith('bad'))).toHaveLength(1);
    await t.loop.stop();
  });

  it('resyncs every key periodically', async () => {
    const t = setup({ keys: ['a', 'b'] });
    await t.loop.start();
    await t.loop.idle();
    expect(t.calls).toHaveLength(2);
    await t.timers.advance(10_000);
    expect(t.calls).toHaveLength(4);
    await t.loop.stop();
    await t.timers.advance(30_000);
    expect(t.calls).toHaveLength(4);
  });

  it('stop() waits for running reconciles, starts nothing queued, and nothing settles after it', async () => {
    const settled: string[] = [];
    const t = setup({ concurrency: 1 });
    const loop = new ReconcileLoop<number>({
      observe: () => Promise.resolve(1),
      keys: () => [],
      reconcile: (key) => (key === 'slow' ? new Promise<Outcome>((r) => t.gates.set(key, () => r({ kind: 'done' }))) : Promise.resolve({ kind: 'done' })),
      concurrency: 1,
      resyncMs: 1e6,
      timers: t.timers,
      onSettled: (key) => settled.push(key),
    });
    await loop.start();
    loop.trigger('slow');
    loop.trigger('queued');
    await flush();
    loop.trigger('slow'); // triggered again while it runs
    let stopped = false;
    const stopping = loop.stop().then(() => {
      stopped = true;
    });
    await flush();
    expect(stopped).toBe(false);
    t.gates.get('slow')?.();
    await stopping;
    expect(settled).toEqual(['slow']);
    await flush();
    await t.timers.advance(10_000);
    expect(settled).toEqual(['slow']);
  });

  it('turns a thrown error into a retry', async () => {
    const t = setup();
    const loop = new ReconcileLoop<number>({ observe: () => Promise.reject(new Error('docker down')), keys: () => ['a'], reconcile: () => Promise.resolve({ kind: 'done' }), concurrency: 1, resyncMs: 1e6, timers: t.timers });
    await loop.start();
    await loop.idle();
    expect(loop.outcomes().get('a')).toMatchObject({ kind: 'retry', error: { message: 'docker down' } });
    await loop.stop();
  });
});
