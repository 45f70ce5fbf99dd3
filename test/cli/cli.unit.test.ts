/**
 * The command line without a running operator: help of every command, endpoint choice, the SSE
 * parser (any chunking), the status renderer (plain lines and TTY spinner), the apps table, exit
 * codes, settings flags and offline validation.
 */
import { mkdtemp, mkdir, rm, writeFile } from 'node:fs/promises';
import http from 'node:http';
import { tmpdir } from 'node:os';
import path from 'node:path';
import fc from 'fast-check';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { buildProgram, main } from '../../src/cli.ts';
import { appRows, table, APPS_HEADER, type AppEntry } from '../../src/cli/apps.ts';
import { clientTarget, SseParser, type CliIO, type SseEvent } from '../../src/cli/client.ts';
import { pickEndpoint, ENDPOINTS } from '../../src/cli/deploy.ts';
import { givenSettings } from '../../src/cli/run.ts';
import { flagName } from '../../src/cli/settings.ts';
import { changeLines, exitCodeFor, follow, FollowRenderer, STATUS_EXIT, type StatusView } from '../../src/cli/status.ts';
import { SETTING_NAMES } from '../../src/config.ts';

function capture(isTTY = false): CliIO & { text: () => string } {
  let buf = '';
  return { out: (s) => void (buf += s), isTTY, columns: 100, text: () => buf };
}

async function run(args: string[]): Promise<{ code: number; out: string; err: string }> {
  const io = capture();
  const err: string[] = [];
  const code = await main(['node', 'crate-operator', ...args], (l) => err.push(l), io);
  return { code, out: io.text(), err: err.join('\n') };
}

let dir: string;
beforeAll(async () => {
  dir = await mkdtemp(path.join(tmpdir(), 'crate-cli-'));
});
afterAll(async () => {
  await rm(dir, { recursive: true, force: true });
});

describe('help', () => {
  it('every command has --help, and the program lists them all', async () => {
    const program = buildProgram(() => undefined, capture(), { code: 0 });
    const names = program.commands.map((c) => c.name()).sort();
    expect(names).toEqual(expect.arrayContaining(['apps', 'deploy', 'serve', 'start', 'status', 'validate']));
    const top = await run(['--help']);
    expect(top.code).toBe(0);
    for (const n of names) expect(top.out).toContain(n);
    for (const n of names) {
      const h = await run([n, '--help']);
      expect(h.code, n).toBe(0);
      expect(h.out, n).toMatch(new RegExp(`Usage: crate-operator ${n}`));
      expect(h.out, n).toMatch(/-h, --help/);
    }
    expect((await run(['dev', '--help'])).out).toMatch(/Usage: crate-operator start\|dev/);
  });

  it('serve and start take a flag for every setting of config.ts, named after it', async () => {
    for (const cmd of ['serve', 'start']) {
      const h = (await run([cmd, '--help'])).out;
      for (const s of Object.values(SETTING_NAMES)) {
        expect(h, `${cmd} ${s.flag}`).toContain(flagName(s.flag));
        expect(h, `${cmd} ${s.env}`).toContain(s.env);
      }
    }
    expect(flagName('caddyListen')).toBe('--caddy-listen');
  });

  it('client commands document --url and --token; status documents its exit codes', async () => {
    for (const cmd of ['apps', 'status', 'deploy']) {
      const h = (await run([cmd, '--help'])).out;
      expect(h).toContain('--url');
      expect(h).toContain('--token');
    }
    expect((await run(['status', '--help'])).out).toMatch(/Exit codes: 0 succeeded, 3 failed, 4 rolled back/);
  });

  it('usage errors exit 2', async () => {
    expect((await run(['nope'])).code).toBe(2);
    expect((await run(['status'])).code).toBe(2);
    expect((await run(['deploy', '/nonexistent.json'])).code).toBe(2);
  });
});

