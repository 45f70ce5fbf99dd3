/**
 * API fuzzing: ≥ 10,000 valid, schema-derived, mutated and hostile requests per run (CRATE_FUZZ_REQUESTS
 * sets the count; `npm run test:soak` raises it) across every endpoint, against `buildApp` with the
 * real desired-state store and records in a temp state dir and fakes only for the host-facing hooks
 * (onDesiredChange, moveDomain). For every request:
 *
 * - no 5xx;
 * - the response matches /openapi.json for its route and status (ajv), or is a documented global
 *   error (401/404/413/415) in the one error shape; a 400 names at least one field;
 * - a 4xx, a dry run and every GET change nothing: the state dir tree (paths, modes, sizes, inodes,
 *   mtimes) and the records database (SQLite `data_version` seen from a second connection) are
 *   unchanged;
 * and over the whole run: no unhandled rejection or uncaught exception, the app still answers, every
 * document in force is valid, and state files are 0600 in 0700 folders.
 */
import { readdirSync, statSync } from 'node:fs';
import { mkdtemp, readdir, rm, stat } from 'node:fs/promises';
import path from 'node:path';
import Database from 'better-sqlite3';
import fc from 'fast-check';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { buildApp, type ApiInstance } from '../../src/api/app.ts';
import { loadConfig } from '../../src/config.ts';
import { CrateError } from '../../src/core/errors.ts';
import { appKeyString, type AppKey } from '../../src/core/identity.ts';
import { validateDesired } from '../../src/desired/document.ts';
import { DesiredStore } from '../../src/desired/store.ts';
import { Records } from '../../src/records/records.ts';
import { Contract, type OpenApiDoc } from './contract.ts';
import { hostileRequests, mutatedRequests, schemaRequests, validRequests, type FuzzRequest, type FuzzSetup } from './requests.ts';
import { report } from './report.ts';

const TOTAL = Number(process.env.CRATE_FUZZ_REQUESTS ?? 10_000);
const SEED = Number(process.env.CRATE_FUZZ_SEED ?? Date.now() % 2 ** 31);
const TOKEN = 'fuzz-token-0123456789abcdef';
const SERVER_ID = 'fuzz-host';
const VOLUMES_ROOT = '/srv/crate-volumes';

let dir: string;
let app: ApiInstance;
let store: DesiredStore;
let records: Records;
let watcher: Database.Database;
let contract: Contract;
const changes: AppKey[] = [];
const crashes: unknown[] = [];
const onCrash = (err: unknown): void => {
  crashes.push(err);
};

beforeAll(async () => {
  process.on('unhandledRejection', onCrash);
  process.on('uncaughtException', onCrash);
  // tmpfs: the fuzzer tests request handling, not the disk; fsyncs there cost nothing.
  dir = await mkdtemp('/dev/shm/crate-fuzz-');
  store = await DesiredStore.open(dir);
  records = Records.open(dir);
  watcher = new Database(path.join(dir, 'records.db'), { readonly: true, fileMustExist: true });
  app = await buildApp({
    config: loadConfig({ env: {}, defaults: { stateDir: dir, tokens: [TOKEN], serverId: SERVER_ID, volumesRoot: VOLUMES_ROOT } }),
    checkBackends: () => Promise.resolve({ systemd: { reachable: true, detail: 'fake' }, docker: { reachable: true, detail: 'fake' }, caddy: { reachable: false, detail: 'fake' } }),
    store,
    records,
    onDesiredChange: (k) => {
      changes.push(k);
    },
    // Caddy, as far as the API can tell: the route is where the app's document says it is.
    moveDomain: (key, from) => {
      const doc = store.get(key);
      if (!doc || doc.spec.domain !== from) return Promise.reject(new CrateError('E_ROUTE_NOT_FOUND', `no route for ${from}`));
      return Promise.resolve();
    },
    observed: (key) => ({ fake: true, app: appKeyString(key) }),
    planFor: (_key, doc) => ({ steps: doc ? ['deploy'] : ['delete'] }),
    planDocument: (doc) =>
      Promise.resolve({
        mode: store.get({ team: doc.metadata.team, env: doc.metadata.environment, app: doc.metadata.app }) ? ('heal' as const) : ('deploy' as const),
        deployment_id: doc.deployment.id,
        plan: { kind: 'deploy' as const, strategy: doc.spec.strategy, fallback: null, drops_traffic: false, steps: ['fake step'], diff: [], notes: [] },
      }),
    sse: { heartbeatMs: 1_000, maxStreamMs: 5 },
  });
  contract = new Contract((await app.inject({ method: 'GET', url: '/openapi.json' })).json<OpenApiDoc>());
});

afterAll(async () => {
  process.off('unhandledRejection', onCrash);
  process.off('uncaughtException', onCrash);
  await app?.close();
  watcher?.close();
  records?.close();
  if (dir) await rm(dir, { recursive: true, force: true });
});

/**
 * Paths, modes, sizes, inodes and mtimes of everything under the state dir except the database.
 * Synchronous on purpose: thousands of tiny stats through the libuv pool cost far more under load.
 */
