/**
 * Deployment records: the operator's durable memory of what it was asked to do and how far it got,
 * separate from desired state. SQLite (better-sqlite3) in `<stateDir>/records.db`.
 *
 * Why SQLite: crash-safe transactions (WAL + `synchronous=FULL`: a committed transaction survives a
 * crash or power loss), indexed lookups by id and by app, and atomic multi-row changes (accepting a
 * deployment supersedes the app's older ones in the same transaction), all in-process and
 * synchronous, so a record change and its event cannot be reordered. The file is 0600.
 *
 * Tables:
 * - `deployments`: one row per accepted request: the full status document (status.ts) plus what the
 *   operator needs privately (callback URL, request hash for idempotency, the 202 body to replay,
 *   action parameters such as the instance ids of a delete, a revision counter).
 * - `machine_snapshots`: one JSON blob per deployment (the XState snapshot), for crash resume.
 * - `callbacks`: the callback outbox: event id, deployment, URL, body, attempts, next attempt time,
 *   delivery time, last error.
 * - `events`: an append-only journal of every record change (accepted, superseded, updates).
 *
 * Change events: `onChange(fn)` / `subscribe(id, fn)` call listeners synchronously after each
 * committed change with the new status document (and its revision); the SSE endpoint uses them.
 */
import { EventEmitter } from 'node:events';
import { closeSync, existsSync, openSync, renameSync } from 'node:fs';
import path from 'node:path';
import Database from 'better-sqlite3';
import { CrateError, hasCode } from '../core/errors.ts';
import type { AppKey } from '../core/identity.ts';
import { isTerminal, type DeploymentAction, type DeploymentState, type DeploymentStatus, type InstanceStatus, type Step, type Traffic } from './status.ts';

export type { DeploymentStatus } from './status.ts';

/** What the API knows when it accepts a request. */
export interface NewDeployment {
  /** String form: decimal of the platform's int32, or an operator id (`op-...`). */
  id: string;
  key: AppKey;
  action: DeploymentAction;
  kind: 'binary' | 'docker' | null;
  model: 'instance' | 'plain' | null;
  strategy: DeploymentStatus['strategy'];
  target_version: string | null;
  callback_url: string | null;
  /** Hash of the canonical request (endpoint + body), for idempotent replays; null if not replayable. */
  request_hash: string | null;
  /** The route that accepted it, e.g. `/v1/app/binary/deploy`. */
  endpoint: string;
  /** The 202 body, answered again on a replay. */
  response: Record<string, unknown>;
  /** Action parameters the reconciler needs (e.g. `{instance_ids}` of a delete, `{instance_id}`). */
  params?: Record<string, unknown>;
}

/** A record: the public status document plus the private fields. */
export interface DeploymentRecord {
  status: DeploymentStatus;
  key: AppKey;
  model: 'instance' | 'plain' | null;
  callback_url: string | null;
  request_hash: string | null;
  endpoint: string;
  response: Record<string, unknown>;
  params: Record<string, unknown>;
  /** ISO time the request was accepted. */
  created_at: string;
  /** Bumped by every change; the SSE event id. */
  revision: number;
}

export type AcceptOutcome =
  | { outcome: 'created'; record: DeploymentRecord; superseded: string[] }
  | { outcome: 'replay'; record: DeploymentRecord }
  | { outcome: 'conflict'; record: DeploymentRecord };

/** Fields a deployment machine may change. Terminal statuses are final. */
export interface DeploymentPatch {
  status?: DeploymentState;
  phase?: string;
  error?: { code: string; message: string } | null;
  steps?: Step[];
  instances?: InstanceStatus[];
  traffic?: Traffic[];
}

/** One change notification. */
export interface DeploymentChange {
  status: DeploymentStatus;
  revision: number;
}