describe('deploy: the endpoint follows from the body', () => {
  const base = { team_id: 't', environment_id: 1, app_id: 1 };
  it.each<[Record<string, unknown>, string | undefined, string]>([
    [{ ...base, slots: {}, asset_url: 'x' }, undefined, ENDPOINTS['instance-binary']],
    [{ ...base, slots: {}, image: 'x' }, undefined, ENDPOINTS['instance-docker']],
    [{ ...base, instances: {}, asset_url: 'x' }, undefined, ENDPOINTS.binary],
    [{ ...base, instances: {}, image: 'x' }, undefined, ENDPOINTS.docker],
    [{ ...base, instance_ids: [] }, undefined, ENDPOINTS.delete],
    [{ ...base, new_domain: 'a' }, undefined, ENDPOINTS.domain],
    [{ ...base, instance_id: 'a' }, 'stop', ENDPOINTS.stop],
    [{ ...base, instance_id: 'a' }, '/v1/app/restart', ENDPOINTS.restart],
  ])('%j (%s)', (body, override, endpoint) => {
    expect(pickEndpoint(body, override)).toBe(endpoint);
  });
  it('refuses to guess', () => {
    expect(() => pickEndpoint({ ...base, instance_id: 'a' })).toThrow(/--endpoint start, stop or restart/);
    expect(() => pickEndpoint({ ...base })).toThrow(/pass --endpoint/);
    expect(() => pickEndpoint(base, '/v1/elsewhere')).toThrow(/unknown endpoint/);
  });
});

describe('SseParser', () => {
  const stream = 'retry: 3000\n\nid: 1\nevent: status\ndata: {"a":1}\n\n: keep-alive\n\nid: 2\nevent: status\ndata: line1\ndata: line2\n\n';
  const expected: SseEvent[] = [
    { event: 'message', data: '', retry: 3000 },
    { event: 'status', data: '{"a":1}', id: '1' },
    { event: 'status', data: 'line1\nline2', id: '2' },
  ];
  it('yields the same events however the stream is cut into chunks (also with CRLF)', () => {
    fc.assert(
      fc.property(fc.array(fc.integer({ min: 0, max: stream.length }), { maxLength: 10 }), fc.boolean(), (cuts, crlf) => {
        const text = crlf ? stream.replace(/\n/g, '\r\n') : stream;
        const points = [...new Set(cuts.map((c) => Math.min(c, text.length)))].sort((a, b) => a - b);
        const p = new SseParser();
        const got: SseEvent[] = [];
        let at = 0;
        for (const c of [...points, text.length]) {
          got.push(...p.push(text.slice(at, c)));
          at = c;
        }
        expect(got).toEqual(expected);
      }),
    );
  });
});

const step = (name: string, status: string, s?: string, f?: string): StatusView['steps'][number] => ({ name, status, started_at: s ?? null, finished_at: f ?? null, detail: status === 'failed' ? 'E_HEALTH_TIMEOUT: not healthy' : null });
const T = (sec: number): string => new Date(Date.UTC(2025, 0, 1, 12, 0, sec)).toISOString();
const doc = (status: string, steps: StatusView['steps'], over: Partial<StatusView> = {}): StatusView => ({
  deployment_id: '42',
  action: 'deploy',
  strategy: 'blue_green',
  target_version: 'v2',
  status,
  phase: status,
  error: null,
  started_at: T(0),
  finished_at: null,
  steps,
  ...over,
});