function tree(): string {
  const out: string[] = [];
  const walk = (d: string): void => {
    for (const e of readdirSync(d, { withFileTypes: true })) {
      if (e.name.startsWith('records.db')) continue;
      const p = `${d}/${e.name}`;
      const st = statSync(p);
      out.push(`${p} ${st.mode} ${st.size} ${st.ino} ${st.mtimeMs}`);
      if (e.isDirectory()) walk(p);
    }
  };
  walk(dir);
  return out.join('\n');
}

const dbVersion = (): number => watcher.pragma('data_version', { simple: true }) as number;

interface Tally {
  requests: number;
  byFamily: Record<string, number>;
  byStatus: Record<string, number>;
  writes: number;
}

describe('API fuzzing', () => {
  it(`${TOTAL} requests: no 5xx, responses match /openapi.json, no state change on 4xx/dry runs/GETs, no crash`, async () => {
    const setup: FuzzSetup = { token: TOKEN, serverId: SERVER_ID, volumesRoot: VOLUMES_ROOT, contract };
    const families = fc.oneof(
      { weight: 35, arbitrary: validRequests(setup) },
      { weight: 20, arbitrary: schemaRequests(setup) },
      { weight: 30, arbitrary: mutatedRequests(setup) },
      { weight: 15, arbitrary: hostileRequests(setup) },
    );
    const tally: Tally = { requests: 0, byFamily: {}, byStatus: {}, writes: 0 };
    const timing = { inject: 0, state: 0 };
    let lastTree = tree();
    let lastDb = dbVersion();
    const started = performance.now();

    const property = fc.asyncProperty(families, async (req: FuzzRequest) => {
      const t0 = performance.now();
      const res = await app.inject({ method: req.method as 'GET', url: req.url, headers: req.headers, ...(req.payload === undefined ? {} : { payload: req.payload }) });
      tally.requests += 1;
      timing.inject += performance.now() - t0;
      tally.byFamily[req.family] = (tally.byFamily[req.family] ?? 0) + 1;
      tally.byStatus[res.statusCode] = (tally.byStatus[res.statusCode] ?? 0) + 1;
      const what = `${req.family} ${req.method} ${req.url.slice(0, 120)} ${String(req.payload ?? '').slice(0, 300)}`;
      expect(res.statusCode, `${what}\n→ ${res.body.slice(0, 300)}`).toBeLessThan(500);
      const mismatch = contract.check(req.method, req.url, res.statusCode, res.headers['content-type'] as string | undefined, res.body);
      expect(mismatch, what).toBeUndefined();
      if (res.statusCode === 400) {
        const fields = (res.json<{ error: { details?: { fields?: { field: string; reason: string }[] } } }>().error.details?.fields ?? []);
        expect(fields.length, `${what}\n→ ${res.body.slice(0, 300)}`).toBeGreaterThan(0);
        for (const f of fields) expect(f.field.length * f.reason.length, what).toBeGreaterThan(0);
      }
      const t1 = performance.now();
      const nowTree = tree();
      const nowDb = dbVersion();
      timing.state += performance.now() - t1;
      const changed = nowTree !== lastTree || nowDb !== lastDb;
      const mayWrite = res.statusCode === 202 || (res.statusCode === 200 && req.url.startsWith('/v1/app/domain/update') && !/dry_run=(true|1)/.test(req.url));
      if (changed) tally.writes += 1;
      expect(changed && !mayWrite, `${what}\n→ ${res.statusCode} ${res.body.slice(0, 200)} changed the state`).toBe(false);
      lastTree = nowTree;
      lastDb = nowDb;
    });
    await fc.assert(property, { numRuns: TOTAL, seed: SEED, endOnFailure: true });
    const ms = Math.round(performance.now() - started);

    expect(crashes).toEqual([]);
    expect((await app.inject({ method: 'GET', url: '/healthz' })).statusCode).toBe(200);
    for (const doc of store.list()) expect(validateDesired(doc)).toMatchObject({ ok: true });
    // Every accepted request reached the reconciler hook; a sample of the families produced work.
    expect(tally.byStatus['202'] ?? 0).toBeGreaterThan(TOTAL / 50);
    expect(changes.length).toBeGreaterThanOrEqual(store.list().length);
    for (const s of ['200', '400', '401', '404', '409', '413', '415']) expect(tally.byStatus[s] ?? 0, `status ${s} was exercised`).toBeGreaterThan(0);
    for (const f of await allFiles(dir)) expect({ f: f.rel, mode: f.mode }).toEqual({ f: f.rel, mode: f.dir ? 0o700 : 0o600 });

    report('fuzz', { requests: tally.requests, seed: SEED, ms, per_request_ms: +(ms / tally.requests).toFixed(2), inject_ms: Math.round(timing.inject), state_check_ms: Math.round(timing.state), families: tally.byFamily, statuses: tally.byStatus, state_changes: tally.writes, apps: store.list().length, crashes: crashes.length });
  }, Math.max(180_000, TOTAL * 10));
});

async function allFiles(root: string): Promise<{ rel: string; mode: number; dir: boolean }[]> {
  const out: { rel: string; mode: number; dir: boolean }[] = [];
  const walk = async (d: string): Promise<void> => {
    for (const e of await readdir(d, { withFileTypes: true })) {
      const p = path.join(d, e.name);
      const st = await stat(p);
      out.push({ rel: path.relative(root, p), mode: st.mode & 0o777, dir: e.isDirectory() });
      if (e.isDirectory()) await walk(p);
    }
  };
  await walk(root);
  return out;
}
