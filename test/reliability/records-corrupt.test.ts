/**
 * records.db corruption (pure: a temp folder, no components). Decided behaviour:
 * - a file that is not a database, is cut short, or fails SQLite's quick_check is set aside as
 *   `records.db.corrupt-<time>` (with its -wal/-shm), `onCorrupt` is told (the operator logs it at
 *   error level), and a fresh, empty database is opened: the operator starts; the documents in
 *   state/desired are adopted again by the reconciler;
 * - an empty file is an empty database (SQLite's own reading; a crash right after creating it);
 * - a database from a newer operator (schema version) is never set aside: opening fails;
 * - a single row with unreadable JSON does not break reads: its status reports E_RECORD_CORRUPT and
 *   the unreadable parts come back empty.
 */
import { mkdtemp, readdir, readFile, rm, stat, truncate, writeFile } from 'node:fs/promises';
import path from 'node:path';
import Database from 'better-sqlite3';
import { afterEach, describe, expect, it } from 'vitest';
import { Records } from '../../src/records/records.ts';

const dirs: string[] = [];
afterEach(async () => {
  for (const d of dirs.splice(0)) await rm(d, { recursive: true, force: true });
});

/** A state dir whose records.db has `n` deployments (several pages) and is closed. */
async function filled(n = 300): Promise<string> {
  const dir = await mkdtemp('/dev/shm/crate-rec-');
  dirs.push(dir);
  const r = Records.open(dir);
  for (let i = 1; i <= n; i++) {
    r.accept({ id: String(i), key: { team: 't', env: 1, app: (i % 5) + 1 }, action: 'deploy', kind: 'binary', model: 'instance', strategy: 'rolling', target_version: 'v1', callback_url: null, request_hash: 'h'.repeat(64), endpoint: '/x', response: { pad: 'p'.repeat(200) } });
    r.update(String(i), { status: 'succeeded', phase: 'done' });
  }
  r.close();
  return dir;
}

function openNoting(dir: string): { records: Records; told: Array<{ movedTo: string; reason: string }> } {
  const told: Array<{ movedTo: string; reason: string }> = [];
  const records = Records.open(dir, { onCorrupt: (e) => void told.push(e) });
  return { records, told };
}

describe('records.db corruption', () => {
  const cases: Array<[string, (file: string) => Promise<void>]> = [
    ['not a database (header bytes flipped)', async (f) => {
      const b = await readFile(f);
      for (let i = 0; i < 16; i++) b[i] = (b[i] as number) ^ 0x5a;
      await writeFile(f, b);
    }],
    ['cut in half', async (f) => truncate(f, Math.floor((await stat(f)).size / 2))],
    ['a page header overwritten in the middle', async (f) => {
      const b = await readFile(f);
      const page = 4096;
      const mid = Math.floor(b.length / page / 2) * page;
      b.fill(0xee, mid, mid + 64);
      await writeFile(f, b);
    }],
    ['random bytes', async (f) => writeFile(f, Buffer.from(Array.from({ length: 50_000 }, (_, i) => (i * 7919) % 251)))],
  ];
  for (const [name, corrupt] of cases) {
    it(`${name}: set aside, reported, a fresh database opened`, async () => {
      const dir = await filled();
      const file = path.join(dir, 'records.db');
      await corrupt(file);
      const original = await readFile(file);
      const { records, told } = openNoting(dir);
      try {
        expect(told).toHaveLength(1);
        expect(told[0]?.movedTo).toMatch(/records\.db\.corrupt-\d{8}T\d{6}/);
        expect(told[0]?.reason.length).toBeGreaterThan(0);
        expect(await readFile(told[0]?.movedTo as string)).toEqual(original);
        expect(records.get('1')).toBeUndefined();
        const r = records.accept({ id: '9', key: { team: 't', env: 1, app: 1 }, action: 'deploy', kind: null, model: null, strategy: null, target_version: null, callback_url: null, request_hash: null, endpoint: '/x', response: {} });
        expect(r.outcome).toBe('created');
        expect((await stat(file)).mode & 0o777).toBe(0o600);
      } finally {
        records.close();
      }
    });
  }

  it('an empty file is an empty database; nothing is set aside', async () => {
    const dir = await filled(3);
    await truncate(path.join(dir, 'records.db'), 0);
    await rm(path.join(dir, 'records.db-wal'), { force: true });
    const { records, told } = openNoting(dir);
    records.close();
    expect(told).toEqual([]);
    expect((await readdir(dir)).filter((f) => f.includes('corrupt'))).toEqual([]);
  });

  it('a newer schema is refused, never set aside', async () => {
    const dir = await filled(3);
    const db = new Database(path.join(dir, 'records.db'));
    db.pragma('user_version = 99');
    db.close();
    expect(() => Records.open(dir, { onCorrupt: () => undefined })).toThrow(/schema 99/);
    expect((await readdir(dir)).filter((f) => f.includes('corrupt'))).toEqual([]);
  });

  it('one row with unreadable JSON: reads work, that status reports E_RECORD_CORRUPT', async () => {
    const dir = await filled(5);
    const db = new Database(path.join(dir, 'records.db'));
    db.prepare("UPDATE deployments SET steps = '[{', instances = 'nul', error = '{\"code\":', response = 'x' WHERE id = '3'").run();
    db.close();
    const { records, told } = openNoting(dir);
    try {
      expect(told).toEqual([]);
      const s = records.get('3');
      expect(s?.error?.code).toBe('E_RECORD_CORRUPT');
      expect(s?.steps).toEqual([]);
      expect(s?.instances).toEqual([]);
      expect(records.get('2')?.error).toBeNull();
      expect(records.latestForApp({ team: 't', env: 1, app: 4 })?.status.deployment_id).toBe('3');
      expect(records.listForApp({ team: 't', env: 1, app: 4 }).length).toBe(1);
    } finally {
      records.close();
    }
  });
});
