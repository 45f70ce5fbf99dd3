/**
 * Auth, driven by the OpenAPI document rather than a hand-kept list: every /v1 operation the
 * operator publishes (so a route added later is covered without editing this test), with each
 * path parameter filled in several ways, answers 401 (error shape, `WWW-Authenticate: Bearer`)
 * without a token or with a wrong one, changes nothing, and answers something other than 401 with
 * the right token (so the check can fail). Paths the router cannot parse under /v1 are 401 too.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { AUTH, errorOf, instanceBinary, makeApi, plainBinary, TOKEN, type TestApi } from '../api/helpers.ts';
import type { OpenApiDoc } from './contract.ts';
import { report } from './report.ts';

let t: TestApi;
let doc: OpenApiDoc;
beforeAll(async () => {
  // Event streams of known deployments end quickly, so the authorised requests below return.
  t = await makeApi({ sse: { heartbeatMs: 1_000, maxStreamMs: 20 } });
  expect((await t.post('/v1/app/binary/deploy', plainBinary())).statusCode).toBe(202);
  doc = (await t.app.inject({ method: 'GET', url: '/openapi.json' })).json<OpenApiDoc>();
});
afterAll(async () => {
  await t.close();
});

const WRONG: Array<Record<string, string>> = [
  {},
  { authorization: '' },
  { authorization: 'Bearer' },
  { authorization: 'Bearer ' },
  { authorization: `Bearer ${TOKEN}x` },
  { authorization: `Bearer ${TOKEN.slice(1)}` },
  { authorization: `Bearer ${TOKEN.toUpperCase()}` },
  { authorization: `Basic ${Buffer.from(`x:${TOKEN}`).toString('base64')}` },
  { authorization: `Token ${TOKEN}` },
  { authorization: TOKEN },
  { authorization: `Bearer ${TOKEN},${TOKEN}` },
  { authorization: `Bearer\t${TOKEN}` },
  { authorization: `Bearer ${'a'.repeat(8192)}` },
  { cookie: `token=${TOKEN}` },
  { 'x-api-key': TOKEN },
];

/** Concrete URLs for an OpenAPI path: each parameter as a known id, an unknown one and junk. */
function urlsFor(p: string): string[] {
  if (!p.includes('{')) return [p, `${p}?dry_run=true`];
  return ['103', '999999', 'op-x', '..%2f..', 'x'.repeat(300), '%ZZ'].map((v) => p.replace(/\{[^}]+\}/g, v));
}

describe('auth on every /v1 operation of /openapi.json', () => {
  it('401 without or with a wrong token; nothing changes; the right token passes', async () => {
    const before = await t.snapshot();
    const ops = Object.entries(doc.paths)
      .filter(([p]) => p.startsWith('/v1/'))
      .flatMap(([p, o]) => Object.keys(o).map((m) => ({ method: m.toUpperCase(), path: p })));
    expect(ops.length).toBeGreaterThanOrEqual(13);
    let requests = 0;
    for (const { method, path } of ops) {
      for (const url of urlsFor(path)) {
        const methods = method === 'GET' ? ['GET', 'HEAD'] : [method];
        for (const m of methods) {
          for (const h of WRONG) {
            const payload = m === 'POST' ? { payload: instanceBinary({ deployment_id: 4242 }), headers: { ...h, 'content-type': 'application/json' } } : { headers: h };
            const r = await t.app.inject({ method: m as 'GET', url, ...payload });
            requests += 1;
            const what = `${m} ${url.slice(0, 80)} ${JSON.stringify(h).slice(0, 80)}`;
            expect(r.statusCode, what).toBe(401);
            expect(r.headers['www-authenticate'], what).toBe('Bearer');
            if (m !== 'HEAD') expect(errorOf(r).code, what).toBe('E_UNAUTHORIZED');
          }
        }
        // The same request with the token is judged on its merits (so the 401s above can fail).
        const ok = await t.app.inject({ method: method as 'GET', url, headers: { ...AUTH, 'content-type': 'application/json' }, ...(method === 'POST' ? { payload: '{}' } : {}) });
        expect(ok.statusCode, `${method} ${url} with the token`).not.toBe(401);
      }
    }
    expect(await t.snapshot()).toBe(before);
    report('auth', { operations: ops.length, wrong_credentials: WRONG.length, requests });
  });

  it('encoded, duplicated and unparsable /v1 paths never get past the token check', async () => {
    for (const url of ['/%76%31/apps', '/v1/%61pps', '/v1/apps?x=1', '/v1/apps#x', '/v1/app/deploy/%ZZ/status', `/v1/app/deploy/${'9'.repeat(500)}/status`, '/v1/app/instance/deploy/%E0%A4%A/status']) {
      const r = await t.app.inject({ method: 'GET', url });
      expect([401, 404], url).toContain(r.statusCode);
      if (r.statusCode === 401) expect(errorOf(r).code).toBe('E_UNAUTHORIZED');
      expect(r.body, url).not.toMatch(/"apps"|"deployment_id"|FST_ERR/);
    }
  });
});
