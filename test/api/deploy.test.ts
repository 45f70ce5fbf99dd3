/**
 * The four deploy endpoints: the document each writes, the record, the reconciler hook; idempotency,
 * supersede, dry run and concurrency.
 */
import { readFile, stat } from 'node:fs/promises';
import path from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { plainBinaryVersion, parseDesiredYaml, type DesiredApp } from '../../src/desired/document.ts';
import { errorOf, instanceBinary, instanceDocker, json, KEY, makeApi, plainBinary, plainDocker, type TestApi } from './helpers.ts';

let t: TestApi;
beforeEach(async () => {
  t = await makeApi();
});
afterEach(async () => {
  await t.close();
});

async function docOnDisk(): Promise<DesiredApp> {
  const text = await readFile(path.join(t.dir, 'desired/acme/2/17.yaml'), 'utf8');
  const p = parseDesiredYaml(text);
  if (!p.ok) throw new Error(p.error);
  return p.doc;
}

describe('instance binary deploy', () => {
  it('writes the document (0600 in 0700 folders), records a pending deployment, tells the reconciler', async () => {
    const r = await t.post('/v1/app/instance/binary/deploy', instanceBinary());
    expect(r.statusCode).toBe(202);
    expect(json(r)).toEqual({ deployment_id: 101, status: 'accepted', status_url: '/v1/app/instance/deploy/101/status' });

    const file = path.join(t.dir, 'desired/acme/2/17.yaml');
    expect((await stat(file)).mode & 0o777).toBe(0o600);
    for (const d of ['desired', 'desired/acme', 'desired/acme/2']) expect((await stat(path.join(t.dir, d))).mode & 0o777).toBe(0o700);
    const doc = await docOnDisk();
    expect(doc.apiVersion).toBe('crate-operator/v1');
    expect(doc.kind).toBe('App');
    expect(doc.metadata).toEqual({ team: 'acme', environment: 2, app: 17 });
    expect(doc.spec).toEqual({
      runtime: 'binary',
      model: 'instance',
      domain: 'shop.example.com',
      strategy: 'blue_green',
      version: '1.0.0',
      binary: { asset_url: 'https://assets.example.com/shop-1.0.0.tar.gz' },
      env: { DATABASE_URL: 'postgres://db/shop', QUOTED: 'a "b" \'c\' $HOME 100% \\n', MULTI: 'line1\nline2' },
      health_check_path: '/healthz',
      instances: {
        'i-101': { port: 3001, slot: 'blue', state: 'running', generation: 0 },
        'i-102': { port: 3002, slot: 'green', state: 'running', generation: 0 },
      },
    });
    expect(doc.deployment.id).toBe('101');
    expect(doc.deployment.callback_url).toBe('https://platform.example.com/hooks/deployments');
    expect(t.store.get(KEY)).toEqual(doc);

    const s = t.records.get('101');
    expect(s).toMatchObject({ deployment_id: '101', action: 'deploy', kind: 'binary', strategy: 'blue_green', target_version: '1.0.0', status: 'pending', team_id: 'acme', environment_id: 2, app_id: 17, error: null, finished_at: null });
    expect(t.records.getRecord('101')?.callback_url).toBe('https://platform.example.com/hooks/deployments');
    expect(t.changes).toEqual([KEY]);
  });

  it('env values with quotes, $, %, backslashes, newlines and unicode round-trip byte for byte', async () => {
    const env = { A: 'x"y\'z', B: '$HOME ${X} $$', C: '100% %s %%', D: 'a\\nb\\\\', E: 'l1\nl2\r\nl3\n', F: ' lead and trail ', G: '', H: 'tab\there', I: 'emoji 🚀 ü', J: 'true', K: '0123', L: 'null', M: '- item', N: '#not a comment', O: 'key: value' };
    expect((await t.post('/v1/app/instance/binary/deploy', instanceBinary({ env_vars: env }))).statusCode).toBe(202);
    expect((await docOnDisk()).spec.env).toEqual(env);
  });
});

