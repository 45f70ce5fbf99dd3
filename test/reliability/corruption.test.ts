/**
 * Corruption of each kind of state file, on a real operator with four apps serving through Caddy.
 * Per variant the operator is stopped, one item is corrupted, and a new operator starts on the same
 * state dir. Each time: it starts within 5 s; only the corrupted item is reported; every app keeps
 * serving with the same processes (nothing restarted, nothing deleted: units, routes and documents
 * all still there); and the operator keeps reconciling (a killed process of another app is healed).
 *
 * Variants: a desired document truncated, cut in half, with flipped bytes, replaced by a YAML alias
 * bomb, and corrupted together with its last-good copy (the app is then left alone, not removed); a
 * machine snapshot of an interrupted deployment made unreadable (that deployment fails with
 * E_RESUME_FAILED, the app keeps serving its old version); a deployment row with broken JSON; and
 * records.db with flipped header bytes, cut in half and truncated (set aside as
 * records.db.corrupt-<time>, reported loudly, the operator starts with fresh records and re-adopts
 * the documents without touching the apps).
 */
import { readdir, readFile, writeFile, truncate, stat } from 'node:fs/promises';
import path from 'node:path';
import Database from 'better-sqlite3';
import { pino, type Logger } from 'pino';
import { describe, expect, it } from 'vitest';
import { parseDesiredYaml } from '../../src/desired/document.ts';
import { startOperator, type RunningOperator } from '../../src/operator.ts';
import { cleanupAfter, freePort, getTestHost, httpGet, systemctlUser, systemdEnv, waitFor } from '../harness/index.ts';
import { startTestOperator, TOKEN, type TestOperator } from '../e2e/operator.ts';
import { report } from './report.ts';

interface App {
  app: number;
  domain: string;
  unit?: string;
  pid?: number;
}

async function api(op: RunningOperator, method: 'GET' | 'POST', url: string, body?: unknown): Promise<{ status: number; body: Record<string, unknown> }> {
  const r = await op.app.inject({ method, url, headers: { authorization: `Bearer ${TOKEN}` }, ...(body === undefined ? {} : { payload: body as object }) });
  return { status: r.statusCode, body: r.body ? r.json<Record<string, unknown>>() : {} };
}

async function settle(op: RunningOperator, id: string | number, timeoutMs = 30_000): Promise<Record<string, unknown>> {
  return waitFor(
    `deployment ${id} to finish`,
    async () => {
      const r = await api(op, 'GET', `/v1/app/deploy/${id}/status`);
      const s = r.body.status as string | undefined;
      return s && ['succeeded', 'failed', 'rolled_back', 'superseded'].includes(s) ? r.body : undefined;
    },
    timeoutMs,
    100,
  );
}

async function mainPid(unit: string): Promise<number> {
  return Number(String((await systemctlUser(['show', '-p', 'MainPID', '--value', unit])).stdout).trim());
}

/** Deterministic byte flips that make the YAML unusable (tries seeds until the parser refuses it). */
function flipBytes(text: Buffer): Buffer {
  for (let seed = 1; ; seed++) {
    const b = Buffer.from(text);
    let x = seed * 2654435761;
    for (let i = 0; i < 12; i++) {
      x = (x * 1103515245 + 12345) >>> 0;
      const at = x % b.length;
      b[at] = (b[at] as number) ^ (1 << (x % 7)) ^ 0x80;
    }
    if (!parseDesiredYaml(b.toString('utf8')).ok) return b;
  }
}

const ALIAS_BOMB = ['a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]', ...Array.from({ length: 9 }, (_, i) => `${String.fromCharCode(98 + i)}: &${String.fromCharCode(98 + i)} [${Array(9).fill(`*${String.fromCharCode(97 + i)}`).join(',')}]`), ''].join('\n');

