/**
 * /openapi.json: valid OpenAPI 3 (checked by @apidevtools/swagger-parser), every API.md endpoint with
 * exactly API.md's response codes (plus the two documented extensions), request field sets exactly
 * API.md's, an example for every endpoint.
 */
import SwaggerParser from '@apidevtools/swagger-parser';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { makeApi, type TestApi } from './helpers.ts';

interface Media {
  schema?: { required?: string[]; properties?: Record<string, unknown> };
  example?: unknown;
  examples?: Record<string, unknown>;
}
interface Operation {
  responses: Record<string, { description: string; content?: Record<string, Media> }>;
  requestBody?: { content: Record<string, Media> };
  security?: unknown[];
  parameters?: Array<{ name: string; in: string; schema: { type: string } }>;
}
interface Spec {
  openapi: string;
  paths: Record<string, Record<string, Operation>>;
  components: { securitySchemes: Record<string, unknown> };
  security: unknown[];
}

let t: TestApi;
let spec: Spec;
beforeAll(async () => {
  t = await makeApi();
  const r = await t.app.inject({ method: 'GET', url: '/openapi.json' });
  expect(r.statusCode).toBe(200);
  spec = r.json<Spec>();
});
afterAll(async () => {
  await t.close();
});

/** API.md's endpoint table: method, path, required fields, optional fields, response codes. */
const API_MD: Array<{ method: string; path: string; required: string[]; optional: string[]; codes: string[] }> = [
  {
    method: 'post',
    path: '/v1/app/instance/binary/deploy',
    required: ['app_id', 'asset_url', 'callback_url', 'deployment_id', 'deployment_strategy', 'domain', 'env_vars', 'environment_id', 'slots', 'target_version', 'team_id'],
    optional: ['health_check_path'],
    codes: ['202', '400', '500'],
  },
  {
    method: 'post',
    path: '/v1/app/instance/docker/deploy',
    required: ['app_id', 'callback_url', 'deployment_id', 'deployment_strategy', 'domain', 'env_vars', 'environment_id', 'image', 'image_tag', 'slots', 'target_version', 'team_id'],
    optional: ['docker_command', 'health_check_path', 'registry_credentials', 'volumes'],
    codes: ['202', '400', '500'],
  },
  {
    method: 'post',
    path: '/v1/app/binary/deploy',
    required: ['app_id', 'asset_url', 'callback_url', 'deployment_id', 'deployment_strategy', 'domain', 'env_vars', 'environment_id', 'instances', 'team_id'],
    optional: ['health_check_path'],
    codes: ['202', '400', '500'],
  },
  {
    method: 'post',
    path: '/v1/app/docker/deploy',
    required: ['app_id', 'callback_url', 'deployment_id', 'deployment_strategy', 'domain', 'environment_id', 'image', 'image_tag', 'instances', 'team_id'],
    optional: ['docker_command', 'env_vars', 'health_check_path', 'registry_credentials', 'volumes'],
    codes: ['202', '400', '500'],
  },
  { method: 'get', path: '/v1/app/deploy/{deployment_id}/status', required: [], optional: [], codes: ['200', '404'] },
  { method: 'get', path: '/v1/app/instance/deploy/{deployment_id}/status', required: [], optional: [], codes: ['200', '404'] },
  {
    method: 'post',
    path: '/v1/app/delete',
    required: ['app_id', 'callback_url', 'domain', 'environment_id', 'instance_ids', 'team_id'],
    optional: ['deployment_id'],
    codes: ['202', '400', '500'],
  },
  {
    method: 'post',
    path: '/v1/app/domain/update',
    required: ['app_id', 'environment_id', 'new_domain', 'old_domain', 'server_id', 'team_id'],
    optional: [],
    codes: ['200', '400', '404', '409', '503'],
  },
  ...['start', 'stop', 'restart'].map((a) => ({
    method: 'post',
    path: `/v1/app/${a}`,
    required: ['app_id', 'callback_url', 'domain', 'environment_id', 'instance_id', 'team_id'],
    optional: [],
    codes: ['202', '400', '500'],
  })),
];

describe('OpenAPI document', () => {
  it('is valid OpenAPI 3 according to swagger-parser', async () => {
    expect(spec.openapi).toMatch(/^3\./);
    await expect(SwaggerParser.validate(structuredClone(spec) as never)).resolves.toBeTruthy();
  });

  it('lists all 11 endpoints with exactly their API.md response codes (plus the documented extensions)', () => {
    expect(API_MD).toHaveLength(11);
    for (const e of API_MD) {
      const op = spec.paths[e.path]?.[e.method];
      expect(op, `${e.method} ${e.path}`).toBeDefined();
      const codes = Object.keys(op?.responses ?? {}).sort();
      // Extensions: dry runs answer 200 on every mutating endpoint; a re-used deployment_id with
      // another body is a 409 where the request carries a deployment_id.
      const extra = new Set<string>();
      if (e.method === 'post') extra.add('200');
      if (e.required.includes('deployment_id') || e.optional.includes('deployment_id')) extra.add('409');
      expect(codes, `${e.method} ${e.path}`).toEqual([...new Set([...e.codes, ...extra])].sort());
      for (const r of Object.values(op?.responses ?? {})) expect(r.description).not.toBe('Default Response');
    }
  });

  it('request bodies have exactly API.md\'s required and optional fields', () => {
    for (const e of API_MD.filter((x) => x.method === 'post')) {
      const schema = spec.paths[e.path]?.post?.requestBody?.content['application/json']?.schema;
      expect([...(schema?.required ?? [])].sort(), e.path).toEqual([...e.required].sort());
      expect(Object.keys(schema?.properties ?? {}).sort(), e.path).toEqual([...e.required, ...e.optional].sort());
    }
  });

  it('has an example for every endpoint', () => {
    for (const e of API_MD) {
      const op = spec.paths[e.path]?.[e.method] as Operation;
      const media = e.method === 'post' ? op.requestBody?.content['application/json'] : op.responses['200']?.content?.['application/json'];
      expect(media?.example ?? media?.examples, `${e.method} ${e.path}`).toBeDefined();
    }
  });

  it('declares bearer auth for /v1 and none for /healthz; parameters are typed as API.md says', () => {
    expect(spec.components.securitySchemes.bearer).toEqual({ type: 'http', scheme: 'bearer' });
    expect(spec.security).toEqual([{ bearer: [] }]);
    expect(spec.paths['/healthz']?.get?.security).toEqual([]);
    const intParam = spec.paths['/v1/app/instance/deploy/{deployment_id}/status']?.get?.parameters?.find((p) => p.name === 'deployment_id');
    expect(intParam?.schema.type).toBe('integer');
    const strParam = spec.paths['/v1/app/deploy/{deployment_id}/status']?.get?.parameters?.find((p) => p.name === 'deployment_id');
    expect(strParam?.schema.type).toBe('string');
    expect(spec.paths['/v1/apps']?.get).toBeDefined();
    expect(spec.paths['/v1/app/deploy/{deployment_id}/events']?.get?.responses['200']?.content?.['text/event-stream']).toBeDefined();
  });
});
