/**
 * `npm run example:assets`: what the platform side of the walkthrough needs, on one loopback port
 * (EXAMPLE_ASSETS_LISTEN, default 127.0.0.1:8000):
 *
 *   GET  /app-<version>.tar.gz          the example app (test/fixtures/app/server.mjs + Procfile + VERSION)
 *   GET  /app-<version>-broken.tar.gz   the same, but its health check fails (for the rollback example)
 *   POST /callback                      a callback receiver: prints one line per status callback
 *
 * Runs until Ctrl-C. Tarballs are built on first request in a temporary folder removed at exit.
 */
import { createReadStream } from 'node:fs';
import { mkdtemp, rm, stat } from 'node:fs/promises';
import http from 'node:http';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { VERSION_PATTERN } from '../src/core/identity.ts';
import { buildAppTarball } from '../test/fixtures/asset-server.ts';

const listen = process.env.EXAMPLE_ASSETS_LISTEN ?? '127.0.0.1:8000';
const m = /^(.*):([0-9]{1,5})$/.exec(listen);
if (!m) throw new Error(`EXAMPLE_ASSETS_LISTEN: expected HOST:PORT, got ${listen}`);
const [host, port] = [m[1] as string, Number(m[2])];
const work = await mkdtemp(path.join(tmpdir(), 'crate-example-assets-'));
const built = new Map<string, Promise<string>>();

function tarball(version: string, broken: boolean): Promise<string> {
  const file = path.join(work, `app-${version}${broken ? '-broken' : ''}.tar.gz`);
  let job = built.get(file);
  if (!job) {
    job = buildAppTarball(version, broken, work, file).then(() => file);
    built.set(file, job);
  }
  return job;
}

const MAX_CALLBACK = 1024 * 1024;

const server = http.createServer((req, res) => {
  const url = new URL(req.url ?? '/', 'http://assets');
  if (req.method === 'POST' && url.pathname === '/callback') {
    let body = '';
    req.setEncoding('utf8');
    req.on('data', (c: string) => {
      body += c;
      if (body.length > MAX_CALLBACK) req.destroy();
    });
    req.on('end', () => {
      try {
        const s = JSON.parse(body) as { deployment_id?: string; action?: string; status?: string; phase?: string; error?: { code: string } | null };
        console.log(`callback ${String(req.headers['x-crate-event-id'] ?? '')}: deployment ${s.deployment_id ?? '?'} ${s.action ?? ''} ${s.status ?? '?'} (${s.phase ?? ''})${s.error ? ` ${s.error.code}` : ''}`);
      } catch {
        console.log('callback: body is not JSON');
      }
      res.writeHead(204).end();
    });
    return;
  }
  const app = /^\/app-(.+?)(-broken)?\.(tar\.gz|tgz)$/.exec(url.pathname);
  if ((req.method === 'GET' || req.method === 'HEAD') && app && VERSION_PATTERN.test(app[1] as string)) {
    tarball(app[1] as string, app[2] !== undefined)
      .then(async (file) => {
        const { size } = await stat(file);
        res.writeHead(200, { 'content-type': 'application/gzip', 'content-length': size });
        if (req.method === 'HEAD') res.end();
        else createReadStream(file).pipe(res);
        console.log(`served ${url.pathname}`);
      })
      .catch((err: unknown) => {
        res.writeHead(500).end(String(err));
      });
    return;
  }
  res.writeHead(404).end('not found\n');
});

server.listen(port, host, () => {
  console.log(`example assets on http://${listen}: /app-<version>.tar.gz, /app-<version>-broken.tar.gz; callbacks POST /callback (Ctrl-C stops)`);
});

const shutdown = (): void => {
  server.close();
  server.closeAllConnections();
  void rm(work, { recursive: true, force: true }).finally(() => process.exit(0));
};
process.once('SIGINT', shutdown);
process.once('SIGTERM', shutdown);