export interface CallbackDelivery {
  event_id: string;
  deployment_id: string;
  url: string;
  /** The exact bytes to POST (the status document as JSON). */
  body: string;
  attempts: number;
  /** Epoch milliseconds of the next attempt; null once delivered or given up. */
  next_attempt_at: number | null;
  delivered_at: string | null;
  last_error: string | null;
  created_at: string;
}

export interface JournalEvent {
  seq: number;
  deployment_id: string;
  at: string;
  type: string;
  data: unknown;
}

export interface RecordsOptions {
  now?: () => Date;
  /**
   * Told when `Records.open` found the database corrupt and set it aside (see there); the operator
   * logs it loudly: the deployment history is no longer in its view.
   */
  onCorrupt?: (e: { file: string; movedTo: string; reason: string }) => void;
}

const SCHEMA_VERSION = 1;

interface DeploymentRow {
  seq: number;
  id: string;
  team: string;
  env: number;
  app: number;
  action: string;
  kind: string | null;
  model: string | null;
  strategy: string | null;
  target_version: string | null;
  status: string;
  phase: string;
  error: string | null;
  started_at: string;
  updated_at: string;
  finished_at: string | null;
  superseded_by: string | null;
  steps: string;
  instances: string;
  traffic: string;
  callback_url: string | null;
  request_hash: string | null;
  endpoint: string;
  response: string;
  params: string;
  created_at: string;
  revision: number;
}

interface CallbackRow {
  event_id: string;
  deployment_id: string;
  url: string;
  body: string;
  attempts: number;
  next_attempt_at: number | null;
  delivered_at: string | null;
  last_error: string | null;
  created_at: string;
}

/** A JSON column, or `fallback` (noting `name` in `bad`) when it is unreadable or of the wrong shape. */
function column<T>(text: string | null, fallback: T, shape: (v: unknown) => boolean, bad: string[], name: string): T {
  if (text === null) return fallback;
  try {
    const v = JSON.parse(text) as unknown;
    if (shape(v)) return v as T;
  } catch {
    // Unreadable: reported below through the status's error.
  }
  bad.push(name);
  return fallback;
}

const isObject = (v: unknown): boolean => typeof v === 'object' && v !== null && !Array.isArray(v);

/**
 * A row as a record. A row whose JSON columns cannot be read (a damaged page, a hand edit) still
 * reads: those parts come back empty and the status's error says E_RECORD_CORRUPT, naming them.
 */
function toRecord(r: DeploymentRow): DeploymentRecord {
  const bad: string[] = [];
  const error = column<{ code: string; message: string } | null>(r.error, null, (v) => v === null || (isObject(v) && typeof (v as { code?: unknown }).code === 'string'), bad, 'error');
  const steps = column<Step[]>(r.steps, [], Array.isArray, bad, 'steps');
  const instances = column<InstanceStatus[]>(r.instances, [], Array.isArray, bad, 'instances');
  const traffic = column<Traffic[]>(r.traffic, [], Array.isArray, bad, 'traffic');
  const response = column<Record<string, unknown>>(r.response, {}, isObject, bad, 'response');
  const params = column<Record<string, unknown>>(r.params, {}, isObject, bad, 'params');
  return {
    status: {
      deployment_id: r.id,
      action: r.action as DeploymentAction,
      app_id: r.app,
      environment_id: r.env,
      team_id: r.team,
      kind: r.kind as DeploymentStatus['kind'],
      strategy: r.strategy as DeploymentStatus['strategy'],
      target_version: r.target_version,
      status: r.status as DeploymentState,
      phase: r.phase,
      error: bad.length > 0 ? { code: 'E_RECORD_CORRUPT', message: `parts of this deployment record could not be read: ${bad.join(', ')}` } : error,
      started_at: r.started_at,
      updated_at: r.updated_at,
      finished_at: r.finished_at,
      superseded_by: r.superseded_by,
      steps,
      instances,
      traffic,
    },
    key: { team: r.team, env: r.env, app: r.app },
    model: r.model as DeploymentRecord['model'],
    callback_url: r.callback_url,
    request_hash: r.request_hash,
    endpoint: r.endpoint,
    response,
    params,
    created_at: r.created_at,
    revision: r.revision,
  };
}

