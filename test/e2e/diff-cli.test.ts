/**
 * `crate-operator diff` against a state dir and the real systemd, Docker and Caddy: exit 0 in sync,
 * 1 with drift (the heal it would do is printed), 2 for an invalid document or an unreachable
 * component; `--json`; it changes nothing, with an operator running beside it.
 */
import { readdir, readFile, stat } from 'node:fs/promises';
import path from 'node:path';
import { Command } from 'commander';
import { describe, expect, it } from 'vitest';
import { registerDiff } from '../../src/cli/diff.ts';
import { freePort, getTestHost, systemctlUser, systemdEnv } from '../harness/index.ts';
import { docPath, dropFile, handYaml, unitsOf } from './gitops.ts';
import { startTestOperator, type TestOperator } from './operator.ts';

async function diff(t: TestOperator, ...extra: string[]): Promise<{ code: number; out: string; err: string }> {
  const host = getTestHost();
  let out = '';
  let err = '';
  let code = -1;
  const program = new Command().exitOverride();
  registerDiff(program, { out: (s) => (out += s), isTTY: false }, (c) => (code = c), (l) => (err += `${l}\n`), { PATH: process.env.PATH, ...systemdEnv() });
  const flags = ['--state-dir', t.config.stateDir, '--systemd-scope', 'user', '--docker-socket', host.docker.socket, '--caddy-admin', host.caddy.adminUrl, '--caddy-server', host.caddy.serverName];
  await program.parseAsync(['diff', ...flags, ...extra], { from: 'user' });
  return { code, out, err };
}

/** Every file under the state dir with its size and mtime (records.db aside: SQLite may checkpoint). */
async function fingerprint(dir: string): Promise<string[]> {
  const out: string[] = [];
  for (const e of await readdir(dir, { withFileTypes: true, recursive: true })) {
    const p = path.join(e.parentPath, e.name);
    if (!e.isFile() || e.name.startsWith('records.db')) continue;
    const s = await stat(p);
    out.push(`${p} ${s.size} ${s.mtimeMs} ${(await readFile(p)).length}`);
  }
  return out.sort();
}

describe('crate-operator diff', () => {
  it('exit 0 in sync, 1 with drift (printing the heal), 2 for invalid documents or unreachable components; changes nothing', async () => {
    const t = await startTestOperator({ resyncMs: 600_000 });
    const key = { team: t.team, env: 1, app: 1 };
    const port = await freePort();
    const domain = `${t.team}.diff.test`;
    await dropFile(docPath(t.config.stateDir, key), handYaml({ team: t.team, version: 'v1', deploymentId: '951', domain, instances: { web: { port } } }));
    expect((await t.settle(951)).status).toBe('succeeded');

    const synced = await diff(t, '--all');
    expect([synced.code, synced.err]).toEqual([0, '']);
    expect(synced.out).toContain(`= ${t.team}/1/1  in sync`);
    expect(synced.out).toMatch(/0 to change/);

    const unit = (await unitsOf(key))[0]?.unit as string;
    await systemctlUser(['stop', unit]);
    const before = await fingerprint(t.config.stateDir);
    const drift = await diff(t);
    expect(drift.code).toBe(1);
    expect(drift.out).toContain(`~ ${t.team}/1/1  heal, 2 steps\n    1. start web v1 on :${port}\n    2. wait until web on :${port} is healthy\n`);
    expect(drift.out).toMatch(/~ \/instances\/web\/.*\/state "running"/);
    const json = JSON.parse((await diff(t, '--json')).out) as { status: string; apps: { app: string; mode: string; plan: { steps: string[] } }[] };
    expect(json.status).toBe('changes');
    expect(json.apps.find((a) => a.app === `${t.team}/1/1`)).toMatchObject({ mode: 'heal', plan: { steps: [`start web v1 on :${port}`, `wait until web on :${port} is healthy`] } });
    // Nothing changed: the unit is still stopped, the state dir is as it was.
    expect((await unitsOf(key)).find((u) => u.unit === unit)?.active).not.toBe('active');
    expect(await fingerprint(t.config.stateDir)).toEqual(before);
    await systemctlUser(['start', unit]);

    await dropFile(docPath(t.config.stateDir, { ...key, app: 2 }), 'spec: [\n');
    const invalid = await diff(t);
    expect(invalid.code).toBe(2);
    expect(invalid.out).toContain(`✗ ${docPath(t.config.stateDir, { ...key, app: 2 })}: YAML`);

    const down = await diff(t, '--docker-socket', path.join(t.config.stateDir, 'no.sock'));
    expect(down.code).toBe(2);
    expect(down.out).toMatch(/docker unavailable/);

    const missing = await diff(t, '--state-dir', path.join(t.config.stateDir, 'nope'));
    expect(missing.code).toBe(2);
    expect(missing.err).toMatch(/does not exist/);
  }, 60_000);
});
