/**
 * Callback deliveries: the operator POSTs deployment status documents to the platform's
 * `callback_url` (API.md "Callbacks").
 *
 * Promises:
 * - `send()` persists the delivery (through the injected CallbackStore) and returns its event id at
 *   once; delivery happens in the background and never blocks or fails the caller's deployment.
 * - Each POST carries `Content-Type: application/json`, `X-Crate-Event-Id` (unique per event, the SAME
 *   on every retry of that event, so receivers de-duplicate) and, when a secret is configured,
 *   `X-Crate-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256 of "<t>.<body>">` (t is the time of
 *   that attempt; the body is byte-identical on every attempt).
 * - Non-2xx answers and transport errors are retried with exponential backoff and jitter (honouring
 *   a `Retry-After` in seconds) until the delivery's deadline; then it is marked failed. A refused
 *   destination (E_SSRF_BLOCKED) fails at once: retrying cannot change the policy.
 * - Deliveries sharing an `orderKey` (typically the deployment id) are sent one at a time, in the
 *   order they were queued, so a receiver never sees an older status after a newer one.
 * - `start()` reloads pending deliveries from the store, so an operator restart resumes them (with
 *   the same event ids).
 * - Redirects are not followed; by default the SSRF guard (net-policy.ts) checks every connection.
 */
import { createHmac, randomBytes, timingSafeEqual } from 'node:crypto';
import type { Dispatcher } from 'undici';
import { CrateError, describeError } from '../core/errors.ts';
import { httpCall } from './http.ts';
import { findCrateError, guardedAgent } from './net-policy.ts';

/** Lifecycle of one delivery. */
export type DeliveryState = 'pending' | 'delivered' | 'failed';

/** One callback event and its delivery progress. Plain data; what the store persists. */
export interface CallbackDelivery {
  /** The X-Crate-Event-Id; also the store's key. */
  readonly eventId: string;
  readonly url: string;
  /** The JSON body exactly as sent (the signature covers these bytes). */
  readonly body: string;
  /** Deliveries with the same key go out one at a time, in queue order. */
  readonly orderKey: string;
  /** Epoch milliseconds. */
  readonly createdAt: number;
  /** After this instant (epoch ms) no further attempt is made. */
  readonly deadlineAt: number;
  state: DeliveryState;
  attempts: number;
  /** Epoch ms of the next attempt (pending deliveries). */
  nextAt: number;
  lastError: string | undefined;
}

/**
 * Persistence the sender needs (`recordsCallbackStore` adapts the records module's SQLite outbox;
 * `memoryCallbackStore` for tests). Methods may be synchronous or return promises. `pending()` returns
 * the deliveries in state `pending`, in any order (the sender restores creation order).
 */
export interface CallbackStore {
  save(d: CallbackDelivery): void | Promise<void>;
  /** An attempt failed; the next one is due at `nextAt`. */
  markRetry(eventId: string, attempts: number, nextAt: number, lastError: string): void | Promise<void>;
  markDelivered(eventId: string, attempts: number, at: number): void | Promise<void>;
  /** Given up (deadline passed or permanent refusal). */
  markFailed(eventId: string, attempts: number, lastError: string): void | Promise<void>;
  pending(): CallbackDelivery[] | Promise<CallbackDelivery[]>;
  /** Whether a delivery with this event id was ever saved (for callers that choose their own ids). */
  has?(eventId: string): boolean | Promise<boolean>;
}

/** Time source and timers, injectable so tests can drive the schedule. */
export interface Clock {
  now(): number;
  setTimer(fn: () => void, ms: number): unknown;
  clearTimer(handle: unknown): void;
}

/** The real clock. */
export const systemClock: Clock = {
  now: () => Date.now(),
  setTimer: (fn, ms) => setTimeout(fn, ms),
  clearTimer: (h) => clearTimeout(h as NodeJS.Timeout),
};

