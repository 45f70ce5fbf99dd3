/**
 * The desired-state store: one YAML document per app under `<stateDir>/desired/<team>/<env>/<app>.yaml`.
 *
 * Promises:
 * - Writes are atomic and durable (atomic.ts), files 0600, folders 0700, and serialised per file.
 * - The store keeps the document *in force* for every app in memory. A file that fails to read,
 *   parse or validate (or whose metadata does not match its path) is reported (logged, and kept in
 *   `errors()` for `GET /v1/apps`) and ignored: the last valid version stays in force.
 * - "Last valid version" survives restarts: every valid version is also copied (atomically) to
 *   `<stateDir>/desired-last-good/<team>/<env>/<app>.yaml`. If a file is invalid at start-up, the
 *   copy is put in force. The copy lives outside `desired/` so people and watchers never mistake it
 *   for desired state; it is removed with the app.
 * - A missing file means the app is not desired (that is how the API deletes an app, and how a GitOps
 *   tool prunes one). An unreadable or invalid file never means that.
 * - Own writes are recognisable: `isOwnWrite(path, contentHash(text))` is true when the file's
 *   content is what the store itself last wrote there (and `isOwnWrite(path, null)` when the store
 *   itself last deleted it), so the file watcher can skip the events of the store's own writes.
 *   Alternatively the watcher calls `reloadFile(path)` for every event: it answers `unchanged` for
 *   content already in force.
 * - Stray temp files of interrupted writes are removed by `open` (only one operator may use a state
 *   directory at a time).
 */
import { createHash } from 'node:crypto';
import { constants } from 'node:fs';
import { open, readdir } from 'node:fs/promises';
import path from 'node:path';
import { CrateError } from '../core/errors.ts';
import { appKeyString, ID_PATTERN, type AppKey } from '../core/identity.ts';
import { cleanStrayTemps, ensureDir, pruneEmptyDirs, removeFileDurably, TEMP_FILE_PATTERN, writeFileAtomic } from './atomic.ts';
import { docKey, MAX_DOC_BYTES, parseDesiredYaml, serializeDesired, validateDesired, type DesiredApp } from './document.ts';
import { KeyedMutex } from './lock.ts';

/** Why a document file is not in force. Messages never contain document values. */
export interface DocError {
  /** Absolute path of the offending file. */
  path: string;
  /** The app the file belongs to, when its path says so. */
  key: AppKey | undefined;
  error: string;
  /** ISO time the error was found. */
  at: string;
}

/** What reloadFile found. */
export type ReloadOutcome =
  | 'unchanged' // content already in force (e.g. the store's own write)
  | 'updated' // a new valid version is in force
  | 'invalid' // reported; the last valid version (if any) stays in force
  | 'removed' // the file is gone: the app is no longer desired
  | 'ignored'; // not a document path (temp file, other extension)

/** The subset of pino's logger the store uses. */
export interface StoreLogger {
  warn(obj: object, msg: string): void;
  info(obj: object, msg: string): void;
}

export interface StoreOptions {
  logger?: StoreLogger;
  now?: () => Date;
  /**
   * Read the documents without changing anything on disk (the `diff` command, beside a running
   * operator): no folders created, no temp files cleaned, no last-good copies written or removed;
   * `write` and `remove` throw E_READ_ONLY. Invalid files still fall back to their last-good copy.
   */
  readOnly?: boolean;
}

const EDITOR_LEFTOVER = /(~|\.swp|\.swx|\.tmp|\.bak|\.orig)$|^4913$/;

/**
 * Names under `desired/` that are never documents and never reported: dotfiles (temp files of atomic
 * writes, editor swap and lock files such as `.#1.yaml`, `.git`) and editor leftovers (`~`, `.swp`,
 * `.bak`, `.orig`, `.tmp`, vim's `4913` probe).
 */
export function isIgnoredName(base: string): boolean {
  return base.startsWith('.') || EDITOR_LEFTOVER.test(base);
}

/** The `DesiredStore.appLock` key of an app. */
export function appLockKey(key: AppKey): string {
  return `app:${appKeyString(key)}`;
}

/** sha256 hex of a file's content, as `isOwnWrite` expects it. */
export function contentHash(text: string | Uint8Array): string {
  return createHash('sha256').update(text).digest('hex');
}

interface InForce {
  doc: DesiredApp;
  /** Hash of the file content that produced `doc`. */
  hash: string;
}

const silent: StoreLogger = { warn: () => undefined, info: () => undefined };