/** SQLite's verdicts on a file that is not (or no longer) a readable database. */
function isCorruption(err: unknown): boolean {
  const code = (err as { code?: unknown } | null)?.code;
  return typeof code === 'string' && (code === 'SQLITE_NOTADB' || code.startsWith('SQLITE_CORRUPT') || code === 'SQLITE_IOERR_SHORT_READ');
}

/** Rename `file` (and its -wal/-shm/-journal) to `<file>.corrupt-<time>`; returns the new name. */
function setAside(file: string, now: Date): string {
  const stamp = now.toISOString().replace(/[-:]/g, '').replace('.', '');
  let movedTo = `${file}.corrupt-${stamp}`;
  for (let n = 1; existsSync(movedTo); n++) movedTo = `${file}.corrupt-${stamp}-${n}`;
  renameSync(file, movedTo);
  for (const suffix of ['-wal', '-shm', '-journal']) if (existsSync(`${file}${suffix}`)) renameSync(`${file}${suffix}`, `${movedTo}${suffix}`);
  return movedTo;
}

export class Records {
  /** Absolute path of the database file. */
  readonly file: string;
  private readonly db: Database.Database;
  private readonly now: () => Date;
  private readonly emitter = new EventEmitter();
  private readonly stmts: ReturnType<Records['prepare']>;

  /** Open (creating if needed) the records database at `file`. */
  constructor(file: string, opts: RecordsOptions = {}) {
    this.file = path.resolve(file);
    this.now = opts.now ?? (() => new Date());
    this.emitter.setMaxListeners(0);
    // Create the file 0600 before SQLite does (it would use 0644); WAL and SHM files copy its mode.
    closeSync(openSync(this.file, 'a', 0o600));
    this.db = new Database(this.file);
    try {
      this.db.pragma('journal_mode = WAL');
      this.db.pragma('synchronous = FULL');
      this.db.pragma('foreign_keys = ON');
      this.db.pragma('busy_timeout = 5000');
      // A damaged file often opens fine and fails later, mid-deployment: check the whole file now.
      const check = this.db.pragma('quick_check', { simple: true }) as string;
      if (check !== 'ok') throw new CrateError('E_RECORDS_CORRUPT', `records.db fails its integrity check: ${check}`);
      this.migrate();
      this.stmts = this.prepare();
    } catch (err) {
      this.db.close();
      if (isCorruption(err)) throw new CrateError('E_RECORDS_CORRUPT', `records.db is unreadable: ${(err as Error).message}`, { cause: err });
      throw err;
    }
  }