describe('status rendering', () => {
  const s1 = doc('in_progress', [step('fetch release v2', 'running', T(0)), step('start g v2', 'pending')]);
  const s2 = doc('in_progress', [step('fetch release v2', 'succeeded', T(0), T(1)), step('start g v2', 'running', T(1))]);
  const s3 = doc('succeeded', [step('fetch release v2', 'succeeded', T(0), T(1)), step('start g v2', 'succeeded', T(1), T(3))], { finished_at: T(3) });

  it('plain: one line per step start and end, then the outcome', () => {
    const lines = [...changeLines(undefined, s1, false), ...changeLines(s1, s2, false), ...changeLines(s2, s3, false)];
    expect(lines).toEqual([
      'deployment 42 (deploy, blue_green, v2): in_progress',
      '  → fetch release v2',
      '  ✓ fetch release v2  1.0s',
      '  → start g v2',
      '  ✓ start g v2  2.0s',
      'deployment 42 succeeded in 3.0s',
    ]);
  });

  it('a rollback shows the failed step, the undone ones and the error', () => {
    const failed = doc(
      'rolled_back',
      [step('start g v3', 'rolled_back', T(0), T(1)), step('wait until g is healthy', 'failed', T(1), T(11)), step('route', 'skipped')],
      { phase: 'rolled_back', finished_at: T(12), error: { code: 'E_HEALTH_TIMEOUT', message: 'not healthy' } },
    );
    const lines = changeLines(doc('in_progress', [step('start g v3', 'succeeded', T(0), T(1)), step('wait until g is healthy', 'running', T(1)), step('route', 'pending')], { phase: 'x' }), failed, false);
    expect(lines).toEqual([
      '  ↺ start g v3 (rolled back)  1.0s',
      '  ✗ wait until g is healthy  10.0s: E_HEALTH_TIMEOUT: not healthy',
      '  - route (skipped)',
      'deployment 42 rolled back in 12.0s — E_HEALTH_TIMEOUT: not healthy',
    ]);
    expect(exitCodeFor('rolled_back')).toBe(STATUS_EXIT.rolled_back);
    expect(exitCodeFor('succeeded')).toBe(0);
    expect(exitCodeFor('failed')).toBe(3);
    expect(exitCodeFor('in_progress')).toBe(6);
  });

  it('TTY: finished steps as lines, the running one on a spinner line that is rewritten', () => {
    const io = capture(true);
    const r = new FollowRenderer(io, () => Date.parse(T(2)));
    r.update(s1);
    r.tick();
    r.update(s2);
    r.update(s3);
    const out = io.text();
    expect(out).not.toContain('→');
    expect(out).toContain('\r\x1b[K⠋ fetch release v2 2.0s');
    expect(out).toContain('  ✓ fetch release v2  1.0s\n');
    expect(out).toContain('start g v2 1.0s');
    expect(out.endsWith('deployment 42 succeeded in 3.0s\n')).toBe(true);
  });
});

describe('apps table', () => {
  const now = Date.parse(T(0)) + 125_000;
  const entry: AppEntry = {
    team_id: 'acme',
    environment_id: 2,
    app_id: 17,
    desired: { spec: { domain: 'shop.example.com', version: 'v3', instances: { b: {}, g: {} } } },
    document_error: null,
    observed: { state: 'failed', runs: [{ instance_id: 'g', version: 'v2', state: 'running' }, { instance_id: 'b', version: 'v1', state: 'stopped' }], route: { domain: 'shop.example.com' } },
    last_deployment: { deployment_id: '103', action: 'deploy', status: 'rolled_back', finished_at: T(0) },
  };
  it('shows domain, desired and serving version, instances up, state and the last deployment', () => {
    expect(appRows([entry], now)).toEqual([['acme/2/17', 'shop.example.com', 'v3 (serving v2)', '1 up / 2', 'failed', '103 rolled_back 2m ago']]);
    const t = table(APPS_HEADER, appRows([entry], now)).split('\n');
    expect(t[0]).toMatch(/^APP\s+DOMAIN\s+VERSION\s+INSTANCES\s+STATE\s+LAST DEPLOYMENT$/);
    expect(t[1]?.indexOf('shop.example.com')).toBe(t[0]?.indexOf('DOMAIN'));
  });
});