export class DesiredStore {
  /** `<stateDir>/desired`: the folder people, GitOps tools and the API write. */
  readonly root: string;
  /** `<stateDir>/desired-last-good`: copies of the last valid version of each app. */
  readonly lastGoodRoot: string;
  private readonly log: StoreLogger;
  private readonly now: () => Date;
  private readonly inForce = new Map<string, InForce>();
  private readonly errs = new Map<string, DocError>();
  private readonly ownWrites = new Map<string, string | null>();
  private readonly lastGoodHash = new Map<string, string>();
  private readonly lock = new KeyedMutex();
  /**
   * Serialises one app's read-decide-write of its document and its deployment records between the
   * API (a mutation writes the document, then records the deployment) and the reconciler (a pass
   * reads both and records a hand-written document it finds), so neither sees the other's half-done
   * change. Hold `appLockKey(key)`; keep the section short (never across host effects).
   */
  readonly appLock = new KeyedMutex();
  private readonly readOnly: boolean;
  private readonly goneWhileClosed: AppKey[] = [];

  private constructor(stateDir: string, opts: StoreOptions) {
    this.root = path.join(path.resolve(stateDir), 'desired');
    this.lastGoodRoot = path.join(path.resolve(stateDir), 'desired-last-good');
    this.log = opts.logger ?? silent;
    this.now = opts.now ?? (() => new Date());
    this.readOnly = opts.readOnly ?? false;
  }

  /**
   * Open the store: create the folders (0700), remove stray temp files, load every document.
   * Invalid files are reported, not fatal.
   */
  static async open(stateDir: string, opts: StoreOptions = {}): Promise<DesiredStore> {
    const s = new DesiredStore(stateDir, opts);
    if (s.readOnly) {
      for (const file of await listFiles(s.root)) await s.reloadFile(file);
      for (const file of await listFiles(s.lastGoodRoot)) {
        const key = s.keyForPath(file, s.lastGoodRoot);
        if (key && !s.inForce.has(appKeyString(key)) && !s.errs.has(appKeyString(key))) s.goneWhileClosed.push(key);
      }
      return s;
    }
    await ensureDir(s.root);
    await ensureDir(s.lastGoodRoot);
    const stray = [...(await cleanStrayTemps(s.root)), ...(await cleanStrayTemps(s.lastGoodRoot))];
    if (stray.length > 0) s.log.info({ files: stray.length }, 'removed temp files of interrupted writes');
    for (const file of await listFiles(s.root)) await s.reloadFile(file);
    // A copy whose document file is gone belongs to an app whose document was deleted while no store
    // was open (by hand, or a crash between the two unlinks of a delete): it is no longer desired.
    for (const file of await listFiles(s.lastGoodRoot)) {
      const key = s.keyForPath(file, s.lastGoodRoot);
      if (key && !s.inForce.has(appKeyString(key)) && !s.errs.has(appKeyString(key))) {
        s.goneWhileClosed.push(key);
        await removeFileDurably(file);
      }
    }
    return s;
  }

  /**
   * Apps whose document file was deleted while no store had this state dir open (found at `open`:
   * their last-good copy outlived the document). Like a file deleted under a watching operator, the
   * app is no longer desired. Reported by the opening that found them (the copy is then removed,
   * except read-only).
   */
  removedWhileClosed(): AppKey[] {
    return [...this.goneWhileClosed];
  }

  /** Absolute path of an app's document. */
  pathFor(key: AppKey): string {
    return path.join(this.root, key.team, String(key.env), `${key.app}.yaml`);
  }

  private lastGoodPathFor(key: AppKey): string {
    return path.join(this.lastGoodRoot, key.team, String(key.env), `${key.app}.yaml`);
  }

  /** The app a document path belongs to; undefined for anything else under the root. */
  keyForPath(file: string, root: string = this.root): AppKey | undefined {
    const rel = path.relative(root, path.resolve(file));
    const parts = rel.split(path.sep);
    if (parts.length !== 3) return undefined;
    const [team, env, name] = parts as [string, string, string];
    const m = /^([1-9][0-9]{0,9})\.yaml$/.exec(name);
    if (!m || !ID_PATTERN.test(team) || !/^[1-9][0-9]{0,9}$/.test(env)) return undefined;
    const e = Number(env);
    const a = Number(m[1]);
    if (e > 2_147_483_647 || a > 2_147_483_647) return undefined;
    return { team, env: e, app: a };
  }

  /** The document in force for `key` (the last valid version), if the app is desired. */
  get(key: AppKey): DesiredApp | undefined {
    return this.inForce.get(appKeyString(key))?.doc;
  }

  /** Every document in force. */
  list(): DesiredApp[] {
    return [...this.inForce.values()].map((e) => e.doc);
  }

  /** Current document errors, keyed by `team/env/app` (or by path for files outside the layout). */
  errors(): ReadonlyMap<string, DocError> {
    return this.errs;
  }

