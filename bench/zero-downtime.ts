// Zero downtime under load: traffic through Caddy while deploys run back to back.
//   npx tsx bench/zero-downtime.ts [--quick] [deploys] [hold-seconds]   (default 20 deploys, 20 s; --quick 5, 5 s)
//
// Four groups: binary blue/green, binary rolling, docker blue/green, docker rolling. Each app is
// created first; then, while the load clients of ./lib/load-worker.ts (a child process) send GETs to
// Caddy at the app's domain, `deploys` deploys of new versions run back to back through the API.
// Blue/green apps use two slots (instance model), rolling apps two instances (plain model). The binary
// app is the Node test app (graceful drain), the docker app the test image (busybox httpd, drains).
// In each blue/green group, one long request (`/hold?ms=<hold>`) is sent right before a deploy, so it
// is in flight when the traffic switches; it must complete (200, from the old version).
//
// Reported per group and client (raw keep-alive = autocannon; new connection = node:http with
// `agent: false`; retrying keep-alive = node:http keep-alive that retries a request that failed on a
// reused connection once): requests, non-2xx, errors, timeouts, errors per config change, and which
// version answered over time (retrying client). Fails (exit 1 from `npm run bench`) on any non-2xx,
// any error of the retrying client, or a long request that did not complete.
import path from 'node:path';
import { request } from 'undici';
import type { DeploymentStatus } from '../src/records/records.ts';
import type { TestHost } from './lib/host.ts';
import { startLoad, type ClientTally, type HoldDone, type LoadResult, type Segment } from './lib/load.ts';
import { isMain, runMain, type BenchOptions } from './lib/main.ts';
import { benchTeam, startBenchOperator, type BenchOperator } from './lib/operator.ts';
import { freePorts } from './lib/ports.ts';
import { probe } from './lib/apps.ts';
import { fmt, machine, finishMachine, summarize, table, type BenchResult, type Summary, type Target } from './lib/report.ts';

type Runtime = 'binary' | 'docker';
type Strategy = 'blue_green' | 'rolling';
const CLIENTS = ['retrying keep-alive', 'raw keep-alive', 'new connection'] as const;

interface Group {
  runtime: Runtime;
  strategy: Strategy;
  endpoint: string;
  domain: string;
  holdPath: (ms: number) => string;
  body(n: number, id: number): Record<string, unknown>;
  /** The version the app reports after deploy n. */
  version(n: number): string;
}

interface GroupResult {
  runtime: Runtime;
  strategy: Strategy;
  deploys: number;
  succeeded: number;
  wall: Summary;
  /** Caddy config changes made by the deploys (route steps that changed the route). */
  configChanges: number;
  load: LoadResult;
  hold: (HoldDone & { switchedDuring: boolean; expectedVersion: string }) | null;
  /** Versions in the order they first answered. */
  versions: string[];
  /** The slowest deploy of the group: its steps with durations and details. */
  slowest: { deploy: number; wall: number; steps: string[] } | null;
  /** Each non-2xx answer or error, placed against the deploy step running then (or the last one that ended). */
  incidents: string[];
  /** Answers from a version older than one that had already answered (see versionStats). */
  stale: number;
  overlap: Summary;
  failed: string[];
}

