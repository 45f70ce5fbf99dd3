/**
 * Faults at the edges a deployment talks to, against a real operator:
 *
 * - Asset server hanging (accepts, never answers) or trickling (a byte at a time): the deployment
 *   fails at the release deadline with E_ASSET_TIMEOUT and the serving version keeps serving; a
 *   newer deployment supersedes one stuck in its download at once.
 * - Health endpoint flapping (up and down every 250 ms): the deployment succeeds on a healthy
 *   answer, as documented, and afterwards the flapping causes no route change and no restart over
 *   several resyncs; a version that is never healthy is rolled back (E_HEALTH_TIMEOUT) and never
 *   receives traffic.
 * - Callback receiver down (connection refused), then answering 503 with Retry-After, then up: every
 *   event of every deployment arrives once up, in order per deployment, each event id once, the final
 *   one last, each signed. CRATE_FAULT_CALLBACK_DOWN_MS sets the outage (soak: minutes).
 */
import http from 'node:http';
import type { Socket } from 'node:net';
import path from 'node:path';
import { writeFile } from 'node:fs/promises';
import { create as createTar } from 'tar';
import { describe, expect, it } from 'vitest';
import { routeId } from '../../src/core/identity.ts';
import { verifySignature } from '../../src/drivers/callbacks.ts';
import { caddyApi, cleanupAfter, freePort, getTestHost, systemctlUser, tempDir, waitFor } from '../harness/index.ts';
import { e2eDeadlines, startTestOperator, type TestOperator } from '../e2e/operator.ts';
import { report } from './report.ts';

const DOWN_MS = Number(process.env.CRATE_FAULT_CALLBACK_DOWN_MS ?? 4_000);

function body(t: TestOperator, app: number, id: number, version: string, asset: string, ports: [number, number], callback = 'http://127.0.0.1:9/cb'): Record<string, unknown> {
  return {
    team_id: t.team,
    environment_id: 1,
    app_id: app,
    deployment_id: id,
    deployment_strategy: 'blue_green',
    domain: `a${app}.${t.team}.io.test`,
    asset_url: asset,
    callback_url: callback,
    env_vars: {},
    health_check_path: '/healthz',
    target_version: version,
    slots: { blue: { instance_id: `b${app}`, port: ports[0] }, green: { instance_id: `g${app}`, port: ports[1] } },
  };
}

async function listen(server: http.Server, port = 0): Promise<number> {
  const sockets = new Set<Socket>();
  server.on('connection', (s) => {
    sockets.add(s);
    s.on('close', () => sockets.delete(s));
  });
  await new Promise<void>((resolve) => server.listen(port, '127.0.0.1', () => resolve()));
  cleanupAfter(
    () =>
      new Promise<void>((resolve) => {
        for (const s of sockets) s.destroy();
        server.close(() => resolve());
      }),
  );
  return (server.address() as { port: number }).port;
}

const code = (s: Record<string, unknown>): string | undefined => (s.error as { code?: string } | null)?.code;

