/**
 * GitOps drops, the awkward files, against real systemd and Caddy: a corrupt document next to a valid
 * one is reported on its own and the valid app is unaffected; corrupting a document in force keeps the
 * last valid version (nothing is removed); editor leftovers and dotfiles are ignored; a file written in
 * two parts is applied only once complete.
 */
import { appendFile, rm, symlink, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { freePort } from '../harness/index.ts';
import { docPath, dropFile, handYaml, mainPid, unitsOf } from './gitops.ts';
import { startTestOperator, waitFor, type TestOperator } from './operator.ts';

interface AppEntry {
  team_id: string;
  app_id: number;
  desired: unknown;
  document_error: { path: string; error: string } | null;
}

async function apps(t: TestOperator): Promise<{ apps: AppEntry[]; errors: { path: string }[] }> {
  return (await t.api('GET', '/v1/apps')).body as never;
}

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

describe('GitOps drops: awkward files', () => {
  it('a corrupt file is reported on its own; the valid app next to it and the last valid version stay', async () => {
    const t = await startTestOperator({ resyncMs: 1_000 });
    const good = { team: t.team, env: 1, app: 1 };
    const bad = { team: t.team, env: 1, app: 2 };
    const port = await freePort();
    const domain = `${t.team}.good.test`;
    const goodYaml = handYaml({ team: t.team, version: 'v1', deploymentId: '601', domain, instances: { web: { port } } });
    await dropFile(docPath(t.config.stateDir, good), goodYaml);
    await dropFile(docPath(t.config.stateDir, bad), 'apiVersion: crate-operator/v1\nkind: App\nspec: { runtime: binary\n');
    expect((await t.settle(601)).status).toBe('succeeded');
    const unit = (await unitsOf(good))[0]?.unit as string;
    const pid = await mainPid(unit);
    expect(pid).toBeGreaterThan(0);

    const listing = await waitFor('the corrupt document reported', async () => {
      const l = await apps(t);
      return l.apps.find((a) => a.app_id === 2 && a.team_id === t.team)?.document_error ? l : undefined;
    });
    const mine = listing.apps.filter((a) => a.team_id === t.team);
    expect(mine.find((a) => a.app_id === 2)).toMatchObject({ desired: null, document_error: { path: docPath(t.config.stateDir, bad) } });
    expect(mine.find((a) => a.app_id === 1)).toMatchObject({ document_error: null });
    expect(mine.find((a) => a.app_id === 1)?.desired).not.toBeNull();

    // Corrupt the document in force: reported, the last valid version stays, nothing is touched.
    await writeFile(docPath(t.config.stateDir, good), goodYaml.replace('instances:', 'instances: [oops'));
    await waitFor('the corrupted document reported', async () => (await apps(t)).apps.find((a) => a.team_id === t.team && a.app_id === 1)?.document_error);
    await sleep(2_500); // two resyncs
    expect(await mainPid(unit)).toBe(pid);
    expect(JSON.parse((await t.viaCaddy(domain)).text)).toMatchObject({ version: 'v1' });
    expect(t.op.store.get(good)?.spec.version).toBe('v1');

    // Fixed again: the error goes, the app was never restarted.
    await dropFile(docPath(t.config.stateDir, good), goodYaml);
    await waitFor('error cleared', async () => (await apps(t)).apps.find((a) => a.team_id === t.team && a.app_id === 1)?.document_error === null);
    expect(await mainPid(unit)).toBe(pid);
    // The corrupt file never created anything.
    expect(await unitsOf(bad)).toEqual([]);
  }, 60_000);

  it('editor leftovers and dotfiles are ignored', async () => {
    const t = await startTestOperator({ resyncMs: 1_000 });
    const key = { team: t.team, env: 1, app: 3 };
    const file = docPath(t.config.stateDir, key);
    const dir = path.dirname(file);
    const valid = handYaml({ team: t.team, app: 3, version: 'v1', deploymentId: '603', domain: `${t.team}.editor.test`, instances: { web: { port: await freePort() } } });
    await dropFile(path.join(dir, '.3.yaml.swp'), valid);
    await dropFile(path.join(dir, '3.yaml~'), valid);
    await dropFile(path.join(dir, '3.yaml.bak'), valid);
    await dropFile(path.join(dir, '4913'), valid);
    await dropFile(path.join(dir, '.hidden.yaml'), valid);
    // Emacs' lock file: a dangling symlink named like a dotted document.
    await symlink('root@host.1234:1700000000', path.join(dir, '.#3.yaml'));
    await sleep(1_500);
    const l = await apps(t);
    expect(l.apps.filter((a) => a.team_id === t.team)).toEqual([]);
    expect(l.errors.filter((e) => e.path.startsWith(t.config.stateDir))).toEqual([]);
    expect(t.op.store.get(key)).toBeUndefined();
    expect(await unitsOf(key)).toEqual([]);
  }, 30_000);

  it('a file written in two parts is not applied before it is complete', async () => {
    const t = await startTestOperator({ resyncMs: 1_000 });
    const key = { team: t.team, env: 1, app: 4 };
    const file = docPath(t.config.stateDir, key);
    const full = handYaml({ team: t.team, app: 4, version: 'v1', deploymentId: '604', domain: `${t.team}.half.test`, instances: { web: { port: await freePort() } }, env_vars: { FIRST: '1', SECOND: '2' } });
    // The first part alone is a valid document (env is the last block), so applying it early would show.
    const cut = full.indexOf('    SECOND:');
    const seen: string[] = [];
    const watch = setInterval(() => {
      const d = t.op.store.get(key);
      const err = t.op.store.errorFor(key);
      seen.push(d ? Object.keys(d.spec.env).join(',') : err ? 'error' : 'none');
    }, 2);
    try {
      await dropFile(path.join(path.dirname(file), '.keep'), '');
      await writeFile(file, full.slice(0, cut));
      await sleep(50); // shorter than the watcher's stability window
      await appendFile(file, full.slice(cut));
      expect((await t.settle(604)).status).toBe('succeeded');
    } finally {
      clearInterval(watch);
    }
    expect(seen).not.toContain('FIRST');
    expect(seen).not.toContain('error');
    expect(seen.at(-1)).toBe('FIRST,SECOND');
  }, 30_000);
  it('the resync re-reads state/desired: files are picked up within one resync even with no file events', async () => {
    const t = await startTestOperator({ resyncMs: 1_000 }, { watch: false });
    const key = { team: t.team, env: 1, app: 5 };
    const file = docPath(t.config.stateDir, key);
    await dropFile(file, handYaml({ team: t.team, app: 5, version: 'v1', deploymentId: '605', domain: `${t.team}.nowatch.test`, instances: { web: { port: await freePort() } } }));
    expect((await t.settle(605)).status).toBe('succeeded');
    await dropFile(docPath(t.config.stateDir, { ...key, app: 6 }), 'kind: [broken\n');
    await waitFor('the corrupt file reported', async () => (await apps(t)).apps.find((a) => a.team_id === t.team && a.app_id === 6)?.document_error, 5_000);
    await rm(file);
    await waitFor('app removed', async () => (await unitsOf(key)).length === 0, 10_000);
  }, 30_000);
});
