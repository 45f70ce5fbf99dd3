/**
 * The level-triggered loop. Triggers (API writes, file events, the periodic resync, start-up) only
 * enqueue an app key; a worker then reconciles that key from scratch: it re-reads the document and
 * uses a snapshot taken after the trigger. One worker per key at a time, keys in parallel up to
 * `concurrency`. Workers that start together share one observation, so a pass over N apps costs the
 * same host calls as a pass over one.
 *
 * Outcomes are a closed set, handled in one place (`settle`):
 * - `done`: nothing more to do until the next trigger;
 * - `retry`: failed for a reason that may pass; retried with exponential backoff;
 * - `requeue`: come back after a delay (e.g. waiting for something outside our control);
 * - `terminal`: an error retrying cannot fix (e.g. an invalid document); surfaced, not retried.
 */
import { describeError } from '../core/errors.ts';

export type Outcome =
  | { kind: 'done' }
  | { kind: 'retry'; error: { code: string; message: string } }
  | { kind: 'requeue'; afterMs: number; reason: string }
  | { kind: 'terminal'; error: { code: string; message: string } };

export interface Timers {
  now(): number;
  setTimeout(fn: () => void, ms: number): unknown;
  clearTimeout(handle: unknown): void;
}

export const realTimers: Timers = {
  now: () => Date.now(),
  setTimeout: (fn, ms) => {
    const t = setTimeout(fn, ms);
    t.unref();
    return t;
  },
  clearTimeout: (h) => clearTimeout(h as NodeJS.Timeout),
};

export interface LoopOptions<S> {
  /** Reconcile one key against a snapshot taken after the key was triggered. */
  reconcile(key: string, snapshot: S): Promise<Outcome>;
  /** Observe the host once (all apps). */
  observe(): Promise<S>;
  /** Every key the resync should visit (documents on disk plus apps seen on the host). */
  keys(): Promise<string[]> | string[];
  concurrency: number;
  resyncMs: number;
  backoff?: { baseMs: number; maxMs: number };
  timers?: Timers;
  /** Called when listing the keys of a resync failed (the next resync retries). */
  onResyncError?(err: unknown): void;
  /** Called once per settled reconcile (logs, metrics, status). */
  onSettled?(key: string, outcome: Outcome, durationMs: number): void;
}

interface KeyState {
  /** Logical time (tick) of the latest trigger not yet served. */
  triggeredAt: number | null;
  attempts: number;
  timer: unknown;
  lastOutcome: Outcome | null;
}

/**
 * A shared observation: workers reuse a snapshot started after their trigger. Order is kept by a
 * logical counter (`ticks`), not the clock, so "after" is exact even within one millisecond.
 */
class SnapshotCache<S> {
  private latest: { startedAt: number; value: Promise<S> } | null = null;
  constructor(
    private readonly observe: () => Promise<S>,
    private readonly tick: () => number,
  ) {}
  get(triggeredAt: number): Promise<S> {
    if (this.latest && this.latest.startedAt > triggeredAt) return this.latest.value;
    const startedAt = this.tick();
    const value = this.observe();
    this.latest = { startedAt, value };
    // A failed observation must not be reused.
    value.catch(() => {
      if (this.latest?.value === value) this.latest = null;
    });
    return value;
  }
}

export class ReconcileLoop<S> {
  private readonly states = new Map<string, KeyState>();
  private readonly queue: string[] = [];
  private readonly queued = new Set<string>();
  private readonly running = new Set<string>();
  private readonly timers: Timers;
  private readonly cache: SnapshotCache<S>;
  private resyncTimer: unknown = null;
  private stopped = true;
  private readonly idleWaiters: (() => void)[] = [];
  private ticks = 0;

  constructor(private readonly opts: LoopOptions<S>) {
    this.timers = opts.timers ?? realTimers;
    this.cache = new SnapshotCache(() => opts.observe(), () => ++this.ticks);
  }

  /** Starts the loop: every known key is enqueued (start-up trigger), then the periodic resync. */
  async start(): Promise<void> {
    this.stopped = false;
    await this.resync();
  }

  /**
   * Stop: no trigger, timer or queued key starts work any more. Resolves once the reconciles already
   * running have settled, so nothing the loop calls (reconcile, onSettled) runs after it resolved.
   */
  stop(): Promise<void> {
    this.stopped = true;
    if (this.resyncTimer !== null) this.timers.clearTimeout(this.resyncTimer);
    this.resyncTimer = null;
    for (const s of this.states.values()) {
      if (s.timer !== null) this.timers.clearTimeout(s.timer);
      s.timer = null;
    }
    this.queue.length = 0;
    this.queued.clear();
    return this.idle();
  }

