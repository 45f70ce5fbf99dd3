/** Deployment records on a real SQLite file. */
import { mkdtemp, rm, stat } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { Records, type DeploymentChange, type NewDeployment } from '../../src/records/records.ts';

let dir: string;
let clock: number;
let r: Records;
beforeEach(async () => {
  dir = await mkdtemp(path.join(tmpdir(), 'crate-records-'));
  clock = Date.parse('2025-01-01T00:00:00.000Z');
  r = Records.open(dir, { now: () => new Date(clock) });
});
afterEach(async () => {
  r.close();
  await rm(dir, { recursive: true, force: true });
});

const KEY = { team: 'acme', env: 2, app: 17 };
function input(id: string, over: Partial<NewDeployment> = {}): NewDeployment {
  return {
    id,
    key: KEY,
    action: 'deploy',
    kind: 'binary',
    model: 'instance',
    strategy: 'blue_green',
    target_version: '1.0.0',
    callback_url: 'https://platform.example.com/cb',
    request_hash: `hash-${id}`,
    endpoint: '/v1/app/instance/binary/deploy',
    response: { deployment_id: Number(id) || id, status: 'accepted', status_url: `/v1/app/instance/deploy/${id}/status` },
    ...over,
  };
}

describe('accept', () => {
  it('creates a pending record with the full status document', () => {
    const out = r.accept(input('1', { params: { instance_ids: ['a'] } }));
    expect(out.outcome).toBe('created');
    expect(r.get('1')).toEqual({
      deployment_id: '1',
      action: 'deploy',
      app_id: 17,
      environment_id: 2,
      team_id: 'acme',
      kind: 'binary',
      strategy: 'blue_green',
      target_version: '1.0.0',
      status: 'pending',
      phase: 'accepted',
      error: null,
      started_at: '2025-01-01T00:00:00.000Z',
      updated_at: '2025-01-01T00:00:00.000Z',
      finished_at: null,
      superseded_by: null,
      steps: [],
      instances: [],
      traffic: [],
    });
    const rec = r.getRecord('1');
    expect(rec).toMatchObject({ key: KEY, model: 'instance', callback_url: 'https://platform.example.com/cb', request_hash: 'hash-1', params: { instance_ids: ['a'] }, revision: 1 });
    expect(r.get('2')).toBeUndefined();
  });

  it('replays the same request, refuses another one under the same id', () => {
    r.accept(input('1'));
    const before = r.dump();
    expect(r.accept(input('1')).outcome).toBe('replay');
    expect(r.accept(input('1', { request_hash: 'other' })).outcome).toBe('conflict');
    expect(r.accept(input('1', { request_hash: null })).outcome).toBe('conflict');
    expect(r.dump()).toBe(before);
  });

  it('supersedes the app\'s pending and in-progress deployments, in one transaction, and says which', () => {
    r.accept(input('1'));
    r.update('1', { status: 'succeeded' });
    r.accept(input('2'));
    r.accept(input('3', { key: { ...KEY, app: 18 } }));
    r.update('2', { status: 'in_progress' });
    clock += 1000;
    const seen: DeploymentChange[] = [];
    r.onChange((c) => seen.push(c));
    const out = r.accept(input('4'));
    expect(out.outcome === 'created' && out.superseded).toEqual(['2']);
    expect(r.get('2')).toMatchObject({ status: 'superseded', superseded_by: '4', finished_at: '2025-01-01T00:00:01.000Z', phase: 'superseded' });
    expect(r.get('1')?.status).toBe('succeeded');
    expect(r.get('3')?.status).toBe('pending');
    expect(seen.map((c) => `${c.status.deployment_id}:${c.status.status}`)).toEqual(['2:superseded', '4:pending']);
    expect(r.active().map((x) => x.status.deployment_id)).toEqual(['3', '4']);
    expect(r.latestForApp(KEY)?.status.deployment_id).toBe('4');
    expect(r.listForApp(KEY).map((x) => x.status.deployment_id)).toEqual(['4', '2', '1']);
    expect(r.appKeys()).toEqual([KEY, { ...KEY, app: 18 }]);
  });
});

