/**
 * A callback receiver for end-to-end tests: a node:http server on 127.0.0.1 that records every POST
 * (event id, parsed status document, arrival time) and answers 204. Closed after the test.
 *
 * `terminal(id)` lists the distinct terminal events of one deployment (by X-Crate-Event-Id): the
 * contract is exactly one, with the same event id on every retry.
 */
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { cleanupAfter, waitFor } from '../harness/index.ts';

export interface ReceivedCallback {
  eventId: string;
  path: string;
  body: Record<string, unknown>;
  at: number;
}

export interface CallbackReceiver {
  /** `http://127.0.0.1:<port>/cb/<name>`: the path tells tests which request a callback answers. */
  url(name?: string): string;
  readonly received: ReceivedCallback[];
  /** Callbacks about one deployment (by the body's deployment_id). */
  of(deploymentId: string | number): ReceivedCallback[];
  /** Distinct event ids of the callbacks whose body has a terminal status. */
  terminal(deploymentId: string | number): { eventId: string; status: string; count: number }[];
  /** Wait until a terminal callback of the deployment arrived; returns its body. */
  waitTerminal(deploymentId: string | number, timeoutMs?: number): Promise<Record<string, unknown>>;
  close(): Promise<void>;
}

const TERMINAL = new Set(['succeeded', 'failed', 'rolled_back', 'superseded']);

/** Start a receiver (registered for cleanup). `port` reuses a port (a restarted receiver). */
export async function startCallbackReceiver(opts: { port?: number; received?: ReceivedCallback[] } = {}): Promise<CallbackReceiver> {
  const received: ReceivedCallback[] = opts.received ?? [];
  const server = http.createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      let body: Record<string, unknown> = {};
      try {
        body = JSON.parse(Buffer.concat(chunks).toString('utf8')) as Record<string, unknown>;
      } catch {
        // Recorded with an empty body: the assertions on it fail and name the event.
      }
      received.push({ eventId: String(req.headers['x-crate-event-id'] ?? ''), path: req.url ?? '', body, at: Date.now() });
      res.writeHead(204).end();
    });
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(opts.port ?? 0, '127.0.0.1', () => resolve());
  });
  const port = (server.address() as AddressInfo).port;
  let closed = false;
  const close = async (): Promise<void> => {
    if (closed) return;
    closed = true;
    server.closeAllConnections();
    await new Promise<void>((resolve) => server.close(() => resolve()));
  };
  cleanupAfter(close);
  const of = (id: string | number): ReceivedCallback[] => received.filter((c) => String(c.body.deployment_id) === String(id));
  const terminal = (id: string | number): { eventId: string; status: string; count: number }[] => {
    const byId = new Map<string, { eventId: string; status: string; count: number }>();
    for (const c of of(id)) {
      const s = String(c.body.status);
      if (!TERMINAL.has(s)) continue;
      const e = byId.get(c.eventId) ?? { eventId: c.eventId, status: s, count: 0 };
      e.count += 1;
      byId.set(c.eventId, e);
    }
    return [...byId.values()];
  };
  return {
    url: (name = 'cb') => `http://127.0.0.1:${port}/cb/${name}`,
    received,
    of,
    terminal,
    async waitTerminal(id, timeoutMs = 15_000) {
      return waitFor(
        `a terminal callback of deployment ${id}`,
        () => Promise.resolve(of(id).find((c) => TERMINAL.has(String(c.body.status)))?.body),
        timeoutMs,
        50,
      );
    },
    close,
  };
}

/** Expect exactly one terminal callback for `id`, with `status`, and an event id on every callback. */
export function terminalOf(r: CallbackReceiver, id: string | number): { eventId: string; status: string; count: number } {
  const t = r.terminal(id);
  if (t.length !== 1) throw new Error(`deployment ${id}: expected one terminal callback event, got ${JSON.stringify(t)} (all: ${JSON.stringify(r.of(id).map((c) => [c.eventId, c.body.status]))})`);
  for (const c of r.of(id)) if (!c.eventId) throw new Error(`deployment ${id}: a callback without X-Crate-Event-Id`);
  return t[0] as { eventId: string; status: string; count: number };
}
