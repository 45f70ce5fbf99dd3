// Deploy overhead: how much time a deployment adds to the app's own start.
//   npx tsx bench/deploy-overhead.ts [--quick] [deploys]      (default 15 deploys per case; --quick 5)
//
// Cases: blue/green (instance model, two slots) and rolling (plain model, one instance), binary and
// docker, driven through the operator's API in this process (`app.inject`). The apps are healthy the
// moment they listen: the binary one is busybox httpd from a tarball (listening within milliseconds),
// the docker one the test image (busybox httpd behind a small sh entrypoint); one more binary
// blue/green case deploys the Node test app, which needs a Node start-up (~100 ms+) before it listens,
// so the health probe schedule shows. Every deploy is a new revision (binary: a new version; docker:
// image v1/v2 alternately plus a BUILD variable). The operator runs with its production defaults
// (probe interval 1 s, probe timeout 5 s).
//
// Per case: deploy wall time (POST → the record turning `succeeded`), the app's own start-to-healthy
// time measured by hand (binary: spawn → first 2xx; docker: create → first 2xx through the Docker
// API), the overhead (wall − own), and the median of each phase from the status document's step
// timestamps: accept (POST → 202), queue (202 → first step), fetch, start, probe, switch, drain,
// stop, remove, between (gaps between steps), finish (last step → succeeded).
import path from 'node:path';
import type { DeploymentStatus } from '../src/records/records.ts';
import { busyboxAsset, busyboxOwnStart, dockerOwnStart, nodeAppOwnStart } from './lib/apps.ts';
import type { TestHost } from './lib/host.ts';
import { isMain, runMain, type BenchOptions } from './lib/main.ts';
import { benchTeam, startBenchOperator, type BenchOperator } from './lib/operator.ts';
import { freePorts } from './lib/ports.ts';
import { fmt, machine, finishMachine, median, summarize, table, type BenchResult, type Summary, type Target } from './lib/report.ts';

type Runtime = 'binary' | 'docker';
type Strategy = 'blue_green' | 'rolling';

export const PHASES = ['accept', 'queue', 'fetch', 'start', 'probe', 'switch', 'drain', 'stop', 'remove', 'between', 'finish'] as const;
export type Phase = (typeof PHASES)[number];

/** The phase a plan step belongs to, from its name (plan.ts names steps by what they do). */
export function phaseOf(stepName: string): Phase {
  if (stepName.startsWith('fetch release') || stepName.startsWith('pull image')) return 'fetch';
  if (stepName.startsWith('start ') || stepName.startsWith('re-create ') || stepName.startsWith('restart ')) return 'start';
  if (stepName.startsWith('wait until')) return 'probe';
  if (stepName.startsWith('route ')) return 'switch';
  if (stepName.startsWith('drain')) return 'drain';
  if (stepName.startsWith('stop ')) return 'stop';
  return 'remove';
}

/** Phase durations of one finished deployment (ms), from its status document. */
export function phases(status: DeploymentStatus, postedAt: number, acceptedAt: number, finishedAt: number): Record<Phase, number> {
  const out = Object.fromEntries(PHASES.map((p) => [p, 0])) as Record<Phase, number>;
  out.accept = acceptedAt - postedAt;
  const steps = status.steps.filter((s) => s.started_at && s.finished_at).map((s) => ({ name: s.name, start: Date.parse(s.started_at as string), end: Date.parse(s.finished_at as string) }));
  if (steps.length === 0) return out;
  out.queue = Math.max(0, (steps[0] as { start: number }).start - acceptedAt);
  let prevEnd = (steps[0] as { start: number }).start;
  for (const s of steps) {
    out.between += Math.max(0, s.start - prevEnd);
    out[phaseOf(s.name)] += s.end - s.start;
    prevEnd = s.end;
  }
  out.finish = Math.max(0, finishedAt - prevEnd);
  return out;
}

interface CaseResult {
  label: string;
  runtime: Runtime;
  strategy: Strategy;
  deploys: number;
  createMs: number;
  wall: Summary;
  ownMs: number;
  overhead: Summary;
  phases: Record<Phase, number>;
  steps: string[];
  failed: string[];
}

