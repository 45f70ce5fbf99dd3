/**
 * Effects (actions bound to drivers) with fakes built from function fields:
 * - the route effects and the domain move share one writer per app: a route write never lands between
 *   a domain move's Caddy change and its document write, and it takes the domain from the document in
 *   force when it writes (a move may have happened since the step was planned);
 * - a health wait resumed after its deadline passed (the operator was down) still probes the app
 *   properly once (a loopback HTTP server stands in for the app).
 */
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { describe, expect, it } from 'vitest';
import { loadConfig } from '../../src/config.ts';
import type { AppKey } from '../../src/core/identity.ts';
import type { DesiredApp } from '../../src/desired/document.ts';
import { KeyedMutex } from '../../src/desired/lock.ts';
import type { CaddyDriver } from '../../src/drivers/caddy.ts';
import { asRouteWriter, bindEffects, DRAIN_SETTLE_MS, type EffectDrivers } from '../../src/reconciler/effects.ts';

const key: AppKey = { team: 'acme', env: 1, app: 1 };

function docWith(domain: string): DesiredApp {
  return {
    apiVersion: 'crate.dev/v1',
    kind: 'App',
    metadata: { team: 'acme', environment: 1, app: 1 },
    deployment: { id: '1', callback_url: 'http://127.0.0.1:9/cb', requested_at: '2030-01-01T00:00:00.000Z' },
    spec: { runtime: 'binary', model: 'plain', domain, strategy: 'rolling', version: 'v1', binary: { asset_url: 'http://127.0.0.1:9/a.tgz' }, env: {}, health_check_path: null, instances: { a: { port: 4000, state: 'running', generation: 0 } } },
  } as unknown as DesiredApp;
}

function fakeCaddy(log: string[], gate?: Promise<void>): CaddyDriver {
  return {
    ensureServer: () => Promise.resolve({ changed: false }),
    upsertRoute: (_k: AppKey, domain: string, ports: number[]) => {
      log.push(`upsert ${domain} ${ports.join(',')}`);
      return Promise.resolve({ changed: true });
    },
    removeRoute: () => {
      log.push('remove');
      return Promise.resolve({ changed: true });
    },
    moveDomain: async (_k: AppKey, from: string, to: string) => {
      log.push(`move ${from} → ${to}`);
      await gate;
      log.push('moved');
      return { changed: true };
    },
  } as unknown as CaddyDriver;
}

const drivers = (caddy: CaddyDriver, routeLock: KeyedMutex): EffectDrivers =>
  ({ config: loadConfig({ env: {}, flags: {} }), caddy, now: Date.now, routeLock }) as unknown as EffectDrivers;

const input = <A>(action: A) => ({ action, deadlineAt: Date.now() + 1000, deploymentId: 'd', signal: new AbortController().signal });

describe('route effects and domain moves', () => {
  it('setRoute writes the domain of the document in force, not the one planned', async () => {
    const log: string[] = [];
    const fx = bindEffects(drivers(fakeCaddy(log), new KeyedMutex()), key, () => docWith('moved.example.com'));
    await fx.setRoute(input({ type: 'setRoute' as const, domain: 'planned.example.com', ports: [4000] }));
    expect(log).toEqual(['upsert moved.example.com 4000']);
  });

  it('a route write waits while a domain move holds the app, then writes the moved domain', async () => {
    const log: string[] = [];
    let open!: () => void;
    const gate = new Promise<void>((r) => (open = r));
    let doc = docWith('old.example.com');
    const lock = new KeyedMutex();
    const d = drivers(fakeCaddy(log, gate), lock);
    const fx = bindEffects(d, key, () => doc);
    // What the domain update does: the Caddy move and the document write as the only route writer.
    const move = asRouteWriter(lock, key, async () => {
      await d.caddy.moveDomain(key, 'old.example.com', 'new.example.com');
      log.push('document written');
      doc = docWith('new.example.com');
    });
    // A heal planned from the old document tries to write the route while the move is under way.
    await Promise.resolve();
    const heal = fx.setRoute(input({ type: 'setRoute' as const, domain: 'old.example.com', ports: [4000] }));
    await new Promise((r) => setTimeout(r, 20));
    expect(log).toEqual(['move old.example.com → new.example.com']);
    open();
    await Promise.all([move, heal]);
    expect(log).toEqual(['move old.example.com → new.example.com', 'moved', 'document written', 'upsert new.example.com 4000']);
  });

  it('a failed move releases the app', async () => {
    const log: string[] = [];
    const lock = new KeyedMutex();
    const d = drivers(fakeCaddy(log), lock);
    await expect(asRouteWriter(lock, key, () => Promise.reject(new Error('caddy down')))).rejects.toThrow('caddy down');
    await bindEffects(d, key, () => docWith('a.example.com')).removeRoute(input({ type: 'removeRoute' as const }));
    expect(log).toEqual(['remove']);
    expect(lock.size).toBe(0);
  });
});

