/** start / stop / restart / delete and the synchronous domain update. */
import { access, readFile } from 'node:fs/promises';
import path from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { CrateError } from '../../src/core/errors.ts';
import { deleteBody, domainUpdate, errorOf, instanceAction, instanceBinary, json, KEY, makeApi, plainBinary, type TestApi } from './helpers.ts';

let t: TestApi;
beforeEach(async () => {
  t = await makeApi();
  expect((await t.post('/v1/app/binary/deploy', plainBinary())).statusCode).toBe(202);
});
afterEach(async () => {
  await t.close();
});

const exists = (p: string): Promise<boolean> =>
  access(p).then(
    () => true,
    () => false,
  );

describe('start / stop / restart', () => {
  it('stop flips the state, answers an operator id, records the operation', async () => {
    const r = await t.post('/v1/app/stop', instanceAction({ instance_id: 'web-2' }));
    expect(r.statusCode).toBe(202);
    const body = json<{ deployment_id: string; status: string; status_url: string }>(r);
    expect(body.deployment_id).toMatch(/^op-[0-9a-f-]{36}$/);
    expect(body.status).toBe('accepted');
    expect(body.status_url).toBe(`/v1/app/deploy/${body.deployment_id}/status`);
    expect(t.store.get(KEY)?.spec.instances['web-2']).toEqual({ port: 3102, state: 'stopped', generation: 0 });
    expect(t.store.get(KEY)?.spec.instances['web-1']?.state).toBe('running');
    expect(t.store.get(KEY)?.deployment.id).toBe(body.deployment_id);
    const rec = t.records.getRecord(body.deployment_id);
    expect(rec?.status).toMatchObject({ action: 'stop', kind: 'binary', status: 'pending' });
    expect(rec?.params).toEqual({ instance_id: 'web-2' });
    expect(t.records.get('103')?.status).toBe('superseded');
    const s = await t.get(body.status_url);
    expect(s.statusCode).toBe(200);
    expect(json(s).action).toBe('stop');
    expect(t.changes).toEqual([KEY, KEY]);
  });

  it('start makes it running again; restart bumps the generation and runs it', async () => {
    await t.post('/v1/app/stop', instanceAction({ instance_id: 'web-1' }));
    await t.post('/v1/app/start', instanceAction({ instance_id: 'web-1' }));
    expect(t.store.get(KEY)?.spec.instances['web-1']).toEqual({ port: 3101, state: 'running', generation: 0 });
    await t.post('/v1/app/stop', instanceAction({ instance_id: 'web-1' }));
    await t.post('/v1/app/restart', instanceAction({ instance_id: 'web-1' }));
    await t.post('/v1/app/restart', instanceAction({ instance_id: 'web-1' }));
    expect(t.store.get(KEY)?.spec.instances['web-1']).toEqual({ port: 3101, state: 'running', generation: 2 });
    expect(t.store.get(KEY)?.spec.instances['web-2']?.generation).toBe(0);
  });

  it('every operation without a deployment id gets a new id (no idempotent replay)', async () => {
    const a = json<{ deployment_id: string }>(await t.post('/v1/app/restart', instanceAction({ instance_id: 'web-1' })));
    const b = json<{ deployment_id: string }>(await t.post('/v1/app/restart', instanceAction({ instance_id: 'web-1' })));
    expect(a.deployment_id).not.toBe(b.deployment_id);
  });
});

describe('delete', () => {
  it('deleting some instances keeps the document without them', async () => {
    const r = await t.post('/v1/app/delete', deleteBody({ instance_ids: ['web-1', 'never-existed'] }));
    expect(r.statusCode).toBe(202);
    expect(Object.keys(t.store.get(KEY)?.spec.instances ?? {})).toEqual(['web-2']);
    const id = json<{ deployment_id: string }>(r).deployment_id;
    expect(t.records.getRecord(id)?.params).toEqual({ instance_ids: ['web-1', 'never-existed'] });
    expect(t.records.get(id)?.action).toBe('delete');
  });

  it('deleting every instance removes the document, its last-good copy and empty folders', async () => {
    const r = await t.post('/v1/app/delete', deleteBody({ instance_ids: ['web-1', 'web-2', 'web-1'], deployment_id: 555 }));
    expect(r.statusCode).toBe(202);
    expect(json(r)).toEqual({ deployment_id: 555, status: 'accepted', status_url: '/v1/app/deploy/555/status' });
    expect(t.store.get(KEY)).toBeUndefined();
    expect(await exists(path.join(t.dir, 'desired/acme/2/17.yaml'))).toBe(false);
    expect(await exists(path.join(t.dir, 'desired/acme'))).toBe(false);
    expect(await exists(path.join(t.dir, 'desired-last-good/acme'))).toBe(false);
    const rec = t.records.getRecord('555');
    expect(rec?.params).toEqual({ instance_ids: ['web-1', 'web-2'], document_removed: true });
    expect(rec?.status).toMatchObject({ kind: 'binary', strategy: 'rolling', action: 'delete' });
    expect(t.changes).toEqual([KEY, KEY]);
    // Idempotent by deployment id.
    const again = await t.post('/v1/app/delete', deleteBody({ instance_ids: ['web-1', 'web-2', 'web-1'], deployment_id: 555 }));
    expect(again.statusCode).toBe(202);
    expect(t.changes).toHaveLength(2);
  });

  it('deleting an app this host has no document for is accepted (the host may still run it)', async () => {
    const r = await t.post('/v1/app/delete', deleteBody({ app_id: 404 }));
    expect(r.statusCode).toBe(202);
    const id = json<{ deployment_id: string }>(r).deployment_id;
    expect(t.records.get(id)).toMatchObject({ kind: null, strategy: null, target_version: null, app_id: 404 });
    expect(t.records.getRecord(id)?.params).toMatchObject({ document_removed: true });
  });

  it('deleting one slot of a blue_green pair is refused', async () => {
    const b = await makeApi();
    try {
      await b.post('/v1/app/instance/binary/deploy', instanceBinary());
      const snap = await b.snapshot();
      const r = await b.post('/v1/app/delete', deleteBody({ instance_ids: ['i-101'] }));
      expect(r.statusCode).toBe(400);
      expect(errorOf(r).details?.fields).toEqual([{ field: 'instance_ids', reason: expect.stringMatching(/both slots/) as string }]);
      expect(await b.snapshot()).toBe(snap);
      expect((await b.post('/v1/app/delete', deleteBody({ instance_ids: ['i-101', 'i-102'] }))).statusCode).toBe(202);
    } finally {
      await b.close();
    }
  });
});

