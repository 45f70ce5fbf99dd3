/**
 * Workspaces and the stale-run reaper: a workspace whose owner died is cleaned up (its processes
 * killed, its folder removed); a live one of another run is left alone. Missing binaries raise a
 * CrateError naming the package to install.
 */
import { existsSync } from 'node:fs';
import { mkdir, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { execa } from 'execa';
import { describe, expect, it } from 'vitest';
import { hasCode } from '../../src/core/errors.ts';
import { pidAlive, requireBinary } from '../../src/host/process.ts';
import { createWorkspace, reapStaleWorkspaces } from '../../src/host/workspace.ts';
import { cleanupAfter, tempDir } from '../harness/index.ts';

describe('workspaces', () => {
  it('reaps a workspace whose owner is gone, killing what mentions it, and keeps live ones', async () => {
    const base = await tempDir('ws');
    // A dead owner: a process that has already exited.
    const gone = execa('/bin/true');
    await gone;
    const staleRoot = path.join(base, 'crate-h-0badc0de');
    await mkdir(staleRoot);
    await writeFile(path.join(staleRoot, 'owner.json'), JSON.stringify({ pid: gone.pid, start: 'x' }));
    const orphan = execa('/bin/sleep', ['60'], { env: { CRATE_TEST_WS: staleRoot }, reject: false });
    cleanupAfter(async () => {
      orphan.kill('SIGKILL');
      await orphan;
    });
    const live = await createWorkspace(base);
    cleanupAfter(() => live.remove());

    const reaped = await reapStaleWorkspaces(base);
    expect(reaped).toEqual([staleRoot]);
    const done = await orphan;
    expect(done.signal).toBe('SIGKILL');
    expect(pidAlive(orphan.pid as number)).toBe(false);
    expect(existsSync(staleRoot)).toBe(false);
    expect(existsSync(live.root)).toBe(true);
  });

  it('a workspace is /tmp/crate-h-<8 hex> by default and remove() deletes it', async () => {
    const ws = await createWorkspace();
    cleanupAfter(() => ws.remove());
    expect(ws.root).toBe(path.join(tmpdir(), `crate-h-${ws.id}`));
    expect(ws.id).toMatch(/^[0-9a-f]{8}$/);
    await ws.dir('x');
    await ws.remove();
    expect(existsSync(ws.root)).toBe(false);
  });

  it('a missing binary is E_HOST_MISSING naming the package', () => {
    let err: unknown;
    try {
      requireBinary('crate-no-such-binary', 'crate-pkg');
    } catch (e) {
      err = e;
    }
    expect(hasCode(err, 'E_HOST_MISSING')).toBe(true);
    expect((err as Error).message).toContain('apt-get install -y crate-pkg');
  });
});