  private prepare() {
    return {
      byId: this.db.prepare<[string], DeploymentRow>('SELECT * FROM deployments WHERE id = ?'),
      latestForApp: this.db.prepare<[string, number, number], DeploymentRow>(
        'SELECT * FROM deployments WHERE team = ? AND env = ? AND app = ? ORDER BY seq DESC LIMIT 1',
      ),
      listForApp: this.db.prepare<[string, number, number, number], DeploymentRow>(
        'SELECT * FROM deployments WHERE team = ? AND env = ? AND app = ? ORDER BY seq DESC LIMIT ?',
      ),
      activeForApp: this.db.prepare<[string, number, number], DeploymentRow>(
        "SELECT * FROM deployments WHERE team = ? AND env = ? AND app = ? AND status IN ('pending', 'in_progress') ORDER BY seq",
      ),
      active: this.db.prepare<[], DeploymentRow>("SELECT * FROM deployments WHERE status IN ('pending', 'in_progress') ORDER BY seq"),
      finishedSince: this.db.prepare<[string], DeploymentRow>('SELECT * FROM deployments WHERE finished_at IS NOT NULL AND finished_at >= ? ORDER BY seq'),
      insert: this.db.prepare(
        `INSERT INTO deployments (id, team, env, app, action, kind, model, strategy, target_version, status, phase, error,
           started_at, updated_at, finished_at, superseded_by, steps, instances, traffic, callback_url, request_hash,
           endpoint, response, params, created_at, revision)
         VALUES (@id, @team, @env, @app, @action, @kind, @model, @strategy, @target_version, 'pending', 'accepted', NULL,
           @now, @now, NULL, NULL, '[]', '[]', '[]', @callback_url, @request_hash, @endpoint, @response, @params, @now, 1)`,
      ),
      supersede: this.db.prepare<{ id: string; by: string; now: string }>(
        `UPDATE deployments SET status = 'superseded', superseded_by = @by, finished_at = @now, updated_at = @now,
           phase = 'superseded', revision = revision + 1 WHERE id = @id AND status IN ('pending', 'in_progress')`,
      ),
      update: this.db.prepare(
        `UPDATE deployments SET status = @status, phase = @phase, error = @error, steps = @steps, instances = @instances,
           traffic = @traffic, updated_at = @now, finished_at = @finished_at, revision = revision + 1
         WHERE id = @id AND status IN ('pending', 'in_progress')`,
      ),
      event: this.db.prepare<{ id: string; at: string; type: string; data: string }>(
        'INSERT INTO events (deployment_id, at, type, data) VALUES (@id, @at, @type, @data)',
      ),
      events: this.db.prepare<[string], { seq: number; deployment_id: string; at: string; type: string; data: string }>(
        'SELECT * FROM events WHERE deployment_id = ? ORDER BY seq',
      ),
      putSnapshot: this.db.prepare<{ id: string; snapshot: string; at: string }>(
        `INSERT INTO machine_snapshots (deployment_id, snapshot, updated_at) VALUES (@id, @snapshot, @at)
         ON CONFLICT (deployment_id) DO UPDATE SET snapshot = excluded.snapshot, updated_at = excluded.updated_at`,
      ),
      getSnapshot: this.db.prepare<[string], { snapshot: string }>('SELECT snapshot FROM machine_snapshots WHERE deployment_id = ?'),
      deleteSnapshot: this.db.prepare<[string]>('DELETE FROM machine_snapshots WHERE deployment_id = ?'),
      enqueueCallback: this.db.prepare(
        `INSERT INTO callbacks (event_id, deployment_id, url, body, attempts, next_attempt_at, delivered_at, last_error, created_at)
         VALUES (@event_id, @deployment_id, @url, @body, 0, @next_attempt_at, NULL, NULL, @now) ON CONFLICT (event_id) DO NOTHING`,
      ),
      dueCallbacks: this.db.prepare<[number, number], CallbackRow>(
        'SELECT * FROM callbacks WHERE next_attempt_at IS NOT NULL AND next_attempt_at <= ? ORDER BY next_attempt_at, created_at LIMIT ?',
      ),
      nextCallbackAt: this.db.prepare<[], { t: number | null }>('SELECT MIN(next_attempt_at) AS t FROM callbacks WHERE next_attempt_at IS NOT NULL'),
      callback: this.db.prepare<[string], CallbackRow>('SELECT * FROM callbacks WHERE event_id = ?'),
      callbacksFor: this.db.prepare<[string], CallbackRow>('SELECT * FROM callbacks WHERE deployment_id = ? ORDER BY created_at, event_id'),
      callbackAttempt: this.db.prepare<{ event_id: string; delivered_at: string | null; next_attempt_at: number | null; last_error: string | null }>(
        `UPDATE callbacks SET attempts = attempts + 1, delivered_at = @delivered_at, next_attempt_at = @next_attempt_at,
           last_error = @last_error WHERE event_id = @event_id AND delivered_at IS NULL`,
      ),
    };
  }

