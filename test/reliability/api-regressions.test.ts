/**
 * Regressions the API fuzzer found, pinned as plain examples (each failed before its fix):
 * - a callback_url/asset_url the request schema accepted but the document schema refused (ajv's and
 *   TypeBox's `uri` formats differ; `http://a:b/x`, `https://x.example/a{b}`) answered 500 E_INTERNAL;
 * - the event stream's 404 was documented as text/event-stream although it is JSON;
 * - status ids that cannot name a deployment (empty, > 128 chars) answered an undocumented 400;
 * - unparsable paths and path segments over fastify's maxParamLength answered fastify's own 400/414
 *   body (not the error shape, echoing the path) and skipped the token check;
 * - a top-level empty key was named as the empty string;
 * - /healthz had no documented response.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { AUTH, errorOf, fieldsOf, instanceBinary, makeApi, plainBinary, type TestApi } from '../api/helpers.ts';
import { validateDesired } from '../../src/desired/document.ts';
import { Contract, type OpenApiDoc } from './contract.ts';

let t: TestApi;
let contract: Contract;
beforeAll(async () => {
  t = await makeApi();
  contract = new Contract((await t.app.inject({ method: 'GET', url: '/openapi.json' })).json<OpenApiDoc>());
});
afterAll(async () => {
  await t.close();
});

describe('API regressions found by fuzzing', () => {
  it('URLs an HTTP client cannot use are a 400 naming the field, never a 500, and write nothing', async () => {
    const before = await t.snapshot();
    const bad = ['http://a:b/x', 'http://RkTa&:hDMGAJ?2', 'https://1.2.3.999/x', 'http://[::1/x', 'https://a%25b/x'];
    for (const u of bad) {
      const cb = await t.post('/v1/app/instance/binary/deploy', instanceBinary({ callback_url: u }));
      expect(cb.statusCode, `${u}: ${cb.body}`).toBe(400);
      expect(fieldsOf(cb).map((f) => f.field)).toContain('callback_url');
      const asset = await t.post('/v1/app/binary/deploy', plainBinary({ asset_url: u }));
      expect(asset.statusCode, `${u}: ${asset.body}`).toBe(400);
      expect(fieldsOf(asset).map((f) => f.field)).toContain('asset_url');
    }
    expect(await t.snapshot()).toBe(before);
    // URLs WHATWG accepts (and percent-encodes) are fine for the API and the document alike.
    for (const u of ['https://x.example.com/a{b}|c', 'http://127.0.0.1:9/cb?x=1#y', 'https://[::1]:8443/']) {
      const r = await t.post('/v1/app/instance/binary/deploy?dry_run=true', instanceBinary({ callback_url: u }));
      expect(r.statusCode, `${u}: ${r.body}`).toBe(200);
    }
    const doc = validateDesired({
      apiVersion: 'crate-operator/v1',
      kind: 'App',
      metadata: { team: 'a', environment: 1, app: 1 },
      spec: { runtime: 'binary', model: 'plain', domain: 'a.example.com', strategy: 'rolling', version: 'v1', binary: { asset_url: 'http://a:b/x' }, env: {}, health_check_path: null, instances: { i: { port: 3000, state: 'running', generation: 0 } } },
      deployment: { id: '1', callback_url: 'https://cb.example.com/', requested_at: '2025-01-01T00:00:00.000Z' },
    });
    expect(doc).toMatchObject({ ok: false, error: expect.stringContaining('asset_url') as unknown });
  });

  it('status and event ids that cannot name a deployment are documented 404s in the error shape', async () => {
    for (const url of ['/v1/app/deploy//status', `/v1/app/deploy/${'x'.repeat(129)}/status`, '/v1/app/deploy//events', `/v1/app/deploy/${'1'.repeat(300)}/events`, '/v1/app/deploy/no-such/events']) {
      const r = await t.get(url);
      expect(r.statusCode, url).toBe(404);
      expect(errorOf(r).code).toBe('E_NOT_FOUND');
      expect(contract.check('GET', url, r.statusCode, r.headers['content-type'] as string, r.body), url).toBeUndefined();
    }
  });

  it('unparsable paths and overlong segments: 401 without a token, else 404, in the error shape, path not echoed', async () => {
    for (const url of ['/v1/app/deploy/%ZZ/status', `/v1/app/instance/deploy/${'y'.repeat(200)}/status`]) {
      const anon = await t.app.inject({ method: 'GET', url });
      expect(anon.statusCode, url).toBe(401);
      expect(errorOf(anon).code).toBe('E_UNAUTHORIZED');
      const authed = await t.get(url);
      expect(authed.statusCode, url).toBe(404);
      expect(errorOf(authed).code).toBe('E_NOT_FOUND');
      expect(authed.body).not.toMatch(/FST_ERR|yyyy|%ZZ/);
    }
  });

  it('a top-level empty key is named ""', async () => {
    const r = await t.app.inject({ method: 'POST', url: '/v1/app/start', headers: { ...AUTH, 'content-type': 'application/json' }, payload: '{"":1}' });
    expect(r.statusCode).toBe(400);
    expect(fieldsOf(r).map((f) => f.field)).toContain('""');
  });

  it('/healthz answers what the document says', async () => {
    const r = await t.app.inject({ method: 'GET', url: '/healthz' });
    expect(r.statusCode).toBe(200);
    expect(contract.check('GET', '/healthz', 200, r.headers['content-type'] as string, r.body)).toBeUndefined();
    expect(contract.check('GET', '/healthz', 200, 'application/json', '{"status":"ok"}')).toMatch(/required/);
  });
});