/** Retry schedule. */
export interface RetryPolicy {
  /** First retry delay before jitter. */
  baseMs: number;
  /** Cap of one delay. */
  maxMs: number;
  /** Time from queueing after which the delivery is given up. */
  deadlineMs: number;
  /** Deadline of one POST (connect + answer). */
  attemptTimeoutMs: number;
}

export const DEFAULT_RETRY: RetryPolicy = { baseMs: 1_000, maxMs: 5 * 60_000, deadlineMs: 24 * 60 * 60_000, attemptTimeoutMs: 10_000 };

/** What happened to a delivery, for logs and metrics. */
export interface DeliveryEvent {
  type: 'delivered' | 'retry' | 'failed';
  eventId: string;
  url: string;
  attempts: number;
  status?: number;
  error?: string;
  nextAt?: number;
}

export interface CallbackSenderOptions {
  store: CallbackStore;
  /** HMAC secret (config.callbackSecret); no signature header when absent. */
  secret?: string | undefined;
  /** Dispatcher for the POSTs. Default: the SSRF-guarded agent built from `allowPrivateNetworks`. */
  dispatcher?: Dispatcher;
  /** SSRF allow-list (config.allowPrivateNetworks), used when no dispatcher is given. */
  allowPrivateNetworks?: readonly string[];
  retry?: Partial<RetryPolicy>;
  /** Attempts in flight at once (across order keys). Default 4. */
  concurrency?: number;
  clock?: Clock;
  /** Uniform [0,1) source for jitter. */
  random?: () => number;
  onEvent?: (e: DeliveryEvent) => void;
}

/** The sender's verbs. */
export interface CallbackSender {
  /**
   * Queue `document` (JSON-serialised once, here) for `url`. Resolves with the event id as soon as the
   * delivery is persisted. Rejects only for a non-http(s) URL (E_CALLBACK_URL) or a store failure.
   */
  send(url: string, document: unknown, opts?: { orderKey?: string; eventId?: string }): Promise<string>;
  /** Load pending deliveries from the store and begin sending. Call once. */
  start(): Promise<void>;
  /**
   * Stop scheduling, wait for attempts in flight (bounded by their timeout). Pending ones stay stored
   * for the next start; sends after stop are stored but not sent.
   */
  stop(): Promise<void>;
  /** Resolves when nothing is queued or in flight. */
  idle(): Promise<void>;
}

/** `t=<t>,v1=<hex>`: the X-Crate-Signature value for `body` at unix time `t` (seconds). */
export function signatureHeader(secret: string, t: number, body: string): string {
  const mac = createHmac('sha256', secret).update(`${t}.${body}`).digest('hex');
  return `t=${t},v1=${mac}`;
}

/**
 * Receiver-side check (for the platform, tests and docs): true when `header` is a valid signature
 * of `body` with `secret`, made within `toleranceSec` of `nowSec`.
 */
export function verifySignature(secret: string, header: string, body: string, nowSec: number, toleranceSec = 300): boolean {
  const m = /^t=([0-9]{1,12}),v1=([0-9a-f]{64})$/.exec(header);
  if (!m) return false;
  const t = Number(m[1]);
  if (Math.abs(nowSec - t) > toleranceSec) return false;
  const expected = Buffer.from(signatureHeader(secret, t, body).slice(`t=${t},v1=`.length), 'hex');
  return timingSafeEqual(expected, Buffer.from(m[2] as string, 'hex'));
}

/**
 * Delay before attempt `attempt + 1` after `attempt` failures (attempt ≥ 1): exponential from
 * `baseMs`, capped at `maxMs`, with "equal jitter" (uniform in [d/2, d)) so retries of many events do
 * not synchronise.
 */
export function backoffDelay(attempt: number, policy: Pick<RetryPolicy, 'baseMs' | 'maxMs'>, random: () => number): number {
  const d = Math.min(policy.maxMs, policy.baseMs * 2 ** Math.min(attempt - 1, 30));
  return Math.floor(d / 2 + random() * (d / 2));
}