describe('the other deploys', () => {
  it('instance docker: image, tag, command, credentials, volumes; version is target_version', async () => {
    const r = await t.post('/v1/app/instance/docker/deploy', instanceDocker({ target_version: '2024.1', image_tag: 'sha-abc' }));
    expect(r.statusCode).toBe(202);
    expect(json(r).status_url).toBe('/v1/app/instance/deploy/102/status');
    const doc = await docOnDisk();
    expect(doc.spec.runtime).toBe('docker');
    expect(doc.spec.model).toBe('instance');
    expect(doc.spec.version).toBe('2024.1');
    expect(doc.spec.docker).toEqual({
      image: 'registry.example.com/acme/shop',
      tag: 'sha-abc',
      command: ['./server', '--port', '$PORT'],
      credentials: { username: 'deploy', password: 'hunter2-registry-secret' },
      volumes: ['shop-data:/var/lib/shop'],
    });
    expect(doc.spec.binary).toBeUndefined();
    expect(doc.spec.health_check_path).toBeNull();
    expect(t.records.get('102')?.kind).toBe('docker');
  });

  it('plain binary: the version is derived from the asset URL; instances have no slot', async () => {
    const r = await t.post('/v1/app/binary/deploy', plainBinary());
    expect(r.statusCode).toBe(202);
    expect(json(r)).toEqual({ deployment_id: 103, status: 'accepted', status_url: '/v1/app/deploy/103/status' });
    const doc = await docOnDisk();
    expect(doc.spec.model).toBe('plain');
    expect(doc.spec.version).toBe(plainBinaryVersion('https://assets.example.com/shop-1.0.0.tar.gz'));
    expect(doc.spec.version).toMatch(/^a-[0-9a-f]{12}$/);
    expect(doc.spec.instances).toEqual({ 'web-1': { port: 3101, state: 'running', generation: 0 }, 'web-2': { port: 3102, state: 'running', generation: 0 } });
    expect(t.records.get('103')).toMatchObject({ strategy: 'rolling', target_version: doc.spec.version });
  });

  it('plain docker: the version is the image tag; env defaults to empty', async () => {
    expect((await t.post('/v1/app/docker/deploy', plainDocker())).statusCode).toBe(202);
    const doc = await docOnDisk();
    expect(doc.spec.version).toBe('1.0.0');
    expect(doc.spec.env).toEqual({});
    expect(doc.spec.docker).toEqual({ image: 'registry.example.com/acme/shop', tag: '1.0.0' });
    expect(doc.spec.strategy).toBe('recreate');
  });

  it('a redeploy replaces the instance set, keeps restart generations and runs what it deploys', async () => {
    expect((await t.post('/v1/app/binary/deploy', plainBinary())).statusCode).toBe(202);
    expect((await t.post('/v1/app/restart', { ...instanceActionBase, instance_id: 'web-1' })).statusCode).toBe(202);
    expect((await t.post('/v1/app/stop', { ...instanceActionBase, instance_id: 'web-2' })).statusCode).toBe(202);
    expect((await t.post('/v1/app/binary/deploy', plainBinary({ deployment_id: 200, instances: { 'web-1': { port: 3101 }, 'web-2': { port: 3102 }, 'web-3': { port: 3103 } } }))).statusCode).toBe(202);
    let doc = await docOnDisk();
    expect(doc.spec.instances).toEqual({
      'web-1': { port: 3101, state: 'running', generation: 1 },
      'web-2': { port: 3102, state: 'running', generation: 0 },
      'web-3': { port: 3103, state: 'running', generation: 0 },
    });
    expect((await t.post('/v1/app/binary/deploy', plainBinary({ deployment_id: 201, instances: { 'web-3': { port: 3103 } } }))).statusCode).toBe(202);
    doc = await docOnDisk();
    expect(Object.keys(doc.spec.instances)).toEqual(['web-3']);
  });
});

const instanceActionBase = { team_id: 'acme', environment_id: 2, app_id: 17, domain: 'shop.example.com', callback_url: 'https://platform.example.com/cb' };

describe('idempotency', () => {
  it('the same deployment_id and body answers the same 202 and changes nothing', async () => {
    const first = await t.post('/v1/app/instance/binary/deploy', instanceBinary());
    const snap = await t.snapshot();
    // Same body with keys in another order: same canonical request.
    const reordered = Object.fromEntries(Object.entries(instanceBinary()).reverse());
    const again = await t.post('/v1/app/instance/binary/deploy', reordered);
    expect(again.statusCode).toBe(202);
    expect(again.body).toBe(first.body);
    expect(await t.snapshot()).toBe(snap);
    expect(t.changes).toHaveLength(1);
  });

  it('the same deployment_id with another body (or endpoint) is a 409 that changes nothing', async () => {
    await t.post('/v1/app/instance/binary/deploy', instanceBinary());
    const snap = await t.snapshot();
    const r = await t.post('/v1/app/instance/binary/deploy', instanceBinary({ target_version: '1.0.1' }));
    expect(r.statusCode).toBe(409);
    expect(errorOf(r)).toMatchObject({ code: 'E_CONFLICT', details: { deployment_id: '101' } });
    const other = await t.post('/v1/app/binary/deploy', plainBinary({ deployment_id: 101, app_id: 99, domain: 'x.example.com', instances: { w: { port: 5000 } } }));
    expect(other.statusCode).toBe(409);
    expect(await t.snapshot()).toBe(snap);
    expect(t.changes).toHaveLength(1);
  });

  it('concurrent duplicates create one deployment', async () => {
    const rs = await Promise.all(Array.from({ length: 10 }, () => t.post('/v1/app/binary/deploy', plainBinary())));
    expect(rs.map((r) => r.statusCode)).toEqual(Array(10).fill(202));
    expect(new Set(rs.map((r) => r.body)).size).toBe(1);
    expect(t.records.listForApp(KEY)).toHaveLength(1);
    expect(t.changes).toHaveLength(1);
  });
});

