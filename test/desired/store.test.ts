/** The desired-state store on a real file system (temp dirs). */
import { mkdir, mkdtemp, readdir, readFile, rm, stat, symlink, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { KeyedMutex } from '../../src/desired/lock.ts';
import { parseDesiredYaml, serializeDesired, type DesiredApp } from '../../src/desired/document.ts';
import { contentHash, DesiredStore } from '../../src/desired/store.ts';
import { sampleDoc } from './fixtures.ts';

let dir: string;
beforeEach(async () => {
  dir = await mkdtemp(path.join(tmpdir(), 'crate-store-'));
});
afterEach(async () => {
  await rm(dir, { recursive: true, force: true });
});

const KEY = { team: 'acme', env: 2, app: 17 };
const docFile = (): string => path.join(dir, 'desired/acme/2/17.yaml');
const withVersion = (v: string): DesiredApp => sampleDoc({ version: v });
const logs: Array<{ level: string; obj: object; msg: string }> = [];
const logger = {
  warn: (obj: object, msg: string) => logs.push({ level: 'warn', obj, msg }),
  info: (obj: object, msg: string) => logs.push({ level: 'info', obj, msg }),
};

describe('write, read, list, remove', () => {
  it('writes canonical YAML atomically with 0600 files in 0700 folders', async () => {
    const s = await DesiredStore.open(dir);
    expect((await stat(path.join(dir, 'desired'))).mode & 0o777).toBe(0o700);
    const w = await s.write(withVersion('1'));
    expect(w).toEqual({ path: docFile(), hash: contentHash(serializeDesired(withVersion('1'))), changed: true });
    expect(await readFile(docFile(), 'utf8')).toBe(serializeDesired(withVersion('1')));
    expect((await stat(docFile())).mode & 0o777).toBe(0o600);
    for (const d of ['desired/acme', 'desired/acme/2', 'desired-last-good', 'desired-last-good/acme/2']) expect((await stat(path.join(dir, d))).mode & 0o777).toBe(0o700);
    expect((await stat(path.join(dir, 'desired-last-good/acme/2/17.yaml'))).mode & 0o777).toBe(0o600);
    expect(s.get(KEY)).toEqual(withVersion('1'));
    expect(s.list()).toHaveLength(1);
    // No temp file is left behind.
    expect(await readdir(path.dirname(docFile()))).toEqual(['17.yaml']);
    // Writing the same content again touches nothing.
    expect((await s.write(withVersion('1'))).changed).toBe(false);
  });

  it('a new store instance reads what the old one wrote', async () => {
    const s = await DesiredStore.open(dir);
    await s.write(withVersion('1'));
    await s.write({ ...withVersion('1'), metadata: { team: 'beta', environment: 1, app: 1 }, spec: { ...withVersion('1').spec, domain: 'b.example.com' } });
    const s2 = await DesiredStore.open(dir);
    expect(s2.get(KEY)?.spec.version).toBe('1');
    expect(s2.list().map((d) => d.metadata.team).sort()).toEqual(['acme', 'beta']);
    expect(s2.errors().size).toBe(0);
  });

  it('refuses to write an invalid document', async () => {
    const s = await DesiredStore.open(dir);
    await expect(s.write(sampleDoc({ domain: 'BAD' }))).rejects.toMatchObject({ code: 'E_INVALID_DOCUMENT' });
    await expect(s.write(sampleDoc({ instances: {} }))).rejects.toMatchObject({ code: 'E_INVALID_DOCUMENT' });
    expect(await readdir(path.join(dir, 'desired'))).toEqual([]);
  });

  it('remove deletes the document, its copy and empty folders', async () => {
    const s = await DesiredStore.open(dir);
    await s.write(withVersion('1'));
    expect(await s.remove(KEY)).toBe(true);
    expect(s.get(KEY)).toBeUndefined();
    expect(await readdir(path.join(dir, 'desired'))).toEqual([]);
    expect(await readdir(path.join(dir, 'desired-last-good'))).toEqual([]);
    expect(await s.remove(KEY)).toBe(false);
    expect(s.isOwnWrite(docFile(), null)).toBe(true);
  });

  it('serialises writes to one file: concurrent writes leave one complete version in force and on disk', async () => {
    const s = await DesiredStore.open(dir);
    await Promise.all(Array.from({ length: 40 }, (_, i) => s.write(withVersion(`v${i}`))));
    const onDisk = parseDesiredYaml(await readFile(docFile(), 'utf8'));
    expect(onDisk.ok).toBe(true);
    expect(onDisk.ok && onDisk.doc).toEqual(s.get(KEY));
    expect(s.get(KEY)?.spec.version).toBe('v39');
    expect(await readdir(path.dirname(docFile()))).toEqual(['17.yaml']);
  });
});

describe('own writes', () => {
  it('isOwnWrite recognises the content the store wrote, not someone else\'s', async () => {
    const s = await DesiredStore.open(dir);
    const w = await s.write(withVersion('1'));
    expect(s.isOwnWrite(docFile(), w.hash)).toBe(true);
    expect(s.isOwnWrite(docFile(), contentHash('other'))).toBe(false);
    expect(s.isOwnWrite(path.join(dir, 'desired/acme/2/18.yaml'), w.hash)).toBe(false);
    // The watcher's alternative: reloading the store's own write is "unchanged".
    expect(await s.reloadFile(docFile())).toBe('unchanged');
  });
});

describe('files written by people and tools', () => {
  it('a valid edit is picked up; an invalid one is reported and the last valid version stays in force', async () => {
    logs.length = 0;
    const s = await DesiredStore.open(dir, { logger });
    await s.write(withVersion('1'));
    await writeFile(docFile(), serializeDesired(withVersion('2')));
    expect(await s.reloadFile(docFile())).toBe('updated');
    expect(s.get(KEY)?.spec.version).toBe('2');

    await writeFile(docFile(), 'spec: [broken');
    expect(await s.reloadFile(docFile())).toBe('invalid');
    expect(s.get(KEY)?.spec.version).toBe('2');
    expect(s.errorFor(KEY)).toMatchObject({ path: docFile(), key: KEY, error: expect.stringMatching(/^YAML/) as string });
    expect(logs.some((l) => l.level === 'warn' && /rejected/.test(l.msg))).toBe(true);
    // The same error is logged once, not on every reload.
    const n = logs.length;
    await s.reloadFile(docFile());
    expect(logs.length).toBe(n);

    // The last valid version survives a restart while the file is still broken.
    const s2 = await DesiredStore.open(dir, { logger });
    expect(s2.get(KEY)?.spec.version).toBe('2');
    expect(s2.errorFor(KEY)?.error).toMatch(/^YAML/);

    // Fixing the file clears the error.
    await writeFile(docFile(), serializeDesired(withVersion('3')));
    expect(await s2.reloadFile(docFile())).toBe('updated');
    expect(s2.errorFor(KEY)).toBeUndefined();
    expect(s2.get(KEY)?.spec.version).toBe('3');
  });

  it('a document whose metadata does not match its path is invalid', async () => {
    const s = await DesiredStore.open(dir);
    await mkdir(path.join(dir, 'desired/acme/2'), { recursive: true });
    const wrong = path.join(dir, 'desired/acme/2/99.yaml');
    await writeFile(wrong, serializeDesired(withVersion('1')));
    expect(await s.reloadFile(wrong)).toBe('invalid');
    expect(s.errorFor({ team: 'acme', env: 2, app: 99 })?.error).toMatch(/metadata names app acme\/2\/17/);
    expect(s.get({ team: 'acme', env: 2, app: 99 })).toBeUndefined();
    expect(s.get(KEY)).toBeUndefined();
  });

  it('files outside the layout are reported by path; temp and other files are ignored', async () => {
    const s = await DesiredStore.open(dir);
    for (const rel of ['desired/x.yaml', 'desired/acme/2/17.yml', 'desired/acme/x/1.yaml', 'desired/acme/2/0.yaml', 'desired/a b/2/1.yaml', 'desired/acme/2/3000000000.yaml']) {
      await mkdir(path.dirname(path.join(dir, rel)), { recursive: true });
      await writeFile(path.join(dir, rel), 'x: 1');
      expect(await s.reloadFile(path.join(dir, rel)), rel).toBe('invalid');
      expect(s.errors().get(path.join(dir, rel))?.key).toBeUndefined();
    }
    await rm(path.join(dir, 'desired/x.yaml'));
    expect(await s.reloadFile(path.join(dir, 'desired/x.yaml'))).toBe('ignored');
    expect(s.errors().has(path.join(dir, 'desired/x.yaml'))).toBe(false);
    expect(await s.reloadFile(path.join(dir, 'desired/acme/2/.17.yaml.123.abcdefabcdef.tmp'))).toBe('ignored');
    expect(await s.reloadFile(path.join(dir, 'desired/README.md'))).toBe('ignored');
    expect(await s.reloadFile('/etc/passwd')).toBe('ignored');
  });

  it('symlinks are not followed', async () => {
    const s = await DesiredStore.open(dir);
    await mkdir(path.dirname(docFile()), { recursive: true });
    const target = path.join(dir, 'elsewhere.yaml');
    await writeFile(target, serializeDesired(withVersion('1')));
    await symlink(target, docFile());
    expect(await s.reloadFile(docFile())).toBe('invalid');
    expect(s.errorFor(KEY)?.error).toMatch(/cannot read/);
    expect(s.get(KEY)).toBeUndefined();
  });

  it('a deleted file means the app is no longer desired', async () => {
    const s = await DesiredStore.open(dir);
    await s.write(withVersion('1'));
    await rm(docFile());
    expect(await s.reloadFile(docFile())).toBe('removed');
    expect(s.get(KEY)).toBeUndefined();
    // And after a restart the copy does not resurrect it.
    const s2 = await DesiredStore.open(dir);
    expect(s2.get(KEY)).toBeUndefined();
    expect(await readdir(path.join(dir, 'desired-last-good/acme/2')).catch(() => [])).toEqual([]);
  });

  it('reloadAll re-reads every file and notices removals', async () => {
    const s = await DesiredStore.open(dir);
    await s.write(withVersion('1'));
    const other = { ...withVersion('1'), metadata: { team: 'acme', environment: 2, app: 18 }, spec: { ...withVersion('1').spec, domain: 'o.example.com' } };
    await s.write(other);
    await writeFile(docFile(), serializeDesired(withVersion('5')));
    await rm(path.join(dir, 'desired/acme/2/18.yaml'));
    const r = await s.reloadAll();
    expect(Object.fromEntries(r)).toEqual({ 'acme/2/17': 'updated', 'acme/2/18': 'removed' });
    expect(s.get(KEY)?.spec.version).toBe('5');
  });
});

describe('start-up', () => {
  it('removes stray temp files of interrupted writes and keeps everything else', async () => {
    const s = await DesiredStore.open(dir);
    await s.write(withVersion('1'));
    const d = path.dirname(docFile());
    const stray = [path.join(d, '.17.yaml.4242.0123456789ab.tmp'), path.join(dir, 'desired-last-good/acme/2/.17.yaml.1.ffffffffffff.tmp')];
    for (const f of stray) await writeFile(f, 'half a docu');
    await writeFile(path.join(d, 'notes.txt'), 'keep me');
    logs.length = 0;
    const s2 = await DesiredStore.open(dir, { logger });
    expect(s2.get(KEY)?.spec.version).toBe('1');
    expect((await readdir(d)).sort()).toEqual(['17.yaml', 'notes.txt']);
    expect(await readdir(path.join(dir, 'desired-last-good/acme/2'))).toEqual(['17.yaml']);
    expect(logs.find((l) => /temp files/.test(l.msg))?.obj).toEqual({ files: 2 });
  });
});

describe('KeyedMutex', () => {
  it('runs same-key sections one at a time in order, different keys concurrently', async () => {
    const m = new KeyedMutex();
    const events: string[] = [];
    const section = (key: string, name: string, ms: number) =>
      m.run([key], async () => {
        events.push(`${name}+`);
        await new Promise((r) => setTimeout(r, ms));
        events.push(`${name}-`);
      });
    await Promise.all([section('a', 'a1', 20), section('a', 'a2', 1), section('b', 'b1', 5)]);
    expect(events.indexOf('a1-')).toBeLessThan(events.indexOf('a2+'));
    expect(events.indexOf('b1+')).toBeLessThan(events.indexOf('a1-'));
    expect(m.size).toBe(0);
    // A throwing section releases its keys.
    await expect(m.run(['a', 'b'], () => Promise.reject(new Error('x')))).rejects.toThrow('x');
    await m.run(['b', 'a'].slice(0, 1), () => Promise.resolve());
    expect(m.size).toBe(0);
  });
});

describe('ignored names and read-only opening', () => {
  it('dotfiles and editor leftovers are never documents nor reported, at open and on re-reads', async () => {
    const names = ['.17.yaml', '.#17.yaml', '.hidden.yaml', '17.yaml~', '17.yaml.swp', '17.yaml.bak', '17.yaml.orig', '4913'];
    await mkdir(path.dirname(docFile()), { recursive: true });
    for (const n of names) await writeFile(path.join(dir, 'desired/acme/2', n), serializeDesired(withVersion('1')));
    const s = await DesiredStore.open(dir);
    expect([s.list(), [...s.errors().keys()]]).toEqual([[], []]);
    expect([...(await s.reloadAll()).values()]).toEqual([]);
    for (const n of names) expect(await s.reloadFile(path.join(dir, 'desired/acme/2', n)), n).toBe('ignored');
    expect(s.errors().size).toBe(0);
  });

  it('readOnly: loads documents and last-good fallbacks, writes nothing, refuses write and remove', async () => {
    const w = await DesiredStore.open(dir);
    await w.write(withVersion('1'));
    await writeFile(docFile(), 'broken: [');
    await writeFile(path.join(dir, 'desired/acme/2/.17.yaml.1.abcdefabcdef.tmp'), 'x');
    const before = await tree(dir);
    const r = await DesiredStore.open(dir, { readOnly: true });
    expect(r.get(KEY)?.spec.version).toBe('1');
    expect(r.errorFor(KEY)?.error).toMatch(/YAML/);
    await expect(r.write(withVersion('2'))).rejects.toMatchObject({ code: 'E_READ_ONLY' });
    await expect(r.remove(KEY)).rejects.toMatchObject({ code: 'E_READ_ONLY' });
    await rm(docFile());
    expect(await r.reloadFile(docFile())).toBe('removed');
    await writeFile(docFile(), 'broken: [');
    expect(await tree(dir)).toEqual(before);
    // Nothing to read is not an error, and creates nothing.
    const empty = path.join(dir, 'none');
    expect((await DesiredStore.open(empty, { readOnly: true })).list()).toEqual([]);
    await expect(stat(empty)).rejects.toMatchObject({ code: 'ENOENT' });
  });
});

/** Every path under `root` with its content (files) — equal before and after a read-only use. */
async function tree(root: string): Promise<string[]> {
  const out: string[] = [];
  for (const e of await readdir(root, { withFileTypes: true, recursive: true })) {
    const p = path.join(e.parentPath, e.name);
    out.push(e.isFile() ? `${p} ${await readFile(p, 'utf8')}` : p);
  }
  return out.sort();
}

describe('documents deleted while no store was open', () => {
  it('are reported once by removedWhileClosed (their last-good copy outlived them), read-only too', async () => {
    const s = await DesiredStore.open(dir);
    await s.write(withVersion('1'));
    await s.write({ ...withVersion('1'), metadata: { team: 'acme', environment: 2, app: 18 } });
    await rm(docFile());
    const ro = await DesiredStore.open(dir, { readOnly: true });
    expect(ro.removedWhileClosed()).toEqual([KEY]);
    const again = await DesiredStore.open(dir);
    expect(again.removedWhileClosed()).toEqual([KEY]);
    expect(again.list().map((d) => d.metadata.app)).toEqual([18]);
    // The copy is gone now: the next opening has nothing to report.
    expect((await DesiredStore.open(dir)).removedWhileClosed()).toEqual([]);
    // An API delete removes both files: nothing to report either.
    await again.remove({ team: 'acme', env: 2, app: 18 });
    expect((await DesiredStore.open(dir)).removedWhileClosed()).toEqual([]);
  });
});
