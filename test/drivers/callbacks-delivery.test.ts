/**
 * Callback deliveries against a real local HTTP receiver: retries keep the event id, signatures
 * verify, order per key holds, deadlines end retries, refused destinations fail at once and a new
 * sender resumes what an old one left pending.
 */
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import {
  backoffDelay,
  createCallbackSender,
  memoryCallbackStore,
  signatureHeader,
  verifySignature,
} from '../../src/drivers/callbacks.ts';
import type { CallbackSender, Clock, DeliveryEvent } from '../../src/drivers/callbacks.ts';

interface Received {
  eventId: string;
  attempt: string;
  signature: string | undefined;
  contentType: string | undefined;
  body: string;
  status: number;
}

/** A receiver whose answer for each request is decided by `decide` (default 200). */
class Receiver {
  server = http.createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      const eventId = String(req.headers['x-crate-event-id']);
      const status = this.decide(eventId, this.received.filter((r) => r.eventId === eventId).length);
      this.received.push({
        eventId,
        attempt: String(req.headers['x-crate-delivery-attempt']),
        signature: req.headers['x-crate-signature'] as string | undefined,
        contentType: req.headers['content-type'],
        body: Buffer.concat(chunks).toString('utf8'),
        status,
      });
      res.writeHead(status, status === 429 ? { 'retry-after': '0' } : {}).end();
    });
  });
  received: Received[] = [];
  decide: (eventId: string, seenBefore: number) => number = () => 200;
  url = '';

  async listen(): Promise<void> {
    await new Promise<void>((resolve) => this.server.listen(0, '127.0.0.1', () => resolve()));
    this.url = `http://127.0.0.1:${(this.server.address() as AddressInfo).port}/hooks/crate?x=1`;
  }
  async close(): Promise<void> {
    this.server.closeAllConnections();
    await new Promise<void>((resolve) => this.server.close(() => resolve()));
  }
}

const FAST = { baseMs: 10, maxMs: 40, deadlineMs: 10_000, attemptTimeoutMs: 2_000 };

