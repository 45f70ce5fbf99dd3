// API: status reads, deploy acceptance, GitOps drop latency.
//   npx tsx bench/api.ts [--quick]
//
// 1. Status GET throughput and latency over HTTP: the real operator process (`crate-operator serve`),
//    autocannon (10 connections, keep-alive) on GET /v1/app/deploy/<id>/status of a finished deploy.
// 2. Deploy POST acceptance over HTTP: POST → 202 latency, which includes the durable write of the
//    document (temp file, fsync, rename, fsync dir, last-good copy) and of the record (SQLite, WAL,
//    synchronous=FULL). The operator runs in this process with its reconcile loop stopped, so the
//    accepted deploys are not carried out (acceptance is what is measured); one client, then four.
// 3. YAML drop → reconcile: a document written to a temp file and renamed into state/desired (a new
//    deployment id of the running spec); measured to the moment the reconcile of that key records it
//    as a deployment (the pass's first write, after its one host observation) and to `succeeded`
//    (nothing to do: the spec already runs).
import { readFile, rename, writeFile } from 'node:fs/promises';
import path from 'node:path';
import autocannon from 'autocannon';
import { request } from 'undici';
import { parseDesiredYaml, serializeDesired } from '../src/desired/document.ts';
import { busyboxAsset } from './lib/apps.ts';
import { startChildOperator } from './lib/child-operator.ts';
import type { TestHost } from './lib/host.ts';
import { isMain, runMain, type BenchOptions } from './lib/main.ts';
import { benchTeam, cleanupTeam, startBenchOperator, TOKEN } from './lib/operator.ts';
import { freePorts } from './lib/ports.ts';
import { fmt, machine, finishMachine, summarize, table, type BenchResult, type Summary, type Target } from './lib/report.ts';

const auth = { authorization: `Bearer ${TOKEN}` };

async function httpJson(method: 'GET' | 'POST', url: string, body?: unknown): Promise<{ status: number; body: Record<string, unknown> }> {
  const r = await request(url, {
    method,
    headers: { ...auth, ...(body === undefined ? {} : { 'content-type': 'application/json' }) },
    ...(body === undefined ? {} : { body: JSON.stringify(body) }),
    headersTimeout: 30_000,
    bodyTimeout: 30_000,
  });
  const text = await r.body.text();
  return { status: r.statusCode, body: text ? (JSON.parse(text) as Record<string, unknown>) : {} };
}

interface StatusFigures {
  seconds: number;
  connections: number;
  reqPerSec: number;
  latency: { p50: number; p99: number; max: number };
  non2xx: number;
  errors: number;
  memory: { rssMiB: number; hwmMiB: number };
}

/** 1. Status reads against the operator process. */
async function statusThroughput(host: TestHost, opts: BenchOptions, asset: string): Promise<StatusFigures> {
  const team = benchTeam('as');
  const stateDir = path.join(host.tmpRoot, 'bench', `api-${team}`);
  const child = await startChildOperator(host, stateDir);
  try {
    const [port] = await freePorts(1);
    const deploy = await httpJson('POST', `${child.url}/v1/app/binary/deploy`, {
      app_id: 1,
      environment_id: 1,
      team_id: team,
      deployment_id: 1,
      deployment_strategy: 'rolling',
      domain: `s.${team}.bench.test`,
      asset_url: asset,
      callback_url: 'http://127.0.0.1:9/cb',
      env_vars: { GREETING: 'hello' },
      health_check_path: '/healthz',
      instances: { web: { port } },
    });
    if (deploy.status !== 202) throw new Error(`deploy: ${deploy.status} ${JSON.stringify(deploy.body)}`);
    const until = Date.now() + 60_000;
    for (;;) {
      const s = await httpJson('GET', `${child.url}/v1/app/deploy/1/status`);
      if (s.body.status === 'succeeded') break;
      if (['failed', 'rolled_back'].includes(String(s.body.status)) || Date.now() > until) throw new Error(`deploy did not succeed: ${JSON.stringify(s.body)}`);
      await new Promise((r) => setTimeout(r, 100));
    }
    const seconds = opts.quick ? 5 : 15;
    const connections = 10;
    // Warm-up (JIT, connection pool).
    await autocannon({ url: `${child.url}/v1/app/deploy/1/status`, headers: auth, connections, duration: 2 });
    const r = await autocannon({ url: `${child.url}/v1/app/deploy/1/status`, headers: auth, connections, duration: seconds });
    return {
      seconds,
      connections,
      reqPerSec: Math.round(r.requests.average),
      latency: { p50: r.latency.p50, p99: r.latency.p99, max: r.latency.max },
      non2xx: r.non2xx,
      errors: r.errors,
      memory: child.memory(),
    };
  } finally {
    await child.stop();
    await cleanupTeam(host, team);
  }
}

