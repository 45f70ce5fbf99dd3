/** The two status endpoints, the event stream and GET /v1/apps (with document errors and redaction). */
import { mkdir, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { Agent, fetch } from 'undici';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import type { AppKey } from '../../src/core/identity.ts';
import { serializeDesired, type DesiredApp } from '../../src/desired/document.ts';
import type { DeploymentStatus } from '../../src/records/status.ts';
import { AUTH, errorOf, instanceBinary, instanceDocker, json, KEY, makeApi, plainBinary, type TestApi } from './helpers.ts';

let t: TestApi;
// Our own connection pool, destroyed after each test, so no idle keep-alive socket delays app.close().
let agent: Agent;
const observedCalls: AppKey[] = [];
beforeEach(async () => {
  agent = new Agent();
  observedCalls.length = 0;
  t = await makeApi({
    observed: (k) => {
      observedCalls.push(k);
      return k.app === 17 ? { runs: [{ instance: 'i-101', state: 'running' }], route: { domain: 'shop.example.com', ports: [3001] } } : undefined;
    },
    sse: { heartbeatMs: 20 },
  });
  expect((await t.post('/v1/app/instance/binary/deploy', instanceBinary())).statusCode).toBe(202);
});
afterEach(async () => {
  await agent.destroy();
  await t.close();
});

const progress = {
  status: 'in_progress' as const,
  phase: 'waiting for i-102',
  steps: [{ name: 'start i-102 1.0.0 on :3002', status: 'succeeded' as const, started_at: '2025-01-01T00:00:00.000Z', finished_at: '2025-01-01T00:00:01.000Z', detail: null }],
  instances: [{ instance_id: 'i-102', slot: 'green', port: 3002, version: '1.0.0', state: 'running' as const, healthy: true }],
  traffic: [{ instance_id: 'i-102', slot: 'green', port: 3002, weight: 100 }],
};

describe('status endpoints', () => {
  it('instance status: the full document with slots and traffic', async () => {
    t.records.update('101', progress);
    const r = await t.get('/v1/app/instance/deploy/101/status');
    expect(r.statusCode).toBe(200);
    const s = json<DeploymentStatus>(r);
    expect(s).toMatchObject({ deployment_id: '101', status: 'in_progress', phase: 'waiting for i-102', kind: 'binary', strategy: 'blue_green', target_version: '1.0.0' });
    expect(s.steps).toEqual(progress.steps);
    expect(s.instances).toEqual(progress.instances);
    expect(s.traffic).toEqual(progress.traffic);
    expect(Object.keys(s).sort()).toEqual(
      ['action', 'app_id', 'deployment_id', 'environment_id', 'error', 'finished_at', 'instances', 'kind', 'phase', 'started_at', 'status', 'steps', 'strategy', 'superseded_by', 'target_version', 'team_id', 'traffic', 'updated_at'].sort(),
    );
  });

  it('app status: the same document without slots and traffic; finished deployments carry finished_at and error', async () => {
    t.records.update('101', progress);
    t.records.update('101', { status: 'failed', error: { code: 'E_UNHEALTHY', message: 'i-102 never became healthy' } });
    const r = await t.get('/v1/app/deploy/101/status');
    expect(r.statusCode).toBe(200);
    const s = json<DeploymentStatus>(r);
    expect(s).not.toHaveProperty('traffic');
    expect(s.instances).toEqual([{ instance_id: 'i-102', port: 3002, version: '1.0.0', state: 'running', healthy: true }]);
    expect(s.status).toBe('failed');
    expect(s.error).toEqual({ code: 'E_UNHEALTHY', message: 'i-102 never became healthy' });
    expect(s.finished_at).not.toBeNull();
  });

  it('unknown ids are 404 with the error body', async () => {
    for (const url of ['/v1/app/deploy/nope/status', '/v1/app/deploy/999/status', '/v1/app/instance/deploy/999/status']) {
      const r = await t.get(url);
      expect(r.statusCode, url).toBe(404);
      expect(errorOf(r).code).toBe('E_NOT_FOUND');
    }
    // The instance endpoint takes an int32: nothing else can name a deployment.
    for (const id of ['abc', '0', '-1', '2147483648', '1.5', '01']) {
      const r = await t.get(`/v1/app/instance/deploy/${id}/status`);
      expect(r.statusCode, id).toBe(404);
    }
  });

  it('operator ids are found by the string endpoint', async () => {
    const r = await t.post('/v1/app/restart', { team_id: 'acme', environment_id: 2, app_id: 17, domain: 'shop.example.com', callback_url: 'https://cb.example.com/', instance_id: 'i-101' });
    const id = json<{ deployment_id: string }>(r).deployment_id;
    expect((await t.get(`/v1/app/deploy/${id}/status`)).statusCode).toBe(200);
  });
});

/** Parse a text/event-stream body into its events. */
function parseSse(text: string): Array<{ id?: string; event?: string; data?: string }> {
  return text
    .split('\n\n')
    .filter((b) => b.trim() !== '' && !b.startsWith(':') && !b.startsWith('retry:'))
    .map((block) => {
      const e: { id?: string; event?: string; data?: string } = {};
      for (const line of block.split('\n')) {
        const i = line.indexOf(': ');
        if (i < 0) continue;
        const k = line.slice(0, i) as 'id' | 'event' | 'data';
        e[k] = line.slice(i + 2);
      }
      return e;
    });
}

describe('event stream', () => {
  it('sends the current state, then every change, and ends after the terminal status', async () => {
    const address = await t.app.listen({ host: '127.0.0.1', port: 0 });
    const res = await fetch(`${address}/v1/app/deploy/101/events`, { headers: AUTH, signal: AbortSignal.timeout(10_000), dispatcher: agent });
    expect(res.status).toBe(200);
    expect(res.headers.get('content-type')).toMatch(/^text\/event-stream/);
    const reader = (res.body as ReadableStream<Uint8Array>).getReader();
    const dec = new TextDecoder();
    let text = '';
    const readUntil = async (pred: () => boolean): Promise<void> => {
      while (!pred()) {
        const { value, done } = await reader.read();
        if (done) return;
        text += dec.decode(value);
      }
    };
    await readUntil(() => parseSse(text).length >= 1);
    t.records.update('101', progress);
    await readUntil(() => parseSse(text).length >= 2);
    // Keep-alive comments arrive while nothing changes.
    await readUntil(() => text.includes(': keep-alive'));
    t.records.update('101', { status: 'succeeded', phase: 'done' });
    await readUntil(() => false); // the server ends the stream
    const events = parseSse(text);
    expect(events.map((e) => e.event)).toEqual(['status', 'status', 'status']);
    const docs = events.map((e) => JSON.parse(e.data ?? '') as DeploymentStatus);
    expect(docs.map((d) => d.status)).toEqual(['pending', 'in_progress', 'succeeded']);
    const ids = events.map((e) => Number(e.id));
    expect(ids).toEqual([...ids].sort((a, b) => a - b));
    expect(new Set(ids).size).toBe(3);
    expect(t.records.listenerCount('101')).toBe(0);
  });

  it('a terminal deployment streams one event and ends; unknown ids are 404; a closed client unsubscribes', async () => {
    t.records.update('101', { status: 'succeeded' });
    const r = await t.app.inject({ method: 'GET', url: '/v1/app/deploy/101/events', headers: AUTH });
    expect(r.statusCode).toBe(200);
    expect(parseSse(r.body).map((e) => (JSON.parse(e.data ?? '') as DeploymentStatus).status)).toEqual(['succeeded']);
    expect((await t.get('/v1/app/deploy/nope/events')).statusCode).toBe(404);

    await t.post('/v1/app/instance/binary/deploy', instanceBinary({ deployment_id: 102, target_version: '2' }));
    const address = await t.app.listen({ host: '127.0.0.1', port: 0 });
    const ac = new AbortController();
    const res = await fetch(`${address}/v1/app/deploy/102/events`, { headers: AUTH, signal: ac.signal, dispatcher: agent });
    const reader = (res.body as ReadableStream<Uint8Array>).getReader();
    await reader.read();
    expect(t.records.listenerCount('102')).toBe(1);
    ac.abort();
    await expect.poll(() => t.records.listenerCount('102'), { timeout: 5000 }).toBe(0);
  });

  it('closing the server ends open streams', async () => {
    const address = await t.app.listen({ host: '127.0.0.1', port: 0 });
    const res = await fetch(`${address}/v1/app/deploy/101/events`, { headers: AUTH, dispatcher: agent });
    const reader = (res.body as ReadableStream<Uint8Array>).getReader();
    await reader.read();
    await t.app.close();
    for (;;) if ((await reader.read()).done) break;
    expect(t.records.listenerCount('101')).toBe(0);
  });
});

describe('GET /v1/apps', () => {
  it('lists each app: redacted desired document, observed state, last deployment', async () => {
    await t.post('/v1/app/instance/docker/deploy', instanceDocker({ app_id: 18, deployment_id: 5, domain: 'other.example.com', slots: { a: { instance_id: 'x1', port: 4001 }, b: { instance_id: 'x2', port: 4002 } } }));
    const r = await t.get('/v1/apps');
    expect(r.statusCode).toBe(200);
    const body = json<{ apps: Array<{ app_id: number; desired: DesiredApp; observed: unknown; last_deployment: DeploymentStatus; document_error: unknown }>; errors: unknown[] }>(r);
    expect(body.apps.map((a) => a.app_id)).toEqual([17, 18]);
    const [a17, a18] = body.apps;
    expect(a17?.desired.spec.version).toBe('1.0.0');
    expect(a17?.desired.spec.env.DATABASE_URL).toMatch(/^<redacted:/);
    expect(a17?.observed).toEqual({ runs: [{ instance: 'i-101', state: 'running' }], route: { domain: 'shop.example.com', ports: [3001] } });
    expect(a17?.last_deployment.deployment_id).toBe('101');
    expect(a17?.document_error).toBeNull();
    expect(a18?.observed).toBeNull();
    expect(a18?.desired.spec.docker?.credentials?.password).toMatch(/^<redacted:/);
    expect(body.errors).toEqual([]);
    expect(observedCalls).toHaveLength(2);
    // No secret in any answer.
    for (const secret of ['postgres://db/shop', 'hunter2-registry-secret', 'line1\nline2', '$HOME']) expect(r.body).not.toContain(JSON.stringify(secret).slice(1, -1));
  });

  it('an invalid file dropped in is reported for its app and ignored; the last valid version stays in force', async () => {
    const file = path.join(t.dir, 'desired/acme/2/17.yaml');
    await writeFile(file, 'apiVersion: crate-operator/v1\nkind: App\nspec: [not, valid\n');
    expect(await t.store.reloadFile(file)).toBe('invalid');
    let r = await t.get('/v1/apps');
    type Listing = { apps: Array<{ desired: DesiredApp; document_error: { path: string; error: string } }> };
    let app = json<Listing>(r).apps[0];
    expect(app?.document_error.path).toBe(file);
    expect(app?.document_error.error).toMatch(/YAML/);
    expect(app?.desired.spec.version).toBe('1.0.0');
    expect(t.store.get(KEY)?.spec.version).toBe('1.0.0');

    // Valid YAML, invalid document: also reported, also ignored.
    await writeFile(file, serializeDesired({ ...(t.store.get(KEY) as DesiredApp), spec: { ...(t.store.get(KEY) as DesiredApp).spec, domain: 'UPPER.example.com' } }));
    expect(await t.store.reloadFile(file)).toBe('invalid');
    r = await t.get('/v1/apps');
    app = json<Listing>(r).apps[0];
    expect(app?.document_error.error).toMatch(/\/spec\/domain/);
    expect(app?.desired.spec.domain).toBe('shop.example.com');

    // A file for an app with no valid version at all is listed with its error.
    const stray = path.join(t.dir, 'desired/acme/2/99.yaml');
    await writeFile(stray, 'nonsense: [');
    await t.store.reloadFile(stray);
    // A file outside the layout goes to the top-level errors.
    await mkdir(path.join(t.dir, 'desired/misc'), { recursive: true });
    const misplaced = path.join(t.dir, 'desired/misc/app.yaml');
    await writeFile(misplaced, 'x: 1');
    await t.store.reloadFile(misplaced);
    r = await t.get('/v1/apps');
    const all = json<{ apps: Array<{ app_id: number; desired: unknown; document_error: unknown }>; errors: Array<{ path: string }> }>(r);
    expect(all.apps.find((a) => a.app_id === 99)).toMatchObject({ desired: null, document_error: { path: stray } });
    expect(all.errors.map((e) => e.path)).toEqual([misplaced]);

    // A deploy through the API replaces the broken file and clears the error.
    expect((await t.post('/v1/app/instance/binary/deploy', instanceBinary({ deployment_id: 102, target_version: '1.0.1' }))).statusCode).toBe(202);
    expect(t.store.errorFor(KEY)).toBeUndefined();
  });

  it('an app being deleted stays listed while its deletion is in flight', async () => {
    await t.post('/v1/app/delete', { team_id: 'acme', environment_id: 2, app_id: 17, domain: 'shop.example.com', callback_url: 'https://cb.example.com/', instance_ids: ['i-101', 'i-102'] });
    const body = json<{ apps: Array<{ app_id: number; desired: unknown; last_deployment: DeploymentStatus }> }>(await t.get('/v1/apps'));
    expect(body.apps).toHaveLength(1);
    expect(body.apps[0]).toMatchObject({ app_id: 17, desired: null, last_deployment: { action: 'delete', status: 'pending' } });
  });
});

describe('secrets', () => {
  it('env values and registry passwords never appear in responses or records', async () => {
    const secrets = ['S3CR3T-env-value', 'P4SSW0RD-registry'];
    const bodies: string[] = [];
    const rec = async (p: Promise<{ body: string }>): Promise<void> => {
      bodies.push((await p).body);
    };
    await rec(t.post('/v1/app/instance/docker/deploy', instanceDocker({ deployment_id: 7, env_vars: { TOKEN: secrets[0] }, registry_credentials: { username: 'u', password: secrets[1] } })));
    await rec(t.post('/v1/app/instance/docker/deploy?dry_run=true', instanceDocker({ deployment_id: 8, env_vars: { TOKEN: `${secrets[0]}2` }, registry_credentials: { username: 'u', password: `${secrets[1]}2` } })));
    await rec(t.post('/v1/app/instance/docker/deploy', instanceDocker({ deployment_id: 7, env_vars: { TOKEN: 'different' } })));
    await rec(t.post('/v1/app/binary/deploy', plainBinary({ deployment_id: 9, app_id: 30, domain: 'z.example.com', env_vars: { X: secrets[0] }, instances: { w: { port: 6000 } }, asset_url: 'ftp://bad' })));
    await rec(t.get('/v1/apps'));
    await rec(t.get('/v1/app/deploy/7/status'));
    await rec(t.get('/v1/app/instance/deploy/7/status'));
    const all = bodies.join('\n') + t.records.dump();
    for (const s of secrets) expect(all).not.toContain(s);
  });
});