describe('client defaults', () => {
  it('--url from CRATE_LISTEN, the token from CRATE_API_TOKEN or <state dir>/token', async () => {
    const state = path.join(dir, 'state');
    await mkdir(state, { recursive: true });
    await writeFile(path.join(state, 'token'), 'from-the-token-file-0123456789\n');
    expect(clientTarget({}, { CRATE_LISTEN: '0.0.0.0:9999', CRATE_STATE_DIR: state })).toEqual({ url: 'http://127.0.0.1:9999', token: 'from-the-token-file-0123456789' });
    expect(clientTarget({ url: 'http://h:1/' }, { CRATE_API_TOKEN: 'env-token-0123456789abc,second-token-0123456', CRATE_STATE_DIR: state })).toEqual({ url: 'http://h:1', token: 'env-token-0123456789abc' });
    expect(() => clientTarget({}, { CRATE_STATE_DIR: path.join(dir, 'none') })).toThrow(/no API token/);
  });
  it('start knows which component settings were given', () => {
    expect(givenSettings({}, {})).toEqual({ systemdScope: false, dockerSocket: false, caddyAdmin: false });
    expect(givenSettings({ caddyAdmin: 'http://127.0.0.1:2019' }, { CRATE_SYSTEMD_SCOPE: 'system' })).toEqual({ systemdScope: true, dockerSocket: false, caddyAdmin: true });
    expect(givenSettings({}, { CRATE_DOCKER_SOCKET: '/var/run/docker.sock' })).toEqual({ systemdScope: false, dockerSocket: true, caddyAdmin: false });
  });
});

describe('validate', () => {
  it('accepts the examples and names the problem of a broken file', async () => {
    const ok = await run(['validate', 'examples/desired/demo/1/1.yaml', 'examples/desired/demo/1/3.yaml']);
    expect(ok.code).toBe(0);
    expect(ok.out).toMatch(/1\.yaml: ok \(demo\/1\/1 binary instance blue_green v1 on hello\.localhost/);
    const bad = path.join(dir, 'desired', 'demo', '1', '9.yaml');
    await mkdir(path.dirname(bad), { recursive: true });
    await writeFile(bad, (await import('node:fs')).readFileSync('examples/desired/demo/1/1.yaml', 'utf8').replace('GREETING: hello from Crate', 'GREETING: sekrit-value\n    bad key: x'));
    const r = await run(['validate', bad]);
    expect(r.code).toBe(1);
    expect(r.out).toMatch(/invalid/);
    expect(r.out).not.toContain('sekrit-value');
    const moved = path.join(dir, 'desired', 'demo', '1', '8.yaml');
    await writeFile(moved, (await import('node:fs')).readFileSync('examples/desired/demo/1/1.yaml', 'utf8'));
    expect((await run(['validate', moved])).out).toMatch(/metadata says desired\/demo\/1\/1\.yaml, the file is desired\/demo\/1\/8\.yaml/);
  });
});

describe('status --follow over a flaky stream', () => {
  it('reconnects after a dropped stream and an operator that answers 503, then ends with the final status', async () => {
    let n = 0;
    const server = http.createServer((req, res) => {
      n += 1;
      expect(req.headers.authorization).toBe('Bearer tok');
      if (n === 1) {
        res.writeHead(200, { 'content-type': 'text/event-stream' });
        res.write(`retry: 50\n\nid: 1\nevent: status\ndata: ${JSON.stringify(doc('in_progress', [step('fetch release v2', 'running', T(0))]))}\n\n`);
        setTimeout(() => res.destroy(), 50);
        return;
      }
      if (n === 2) {
        res.writeHead(503).end('{"error":{"code":"E_STARTING","message":"starting"}}');
        return;
      }
      res.writeHead(200, { 'content-type': 'text/event-stream' });
      res.end(`id: 3\nevent: status\ndata: ${JSON.stringify(doc('succeeded', [step('fetch release v2', 'succeeded', T(0), T(1))], { finished_at: T(1) }))}\n\n`);
    });
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', () => r()));
    try {
      const io = capture();
      const port = (server.address() as { port: number }).port;
      const final = await follow({ url: `http://127.0.0.1:${port}`, token: 'tok' }, '42', io, 10_000);
      expect(final.status).toBe('succeeded');
      expect(n).toBe(3);
      const out = io.text();
      expect(out).toMatch(/HTTP 503 E_STARTING: starting; retrying/);
      expect(out).toContain('reconnected');
      expect(out).toContain('  ✓ fetch release v2  1.0s');
      expect(out.trimEnd().endsWith('deployment 42 succeeded in 1.0s')).toBe(true);
    } finally {
      server.closeAllConnections();
      await new Promise<void>((r) => server.close(() => r()));
    }
  });
});