describe('supersede', () => {
  it('a newer deployment supersedes a pending or in-progress one, not a finished one', async () => {
    await t.post('/v1/app/binary/deploy', plainBinary({ deployment_id: 1 }));
    expect(t.records.update('1', { status: 'succeeded' })?.status).toBe('succeeded');
    await t.post('/v1/app/binary/deploy', plainBinary({ deployment_id: 2, asset_url: 'https://assets.example.com/2.tgz' }));
    t.records.update('2', { status: 'in_progress', phase: 'starting web-1' });
    await t.post('/v1/app/binary/deploy', plainBinary({ deployment_id: 3, asset_url: 'https://assets.example.com/3.tgz' }));
    await t.post('/v1/app/binary/deploy', plainBinary({ deployment_id: 4, asset_url: 'https://assets.example.com/4.tgz' }));
    expect(t.records.get('1')?.status).toBe('succeeded');
    expect(t.records.get('2')).toMatchObject({ status: 'superseded', superseded_by: '3' });
    expect(t.records.get('2')?.finished_at).not.toBeNull();
    expect(t.records.get('3')).toMatchObject({ status: 'superseded', superseded_by: '4' });
    expect(t.records.get('4')).toMatchObject({ status: 'pending', superseded_by: null });
    // A superseded deployment stays superseded.
    expect(t.records.update('2', { status: 'succeeded' })).toBeUndefined();
    expect((await docOnDisk()).deployment.id).toBe('4');
    // Other apps are not affected.
    await t.post('/v1/app/binary/deploy', plainBinary({ deployment_id: 5, app_id: 18, domain: 'b.example.com', instances: { w: { port: 5001 } } }));
    expect(t.records.get('4')?.status).toBe('pending');
  });

  it('concurrent deploys of one app: each document write is whole, exactly one deployment stays pending and it is the one in force', async () => {
    const rs = await Promise.all(
      Array.from({ length: 12 }, (_, i) => t.post('/v1/app/binary/deploy', plainBinary({ deployment_id: 300 + i, asset_url: `https://assets.example.com/${i}.tgz` }))),
    );
    expect(rs.map((r) => r.statusCode)).toEqual(Array(12).fill(202));
    const recs = t.records.listForApp(KEY, 100);
    const pending = recs.filter((r) => r.status.status === 'pending');
    expect(pending).toHaveLength(1);
    expect(recs.filter((r) => r.status.status === 'superseded')).toHaveLength(11);
    expect((await docOnDisk()).deployment.id).toBe(pending[0]?.status.deployment_id);
  });
});

