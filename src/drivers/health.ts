/**
 * Health probes of an instance on 127.0.0.1 (API.md "Health"): with a path, HTTP GET
 * `127.0.0.1:<port><path>` must answer 2xx/3xx (redirects are not followed); without a path, the port
 * must accept a TCP connection. `probe` is one attempt with its own timeout; `waitHealthy` repeats
 * attempts at an interval until one succeeds or the overall deadline passes. Both honour an
 * AbortSignal (rejecting with CrateError `E_ABORTED`); every other outcome is a value, never a throw.
 */
import net from 'node:net';
import { setTimeout as sleep } from 'node:timers/promises';
import { Agent, request } from 'undici';
import { CrateError } from '../core/errors.ts';

/** What to probe. */
export interface ProbeTarget {
  port: number;
  /** HTTP path (starting with `/`, printable ASCII, query allowed). Absent: TCP connect probe. */
  path?: string | undefined;
  /** Host header to send (the app's domain); default `127.0.0.1:<port>`. */
  host?: string | undefined;
  /** Address to probe; default 127.0.0.1 (instances listen on loopback only). */
  address?: string | undefined;
}

/** One attempt's options. */
export interface ProbeOptions extends ProbeTarget {
  timeoutMs: number;
  signal?: AbortSignal | undefined;
}

/** Why an attempt failed: a closed set. */
export type ProbeFailure = 'E_HEALTH_STATUS' | 'E_HEALTH_TIMEOUT' | 'E_HEALTH_REFUSED' | 'E_HEALTH_CONNECT';

/** Outcome of one attempt. */
export type ProbeResult =
  | { ok: true; status?: number | undefined; durationMs: number }
  | { ok: false; code: ProbeFailure; message: string; status?: number | undefined; durationMs: number };

const PATH_PATTERN = /^\/[!-~]*$/;
const HOST_PATTERN = /^[A-Za-z0-9.-]{1,253}(:[0-9]{1,5})?$/;

// Probes never reuse connections: each attempt must prove the server accepts a new one.
const agent = new Agent({ pipelining: 0 });

function checkTarget(t: ProbeTarget): void {
  if (!Number.isInteger(t.port) || t.port < 1 || t.port > 65535) throw new CrateError('E_HEALTH_INVALID', `port: ${t.port}`);
  if (t.path !== undefined && !PATH_PATTERN.test(t.path)) throw new CrateError('E_HEALTH_INVALID', `path: ${JSON.stringify(t.path)}`);
  if (t.host !== undefined && !HOST_PATTERN.test(t.host)) throw new CrateError('E_HEALTH_INVALID', `host: ${JSON.stringify(t.host)}`);
  if (t.address !== undefined && net.isIP(t.address) === 0) throw new CrateError('E_HEALTH_INVALID', `address: ${JSON.stringify(t.address)}`);
}

function aborted(signal: AbortSignal | undefined): CrateError {
  return new CrateError('E_ABORTED', 'health probe aborted', { cause: signal?.reason });
}

function errnoOf(err: unknown): string | undefined {
  let e: unknown = err;
  for (let i = 0; i < 5 && typeof e === 'object' && e !== null; i++) {
    const c = (e as { code?: unknown }).code;
    if (typeof c === 'string' && c.startsWith('E') && !c.startsWith('UND_ERR_ABORT')) return c;
    e = (e as { cause?: unknown }).cause;
  }
  return undefined;
}

async function httpAttempt(t: ProbeOptions, started: number): Promise<ProbeResult> {
  const deadline = AbortSignal.timeout(t.timeoutMs);
  const signal = t.signal ? AbortSignal.any([deadline, t.signal]) : deadline;
  const addr = t.address ?? '127.0.0.1';
  const origin = `http://${net.isIPv6(addr) ? `[${addr}]` : addr}:${t.port}`;
  try {
    const res = await request(`${origin}${t.path ?? '/'}`, {
      dispatcher: agent,
      method: 'GET',
      headers: { ...(t.host ? { host: t.host } : {}), 'user-agent': 'crate-operator-health' },
      signal,
      reset: true,
      headersTimeout: t.timeoutMs,
      bodyTimeout: t.timeoutMs,
    });
    // The verdict is the status; drop the body without waiting for a large or endless one. Destroying
    // it makes undici emit an abort error on the stream, which is expected and carries no information.
    res.body.on('error', () => undefined);
    res.body.destroy();
    const durationMs = performance.now() - started;
    if (res.statusCode >= 200 && res.statusCode < 400) return { ok: true, status: res.statusCode, durationMs };
    return { ok: false, code: 'E_HEALTH_STATUS', message: `HTTP ${res.statusCode}`, status: res.statusCode, durationMs };
  } catch (err) {
    if (t.signal?.aborted) throw aborted(t.signal);
    const durationMs = performance.now() - started;
    if (deadline.aborted) return { ok: false, code: 'E_HEALTH_TIMEOUT', message: `no answer within ${t.timeoutMs} ms`, durationMs };
    const errno = errnoOf(err);
    if (errno === 'ECONNREFUSED') return { ok: false, code: 'E_HEALTH_REFUSED', message: 'connection refused', durationMs };
    return { ok: false, code: 'E_HEALTH_CONNECT', message: `${errno ?? 'error'}: ${(err as Error).message}`, durationMs };
  }
}