describe('domain update', () => {
  it('moves the route through moveDomain, then records the new domain', async () => {
    const r = await t.post('/v1/app/domain/update', domainUpdate());
    expect(r.statusCode).toBe(200);
    expect(json(r)).toEqual({ status: 'updated', team_id: 'acme', environment_id: 2, app_id: 17, old_domain: 'shop.example.com', domain: 'store.example.com' });
    expect(t.moves).toEqual([{ key: KEY, from: 'shop.example.com', to: 'store.example.com' }]);
    expect(t.store.get(KEY)?.spec.domain).toBe('store.example.com');
    expect(await readFile(path.join(t.dir, 'desired/acme/2/17.yaml'), 'utf8')).toContain('domain: store.example.com');
    expect(t.changes).toEqual([KEY, KEY]);
  });

  it('moves the route and writes the document as the app\'s only route writer', async () => {
    const events: string[] = [];
    const w = await makeApi({
      moveDomain: () => {
        events.push('move');
        return Promise.resolve();
      },
      asRouteWriter: async (key, fn) => {
        events.push(`hold ${key.team}/${key.env}/${key.app}`);
        try {
          return await fn();
        } finally {
          // The document is written before the route writer is released.
          events.push(`release (domain ${w.store.get(KEY)?.spec.domain ?? 'none'})`);
        }
      },
    });
    try {
      await w.post('/v1/app/binary/deploy', plainBinary());
      expect((await w.post('/v1/app/domain/update', domainUpdate())).statusCode).toBe(200);
      expect(events).toEqual(['hold acme/2/17', 'move', 'release (domain store.example.com)']);
    } finally {
      await w.close();
    }
  });

  const failures: Array<[string, number]> = [
    ['E_ROUTE_NOT_FOUND', 404],
    ['E_DOMAIN_EXISTS', 409],
    ['E_CADDY_UNAVAILABLE', 503],
  ];
  for (const [code, status] of failures) {
    it(`${code} from Caddy is a ${status} and the document keeps its domain`, async () => {
      const f = await makeApi({ moveDomain: () => Promise.reject(new CrateError(code, `caddy said ${code}`)) });
      try {
        await f.post('/v1/app/binary/deploy', plainBinary());
        const snap = await f.snapshot();
        const r = await f.post('/v1/app/domain/update', domainUpdate());
        expect(r.statusCode).toBe(status);
        expect(errorOf(r).code).toBe(code);
        expect(await f.snapshot()).toBe(snap);
      } finally {
        await f.close();
      }
    });
  }

  it('an unexpected failure is a 500 without internals; a hung Caddy is a 503 at the deadline', async () => {
    const f = await makeApi({ moveDomain: () => Promise.reject(new Error('socket /run/caddy.sock: ECONNRESET')) });
    const h = await makeApi({ moveDomain: () => new Promise<void>(() => undefined), moveDomainTimeoutMs: 50 });
    try {
      let r = await f.post('/v1/app/domain/update', domainUpdate());
      expect(r.statusCode).toBe(500);
      expect(errorOf(r).code).toBe('E_INTERNAL');
      expect(r.body).not.toContain('caddy.sock');
      r = await h.post('/v1/app/domain/update', domainUpdate());
      expect(r.statusCode).toBe(503);
      expect(errorOf(r).code).toBe('E_CADDY_UNAVAILABLE');
    } finally {
      await f.close();
      await h.close();
    }
  });

  it('a domain another app has is a 409 without asking Caddy', async () => {
    await t.post('/v1/app/binary/deploy', plainBinary({ deployment_id: 2, app_id: 18, domain: 'store.example.com', instances: { w: { port: 5000 } } }));
    const snap = await t.snapshot();
    const r = await t.post('/v1/app/domain/update', domainUpdate());
    expect(r.statusCode).toBe(409);
    expect(errorOf(r).code).toBe('E_DOMAIN_EXISTS');
    expect(t.moves).toEqual([]);
    expect(await t.snapshot()).toBe(snap);
  });

  it('an app without a document still gets its route moved', async () => {
    const r = await t.post('/v1/app/domain/update', domainUpdate({ app_id: 77 }));
    expect(r.statusCode).toBe(200);
    expect(t.moves).toHaveLength(1);
    expect(t.store.get({ ...KEY, app: 77 })).toBeUndefined();
  });
});
