/**
 * The private folder of one set of host components (a test run, or the operator's dev mode):
 * `/tmp/crate-h-<id>`, with an `owner.json` naming the process that owns it. Everything started for
 * it derives its names from `<id>` (cgroups `crate-h-<id>*`, bridge `crh<id>`), so a run that died
 * without tearing down can be cleaned up later by `reapStaleWorkspaces()` from the folder name alone,
 * without touching anything of a live run.
 */
import { randomBytes } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { mkdir, readdir, readFile, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { bridgeName, deleteBridge } from './dockerd.ts';
import { destroyCgroupsNamed, killAll, pidAlive, pidsMentioning, removeTree } from './process.ts';

const PREFIX = 'crate-h-';

/** A private folder for host components. */
export interface HostWorkspace {
  /** 8 lower-case hex digits, unique on this host while the workspace exists. */
  readonly id: string;
  /** Absolute path of the folder. */
  readonly root: string;
  /** Create (if needed) and return the sub-folder `name`. */
  dir(name: string): Promise<string>;
  /**
   * Remove the folder and sweep whatever its components left (stop the components first; this is
   * the safety net, it SIGKILLs). Idempotent.
   */
  remove(): Promise<void>;
}

function startTime(pid: number): string | undefined {
  try {
    const s = readFileSync(`/proc/${pid}/stat`, 'utf8');
    return s.slice(s.lastIndexOf(')') + 2).split(' ')[19];
  } catch {
    return undefined;
  }
}

/** Create a fresh workspace owned by this process. */
export async function createWorkspace(base = tmpdir()): Promise<HostWorkspace> {
  for (;;) {
    const id = randomBytes(4).toString('hex');
    const root = path.join(base, `${PREFIX}${id}`);
    try {
      await mkdir(root, { mode: 0o755 });
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'EEXIST') continue;
      throw err;
    }
    await writeFile(path.join(root, 'owner.json'), JSON.stringify({ pid: process.pid, start: startTime(process.pid) }));
    return {
      id,
      root,
      dir: async (name: string) => {
        const d = path.join(root, name);
        await mkdir(d, { recursive: true });
        return d;
      },
      remove: () => destroyWorkspace(root, id),
    };
  }
}

/** Remove everything a workspace's components may have left: processes, cgroups, bridge, folder. */
export async function destroyWorkspace(root: string, id: string): Promise<void> {
  await killAll(await pidsMentioning(root));
  await destroyCgroupsNamed(`${PREFIX}${id}`);
  await destroyCgroupsNamed(`${PREFIX}${id}-docker`);
  await deleteBridge(bridgeName(id));
  await removeTree(root);
}

/**
 * Clean up workspaces under `base` whose owner process is gone (a run that was killed). Live
 * workspaces of other runs are left alone. Returns the folders removed.
 */
export async function reapStaleWorkspaces(base = tmpdir()): Promise<string[]> {
  const reaped: string[] = [];
  let entries: string[];
  try {
    entries = await readdir(base);
  } catch {
    return reaped;
  }
  for (const name of entries) {
    const m = /^crate-h-([0-9a-f]{8})$/.exec(name);
    if (!m) continue;
    const root = path.join(base, name);
    let owner: { pid?: number; start?: string };
    try {
      owner = JSON.parse(await readFile(path.join(root, 'owner.json'), 'utf8')) as typeof owner;
    } catch {
      // No owner file yet: a run that is just being created. Leave it.
      continue;
    }
    const alive = typeof owner.pid === 'number' && pidAlive(owner.pid) && startTime(owner.pid) === owner.start;
    if (alive) continue;
    await destroyWorkspace(root, m[1] as string);
    reaped.push(root);
  }
  return reaped;
}