  /** Enqueue one key. Safe to call any time, any number of times. */
  trigger(key: string): void {
    if (this.stopped) return;
    const s = this.state(key);
    s.triggeredAt = ++this.ticks;
    if (s.timer !== null) {
      // An explicit trigger beats a pending backoff: the world changed, try now.
      this.timers.clearTimeout(s.timer);
      s.timer = null;
    }
    if (!this.running.has(key) && !this.queued.has(key)) {
      this.queue.push(key);
      this.queued.add(key);
    }
    this.schedulePump();
  }

  private pumpScheduled = false;

  /** Triggers of one synchronous burst (a resync, a batch of file events) start together. */
  private schedulePump(): void {
    if (this.pumpScheduled) return;
    this.pumpScheduled = true;
    queueMicrotask(() => {
      this.pumpScheduled = false;
      this.pump();
    });
  }

  /** The last outcome per key (for status pages and tests). */
  outcomes(): Map<string, Outcome | null> {
    return new Map([...this.states].map(([k, s]) => [k, s.lastOutcome]));
  }

  /** Resolves when nothing is queued or running (tests, graceful shutdown). */
  idle(): Promise<void> {
    if (this.queue.length === 0 && this.running.size === 0) return Promise.resolve();
    return new Promise((resolve) => this.idleWaiters.push(resolve));
  }

  private async resync(): Promise<void> {
    if (this.stopped) return;
    try {
      for (const key of await this.opts.keys()) this.trigger(key);
    } catch (err) {
      // Listing the keys failed (e.g. records closed under a stopping operator): report it unless
      // stopping; the next resync tries again. Never an unhandled rejection.
      if (!this.stopped) this.opts.onResyncError?.(err);
    } finally {
      if (!this.stopped) this.resyncTimer = this.timers.setTimeout(() => void this.resync(), this.opts.resyncMs);
    }
  }

  private state(key: string): KeyState {
    let s = this.states.get(key);
    if (!s) {
      s = { triggeredAt: null, attempts: 0, timer: null, lastOutcome: null };
      this.states.set(key, s);
    }
    return s;
  }

  private pump(): void {
    while (!this.stopped && this.running.size < this.opts.concurrency && this.queue.length > 0) {
      const key = this.queue.shift() as string;
      this.queued.delete(key);
      this.running.add(key);
      void this.work(key);
    }
    if (this.queue.length === 0 && this.running.size === 0) for (const w of this.idleWaiters.splice(0)) w();
  }

  private async work(key: string): Promise<void> {
    const s = this.state(key);
    const since = s.triggeredAt ?? this.ticks;
    s.triggeredAt = null;
    const started = this.timers.now();
    let outcome: Outcome;
    try {
      const snapshot = await this.cache.get(since);
      outcome = await this.opts.reconcile(key, snapshot);
    } catch (err) {
      outcome = { kind: 'retry', error: describeError(err) };
    }
    this.settle(key, s, outcome, this.timers.now() - started);
  }

  /** The one place outcomes are handled. */
  private settle(key: string, s: KeyState, outcome: Outcome, durationMs: number): void {
    this.running.delete(key);
    s.lastOutcome = outcome;
    const backoff = this.opts.backoff ?? { baseMs: 500, maxMs: 60_000 };
    let delay: number | null = null;
    switch (outcome.kind) {
      case 'done':
      case 'terminal':
        s.attempts = 0;
        break;
      case 'retry':
        s.attempts += 1;
        delay = Math.min(backoff.maxMs, backoff.baseMs * 2 ** (s.attempts - 1));
        break;
      case 'requeue':
        delay = outcome.afterMs;
        break;
    }
    try {
      this.opts.onSettled?.(key, outcome, durationMs);
    } finally {
      if (this.stopped) {
        // Stopped while it ran: nothing is queued or scheduled any more.
      } else if (s.triggeredAt !== null) {
        // Triggered again while it ran: the newer trigger wins over any delay.
        this.queue.push(key);
        this.queued.add(key);
      } else if (delay !== null) {
        s.timer = this.timers.setTimeout(() => {
          s.timer = null;
          this.trigger(key);
        }, delay);
      }
      this.pump();
    }
  }
}
