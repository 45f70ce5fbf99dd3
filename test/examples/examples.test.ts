/**
 * The example files are what they claim: every request body is valid for the endpoint `deploy` picks
 * for it (dry run against a real operator: no 400), and each desired-state document is exactly what
 * its deploy request writes (apart from the request time), and passes `validate`.
 */
import { readdir, readFile } from 'node:fs/promises';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import type { TSchema } from 'typebox';
import { Compile } from 'typebox/compile';
import { describe, expect, it } from 'vitest';
import * as S from '../../src/api/schemas.ts';
import { pickEndpoint } from '../../src/cli/deploy.ts';
import { checkFile } from '../../src/cli/validate.ts';
import { parseDesiredYaml, summarizeDesired } from '../../src/desired/document.ts';
import { startTestOperator } from '../e2e/operator.ts';

const dir = fileURLToPath(new URL('../../examples/', import.meta.url));
const OPS: Record<string, string> = { 'stop.json': 'stop', 'start.json': 'start', 'restart.json': 'restart' };
const SCHEMAS: Record<string, TSchema> = {
  '/v1/app/instance/binary/deploy': S.InstanceBinaryDeployBody,
  '/v1/app/instance/docker/deploy': S.InstanceDockerDeployBody,
  '/v1/app/binary/deploy': S.BinaryDeployBody,
  '/v1/app/docker/deploy': S.DockerDeployBody,
  '/v1/app/delete': S.DeleteBody,
  '/v1/app/domain/update': S.DomainUpdateBody,
  '/v1/app/start': S.InstanceActionBody,
  '/v1/app/stop': S.InstanceActionBody,
  '/v1/app/restart': S.InstanceActionBody,
};
/** The deploy request each desired example comes from. */
const SOURCES: Record<string, string> = { '1.yaml': 'binary-instance-v1.json', '2.yaml': 'binary-plain.json', '3.yaml': 'docker-instance.json', '4.yaml': 'docker-plain.json' };

describe('examples', () => {
  it('request bodies are valid for their endpoints; desired documents are what the requests write', { timeout: 60_000 }, async () => {
    const t = await startTestOperator({ serverId: 'local' });
    const files = (await readdir(path.join(dir, 'requests'))).filter((f) => f.endsWith('.json')).sort();
    expect(files.length).toBeGreaterThanOrEqual(12);
    const endpoints = new Set<string>();
    for (const f of files) {
      const body = JSON.parse(await readFile(path.join(dir, 'requests', f), 'utf8')) as Record<string, unknown>;
      const endpoint = pickEndpoint(body, OPS[f]);
      endpoints.add(endpoint);
      // The body matches the endpoint's request schema (the API validates with the same schemas);
      // lifecycle requests name an app this fresh operator does not have, so only deploys dry-run here.
      const schema = SCHEMAS[endpoint];
      if (!schema) throw new Error(`no schema for ${endpoint}`);
      expect([...Compile(schema).Errors(body)].map((e) => `${e.instancePath} ${e.message}`), f).toEqual([]);
      if (endpoint.endsWith('/deploy')) {
        const r = await t.api('POST', `${endpoint}?dry_run=true`, body);
        expect(r.status, `${f} → ${endpoint}: ${JSON.stringify(r.body)}`).toBe(200);
      }
    }
    expect(endpoints.size).toBe(9);

    for (const [yaml, request] of Object.entries(SOURCES)) {
      const file = path.join(dir, 'desired', 'demo', '1', yaml);
      const check = await checkFile(file);
      expect(check.ok, JSON.stringify(check)).toBe(true);
      const parsed = parseDesiredYaml(await readFile(file, 'utf8'));
      if (!parsed.ok) throw new Error(parsed.error);
      const body = JSON.parse(await readFile(path.join(dir, 'requests', request), 'utf8')) as Record<string, unknown>;
      const r = await t.api('POST', `${pickEndpoint(body)}?dry_run=true`, body);
      expect(r.status).toBe(200);
      const written = r.body.document as ReturnType<typeof summarizeDesired>;
      const expected = summarizeDesired(parsed.doc);
      expect({ ...written, deployment: { ...written.deployment, requested_at: '' } }).toEqual({ ...expected, deployment: { ...expected.deployment, requested_at: '' } });
    }
  });
});