function groups(bo: BenchOperator, host: TestHost, ports: number[]): Group[] {
  const [p1, p2, p3, p4, p5, p6, p7, p8] = ports as [number, number, number, number, number, number, number, number];
  const team = bo.team;
  const common = (app: number, id: number, strategy: Strategy): Record<string, unknown> => ({
    app_id: app,
    environment_id: 1,
    team_id: team,
    deployment_id: id,
    deployment_strategy: strategy,
    domain: `z${app}.${team}.bench.test`,
    callback_url: bo.callbackUrl(String(id)),
    health_check_path: '/healthz',
  });
  const assets = host.assets.baseUrl;
  const image = host.docker.images.v1.split(':')[0] as string;
  return [
    {
      runtime: 'binary',
      strategy: 'blue_green',
      endpoint: '/v1/app/instance/binary/deploy',
      domain: `z1.${team}.bench.test`,
      holdPath: (ms) => `/hold?ms=${ms}`,
      version: (n) => `bg${n}`,
      body: (n, id) => ({ ...common(1, id, 'blue_green'), asset_url: `${assets}/app-bg${n}.tar.gz`, env_vars: {}, target_version: `bg${n}`, slots: { blue: { instance_id: `${team}-b`, port: p1 }, green: { instance_id: `${team}-g`, port: p2 } } }),
    },
    {
      runtime: 'binary',
      strategy: 'rolling',
      endpoint: '/v1/app/binary/deploy',
      domain: `z2.${team}.bench.test`,
      holdPath: (ms) => `/hold?ms=${ms}`,
      version: (n) => `r${n}`,
      body: (n, id) => ({ ...common(2, id, 'rolling'), asset_url: `${assets}/app-r${n}.tar.gz`, env_vars: {}, instances: { w1: { port: p3 }, w2: { port: p4 } } }),
    },
    {
      runtime: 'docker',
      strategy: 'blue_green',
      endpoint: '/v1/app/instance/docker/deploy',
      domain: `z3.${team}.bench.test`,
      holdPath: (ms) => `/hold/?ms=${ms}`,
      version: (n) => `dbg${n}`,
      body: (n, id) => ({ ...common(3, id, 'blue_green'), image, image_tag: n % 2 === 0 ? 'v1' : 'v2', env_vars: { APP_VERSION: `dbg${n}` }, target_version: `dbg${n}`, slots: { blue: { instance_id: `${team}-db`, port: p5 }, green: { instance_id: `${team}-dg`, port: p6 } } }),
    },
    {
      runtime: 'docker',
      strategy: 'rolling',
      endpoint: '/v1/app/docker/deploy',
      domain: `z4.${team}.bench.test`,
      holdPath: (ms) => `/hold/?ms=${ms}`,
      version: (n) => `dr${n}`,
      body: (n, id) => ({ ...common(4, id, 'rolling'), image, image_tag: n % 2 === 0 ? 'v1' : 'v2', env_vars: { APP_VERSION: `dr${n}` }, instances: { w1: { port: p7 }, w2: { port: p8 } } }),
    },
  ];
}

async function deploy(bo: BenchOperator, g: Group, n: number, id: number): Promise<{ status: DeploymentStatus; wall: number }> {
  await bo.quiesce();
  const t0 = Date.now();
  const r = await bo.api('POST', g.endpoint, g.body(n, id));
  if (r.status !== 202) throw new Error(`${g.endpoint}: ${r.status} ${JSON.stringify(r.body)}`);
  const { status } = await bo.settle(String(id), 180_000);
  return { status, wall: Date.parse(status.finished_at ?? status.updated_at) - t0 };
}

/**
 * Which version answered over time (retrying client), against the order the deploys made them:
 * `stale` answers came from a version older than one that had already answered (blue/green: the
 * switch is one config change, so only requests racing it; rolling: expected while old and new
 * instances serve side by side), `overlap` per deploy is how long the previous and the new version
 * both answered (last answer of the old one minus first answer of the new one; ≤ 0: a clean switch).
 */
export function versionStats(timeline: Segment[], order: string[]): { versions: string[]; stale: number; overlapMs: number[]; unexpected: string[] } {
  const rank = new Map(order.map((v, i) => [v, i]));
  const first = new Map<string, number>();
  const last = new Map<string, number>();
  let stale = 0;
  let newest = -1;
  const unexpected = new Set<string>();
  for (const s of timeline) {
    const r = rank.get(s.version);
    if (r === undefined) unexpected.add(s.version);
    if (!first.has(s.version)) first.set(s.version, s.from);
    last.set(s.version, s.to);
    if (r !== undefined && r < newest) stale += s.count;
    if (r !== undefined) newest = Math.max(newest, r);
  }
  const overlapMs: number[] = [];
  for (let n = 1; n < order.length; n++) {
    const prev = last.get(order[n - 1] as string);
    const next = first.get(order[n] as string);
    if (prev !== undefined && next !== undefined) overlapMs.push(prev - next);
  }
  const versions = [...first.entries()].sort((a, b) => a[1] - b[1]).map(([v]) => v);
  return { versions, stale, overlapMs, unexpected: [...unexpected] };
}

/** Caddy's `apps.http.grace_period` (string), or undefined. */
async function gracePeriod(adminUrl: string): Promise<string | undefined> {
  const r = await request(`${adminUrl}/config/apps/http/grace_period`, { reset: true });
  const v = (await r.body.json());
  return typeof v === 'string' ? v : undefined;
}