/** Retry-After in seconds (the HTTP-date form is ignored), as milliseconds. */
function retryAfterMs(h: string | string[] | undefined): number | undefined {
  const v = Array.isArray(h) ? h[0] : h;
  if (v === undefined || !/^[0-9]{1,6}$/.test(v.trim())) return undefined;
  return Number(v.trim()) * 1000;
}

/** An in-memory CallbackStore (tests; a dev mode without records). `all` exposes every record. */
export function memoryCallbackStore(): CallbackStore & { all: Map<string, CallbackDelivery> } {
  const all = new Map<string, CallbackDelivery>();
  const get = (id: string): CallbackDelivery => {
    const d = all.get(id);
    if (!d) throw new CrateError('E_NOT_FOUND', `no callback delivery ${id}`);
    return d;
  };
  return {
    all,
    save: (d) => {
      all.set(d.eventId, { ...d });
    },
    markRetry: (id, attempts, nextAt, lastError) => {
      Object.assign(get(id), { attempts, nextAt, lastError });
    },
    markDelivered: (id, attempts) => {
      Object.assign(get(id), { attempts, state: 'delivered' });
    },
    markFailed: (id, attempts, lastError) => {
      Object.assign(get(id), { attempts, state: 'failed', lastError });
    },
    pending: () => [...all.values()].filter((d) => d.state === 'pending').map((d) => ({ ...d })),
  };
}

let lastMs = -1;
let seq = 0;

/**
 * A new event id: a UUIDv7 (48-bit unix-ms timestamp, then a 12-bit counter within the millisecond,
 * then random bits), so ids sort in creation order. The sender relies on that to restore per-key
 * order after a restart, whatever order a store returns pending deliveries in.
 */
export function newEventId(nowMs: number = Date.now()): string {
  if (nowMs > lastMs) {
    lastMs = nowMs;
    seq = 0;
  } else {
    seq += 1;
    if (seq > 0xfff) {
      lastMs += 1;
      seq = 0;
    }
  }
  const b = randomBytes(16);
  const ms = lastMs;
  b.writeUIntBE(ms, 0, 6);
  b[6] = 0x70 | ((seq >> 8) & 0x0f);
  b[7] = seq & 0xff;
  b[8] = 0x80 | ((b[8] as number) & 0x3f);
  const h = b.toString('hex');
  return `${h.slice(0, 8)}-${h.slice(8, 12)}-${h.slice(12, 16)}-${h.slice(16, 20)}-${h.slice(20)}`;
}

/** The callback outbox of the records module (src/records/records.ts `Records`), structurally. */
export interface RecordsOutbox {
  enqueueCallback(c: { event_id: string; deployment_id: string; url: string; body: string; next_attempt_at: number }): void;
  recordCallbackAttempt(eventId: string, outcome: { delivered: true } | { delivered: false; error: string; next_attempt_at: number | null }): void;
  dueCallbacks(
    nowMs: number,
    limit?: number,
  ): Array<{ event_id: string; deployment_id: string; url: string; body: string; attempts: number; next_attempt_at: number | null; last_error: string | null; created_at: string }>;
  getCallback(eventId: string): unknown;
}

/**
 * A CallbackStore over the records database. The order key must be the deployment id (the outbox
 * references deployments). The deadline is not stored: it is `created_at + deadlineMs` (pass the
 * sender's `retry.deadlineMs`).
 */
export function recordsCallbackStore(records: RecordsOutbox, deadlineMs: number = DEFAULT_RETRY.deadlineMs): CallbackStore {
  return {
    save: (d) => records.enqueueCallback({ event_id: d.eventId, deployment_id: d.orderKey, url: d.url, body: d.body, next_attempt_at: d.nextAt }),
    markRetry: (id, _attempts, nextAt, lastError) => records.recordCallbackAttempt(id, { delivered: false, error: lastError, next_attempt_at: nextAt }),
    markDelivered: (id) => records.recordCallbackAttempt(id, { delivered: true }),
    markFailed: (id, _attempts, lastError) => records.recordCallbackAttempt(id, { delivered: false, error: lastError, next_attempt_at: null }),
    has: (id) => records.getCallback(id) !== undefined,
    pending: () =>
      records.dueCallbacks(Number.MAX_SAFE_INTEGER, 1_000_000).map((r) => {
        const createdAt = Date.parse(r.created_at);
        return {
          eventId: r.event_id,
          url: r.url,
          body: r.body,
          orderKey: r.deployment_id,
          createdAt,
          deadlineAt: createdAt + deadlineMs,
          state: 'pending' as const,
          attempts: r.attempts,
          nextAt: r.next_attempt_at ?? createdAt,
          lastError: r.last_error ?? undefined,
        };
      }),
  };
}