  /**
   * Open `<stateDir>/records.db`. A database that is not one, is cut short or fails SQLite's
   * quick_check is set aside as `records.db.corrupt-<time>` (with its -wal/-shm), `onCorrupt` is
   * told, and a fresh database is opened: the operator starts with no deployment history and the
   * reconciler adopts the documents in state/desired again (they and the host are the truth; no app
   * is touched for it). A database of a newer schema is never set aside (E_RECORDS_VERSION).
   */
  static open(stateDir: string, opts: RecordsOptions = {}): Records {
    const file = path.join(stateDir, 'records.db');
    try {
      return new Records(file, opts);
    } catch (err) {
      if (!hasCode(err, 'E_RECORDS_CORRUPT')) throw err;
      const movedTo = setAside(path.resolve(file), opts.now?.() ?? new Date());
      opts.onCorrupt?.({ file: path.resolve(file), movedTo, reason: (err as Error).message });
      return new Records(file, opts);
    }
  }

  private migrate(): void {
    const v = this.db.pragma('user_version', { simple: true }) as number;
    if (v > SCHEMA_VERSION) throw new CrateError('E_RECORDS_VERSION', `records.db has schema ${v}, this operator knows up to ${SCHEMA_VERSION}`);
    if (v === SCHEMA_VERSION) return;
    this.db.exec(`
      BEGIN;
      CREATE TABLE deployments (
        seq INTEGER PRIMARY KEY AUTOINCREMENT,
        id TEXT NOT NULL UNIQUE,
        team TEXT NOT NULL, env INTEGER NOT NULL, app INTEGER NOT NULL,
        action TEXT NOT NULL, kind TEXT, model TEXT, strategy TEXT, target_version TEXT,
        status TEXT NOT NULL, phase TEXT NOT NULL, error TEXT,
        started_at TEXT NOT NULL, updated_at TEXT NOT NULL, finished_at TEXT, superseded_by TEXT,
        steps TEXT NOT NULL, instances TEXT NOT NULL, traffic TEXT NOT NULL,
        callback_url TEXT, request_hash TEXT, endpoint TEXT NOT NULL, response TEXT NOT NULL, params TEXT NOT NULL,
        created_at TEXT NOT NULL, revision INTEGER NOT NULL
      );
      CREATE INDEX deployments_app ON deployments (team, env, app, seq);
      CREATE INDEX deployments_active ON deployments (status) WHERE status IN ('pending', 'in_progress');
      CREATE TABLE machine_snapshots (
        deployment_id TEXT PRIMARY KEY REFERENCES deployments (id) ON DELETE CASCADE,
        snapshot TEXT NOT NULL, updated_at TEXT NOT NULL
      );
      CREATE TABLE callbacks (
        event_id TEXT PRIMARY KEY,
        deployment_id TEXT NOT NULL REFERENCES deployments (id) ON DELETE CASCADE,
        url TEXT NOT NULL, body TEXT NOT NULL, attempts INTEGER NOT NULL,
        next_attempt_at INTEGER, delivered_at TEXT, last_error TEXT, created_at TEXT NOT NULL
      );
      CREATE INDEX callbacks_due ON callbacks (next_attempt_at) WHERE next_attempt_at IS NOT NULL;
      CREATE INDEX callbacks_deployment ON callbacks (deployment_id);
      CREATE TABLE events (
        seq INTEGER PRIMARY KEY AUTOINCREMENT,
        deployment_id TEXT NOT NULL REFERENCES deployments (id) ON DELETE CASCADE,
        at TEXT NOT NULL, type TEXT NOT NULL, data TEXT NOT NULL
      );
      CREATE INDEX events_deployment ON events (deployment_id, seq);
      PRAGMA user_version = ${SCHEMA_VERSION};
      COMMIT;
    `);
  }