interface Case {
  label: string;
  /** Which own start time applies. */
  app: 'busybox' | 'node' | 'image';
  runtime: Runtime;
  strategy: Strategy;
  /** The request body of deploy `n` (n = 0 creates the app). */
  body(n: number, id: number): Record<string, unknown>;
  endpoint: string;
}

function cases(bo: BenchOperator, host: TestHost, asset: string, ports: number[]): Case[] {
  const common = (app: number, id: number, strategy: Strategy): Record<string, unknown> => ({
    app_id: app,
    environment_id: 1,
    team_id: bo.team,
    deployment_id: id,
    deployment_strategy: strategy,
    domain: `a${app}.${bo.team}.bench.test`,
    callback_url: bo.callbackUrl(String(id)),
    health_check_path: '/healthz',
  });
  const [p1, p2, p3, p4, p5, p6, p7, p8] = ports as [number, number, number, number, number, number, number, number];
  const image = host.docker.images.v1.split(':')[0] as string;
  return [
    {
      label: 'binary blue_green',
      app: 'busybox',
      runtime: 'binary',
      strategy: 'blue_green',
      endpoint: '/v1/app/instance/binary/deploy',
      body: (n, id) => ({ ...common(1, id, 'blue_green'), asset_url: asset, env_vars: {}, target_version: `v${n}`, slots: { blue: { instance_id: `${bo.team}-b`, port: p1 }, green: { instance_id: `${bo.team}-g`, port: p2 } } }),
    },
    {
      label: 'binary rolling',
      app: 'busybox',
      runtime: 'binary',
      strategy: 'rolling',
      endpoint: '/v1/app/binary/deploy',
      body: (n, id) => ({ ...common(2, id, 'rolling'), asset_url: `${asset}?b=${n}`, env_vars: {}, instances: { web: { port: p3 } } }),
    },
    {
      label: 'docker blue_green',
      app: 'image',
      runtime: 'docker',
      strategy: 'blue_green',
      endpoint: '/v1/app/instance/docker/deploy',
      body: (n, id) => ({ ...common(3, id, 'blue_green'), image, image_tag: n % 2 === 0 ? 'v1' : 'v2', env_vars: { BUILD: String(n) }, target_version: `b${n}`, slots: { blue: { instance_id: `${bo.team}-db`, port: p4 }, green: { instance_id: `${bo.team}-dg`, port: p5 } } }),
    },
    {
      label: 'docker rolling',
      app: 'image',
      runtime: 'docker',
      strategy: 'rolling',
      endpoint: '/v1/app/docker/deploy',
      body: (n, id) => ({ ...common(4, id, 'rolling'), image, image_tag: n % 2 === 0 ? 'v1' : 'v2', env_vars: { BUILD: String(n) }, instances: { web: { port: p6 } } }),
    },
    {
      label: 'binary blue_green (node app)',
      app: 'node',
      runtime: 'binary',
      strategy: 'blue_green',
      endpoint: '/v1/app/instance/binary/deploy',
      body: (n, id) => ({ ...common(5, id, 'blue_green'), asset_url: `${host.assets.baseUrl}/app-n${n}.tar.gz`, env_vars: {}, target_version: `n${n}`, slots: { blue: { instance_id: `${bo.team}-nb`, port: p7 }, green: { instance_id: `${bo.team}-ng`, port: p8 } } }),
    },
  ];
}

/** POST one deploy and wait for it; wall time and phases. */
async function deployOnce(bo: BenchOperator, c: Case, n: number, id: number): Promise<{ ok: boolean; wall: number; phases: Record<Phase, number>; status: DeploymentStatus }> {
  await bo.quiesce();
  const postedAt = Date.now();
  const r = await bo.api('POST', c.endpoint, c.body(n, id));
  const acceptedAt = Date.now();
  if (r.status !== 202) throw new Error(`${c.endpoint}: ${r.status} ${JSON.stringify(r.body)}`);
  const { status } = await bo.settle(String(id), 120_000);
  const finishedAt = Date.parse(status.finished_at ?? status.updated_at);
  return { ok: status.status === 'succeeded', wall: finishedAt - postedAt, phases: phases(status, postedAt, acceptedAt, finishedAt), status };
}

