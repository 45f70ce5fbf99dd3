/**
 * Crash-safe file writes: a reader (or a restarted operator) sees either the complete old content or
 * the complete new content, never a mix, and a completed write survives power loss.
 *
 * Recipe: write a temp file in the same folder (same file system, so rename is atomic), fsync it,
 * rename it over the target, fsync the folder (so the rename itself is durable). Temp files are named
 * `.<target name>.<pid>.<random>.tmp`; a crash can leave them behind, and cleanStrayTemps removes
 * them at start-up. Watchers must ignore names matching TEMP_FILE_PATTERN.
 */
import { randomBytes } from 'node:crypto';
import { constants } from 'node:fs';
import { mkdir, open, readdir, rename, rmdir, unlink } from 'node:fs/promises';
import path from 'node:path';

/** Names of temp files made by writeFileAtomic. */
export const TEMP_FILE_PATTERN = /^\..+\.[0-9]+\.[0-9a-f]{12}\.tmp$/;

/** fsync a folder, making renames and unlinks inside it durable. */
export async function fsyncDir(dir: string): Promise<void> {
  const fh = await open(dir, constants.O_RDONLY | constants.O_DIRECTORY);
  try {
    await fh.sync();
  } finally {
    await fh.close();
  }
}

/**
 * Create `dir` (and missing parents) with `mode`, fsyncing each parent that gained an entry.
 * Existing folders keep their mode.
 */
export async function ensureDir(dir: string, mode = 0o700): Promise<void> {
  const first = await mkdir(dir, { recursive: true, mode });
  if (first === undefined) return;
  // Every folder from `first` down to `dir` is new: fsync its parent so the entry survives a crash.
  let cur = path.resolve(dir);
  const stop = path.dirname(path.resolve(first));
  const parents: string[] = [];
  while (cur !== stop && cur !== path.dirname(cur)) {
    parents.push(path.dirname(cur));
    cur = path.dirname(cur);
  }
  for (const p of parents) await fsyncDir(p);
}

/** Atomically replace `file` with `data` (mode `mode`, default 0600). The folder must exist. */
export async function writeFileAtomic(file: string, data: string | Uint8Array, mode = 0o600): Promise<void> {
  const dir = path.dirname(file);
  const tmp = path.join(dir, `.${path.basename(file)}.${process.pid}.${randomBytes(6).toString('hex')}.tmp`);
  const fh = await open(tmp, constants.O_WRONLY | constants.O_CREAT | constants.O_EXCL | constants.O_NOFOLLOW, mode);
  let renamed = false;
  try {
    try {
      await fh.writeFile(data);
      await fh.sync();
    } finally {
      await fh.close();
    }
    await rename(tmp, file);
    renamed = true;
  } finally {
    if (!renamed) await unlink(tmp).catch(() => undefined);
  }
  await fsyncDir(dir);
}

/** Remove `file` durably. Resolves false when it did not exist. */
export async function removeFileDurably(file: string): Promise<boolean> {
  try {
    await unlink(file);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return false;
    throw err;
  }
  await fsyncDir(path.dirname(file));
  return true;
}

/**
 * Remove empty folders from `dir` up to (not including) `root`, so deleted apps leave no husks.
 * Stops at the first folder that is not empty.
 */
export async function pruneEmptyDirs(dir: string, root: string): Promise<void> {
  let cur = path.resolve(dir);
  const top = path.resolve(root);
  while (cur.startsWith(top + path.sep)) {
    try {
      await rmdir(cur);
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code;
      if (code === 'ENOTEMPTY' || code === 'EEXIST' || code === 'ENOENT') return;
      throw err;
    }
    cur = path.dirname(cur);
    await fsyncDir(cur);
  }
}

/**
 * Delete every temp file left by an interrupted writeFileAtomic under `root` (recursively).
 * Only call it when no writer is active on `root` (at start-up). Returns the removed paths.
 */
export async function cleanStrayTemps(root: string): Promise<string[]> {
  const removed: string[] = [];
  const walk = async (dir: string): Promise<void> => {
    let entries;
    try {
      entries = await readdir(dir, { withFileTypes: true });
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return;
      throw err;
    }
    let changed = false;
    for (const e of entries) {
      const p = path.join(dir, e.name);
      if (e.isDirectory()) await walk(p);
      else if (e.isFile() && TEMP_FILE_PATTERN.test(e.name)) {
        await unlink(p);
        removed.push(p);
        changed = true;
      }
    }
    if (changed) await fsyncDir(dir);
  };
  await walk(root);
  return removed;
}