describe('faults at the edges', () => {
  it('asset server hanging or trickling: E_ASSET_TIMEOUT at the deadline, old version serves, supersede is immediate', async () => {
    const host = getTestHost();
    const hang = http.createServer(() => undefined);
    const trickle = http.createServer((_req, res) => {
      res.writeHead(200, { 'content-type': 'application/gzip', 'content-length': String(1024 * 1024) });
      const timer = setInterval(() => res.write(Buffer.alloc(16, 0x1f)), 200);
      res.on('close', () => clearInterval(timer));
    });
    const [hangPort, tricklePort] = [await listen(hang), await listen(trickle)];
    const t = await startTestOperator({ deadlines: { ...e2eDeadlines, fetchMs: 3_000 } });
    const ports: [number, number] = [await freePort(), await freePort()];
    expect((await t.api('POST', '/v1/app/instance/binary/deploy', body(t, 1, 1, 'v1', `${host.assets.baseUrl}/app-v1.tar.gz`, ports))).status).toBe(202);
    expect((await t.settle(1)).status).toBe('succeeded');

    const timings: Record<string, number> = {};
    for (const [id, url] of [[2, `http://127.0.0.1:${hangPort}/app.tgz`], [3, `http://127.0.0.1:${tricklePort}/app.tgz`]] as const) {
      const t0 = Date.now();
      expect((await t.api('POST', '/v1/app/instance/binary/deploy', body(t, 1, id, `v${id}`, url, ports))).status).toBe(202);
      const s = await t.settle(id, 30_000);
      timings[id === 2 ? 'hanging_ms' : 'trickling_ms'] = Date.now() - t0;
      expect(['failed', 'rolled_back']).toContain(s.status);
      expect(code(s), JSON.stringify(s.error)).toBe('E_ASSET_TIMEOUT');
      const r = await t.viaCaddy(`a1.${t.team}.io.test`);
      expect(JSON.parse(r.text)).toMatchObject({ version: 'v1' });
    }
    expect(timings.hanging_ms).toBeLessThan(15_000);

    // Stuck in a download, then superseded by a good deployment: it does not wait for the deadline.
    const tSup = Date.now();
    expect((await t.api('POST', '/v1/app/instance/binary/deploy', body(t, 1, 4, 'v4', `http://127.0.0.1:${hangPort}/app.tgz`, ports))).status).toBe(202);
    await waitFor('deployment 4 downloading', async () => String((await t.api('GET', '/v1/app/deploy/4/status')).body.phase).startsWith('fetch'), 10_000);
    expect((await t.api('POST', '/v1/app/instance/binary/deploy', body(t, 1, 5, 'v2', `${host.assets.baseUrl}/app-v2.tar.gz`, ports))).status).toBe(202);
    expect((await t.settle(4, 20_000)).status).toBe('superseded');
    timings.superseded_ms = Date.now() - tSup;
    expect((await t.settle(5, 30_000)).status).toBe('succeeded');
    expect(JSON.parse((await t.viaCaddy(`a1.${t.team}.io.test`)).text)).toMatchObject({ version: 'v2' });
    report('fault-assets', timings);
  }, 90_000);

  it('health endpoint flapping: healthy on a good answer, then no route change and no restart; never healthy is rolled back', async () => {
    const host = getTestHost();
    const t = await startTestOperator();
    // An app whose /healthz is up and down by turns.
    const stage = await tempDir('flap');
    await writeFile(
      path.join(stage, 'flap.mjs'),
      `import http from 'node:http';
const up = () => Math.floor(Date.now() / 250) % 2 === 0;
http.createServer((req, res) => {
  if (req.url === '/healthz') { res.writeHead(up() ? 200 : 503); res.end(up() ? 'ok' : 'down'); return; }
  res.writeHead(200, { 'content-type': 'application/json' });
  res.end(JSON.stringify({ version: 'flap', pid: process.pid }));
}).listen(Number(process.env.PORT), '127.0.0.1');
process.on('SIGTERM', () => process.exit(0));
`,
    );
    await writeFile(path.join(stage, 'Procfile'), 'web: node flap.mjs\n');
    await createTar({ gzip: true, cwd: stage, file: path.join(host.assets.filesDir, `${t.team}-flap.tar.gz`), portable: true }, ['Procfile', 'flap.mjs']);
    const ports: [number, number] = [await freePort(), await freePort()];
    const domain = `a1.${t.team}.io.test`;
    expect((await t.api('POST', '/v1/app/instance/binary/deploy', body(t, 1, 1, 'v1', `${host.assets.baseUrl}/app-v1.tar.gz`, ports))).status).toBe(202);
    expect((await t.settle(1)).status).toBe('succeeded');
    expect((await t.api('POST', '/v1/app/instance/binary/deploy', body(t, 1, 2, 'flap', `${host.assets.baseUrl}/files/${t.team}-flap.tar.gz`, ports))).status).toBe(202);
    const s2 = await t.settle(2, 30_000);
    expect(s2.status, JSON.stringify(s2.error)).toBe('succeeded');
    expect(JSON.parse((await t.viaCaddy(domain)).text)).toMatchObject({ version: 'flap' });

    // Several resyncs of flapping: one route, the same process.
    const unitOf = async (): Promise<string> => {
      const units = JSON.parse(String((await systemctlUser(['list-units', '--all', '--output=json', `crate-${t.team}:1:1:*`])).stdout)) as { unit: string; active: string }[];
      return units.filter((u) => u.active === 'active').map((u) => u.unit).join();
    };
    const unit = await unitOf();
    const pid = String((await systemctlUser(['show', '-p', 'MainPID', '--value', unit])).stdout).trim();
    const routes = new Set<string>();
    const until = Date.now() + 3 * t.config.resyncMs + 500;
    while (Date.now() < until) {
      routes.add(JSON.stringify((await caddyApi('GET', `/id/${routeId({ team: t.team, env: 1, app: 1 })}`)).body));
      await new Promise((r) => setTimeout(r, 100));
    }
    expect(routes.size).toBe(1);
    expect(await unitOf()).toBe(unit);
    expect(String((await systemctlUser(['show', '-p', 'MainPID', '--value', unit])).stdout).trim()).toBe(pid);

    // Never healthy: rolled back, and no request ever reaches it.
    expect((await t.api('POST', '/v1/app/instance/binary/deploy', body(t, 1, 3, 'v3', `${host.assets.baseUrl}/app-v3-broken.tar.gz`, ports))).status).toBe(202);
    const seen = new Set<string>();
    for (;;) {
      const s = (await t.api('GET', '/v1/app/deploy/3/status')).body.status as string;
      seen.add(String((JSON.parse((await t.viaCaddy(domain)).text) as { version: string }).version));
      if (s !== 'pending' && s !== 'in_progress') break;
      await new Promise((r) => setTimeout(r, 100));
    }
    const s3 = await t.settle(3);
    expect(s3.status).toBe('rolled_back');
    expect(code(s3)).toBe('E_HEALTH_TIMEOUT');
    expect([...seen]).toEqual(['flap']);
    report('fault-health', { flapping_route_configs: routes.size, served_during_rollback: [...seen] });
  }, 90_000);

  it('callback receiver down, then 503, then up: every event delivered once, in order, final last, signed', async () => {
    const host = getTestHost();
    const secret = 'cb-secret-0123456789';
    const t = await startTestOperator({ callbackSecret: secret });
    const cbPort = await freePort();
    const ports: [number, number] = [await freePort(), await freePort()];
    const ports2: [number, number] = [await freePort(), await freePort()];
    const cb = `http://127.0.0.1:${cbPort}/hook`;
    const t0 = Date.now();
    expect((await t.api('POST', '/v1/app/instance/binary/deploy', body(t, 1, 1, 'v1', `${host.assets.baseUrl}/app-v1.tar.gz`, ports, cb))).status).toBe(202);
    expect((await t.api('POST', '/v1/app/instance/binary/deploy', body(t, 2, 2, 'v1', `${host.assets.baseUrl}/app-v1.tar.gz`, ports2, cb))).status).toBe(202);
    expect((await t.settle(1)).status).toBe('succeeded');
    expect((await t.settle(2)).status).toBe('succeeded');
    expect((await t.api('POST', '/v1/app/instance/binary/deploy', body(t, 1, 3, 'v3', `${host.assets.baseUrl}/app-v3-broken.tar.gz`, ports, cb))).status).toBe(202);
    expect((await t.settle(3)).status).toBe('rolled_back');
    await waitFor('failed attempts', () => Promise.resolve(t.op.records.callbacksFor('1').some((c) => c.attempts > 0 && c.last_error !== null)), 20_000);
    await new Promise((r) => setTimeout(r, Math.max(0, DOWN_MS - (Date.now() - t0))));

    // Answering, but 503 with Retry-After, for a while.
    const received: Array<{ id: string; deployment: string; status: string; signed: boolean }> = [];
    let phase: 'busy' | 'up' = 'busy';
    let refusedWith503 = 0;
    const receiver = http.createServer((req, res) => {
      let raw = '';
      req.on('data', (c: Buffer) => (raw += c.toString('utf8')));
      req.on('end', () => {
        if (phase === 'busy') {
          refusedWith503 += 1;
          res.writeHead(503, { 'retry-after': '1' }).end();
          return;
        }
        const doc = JSON.parse(raw) as { deployment_id: string; status: string };
        const sig = String(req.headers['x-crate-signature'] ?? '');
        received.push({ id: String(req.headers['x-crate-event-id']), deployment: doc.deployment_id, status: doc.status, signed: verifySignature(secret, sig, raw, Math.floor(Date.now() / 1000)) });
        res.writeHead(204).end();
      });
    });
    await listen(receiver, cbPort);
    await waitFor('a 503 answered', () => Promise.resolve(refusedWith503 > 0), 5 * 60_000 + 30_000, 100);
    phase = 'up';
    const tUp = Date.now();
    await waitFor('every callback delivered', () => Promise.resolve(['1', '2', '3'].every((id) => t.op.records.callbacksFor(id).every((c) => c.delivered_at !== null))), 6 * 60_000, 200);
    const deliveredMs = Date.now() - tUp;

    const ids = received.map((r) => r.id);
    expect(new Set(ids).size).toBe(ids.length);
    expect(received.every((r) => r.signed)).toBe(true);
    for (const id of ['1', '2', '3']) {
      const mine = received.filter((r) => r.deployment === id);
      const stored = t.op.records.callbacksFor(id).map((c) => c.event_id);
      expect(mine.map((r) => r.id).sort()).toEqual([...stored].sort());
      expect(mine.filter((r) => r.id === `${id}:final`)).toHaveLength(1);
      expect(mine[mine.length - 1]?.id, `deployment ${id}: the final event comes last`).toBe(`${id}:final`);
      expect(mine[mine.length - 1]?.status).toBe(id === '3' ? 'rolled_back' : 'succeeded');
    }
    report('fault-callbacks', { down_ms: DOWN_MS, refused_with_503: refusedWith503, delivered: received.length, delivered_after_up_ms: deliveredMs, duplicates: ids.length - new Set(ids).size });
  }, Math.max(90_000, DOWN_MS + 8 * 60_000));
});