describe('update', () => {
  it('moves through the statuses, stamps finished_at at a terminal one, then refuses changes', () => {
    r.accept(input('1'));
    clock += 500;
    const step = { name: 'start i-2', status: 'running' as const, started_at: new Date(clock).toISOString(), finished_at: null, detail: null };
    expect(r.update('1', { status: 'in_progress', phase: 'starting', steps: [step] })).toMatchObject({ status: 'in_progress', phase: 'starting', finished_at: null, updated_at: '2025-01-01T00:00:00.500Z' });
    expect(r.setStep('1', { ...step, status: 'succeeded', finished_at: new Date(clock).toISOString() })?.steps).toHaveLength(1);
    expect(r.setStep('1', { name: 'switch route', status: 'pending', started_at: null, finished_at: null, detail: null })?.steps.map((s) => s.name)).toEqual(['start i-2', 'switch route']);
    r.update('1', { instances: [{ instance_id: 'i-2', slot: 'green', port: 3002, version: '1.0.0', state: 'running', healthy: true }], traffic: [{ instance_id: 'i-2', port: 3002, weight: 100 }] });
    clock += 500;
    const done = r.update('1', { status: 'failed', error: { code: 'E_UNHEALTHY', message: 'never healthy' } });
    expect(done).toMatchObject({ status: 'failed', finished_at: '2025-01-01T00:00:01.000Z', error: { code: 'E_UNHEALTHY', message: 'never healthy' } });
    expect(done?.instances).toHaveLength(1);
    expect(done?.traffic).toEqual([{ instance_id: 'i-2', port: 3002, weight: 100 }]);
    const frozen = r.dump();
    expect(r.update('1', { status: 'succeeded' })).toBeUndefined();
    expect(r.update('1', { phase: 'x' })).toBeUndefined();
    expect(r.update('nope', { phase: 'x' })).toBeUndefined();
    expect(r.dump()).toBe(frozen);
    expect(r.events('1').map((e) => e.type)).toEqual(['accepted', 'update', 'update', 'update', 'update', 'update']);
    expect(r.getRecord('1')?.revision).toBe(6);
  });

  it('notifies subscribers of one deployment with increasing revisions', () => {
    r.accept(input('1'));
    r.accept(input('9', { key: { ...KEY, app: 99 } }));
    const got: number[] = [];
    const off = r.subscribe('1', (c) => got.push(c.revision));
    expect(r.listenerCount('1')).toBe(1);
    r.update('1', { phase: 'a' });
    r.update('9', { phase: 'other app' });
    r.update('1', { phase: 'b' });
    off();
    r.update('1', { phase: 'c' });
    expect(got).toEqual([2, 3]);
    expect(r.listenerCount('1')).toBe(0);
  });

  it('lists the deployments finished since a time, superseded ones included, oldest first', () => {
    r.accept(input('1'));
    r.update('1', { status: 'succeeded' });
    clock += 60_000;
    r.accept(input('2'));
    r.accept(input('3'));
    r.accept(input('4', { key: { ...KEY, app: 99 } }));
    r.update('3', { status: 'rolled_back' });
    expect(r.finishedSince('2025-01-01T00:00:00.000Z').map((d) => [d.status.deployment_id, d.status.status])).toEqual([
      ['1', 'succeeded'],
      ['2', 'superseded'],
      ['3', 'rolled_back'],
    ]);
    expect(r.finishedSince('2025-01-01T00:00:30.000Z').map((d) => d.status.deployment_id)).toEqual(['2', '3']);
  });
});

describe('snapshots, callbacks', () => {
  it('stores one machine snapshot per deployment', () => {
    r.accept(input('1'));
    expect(r.loadSnapshot('1')).toBeUndefined();
    r.saveSnapshot('1', { value: 'running', context: { index: 1 } });
    r.saveSnapshot('1', { value: 'running', context: { index: 2 } });
    expect(r.loadSnapshot('1')).toEqual({ value: 'running', context: { index: 2 } });
    r.deleteSnapshot('1');
    expect(r.loadSnapshot('1')).toBeUndefined();
    expect(() => r.saveSnapshot('unknown', {})).toThrow(/FOREIGN KEY/);
  });

  it('keeps a callback outbox: due, retried with a next time, delivered once', () => {
    r.accept(input('1'));
    const base = { deployment_id: '1', url: 'https://platform.example.com/cb', body: '{"status":"pending"}' };
    r.enqueueCallback({ ...base, event_id: 'e1', next_attempt_at: 1000 });
    r.enqueueCallback({ ...base, event_id: 'e2', next_attempt_at: 2000 });
    r.enqueueCallback({ ...base, event_id: 'e1', next_attempt_at: 5 }); // same event id: ignored
    expect(r.dueCallbacks(1500).map((c) => c.event_id)).toEqual(['e1']);
    expect(r.nextCallbackAt()).toBe(1000);
    r.recordCallbackAttempt('e1', { delivered: false, error: 'HTTP 502', next_attempt_at: 3000 });
    expect(r.getCallback('e1')).toMatchObject({ attempts: 1, next_attempt_at: 3000, last_error: 'HTTP 502', delivered_at: null });
    expect(r.dueCallbacks(2500).map((c) => c.event_id)).toEqual(['e2']);
    r.recordCallbackAttempt('e1', { delivered: true });
    r.recordCallbackAttempt('e1', { delivered: false, error: 'late', next_attempt_at: 9 });
    expect(r.getCallback('e1')).toMatchObject({ attempts: 2, next_attempt_at: null, last_error: null, delivered_at: '2025-01-01T00:00:00.000Z' });
    r.recordCallbackAttempt('e2', { delivered: false, error: 'gone', next_attempt_at: null });
    expect(r.dueCallbacks(10_000)).toEqual([]);
    expect(r.nextCallbackAt()).toBeUndefined();
    expect(r.callbacksFor('1').map((c) => c.event_id)).toEqual(['e1', 'e2']);
  });
});

describe('durability', () => {
  it('is a 0600 WAL database with synchronous=FULL that survives reopening', async () => {
    r.accept(input('1'));
    r.update('1', { status: 'in_progress' });
    r.saveSnapshot('1', { s: 1 });
    expect((await stat(path.join(dir, 'records.db'))).mode & 0o777).toBe(0o600);
    r.close();
    r = Records.open(dir);
    expect(r.get('1')?.status).toBe('in_progress');
    expect(r.loadSnapshot('1')).toEqual({ s: 1 });
    expect(r.active()).toHaveLength(1);
    const probe = new (await import('better-sqlite3')).default(path.join(dir, 'records.db'), { readonly: true });
    try {
      expect(probe.pragma('journal_mode', { simple: true })).toBe('wal');
      expect(probe.pragma('user_version', { simple: true })).toBe(1);
    } finally {
      probe.close();
    }
  });

  it('refuses a database from a newer operator', async () => {
    r.close();
    const db = new (await import('better-sqlite3')).default(path.join(dir, 'records.db'));
    db.pragma('user_version = 99');
    db.close();
    expect(() => Records.open(dir)).toThrow(/schema 99/);
    r = new Records(path.join(dir, 'other.db'));
  });
});
