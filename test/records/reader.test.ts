/** The read-only records view (what `crate-operator diff` plans from), beside a live writer and after it closed. */
import { mkdtemp, readdir, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { openRecordsReader, Records } from '../../src/records/records.ts';

let dir: string;
beforeEach(async () => {
  dir = await mkdtemp(path.join(tmpdir(), 'crate-reader-'));
});
afterEach(async () => {
  await rm(dir, { recursive: true, force: true });
});

const KEY = { team: 'acme', env: 2, app: 17 };
const accept = (r: Records, id: string, action: 'deploy' | 'delete' = 'deploy') =>
  r.accept({ id, key: KEY, action, kind: 'binary', model: 'plain', strategy: 'rolling', target_version: 'v1', callback_url: null, request_hash: null, endpoint: 'test', response: {} });

describe('openRecordsReader', () => {
  it('is undefined without a database and creates none', async () => {
    expect(openRecordsReader(dir)).toBeUndefined();
    expect(await readdir(dir)).toEqual([]);
  });

  it('reads what a live writer committed, also after it closed; never writes', () => {
    const w = Records.open(dir);
    accept(w, '1');
    w.update('1', { status: 'succeeded', phase: 'succeeded' });
    accept(w, '2', 'delete');
    const live = openRecordsReader(dir);
    expect(live?.getRecord('1')?.status.status).toBe('succeeded');
    expect(live?.latestForApp(KEY)?.status).toMatchObject({ deployment_id: '2', action: 'delete', status: 'pending' });
    expect(live?.active().map((r) => r.status.deployment_id)).toEqual(['2']);
    expect(live?.getRecord('3')).toBeUndefined();
    live?.close();
    w.close();
    const after = openRecordsReader(dir);
    expect(after?.latestForApp(KEY)?.status.deployment_id).toBe('2');
    after?.close();
  });
});
