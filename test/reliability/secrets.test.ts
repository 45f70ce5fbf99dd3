/**
 * Secrets: a sentinel in env values, registry passwords (a real private registry with htpasswd) and
 * the callback signing secret, across ~20 requests and deployments on a real operator (binary and
 * Docker; succeeded, rolled back, failed: missing asset, wrong registry password, missing tag; stop,
 * start, restart, delete; dry runs, 400s and a 409 carrying it). The sentinel (and its base64 forms,
 * e.g. an X-Registry-Auth header) appears 0 times in: every log line (pino at trace, with the
 * operator's redaction), every callback (body and headers), every API answer (errors, status, event
 * streams, /v1/apps, /metrics), the records database (file and WAL bytes). It exists only in the
 * desired documents, their last-good copies and the env files. Run with umask 0: state files are
 * 0600 and folders 0700 by the modes the operator asks for, env files 0600 in 0700 folders.
 */
import { randomBytes } from 'node:crypto';
import http from 'node:http';
import { readdir, readFile, stat } from 'node:fs/promises';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { registryAuthHeader } from '../../src/drivers/docker-spec.ts';
import { createLogger } from '../../src/operator.ts';
import { cleanupAfter, dockerApi, freePort, getTestHost } from '../harness/index.ts';
import { startTestOperator, waitFor } from '../e2e/operator.ts';
import { startRegistry } from './registry.ts';
import { report } from './report.ts';

const SENTINEL = `snt${randomBytes(6).toString('hex')}`;

interface Captured {
  what: string;
  text: string;
}