describe('waitHealthy effect', () => {
  const app = async (status: number, delayMs: number): Promise<{ port: number; close(): Promise<void> }> => {
    const srv = http.createServer((_req, res) => setTimeout(() => res.writeHead(status).end(), delayMs));
    await new Promise<void>((r) => srv.listen(0, '127.0.0.1', r));
    return { port: (srv.address() as AddressInfo).port, close: () => new Promise<void>((r) => srv.close(() => r())) };
  };
  const cfg = loadConfig({ env: {}, flags: {} });
  const d = { config: { ...cfg, deadlines: { ...cfg.deadlines, probeTimeoutMs: 500, probeIntervalMs: 50 } }, now: Date.now } as unknown as EffectDrivers;
  const wait = (port: number) => ({ type: 'waitHealthy' as const, instance: 'a', spec: 'B', port, runtime: 'binary' as const });
  const withPath = (): DesiredApp => ({ ...docWith('a.example.com'), spec: { ...docWith('a.example.com').spec, health_check_path: '/healthz' } });

  it('resumed past its deadline, it still probes with the full probe timeout and passes a healthy app', async () => {
    const a = await app(200, 50);
    try {
      const fx = bindEffects(d, key, withPath);
      // The deadline passed a second ago (the operator was down): a 1 ms probe would call it unhealthy.
      const detail = await fx.waitHealthy({ ...input(wait(a.port)), deadlineAt: Date.now() - 1_000 });
      expect(detail).toMatch(/^healthy after 1 probe /);
    } finally {
      await a.close();
    }
  });

  it('resumed past its deadline, an unhealthy app fails within one probe window', async () => {
    const a = await app(500, 0);
    try {
      const fx = bindEffects(d, key, withPath);
      const t0 = Date.now();
      await expect(fx.waitHealthy({ ...input(wait(a.port)), deadlineAt: Date.now() - 1_000 })).rejects.toMatchObject({ code: 'E_HEALTH_TIMEOUT' });
      expect(Date.now() - t0).toBeLessThan(2_000);
    } finally {
      await a.close();
    }
  });
});

describe('drain effect', () => {
  const caddyWith = (inFlight: () => number): CaddyDriver =>
    ({ upstreamCounts: () => Promise.resolve([{ address: '127.0.0.1:4000', port: 4000, numRequests: inFlight(), fails: 0 }]) }) as unknown as CaddyDriver;
  const drain = { type: 'drain' as const, ports: [4000] };

  it('waits out the settle time after the route change even when nothing is in flight', async () => {
    // Caddy 2.6.2 still routes requests of the superseded config to the old upstream for a while after
    // a reload, and no longer counts them: stopping the old run at once made them 502s.
    const fx = bindEffects(drivers(caddyWith(() => 0), new KeyedMutex()), key, () => docWith('a.example.com'));
    const t0 = Date.now();
    expect(await fx.drain({ ...input(drain), deadlineAt: Date.now() + 30_000 })).toBe('drained');
    expect(Date.now() - t0).toBeGreaterThanOrEqual(DRAIN_SETTLE_MS - 5);
    expect(Date.now() - t0).toBeLessThan(DRAIN_SETTLE_MS + 1_000);
  });

  it('waits for requests in flight, and never past the drain deadline', async () => {
    let n = 3;
    const fx = bindEffects(drivers(caddyWith(() => (n > 0 ? n-- : 0)), new KeyedMutex()), key, () => docWith('a.example.com'));
    const t0 = Date.now();
    // In flight: 3, 2, 1, then none (one poll per 100 ms); the settle time is cut to the 600 ms deadline.
    expect(await fx.drain({ ...input(drain), deadlineAt: Date.now() + 600 })).toBe('drained');
    expect(Date.now() - t0).toBeGreaterThanOrEqual(300);
    expect(Date.now() - t0).toBeLessThan(1_000);
    const busy = bindEffects(drivers(caddyWith(() => 2), new KeyedMutex()), key, () => docWith('a.example.com'));
    expect(await busy.drain({ ...input(drain), deadlineAt: Date.now() + 150 })).toBe('drain deadline reached with 2 requests in flight');
  });
});