async function setGracePeriod(adminUrl: string, value: string): Promise<void> {
  const r = await request(`${adminUrl}/config/apps/http/grace_period`, { method: 'PATCH', reset: true, body: JSON.stringify(value), headers: { 'content-type': 'application/json' } });
  if (r.statusCode !== 200) throw new Error(`caddy: cannot set grace_period: ${r.statusCode} ${await r.body.text()}`);
  await r.body.dump();
}

async function runGroup(bo: BenchOperator, host: TestHost, g: Group, opts: { deploys: number; holdMs: number; nextId: () => number }): Promise<GroupResult> {
  const failed: string[] = [];
  console.error(`zero-downtime: ${g.runtime} ${g.strategy}, ${opts.deploys} deploys under load…`);
  const created = await deploy(bo, g, 0, opts.nextId());
  if (created.status.status !== 'succeeded') throw new Error(`${g.runtime} ${g.strategy}: create ${created.status.status} ${JSON.stringify(created.status.error)}`);
  const url = `http://127.0.0.1:${host.caddy.httpPort}/`;
  const until = Date.now() + 10_000;
  while ((await probe(url, g.domain)) !== 200) {
    if (Date.now() > until) throw new Error(`${g.domain} does not answer through Caddy`);
    await new Promise((r) => setTimeout(r, 50));
  }
  const load = await startLoad({
    port: host.caddy.httpPort,
    domain: g.domain,
    path: '/',
    autocannon: { connections: 4, rate: 150 },
    fresh: { workers: 2, rate: 60 },
    retry: { workers: 4, rate: 100 },
  });
  let result: LoadResult;
  let hold: GroupResult['hold'] = null;
  const walls: number[] = [];
  let slowest: GroupResult['slowest'] = null;
  const stepLog: { deploy: number; name: string; start: number; end: number }[] = [];
  let configChanges = 0;
  let succeeded = 0;
  try {
    await new Promise((r) => setTimeout(r, 500));
    let holding: Promise<HoldDone> | null = null;
    let holdSwitch: { at: number; version: string; sent: number } | null = null;
    for (let n = 1; n <= opts.deploys; n++) {
      const holdNow = g.strategy === 'blue_green' && n === 2 && opts.holdMs > 0;
      const holdStart = Date.now();
      if (holdNow) {
        holding = load.hold(g.holdPath(opts.holdMs));
        // Let the request reach the app before the deploy starts (it goes to the live version).
        await new Promise((r) => setTimeout(r, 100));
      }
      const d = await deploy(bo, g, n, opts.nextId());
      walls.push(d.wall);
      if (!slowest || d.wall > slowest.wall) {
        slowest = { deploy: n, wall: d.wall, steps: d.status.steps.map((st) => `${st.name}: ${st.started_at && st.finished_at ? Date.parse(st.finished_at) - Date.parse(st.started_at) : '?'} ms${st.detail ? ` (${st.detail})` : ''}`) };
      }
      for (const st of d.status.steps) if (st.started_at && st.finished_at) stepLog.push({ deploy: n, name: st.name, start: Date.parse(st.started_at), end: Date.parse(st.finished_at) });
      const routeSteps = d.status.steps.filter((s) => s.name.startsWith('route ') && s.status === 'succeeded');
      configChanges += routeSteps.filter((s) => s.detail !== 'route already so').length;
      if (d.status.status === 'succeeded') succeeded += 1;
      else failed.push(`deploy ${n}: ${d.status.status} ${JSON.stringify(d.status.error)}`);
      if (holdNow) {
        const sw = routeSteps[0]?.finished_at;
        holdSwitch = { at: sw ? Date.parse(sw) : NaN, version: g.version(n - 1), sent: holdStart };
      }
    }
    if (holding && holdSwitch) {
      const h = await holding;
      hold = { ...h, switchedDuring: holdSwitch.sent < holdSwitch.at && holdSwitch.at < holdSwitch.sent + h.ms, expectedVersion: holdSwitch.version };
      if (!hold.switchedDuring) failed.push('long request: the traffic switch did not happen while it was in flight');
      if (h.status !== 200) failed.push(`long request: status ${h.status} ${h.error ?? ''} after ${h.ms} ms`);
      else if (h.version !== holdSwitch.version) failed.push(`long request answered by ${h.version ?? '?'}, expected ${holdSwitch.version}`);
    }
    await new Promise((r) => setTimeout(r, 500));
    result = await load.stop();
  } catch (err) {
    load.kill();
    throw err;
  }
  for (const c of CLIENTS) {
    const t = result.clients[c];
    if (t.non2xx > 0) failed.push(`${c}: ${t.non2xx} non-2xx answers ${JSON.stringify(t.statuses)}`);
  }
  const retry = result.clients['retrying keep-alive'];
  if (retry.errors > 0) failed.push(`retrying keep-alive: ${retry.errors} failed requests ${JSON.stringify(retry.codes)}`);
  const incidents: string[] = [];
  for (const c of CLIENTS) {
    for (const b of result.clients[c].badAt) {
      const during = stepLog.find((st) => st.start <= b.at && b.at <= st.end);
      const before = [...stepLog].reverse().find((st) => st.end < b.at);
      const where = during ? `during deploy ${during.deploy} "${during.name}" (+${b.at - during.start} ms)` : before ? `${b.at - before.end} ms after deploy ${before.deploy} "${before.name}"` : 'before the first deploy';
      const sw = [...stepLog].reverse().find((st) => st.name.startsWith('route ') && st.end <= b.at);
      incidents.push(`${c}: ${b.what} ${where}${sw ? `, ${b.at - sw.end} ms after the last switch` : ''}`);
    }
  }
  const order = Array.from({ length: opts.deploys + 1 }, (_, n) => g.version(n));
  const vs = versionStats(result.timeline, order);
  if (vs.unexpected.length > 0) failed.push(`answers from unexpected versions: ${vs.unexpected.join(', ')}`);
  return {
    runtime: g.runtime,
    strategy: g.strategy,
    deploys: opts.deploys,
    succeeded,
    wall: summarize(walls),
    configChanges,
    load: result,
    hold,
    versions: vs.versions,
    slowest,
    incidents,
    stale: vs.stale,
    overlap: summarize(vs.overlapMs),
    failed,
  };
}