/** Build a sender. Nothing is sent until `start()`. */
export function createCallbackSender(opts: CallbackSenderOptions): CallbackSender {
  const store = opts.store;
  const clock = opts.clock ?? systemClock;
  const random = opts.random ?? Math.random;
  const retry: RetryPolicy = { ...DEFAULT_RETRY, ...(opts.retry ?? {}) };
  const concurrency = Math.max(1, opts.concurrency ?? 4);
  const ownsDispatcher = opts.dispatcher === undefined;
  const dispatcher = opts.dispatcher ?? guardedAgent({ allowPrivateNetworks: opts.allowPrivateNetworks ?? [] });
  const emit = opts.onEvent ?? ((): void => undefined);

  /** FIFO per order key; the head is the only one that may be attempted. */
  const queues = new Map<string, CallbackDelivery[]>();
  const inFlight = new Map<string, Promise<void>>();
  let timer: unknown;
  let timerAt = Infinity;
  let state: 'new' | 'running' | 'stopped' = 'new';
  let idleWaiters: Array<() => void> = [];

  const enqueue = (d: CallbackDelivery): void => {
    const q = queues.get(d.orderKey);
    if (q) q.push(d);
    else queues.set(d.orderKey, [d]);
  };

  const checkIdle = (): void => {
    if (queues.size === 0 && inFlight.size === 0) {
      const w = idleWaiters;
      idleWaiters = [];
      for (const f of w) f();
    }
  };

  const finish = (d: CallbackDelivery): void => {
    const q = queues.get(d.orderKey);
    if (q && q[0] === d) q.shift();
    if (q && q.length === 0) queues.delete(d.orderKey);
  };

  const attempt = async (d: CallbackDelivery): Promise<void> => {
    const attempts = d.attempts + 1;
    let status: number | undefined;
    let retryAfter: number | undefined;
    let error: string;
    let permanent = false;
    try {
      const url = new URL(d.url);
      const headers: Record<string, string> = {
        'content-type': 'application/json',
        'user-agent': 'crate-operator',
        'x-crate-event-id': d.eventId,
        'x-crate-delivery-attempt': String(attempts),
      };
      if (opts.secret) headers['x-crate-signature'] = signatureHeader(opts.secret, Math.floor(clock.now() / 1000), d.body);
      const reply = await httpCall(
        { origin: url.origin, dispatcher, label: url.origin },
        { method: 'POST', path: `${url.pathname}${url.search}`, headers, body: d.body, timeoutMs: retry.attemptTimeoutMs, maxBodyBytes: 64 * 1024 },
      );
      status = reply.status;
      if (status >= 200 && status < 300) {
        d.state = 'delivered';
        d.attempts = attempts;
        await store.markDelivered(d.eventId, attempts, clock.now());
        emit({ type: 'delivered', eventId: d.eventId, url: d.url, attempts, status });
        return;
      }
      retryAfter = status === 429 || status === 503 ? retryAfterMs(reply.headers['retry-after']) : undefined;
      error = `HTTP ${status}`;
    } catch (err) {
      const blocked = findCrateError(err, 'E_SSRF_BLOCKED');
      permanent = blocked !== undefined;
      error = blocked ? `E_SSRF_BLOCKED: ${blocked.message}` : describeError(err).message;
    }
    d.attempts = attempts;
    const nextAt = clock.now() + Math.min(retry.maxMs, Math.max(retryAfter ?? 0, backoffDelay(attempts, retry, random)));
    if (permanent || nextAt > d.deadlineAt) {
      d.state = 'failed';
      d.lastError = error;
      await store.markFailed(d.eventId, attempts, error);
      emit({ type: 'failed', eventId: d.eventId, url: d.url, attempts, error, ...(status === undefined ? {} : { status }) });
      return;
    }
    d.nextAt = nextAt;
    d.lastError = error;
    await store.markRetry(d.eventId, attempts, nextAt, error);
    emit({ type: 'retry', eventId: d.eventId, url: d.url, attempts, error, nextAt, ...(status === undefined ? {} : { status }) });
  };

  const pump = (): void => {
    if (state !== 'running') return;
    const now = clock.now();
    let earliest = Infinity;
    for (const q of queues.values()) {
      const head = q[0];
      if (!head || inFlight.has(head.eventId)) continue;
      if (head.nextAt > now) {
        earliest = Math.min(earliest, head.nextAt);
        continue;
      }
      if (inFlight.size >= concurrency) break;
      const p = attempt(head)
        .catch((err: unknown) => {
          // A store failure: keep the delivery queued and try again after the base delay.
          head.nextAt = clock.now() + retry.baseMs;
          head.lastError = describeError(err).message;
        })
        .finally(() => {
          inFlight.delete(head.eventId);
          if (head.state !== 'pending') finish(head);
          pump();
          checkIdle();
        });
      inFlight.set(head.eventId, p);
    }
    if (earliest < timerAt || (timer !== undefined && earliest === Infinity)) {
      if (timer !== undefined) clock.clearTimer(timer);
      timer = undefined;
      timerAt = Infinity;
      if (earliest !== Infinity) {
        timerAt = earliest;
        timer = clock.setTimer(() => {
          timer = undefined;
          timerAt = Infinity;
          pump();
        }, Math.max(0, earliest - now));
      }
    }
  };

  return {
    async send(url, document, sendOpts = {}) {
      let parsed: URL;
      try {
        parsed = new URL(url);
      } catch (err) {
        throw new CrateError('E_CALLBACK_URL', `callback_url is not a URL: ${url}`, { cause: err });
      }
      if (parsed.protocol !== 'http:' && parsed.protocol !== 'https:') throw new CrateError('E_CALLBACK_URL', `callback_url must be http or https: ${url}`);
      const now = clock.now();
      // A caller-chosen id makes the event idempotent: re-sending it (e.g. after a crash) is a no-op.
      const eventId = sendOpts.eventId ?? newEventId(now);
      if (sendOpts.eventId !== undefined && (await store.has?.(sendOpts.eventId))) return eventId;
      const d: CallbackDelivery = {
        eventId,
        url,
        body: JSON.stringify(document),
        orderKey: sendOpts.orderKey ?? eventId,
        createdAt: now,
        deadlineAt: now + retry.deadlineMs,
        state: 'pending',
        attempts: 0,
        nextAt: now,
        lastError: undefined,
      };
      await store.save(d);
      if (state !== 'stopped') {
        enqueue(d);
        pump();
      }
      return eventId;
    },
    async start() {
      if (state !== 'new') return;
      // Queue order per key is creation order: event ids are time-ordered (newEventId).
      const pending = [...(await store.pending())].sort((a, b) => a.createdAt - b.createdAt || (a.eventId < b.eventId ? -1 : a.eventId > b.eventId ? 1 : 0));
      for (const d of pending) enqueue({ ...d });
      state = 'running';
      pump();
    },
    async stop() {
      state = 'stopped';
      if (timer !== undefined) clock.clearTimer(timer);
      timer = undefined;
      timerAt = Infinity;
      await Promise.allSettled([...inFlight.values()]);
      queues.clear();
      checkIdle();
      if (ownsDispatcher) await dispatcher.close();
    },
    idle() {
      if (queues.size === 0 && inFlight.size === 0) return Promise.resolve();
      return new Promise<void>((resolve) => idleWaiters.push(resolve));
    },
  };
}
