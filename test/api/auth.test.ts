/** Bearer auth on every /v1 route; /healthz, /openapi.json and /docs open. */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { bearerChecker } from '../../src/api/auth.ts';
import { AUTH, errorOf, instanceAction, instanceBinary, makeApi, plainBinary, TOKEN, TOKEN2, type TestApi } from './helpers.ts';

let t: TestApi;
let before: string;
beforeAll(async () => {
  t = await makeApi();
  await t.post('/v1/app/binary/deploy', plainBinary());
  before = await t.snapshot();
});
afterAll(async () => {
  await t.close();
});

const routes: Array<[method: 'GET' | 'POST', url: string]> = [
  ['POST', '/v1/app/instance/binary/deploy'],
  ['POST', '/v1/app/instance/docker/deploy'],
  ['POST', '/v1/app/binary/deploy'],
  ['POST', '/v1/app/docker/deploy'],
  ['GET', '/v1/app/deploy/103/status'],
  ['GET', '/v1/app/instance/deploy/103/status'],
  ['POST', '/v1/app/delete'],
  ['POST', '/v1/app/domain/update'],
  ['POST', '/v1/app/start'],
  ['POST', '/v1/app/stop'],
  ['POST', '/v1/app/restart'],
  ['GET', '/v1/apps'],
  ['GET', '/v1/app/deploy/103/events'],
  ['GET', '/v1/no/such/route'],
];

const badHeaders: Array<Record<string, string>> = [
  {},
  { authorization: '' },
  { authorization: 'Bearer' },
  { authorization: `Bearer ${TOKEN}x` },
  { authorization: `Bearer ${TOKEN.slice(0, -1)}` },
  { authorization: `Basic ${Buffer.from(`u:${TOKEN}`).toString('base64')}` },
  { authorization: TOKEN },
  { authorization: `Bearer ${TOKEN} ${TOKEN}` },
  { authorization: `Bearer wrong-token-of-any-length` },
];

describe('bearer auth', () => {
  it('every /v1 route answers 401 without a valid token and changes nothing', async () => {
    for (const [method, url] of routes) {
      for (const h of badHeaders) {
        const r = await t.app.inject({ method, url, headers: h, ...(method === 'POST' ? { payload: instanceBinary({ deployment_id: 777 }) } : {}) });
        expect(r.statusCode, `${method} ${url} ${JSON.stringify(h)}`).toBe(401);
        expect(errorOf(r).code).toBe('E_UNAUTHORIZED');
        expect(r.headers['www-authenticate']).toBe('Bearer');
      }
    }
    // Query strings and encoded paths do not get around it.
    for (const url of ['/v1/apps?x=1', '/v1/%61pps', '/%761/apps', '/v1//apps', '/v1/./apps']) {
      const r = await t.app.inject({ method: 'GET', url });
      expect([401, 404], url).toContain(r.statusCode);
      expect(r.body).not.toContain('"apps"');
    }
    expect(await t.snapshot()).toBe(before);
  });

  it('auth is checked before the body is read: an oversized unauthenticated body is a 401', async () => {
    const r = await t.post('/v1/app/start', { ...instanceAction(), pad: 'x'.repeat(2 * 1024 * 1024) }, {});
    expect(r.statusCode).toBe(401);
  });

  it('either of two configured tokens works (rotation); the scheme is case-insensitive', async () => {
    for (const h of [AUTH, { authorization: `Bearer ${TOKEN2}` }, { authorization: `bearer ${TOKEN}` }]) {
      expect((await t.get('/v1/apps', h)).statusCode).toBe(200);
    }
  });

  it('/healthz, /openapi.json and /docs are open', async () => {
    const h = await t.app.inject({ method: 'GET', url: '/healthz' });
    expect(h.statusCode).toBe(200);
    expect(h.json()).toMatchObject({ status: 'ok', server_id: 'host-7' });
    expect((await t.app.inject({ method: 'GET', url: '/openapi.json' })).statusCode).toBe(200);
    const docs = await t.app.inject({ method: 'GET', url: '/docs' });
    expect(docs.statusCode).toBe(200);
    expect(docs.headers['content-type']).toMatch(/text\/html/);
    expect(docs.body).toContain('swagger');
    expect((await t.app.inject({ method: 'GET', url: '/docs/json' })).statusCode).toBe(200);
  });

  it('with no token configured every /v1 request is refused', async () => {
    const none = await makeApi({}, { tokens: [] });
    try {
      expect((await none.get('/v1/apps')).statusCode).toBe(401);
      expect((await none.get('/v1/apps', { authorization: 'Bearer ' })).statusCode).toBe(401);
    } finally {
      await none.close();
    }
  });
});

describe('bearerChecker', () => {
  it('accepts exactly the configured tokens', () => {
    const check = bearerChecker(['a'.repeat(16), 'b'.repeat(32)]);
    expect(check(`Bearer ${'a'.repeat(16)}`)).toBe(true);
    expect(check(`Bearer ${'b'.repeat(32)}`)).toBe(true);
    expect(check(`Bearer ${'a'.repeat(17)}`)).toBe(false);
    expect(check(`Bearer ${'b'.repeat(31)}`)).toBe(false);
    expect(check(undefined)).toBe(false);
    expect(bearerChecker([])(`Bearer ${'a'.repeat(16)}`)).toBe(false);
  });
});