function codes(t: ClientTally): string {
  const e = Object.entries(t.codes);
  return e.length === 0 ? '' : e.map(([c, n]) => `${c}×${n}`).join(' ');
}

export async function zeroDowntime(host: TestHost, opts: BenchOptions): Promise<BenchResult> {
  const m = machine();
  const [dArg, hArg] = opts.args.map(Number);
  // A third argument picks groups, e.g. `binary-rolling,docker-blue_green` (default: all four).
  const only = opts.args[2]?.split(',');
  const deploys = Number.isInteger(dArg) && (dArg as number) > 0 ? (dArg as number) : opts.quick ? 5 : 20;
  const holdMs = (Number.isFinite(hArg) && (hArg as number) >= 0 ? (hArg as number) : opts.quick ? 5 : 20) * 1000;
  const team = benchTeam('zd');
  // drainMs: the old version must be allowed to finish the long request before it is stopped.
  const bo = await startBenchOperator(host, path.join(host.tmpRoot, 'bench', `zero-${team}`), { team, config: { deadlines: { ...(await import('../src/config.ts')).loadConfig({ env: {}, flags: {} }).deadlines, drainMs: holdMs + 10_000 } } });
  // The harness boots Caddy with grace_period 10s; the operator creates its server with
  // config.caddyGraceMs (30 s) when it is missing. Give this Caddy the operator's value: a reload must
  // not cut the long request.
  const graceBefore = await gracePeriod(host.caddy.adminUrl);
  const grace = `${Math.max(bo.config.caddyGraceMs, holdMs + 10_000) / 1000}s`;
  await setGracePeriod(host.caddy.adminUrl, grace);
  const results: GroupResult[] = [];
  let id = 5000;
  try {
    const ports = await freePorts(8);
    for (const g of groups(bo, host, ports).filter((x) => !only || only.includes(`${x.runtime}-${x.strategy}`))) results.push(await runGroup(bo, host, g, { deploys, holdMs, nextId: () => ++id }));
  } finally {
    await bo.close();
    if (graceBefore !== undefined) await setGracePeriod(host.caddy.adminUrl, graceBefore);
  }

  const rows: (string | number)[][] = [];
  for (const r of results) {
    for (const c of CLIENTS) {
      const t = r.load.clients[c];
      rows.push([`${r.runtime} ${r.strategy}`, c, t.requests, t.non2xx, t.errors, t.timeouts, c === 'retrying keep-alive' ? t.retried : '-', r.configChanges, fmt(t.errors / Math.max(1, r.configChanges), 2), codes(t)]);
    }
  }
  const text = [
    `${deploys} deploys per group back to back under load (autocannon 4 conns @150 req/s, new connections 2 workers @60 req/s, retrying keep-alive 4 workers @100 req/s), Caddy grace_period ${grace}, try_duration 5s/try_interval 100ms.`,
    table(['group', 'client', 'requests', 'non-2xx', 'errors', 'timeouts', 'retried', 'changes', 'err/change', 'error codes'], rows),
    '',
    table(
      ['group', 'deploys ok', 'deploy median', 'deploy p95', 'overlap median', 'overlap max', 'stale answers', 'retrying p50', 'retrying p99', 'long request'],
      results.map((r) => [
        `${r.runtime} ${r.strategy}`,
        `${r.succeeded}/${r.deploys}`,
        r.wall.median,
        r.wall.p95,
        r.overlap.median,
        r.overlap.max,
        r.stale,
        r.load.latency.p50,
        r.load.latency.p99,
        r.hold ? `${r.hold.status} from ${r.hold.version ?? '?'} after ${(r.hold.ms / 1000).toFixed(1)} s${r.hold.switchedDuring ? ', switch during it' : ''}` : '-',
      ]),
    ),
    '(overlap: how long the old and the new version both answered per deploy, ms; stale answers: from a version older than one already seen)',
    ...results.flatMap((r) => (r.slowest ? [`slowest deploy (${r.runtime} ${r.strategy}): #${r.slowest.deploy}, ${r.slowest.wall} ms: ${r.slowest.steps.join(' | ')}`] : [])),
    ...results.flatMap((r) => r.incidents.slice(0, 12).map((i) => `incident (${r.runtime} ${r.strategy}): ${i}`)),
    ...results.map((r) => `versions in the order they answered (${r.runtime} ${r.strategy}): ${r.versions.length > 12 ? `${r.versions.slice(0, 10).join(' → ')} → … → ${r.versions[r.versions.length - 1] ?? ''}` : r.versions.join(' → ')}`),
  ].join('\n');
  const failures = results.flatMap((r) => r.failed.map((f) => `${r.runtime} ${r.strategy}: ${f}`));
  const sum = (c: (typeof CLIENTS)[number], k: 'non2xx' | 'errors'): number => results.reduce((n, r) => n + r.load.clients[c][k], 0);
  const non2xx = CLIENTS.reduce((n, c) => n + sum(c, 'non2xx'), 0);
  const holdsOk = results.filter((r) => r.strategy === 'blue_green').every((r) => r.hold?.status === 200 || holdMs === 0);
  const targets: Target[] = [
    { what: 'non-2xx answers, every client', target: '0', measured: String(non2xx), met: non2xx === 0 },
    { what: 'errors, retrying keep-alive client', target: '0', measured: String(sum('retrying keep-alive', 'errors')), met: sum('retrying keep-alive', 'errors') === 0 },
    { what: `long request (${holdMs / 1000} s) across a switch`, target: 'completes', measured: results.filter((r) => r.hold).map((r) => `${r.runtime}: ${r.hold?.status === 200 ? 'completed' : 'FAILED'}`).join(', ') || 'not run', met: holdsOk },
    { what: 'errors per config change (raw keep-alive / new conn.)', target: 'reported', measured: `${fmt(sum('raw keep-alive', 'errors') / Math.max(1, results.reduce((n, r) => n + r.configChanges, 0)), 2)} / ${fmt(sum('new connection', 'errors') / Math.max(1, results.reduce((n, r) => n + r.configChanges, 0)), 2)}`, met: true },
  ];
  return { name: 'zero-downtime', quick: opts.quick, machine: finishMachine(m), figures: { deploys, holdMs, grace, groups: results }, targets, text, failures };
}

if (isMain(import.meta.url)) await runMain([zeroDowntime]);