  /** The error of one app's document, if its file is currently not in force. */
  errorFor(key: AppKey): DocError | undefined {
    return this.errs.get(appKeyString(key));
  }

  /** True when the store's own last action on `file` produced content with this hash (null: deleted it). */
  isOwnWrite(file: string, hash: string | null): boolean {
    const p = path.resolve(file);
    return this.ownWrites.has(p) && this.ownWrites.get(p) === hash;
  }

  /**
   * Validate and atomically write `doc` as its app's document; it is in force once this resolves.
   * Resolves `changed: false` without touching the disk when the same content is already in force.
   * Throws CrateError `E_INVALID_DOCUMENT` for an invalid document (a caller bug: the API validates
   * requests first).
   */
  async write(doc: DesiredApp): Promise<{ path: string; hash: string; changed: boolean }> {
    this.writable();
    const v = validateDesired(doc);
    if (!v.ok) throw new CrateError('E_INVALID_DOCUMENT', v.error);
    const key = docKey(doc);
    const file = this.pathFor(key);
    const text = serializeDesired(doc);
    const hash = contentHash(text);
    return this.lock.run([file], async () => {
      const k = appKeyString(key);
      if (this.inForce.get(k)?.hash === hash && !this.errs.has(k)) return { path: file, hash, changed: false };
      await ensureDir(path.dirname(file));
      this.ownWrites.set(file, hash);
      await writeFileAtomic(file, text);
      this.inForce.set(k, { doc: structuredClone(doc), hash });
      this.errs.delete(k);
      await this.saveLastGood(key, text, hash);
      return { path: file, hash, changed: true };
    });
  }

  /** Durably delete an app's document (and its last-good copy). Resolves false if there was none. */
  async remove(key: AppKey): Promise<boolean> {
    this.writable();
    const file = this.pathFor(key);
    return this.lock.run([file], async () => {
      const k = appKeyString(key);
      this.ownWrites.set(file, null);
      const existed = await removeFileDurably(file);
      await removeFileDurably(this.lastGoodPathFor(key));
      this.lastGoodHash.delete(k);
      await pruneEmptyDirs(path.dirname(file), this.root);
      await pruneEmptyDirs(path.dirname(this.lastGoodPathFor(key)), this.lastGoodRoot);
      const was = this.inForce.delete(k);
      this.errs.delete(k);
      return existed || was;
    });
  }

  /**
   * Re-read one file from disk (the watcher calls this on every event, the resync may too) and
   * update what is in force. Serialised with the store's own writes to the same file.
   */
  async reloadFile(file: string): Promise<ReloadOutcome> {
    const abs = path.resolve(file);
    if (!abs.startsWith(this.root + path.sep)) return 'ignored';
    const base = path.basename(abs);
    if (TEMP_FILE_PATTERN.test(base) || isIgnoredName(base) || !/\.ya?ml$/.test(base)) return 'ignored';
    const key = base.endsWith('.yaml') ? this.keyForPath(abs) : undefined;
    if (!key) {
      if (!(await exists(abs))) {
        this.errs.delete(abs);
        return 'ignored';
      }
      this.report(abs, undefined, 'not at <team>/<environment>/<app>.yaml (team an id, environment and app positive int32, extension .yaml)');
      return 'invalid';
    }
    return this.lock.run([abs], () => this.load(abs, key));
  }

  /** Re-read every file (periodic resync); reports what changed per app key. */
  async reloadAll(): Promise<Map<string, ReloadOutcome>> {
    const out = new Map<string, ReloadOutcome>();
    const seen = new Set<string>();
    for (const file of await listFiles(this.root)) {
      const key = this.keyForPath(file);
      if (key) seen.add(appKeyString(key));
      const r = await this.reloadFile(file);
      if (key) out.set(appKeyString(key), r);
    }
    for (const [k, e] of [...this.errs]) if (!e.key && !(await exists(e.path))) this.errs.delete(k);
    for (const k of [...this.inForce.keys(), ...this.errs.keys()]) {
      if (seen.has(k)) continue;
      const e = this.errs.get(k);
      const key = this.inForce.get(k) ? docKey((this.inForce.get(k) as InForce).doc) : e?.key;
      if (key) out.set(k, await this.reloadFile(this.pathFor(key)));
    }
    return out;
  }