describe('dry run', () => {
  it('answers the redacted document and its diff, writes nothing and tells nobody', async () => {
    const snap = await t.snapshot();
    const r = await t.post('/v1/app/instance/docker/deploy?dry_run=true', instanceDocker());
    expect(r.statusCode).toBe(200);
    const body = json<{ dry_run: boolean; document: DesiredApp; diff: Array<{ op: string; path: string }> }>(r);
    expect(body.dry_run).toBe(true);
    expect(body.document.spec.version).toBe('1.0.0');
    expect(body.document.spec.env.A).toMatch(/^<redacted:[0-9a-f]{8}>$/);
    expect(body.document.spec.docker?.credentials?.password).toMatch(/^<redacted:/);
    expect(r.body).not.toContain('hunter2');
    expect(body.diff).toEqual([{ op: 'add', path: '', value: body.document }]);
    expect(await t.snapshot()).toBe(snap);
    expect(t.changes).toEqual([]);
    expect(t.records.get('102')).toBeUndefined();
  });

  it('the diff of a change names keyed paths; an env change shows as a changed marker', async () => {
    await t.post('/v1/app/instance/binary/deploy', instanceBinary());
    const snap = await t.snapshot();
    const r = await t.post(
      '/v1/app/instance/binary/deploy?dry_run=1',
      instanceBinary({ deployment_id: 102, target_version: '1.1.0', env_vars: { DATABASE_URL: 'postgres://db/other' }, slots: { blue: { instance_id: 'i-101', port: 3001 }, green: { instance_id: 'i-102', port: 3003 } } }),
    );
    expect(r.statusCode).toBe(200);
    const diff = json<{ diff: Array<{ op: string; path: string; value?: unknown }> }>(r).diff;
    const paths = diff.map((d) => `${d.op} ${d.path}`).sort();
    expect(paths).toEqual(
      [
        'replace /deployment/id',
        'replace /deployment/requested_at',
        'replace /spec/version',
        'replace /spec/instances/i-102/port',
        'replace /spec/env/DATABASE_URL',
        'remove /spec/env/QUOTED',
        'remove /spec/env/MULTI',
      ].sort(),
    );
    expect(r.body).not.toContain('postgres://');
    expect(await t.snapshot()).toBe(snap);
  });

  it('includes the plan from planFor, and works on every mutating endpoint', async () => {
    const seen: Array<DesiredApp | undefined> = [];
    const p = await makeApi({
      planFor: (_key, doc) => {
        seen.push(doc);
        return { kind: doc ? 'deploy' : 'delete', actions: [] };
      },
    });
    try {
      await p.post('/v1/app/binary/deploy', plainBinary());
      const snap = await p.snapshot();
      const calls: Array<[string, unknown]> = [
        ['/v1/app/binary/deploy', plainBinary({ deployment_id: 9 })],
        ['/v1/app/docker/deploy', plainDocker({ deployment_id: 10 })],
        ['/v1/app/instance/binary/deploy', instanceBinary({ deployment_id: 11, slots: { a: { instance_id: 'web-1', port: 3101 }, b: { instance_id: 'web-2', port: 3102 } } })],
        ['/v1/app/instance/docker/deploy', instanceDocker({ deployment_id: 12, slots: { a: { instance_id: 'web-1', port: 3101 }, b: { instance_id: 'web-2', port: 3102 } } })],
        ['/v1/app/start', { ...instanceActionBase, instance_id: 'web-1' }],
        ['/v1/app/stop', { ...instanceActionBase, instance_id: 'web-1' }],
        ['/v1/app/restart', { ...instanceActionBase, instance_id: 'web-1' }],
        ['/v1/app/delete', { ...instanceActionBase, instance_ids: ['web-1', 'web-2'] }],
        ['/v1/app/domain/update', { team_id: 'acme', environment_id: 2, app_id: 17, old_domain: 'shop.example.com', new_domain: 'new.example.com', server_id: 'host-7' }],
      ];
      for (const [url, body] of calls) {
        const r = await p.post(`${url}?dry_run=true`, body);
        expect(r.statusCode, `${url} ${r.body}`).toBe(200);
        expect(json(r)).toHaveProperty('plan');
        expect(json(r).dry_run).toBe(true);
      }
      expect(seen.at(-2)).toBeUndefined(); // the delete would remove the document
      expect(seen.at(-1)?.spec.domain).toBe('new.example.com');
      expect(p.moves).toEqual([]);
      expect(await p.snapshot()).toBe(snap);
      expect(p.changes).toHaveLength(1);
    } finally {
      await p.close();
    }
  });

  it('a dry run of an accepted request says replay; with another body it is a 409', async () => {
    await t.post('/v1/app/binary/deploy', plainBinary());
    let r = await t.post('/v1/app/binary/deploy?dry_run=true', plainBinary());
    expect(r.statusCode).toBe(200);
    expect(json(r)).toMatchObject({ dry_run: true, replay: true, diff: [] });
    r = await t.post('/v1/app/binary/deploy?dry_run=true', plainBinary({ env_vars: { B: '2' } }));
    expect(r.statusCode).toBe(409);
  });
});

describe('failures after validation', () => {
  it('a store failure is a 500 that leaks nothing and records nothing', async () => {
    const failing = await makeApi();
    try {
      failing.store.write = () => Promise.reject(new Error('EIO: /secret/path exploded'));
      const r = await failing.post('/v1/app/binary/deploy', plainBinary());
      expect(r.statusCode).toBe(500);
      expect(errorOf(r).code).toBe('E_INTERNAL');
      expect(r.body).not.toContain('secret');
      expect(failing.records.get('103')).toBeUndefined();
      expect(failing.changes).toEqual([]);
    } finally {
      await failing.close();
    }
  });

  it('a throwing onDesiredChange does not fail the accepted request', async () => {
    const p = await makeApi({
      onDesiredChange: () => {
        throw new Error('queue full');
      },
    });
    try {
      expect((await p.post('/v1/app/binary/deploy', plainBinary())).statusCode).toBe(202);
      expect(p.records.get('103')?.status).toBe('pending');
    } finally {
      await p.close();
    }
  });
});
