// Benchmark of traffic switches through a private Caddy with the Caddy driver:
//   npx tsx bench/caddy-switch.ts [switches] [background-routes]     (default: 50 0)
// Two local upstreams (blue, green) answer instantly. While three kinds of clients send GETs through
// Caddy's HTTP port, the driver switches the app's upstreams `switches` times (setUpstreams: one
// config change each, 100 ms apart). Reported per client kind: requests, non-2xx answers, transport
// errors (connection resets), errors per config change:
//   - retrying keep-alive: keep-alive connections, one retry of the idempotent GET on a reset (as browsers do)
//   - raw keep-alive: keep-alive connections, no retry
//   - new connection: a fresh connection per request
// Plus the driver's latencies: setUpstreams (read + write), observe (one GET), with the route count.
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { Agent, request } from 'undici';
import { hostCallCounts } from '../src/core/hostcalls.ts';
import { createCaddyDriver } from '../src/drivers/caddy.ts';
import { startCaddy } from '../src/host/caddy.ts';
import { freePort } from '../src/host/process.ts';
import { createWorkspace } from '../src/host/workspace.ts';
import { createCaddyObserver } from '../src/observers/caddy.ts';

const [switchesArg, backgroundArg] = process.argv.slice(2).map(Number);
const SWITCHES = Number.isInteger(switchesArg) && (switchesArg as number) > 0 ? (switchesArg as number) : 50;
const BACKGROUND = Number.isInteger(backgroundArg) && (backgroundArg as number) >= 0 ? (backgroundArg as number) : 0;

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.floor(s.length / 2)] ?? NaN;
}

async function upstream(label: string): Promise<{ port: number; close(): Promise<void> }> {
  const server = http.createServer((_req, res) => res.end(label));
  server.keepAliveTimeout = 60_000;
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', () => resolve()));
  return {
    port: (server.address() as AddressInfo).port,
    close: async () => {
      server.closeAllConnections();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}

interface Tally {
  requests: number;
  non2xx: number;
  errors: number;
  retried: number;
}

/** One client loop until `stop()`; `mode` as in the header. */
function client(port: number, domain: string, mode: 'retry' | 'raw' | 'fresh', workers: number): { tally: Tally; done: Promise<void>; stop(): void } {
  const tally: Tally = { requests: 0, non2xx: 0, errors: 0, retried: 0 };
  const agent = new Agent({ keepAliveTimeout: 60_000, connections: workers });
  let running = true;
  const once = async (): Promise<number> => {
    const r = await request(`http://127.0.0.1:${port}/`, { dispatcher: agent, headers: { host: domain }, reset: mode === 'fresh', headersTimeout: 10_000, bodyTimeout: 10_000 });
    await r.body.dump();
    return r.statusCode;
  };
  const loop = async (): Promise<void> => {
    while (running) {
      tally.requests += 1;
      try {
        let status: number;
        try {
          status = await once();
        } catch (err) {
          if (mode !== 'retry') throw err;
          tally.retried += 1;
          status = await once();
        }
        if (status < 200 || status > 299) tally.non2xx += 1;
      } catch {
        tally.errors += 1;
      }
    }
  };
  const done = Promise.all(Array.from({ length: workers }, loop)).then(() => agent.close());
  return {
    tally,
    done,
    stop: () => {
      running = false;
    },
  };
}

const ws = await createWorkspace();
try {
  const caddy = await startCaddy({ dir: await ws.dir('caddy'), serverName: 'bench', gracePeriod: '5s' });
  try {
    const listen = await freePort();
    const drv = createCaddyDriver({ admin: caddy.adminUrl, server: 'crate', serverSettings: { listen: [`127.0.0.1:${listen}`], gracePeriodMs: 5_000, disableAutomaticHttps: true } });
    const obs = createCaddyObserver(caddy.adminUrl, 'crate');
    const [blue, green] = [await upstream('blue'), await upstream('green')];
    const key = { team: 'bench', env: 1, app: 1 };
    const domain = 'app.bench.test';
    for (let i = 0; i < BACKGROUND; i += 1) await drv.upsertRoute({ team: 'bg', env: 1, app: i + 1 }, `bg${i + 1}.bench.test`, [20000 + (i % 1000)]);
    await drv.upsertRoute(key, domain, [blue.port]);
    const idleMs: number[] = [];
    for (let i = 0; i < 10; i += 1) {
      const t = performance.now();
      await drv.setUpstreams(key, [i % 2 === 0 ? green.port : blue.port]);
      idleMs.push(performance.now() - t);
    }
    await drv.setUpstreams(key, [blue.port]);

    const clients = { 'retrying keep-alive': client(listen, domain, 'retry', 4), 'raw keep-alive': client(listen, domain, 'raw', 4), 'new connection': client(listen, domain, 'fresh', 2) };
    await new Promise((r) => setTimeout(r, 500));
    const switchMs: number[] = [];
    const before = hostCallCounts().caddy;
    for (let i = 0; i < SWITCHES; i += 1) {
      const t = performance.now();
      await drv.setUpstreams(key, [i % 2 === 0 ? green.port : blue.port]);
      switchMs.push(performance.now() - t);
      await new Promise((r) => setTimeout(r, 100));
    }
    const caddyCalls = hostCallCounts().caddy - before;
    await new Promise((r) => setTimeout(r, 500));
    for (const c of Object.values(clients)) c.stop();
    await Promise.all(Object.values(clients).map((c) => c.done));

    const observeMs: number[] = [];
    for (let i = 0; i < 10; i += 1) {
      const t = performance.now();
      const o = await obs.observe();
      observeMs.push(performance.now() - t);
      if (o.unavailable) throw new Error(o.message);
    }

    console.log(`Caddy 2.6.2, ${BACKGROUND + 1} routes, ${SWITCHES} traffic switches (one config change each), 100 ms apart`);
    console.log(`setUpstreams without traffic: median ${median(idleMs).toFixed(1)} ms`);
    console.log(`setUpstreams under traffic: median ${median(switchMs).toFixed(1)} ms, max ${Math.max(...switchMs).toFixed(1)} ms; admin calls ${caddyCalls} (${(caddyCalls / SWITCHES).toFixed(2)} per switch)`);
    console.log(`observe (1 GET): median ${median(observeMs).toFixed(1)} ms`);
    console.log('client                 requests  non-2xx  errors  errors/change  retried');
    for (const [name, c] of Object.entries(clients)) {
      const t = c.tally;
      console.log(`${name.padEnd(22)} ${String(t.requests).padStart(8)} ${String(t.non2xx).padStart(8)} ${String(t.errors).padStart(7)} ${(t.errors / SWITCHES).toFixed(2).padStart(14)} ${String(t.retried).padStart(8)}`);
    }
    await drv.close();
    await obs.close();
    await blue.close();
    await green.close();
  } finally {
    await caddy.stop();
  }
} finally {
  await ws.remove();
}