describe('corrupted state files', () => {
  it('each kind of corruption: start < 5 s, only that item reported, every app keeps serving and reconciling, nothing deleted', async () => {
    const host = getTestHost();
    const t: TestOperator = await startTestOperator();
    const logs: string[] = [];
    const logger: Logger = pino({ level: 'info' }, { write: (l: string) => void logs.push(l) });
    let op = t.op;
    const apps: App[] = [1, 2, 3, 4].map((app) => ({ app, domain: `a${app}.${t.team}.corrupt.test` }));
    const ports = await Promise.all(apps.flatMap(() => [freePort(), freePort()]));
    const body = (a: App, id: number, version: string, asset = `app-${version}.tar.gz`): Record<string, unknown> => ({
      team_id: t.team,
      environment_id: 1,
      app_id: a.app,
      deployment_id: id,
      deployment_strategy: 'blue_green',
      domain: a.domain,
      asset_url: `${host.assets.baseUrl}/${asset}`,
      callback_url: 'http://127.0.0.1:9/cb',
      env_vars: { N: String(a.app) },
      health_check_path: '/healthz',
      target_version: version,
      slots: { blue: { instance_id: `b${a.app}`, port: ports[a.app * 2 - 2] }, green: { instance_id: `g${a.app}`, port: ports[a.app * 2 - 1] } },
    });
    for (const a of apps) expect((await api(op, 'POST', '/v1/app/instance/binary/deploy', body(a, a.app, 'v1'))).status).toBe(202);
    for (const a of apps) expect((await settle(op, a.app)).status).toBe('succeeded');
    const units = async (): Promise<{ unit: string; active: string }[]> => JSON.parse(String((await systemctlUser(['list-units', '--all', '--output=json', `crate-${t.team}:*`])).stdout)) as { unit: string; active: string }[];
    for (const a of apps) {
      a.unit = (await units()).find((u) => u.unit.startsWith(`crate-${t.team}:1:${a.app}:`) && u.active === 'active')?.unit;
      a.pid = await mainPid(a.unit as string);
    }
    const stateDir = t.config.stateDir;
    const docPath = (a: App): string => path.join(stateDir, 'desired', t.team, '1', `${a.app}.yaml`);
    const lastGood = (a: App): string => path.join(stateDir, 'desired-last-good', t.team, '1', `${a.app}.yaml`);
    const originals = new Map<number, Buffer>();
    for (const a of apps) originals.set(a.app, await readFile(docPath(a)));

    /** Stop, corrupt, start again; returns the start time in ms. */
    const restart = async (corrupt: () => Promise<void>): Promise<number> => {
      await op.stop();
      await corrupt();
      const t0 = performance.now();
      op = await startOperator(t.config, { systemdEnv: systemdEnv(), listen: false, logger });
      const ms = performance.now() - t0;
      const mine = op;
      cleanupAfter(() => mine.stop());
      return ms;
    };
    /** Every app serves its version through Caddy from the same process; nothing was removed. */
    const allServing = async (what: string, versions: Record<number, string> = {}): Promise<void> => {
      for (const a of apps) {
        const r = await httpGet(`http://127.0.0.1:${host.caddy.httpPort}/`, { host: a.domain });
        expect(r.status, `${what}: app ${a.app}`).toBe(200);
        expect((r.body as { version: string }).version, `${what}: app ${a.app}`).toBe(versions[a.app] ?? 'v1');
        expect(await mainPid(a.unit as string), `${what}: app ${a.app} not restarted`).toBe(a.pid);
      }
      expect((await units()).filter((u) => u.active === 'active').length, what).toBe(apps.length);
      for (const a of apps) await stat(docPath(a));
    };
    /** The operator still reconciles: a killed process of `a` is brought back. */
    const heals = async (a: App): Promise<void> => {
      await systemctlUser(['kill', '--signal=SIGKILL', a.unit as string]);
      a.pid = await waitFor(`app ${a.app} healed`, async () => {
        const pid = await mainPid(a.unit as string);
        const r = await httpGet(`http://127.0.0.1:${host.caddy.httpPort}/`, { host: a.domain }).catch(() => undefined);
        return pid > 0 && pid !== a.pid && r?.status === 200 ? pid : undefined;
      }, 20_000, 100);
    };
    const docErrors = async (): Promise<Record<number, string>> => {
      const list = (await api(op, 'GET', '/v1/apps')).body.apps as { app_id: number; document_error: { error: string } | null }[];
      return Object.fromEntries(list.filter((x) => x.document_error).map((x) => [x.app_id, x.document_error?.error ?? '']));
    };
    const timings: Record<string, number> = {};
    const a1 = apps[0] as App;

    // ---- Desired documents: one app's file broken in four ways, then together with its copy. ----
    const docVariants: Array<[string, () => Promise<void>]> = [
      ['doc truncated', () => truncate(docPath(a1), 0)],
      ['doc cut in half', async () => writeFile(docPath(a1), (originals.get(1) as Buffer).subarray(0, Math.floor((originals.get(1) as Buffer).length / 2)))],
      ['doc bytes flipped', async () => writeFile(docPath(a1), flipBytes(originals.get(1) as Buffer))],
      ['doc alias bomb', async () => writeFile(docPath(a1), ALIAS_BOMB)],
    ];
    for (const [i, [name, corrupt]] of docVariants.entries()) {
      timings[name] = await restart(corrupt);
      expect(timings[name], name).toBeLessThan(5_000);
      const errs = await waitFor(`${name} reported`, async () => {
        const e = await docErrors();
        return Object.keys(e).length > 0 ? e : undefined;
      });
      expect(Object.keys(errs), name).toEqual(['1']);
      await allServing(name);
      await heals(apps[1 + (i % 3)] as App);
      // Fixed by hand: the error clears and the app is as before.
      await writeFile(docPath(a1), originals.get(1) as Buffer);
      await waitFor(`${name} cleared`, async () => Object.keys(await docErrors()).length === 0);
    }
    timings['doc and last-good copy'] = await restart(async () => {
      await writeFile(docPath(a1), 'apiVersion: [');
      await writeFile(lastGood(a1), 'kind: {');
    });
    expect(Object.keys(await waitFor('doc + copy reported', async () => {
      const e = await docErrors();
      return Object.keys(e).length > 0 ? e : undefined;
    }))).toEqual(['1']);
    // Nothing in force for app 1: it is left alone (never removed because a file cannot be read).
    await new Promise((r) => setTimeout(r, t.config.resyncMs + 500));
    await allServing('doc and last-good copy');
    expect(logs.join('')).toMatch(/left alone/);
    await writeFile(docPath(a1), originals.get(1) as Buffer);
    await waitFor('doc restored', async () => Object.keys(await docErrors()).length === 0);

    // ---- A machine snapshot of an interrupted deployment. ----
    const a4 = apps[3] as App;
    expect((await api(op, 'POST', '/v1/app/instance/binary/deploy', body(a4, 40, 'v2', 'app-v2-broken.tar.gz'))).status).toBe(202);
    await waitFor('deployment 40 waiting for health', async () => ((await api(op, 'GET', '/v1/app/deploy/40/status')).body.phase as string).startsWith('wait until'), 20_000);
    timings['machine snapshot'] = await restart(() => {
      const db = new Database(path.join(stateDir, 'records.db'));
      const n = db.prepare("UPDATE machine_snapshots SET snapshot = substr(snapshot, 1, length(snapshot) / 2) WHERE deployment_id = '40'").run().changes;
      db.close();
      expect(n).toBe(1);
      return Promise.resolve();
    });
    expect(timings['machine snapshot']).toBeLessThan(5_000);
    const s40 = await settle(op, 40);
    expect(s40.status).toBe('failed');
    expect((s40.error as { code: string }).code).toBe('E_RESUME_FAILED');
    await waitFor('app 4 converged back', async () => (await units()).filter((u) => u.active === 'active').length === apps.length, 20_000);
    await allServing('machine snapshot');
    await heals(apps[1] as App);
    // The platform puts app 4 back on v1 (the running revision: nothing to do but record it).
    expect((await api(op, 'POST', '/v1/app/instance/binary/deploy', body(a4, 41, 'v1'))).status).toBe(202);
    expect((await settle(op, 41)).status).toBe('succeeded');

    // ---- A deployment row with broken JSON. ----
    timings['deployment row'] = await restart(() => {
      const db = new Database(path.join(stateDir, 'records.db'));
      db.prepare("UPDATE deployments SET steps = '[{\"name\":', instances = 'nul' WHERE id = '2'").run();
      db.close();
      return Promise.resolve();
    });
    const s2 = await api(op, 'GET', '/v1/app/deploy/2/status');
    expect(s2.status).toBeLessThan(500);
    expect((await api(op, 'GET', '/v1/apps')).status).toBe(200);
    await allServing('deployment row');
    await heals(apps[1] as App);

    // ---- records.db itself. ----
    const recordsVariants: Array<[string, () => Promise<void>]> = [
      ['records.db header flipped', async () => {
        const f = path.join(stateDir, 'records.db');
        const b = await readFile(f);
        for (let i = 0; i < 16; i++) b[i] = (b[i] as number) ^ 0x5a;
        await writeFile(f, b);
      }],
      ['records.db cut in half', async () => {
        const f = path.join(stateDir, 'records.db');
        await truncate(f, Math.floor((await stat(f)).size / 2));
      }],
      ['records.db truncated', () => truncate(path.join(stateDir, 'records.db'), 0)],
    ];
    for (const [i, [name, corrupt]] of recordsVariants.entries()) {
      const before = (await readdir(stateDir)).filter((f) => f.includes('.corrupt-')).length;
      timings[name] = await restart(corrupt);
      expect(timings[name], name).toBeLessThan(5_000);
      const aside = (await readdir(stateDir)).filter((f) => /^records\.db\.corrupt-/.test(f));
      if (name !== 'records.db truncated') {
        expect(aside.length, name).toBeGreaterThan(before);
        expect(logs.join(''), name).toMatch(/records\.db.*(corrupt|unreadable)/i);
      }
      // The documents are adopted again as deployments; nothing restarts.
      let seen = '';
      await waitFor(`${name}: documents re-adopted`, async () => {
        const list = (await api(op, 'GET', '/v1/apps')).body.apps as { app_id: number; last_deployment: { status: string; endpoint?: string } | null }[];
        seen = JSON.stringify(list.map((x) => [x.app_id, x.last_deployment?.status]));
        return list.length === apps.length && list.every((x) => x.last_deployment?.status === 'succeeded');
      }, 20_000).catch((err: unknown) => {
        throw new Error(`${String(err)}; seen ${seen}`);
      });
      await allServing(name);
      await heals(apps[1 + (i % 3)] as App);
    }
    report('corruption', { variants: Object.keys(timings).length, start_ms: Object.fromEntries(Object.entries(timings).map(([k, v]) => [k, Math.round(v)])) });
  }, 90_000);
});