  private async load(file: string, key: AppKey): Promise<ReloadOutcome> {
    const k = appKeyString(key);
    let text: string;
    try {
      const t = await readSmallFile(file);
      if (t === undefined) {
        if (!this.inForce.has(k) && !this.errs.has(k)) return 'unchanged';
        this.inForce.delete(k);
        this.errs.delete(k);
        if (!this.readOnly) await removeFileDurably(this.lastGoodPathFor(key));
        this.lastGoodHash.delete(k);
        this.log.info({ app: k, path: file }, 'desired document removed');
        return 'removed';
      }
      text = t;
    } catch (err) {
      const why = err instanceof CrateError ? err.message : ((err as NodeJS.ErrnoException).code ?? 'I/O error');
      return this.invalid(file, key, `cannot read: ${why}`);
    }
    const hash = contentHash(text);
    const current = this.inForce.get(k);
    if (current?.hash === hash) {
      this.errs.delete(k);
      return 'unchanged';
    }
    const parsed = parseDesiredYaml(text);
    if (!parsed.ok) return this.invalid(file, key, parsed.error);
    const dk = docKey(parsed.doc);
    if (appKeyString(dk) !== k) return this.invalid(file, key, `metadata names app ${appKeyString(dk)} but the file is at ${k}`);
    this.inForce.set(k, { doc: parsed.doc, hash });
    this.errs.delete(k);
    await this.saveLastGood(key, text, hash);
    return 'updated';
  }

  private async invalid(file: string, key: AppKey, error: string): Promise<ReloadOutcome> {
    const k = appKeyString(key);
    this.report(file, key, error);
    if (!this.inForce.has(k)) {
      // Nothing in memory (first load after a restart): fall back to the persisted last-good copy.
      const copy = await readSmallFile(this.lastGoodPathFor(key)).catch(() => undefined);
      if (copy !== undefined) {
        const parsed = parseDesiredYaml(copy);
        if (parsed.ok && appKeyString(docKey(parsed.doc)) === k) {
          const hash = contentHash(copy);
          this.inForce.set(k, { doc: parsed.doc, hash });
          this.lastGoodHash.set(k, hash);
          this.log.info({ app: k }, 'last valid version of the document put in force');
        }
      }
    }
    return 'invalid';
  }

  private report(file: string, key: AppKey | undefined, error: string): void {
    const k = key ? appKeyString(key) : file;
    const prev = this.errs.get(k);
    if (prev?.error === error && prev.path === file) return;
    this.errs.set(k, { path: file, key, error, at: this.now().toISOString() });
    this.log.warn({ path: file, app: key ? k : undefined, error }, 'desired document rejected; last valid version stays in force');
  }

  private writable(): void {
    if (this.readOnly) throw new CrateError('E_READ_ONLY', 'this desired-state store was opened read-only');
  }

  private async saveLastGood(key: AppKey, text: string, hash: string): Promise<void> {
    if (this.readOnly) return;
    const k = appKeyString(key);
    if (this.lastGoodHash.get(k) === hash) return;
    const copy = this.lastGoodPathFor(key);
    if (!this.lastGoodHash.has(k)) {
      // First sight since start-up: the copy on disk is usually current already (reading is far
      // cheaper than an fsync'd rewrite of every copy at every start).
      const existing = await readSmallFile(copy).catch(() => undefined);
      if (existing !== undefined && contentHash(existing) === hash) {
        this.lastGoodHash.set(k, hash);
        return;
      }
    }
    await ensureDir(path.dirname(copy));
    await writeFileAtomic(copy, text);
    this.lastGoodHash.set(k, hash);
  }
}

/** Read a regular file (no symlinks) of at most MAX_DOC_BYTES; undefined when it does not exist. */
async function readSmallFile(file: string): Promise<string | undefined> {
  let fh;
  try {
    fh = await open(file, constants.O_RDONLY | constants.O_NOFOLLOW);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw err;
  }
  try {
    const st = await fh.stat();
    if (!st.isFile()) throw new CrateError('E_NOT_A_FILE', 'not a regular file');
    if (st.size > MAX_DOC_BYTES) throw new CrateError('E_TOO_LARGE', `larger than ${MAX_DOC_BYTES} bytes`);
    return await fh.readFile('utf8');
  } finally {
    await fh.close();
  }
}

async function exists(file: string): Promise<boolean> {
  try {
    const fh = await open(file, constants.O_RDONLY | constants.O_NOFOLLOW);
    await fh.close();
    return true;
  } catch {
    return false;
  }
}

/** Every regular file below `root` (no temp files), depth-first. */
async function listFiles(root: string): Promise<string[]> {
  const out: string[] = [];
  const walk = async (dir: string): Promise<void> => {
    let entries;
    try {
      entries = await readdir(dir, { withFileTypes: true });
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return;
      throw err;
    }
    for (const e of entries) {
      const p = path.join(dir, e.name);
      if (e.isDirectory()) await walk(p);
      else if (!TEMP_FILE_PATTERN.test(e.name)) out.push(p);
    }
  };
  await walk(root);
  return out.sort();
}
