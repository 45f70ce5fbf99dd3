// Health probes against real local servers (healthy, redirect, 500, slow, closed port, TCP), the
// retry loop in real time, and the loop's timing rules under a simulated clock.
import http from 'node:http';
import net from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { hasCode } from '../../src/core/errors.ts';
import { probe, waitHealthy, type Clock, type ProbeOptions, type ProbeResult } from '../../src/drivers/health.ts';

let server: http.Server;
let port: number;
let hits = 0;
let lastHost: string | undefined;
const sockets = new Set<net.Socket>();

beforeAll(async () => {
  server = http.createServer((req, res) => {
    const url = new URL(req.url ?? '/', 'http://x');
    lastHost = req.headers.host;
    if (url.pathname === '/ok') res.end('ok');
    else if (url.pathname === '/redirect') res.writeHead(302, { location: '/elsewhere' }).end();
    else if (url.pathname === '/fail') res.writeHead(500).end('no');
    else if (url.pathname === '/slow') setTimeout(() => res.end('late'), 3000).unref();
    else if (url.pathname === '/big') {
      res.writeHead(200);
      // An endless body must not keep the probe waiting.
      const t = setInterval(() => res.write('x'.repeat(65536)), 5);
      res.on('close', () => clearInterval(t));
    } else if (url.pathname === '/after3') {
      hits += 1;
      res.writeHead(hits >= 3 ? 200 : 503).end();
    } else res.writeHead(404).end();
  });
  server.on('connection', (s) => {
    sockets.add(s);
    s.on('close', () => sockets.delete(s));
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  port = (server.address() as net.AddressInfo).port;
});

afterAll(async () => {
  for (const s of sockets) s.destroy();
  await new Promise((resolve) => server.close(resolve));
});

async function closedPort(): Promise<number> {
  const s = net.createServer();
  await new Promise<void>((resolve) => s.listen(0, '127.0.0.1', resolve));
  const p = (s.address() as net.AddressInfo).port;
  await new Promise((resolve) => s.close(resolve));
  return p;
}

describe('probe (one attempt, real servers)', () => {
  it('2xx and 3xx are healthy; the Host header is sent', async () => {
    expect(await probe({ port, path: '/ok', timeoutMs: 1000 })).toMatchObject({ ok: true, status: 200 });
    expect(await probe({ port, path: '/redirect', timeoutMs: 1000 })).toMatchObject({ ok: true, status: 302 });
    await probe({ port, path: '/ok', host: 'app.example.com', timeoutMs: 1000 });
    expect(lastHost).toBe('app.example.com');
    const big = await probe({ port, path: '/big', timeoutMs: 1000 });
    expect(big).toMatchObject({ ok: true, status: 200 });
  });

  it('4xx/5xx, slow, closed port each give their code', async () => {
    expect(await probe({ port, path: '/fail', timeoutMs: 1000 })).toMatchObject({ ok: false, code: 'E_HEALTH_STATUS', status: 500 });
    expect(await probe({ port, path: '/missing', timeoutMs: 1000 })).toMatchObject({ ok: false, code: 'E_HEALTH_STATUS', status: 404 });
    const t0 = performance.now();
    expect(await probe({ port, path: '/slow', timeoutMs: 200 })).toMatchObject({ ok: false, code: 'E_HEALTH_TIMEOUT' });
    expect(performance.now() - t0).toBeLessThan(1500);
    const closed = await closedPort();
    expect(await probe({ port: closed, path: '/ok', timeoutMs: 1000 })).toMatchObject({ ok: false, code: 'E_HEALTH_REFUSED' });
  });

  it('TCP probe without a path', async () => {
    expect(await probe({ port, timeoutMs: 1000 })).toMatchObject({ ok: true });
    expect(await probe({ port: await closedPort(), timeoutMs: 1000 })).toMatchObject({ ok: false, code: 'E_HEALTH_REFUSED' });
  });

  it('abort rejects with E_ABORTED; bad input is refused before any I/O', async () => {
    const ac = new AbortController();
    const p = probe({ port, path: '/slow', timeoutMs: 5000, signal: ac.signal });
    setTimeout(() => ac.abort(), 50);
    await expect(p).rejects.toSatisfy((e) => hasCode(e, 'E_ABORTED'));
    const ac2 = new AbortController();
    ac2.abort();
    await expect(probe({ port, timeoutMs: 1000, signal: ac2.signal })).rejects.toSatisfy((e) => hasCode(e, 'E_ABORTED'));
    for (const bad of [{ port: 0 }, { port, path: 'ok' }, { port, path: '/a b' }, { port, path: '/a\r\nX: y' }, { port, host: 'a\r\nb' }]) {
      await expect(probe({ ...bad, timeoutMs: 100 })).rejects.toSatisfy((e) => hasCode(e, 'E_HEALTH_INVALID'));
    }
  });
});

describe('waitHealthy (real time)', () => {
  it('keeps trying until healthy', async () => {
    hits = 0;
    const r = await waitHealthy({ port, path: '/after3', timeoutMs: 500, intervalMs: 20, deadlineMs: 5000 });
    expect(r).toMatchObject({ healthy: true, attempts: 3, lastError: undefined });
  });

  it('gives up at the deadline with the last error', async () => {
    const t0 = performance.now();
    const r = await waitHealthy({ port, path: '/fail', timeoutMs: 500, intervalMs: 50, deadlineMs: 400 });
    const ms = performance.now() - t0;
    expect(r.healthy).toBe(false);
    // The last attempt is clamped to what is left of the deadline: on a loaded machine it may time out.
    expect(['E_HEALTH_STATUS', 'E_HEALTH_TIMEOUT']).toContain(r.lastError?.code);
    expect(r.attempts).toBeGreaterThan(2);
    expect(ms).toBeGreaterThanOrEqual(380);
    expect(ms).toBeLessThan(1500);
  });

  it('a slow attempt never runs past the overall deadline', async () => {
    const t0 = performance.now();
    const r = await waitHealthy({ port, path: '/slow', timeoutMs: 5000, intervalMs: 50, deadlineMs: 300 });
    // The first attempt's timeout is clamped to the 300 ms left; a timer may fire a hair early, leaving
    // time for a second attempt clamped to what is left.
    expect(r).toMatchObject({ healthy: false, lastError: { code: 'E_HEALTH_TIMEOUT' } });
    expect(r.attempts).toBeLessThanOrEqual(2);
    expect(performance.now() - t0).toBeLessThan(1500);
  });

  it('abort during the wait rejects with E_ABORTED', async () => {
    const ac = new AbortController();
    setTimeout(() => ac.abort(), 100);
    await expect(waitHealthy({ port: await closedPort(), timeoutMs: 100, intervalMs: 1000, deadlineMs: 10_000, signal: ac.signal })).rejects.toSatisfy((e) => hasCode(e, 'E_ABORTED'));
  });
});

describe('waitHealthy (simulated clock)', () => {
  /** Time moves only when the loop sleeps or an attempt advances it. */
  function simulated(): Clock & { log: string[]; advance(ms: number): void } {
    let t = 0;
    const log: string[] = [];
    return {
      log,
      now: () => t,
      sleep: async (ms) => {
        log.push(`sleep ${ms}@${t}`);
        t += ms;
        await Promise.resolve();
      },
      advance: (ms) => {
        t += ms;
      },
    };
  }

  it('interval, per-attempt timeout clamped to the remaining time, and the deadline', async () => {
    const clock = simulated();
    const seen: number[] = [];
    const attempt = (o: ProbeOptions): Promise<ProbeResult> => {
      seen.push(o.timeoutMs);
      clock.advance(Math.min(o.timeoutMs, 300)); // each attempt takes 300 ms or times out earlier
      return Promise.resolve({ ok: false, code: 'E_HEALTH_REFUSED', message: 'refused', durationMs: 300 });
    };
    const r = await waitHealthy({ port: 1, timeoutMs: 1000, intervalMs: 500, deadlineMs: 2000, clock, attempt });
    // t=0 attempt(1000) → 300, sleep 500 → 800, attempt(1000) → 1100, sleep 500 → 1600, attempt(400) → 1900, sleep 100 → 2000.
    expect(seen).toEqual([1000, 1000, 400]);
    expect(clock.log).toEqual(['sleep 500@300', 'sleep 500@1100', 'sleep 100@1900']);
    expect(r).toEqual({ healthy: false, attempts: 3, lastError: { code: 'E_HEALTH_REFUSED', message: 'refused' }, elapsedMs: 2000 });
  });

  it('firstIntervalMs: pauses start short and double up to intervalMs', async () => {
    const clock = simulated();
    let n = 0;
    const attempt = (): Promise<ProbeResult> =>
      Promise.resolve(++n === 8 ? { ok: true, durationMs: 0 } : { ok: false, code: 'E_HEALTH_REFUSED', message: 'refused', durationMs: 0 });
    const r = await waitHealthy({ port: 1, timeoutMs: 100, intervalMs: 500, firstIntervalMs: 25, deadlineMs: 60_000, clock, attempt });
    expect(clock.log).toEqual(['sleep 25@0', 'sleep 50@25', 'sleep 100@75', 'sleep 200@175', 'sleep 400@375', 'sleep 500@775', 'sleep 500@1275']);
    expect(r).toEqual({ healthy: true, attempts: 8, lastError: undefined, elapsedMs: 1775 });
  });

  it('succeeds at the first healthy attempt', async () => {
    const clock = simulated();
    let n = 0;
    const attempt = (): Promise<ProbeResult> =>
      Promise.resolve(++n === 4 ? { ok: true, durationMs: 0 } : { ok: false, code: 'E_HEALTH_STATUS', status: 503, message: 'HTTP 503', durationMs: 0 });
    const r = await waitHealthy({ port: 1, path: '/h', timeoutMs: 100, intervalMs: 250, deadlineMs: 60_000, clock, attempt });
    expect(r).toEqual({ healthy: true, attempts: 4, lastError: undefined, elapsedMs: 750 });
  });
});