describe('callbacks against a real receiver', () => {
  const rx = new Receiver();
  const senders: CallbackSender[] = [];
  beforeAll(async () => rx.listen());
  afterAll(async () => rx.close());
  afterEach(async () => {
    for (const s of senders.splice(0)) await s.stop();
    rx.received = [];
    rx.decide = () => 200;
  });

  function sender(opts: Partial<Parameters<typeof createCallbackSender>[0]> = {}): { s: CallbackSender; store: ReturnType<typeof memoryCallbackStore>; events: DeliveryEvent[] } {
    const store = memoryCallbackStore();
    const events: DeliveryEvent[] = [];
    const s = createCallbackSender({ store, allowPrivateNetworks: ['127.0.0.1'], retry: FAST, onEvent: (e) => events.push(e), ...opts });
    senders.push(s);
    return { s, store: (opts.store as ReturnType<typeof memoryCallbackStore> | undefined) ?? store, events };
  }

  it('500 then 200: delivered once, same event id on both attempts, signature verifies', async () => {
    rx.decide = (_id, seen) => (seen === 0 ? 500 : 200);
    const { s, store, events } = sender({ secret: 'shh-a-secret' });
    await s.start();
    const doc = { deployment_id: 7, status: 'succeeded', note: 'quotes " and \n newlines ✓' };
    const id = await s.send(rx.url, doc, { orderKey: 'dep-7' });
    await s.idle();

    expect(rx.received.map((r) => [r.eventId, r.status, r.attempt])).toEqual([
      [id, 500, '1'],
      [id, 200, '2'],
    ]);
    for (const r of rx.received) {
      expect(r.contentType).toBe('application/json');
      expect(r.body).toBe(JSON.stringify(doc));
      expect(verifySignature('shh-a-secret', r.signature ?? '', r.body, Math.floor(Date.now() / 1000))).toBe(true);
      expect(verifySignature('wrong-secret', r.signature ?? '', r.body, Math.floor(Date.now() / 1000))).toBe(false);
    }
    expect(store.all.get(id)).toMatchObject({ state: 'delivered', attempts: 2 });
    expect(events.map((e) => e.type)).toEqual(['retry', 'delivered']);
  });

  it('no secret: no signature header', async () => {
    const { s } = sender();
    await s.start();
    await s.send(rx.url, { a: 1 });
    await s.idle();
    expect(rx.received).toHaveLength(1);
    expect(rx.received[0]?.signature).toBeUndefined();
  });

  it('events of one order key arrive in order even when the first needs retries', async () => {
    rx.decide = (_id, seen) => (rx.received.length === 0 || (seen < 2 && rx.received[0]?.eventId === _id) ? 503 : 200);
    const { s } = sender();
    await s.start();
    const a = await s.send(rx.url, { n: 1 }, { orderKey: 'dep-1' });
    const b = await s.send(rx.url, { n: 2 }, { orderKey: 'dep-1' });
    const c = await s.send(rx.url, { n: 3 }, { orderKey: 'dep-1' });
    await s.idle();
    const delivered = rx.received.filter((r) => r.status === 200).map((r) => r.eventId);
    expect(delivered).toEqual([a, b, c]);
    // Nothing of b or c was sent before a succeeded.
    const firstB = rx.received.findIndex((r) => r.eventId === b);
    const aOk = rx.received.findIndex((r) => r.eventId === a && r.status === 200);
    expect(firstB).toBeGreaterThan(aOk);
  });

  it('gives up at the deadline', async () => {
    rx.decide = () => 500;
    const { s, store, events } = sender({ retry: { ...FAST, deadlineMs: 150 } });
    await s.start();
    const id = await s.send(rx.url, { doomed: true });
    await s.idle();
    const rec = store.all.get(id);
    expect(rec?.state).toBe('failed');
    expect(rec?.lastError).toBe('HTTP 500');
    expect(rec?.attempts).toBeGreaterThanOrEqual(3);
    expect(rx.received.length).toBe(rec?.attempts);
    expect(events.at(-1)?.type).toBe('failed');
  });

  it('a destination refused by the SSRF guard fails at once without a connection', async () => {
    const { s, store } = sender({ allowPrivateNetworks: [] });
    await s.start();
    const id = await s.send(rx.url, { x: 1 });
    await s.idle();
    expect(rx.received).toHaveLength(0);
    expect(store.all.get(id)).toMatchObject({ state: 'failed', attempts: 1 });
    expect(store.all.get(id)?.lastError).toMatch(/^E_SSRF_BLOCKED/);
  });

  it('a restarted sender resumes pending deliveries with the same event id', async () => {
    rx.decide = () => 500;
    const store = memoryCallbackStore();
    const first = createCallbackSender({ store, allowPrivateNetworks: ['127.0.0.1'], retry: { ...FAST, baseMs: 60_000, maxMs: 60_000, deadlineMs: 3_600_000 } });
    await first.start();
    const id = await first.send(rx.url, { resume: true });
    // Wait for the first (failing) attempt, then "crash".
    for (let i = 0; i < 200 && rx.received.length === 0; i += 1) await new Promise((r) => setTimeout(r, 5));
    await first.stop();
    expect(store.all.get(id)).toMatchObject({ state: 'pending', attempts: 1 });

    rx.decide = () => 200;
    // The stored nextAt is a minute away: the new sender honours it, so let the test clock jump.
    const later: Clock = { now: () => Date.now() + 120_000, setTimer: (fn, ms) => setTimeout(fn, ms), clearTimer: (h) => clearTimeout(h as NodeJS.Timeout) };
    const { s } = sender({ store, clock: later });
    await s.start();
    await s.idle();
    expect(rx.received.map((r) => [r.eventId, r.status])).toEqual([
      [id, 500],
      [id, 200],
    ]);
    expect(store.all.get(id)).toMatchObject({ state: 'delivered', attempts: 2 });
  });

  it('rejects non-http callback URLs up front', async () => {
    const { s } = sender();
    await expect(s.send('file:///etc/passwd', {})).rejects.toMatchObject({ code: 'E_CALLBACK_URL' });
    await expect(s.send('not a url', {})).rejects.toMatchObject({ code: 'E_CALLBACK_URL' });
  });
});

