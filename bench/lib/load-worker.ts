/**
 * Load clients for the zero-downtime benchmark, run as a child process (see ./load.ts) so they do not
 * share an event loop with the operator under test. All of them send GET `<path>` to Caddy's HTTP
 * port with `Host: <domain>` until told to stop:
 *
 * - raw keep-alive: autocannon, keep-alive connections, no retry (a request that races Caddy closing
 *   an idle connection on a config reload is a reset);
 * - new connection: node:http with `agent: false`, one fresh connection per request;
 * - retrying keep-alive: node:http keep-alive agent; a request that fails on a reused connection is
 *   retried once on a new connection, as browsers do for idempotent requests. It also records which
 *   version answered.
 * Plus long requests on demand (`{type: 'hold', id, path}`), each on its own connection.
 *
 * Protocol (execa IPC): the parent starts it with the JSON config as argv[2]; the worker answers
 * `{type: 'ready'}`; `{type: 'hold'}` → `{type: 'hold-done'}`; `{type: 'stop'}` → `{type: 'result'}`.
 */
import http from 'node:http';
import autocannon from 'autocannon';
import { getEachMessage, sendMessage } from 'execa';

export interface LoadConfig {
  port: number;
  domain: string;
  path: string;
  autocannon: { connections: number; rate: number };
  fresh: { workers: number; rate: number };
  retry: { workers: number; rate: number };
}

/** Counters of one client. */
export interface ClientTally {
  requests: number;
  non2xx: number;
  /** Requests that failed (after the retry, for the retrying client). */
  errors: number;
  timeouts: number;
  /** Error codes seen (ECONNRESET, socket hang up, ...), with counts. */
  codes: Record<string, number>;
  /** Retrying client: requests retried after a failure on a reused connection. */
  retried: number;
  /** Status codes other than 2xx, with counts. */
  statuses: Record<string, number>;
  /** When non-2xx answers and errors happened (epoch ms; the first 200), to match them with deploy steps. */
  badAt: { at: number; what: string }[];
}

/** Consecutive answers from one version. */
export interface Segment {
  version: string;
  from: number;
  to: number;
  count: number;
}

export interface HoldDone {
  type: 'hold-done';
  id: string;
  status: number;
  ms: number;
  version: string | null;
  error: string | null;
}

export interface LoadResult {
  type: 'result';
  durationMs: number;
  clients: { 'raw keep-alive': ClientTally; 'new connection': ClientTally; 'retrying keep-alive': ClientTally };
  latency: { p50: number; p99: number; max: number };
  timeline: Segment[];
}

const tally = (): ClientTally => ({ requests: 0, non2xx: 0, errors: 0, timeouts: 0, codes: {}, retried: 0, statuses: {}, badAt: [] });

function bad(t: ClientTally, what: string): void {
  if (t.badAt.length < 200) t.badAt.push({ at: Date.now(), what });
}

function codeOf(err: unknown): string {
  const e = err as { code?: string; message?: string };
  return e.code ?? e.message ?? String(err);
}

interface Answer {
  status: number;
  body: string;
}

class RequestError extends Error {
  constructor(
    readonly original: unknown,
    readonly reused: boolean,
  ) {
    super(codeOf(original));
  }
}

function get(cfg: LoadConfig, path: string, agent: http.Agent | false, timeoutMs: number): Promise<Answer> {
  return new Promise((resolve, reject) => {
    const req = http.request({ host: '127.0.0.1', port: cfg.port, path, headers: { host: cfg.domain }, agent, timeout: timeoutMs }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body: Buffer.concat(chunks).toString('utf8') }));
      res.on('error', (err) => reject(new RequestError(err, req.reusedSocket)));
    });
    req.on('timeout', () => req.destroy(Object.assign(new Error('timeout'), { code: 'ETIMEDOUT' })));
    req.on('error', (err) => reject(new RequestError(err, req.reusedSocket)));
    req.end();
  });
}

function versionOf(body: string): string | null {
  try {
    const v = (JSON.parse(body) as { version?: unknown }).version;
    return typeof v === 'string' ? v : null;
  } catch {
    return null;
  }
}

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

const cfg = JSON.parse(process.argv[2] ?? '{}') as LoadConfig;
let running = true;
const started = Date.now();
const clients = { 'raw keep-alive': tally(), 'new connection': tally(), 'retrying keep-alive': tally() };
const timeline: Segment[] = [];
const latencies: number[] = [];

function record(t: ClientTally, status: number): void {
  if (status < 200 || status > 299) {
    bad(t, String(status));
    t.non2xx += 1;
    t.statuses[String(status)] = (t.statuses[String(status)] ?? 0) + 1;
  }
}

/** A failure of the retrying client, with which attempt failed (`new connection` or `retry`). */
class Tagged extends Error {
  constructor(
    readonly original: unknown,
    readonly attempt: string,
  ) {
    super(codeOf(original));
  }
}