function tcpAttempt(t: ProbeOptions, started: number): Promise<ProbeResult> {
  return new Promise((resolve, reject) => {
    const sock = net.connect({ host: t.address ?? '127.0.0.1', port: t.port });
    let done = false;
    const finish = (r: ProbeResult | CrateError): void => {
      if (done) return;
      done = true;
      clearTimeout(timer);
      t.signal?.removeEventListener('abort', onAbort);
      sock.destroy();
      if (r instanceof CrateError) reject(r);
      else resolve(r);
    };
    const onAbort = (): void => finish(aborted(t.signal));
    const timer = setTimeout(
      () => finish({ ok: false, code: 'E_HEALTH_TIMEOUT', message: `no connection within ${t.timeoutMs} ms`, durationMs: performance.now() - started }),
      t.timeoutMs,
    );
    t.signal?.addEventListener('abort', onAbort, { once: true });
    sock.once('connect', () => finish({ ok: true, durationMs: performance.now() - started }));
    sock.once('error', (err: NodeJS.ErrnoException) => {
      const durationMs = performance.now() - started;
      if (err.code === 'ECONNREFUSED') finish({ ok: false, code: 'E_HEALTH_REFUSED', message: 'connection refused', durationMs });
      else finish({ ok: false, code: 'E_HEALTH_CONNECT', message: `${err.code ?? 'error'}: ${err.message}`, durationMs });
    });
  });
}

/**
 * One attempt: HTTP GET when `path` is set, else TCP connect. Resolves with the outcome; rejects only
 * with `E_ABORTED` (signal) or `E_HEALTH_INVALID` (a bad port/path/host, before any I/O).
 */
export async function probe(opts: ProbeOptions): Promise<ProbeResult> {
  checkTarget(opts);
  if (opts.signal?.aborted) throw aborted(opts.signal);
  const started = performance.now();
  // Timers take whole milliseconds.
  const t = { ...opts, timeoutMs: Math.max(1, Math.ceil(opts.timeoutMs)) };
  return t.path === undefined ? tcpAttempt(t, started) : httpAttempt(t, started);
}

/** Time source and sleeper, injectable for simulated-time tests. */
export interface Clock {
  now(): number;
  /** Resolve after `ms`, or reject when `signal` aborts. */
  sleep(ms: number, signal?: AbortSignal): Promise<void>;
}

/** The real clock: monotonic, so a wall-clock jump cannot stretch or cut a deadline. */
export const realClock: Clock = {
  now: () => performance.now(),
  sleep: async (ms, signal) => {
    await sleep(ms, undefined, signal ? { signal } : {});
  },
};

/** Options of waitHealthy. */
export interface WaitHealthyOptions extends ProbeTarget {
  /** Timeout of each attempt. */
  timeoutMs: number;
  /** Pause between the end of one attempt and the start of the next (the longest pause, with `firstIntervalMs`). */
  intervalMs: number;
  /**
   * Pause after the first failed attempt; each later pause doubles, up to `intervalMs`. An app that
   * is not listening at the first attempt is then found healthy soon after it is, instead of up to a
   * whole `intervalMs` later (that wait is deploy time). Default: `intervalMs` (a fixed interval).
   */
  firstIntervalMs?: number;
  /** Overall deadline, counted from the call: no attempt starts after it, none runs past it. */
  deadlineMs: number;
  signal?: AbortSignal | undefined;
  clock?: Clock;
  /** The attempt function; default `probe`. Injectable for simulated-time tests. */
  attempt?: (opts: ProbeOptions) => Promise<ProbeResult>;
}

/** Outcome of waitHealthy. */
export interface WaitHealthyResult {
  healthy: boolean;
  attempts: number;
  /** Why the last attempt failed; undefined when healthy. */
  lastError: { code: ProbeFailure; message: string; status?: number | undefined } | undefined;
  elapsedMs: number;
}

/**
 * Probe until healthy or until the deadline. Resolves `{healthy: true}` at the first successful
 * attempt, `{healthy: false, lastError}` once the deadline leaves no time for another attempt.
 * Rejects only with `E_ABORTED` or `E_HEALTH_INVALID`.
 */
export async function waitHealthy(opts: WaitHealthyOptions): Promise<WaitHealthyResult> {
  checkTarget(opts);
  const clock = opts.clock ?? realClock;
  const attempt = opts.attempt ?? probe;
  const start = clock.now();
  const until = start + opts.deadlineMs;
  let attempts = 0;
  let lastError: WaitHealthyResult['lastError'];
  let pause = Math.min(opts.intervalMs, opts.firstIntervalMs ?? opts.intervalMs);
  for (;;) {
    if (opts.signal?.aborted) throw aborted(opts.signal);
    const remaining = until - clock.now();
    if (remaining <= 0) return { healthy: false, attempts, lastError, elapsedMs: clock.now() - start };
    attempts += 1;
    const r = await attempt({
      port: opts.port,
      path: opts.path,
      host: opts.host,
      address: opts.address,
      timeoutMs: Math.max(1, Math.ceil(Math.min(opts.timeoutMs, remaining))),
      signal: opts.signal,
    });
    if (r.ok) return { healthy: true, attempts, lastError: undefined, elapsedMs: clock.now() - start };
    lastError = { code: r.code, message: r.message, ...(r.status !== undefined ? { status: r.status } : {}) };
    const left = until - clock.now();
    if (left <= 0) return { healthy: false, attempts, lastError, elapsedMs: clock.now() - start };
    try {
      await clock.sleep(Math.ceil(Math.min(pause, left)), opts.signal);
      pause = Math.min(opts.intervalMs, pause * 2);
    } catch (err) {
      if (opts.signal?.aborted) throw aborted(opts.signal);
      throw err;
    }
  }
}