describe('secrets never leave the documents and env files', () => {
  it('a sentinel in env values, registry passwords and the callback secret is nowhere else', async () => {
    const host = getTestHost();
    const oldUmask = process.umask(0);
    cleanupAfter(() => process.umask(oldUmask));
    const password = `pw-${SENTINEL}`;
    const registry = await startRegistry('crate', password);
    const repo = await registry.push(host.docker.images.v1, `crate/${SENTINEL.slice(0, 3)}-${randomBytes(3).toString('hex')}`, 'v1');
    await registry.push(host.docker.images.v2, repo.slice(registry.addr.length + 1), 'v2');
    // Pulled images are removed after the containers (cleanups run in reverse order).
    cleanupAfter(async () => {
      for (const tag of ['v1', 'v2']) await dockerApi('DELETE', `/images/${encodeURIComponent(`${repo}:${tag}`)}?force=true`);
    });

    const callbacks: Captured[] = [];
    const receiver = http.createServer((req, res) => {
      let body = '';
      req.on('data', (c: Buffer) => (body += c.toString('utf8')));
      req.on('end', () => {
        callbacks.push({ what: `callback ${req.url ?? ''}`, text: `${JSON.stringify(req.headers)}\n${body}` });
        res.writeHead(200).end();
      });
    });
    const cbPort = await freePort();
    await new Promise<void>((resolve) => receiver.listen(cbPort, '127.0.0.1', () => resolve()));
    cleanupAfter(() => new Promise<void>((resolve) => receiver.close(() => resolve())));

    const logs: string[] = [];
    const level = process.env.CRATE_LOG_LEVEL;
    process.env.CRATE_LOG_LEVEL = 'trace';
    const logger = createLogger({ write: (line: string) => void logs.push(line) });
    if (level === undefined) delete process.env.CRATE_LOG_LEVEL;
    else process.env.CRATE_LOG_LEVEL = level;
    const t = await startTestOperator({ callbackSecret: `cbs-${SENTINEL}` }, { logger });

    const answers: Captured[] = [];
    const call = async (method: 'GET' | 'POST', url: string, body?: unknown): Promise<{ status: number; json: Record<string, unknown> }> => {
      const r = await t.op.app.inject({ method, url, headers: { authorization: 'Bearer test-token-0123456789abcdef', 'content-type': 'application/json' }, ...(body === undefined ? {} : { payload: typeof body === 'string' ? body : JSON.stringify(body) }) });
      answers.push({ what: `${method} ${url} → ${r.statusCode}`, text: `${JSON.stringify(r.headers)}\n${r.body}` });
      return { status: r.statusCode, json: r.body.startsWith('{') ? r.json<Record<string, unknown>>() : {} };
    };

    const env = { API_KEY: SENTINEL, WRAPPED: `x${SENTINEL}y`, MULTI: `line\n${SENTINEL}\n`, QUOTED: `"${SENTINEL}" $${SENTINEL}` };
    const cb = (id: number | string): string => `http://127.0.0.1:${cbPort}/cb/${id}`;
    const ports = await Promise.all(Array.from({ length: 10 }, () => freePort()));
    const common = (app: number): Record<string, unknown> => ({ team_id: t.team, environment_id: 1, app_id: app, domain: `a${app}.${t.team}.secrets.test` });
    const binary = (id: number, app: number, version: string, asset = `app-${version}.tar.gz`): Record<string, unknown> => ({
      ...common(app),
      deployment_id: id,
      deployment_strategy: 'blue_green',
      asset_url: `${host.assets.baseUrl}/${asset}`,
      callback_url: cb(id),
      env_vars: env,
      health_check_path: '/healthz',
      target_version: version,
      slots: { blue: { instance_id: `b${app}`, port: ports[app * 2 - 2] }, green: { instance_id: `g${app}`, port: ports[app * 2 - 1] } },
    });
    const dockerBody = (id: number, app: number, image: string, tag: string, pw: string): Record<string, unknown> => ({
      ...common(app),
      deployment_id: id,
      deployment_strategy: 'recreate',
      callback_url: cb(id),
      env_vars: env,
      image,
      image_tag: tag,
      target_version: tag,
      health_check_path: '/healthz',
      registry_credentials: { username: 'crate', password: pw },
      slots: { main: { instance_id: `c${app}`, port: ports[app + 3] } },
    });
    const ids: Array<number | string> = [];
    const accept = async (url: string, body: Record<string, unknown>): Promise<void> => {
      const r = await call('POST', url, body);
      expect(r.status, JSON.stringify(r.json)).toBe(202);
      ids.push(r.json.deployment_id as number | string);
    };

    // Apps 1-5 in parallel: binary blue/green, a missing asset, docker from the private registry
    // (right password), docker with a wrong password, docker with a missing tag.
    await accept('/v1/app/instance/binary/deploy', binary(101, 1, 'v1'));
    await accept('/v1/app/instance/binary/deploy', binary(201, 2, 'v1', 'files/no-such-asset.tgz'));
    await accept('/v1/app/instance/docker/deploy', dockerBody(301, 3, repo, 'v1', password));
    await accept('/v1/app/instance/docker/deploy', dockerBody(401, 4, repo, 'v2', `wrong-${SENTINEL}`));
    await accept('/v1/app/instance/docker/deploy', dockerBody(501, 5, repo, 'no-such-tag', password));
    // The plain model too: a rolling binary app and a registry image.
    await accept('/v1/app/binary/deploy', { ...common(6), deployment_id: 601, deployment_strategy: 'rolling', asset_url: `${host.assets.baseUrl}/app-v1.tar.gz`, callback_url: cb(601), env_vars: env, health_check_path: '/healthz', instances: { p1: { port: ports[9] }, p2: { port: await freePort() } } });
    await accept('/v1/app/docker/deploy', { ...common(7), deployment_id: 701, deployment_strategy: 'recreate', callback_url: cb(701), env_vars: env, image: repo, image_tag: 'v1', health_check_path: '/healthz', registry_credentials: { username: 'crate', password }, instances: { q1: { port: await freePort() } } });
    const settled: Record<string, string> = {};
    for (const id of [101, 201, 301, 401, 501, 601, 701]) settled[id] = (await t.settle(id, 60_000)).status as string;
    expect(settled).toEqual({ 601: 'succeeded', 701: 'succeeded', 101: 'succeeded', 201: expect.stringMatching(/failed|rolled_back/) as unknown, 301: 'succeeded', 401: expect.stringMatching(/failed|rolled_back/) as unknown, 501: expect.stringMatching(/failed|rolled_back/) as unknown });
    expect(((await call('GET', '/v1/app/deploy/401/status')).json.error as { code: string }).code).toBe('E_REGISTRY_AUTH');

    // Requests that carry the sentinel and are refused or only shown.
    const dry = await call('POST', '/v1/app/instance/binary/deploy?dry_run=true', binary(102, 1, 'v2'));
    expect(dry.status, JSON.stringify(dry.json)).toBe(200);
    expect((await call('POST', '/v1/app/instance/binary/deploy', { ...binary(101, 1, 'v1'), env_vars: { OTHER: SENTINEL } })).status).toBe(409);
    expect((await call('POST', '/v1/app/instance/binary/deploy', binary(103, 1, 'v1'))).status).toBe(202);
    ids.push(103);
    expect((await call('POST', '/v1/app/instance/binary/deploy', { ...binary(104, 1, 'v1'), env_vars: { BAD: `${SENTINEL}\u0000` } })).status).toBe(400);
    expect((await call('POST', '/v1/app/instance/docker/deploy', dockerBody(402, 4, repo, 'v1', `${SENTINEL}\u0000`))).status).toBe(400);
    expect((await call('POST', '/v1/app/instance/docker/deploy', `{"team_id":"${SENTINEL}",${'"x":1,'.repeat(3)}"env_vars":{"K":"${SENTINEL}"}}`)).status).toBe(400);
    await t.settle(103, 60_000);

    // Blue/green to v2, a broken v3 (rolled back), then lifecycle operations and a delete.
    await accept('/v1/app/instance/binary/deploy', binary(105, 1, 'v2'));
    await t.settle(105, 60_000);
    await accept('/v1/app/instance/binary/deploy', binary(106, 1, 'v3', 'app-v3-broken.tar.gz'));
    expect((await t.settle(106, 60_000)).status).toBe('rolled_back');
    // One superseded by the next before it finished.
    await accept('/v1/app/instance/binary/deploy', binary(107, 1, 'v4'));
    await accept('/v1/app/instance/binary/deploy', binary(108, 1, 'v5'));
    expect((await t.settle(107, 60_000)).status).toBe('superseded');
    await accept('/v1/app/instance/docker/deploy', dockerBody(302, 3, repo, 'v2', password));
    for (const action of ['restart', 'stop', 'start']) {
      const r = await call('POST', `/v1/app/${action}`, { ...common(1), callback_url: cb(action), instance_id: 'g1' });
      expect(r.status).toBe(202);
      ids.push(r.json.deployment_id as string);
      await t.settle(r.json.deployment_id as string, 60_000);
    }
    const moved = await call('POST', '/v1/app/domain/update', { team_id: t.team, environment_id: 1, app_id: 1, old_domain: `a1.${t.team}.secrets.test`, new_domain: `b1.${t.team}.secrets.test`, server_id: 'test-host' });
    expect(moved.status, JSON.stringify(moved.json)).toBe(200);
    const del = await call('POST', '/v1/app/delete', { ...common(2), callback_url: cb('del'), instance_ids: ['b2', 'g2'] });
    expect(del.status).toBe(202);
    ids.push(del.json.deployment_id as string);
    for (const id of ids) await t.settle(id, 60_000);

    // Everything the outside can read.
    for (const id of ids) {
      await call('GET', `/v1/app/deploy/${id}/status`);
      if (typeof id === 'number') await call('GET', `/v1/app/instance/deploy/${id}/status`);
      await call('GET', `/v1/app/deploy/${id}/events`);
    }
    await call('GET', '/v1/apps');
    const metrics = await t.op.app.inject({ method: 'GET', url: '/metrics' });
    answers.push({ what: `GET /metrics → ${metrics.statusCode}`, text: metrics.body });
    await waitFor('every callback delivered', () => Promise.resolve(ids.every((id) => t.op.records.callbacksFor(String(id)).every((c) => c.delivered_at !== null)) && callbacks.length >= ids.length * 2), 60_000, 200);

    // Needles: the sentinel, its base64 in any alignment, and the registry auth headers sent.
    const b64 = [0, 1, 2].map((i) => Buffer.from(`${'x'.repeat(i)}${SENTINEL}`).toString('base64').slice(4, -4));
    const needles = [SENTINEL, ...b64, registryAuthHeader(repo, { username: 'crate', password }), registryAuthHeader(repo, { username: 'crate', password: `wrong-${SENTINEL}` })];
    const leaks = (c: Captured[]): string[] => c.filter((x) => needles.some((n) => x.text.includes(n))).map((x) => `${x.what}: ${x.text.slice(0, 300)}`);
    const logLines = logs.map((l, i) => ({ what: `log line ${i}`, text: l }));
    expect(leaks(logLines)).toEqual([]);
    expect(leaks(callbacks)).toEqual([]);
    expect(leaks(answers)).toEqual([]);
    const db = path.join(t.config.stateDir, 'records.db');
    const dbFiles = (await readdir(t.config.stateDir)).filter((f) => f.startsWith('records.db'));
    const dbBytes = await Promise.all(dbFiles.map(async (f) => ({ what: f, text: (await readFile(path.join(t.config.stateDir, f))).toString('latin1') })));
    expect(leaks(dbBytes)).toEqual([]);
    expect(leaks([{ what: 'records dump', text: t.op.records.dump() }])).toEqual([]);
    expect(dbFiles).toContain('records.db');

    // Where it may be: documents, last-good copies, env files. Modes as asked for (umask 0).
    const holders: string[] = [];
    const walk = async (d: string): Promise<void> => {
      for (const e of await readdir(d, { withFileTypes: true })) {
        const p = path.join(d, e.name);
        const rel = path.relative(t.config.stateDir, p);
        const mode = (await stat(p)).mode & 0o777;
        const inReleases = /^apps\/[^/]+\/[^/]+\/[^/]+\/releases(\/|$)/.test(rel);
        if (e.isDirectory()) {
          if (!inReleases && !/^apps(\/[^/]+){0,3}$/.test(rel)) expect({ rel, mode: mode.toString(8) }).toEqual({ rel, mode: '700' });
          await walk(p);
          continue;
        }
        if (!inReleases) expect({ rel, mode: mode.toString(8) }).toEqual({ rel, mode: '600' });
        const text = (await readFile(p)).toString('latin1');
        if (needles.some((n) => text.includes(n))) holders.push(rel);
      }
    };
    await walk(t.config.stateDir);
    const allowed = /^(desired|desired-last-good|desired-applied)\/[^/]+\/1\/[0-9]+\.yaml$|^apps\/[^/]+\/1\/[0-9]+\/env\/[^/]+\.env$/;
    expect(holders.filter((h) => !allowed.test(h))).toEqual([]);
    expect(holders.some((h) => h.startsWith('desired/'))).toBe(true);
    expect(holders.some((h) => h.startsWith('desired-last-good/'))).toBe(true);
    expect(holders.some((h) => h.endsWith('.env'))).toBe(true);
    expect(db).toBeTruthy();

    report('secrets', { requests: answers.length, deployments: ids.length, log_lines: logs.length, callbacks: callbacks.length, files_holding_it: holders.length, leaks: 0 });
  }, 90_000);
});
