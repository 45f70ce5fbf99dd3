/**
 * Release assets: download `asset_url`, unpack it into `<appDir>/releases/<version>/`, find the start
 * command, and prune old releases.
 *
 * Promises:
 * - Atomic and idempotent: the asset is downloaded and unpacked inside `releases/.tmp-…/`, checked,
 *   and only then renamed to `releases/<version>`. A release folder that exists is complete; fetching
 *   an existing version is a no-op (the version is the identity: a different URL for the same version
 *   is not fetched again). On any failure the temp folder is removed: nothing half-done stays behind.
 * - Type by content (magic bytes), not by extension: gzip → `.tar.gz`/`.tgz`, `ustar` → plain tar,
 *   `PK` → zip, ELF or `#!` → a single executable. Anything else is `E_ASSET_CORRUPT`.
 * - Safe unpacking: members with absolute paths, `..` segments, links (symbolic or hard) resolving
 *   outside the release folder, or device/FIFO entries fail the fetch with `E_ASSET_UNSAFE`; set-id
 *   bits are dropped; a final walk checks every symlink with realpath.
 * - Limits: download size (Content-Length and streamed bytes), overall deadline (connect + headers +
 *   body), redirect count (each hop goes through the given dispatcher, so an SSRF-checking dispatcher
 *   checks every hop), unpacked size and entry count.
 * - Start command (API.md): the `web:` line of a root `Procfile` (split by procfile.ts, no shell), else
 *   an executable `./start`, else the only executable regular file at the root; none →
 *   `E_ASSET_NO_COMMAND`. Relative executables are resolved inside the release folder.
 *
 * Error codes: E_INVALID_VERSION, E_ASSET_URL (not http/https, credentials in URL), E_ASSET_HTTP (non-2xx status, too
 * many redirects; `details.status`), E_ASSET_DOWNLOAD (connection failed/reset/truncated body),
 * E_ASSET_TIMEOUT, E_ASSET_TOO_LARGE, E_ASSET_CORRUPT, E_ASSET_UNSAFE, E_ASSET_NO_COMMAND,
 * E_ASSET_COMMAND (Procfile needs a shell), E_ASSET_IO (the release folder cannot be written), E_ABORTED, plus CrateErrors raised by the dispatcher
 * (e.g. E_SSRF_BLOCKED, E_DNS), passed through unchanged.
 */
