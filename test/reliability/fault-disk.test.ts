/**
 * Disk full in the state dir: the operator's state dir (documents, records) lives on a small tmpfs
 * mounted by the test (unmounted after). With the file system filled up:
 *
 * - requests that must write answer a clear error (E_STATE_FULL, nothing half-written: no document
 *   without its deployment record and no record without its document), reads keep working;
 * - a deployment in flight when the disk fills does not crash the operator: it stops where it is
 *   (E_STATE_FULL in the log) and the serving version keeps serving;
 * - the apps keep serving and nothing is removed;
 * - once space is freed, deployments go through again, including a retry of a refused request with
 *   the same deployment id.
 */
import { open, readdir, rm } from 'node:fs/promises';
import path from 'node:path';
import { execa } from 'execa';
import { pino } from 'pino';
import { describe, expect, it } from 'vitest';
import { cleanupAfter, freePort, getTestHost, tempDir, waitFor } from '../harness/index.ts';
import { startTestOperator, type TestOperator } from '../e2e/operator.ts';
import { report } from './report.ts';

/** Fill the file system of `dir` with one file until it is full; returns the file. */
async function fill(dir: string): Promise<string> {
  const file = path.join(dir, 'filler');
  const fh = await open(file, 'w', 0o600);
  const chunk = Buffer.alloc(64 * 1024, 1);
  try {
    for (;;) await fh.write(chunk);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'ENOSPC') throw err;
  } finally {
    await fh.close().catch(() => undefined);
  }
  // Whatever small chunk still fits.
  const small = await open(file, 'a');
  try {
    for (;;) await small.write(Buffer.alloc(512, 1));
  } catch {
    // Full.
  } finally {
    await small.close().catch(() => undefined);
  }
  return file;
}

function body(t: TestOperator, app: number, id: number, version: string, ports: [number, number], env: Record<string, string> = {}): Record<string, unknown> {
  return {
    team_id: t.team,
    environment_id: 1,
    app_id: app,
    deployment_id: id,
    deployment_strategy: 'blue_green',
    domain: `a${app}.${t.team}.disk.test`,
    asset_url: `${getTestHost().assets.baseUrl}/app-${version}.tar.gz`,
    callback_url: 'http://127.0.0.1:9/cb',
    env_vars: env,
    health_check_path: '/healthz',
    target_version: version,
    slots: { blue: { instance_id: `b${app}`, port: ports[0] }, green: { instance_id: `g${app}`, port: ports[1] } },
  };
}

describe('disk full in the state dir', () => {
  it('clear errors, nothing half-written, no crash, apps keep serving, recovery once space is freed', async () => {
    const mnt = await tempDir('tmpfs');
    await execa('mount', ['-t', 'tmpfs', '-o', 'size=6m,mode=0700', 'tmpfs', mnt]);
    cleanupAfter(() => execa('umount', ['-l', mnt], { reject: false }));
    const crashes: unknown[] = [];
    const onCrash = (e: unknown): void => void crashes.push(e);
    process.on('uncaughtException', onCrash);
    process.on('unhandledRejection', onCrash);
    cleanupAfter(() => {
      process.off('uncaughtException', onCrash);
      process.off('unhandledRejection', onCrash);
    });
    const logs: string[] = [];
    // Only the state dir: the systemd user manager runs in its own mount namespace and would not see
    // units' files on a mount made here (and apps dirs are configured apart from it anyway).
    const apps = await tempDir('apps');
    const t = await startTestOperator({ stateDir: path.join(mnt, 'state'), appsDir: apps }, { logger: pino({ level: 'info' }, { write: (l: string) => void logs.push(l) }) });
    const ports = await Promise.all(Array.from({ length: 6 }, () => freePort()));
    const p = (app: number): [number, number] => [ports[app * 2 - 2] as number, ports[app * 2 - 1] as number];
    for (const app of [1, 2]) expect((await t.api('POST', '/v1/app/instance/binary/deploy', body(t, app, app, 'v1', p(app)))).status).toBe(202);
    for (const app of [1, 2]) {
      const s = await t.settle(app);
      expect(s.status, JSON.stringify(s.error)).toBe('succeeded');
    }

    // A deployment in flight (slow to start) when the disk fills up.
    expect((await t.api('POST', '/v1/app/instance/binary/deploy', body(t, 2, 20, 'v2', p(2), { SLOW_START_MS: '3000' }))).status).toBe(202);
    await waitFor('deployment 20 waiting for health', async () => String((await t.api('GET', '/v1/app/deploy/20/status')).body.phase).startsWith('wait until'), 20_000);
    const filler = await fill(mnt);
    cleanupAfter(() => rm(filler, { force: true }));

    // A new request cannot be written: a clear error, and nothing of it on disk or in the records.
    const docsBefore = (await readdir(path.join(mnt, 'state', 'desired', t.team, '1'))).sort();
    const refused = await t.api('POST', '/v1/app/instance/binary/deploy', body(t, 3, 30, 'v1', p(3)));
    expect(refused.status, JSON.stringify(refused.body)).toBe(500);
    expect((refused.body.error as { code: string }).code).toBe('E_STATE_FULL');
    expect((await readdir(path.join(mnt, 'state', 'desired', t.team, '1'))).sort()).toEqual(docsBefore);
    expect(t.op.records.getRecord('30')).toBeUndefined();
    // Reads still answer.
    expect((await t.api('GET', '/v1/app/deploy/1/status')).status).toBe(200);
    expect((await t.api('GET', '/v1/apps')).status).toBe(200);
    // Serving apps keep serving; the operator stays up through the in-flight deployment's writes.
    await new Promise((r) => setTimeout(r, 5_000));
    for (const app of [1, 2]) expect((await t.viaCaddy(`a${app}.${t.team}.disk.test`)).status).toBe(200);
    expect(crashes).toEqual([]);

    // Space again: the refused request goes through with the same id; the stuck deployment finishes.
    await rm(filler);
    const retried = await t.api('POST', '/v1/app/instance/binary/deploy', body(t, 3, 30, 'v1', p(3)));
    expect(retried.status, JSON.stringify(retried.body)).toBe(202);
    expect((await t.settle(30, 60_000)).status).toBe('succeeded');
    const s20 = await t.settle(20, 60_000);
    expect(['succeeded', 'failed', 'rolled_back']).toContain(s20.status);
    for (const app of [1, 2, 3]) expect((await t.viaCaddy(`a${app}.${t.team}.disk.test`)).status).toBe(200);
    expect(crashes).toEqual([]);
    report('fault-disk', { refused: (refused.body.error as { code: string }).code, in_flight: s20.status, full_log_lines: logs.filter((l) => /E_STATE_FULL|ENOSPC|SQLITE_FULL/.test(l)).length });
  }, 90_000);
});