  /**
   * Accept a request as a `pending` deployment, in one transaction:
   * - an existing id with the same request hash → `replay` (nothing changes);
   * - an existing id with another hash (or not replayable) → `conflict` (nothing changes);
   * - else the record is created and every pending/in-progress deployment of the same app is marked
   *   `superseded` (superseded_by = the new id). Listeners hear about each change after the commit.
   */
  accept(input: NewDeployment): AcceptOutcome {
    const nowIso = this.now().toISOString();
    const result = this.db.transaction((): AcceptOutcome => {
      const existing = this.stmts.byId.get(input.id);
      if (existing) {
        const record = toRecord(existing);
        return input.request_hash !== null && existing.request_hash === input.request_hash
          ? { outcome: 'replay', record }
          : { outcome: 'conflict', record };
      }
      const k = input.key;
      const older = this.stmts.activeForApp.all(k.team, k.env, k.app);
      this.stmts.insert.run({
        id: input.id,
        team: k.team,
        env: k.env,
        app: k.app,
        action: input.action,
        kind: input.kind,
        model: input.model,
        strategy: input.strategy,
        target_version: input.target_version,
        now: nowIso,
        callback_url: input.callback_url,
        request_hash: input.request_hash,
        endpoint: input.endpoint,
        response: JSON.stringify(input.response),
        params: JSON.stringify(input.params ?? {}),
      });
      this.stmts.event.run({ id: input.id, at: nowIso, type: 'accepted', data: JSON.stringify({ action: input.action, endpoint: input.endpoint }) });
      const superseded: string[] = [];
      for (const o of older) {
        this.stmts.supersede.run({ id: o.id, by: input.id, now: nowIso });
        this.stmts.event.run({ id: o.id, at: nowIso, type: 'superseded', data: JSON.stringify({ by: input.id }) });
        superseded.push(o.id);
      }
      const record = toRecord(this.stmts.byId.get(input.id) as DeploymentRow);
      return { outcome: 'created', record, superseded };
    }).immediate();
    if (result.outcome === 'created') {
      for (const id of result.superseded) this.emit(id);
      this.emit(input.id);
    }
    return result;
  }

  /** The status document of a deployment. */
  get(id: string): DeploymentStatus | undefined {
    const r = this.stmts.byId.get(id);
    return r ? toRecord(r).status : undefined;
  }

  /** The full record (status + private fields). */
  getRecord(id: string): DeploymentRecord | undefined {
    const r = this.stmts.byId.get(id);
    return r ? toRecord(r) : undefined;
  }

  /** The most recently accepted deployment of an app. */
  latestForApp(key: AppKey): DeploymentRecord | undefined {
    const r = this.stmts.latestForApp.get(key.team, key.env, key.app);
    return r ? toRecord(r) : undefined;
  }

  /** An app's deployments, newest first. */
  listForApp(key: AppKey, limit = 20): DeploymentRecord[] {
    return this.stmts.listForApp.all(key.team, key.env, key.app, limit).map(toRecord);
  }

  /** Every pending or in-progress deployment, oldest first (what a restarted operator resumes). */
  active(): DeploymentRecord[] {
    return this.stmts.active.all().map(toRecord);
  }

  /** Every terminal deployment finished at or after `sinceIso` (ISO time), oldest first. */
  finishedSince(sinceIso: string): DeploymentRecord[] {
    return this.stmts.finishedSince.all(sinceIso).map(toRecord);
  }

  /**
   * Apply a patch to a pending/in-progress deployment. Moving to `in_progress`, `phase` and the
   * arrays are free; a terminal status sets `finished_at`. Returns the new status, or undefined when
   * the deployment does not exist or is already terminal (superseded ones stay superseded), in which
   * case nothing changed.
   */
  update(id: string, patch: DeploymentPatch): DeploymentStatus | undefined {
    const nowIso = this.now().toISOString();
    const changed = this.db.transaction((): boolean => {
      const row = this.stmts.byId.get(id);
      if (!row) return false;
      const cur = toRecord(row).status;
      if (isTerminal(cur.status)) return false;
      const status = patch.status ?? cur.status;
      const res = this.stmts.update.run({
        id,
        status,
        phase: patch.phase ?? cur.phase,
        error: JSON.stringify(patch.error === undefined ? cur.error : patch.error),
        steps: JSON.stringify(patch.steps ?? cur.steps),
        instances: JSON.stringify(patch.instances ?? cur.instances),
        traffic: JSON.stringify(patch.traffic ?? cur.traffic),
        now: nowIso,
        finished_at: isTerminal(status) ? nowIso : null,
      });
      if (res.changes === 0) return false;
      this.stmts.event.run({ id, at: nowIso, type: 'update', data: JSON.stringify(patch) });
      return true;
    }).immediate();
    if (!changed) return undefined;
    return this.emit(id);
  }

