/**
 * Callback deliveries persisted in the real records database (SQLite): an operator restart resumes
 * pending deliveries with the same event ids and in creation order.
 */
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { createCallbackSender, newEventId, recordsCallbackStore } from '../../src/drivers/callbacks.ts';
import { Records } from '../../src/records/records.ts';
import { cleanupAfter, tempDir } from '../harness/index.ts';

describe('event ids', () => {
  it('are UUIDv7 and sort in creation order, also within one millisecond', () => {
    const ids = Array.from({ length: 5000 }, () => newEventId(1_700_000_000_000));
    for (const id of ids.slice(0, 5)) expect(id).toMatch(/^[0-9a-f]{8}-[0-9a-f]{4}-7[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/);
    expect([...ids].sort()).toEqual(ids);
    expect(new Set(ids).size).toBe(ids.length);
  });
});

describe('callbacks over the records database', () => {
  it('a restart resumes pending deliveries: same event ids, creation order kept per deployment', async () => {
    const dir = await tempDir('cbrec');
    const file = path.join(dir, 'records.sqlite');
    const received: Array<{ id: string; status: number; body: string }> = [];
    let failFirst = true;
    const server = http.createServer((req, res) => {
      const chunks: Buffer[] = [];
      req.on('data', (c: Buffer) => chunks.push(c));
      req.on('end', () => {
        const status = failFirst ? 500 : 200;
        failFirst = false;
        received.push({ id: String(req.headers['x-crate-event-id']), status, body: Buffer.concat(chunks).toString() });
        res.writeHead(status).end();
      });
    });
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', () => resolve()));
    cleanupAfter(async () => {
      server.closeAllConnections();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    });
    const url = `http://127.0.0.1:${(server.address() as AddressInfo).port}/cb`;

    const records1 = new Records(file);
    records1.accept({
      id: '101',
      key: { team: 't', env: 1, app: 2 },
      action: 'deploy',
      kind: 'docker',
      model: 'instance',
      strategy: 'blue_green',
      target_version: 'v1',
      callback_url: url,
      request_hash: null,
      endpoint: '/v1/app/instance/docker/deploy',
      response: {},
    });
    const retry = { baseMs: 60_000, maxMs: 60_000, deadlineMs: 3_600_000, attemptTimeoutMs: 2_000 };
    const first = createCallbackSender({ store: recordsCallbackStore(records1, retry.deadlineMs), allowPrivateNetworks: ['127.0.0.1'], retry });
    await first.start();
    const a = await first.send(url, { n: 1 }, { orderKey: '101' });
    const b = await first.send(url, { n: 2 }, { orderKey: '101' });
    for (let i = 0; i < 400 && received.length === 0; i += 1) await new Promise((r) => setTimeout(r, 5));
    await first.stop();
    records1.close();
    expect(received.map((r) => [r.id, r.status])).toEqual([[a, 500]]);

    // "Restart": a new records handle on the same file, a new sender whose clock is past the retry time.
    const records2 = new Records(file);
    cleanupAfter(() => records2.close());
    const later = { now: () => Date.now() + 120_000, setTimer: (fn: () => void, ms: number) => setTimeout(fn, ms), clearTimer: (h: unknown) => clearTimeout(h as NodeJS.Timeout) };
    const second = createCallbackSender({ store: recordsCallbackStore(records2, retry.deadlineMs), allowPrivateNetworks: ['127.0.0.1'], retry, clock: later });
    cleanupAfter(() => second.stop());
    await second.start();
    await second.idle();

    expect(received.map((r) => [r.id, r.status, r.body])).toEqual([
      [a, 500, '{"n":1}'],
      [a, 200, '{"n":1}'],
      [b, 200, '{"n":2}'],
    ]);
    expect(records2.getCallback(a)).toMatchObject({ attempts: 2, next_attempt_at: null, last_error: null });
    expect(records2.getCallback(a)?.delivered_at).not.toBeNull();
    expect(records2.getCallback(b)).toMatchObject({ attempts: 1, next_attempt_at: null });
  });
});