interface AcceptFigures {
  sequential: Summary;
  concurrent: Summary;
  concurrency: number;
}

/** 2. Deploy acceptance over HTTP (loop stopped: nothing is carried out). */
async function acceptance(host: TestHost, opts: BenchOptions, asset: string): Promise<AcceptFigures> {
  const team = benchTeam('aa');
  const bo = await startBenchOperator(host, path.join(host.tmpRoot, 'bench', `accept-${team}`), { team, listen: true });
  try {
    await bo.op.reconciler.stop();
    const url = bo.op.server?.url;
    if (!url) throw new Error('operator does not listen');
    const apps = 20;
    const ports = await freePorts(apps);
    let id = 100;
    const post = async (): Promise<number> => {
      const n = ++id;
      const app = (n % apps) + 1;
      const t0 = performance.now();
      const r = await httpJson('POST', `${url}/v1/app/binary/deploy`, {
        app_id: app,
        environment_id: 1,
        team_id: team,
        deployment_id: n,
        deployment_strategy: 'rolling',
        domain: `p${app}.${team}.bench.test`,
        asset_url: `${asset}?b=${n}`,
        callback_url: bo.callbackUrl(String(n)),
        env_vars: { GREETING: 'hello', N: String(n) },
        health_check_path: '/healthz',
        instances: { web: { port: ports[app - 1] as number } },
      });
      const ms = performance.now() - t0;
      if (r.status !== 202) throw new Error(`POST: ${r.status} ${JSON.stringify(r.body)}`);
      return ms;
    };
    const count = opts.quick ? 60 : 300;
    for (let i = 0; i < 10; i++) await post(); // warm-up
    const seq: number[] = [];
    for (let i = 0; i < count; i++) seq.push(await post());
    const concurrency = 4;
    const conc: number[] = [];
    await Promise.all(
      Array.from({ length: concurrency }, async () => {
        for (let i = 0; i < count / concurrency; i++) conc.push(await post());
      }),
    );
    return { sequential: summarize(seq), concurrent: summarize(conc), concurrency };
  } finally {
    await bo.close();
  }
}

interface DropFigures {
  drops: number;
  toRecorded: Summary;
  toSucceeded: Summary;
}

/** 3. YAML drops: rename into state/desired → the pass records it → succeeded. */
async function drops(host: TestHost, opts: BenchOptions, asset: string): Promise<DropFigures> {
  const team = benchTeam('ad');
  const bo = await startBenchOperator(host, path.join(host.tmpRoot, 'bench', `drop-${team}`), { team, watch: true });
  try {
    const [port] = await freePorts(1);
    const key = { team, env: 1, app: 1 };
    const created = await bo.api('POST', '/v1/app/binary/deploy', {
      app_id: 1,
      environment_id: 1,
      team_id: team,
      deployment_id: 1,
      deployment_strategy: 'rolling',
      domain: `d.${team}.bench.test`,
      asset_url: asset,
      callback_url: bo.callbackUrl('1'),
      env_vars: {},
      health_check_path: '/healthz',
      instances: { web: { port } },
    });
    if (created.status !== 202) throw new Error(`deploy: ${created.status} ${JSON.stringify(created.body)}`);
    const s = await bo.settle('1');
    if (s.status.status !== 'succeeded') throw new Error(`deploy: ${s.status.status} ${JSON.stringify(s.status.error)}`);
    const file = bo.op.store.pathFor(key);
    const n = opts.quick ? 10 : 30;
    const recorded: number[] = [];
    const succeeded: number[] = [];
    for (let i = 0; i < n; i++) {
      await bo.quiesce();
      const parsed = parseDesiredYaml(await readFile(file, 'utf8'));
      if (!parsed.ok) throw new Error(parsed.error);
      const id = String(1000 + i);
      const text = serializeDesired({ ...parsed.doc, deployment: { ...parsed.doc.deployment, id, requested_at: new Date().toISOString() } });
      const tmp = path.join(path.dirname(file), `.drop-${i}.tmp`);
      await writeFile(tmp, text);
      let recordedAt = NaN;
      const off = bo.op.records.subscribe(id, () => {
        if (Number.isNaN(recordedAt)) recordedAt = performance.now();
      });
      const done = bo.settle(id, 30_000);
      const t0 = performance.now();
      await rename(tmp, file);
      const fin = await done;
      off();
      if (fin.status.status !== 'succeeded') throw new Error(`drop ${id}: ${fin.status.status} ${JSON.stringify(fin.status.error)}`);
      recorded.push(recordedAt - t0);
      succeeded.push(fin.at - t0);
      await new Promise((r) => setTimeout(r, 50));
    }
    return { drops: n, toRecorded: summarize(recorded), toSucceeded: summarize(succeeded) };
  } finally {
    await bo.close();
  }
}