  /** Insert or replace one step (matched by name) of a pending/in-progress deployment. */
  setStep(id: string, step: Step): DeploymentStatus | undefined {
    const cur = this.get(id);
    if (!cur) return undefined;
    const steps = cur.steps.some((s) => s.name === step.name) ? cur.steps.map((s) => (s.name === step.name ? step : s)) : [...cur.steps, step];
    return this.update(id, { steps });
  }

  /** Call `fn` after every committed change of any deployment. Returns the unsubscribe function. */
  onChange(fn: (c: DeploymentChange) => void): () => void {
    this.emitter.on('change', fn);
    return () => this.emitter.off('change', fn);
  }

  /** Call `fn` after every committed change of deployment `id`. Returns the unsubscribe function. */
  subscribe(id: string, fn: (c: DeploymentChange) => void): () => void {
    const ev = `change:${id}`;
    this.emitter.on(ev, fn);
    return () => this.emitter.off(ev, fn);
  }

  /** Number of listeners of one deployment (tests use it to know a stream is attached). */
  listenerCount(id: string): number {
    return this.emitter.listenerCount(`change:${id}`);
  }

  private emit(id: string): DeploymentStatus | undefined {
    const r = this.stmts.byId.get(id);
    if (!r) return undefined;
    const rec = toRecord(r);
    const change: DeploymentChange = { status: rec.status, revision: rec.revision };
    this.emitter.emit(`change:${id}`, change);
    this.emitter.emit('change', change);
    return rec.status;
  }

  /** The journal of one deployment, oldest first. */
  events(id: string): JournalEvent[] {
    return this.stmts.events.all(id).map((e) => ({ ...e, data: JSON.parse(e.data) as unknown }));
  }

  /** Store the machine snapshot of a deployment (JSON-serialisable), replacing the previous one. */
  saveSnapshot(id: string, snapshot: unknown): void {
    this.stmts.putSnapshot.run({ id, snapshot: JSON.stringify(snapshot), at: this.now().toISOString() });
  }

  /** The last stored machine snapshot of a deployment. */
  loadSnapshot(id: string): unknown {
    const r = this.stmts.getSnapshot.get(id);
    return r ? (JSON.parse(r.snapshot) as unknown) : undefined;
  }

  deleteSnapshot(id: string): void {
    this.stmts.deleteSnapshot.run(id);
  }

  /** Add a callback to the outbox (idempotent per event id). `next_attempt_at` in epoch ms. */
  enqueueCallback(c: { event_id: string; deployment_id: string; url: string; body: string; next_attempt_at: number }): void {
    this.stmts.enqueueCallback.run({ ...c, now: this.now().toISOString() });
  }

  /** Undelivered callbacks whose next attempt is due at `nowMs`, oldest first. */
  dueCallbacks(nowMs: number, limit = 100): CallbackDelivery[] {
    return this.stmts.dueCallbacks.all(nowMs, limit);
  }

  /** Epoch ms of the earliest pending attempt, or undefined when the outbox is empty. */
  nextCallbackAt(): number | undefined {
    return this.stmts.nextCallbackAt.get()?.t ?? undefined;
  }

  getCallback(eventId: string): CallbackDelivery | undefined {
    return this.stmts.callback.get(eventId);
  }

