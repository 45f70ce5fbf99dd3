// Hand-made archives for the asset tests, including malicious ones no well-behaved archiver writes:
// raw ustar headers (any name, type, link target) and a minimal zip writer (stored or deflated
// members, Unix modes for symlinks/executables).
import http from 'node:http';
import type net from 'node:net';
import zlib from 'node:zlib';

export interface TarMember {
  name: string;
  /** '0' file (default), '2' symlink, '1' hard link, '5' folder, '3' char device, '6' FIFO. */
  type?: '0' | '1' | '2' | '3' | '5' | '6';
  body?: string | Buffer;
  mode?: number;
  linkname?: string;
  /** Declared size, when it must differ from the body (bombs, truncation). */
  size?: number;
}

function octal(n: number, width: number): string {
  return `${n.toString(8).padStart(width - 1, '0')}\0`;
}

function header(m: TarMember, size: number): Buffer {
  const h = Buffer.alloc(512);
  h.write(m.name, 0, 100, 'utf8');
  h.write(octal(m.mode ?? (m.type === '5' ? 0o755 : 0o644), 8), 100, 'ascii');
  h.write(octal(0, 8), 108, 'ascii');
  h.write(octal(0, 8), 116, 'ascii');
  h.write(octal(size, 12), 124, 'ascii');
  h.write(octal(1_700_000_000, 12), 136, 'ascii');
  h.write('        ', 148, 'ascii');
  h.write(m.type ?? '0', 156, 'ascii');
  if (m.linkname) h.write(m.linkname, 157, 100, 'utf8');
  h.write('ustar\u000000', 257, 'binary');
  let sum = 0;
  for (const b of h) sum += b;
  h.write(`${sum.toString(8).padStart(6, '0')}\0 `, 148, 'ascii');
  return h;
}

/** A tar archive (uncompressed). */
export function tar(members: TarMember[]): Buffer {
  const parts: Buffer[] = [];
  for (const m of members) {
    const body = typeof m.body === 'string' ? Buffer.from(m.body) : (m.body ?? Buffer.alloc(0));
    const size = m.size ?? (m.type === '0' || m.type === undefined ? body.length : 0);
    parts.push(header(m, size), body, Buffer.alloc((512 - (body.length % 512)) % 512));
  }
  parts.push(Buffer.alloc(1024));
  return Buffer.concat(parts);
}

export function tarGz(members: TarMember[]): Buffer {
  return zlib.gzipSync(tar(members));
}

export interface ZipMember {
  name: string;
  body?: string | Buffer;
  /** Unix mode including the type bits (0o100644 file, 0o100755 executable, 0o120777 symlink, 0o040755 dir). */
  mode?: number;
  deflate?: boolean;
}

/** A zip archive written by "Unix" (so modes count). */
export function zip(members: ZipMember[]): Buffer {
  const local: Buffer[] = [];
  const central: Buffer[] = [];
  let offset = 0;
  for (const m of members) {
    const raw = typeof m.body === 'string' ? Buffer.from(m.body) : (m.body ?? Buffer.alloc(0));
    const data = m.deflate ? zlib.deflateRawSync(raw) : raw;
    const name = Buffer.from(m.name, 'utf8');
    const crc = zlib.crc32(raw);
    const method = m.deflate ? 8 : 0;
    const lh = Buffer.alloc(30);
    lh.writeUInt32LE(0x04034b50, 0);
    lh.writeUInt16LE(20, 4);
    lh.writeUInt16LE(0x800, 6);
    lh.writeUInt16LE(method, 8);
    lh.writeUInt32LE(crc, 14);
    lh.writeUInt32LE(data.length, 18);
    lh.writeUInt32LE(raw.length, 22);
    lh.writeUInt16LE(name.length, 26);
    local.push(lh, name, data);
    const ch = Buffer.alloc(46);
    ch.writeUInt32LE(0x02014b50, 0);
    ch.writeUInt16LE((3 << 8) | 20, 4);
    ch.writeUInt16LE(20, 6);
    ch.writeUInt16LE(0x800, 8);
    ch.writeUInt16LE(method, 10);
    ch.writeUInt32LE(crc, 16);
    ch.writeUInt32LE(data.length, 20);
    ch.writeUInt32LE(raw.length, 24);
    ch.writeUInt16LE(name.length, 28);
    ch.writeUInt32LE(((m.mode ?? (m.name.endsWith('/') ? 0o040755 : 0o100644)) << 16) >>> 0, 38);
    ch.writeUInt32LE(offset, 42);
    central.push(ch, name);
    offset += lh.length + name.length + data.length;
  }
  const cd = Buffer.concat(central);
  const end = Buffer.alloc(22);
  end.writeUInt32LE(0x06054b50, 0);
  end.writeUInt16LE(members.length, 8);
  end.writeUInt16LE(members.length, 10);
  end.writeUInt32LE(cd.length, 12);
  end.writeUInt32LE(offset, 16);
  return Buffer.concat([...local, cd, end]);
}

/** What a route of the test server does. */
export type Route = (req: http.IncomingMessage, res: http.ServerResponse) => void;

/** A node:http server on 127.0.0.1 with per-path routes and a hit counter. */
export interface TestServer {
  url: string;
  routes: Map<string, Route>;
  hits: Map<string, number>;
  /** Serve `body` at `path` with Content-Length. */
  serve(path: string, body: Buffer | string, headers?: Record<string, string>): string;
  close(): Promise<void>;
}

export async function startServer(): Promise<TestServer> {
  const routes = new Map<string, Route>();
  const hits = new Map<string, number>();
  const sockets = new Set<net.Socket>();
  const server = http.createServer((req, res) => {
    const p = new URL(req.url ?? '/', 'http://x').pathname;
    hits.set(p, (hits.get(p) ?? 0) + 1);
    const route = routes.get(p);
    if (route) route(req, res);
    else res.writeHead(404).end('not found');
  });
  server.on('connection', (s) => {
    sockets.add(s);
    s.on('close', () => sockets.delete(s));
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const url = `http://127.0.0.1:${(server.address() as net.AddressInfo).port}`;
  return {
    url,
    routes,
    hits,
    serve(p, body, headers = {}) {
      const buf = typeof body === 'string' ? Buffer.from(body) : body;
      routes.set(p, (_req, res) => {
        res.writeHead(200, { 'content-length': String(buf.length), ...headers }).end(buf);
      });
      return `${url}${p}`;
    },
    async close() {
      for (const s of sockets) s.destroy();
      await new Promise((resolve) => server.close(resolve));
    },
  };
}
