/**
 * The kill test: a child process rewriting 1,000 documents through the store is SIGKILLed mid-way.
 * Afterwards every file parses and is byte-for-byte its old or its new version (never a mix, never
 * empty), every write the child reported complete is there, and opening the store removes the stray
 * temp files the interrupted writes left.
 */
import { mkdir, mkdtemp, readdir, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { execa } from 'execa';
import { afterEach, expect, it } from 'vitest';
import { TEMP_FILE_PATTERN } from '../../src/desired/atomic.ts';
import { parseDesiredYaml, serializeDesired } from '../../src/desired/document.ts';
import { DesiredStore } from '../../src/desired/store.ts';
import { killTestDoc } from './fixtures.ts';

const N = 1000;
const writer = path.join(path.dirname(fileURLToPath(import.meta.url)), 'kill-writer.ts');
let dir: string | undefined;

afterEach(async () => {
  if (dir) await rm(dir, { recursive: true, force: true });
});

async function allFiles(root: string): Promise<string[]> {
  const out: string[] = [];
  for (const e of await readdir(root, { withFileTypes: true, recursive: true })) if (e.isFile()) out.push(path.join(e.parentPath, e.name));
  return out;
}

it('SIGKILL while writing 1,000 documents leaves each one old or new, and start-up cleans temp files', async () => {
  dir = await mkdtemp(path.join(tmpdir(), 'crate-kill-'));
  // The old versions (and their last-good copies) as the store would have written them. Plain writes:
  // this is set-up, not the subject, and fsyncing 2,000 files would only make the test slow.
  const oldText = new Map<number, string>();
  const newText = new Map<number, string>();
  for (const root of ['desired', 'desired-last-good']) await mkdir(path.join(dir, root, 'kill/1'), { recursive: true, mode: 0o700 });
  for (let app = 1; app <= N; app++) {
    oldText.set(app, serializeDesired(killTestDoc(app, 'old')));
    newText.set(app, serializeDesired(killTestDoc(app, 'new')));
  }
  const d = dir;
  await Promise.all(
    ['desired', 'desired-last-good'].flatMap((root) => [...oldText].map(([app, text]) => writeFile(path.join(d, root, 'kill/1', `${app}.yaml`), text, { mode: 0o600 }))),
  );

  const child = execa(process.execPath, ['--import', 'tsx', writer, dir, String(N), '16'], { reject: false, buffer: false, cleanup: true });
  const done = new Set<number>();
  let killedAt = 0;
  await new Promise<void>((resolve, reject) => {
    const deadline = setTimeout(() => reject(new Error(`writer made no progress: ${done.size} done`)), 60_000);
    let pending = '';
    child.stdout?.on('data', (chunk: Buffer) => {
      pending += chunk.toString();
      const lines = pending.split('\n');
      pending = lines.pop() ?? '';
      for (const l of lines) {
        const m = /^done (\d+)$/.exec(l);
        if (m) done.add(Number(m[1]));
      }
      if (done.size >= N / 3 && killedAt === 0) {
        killedAt = done.size;
        child.kill('SIGKILL');
        clearTimeout(deadline);
        resolve();
      }
    });
    child.on('exit', () => {
      clearTimeout(deadline);
      if (killedAt === 0) reject(new Error(`writer exited before it was killed (${done.size} done)`));
    });
  });
  const result = await child;
  expect(result.signal).toBe('SIGKILL');

  const before = await allFiles(dir);
  const strayTemps = before.filter((f) => TEMP_FILE_PATTERN.test(path.basename(f)));
  // Old and new are valid documents (checked once), so byte equality with one of them means the file
  // parses and is whole.
  expect(parseDesiredYaml(oldText.get(1) as string).ok && parseDesiredYaml(newText.get(1) as string).ok).toBe(true);
  let fresh = 0;
  for (let app = 1; app <= N; app++) {
    for (const root of ['desired', 'desired-last-good']) {
      const text = await readFile(path.join(dir, root, 'kill/1', `${app}.yaml`), 'utf8');
      const isNew = text === newText.get(app);
      expect(isNew || text === oldText.get(app), `${root} app ${app} is neither old nor new`).toBe(true);
      if (root === 'desired') {
        if (done.has(app)) expect(isNew, `app ${app} was reported written`).toBe(true);
        if (isNew) fresh += 1;
      }
    }
  }
  expect(fresh).toBeGreaterThanOrEqual(killedAt);
  expect(fresh).toBeLessThan(N);

  const reopened = await DesiredStore.open(dir);
  const after = await allFiles(dir);
  expect(after.filter((f) => TEMP_FILE_PATTERN.test(path.basename(f)))).toEqual([]);
  expect(after.length).toBe(before.length - strayTemps.length);
  expect(reopened.list()).toHaveLength(N);
  expect(reopened.errors().size).toBe(0);
  console.log(`kill test: killed after ${killedAt} reported writes; ${fresh} new on disk; ${strayTemps.length} stray temp files cleaned`);
}, 120_000);