import { createHash, randomBytes } from 'node:crypto';
import { createReadStream, createWriteStream } from 'node:fs';
import { chmod, lstat, mkdir, open, readdir, readFile, readlink, realpath, rename, rm, stat, symlink, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { Transform } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import zlib from 'node:zlib';
import { Unpack, type ReadEntry } from 'tar';
import { Agent, request, type Dispatcher } from 'undici';
import * as yauzl from 'yauzl';
import { CrateError } from '../core/errors.ts';
import { VERSION_PATTERN } from '../core/identity.ts';
import { ensureDir, fsyncDir } from '../desired/atomic.ts';
import { findCrateError } from './net-policy.ts';
import { parseProcfile, splitCommand } from './procfile.ts';
import type { ExecArg } from './unit.ts';

/** Caps of one fetch. */
export interface AssetLimits {
  /** Bytes downloaded. */
  maxBytes: number;
  /** Overall deadline of the download (connect, redirects, headers, body). */
  timeoutMs: number;
  maxRedirects: number;
  /** Sum of unpacked file sizes. */
  maxUnpackedBytes: number;
  /** Archive members. */
  maxEntries: number;
}

export const DEFAULT_ASSET_LIMITS: AssetLimits = {
  maxBytes: 512 * 1024 * 1024,
  timeoutMs: 5 * 60_000,
  maxRedirects: 5,
  maxUnpackedBytes: 2 * 1024 * 1024 * 1024,
  maxEntries: 200_000,
};

export type AssetKind = 'tar.gz' | 'tar' | 'zip' | 'executable';

/** How the release is started. argv[0] is absolute inside the release folder, or a bare name. */
export interface StartCommand {
  source: 'procfile' | 'start' | 'executable';
  argv: ExecArg[];
}

/** A complete release on disk. */
export interface Release {
  version: string;
  /** `<appDir>/releases/<version>`: the unit's WorkingDirectory. */
  dir: string;
  /** 'unknown' only for a release whose metadata file was lost. */
  kind: AssetKind | 'unknown';
  command: StartCommand;
  /** Hex SHA-256 of the downloaded asset ('' when the metadata file was lost). */
  sha256: string;
  bytes: number;
  /** True when the release was already there and nothing was downloaded. */
  reused: boolean;
}

/** Options of fetchRelease. */
export interface FetchReleaseOptions {
  assetUrl: string;
  /** The app's folder (layout.ts appDir); releases go to `<appDir>/releases/`. */
  appDir: string;
  version: string;
  /** undici dispatcher for every request (e.g. net-policy's guardedAgent). Default: a private Agent. */
  dispatcher?: Dispatcher;
  limits?: Partial<AssetLimits>;
  signal?: AbortSignal;
}

/** Name of the metadata file written into every release folder (reserved: an archive's copy is replaced). */
export const RELEASE_META = '.crate-release.json';
const TMP_PREFIX = '.tmp-';

interface ReleaseMeta {
  version: string;
  kind: AssetKind;
  /** argv with in-release executables as `./relative` paths. */
  command: StartCommand;
  sha256: string;
  bytes: number;
  fetchedAt: string;
}

function fail(code: string, message: string, details?: Record<string, unknown>, cause?: unknown): never {
  throw new CrateError(code, message, { ...(details ? { details } : {}), ...(cause !== undefined ? { cause } : {}) });
}

/** The folder holding an app's releases. */
export function releasesRoot(appDir: string): string {
  return path.join(appDir, 'releases');
}

// Fetches in progress in this process, by final release folder (dedupe) and their temp folders (so
// pruning never removes a temp folder still being filled).
const inFlight = new Map<string, Promise<Release>>();
const activeTemps = new Set<string>();

/**
 * Make sure release `version` exists under `appDir` and return it (see module comment). Concurrent
 * calls for the same release in this process share one fetch.
 */
export async function fetchRelease(opts: FetchReleaseOptions): Promise<Release> {
  if (!VERSION_PATTERN.test(opts.version)) fail('E_INVALID_VERSION', `version: ${JSON.stringify(opts.version)} does not match ${VERSION_PATTERN.source}`);
  const dir = path.join(releasesRoot(path.resolve(opts.appDir)), opts.version);
  const running = inFlight.get(dir);
  if (running) return running;
  const job = fetchOnce(opts, dir).finally(() => inFlight.delete(dir));
  inFlight.set(dir, job);
  return job;
}

async function fetchOnce(opts: FetchReleaseOptions, dir: string): Promise<Release> {
  const existing = await readExisting(dir, opts.version);
  if (existing) return existing;
  const limits = { ...DEFAULT_ASSET_LIMITS, ...opts.limits };
  const url = checkUrl(opts.assetUrl);
  const root = path.dirname(dir);
  await ensureDir(root, 0o755);
  const tmp = path.join(root, `${TMP_PREFIX}${opts.version}-${process.pid}-${randomBytes(4).toString('hex')}`);
  activeTemps.add(tmp);
  let result: Release | undefined;
  let failure: CrateError | undefined;
  try {
    result = await buildRelease(opts, url, limits, dir, tmp);
  } catch (err) {
    failure = err instanceof CrateError ? err : new CrateError('E_ASSET_IO', `cannot write release ${opts.version}: ${(err as Error).message}`, { cause: err });
  }
  try {
    await discard(tmp);
  } catch (err) {
    // Never hide why the fetch failed; a leftover temp folder is removed by the next pruneReleases.
    failure ??= new CrateError('E_ASSET_IO', `cannot remove temp folder ${tmp}`, { cause: err });
  } finally {
    activeTemps.delete(tmp);
  }
  if (failure) throw failure;
  return result as Release;
}

/** Download into `tmp`, unpack, check, find the command, and rename into `dir`. */
async function buildRelease(opts: FetchReleaseOptions, url: URL, limits: AssetLimits, dir: string, tmp: string): Promise<Release> {
  const root = path.dirname(dir);
  await mkdir(tmp, { mode: 0o700 });
  const assetFile = path.join(tmp, 'asset');
  const unpacked = path.join(tmp, 'root');
  await mkdir(unpacked, { mode: 0o755 });
  const dl = await download(url, assetFile, limits, opts.dispatcher, opts.signal);
  const kind = await sniff(assetFile);
  if (kind === 'executable') {
    const name = executableName(url);
    await rename(assetFile, path.join(unpacked, name));
    await chmod(path.join(unpacked, name), 0o755);
  } else if (kind === 'zip') {
    await unpackZip(assetFile, unpacked, limits);
  } else {
    await unpackTar(assetFile, unpacked, limits, opts.signal);
  }
  await verifyTree(unpacked);
  if (opts.signal?.aborted) fail('E_ABORTED', 'asset fetch aborted');
  const command = await findCommand(unpacked);
  const meta: ReleaseMeta = { version: opts.version, kind, command, sha256: dl.sha256, bytes: dl.bytes, fetchedAt: new Date().toISOString() };
  await writeFile(path.join(unpacked, RELEASE_META), `${JSON.stringify(meta, null, 2)}\n`, { mode: 0o644 });
  await chmod(unpacked, 0o755);
  try {
    await rename(unpacked, dir);
  } catch (err) {
    // Another process finished the same release first: theirs is complete, use it.
    const code = (err as NodeJS.ErrnoException).code;
    if (code !== 'ENOTEMPTY' && code !== 'EEXIST') throw err;
    const other = await readExisting(dir, opts.version);
    if (other) return other;
    throw err;
  }
  await fsyncDir(root);
  return { version: opts.version, dir, kind, command: resolveCommand(dir, command), sha256: dl.sha256, bytes: dl.bytes, reused: false };
}

/**
 * Remove a temp folder that an aborted unpacker may still be writing into: rename it first (the
 * unpacker's later operations under the old path then fail instead of recreating it), then delete it,
 * retrying while late writes land.
 */
async function discard(tmp: string): Promise<void> {
  const away = `${tmp}-del`;
  try {
    await rename(tmp, away);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return;
    throw err;
  }
  await rm(away, { recursive: true, force: true, maxRetries: 10, retryDelay: 20 });
}

async function readExisting(dir: string, version: string): Promise<Release | undefined> {
  try {
    if (!(await stat(dir)).isDirectory()) return undefined;
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw err;
  }
  let meta: ReleaseMeta | undefined;
  try {
    meta = JSON.parse(await readFile(path.join(dir, RELEASE_META), 'utf8')) as ReleaseMeta;
  } catch {
    // A release folder is complete by construction (renamed into place last); without readable
    // metadata (edited by hand) find the command again.
    meta = undefined;
  }
  const command = meta?.command ?? (await findCommand(dir));
  return { version, dir, kind: meta?.kind ?? 'unknown', command: resolveCommand(dir, command), sha256: meta?.sha256 ?? '', bytes: meta?.bytes ?? 0, reused: true };
}

function checkUrl(s: string): URL {
  let url: URL;
  try {
    url = new URL(s);
  } catch (err) {
    fail('E_ASSET_URL', `asset_url is not a URL: ${s.slice(0, 200)}`, undefined, err);
  }
  if (url.protocol !== 'http:' && url.protocol !== 'https:') fail('E_ASSET_URL', `asset_url must be http or https, got ${url.protocol}`);
  if (url.username !== '' || url.password !== '') fail('E_ASSET_URL', 'asset_url must not carry credentials');
  return url;
}

function redact(url: URL): string {
  return `${url.origin}${url.pathname}`;
}

/** Stream the asset to `file`, following at most maxRedirects redirects; returns size and hash. */
async function download(start: URL, file: string, limits: AssetLimits, dispatcher: Dispatcher | undefined, outer: AbortSignal | undefined): Promise<{ bytes: number; sha256: string }> {
  const deadline = AbortSignal.timeout(limits.timeoutMs);
  const signal = outer ? AbortSignal.any([deadline, outer]) : deadline;
  const own = dispatcher ? undefined : new Agent({ connect: { timeout: Math.min(limits.timeoutMs, 30_000) } });
  const via = dispatcher ?? own;
  function transportError(err: unknown, url: URL): never {
    if (outer?.aborted) fail('E_ABORTED', 'asset download aborted');
    if (deadline.aborted) fail('E_ASSET_TIMEOUT', `asset download took longer than ${limits.timeoutMs} ms: ${redact(url)}`);
    const policy = findCrateError(err);
    if (policy) throw policy;
    // The transport's own header/body timeouts are timeouts too, whichever deadline fired first.
    const code = (err as { code?: unknown }).code;
    if (code === 'UND_ERR_HEADERS_TIMEOUT' || code === 'UND_ERR_BODY_TIMEOUT' || code === 'UND_ERR_CONNECT_TIMEOUT') {
      fail('E_ASSET_TIMEOUT', `asset server did not answer in time (${(err as Error).message}): ${redact(url)}`, { url: redact(url) }, err);
    }
    fail('E_ASSET_DOWNLOAD', `asset download failed: ${redact(url)}: ${(err as Error).message}`, { url: redact(url) }, err);
  }
  try {
    let url = start;
    for (let hop = 0; ; hop++) {
      let res: Dispatcher.ResponseData;
      try {
        res = await request(url, {
          dispatcher: via,
          method: 'GET',
          headers: { 'accept-encoding': 'identity', 'user-agent': 'crate-operator' },
          signal,
          headersTimeout: limits.timeoutMs,
          bodyTimeout: limits.timeoutMs,
        });
      } catch (err) {
        transportError(err, url);
      }
      const status = res.statusCode;
      if ([301, 302, 303, 307, 308].includes(status)) {
        res.body.on('error', () => undefined);
        res.body.destroy();
        const loc = res.headers.location;
        if (typeof loc !== 'string') fail('E_ASSET_HTTP', `redirect ${status} without Location from ${redact(url)}`, { status });
        if (hop >= limits.maxRedirects) fail('E_ASSET_HTTP', `more than ${limits.maxRedirects} redirects fetching ${redact(start)}`, { status, redirects: hop + 1 });
        url = checkUrl(new URL(loc, url).toString());
        continue;
      }
      if (status < 200 || status > 299) {
        res.body.on('error', () => undefined);
        res.body.destroy();
        fail('E_ASSET_HTTP', `asset download answered HTTP ${status}: ${redact(url)}`, { status, url: redact(url) });
      }
      const declared = Number(res.headers['content-length']);
      if (Number.isFinite(declared) && declared > limits.maxBytes) {
        res.body.on('error', () => undefined);
        res.body.destroy();
        fail('E_ASSET_TOO_LARGE', `asset is ${declared} bytes; the limit is ${limits.maxBytes}`, { bytes: declared, limit: limits.maxBytes });
      }
      const hash = createHash('sha256');
      let bytes = 0;
      const meter = new Transform({
        transform(chunk: Buffer, _enc, cb) {
          bytes += chunk.length;
          if (bytes > limits.maxBytes) {
            cb(new CrateError('E_ASSET_TOO_LARGE', `asset exceeds the limit of ${limits.maxBytes} bytes`, { details: { limit: limits.maxBytes } }));
            return;
          }
          hash.update(chunk);
          cb(null, chunk);
        },
      });
      try {
        await pipeline(res.body, meter, createWriteStream(file, { flags: 'wx', mode: 0o600 }));
      } catch (err) {
        if (err instanceof CrateError) throw err;
        transportError(err, url);
      }
      if (Number.isFinite(declared) && bytes !== declared) {
        fail('E_ASSET_DOWNLOAD', `asset truncated: got ${bytes} of ${declared} bytes from ${redact(url)}`, { bytes, declared });
      }
      return { bytes, sha256: hash.digest('hex') };
    }
  } finally {
    if (own) await own.close();
  }
}

/** Asset type from the first bytes. */
async function sniff(file: string): Promise<AssetKind> {
  const fh = await open(file, 'r');
  const head = Buffer.alloc(512);
  let n: number;
  try {
    ({ bytesRead: n } = await fh.read(head, 0, 512, 0));
  } finally {
    await fh.close();
  }
  if (n >= 2 && head[0] === 0x1f && head[1] === 0x8b) return 'tar.gz';
  if (n >= 4 && head[0] === 0x50 && head[1] === 0x4b && ((head[2] === 0x03 && head[3] === 0x04) || (head[2] === 0x05 && head[3] === 0x06))) return 'zip';
  if (n >= 4 && head[0] === 0x7f && head[1] === 0x45 && head[2] === 0x4c && head[3] === 0x46) return 'executable';
  if (n >= 2 && head[0] === 0x23 && head[1] === 0x21) return 'executable';
  if (n >= 262 && head.subarray(257, 262).toString('latin1') === 'ustar') return 'tar';
  fail('E_ASSET_CORRUPT', n === 0 ? 'asset is empty' : 'asset is neither a .tar.gz/.tgz, a .zip nor an executable (ELF or #! script)');
}

function executableName(url: URL): string {
  let base = '';
  try {
    base = decodeURIComponent(url.pathname.split('/').pop() ?? '');
  } catch {
    // Malformed %-escapes: fall back to the default name.
    base = '';
  }
  return /^[A-Za-z0-9][A-Za-z0-9_.+-]{0,127}$/.test(base) && base !== 'Procfile' && base !== RELEASE_META ? base : 'app';
}

/**
 * Archive member path → checked relative path. Unsafe paths (absolute, drive letters, `..`) fail
 * with E_ASSET_UNSAFE; `./` prefixes and trailing slashes are dropped. '' means the root itself.
 */
function memberPath(name: string): string {
  if (name.startsWith('/') || /^[A-Za-z]:/.test(name)) fail('E_ASSET_UNSAFE', `archive member has an absolute path: ${name.slice(0, 200)}`, { member: name.slice(0, 200) });
  const parts = name.split('/').filter((p) => p !== '' && p !== '.');
  if (parts.includes('..')) fail('E_ASSET_UNSAFE', `archive member escapes the release folder: ${name.slice(0, 200)}`, { member: name.slice(0, 200) });
  return parts.join('/');
}

/** A link target (relative to the link's folder) must stay inside the release folder. */
function checkLinkTarget(member: string, target: string, hard: boolean): void {
  const bad = (): never => fail('E_ASSET_UNSAFE', `archive ${hard ? 'hard link' : 'symlink'} ${member.slice(0, 200)} points outside the release folder: ${target.slice(0, 200)}`, { member: member.slice(0, 200), target: target.slice(0, 200) });
  if (target === '' || target.startsWith('/')) bad();
  const resolved = path.posix.normalize(hard ? target : path.posix.join(path.posix.dirname(member), target));
  if (resolved === '..' || resolved.startsWith('../')) bad();
}

async function unpackTar(file: string, dest: string, limits: AssetLimits, signal: AbortSignal | undefined): Promise<void> {
  let problem: CrateError | undefined;
  let entries = 0;
  let total = 0;
  const warnings: string[] = [];
  const source = createReadStream(file);
  // Assigned below; `stop` only runs once extraction has started.
  let unpacker: Unpack | undefined;
  const stop = (err: CrateError): void => {
    problem ??= err;
    // Stop parsing (and decompressing) at once; the temp folder is discarded by the caller.
    unpacker?.abort(err);
    source.destroy();
  };
  const filter = (p: string, e: unknown): boolean => {
    const entry = e as ReadEntry;
    if (problem) return false;
    try {
      entries++;
      if (entries > limits.maxEntries) fail('E_ASSET_TOO_LARGE', `archive has more than ${limits.maxEntries} members`);
      total += entry.size ?? 0;
      if (total > limits.maxUnpackedBytes) fail('E_ASSET_TOO_LARGE', `archive unpacks to more than ${limits.maxUnpackedBytes} bytes`);
      const rel = memberPath(p);
      switch (entry.type) {
        case 'File':
        case 'OldFile':
        case 'ContiguousFile':
        case 'Directory':
          break;
        case 'SymbolicLink':
          checkLinkTarget(rel, entry.linkpath ?? '', false);
          break;
        case 'Link':
          checkLinkTarget(rel, memberPath(entry.linkpath ?? ''), true);
          break;
        default:
          fail('E_ASSET_UNSAFE', `archive member ${rel.slice(0, 200)} has unsupported type ${entry.type}`, { member: rel.slice(0, 200), type: entry.type });
      }
      // No set-uid/set-gid/sticky bits from an archive.
      if (typeof entry.mode === 'number') entry.mode &= 0o777;
      return rel !== '';
    } catch (err) {
      stop(err instanceof CrateError ? err : new CrateError('E_ASSET_CORRUPT', String(err)));
      return false;
    }
  };
  const onAbort = (): void => stop(new CrateError('E_ABORTED', 'asset fetch aborted'));
  signal?.addEventListener('abort', onAbort, { once: true });
  try {
    unpacker = new Unpack({
      cwd: dest,
      strict: true,
      preserveOwner: false,
      filter,
      onwarn: (code: string, message: string) => {
        warnings.push(`${code}: ${message}`);
      },
    });
    await pipeline(source, unpacker);
  } catch (err) {
    if (problem) throw problem;
    fail('E_ASSET_CORRUPT', `archive is corrupt: ${(err as Error).message}`, undefined, err);
  } finally {
    signal?.removeEventListener('abort', onAbort);
  }
  if (problem) throw problem;
  if (warnings.length > 0) fail('E_ASSET_CORRUPT', `archive is corrupt: ${warnings.slice(0, 3).join('; ')}`, { warnings: warnings.slice(0, 10) });
  if (entries === 0) fail('E_ASSET_CORRUPT', 'archive is empty');
}

async function unpackZip(file: string, dest: string, limits: AssetLimits): Promise<void> {
  let zip: yauzl.ZipFile;
  try {
    zip = await yauzl.openPromise(file, { lazyEntries: true, decodeStrings: false, validateEntrySizes: true, autoClose: true });
  } catch (err) {
    fail('E_ASSET_CORRUPT', `zip is corrupt: ${(err as Error).message}`, undefined, err);
  }
  const links: Array<{ rel: string; target: string }> = [];
  let total = 0;
  let entries = 0;
  try {
    if (zip.entryCount > limits.maxEntries) fail('E_ASSET_TOO_LARGE', `zip has more than ${limits.maxEntries} members`);
    for await (const entry of zip.eachEntry()) {
      entries++;
      const name = yauzl.getFileNameLowLevel(entry.generalPurposeBitFlag, entry.fileNameRaw, entry.extraFields, false);
      if (name.includes('\\')) fail('E_ASSET_UNSAFE', `zip member name contains a backslash: ${name.slice(0, 200)}`, { member: name.slice(0, 200) });
      const rel = memberPath(name);
      if (entry.isEncrypted()) fail('E_ASSET_CORRUPT', `zip member ${rel} is encrypted`);
      total += entry.uncompressedSize;
      if (total > limits.maxUnpackedBytes) fail('E_ASSET_TOO_LARGE', `zip unpacks to more than ${limits.maxUnpackedBytes} bytes`);
      const unixMode = entry.versionMadeBy >> 8 === 3 ? entry.externalFileAttributes >>> 16 : 0;
      const type = unixMode & 0o170000;
      const target = path.join(dest, rel);
      if (rel === '') continue;
      if (name.endsWith('/') || type === 0o040000) {
        await mkdir(target, { recursive: true, mode: 0o755 });
      } else if (type === 0o120000) {
        if (entry.uncompressedSize > 4096) fail('E_ASSET_UNSAFE', `zip symlink ${rel} has an oversized target`);
        const stream = await zip.openReadStreamPromise(entry);
        const chunks: Buffer[] = [];
        for await (const c of stream) chunks.push(c as Buffer);
        const data = Buffer.concat(chunks);
        if (zlib.crc32(data) !== entry.crc32) fail('E_ASSET_CORRUPT', `zip member ${rel} fails its CRC check`);
        const linkTarget = data.toString('utf8');
        checkLinkTarget(rel, linkTarget, false);
        links.push({ rel, target: linkTarget });
      } else if (type === 0 || type === 0o100000) {
        await mkdir(path.dirname(target), { recursive: true, mode: 0o755 });
        const stream = await zip.openReadStreamPromise(entry);
        // yauzl checks sizes but not checksums.
        let crc = 0;
        const check = new Transform({
          transform(chunk: Buffer, _enc, cb) {
            crc = zlib.crc32(chunk, crc);
            cb(null, chunk);
          },
          flush(cb) {
            cb(crc === entry.crc32 ? null : new CrateError('E_ASSET_CORRUPT', `zip member ${rel} fails its CRC check`));
          },
        });
        await pipeline(stream, check, createWriteStream(target, { flags: 'wx', mode: (unixMode & 0o777) || 0o644 }));
      } else {
        fail('E_ASSET_UNSAFE', `zip member ${rel} has unsupported type ${type.toString(8)}`, { member: rel });
      }
    }
  } catch (err) {
    zip.close();
    if (err instanceof CrateError) throw err;
    fail('E_ASSET_CORRUPT', `zip is corrupt: ${(err as Error).message}`, undefined, err);
  }
  if (entries === 0) fail('E_ASSET_CORRUPT', 'zip is empty');
  // Links last, so no member was ever written through one.
  for (const l of links) {
    const at = path.join(dest, l.rel);
    await mkdir(path.dirname(at), { recursive: true, mode: 0o755 });
    await symlink(l.target, at);
  }
}

/** Walk the unpacked tree: only files, folders and symlinks that resolve inside it. */
async function verifyTree(root: string): Promise<void> {
  const realRoot = await realpath(root);
  const walk = async (dir: string): Promise<void> => {
    for (const e of await readdir(dir, { withFileTypes: true })) {
      const p = path.join(dir, e.name);
      if (e.isDirectory()) await walk(p);
      else if (e.isSymbolicLink()) {
        const rel = path.relative(root, p).split(path.sep).join('/');
        checkLinkTarget(rel, await readlink(p), false);
        let real: string | undefined;
        try {
          real = await realpath(p);
        } catch (err) {
          // A dangling link (or a loop) inside the folder cannot lead anywhere outside it.
          const code = (err as NodeJS.ErrnoException).code;
          if (code !== 'ENOENT' && code !== 'ELOOP') throw err;
        }
        if (real !== undefined && real !== realRoot && !real.startsWith(realRoot + path.sep)) {
          fail('E_ASSET_UNSAFE', `symlink ${rel} resolves outside the release folder`, { member: rel });
        }
      } else if (!e.isFile()) {
        fail('E_ASSET_UNSAFE', `unsupported file type at ${path.relative(root, p)}`);
      }
    }
  };
  await walk(root);
}

async function isExecutableFile(p: string): Promise<boolean> {
  try {
    const s = await lstat(p);
    return s.isFile() && (s.mode & 0o111) !== 0;
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return false;
    throw err;
  }
}

/**
 * The start command of an unpacked release in `root` (see module comment). argv[0] of an in-release
 * executable is `./relative`; resolveCommand makes it absolute.
 */
export async function findCommand(root: string): Promise<StartCommand> {
  let procfile: string | undefined;
  try {
    const s = await lstat(path.join(root, 'Procfile'));
    if (s.isFile()) procfile = await readFile(path.join(root, 'Procfile'), 'utf8');
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
  }
  if (procfile !== undefined) {
    const web = parseProcfile(procfile).get('web');
    if (web !== undefined) {
      const argv = splitCommand(web);
      const exe = argv[0];
      if (typeof exe !== 'string') fail('E_ASSET_COMMAND', `Procfile web command must start with a literal program name: ${web}`);
      if (exe.includes('/') && !exe.startsWith('/')) {
        const rel = memberPath(exe);
        if (rel === '') fail('E_ASSET_COMMAND', `Procfile web command names a folder: ${exe}`);
        argv[0] = `./${rel}`;
      } else if (!exe.startsWith('/') && !/^[A-Za-z0-9_][A-Za-z0-9_.+-]*$/.test(exe)) {
        fail('E_ASSET_COMMAND', `Procfile web command has an unusable program name: ${exe.slice(0, 100)}`);
      }
      return { source: 'procfile', argv };
    }
  }
  if (await isExecutableFile(path.join(root, 'start'))) return { source: 'start', argv: ['./start'] };
  const candidates: string[] = [];
  for (const e of await readdir(root, { withFileTypes: true })) {
    if (e.name === RELEASE_META || e.name === 'Procfile') continue;
    if (e.isFile() && (await isExecutableFile(path.join(root, e.name)))) candidates.push(e.name);
  }
  if (candidates.length === 1) return { source: 'executable', argv: [`./${candidates[0] as string}`] };
  fail(
    'E_ASSET_NO_COMMAND',
    candidates.length === 0
      ? 'no start command: no Procfile with a web: line, no executable ./start, no executable file at the archive root'
      : `no start command: no Procfile web: line or ./start, and ${candidates.length} executables at the root (${candidates.slice(0, 5).join(', ')})`,
    { candidates: candidates.slice(0, 20) },
  );
}

/** argv with `./relative` argv[0] made absolute inside `dir`. */
export function resolveCommand(dir: string, cmd: StartCommand): StartCommand {
  const [exe, ...rest] = cmd.argv;
  if (typeof exe === 'string' && exe.startsWith('./')) return { source: cmd.source, argv: [path.join(dir, exe.slice(2)), ...rest] };
  return { source: cmd.source, argv: [...cmd.argv] };
}

/** Options of pruneReleases. */
export interface PruneOptions {
  appDir: string;
  /** Versions in use (running, or about to run): never removed. */
  keep: readonly string[];
  /** How many of the newest releases to keep besides `keep` (config.keepReleases). */
  keepCount: number;
}

/**
 * Remove releases beyond the newest `keepCount` (by fetch time), never one listed in `keep`, and
 * temp folders left by interrupted fetches. Each removed release is first renamed to a temp name, so
 * a half-removed folder never looks like a release. Returns the removed versions.
 */
export async function pruneReleases(opts: PruneOptions): Promise<string[]> {
  const root = releasesRoot(path.resolve(opts.appDir));
  let entries;
  try {
    entries = await readdir(root, { withFileTypes: true });
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return [];
    throw err;
  }
  for (const e of entries) {
    const p = path.join(root, e.name);
    if (e.name.startsWith(TMP_PREFIX) && !activeTemps.has(p)) await rm(p, { recursive: true, force: true });
  }
  const releases: Array<{ version: string; at: number }> = [];
  for (const e of entries) {
    if (!e.isDirectory() || !VERSION_PATTERN.test(e.name)) continue;
    const p = path.join(root, e.name);
    let at: number;
    try {
      at = Date.parse((JSON.parse(await readFile(path.join(p, RELEASE_META), 'utf8')) as ReleaseMeta).fetchedAt);
      if (!Number.isFinite(at)) throw new Error('bad fetchedAt');
    } catch {
      // No usable metadata: fall back to the folder's modification time.
      at = (await stat(p)).mtimeMs;
    }
    releases.push({ version: e.name, at });
  }
  releases.sort((a, b) => b.at - a.at || (a.version < b.version ? 1 : -1));
  const keep = new Set(opts.keep);
  const newest = releases.slice(0, Math.max(0, opts.keepCount)).map((r) => r.version);
  const removed: string[] = [];
  for (const r of releases) {
    if (keep.has(r.version) || newest.includes(r.version)) continue;
    const doomed = path.join(root, `${TMP_PREFIX}del-${r.version}-${randomBytes(4).toString('hex')}`);
    await rename(path.join(root, r.version), doomed);
    await rm(doomed, { recursive: true, force: true });
    removed.push(r.version);
  }
  if (removed.length > 0) await fsyncDir(root);
  return removed;
}

/** Delete an app's whole folder (releases and env files), e.g. when the app is deleted. Idempotent. */
export async function removeAppDir(appDir: string): Promise<void> {
  const abs = path.resolve(appDir);
  const doomed = path.join(path.dirname(abs), `${TMP_PREFIX}del-${path.basename(abs)}-${randomBytes(4).toString('hex')}`);
  try {
    await rename(abs, doomed);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return;
    throw err;
  }
  await fsyncDir(path.dirname(abs));
  await rm(doomed, { recursive: true, force: true });
}