function failed(t: ClientTally, err: unknown): void {
  t.errors += 1;
  const inner = err instanceof Tagged ? err.original : err;
  const code = codeOf(inner instanceof RequestError ? inner.original : inner);
  const c = err instanceof Tagged ? `${code} (${err.attempt})` : code;
  bad(t, c);
  if (code === 'ETIMEDOUT') t.timeouts += 1;
  t.codes[c] = (t.codes[c] ?? 0) + 1;
}

/** A worker loop sending one request per `intervalMs` (at most), until stopped. */
async function loop(intervalMs: number, once: () => Promise<void>): Promise<void> {
  while (running) {
    const t = performance.now();
    await once();
    const rest = intervalMs - (performance.now() - t);
    if (rest > 0 && running) await sleep(rest);
  }
}

const keepAlive = new http.Agent({ keepAlive: true, maxSockets: cfg.retry.workers });
const retryOnce = async (): Promise<void> => {
  const t = clients['retrying keep-alive'];
  t.requests += 1;
  const t0 = performance.now();
  try {
    let a: Answer;
    try {
      a = await get(cfg, cfg.path, keepAlive, 10_000);
    } catch (err) {
      // Only a failure on a reused connection is retried, once, on a new connection (as browsers do):
      // the server may have closed the idle connection, and so may it have the other pooled ones.
      if (!(err instanceof RequestError && err.reused)) throw new Tagged(err, 'new connection');
      t.retried += 1;
      try {
        a = await get(cfg, cfg.path, false, 10_000);
      } catch (again) {
        throw new Tagged(again, 'retry');
      }
    }
    latencies.push(performance.now() - t0);
    record(t, a.status);
    const v = versionOf(a.body) ?? `status ${a.status}`;
    const now = Date.now();
    const last = timeline[timeline.length - 1];
    if (last && last.version === v) {
      last.to = now;
      last.count += 1;
    } else timeline.push({ version: v, from: now, to: now, count: 1 });
  } catch (err) {
    failed(t, err);
  }
};

const freshOnce = async (): Promise<void> => {
  const t = clients['new connection'];
  t.requests += 1;
  try {
    record(t, (await get(cfg, cfg.path, false, 10_000)).status);
  } catch (err) {
    failed(t, err);
  }
};

const cannon = autocannon({
  url: `http://127.0.0.1:${cfg.port}${cfg.path}`,
  headers: { host: cfg.domain },
  connections: cfg.autocannon.connections,
  overallRate: cfg.autocannon.rate,
  duration: 3600,
  timeout: 10,
});
const raw = clients['raw keep-alive'];
cannon.on('reqError', (err) => {
  raw.codes[codeOf(err)] = (raw.codes[codeOf(err)] ?? 0) + 1;
  bad(raw, codeOf(err));
});
cannon.on('response', (_client, statusCode) => {
  if (statusCode < 200 || statusCode > 299) bad(raw, String(statusCode));
});

const loops = [
  ...Array.from({ length: cfg.retry.workers }, () => loop((1000 * cfg.retry.workers) / cfg.retry.rate, retryOnce)),
  ...Array.from({ length: cfg.fresh.workers }, () => loop((1000 * cfg.fresh.workers) / cfg.fresh.rate, freshOnce)),
];

const holds: Promise<void>[] = [];
await sendMessage({ type: 'ready' });
for await (const message of getEachMessage()) {
  const m = message as { type: string; id?: string; path?: string };
  if (m.type === 'hold') {
    const t0 = performance.now();
    holds.push(
      get(cfg, m.path ?? '/', false, 600_000).then(
        (a) => sendMessage({ type: 'hold-done', id: m.id ?? '', status: a.status, ms: Math.round(performance.now() - t0), version: versionOf(a.body), error: null } satisfies HoldDone),
        (err: unknown) => sendMessage({ type: 'hold-done', id: m.id ?? '', status: 0, ms: Math.round(performance.now() - t0), version: null, error: codeOf(err instanceof RequestError ? err.original : err) } satisfies HoldDone),
      ),
    );
  } else if (m.type === 'stop') break;
}
running = false;
cannon.stop();
const r = await cannon;
await Promise.all([...loops, ...holds]);
keepAlive.destroy();
raw.requests = r.requests.sent;
raw.non2xx = r.non2xx;
raw.errors = r.errors;
raw.timeouts = r.timeouts;
for (const [code, s] of Object.entries(r.statusCodeStats)) if (!code.startsWith('2')) raw.statuses[code] = s.count;
latencies.sort((a, b) => a - b);
const q = (p: number): number => Math.round((latencies[Math.min(latencies.length - 1, Math.floor(p * latencies.length))] ?? NaN) * 10) / 10;
await sendMessage({
  type: 'result',
  durationMs: Date.now() - started,
  clients,
  latency: { p50: q(0.5), p99: q(0.99), max: Math.round(latencies[latencies.length - 1] ?? NaN) },
  timeline,
} satisfies LoadResult);