describe('callback schedule (manual clock)', () => {
  it('exponential backoff with equal jitter, capped', () => {
    const p = { baseMs: 1000, maxMs: 8000 };
    expect([1, 2, 3, 4, 5, 9].map((n) => backoffDelay(n, p, () => 0))).toEqual([500, 1000, 2000, 4000, 4000, 4000]);
    expect([1, 2, 3, 4, 5].map((n) => backoffDelay(n, p, () => 0.999999))).toEqual([999, 1999, 3999, 7999, 7999]);
  });

  it('the next attempt waits for the backoff on the injected clock', async () => {
    const rx = new Receiver();
    await rx.listen();
    rx.decide = (_id, seen) => (seen < 2 ? 500 : 200);
    let now = 1_000_000;
    const timers: Array<{ at: number; fn: () => void }> = [];
    const clock: Clock = {
      now: () => now,
      setTimer: (fn, ms) => {
        const t = { at: now + ms, fn };
        timers.push(t);
        return t;
      },
      clearTimer: (h) => {
        const i = timers.indexOf(h as { at: number; fn: () => void });
        if (i >= 0) timers.splice(i, 1);
      },
    };
    const events: DeliveryEvent[] = [];
    const waitEvents = async (n: number): Promise<void> => {
      for (let i = 0; i < 400 && events.length < n; i += 1) await new Promise((r) => setTimeout(r, 5));
    };
    const s = createCallbackSender({
      store: memoryCallbackStore(),
      allowPrivateNetworks: ['127.0.0.1'],
      retry: { baseMs: 1000, maxMs: 60_000, deadlineMs: 3_600_000, attemptTimeoutMs: 2_000 },
      clock,
      random: () => 0,
      onEvent: (e) => events.push(e),
    });
    await s.start();
    await s.send(rx.url, {});
    await waitEvents(1);
    expect(events[0]).toMatchObject({ type: 'retry', nextAt: now + 500 });
    expect(timers.map((t) => t.at)).toEqual([now + 500]);
    // Time has not come: nothing happens.
    await new Promise((r) => setTimeout(r, 30));
    expect(rx.received).toHaveLength(1);
    now += 500;
    timers.shift()?.fn();
    await waitEvents(2);
    expect(events[1]).toMatchObject({ type: 'retry', nextAt: now + 1000 });
    now += 1000;
    timers.shift()?.fn();
    await waitEvents(3);
    expect(events[2]).toMatchObject({ type: 'delivered', attempts: 3 });
    await s.idle();
    await s.stop();
    await rx.close();
  });

  it('signature header format and verification window', () => {
    const h = signatureHeader('k', 1700000000, '{"a":1}');
    expect(h).toMatch(/^t=1700000000,v1=[0-9a-f]{64}$/);
    expect(verifySignature('k', h, '{"a":1}', 1700000100)).toBe(true);
    expect(verifySignature('k', h, '{"a":2}', 1700000100)).toBe(false);
    expect(verifySignature('k', h, '{"a":1}', 1700001000)).toBe(false);
    expect(verifySignature('k', 'garbage', '{"a":1}', 1700000000)).toBe(false);
  });
});

describe('caller-chosen event ids', () => {
  it('sends an event once however often it is re-sent with the same id', async () => {
    const store = memoryCallbackStore();
    const has = (id: string): boolean => store.all.has(id);
    const sender = createCallbackSender({ store: { ...store, has }, allowPrivateNetworks: ['127.0.0.1/32'] });
    const a = await sender.send('http://127.0.0.1:9/x', { n: 1 }, { orderKey: 'd1', eventId: 'd1:final' });
    const b = await sender.send('http://127.0.0.1:9/x', { n: 2 }, { orderKey: 'd1', eventId: 'd1:final' });
    expect(a).toBe('d1:final');
    expect(b).toBe('d1:final');
    expect([...store.all.values()].filter((d) => d.eventId === 'd1:final')).toHaveLength(1);
    expect(store.all.get('d1:final')?.body).toBe('{"n":1}');
    await sender.stop();
  });
});