export async function apiBench(host: TestHost, opts: BenchOptions): Promise<BenchResult> {
  const m = machine();
  const asset = await busyboxAsset(host);
  console.error('api: status GET throughput…');
  const status = await statusThroughput(host, opts, asset);
  console.error('api: deploy POST acceptance…');
  const accept = await acceptance(host, opts, asset);
  console.error('api: YAML drops…');
  const drop = await drops(host, opts, asset);
  const text = [
    `Status GET over HTTP (operator process, autocannon ${status.connections} connections, ${status.seconds} s): ${status.reqPerSec} req/s, latency p50 ${status.latency.p50} ms, p99 ${status.latency.p99} ms, max ${status.latency.max} ms, non-2xx ${status.non2xx}, errors ${status.errors}; operator RSS ${status.memory.rssMiB} MiB (peak ${status.memory.hwmMiB}).`,
    '',
    table(
      ['measure', 'n', 'median', 'p95', 'p99', 'max'],
      [
        ['deploy POST → 202, 1 client', accept.sequential.n, accept.sequential.median, accept.sequential.p95, accept.sequential.p99, accept.sequential.max],
        [`deploy POST → 202, ${accept.concurrency} clients`, accept.concurrent.n, accept.concurrent.median, accept.concurrent.p95, accept.concurrent.p99, accept.concurrent.max],
        ['YAML drop → recorded by its reconcile', drop.toRecorded.n, drop.toRecorded.median, drop.toRecorded.p95, drop.toRecorded.p99, drop.toRecorded.max],
        ['YAML drop → succeeded (no-op)', drop.toSucceeded.n, drop.toSucceeded.median, drop.toSucceeded.p95, drop.toSucceeded.p99, drop.toSucceeded.max],
      ],
    ),
    '(ms; the watcher waits until a file has kept its size for 100 ms before reading it)',
  ].join('\n');
  const targets: Target[] = [
    { what: 'status GET throughput', target: '≥ 3,000 req/s', measured: `${status.reqPerSec} req/s`, met: status.reqPerSec >= 3000 },
    { what: 'deploy POST acceptance p99 (1 client)', target: '≤ 20 ms', measured: `p50 ${fmt(accept.sequential.median)} ms, p99 ${fmt(accept.sequential.p99)} ms`, met: accept.sequential.p99 <= 20 },
    { what: 'YAML drop → reconcile start p95', target: '≤ 300 ms', measured: `${fmt(drop.toRecorded.p95)} ms`, met: drop.toRecorded.p95 <= 300 },
  ];
  const failures = status.non2xx > 0 || status.errors > 0 ? [`status GET: ${status.non2xx} non-2xx, ${status.errors} errors`] : [];
  return { name: 'api', quick: opts.quick, machine: finishMachine(m), figures: { status, accept, drop }, targets, text, failures };
}

if (isMain(import.meta.url)) await runMain([apiBench]);
