/**
 * POST /v1/plan through the API with a fake planner (the real one is exercised end to end in
 * test/e2e/dry-run.test.ts): auth, 400 naming fields, the answer's shape, nothing written, the
 * document error of the app's file, no secret in the answer, documented in the OpenAPI document.
 */
import { writeFile } from 'node:fs/promises';
import { afterEach, describe, expect, it } from 'vitest';
import type { DesiredApp } from '../../src/desired/document.ts';
import { sampleDoc } from '../desired/fixtures.ts';
import { makeApi, type TestApi } from './helpers.ts';

let t: TestApi;
afterEach(async () => {
  await t.close();
});

const plans: DesiredApp[] = [];
const planner = (doc: DesiredApp) => {
  plans.push(doc);
  return Promise.resolve({
    mode: 'deploy' as const,
    deployment_id: doc.deployment.id,
    plan: { kind: 'deploy' as const, strategy: 'blue_green' as const, fallback: null, drops_traffic: false, steps: ['fetch release 1.0.0'], diff: [{ op: 'add', path: '/route', value: { domain: doc.spec.domain } }], notes: [] },
  });
};
const secretDoc = (): DesiredApp => sampleDoc({ env: { API_KEY: 'sentinel-secret-value-123' } });

describe('POST /v1/plan', () => {
  it('needs the token', async () => {
    t = await makeApi({ planDocument: planner });
    const r = await t.post('/v1/plan', secretDoc(), {});
    expect(r.statusCode).toBe(401);
  });

  it('answers the plan and the redacted document diff, and changes nothing', async () => {
    t = await makeApi({ planDocument: planner });
    const before = await t.snapshot();
    const r = await t.post('/v1/plan', secretDoc());
    expect(r.statusCode).toBe(200);
    const body = r.json<Record<string, unknown>>();
    expect(body).toMatchObject({
      app: { team_id: 'acme', environment_id: 2, app_id: 17 },
      mode: 'deploy',
      deployment_id: '42',
      plan: { kind: 'deploy', steps: ['fetch release 1.0.0'], diff: [{ op: 'add', path: '/route', value: { domain: 'shop.example.com' } }] },
    });
    expect(body.diff).toEqual(expect.arrayContaining([expect.objectContaining({ op: 'add', path: '' })]));
    expect(body).not.toHaveProperty('document_error');
    expect(r.body).not.toContain('sentinel-secret-value-123');
    expect(await t.snapshot()).toBe(before);
    expect(t.changes).toEqual([]);
  });

  it('names the offending fields of an invalid document (schema and rules) and plans nothing', async () => {
    t = await makeApi({ planDocument: planner });
    const n = plans.length;
    const noVersion = sampleDoc() as unknown as { spec: Record<string, unknown> };
    delete noVersion.spec.version;
    const r1 = await t.post('/v1/plan', { ...noVersion, extra: 1 });
    expect(r1.statusCode).toBe(400);
    expect(r1.json<{ error: { details: { fields: unknown[] } } }>().error.details.fields).toEqual(
      expect.arrayContaining([
        { field: 'spec.version', reason: 'is required' },
        { field: 'extra', reason: 'is not an allowed field' },
      ]),
    );
    const clash = sampleDoc({ instances: { a: { port: 3001, slot: 'blue', state: 'running', generation: 0 }, b: { port: 3001, slot: 'green', state: 'running', generation: 0 } } });
    const r2 = await t.post('/v1/plan', clash);
    expect(r2.statusCode).toBe(400);
    expect(r2.json<{ error: { code: string; details: { fields: unknown[] } } }>().error).toMatchObject({ code: 'E_VALIDATION', details: { fields: [{ field: 'spec.instances.b.port', reason: 'port 3001 is also used by instance a' }] } });
    expect(plans.length).toBe(n);
  });

  it("reports the app file's document error, diffing against the last valid version", async () => {
    t = await makeApi({ planDocument: planner });
    await t.store.write(sampleDoc());
    await writeFile(t.store.pathFor({ team: 'acme', env: 2, app: 17 }), 'broken: [');
    await t.store.reloadFile(t.store.pathFor({ team: 'acme', env: 2, app: 17 }));
    const r = await t.post('/v1/plan', sampleDoc({ version: '2.0.0' }));
    expect(r.statusCode).toBe(200);
    expect(r.json()).toMatchObject({ document_error: { path: t.store.pathFor({ team: 'acme', env: 2, app: 17 }), error: expect.stringMatching(/YAML/) as unknown }, diff: [{ op: 'replace', path: '/spec/version', value: '2.0.0' }] });
  });

  it('without a planner: 500 E_NO_PLANNER', async () => {
    t = await makeApi();
    const r = await t.post('/v1/plan', sampleDoc());
    expect(r.statusCode).toBe(500);
  });

  it('is in the OpenAPI document with its codes and an example', async () => {
    t = await makeApi({ planDocument: planner });
    const spec = (await t.get('/openapi.json')).json<{ paths: Record<string, { post?: { responses: Record<string, unknown>; requestBody: { content: Record<string, { schema: { examples?: unknown[] }; example?: unknown; examples?: unknown }> } } }> }>();
    const op = spec.paths['/v1/plan']?.post;
    expect(Object.keys(op?.responses ?? {}).sort()).toEqual(['200', '400', '500']);
    const media = op?.requestBody.content['application/json'];
    expect(media?.example ?? media?.examples ?? media?.schema.examples).toBeDefined();
  });
});