export async function deployOverhead(host: TestHost, opts: BenchOptions): Promise<BenchResult> {
  const m = machine();
  const arg = Number(opts.args[0]);
  const deploys = Number.isInteger(arg) && arg > 0 ? arg : opts.quick ? 5 : 15;
  const asset = await busyboxAsset(host);
  const ownBinary = await busyboxOwnStart(host, opts.quick ? 5 : 15);
  const ownDocker = await dockerOwnStart(host, opts.quick ? 3 : 10);
  const ownNode = await nodeAppOwnStart(host, opts.quick ? 3 : 10);
  const team = benchTeam('do');
  const bo = await startBenchOperator(host, path.join(host.tmpRoot, 'bench', `deploy-${team}`), { team });
  const results: CaseResult[] = [];
  try {
    const ports = await freePorts(8);
    let id = 1000;
    for (const c of cases(bo, host, asset, ports)) {
      console.error(`deploy-overhead: ${c.label}, ${deploys} deploys…`);
      const failed: string[] = [];
      const create = await deployOnce(bo, c, 0, ++id);
      if (!create.ok) failed.push(`create: ${create.status.status} ${JSON.stringify(create.status.error)}`);
      const walls: number[] = [];
      const per: Record<Phase, number>[] = [];
      let steps: string[] = [];
      for (let n = 1; n <= deploys && failed.length === 0; n++) {
        const d = await deployOnce(bo, c, n, ++id);
        if (!d.ok) {
          failed.push(`deploy ${n}: ${d.status.status} ${JSON.stringify(d.status.error)}`);
          break;
        }
        walls.push(d.wall);
        per.push(d.phases);
        steps = d.status.steps.map((s) => s.name);
      }
      const own = c.app === 'busybox' ? ownBinary : c.app === 'node' ? ownNode : ownDocker.createToHealthy;
      results.push({
        label: c.label,
        runtime: c.runtime,
        strategy: c.strategy,
        deploys: walls.length,
        createMs: create.wall,
        wall: summarize(walls),
        ownMs: Math.round(own * 10) / 10,
        overhead: summarize(walls.map((w) => w - own)),
        phases: Object.fromEntries(PHASES.map((p) => [p, median(per.map((x) => x[p]))])) as Record<Phase, number>,
        steps,
        failed,
      });
    }
  } finally {
    await bo.close();
  }

  const text = [
    `Deploy wall time (POST → succeeded) vs the app's own start (busybox: spawn → healthy ${fmt(ownBinary)} ms; node app: spawn → healthy ${fmt(ownNode)} ms; docker: create → healthy ${fmt(ownDocker.createToHealthy)} ms, of which start → healthy ${fmt(ownDocker.startToHealthy)} ms).`,
    table(
      ['case', 'deploys', 'wall median', 'wall p95', 'own', 'overhead median', 'overhead p95', 'create'],
      results.map((r) => [r.label, r.deploys, r.wall.median, r.wall.p95, r.ownMs, r.overhead.median, r.overhead.p95, r.createMs]),
    ),
    '',
    'Median per phase (ms, from the status document step timestamps; clock resolution 1 ms):',
    table(
      ['case', ...PHASES],
      results.map((r) => [r.label, ...PHASES.map((p) => r.phases[p])]),
    ),
    '',
    ...results.filter((r) => !r.label.includes('node')).map((r) => `steps of a ${r.label} deploy: ${r.steps.join(' | ')}`),
  ].join('\n');
  const bbg = results.find((r) => r.label === 'binary blue_green');
  const dbg = results.find((r) => r.label === 'docker blue_green');
  const targets: Target[] = [
    { what: 'overhead, binary blue/green (median)', target: '≤ 150 ms', measured: `${fmt(bbg?.overhead.median)} ms`, met: (bbg?.overhead.median ?? Infinity) <= 150 },
    { what: 'overhead, docker blue/green (median)', target: '≤ 500 ms', measured: `${fmt(dbg?.overhead.median)} ms`, met: (dbg?.overhead.median ?? Infinity) <= 500 },
  ];
  const failures = results.flatMap((r) => r.failed.map((f) => `${r.label}: ${f}`));
  return { name: 'deploy-overhead', quick: opts.quick, machine: finishMachine(m), figures: { ownBusyboxMs: ownBinary, ownNodeMs: ownNode, ownDocker, cases: results }, targets, text, failures };
}

if (isMain(import.meta.url)) await runMain([deployOverhead]);
