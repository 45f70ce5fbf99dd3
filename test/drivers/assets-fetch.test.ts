// fetchRelease / pruneReleases against real local HTTP servers: every archive kind, start-command
// discovery, each failure mode with its code, and "nothing half-done left behind".
import { existsSync } from 'node:fs';
import { lstat, mkdir, readdir, readFile, readlink, stat, utimes, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { fetchRelease, pruneReleases, RELEASE_META, removeAppDir, type FetchReleaseOptions, type Release } from '../../src/drivers/assets.ts';
import { guardedAgent } from '../../src/drivers/net-policy.ts';
import { getTestHost, tempDir } from '../harness/index.ts';
import { startServer, tar, tarGz, zip, type TestServer } from './assets-fixtures.ts';

let srv: TestServer;
beforeAll(async () => {
  srv = await startServer();
});
afterAll(async () => {
  await srv.close();
});

const PROCFILE_APP = tarGz([
  { name: 'Procfile', body: 'web: node server.mjs --port $PORT\n' },
  { name: 'server.mjs', body: 'console.log(1)\n' },
  { name: 'lib/', type: '5' },
  { name: 'lib/util.js', body: 'x' },
  { name: 'lib/link.js', type: '2', linkname: 'util.js' },
  { name: 'lib/hard.js', type: '1', linkname: 'lib/util.js' },
]);

let n = 0;
/** A fresh app folder, plus the sentinel folder an escaping member would land in. */
async function appDir(): Promise<{ appDir: string; outside: string }> {
  const base = await tempDir('assets');
  n += 1;
  const dir = path.join(base, 'apps', 'team', '1', String(n));
  await mkdir(dir, { recursive: true });
  return { appDir: dir, outside: base };
}

async function fetchErr(opts: FetchReleaseOptions): Promise<{ code: string; message: string; details: unknown }> {
  try {
    await fetchRelease(opts);
  } catch (err) {
    const e = err as { code: string; message: string; details: unknown };
    return { code: e.code, message: e.message, details: e.details };
  }
  throw new Error('fetchRelease succeeded');
}

/** Nothing left: the releases folder is empty (no temp folder, no partial release). */
async function expectNothingLeft(dir: string): Promise<void> {
  const root = path.join(dir, 'releases');
  expect(existsSync(root) ? await readdir(root) : []).toEqual([]);
}

/** Every file under `dir`, relative, sorted. */
async function listTree(dir: string): Promise<string[]> {
  const out: string[] = [];
  const walk = async (d: string): Promise<void> => {
    for (const e of await readdir(d, { withFileTypes: true })) {
      const p = path.join(d, e.name);
      out.push(path.relative(dir, p) + (e.isDirectory() ? '/' : ''));
      if (e.isDirectory()) await walk(p);
    }
  };
  await walk(dir);
  return out.sort();
}

describe('fetchRelease: archive kinds and start commands', () => {
  it('.tar.gz with a Procfile: unpacked atomically, $PORT left for systemd, links inside kept; second call is a no-op', async () => {
    const { appDir: dir } = await appDir();
    const url = srv.serve('/app-1.tar.gz', PROCFILE_APP);
    const r = await fetchRelease({ assetUrl: url, appDir: dir, version: '1.0.0' });
    const rel = path.join(dir, 'releases', '1.0.0');
    expect(r).toMatchObject({ version: '1.0.0', dir: rel, kind: 'tar.gz', reused: false, bytes: PROCFILE_APP.length });
    expect(r.command).toEqual({ source: 'procfile', argv: ['node', 'server.mjs', '--port', { parts: [{ env: 'PORT' }] }] });
    expect(r.sha256).toMatch(/^[0-9a-f]{64}$/);
    expect(await listTree(rel)).toEqual([RELEASE_META, 'Procfile', 'lib/', 'lib/hard.js', 'lib/link.js', 'lib/util.js', 'server.mjs']);
    expect(await readlink(path.join(rel, 'lib/link.js'))).toBe('util.js');
    expect((await stat(path.join(rel, 'lib/hard.js'))).nlink).toBe(2);
    expect(await readdir(path.join(dir, 'releases'))).toEqual(['1.0.0']);

    const hits = srv.hits.get('/app-1.tar.gz');
    const again = await fetchRelease({ assetUrl: url, appDir: dir, version: '1.0.0' });
    expect(again).toEqual({ ...r, reused: true });
    expect(srv.hits.get('/app-1.tar.gz')).toBe(hits);
  });

  it('the harness asset server test app (tar made by node-tar)', async () => {
    const { appDir: dir } = await appDir();
    const r = await fetchRelease({ assetUrl: `${getTestHost().assets.baseUrl}/app-7.1.tar.gz`, appDir: dir, version: '7.1' });
    expect(r.command).toEqual({ source: 'procfile', argv: ['node', 'server.mjs'] });
    expect((await readFile(path.join(r.dir, 'VERSION'), 'utf8')).trim()).toBe('7.1');
  });

  it('.zip (deflated) with an executable ./start, folders and an inner symlink; type by content despite a .tgz name', async () => {
    const { appDir: dir } = await appDir();
    const body = zip([
      { name: 'start', body: '#!/bin/sh\nexec node app.js\n', mode: 0o100755, deflate: true },
      { name: 'app.js', body: 'x'.repeat(5000), deflate: true },
      { name: 'bin/', mode: 0o040755 },
      { name: 'bin/tool', body: 'y', mode: 0o104755 },
      { name: 'bin/start-link', body: '../start', mode: 0o120777 },
    ]);
    const r = await fetchRelease({ assetUrl: srv.serve('/weird-name.tgz', body), appDir: dir, version: 'z1' });
    expect(r.kind).toBe('zip');
    expect(r.command).toEqual({ source: 'start', argv: [path.join(r.dir, 'start')] });
    expect(await readFile(path.join(r.dir, 'app.js'), 'utf8')).toBe('x'.repeat(5000));
    expect((await stat(path.join(r.dir, 'start'))).mode & 0o7777).toBe(0o755);
    // set-uid dropped
    expect((await stat(path.join(r.dir, 'bin/tool'))).mode & 0o7000).toBe(0);
    expect(await readlink(path.join(r.dir, 'bin/start-link'))).toBe('../start');
  });

  it('a single executable (ELF or #!) becomes the release, named after the URL', async () => {
    const { appDir: dir } = await appDir();
    const r = await fetchRelease({ assetUrl: srv.serve('/dl/my-server', '#!/bin/sh\necho hi\n'), appDir: dir, version: 'e1' });
    expect(r).toMatchObject({ kind: 'executable', command: { source: 'executable', argv: [path.join(r.dir, 'my-server')] } });
    expect((await stat(path.join(r.dir, 'my-server'))).mode & 0o777).toBe(0o755);
    const elf = Buffer.concat([Buffer.from([0x7f, 0x45, 0x4c, 0x46, 2, 1, 1]), Buffer.alloc(100)]);
    const r2 = await fetchRelease({ assetUrl: srv.serve('/dl/bad%20name', elf), appDir: dir, version: 'e2' });
    expect(r2.command.argv).toEqual([path.join(r2.dir, 'app')]);
  });

  it('else the only executable at the root; a Procfile without web: does not count', async () => {
    const { appDir: dir } = await appDir();
    const body = tarGz([
      { name: 'Procfile', body: 'worker: ./w\n' },
      { name: 'README', body: 'r' },
      { name: 'server', body: '#!/bin/sh\n', mode: 0o755 },
      { name: 'sub/other', body: '#!/bin/sh\n', mode: 0o755 },
    ]);
    const r = await fetchRelease({ assetUrl: srv.serve('/only.tar.gz', body), appDir: dir, version: 'o1' });
    expect(r.command).toEqual({ source: 'executable', argv: [path.join(r.dir, 'server')] });
  });

  it('a Procfile path command is resolved inside the release; a plain tar works too', async () => {
    const { appDir: dir } = await appDir();
    const body = tar([
      { name: 'Procfile', body: 'web: bin/server --listen "$HOST:$PORT"\n' },
      { name: 'bin/server', body: '#!/bin/sh\n', mode: 0o755 },
    ]);
    const r = await fetchRelease({ assetUrl: srv.serve('/plain.tar', body), appDir: dir, version: 't1' });
    expect(r.kind).toBe('tar');
    expect(r.command.argv).toEqual([path.join(r.dir, 'bin/server'), '--listen', { parts: [{ env: 'HOST' }, ':', { env: 'PORT' }] }]);
  });

  it('no command, two candidates, a shell-only Procfile → typed errors, nothing left', async () => {
    const { appDir: dir } = await appDir();
    const none = tarGz([{ name: 'README', body: 'r' }]);
    expect((await fetchErr({ assetUrl: srv.serve('/none.tgz', none), appDir: dir, version: 'n1' })).code).toBe('E_ASSET_NO_COMMAND');
    const two = tarGz([
      { name: 'a', body: '#!/bin/sh\n', mode: 0o755 },
      { name: 'b', body: '#!/bin/sh\n', mode: 0o755 },
    ]);
    expect((await fetchErr({ assetUrl: srv.serve('/two.tgz', two), appDir: dir, version: 'n2' })).code).toBe('E_ASSET_NO_COMMAND');
    const shell = tarGz([{ name: 'Procfile', body: 'web: npm run build && npm start\n' }]);
    expect((await fetchErr({ assetUrl: srv.serve('/shell.tgz', shell), appDir: dir, version: 'n3' })).code).toBe('E_ASSET_COMMAND');
    const outside = tarGz([{ name: 'Procfile', body: 'web: ../../bin/x\n' }]);
    expect((await fetchErr({ assetUrl: srv.serve('/outside.tgz', outside), appDir: dir, version: 'n4' })).code).toBe('E_ASSET_UNSAFE');
    await expectNothingLeft(dir);
  });
});

describe('fetchRelease: failures are typed and leave nothing behind', () => {
  it('HTTP 404 and 500', async () => {
    const { appDir: dir } = await appDir();
    expect(await fetchErr({ assetUrl: `${srv.url}/missing.tar.gz`, appDir: dir, version: 'h1' })).toMatchObject({ code: 'E_ASSET_HTTP', details: { status: 404 } });
    srv.routes.set('/boom', (_req, res) => res.writeHead(500).end('boom'));
    expect(await fetchErr({ assetUrl: `${srv.url}/boom`, appDir: dir, version: 'h2' })).toMatchObject({ code: 'E_ASSET_HTTP', details: { status: 500 } });
    await expectNothingLeft(dir);
  });

  it('timeout: headers then silence, and no headers at all', async () => {
    const { appDir: dir } = await appDir();
    srv.routes.set('/stall', (_req, res) => {
      res.writeHead(200, { 'content-length': '1000' });
      res.write('x'.repeat(10));
    });
    srv.routes.set('/silent', () => undefined);
    const t0 = performance.now();
    expect((await fetchErr({ assetUrl: `${srv.url}/stall`, appDir: dir, version: 'to1', limits: { timeoutMs: 300 } })).code).toBe('E_ASSET_TIMEOUT');
    expect((await fetchErr({ assetUrl: `${srv.url}/silent`, appDir: dir, version: 'to2', limits: { timeoutMs: 300 } })).code).toBe('E_ASSET_TIMEOUT');
    expect(performance.now() - t0).toBeLessThan(3000);
    await expectNothingLeft(dir);
  });

  it('truncated: short body with Content-Length → E_ASSET_DOWNLOAD; cut gzip without length → E_ASSET_CORRUPT', async () => {
    const { appDir: dir } = await appDir();
    srv.routes.set('/short', (_req, res) => {
      res.writeHead(200, { 'content-length': String(PROCFILE_APP.length) });
      res.write(PROCFILE_APP.subarray(0, 40));
      setTimeout(() => res.destroy(), 20);
    });
    expect((await fetchErr({ assetUrl: `${srv.url}/short`, appDir: dir, version: 'tr1' })).code).toBe('E_ASSET_DOWNLOAD');
    srv.routes.set('/cut', (_req, res) => {
      res.writeHead(200);
      res.end(PROCFILE_APP.subarray(0, PROCFILE_APP.length - 30));
    });
    expect((await fetchErr({ assetUrl: `${srv.url}/cut`, appDir: dir, version: 'tr2' })).code).toBe('E_ASSET_CORRUPT');
    await expectNothingLeft(dir);
  });

  it('corrupt: unknown bytes, empty, gzip that is not a tar, broken zip, bad tar checksum', async () => {
    const { appDir: dir } = await appDir();
    const bodies: Record<string, Buffer> = {
      '/garbage.tar.gz': Buffer.from('this is not an archive at all'),
      '/empty.zip': Buffer.alloc(0),
      '/notar.tgz': (await import('node:zlib')).gzipSync(Buffer.from('hello '.repeat(300))),
      '/broken.zip': Buffer.concat([Buffer.from([0x50, 0x4b, 0x03, 0x04]), Buffer.alloc(200, 7)]),
      '/badsum.tar': (() => {
        const t = tar([{ name: 'Procfile', body: 'web: x\n' }]);
        t[148] = 0x37; // wrong checksum
        return t;
      })(),
    };
    for (const [p, body] of Object.entries(bodies)) {
      const e = await fetchErr({ assetUrl: srv.serve(p, body), appDir: dir, version: `c${p.length}` });
      expect(e.code, `${p}: ${e.message}`).toBe('E_ASSET_CORRUPT');
    }
    // A zip whose stored data does not match its CRC.
    const z = zip([{ name: 'start', body: '#!/bin/sh\n', mode: 0o100755 }]);
    z[30 + 'start'.length] = (z[30 + 'start'.length] as number) ^ 0xff;
    expect((await fetchErr({ assetUrl: srv.serve('/crc.zip', z), appDir: dir, version: 'crc' })).code).toBe('E_ASSET_CORRUPT');
    await expectNothingLeft(dir);
  });

  it('too large: declared, streamed without length, and unpacked (bombs)', async () => {
    const { appDir: dir } = await appDir();
    expect((await fetchErr({ assetUrl: srv.serve('/big', PROCFILE_APP), appDir: dir, version: 'b1', limits: { maxBytes: 100 } })).code).toBe('E_ASSET_TOO_LARGE');
    srv.routes.set('/endless', (_req, res) => {
      res.writeHead(200);
      const t = setInterval(() => res.write(Buffer.alloc(64 * 1024)), 1);
      res.on('close', () => clearInterval(t));
    });
    expect((await fetchErr({ assetUrl: `${srv.url}/endless`, appDir: dir, version: 'b2', limits: { maxBytes: 1024 * 1024 } })).code).toBe('E_ASSET_TOO_LARGE');
    const bomb = tarGz([
      { name: 'Procfile', body: 'web: x\n' },
      { name: 'zeros', body: Buffer.alloc(2 * 1024 * 1024) },
    ]);
    expect((await fetchErr({ assetUrl: srv.serve('/bomb.tgz', bomb), appDir: dir, version: 'b3', limits: { maxUnpackedBytes: 1024 * 1024 } })).code).toBe('E_ASSET_TOO_LARGE');
    const zbomb = zip([{ name: 'zeros', body: Buffer.alloc(2 * 1024 * 1024), deflate: true }]);
    expect((await fetchErr({ assetUrl: srv.serve('/bomb.zip', zbomb), appDir: dir, version: 'b4', limits: { maxUnpackedBytes: 1024 * 1024 } })).code).toBe('E_ASSET_TOO_LARGE');
    const many = tarGz(Array.from({ length: 20 }, (_, i) => ({ name: `f${i}`, body: 'x' })));
    expect((await fetchErr({ assetUrl: srv.serve('/many.tgz', many), appDir: dir, version: 'b5', limits: { maxEntries: 10 } })).code).toBe('E_ASSET_TOO_LARGE');
    await expectNothingLeft(dir);
  });

  it('path-escaping archives → E_ASSET_UNSAFE and nothing written anywhere', async () => {
    const { appDir: dir, outside } = await appDir();
    const start = { name: 'start', body: '#!/bin/sh\n', mode: 0o755 };
    const tars: Record<string, Buffer> = {
      dotdot: tarGz([start, { name: '../escaped', body: 'x' }]),
      deepdotdot: tarGz([start, { name: 'a/../../escaped', body: 'x' }]),
      absolute: tarGz([start, { name: `${outside}/escaped`, body: 'x' }]),
      symlinkOut: tarGz([start, { name: 'l', type: '2', linkname: '../../../../escaped' }]),
      symlinkAbs: tarGz([start, { name: 'l', type: '2', linkname: '/etc/passwd' }]),
      symlinkThenWrite: tarGz([start, { name: 'd', type: '2', linkname: outside }, { name: 'd/escaped', body: 'x' }]),
      hardlinkOut: tarGz([start, { name: 'h', type: '1', linkname: '../../escaped' }]),
      hardlinkAbs: tarGz([start, { name: 'h', type: '1', linkname: '/etc/passwd' }]),
      device: tarGz([start, { name: 'dev', type: '3' }]),
      fifo: tarGz([start, { name: 'fifo', type: '6' }]),
    };
    const zips: Record<string, Buffer> = {
      zipDotdot: zip([{ ...start, mode: 0o100755 }, { name: '../escaped', body: 'x' }]),
      zipAbsolute: zip([{ ...start, mode: 0o100755 }, { name: `${outside}/escaped`, body: 'x' }]),
      zipSymlinkOut: zip([{ ...start, mode: 0o100755 }, { name: 'l', body: '../../../escaped', mode: 0o120777 }]),
      zipSymlinkAbs: zip([{ ...start, mode: 0o100755 }, { name: 'l', body: '/etc', mode: 0o120777 }]),
      zipBackslash: zip([{ ...start, mode: 0o100755 }, { name: '..\\escaped', body: 'x' }]),
    };
    for (const [name, body] of Object.entries({ ...tars, ...zips })) {
      const e = await fetchErr({ assetUrl: srv.serve(`/${name}`, body), appDir: dir, version: name });
      expect(e.code, `${name}: ${e.message}`).toBe('E_ASSET_UNSAFE');
    }
    await expectNothingLeft(dir);
    for (const p of [path.join(outside, 'escaped'), path.join(dir, 'escaped'), path.join(dir, 'releases', 'escaped'), '/etc/escaped']) {
      expect(existsSync(p), p).toBe(false);
    }
  });

  it('redirects: followed up to the limit, each hop re-checked', async () => {
    const { appDir: dir } = await appDir();
    srv.serve('/final.tgz', PROCFILE_APP);
    srv.routes.set('/r1', (_req, res) => res.writeHead(302, { location: '/r2' }).end());
    srv.routes.set('/r2', (_req, res) => res.writeHead(301, { location: `${srv.url}/final.tgz` }).end());
    srv.routes.set('/loop', (_req, res) => res.writeHead(307, { location: '/loop' }).end());
    srv.routes.set('/ftp', (_req, res) => res.writeHead(302, { location: 'ftp://example.com/x' }).end());
    srv.routes.set('/nolocation', (_req, res) => res.writeHead(302).end());
    expect((await fetchRelease({ assetUrl: `${srv.url}/r1`, appDir: dir, version: 'r1', limits: { maxRedirects: 2 } })).command.source).toBe('procfile');
    expect(await fetchErr({ assetUrl: `${srv.url}/r1`, appDir: dir, version: 'r2', limits: { maxRedirects: 1 } })).toMatchObject({ code: 'E_ASSET_HTTP' });
    const loop = await fetchErr({ assetUrl: `${srv.url}/loop`, appDir: dir, version: 'r3' });
    expect(loop.code).toBe('E_ASSET_HTTP');
    expect(srv.hits.get('/loop')).toBe(6);
    expect((await fetchErr({ assetUrl: `${srv.url}/ftp`, appDir: dir, version: 'r4' })).code).toBe('E_ASSET_URL');
    expect((await fetchErr({ assetUrl: `${srv.url}/nolocation`, appDir: dir, version: 'r5' })).code).toBe('E_ASSET_HTTP');
    expect((await fetchErr({ assetUrl: 'file:///etc/passwd', appDir: dir, version: 'r6' })).code).toBe('E_ASSET_URL');
    expect((await fetchErr({ assetUrl: 'http://user:pw@127.0.0.1/x', appDir: dir, version: 'r7' })).code).toBe('E_ASSET_URL');
    expect(await readdir(path.join(dir, 'releases'))).toEqual(['r1']);
  });

  it('an SSRF-checking dispatcher is used for every request', async () => {
    const { appDir: dir } = await appDir();
    const url = srv.serve('/ssrf.tgz', PROCFILE_APP);
    const blocked = guardedAgent({ allowPrivateNetworks: [] });
    const allowed = guardedAgent({ allowPrivateNetworks: ['127.0.0.1/32'] });
    try {
      expect((await fetchErr({ assetUrl: url, appDir: dir, version: 's1', dispatcher: blocked })).code).toBe('E_SSRF_BLOCKED');
      expect((await fetchRelease({ assetUrl: url, appDir: dir, version: 's2', dispatcher: allowed })).reused).toBe(false);
    } finally {
      await blocked.close();
      await allowed.close();
    }
  });

  it('abort → E_ABORTED; refused connection → E_ASSET_DOWNLOAD', async () => {
    const { appDir: dir } = await appDir();
    srv.routes.set('/slow', () => undefined);
    const ac = new AbortController();
    setTimeout(() => ac.abort(), 100);
    expect((await fetchErr({ assetUrl: `${srv.url}/slow`, appDir: dir, version: 'a1', signal: ac.signal })).code).toBe('E_ABORTED');
    expect((await fetchErr({ assetUrl: 'http://127.0.0.1:1/x', appDir: dir, version: 'a2' })).code).toBe('E_ASSET_DOWNLOAD');
    await expectNothingLeft(dir);
  });

  it('concurrent fetches of one release download once', async () => {
    const { appDir: dir } = await appDir();
    const url = srv.serve('/conc.tgz', PROCFILE_APP);
    const all = await Promise.all([1, 2, 3].map(() => fetchRelease({ assetUrl: url, appDir: dir, version: 'cc' })));
    expect(srv.hits.get('/conc.tgz')).toBe(1);
    expect(new Set(all.map((r: Release) => r.dir)).size).toBe(1);
  });
});

describe('pruneReleases and removeAppDir', () => {
  it('keeps the newest N plus the ones in use, removes stale temp folders', async () => {
    const { appDir: dir } = await appDir();
    const url = srv.serve('/prune.tgz', PROCFILE_APP);
    for (const v of ['v1', 'v2', 'v3', 'v4']) await fetchRelease({ assetUrl: url, appDir: dir, version: v });
    // Make the order unambiguous: v1 oldest … v4 newest.
    for (const [i, v] of ['v1', 'v2', 'v3', 'v4'].entries()) {
      const metaFile = path.join(dir, 'releases', v, RELEASE_META);
      const meta = JSON.parse(await readFile(metaFile, 'utf8')) as Record<string, unknown>;
      meta.fetchedAt = new Date(Date.UTC(2026, 0, 1 + i)).toISOString();
      await writeFile(metaFile, JSON.stringify(meta));
    }
    // A release without metadata is ordered by mtime (old here).
    await mkdir(path.join(dir, 'releases', 'v0'));
    await utimes(path.join(dir, 'releases', 'v0'), new Date(2000, 0, 1), new Date(2000, 0, 1));
    await mkdir(path.join(dir, 'releases', '.tmp-v9-1-deadbeef', 'root'), { recursive: true });

    const removed = await pruneReleases({ appDir: dir, keep: ['v1'], keepCount: 2 });
    expect(removed.sort()).toEqual(['v0', 'v2']);
    expect((await readdir(path.join(dir, 'releases'))).sort()).toEqual(['v1', 'v3', 'v4']);
    expect(await pruneReleases({ appDir: dir, keep: ['v1'], keepCount: 2 })).toEqual([]);
    expect(await pruneReleases({ appDir: path.join(dir, 'nope'), keep: [], keepCount: 1 })).toEqual([]);

    await removeAppDir(dir);
    expect(existsSync(dir)).toBe(false);
    expect((await readdir(path.dirname(dir))).filter((f) => f.startsWith('.tmp'))).toEqual([]);
    await removeAppDir(dir);
    await expect(lstat(dir)).rejects.toMatchObject({ code: 'ENOENT' });
  });
});

it('fetchRelease refuses a bad version before any I/O', async () => {
  const { appDir: dir } = await appDir();
  const e = await fetchErr({ assetUrl: `${srv.url}/x`, appDir: dir, version: '../x' });
  expect(e.code).toBe('E_INVALID_VERSION');
  expect(existsSync(path.join(dir, 'releases'))).toBe(false);
});