  callbacksFor(deploymentId: string): CallbackDelivery[] {
    return this.stmts.callbacksFor.all(deploymentId);
  }

  /**
   * Record one delivery attempt: delivered, or failed with the time of the next attempt (null: give
   * up). Attempts on an already delivered callback change nothing.
   */
  recordCallbackAttempt(eventId: string, outcome: { delivered: true } | { delivered: false; error: string; next_attempt_at: number | null }): void {
    this.stmts.callbackAttempt.run(
      outcome.delivered
        ? { event_id: eventId, delivered_at: this.now().toISOString(), next_attempt_at: null, last_error: null }
        : { event_id: eventId, delivered_at: null, next_attempt_at: outcome.next_attempt_at, last_error: outcome.error },
    );
  }

  /** Counts per status, for metrics and `GET /v1/apps`. */
  countByStatus(): Record<string, number> {
    const rows = this.db.prepare<[], { status: string; n: number }>('SELECT status, COUNT(*) AS n FROM deployments GROUP BY status').all();
    return Object.fromEntries(rows.map((r) => [r.status, r.n]));
  }

  /** Every app key that has records (for listings). */
  appKeys(): AppKey[] {
    return this.db
      .prepare<[], { team: string; env: number; app: number }>('SELECT DISTINCT team, env, app FROM deployments ORDER BY team, env, app')
      .all()
      .map((r) => ({ team: r.team, env: r.env, app: r.app }));
  }

  /** A stable string of the whole database content (tests compare it before/after a refused request). */
  dump(): string {
    const tables = ['deployments', 'machine_snapshots', 'callbacks', 'events'];
    return JSON.stringify(tables.map((t) => this.db.prepare(`SELECT * FROM ${t} ORDER BY rowid`).all()));
  }

  close(): void {
    this.db.close();
    this.emitter.removeAllListeners();
  }
}


/** A read-only view of a records database (what `crate-operator diff` plans from). */
export interface RecordsReader {
  getRecord(id: string): DeploymentRecord | undefined;
  latestForApp(key: AppKey): DeploymentRecord | undefined;
  active(): DeploymentRecord[];
  close(): void;
}

/**
 * Open `<stateDir>/records.db` read-only, alongside a running operator or none: nothing is created,
 * migrated or written. Undefined when there is no database yet (no deployment was ever recorded).
 * Throws E_RECORDS_VERSION for a database of another schema version.
 */
export function openRecordsReader(stateDir: string): RecordsReader | undefined {
  let db: Database.Database;
  try {
    db = new Database(path.join(stateDir, 'records.db'), { readonly: true, fileMustExist: true });
  } catch (err) {
    if ((err as { code?: string }).code === 'SQLITE_CANTOPEN') return undefined;
    throw err;
  }
  try {
    db.pragma('busy_timeout = 5000');
    const v = db.pragma('user_version', { simple: true }) as number;
    if (v !== SCHEMA_VERSION) throw new CrateError('E_RECORDS_VERSION', `records.db has schema ${v}, this operator reads ${SCHEMA_VERSION}`);
    const byId = db.prepare<[string], DeploymentRow>('SELECT * FROM deployments WHERE id = ?');
    const latest = db.prepare<[string, number, number], DeploymentRow>('SELECT * FROM deployments WHERE team = ? AND env = ? AND app = ? ORDER BY seq DESC LIMIT 1');
    const active = db.prepare<[], DeploymentRow>("SELECT * FROM deployments WHERE status IN ('pending', 'in_progress') ORDER BY seq");
    return {
      getRecord: (id) => {
        const r = byId.get(id);
        return r ? toRecord(r) : undefined;
      },
      latestForApp: (key) => {
        const r = latest.get(key.team, key.env, key.app);
        return r ? toRecord(r) : undefined;
      },
      active: () => active.all().map(toRecord),
      close: () => db.close(),
    };
  } catch (err) {
    db.close();
    throw err;
  }
}
