// Reconcile scaling: the cost of a no-op reconcile pass as the number of apps grows.
//   npx tsx bench/reconcile-scaling.ts [--quick] [binary:N,N docker:N,N]
//   (default binary 10,100,1000 and docker 10,50,200; --quick: binary 10,100 and docker 10)
//
// For each runtime and N: N apps that are exactly as desired (one instance each, `busybox httpd` as the
// process, a route per app), their documents in a desired-state store. Then, side by side:
//   - pass: observeHost (one systemctl list-units + one unit-folder read, one Docker list, one Caddy
//     GET) + plan() for every app, the way the reconciler does it. Every plan must be empty.
//   - loop pass: the real operator (startOperator) reconciles every app once (trigger all keys, wait
//     until idle): observation + per-app records lookups + planning, through the loop's workers.
//   - naive: what an observer that asks per unit would cost: `systemctl show` once per unit
//     (binary), `GET /containers/<id>/json` once per container (docker).
//   - batched show: one `systemctl show -p … <every unit>` (the other tempting alternative).
// Reported: median/p95 wall time, host calls per pass, process RSS and heap.
import { cp, mkdir, readdir, rm, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { execa } from 'execa';
import { request } from 'undici';
import { countHostCall, hostCallCounts, type HostComponent } from '../src/core/hostcalls.ts';
import { appKeyString, containerName, unitName, type AppKey } from '../src/core/identity.ts';
import type { DesiredApp } from '../src/desired/document.ts';
import { routeJson } from '../src/drivers/caddy-routes.ts';
import { createDockerClient, createDockerDriver } from '../src/drivers/docker.ts';
import { createSystemdDriver } from '../src/drivers/systemd.ts';
import { instanceUnitSpec, type UnitSpec } from '../src/drivers/unit.ts';
import { systemPath } from '../src/host/process.ts';
import { createCaddyObserver } from '../src/observers/caddy.ts';
import { createDockerObserver } from '../src/observers/docker.ts';
import { createSystemdObserver } from '../src/observers/systemd.ts';
import { specHash, toDesiredModel } from '../src/reconciler/desired-model.ts';
import type { ObservedApp, Runtime } from '../src/reconciler/model.ts';
import { observeHost, type HostObservers } from '../src/reconciler/observe.ts';
import { plan } from '../src/reconciler/plan.ts';
import { startChildOperator } from './lib/child-operator.ts';
import { systemdEnvOf, type TestHost } from './lib/host.ts';
import { isMain, runMain, type BenchOptions } from './lib/main.ts';
import { benchTeam, startBenchOperator, TOKEN } from './lib/operator.ts';
import { freePorts } from './lib/ports.ts';
import { fmt, machine, finishMachine, summarize, table, timed, type BenchResult, type Summary, type Target } from './lib/report.ts';

const BUSYBOX = '/usr/bin/busybox';

interface Row {
  runtime: Runtime;
  n: number;
  setupMs: number;
  pass: Summary;
  /** The pass's two halves: the host observation, and plan() for every app. */
  observe: Summary;
  plan: Summary;
  /** Host calls of one pass, by component. */
  calls: Record<HostComponent, number>;
  /** Plans with actions in the no-op passes (must be 0). */
  actions: number;
  loop: Summary;
  loopCalls: Record<HostComponent, number>;
  naive: Summary;
  naiveCalls: number;
  batchedShowMs: number | null;
  /** naive median / pass median. */
  ratio: number;
  /** The operator process's RSS while it resyncs every app each second (max sampled, and peak). */
  rssMiB: number;
  hwmMiB: number;
  notes: string[];
}

function callsSince(before: Record<HostComponent, number>, passes = 1): Record<HostComponent, number> {
  const now = hostCallCounts();
  const per = (c: HostComponent): number => Math.round(((now[c] - before[c]) / passes) * 100) / 100;
  return { systemctl: per('systemctl'), docker: per('docker'), caddy: per('caddy') };
}

/** The desired document of bench app `i`: plain model, rolling, one instance `web` on `port`. */
function benchDoc(team: string, i: number, runtime: Runtime, port: number, callbackUrl: string): DesiredApp {
  return {
    apiVersion: 'crate-operator/v1',
    kind: 'App',
    metadata: { team, environment: 1, app: i + 1 },
    spec: {
      runtime,
      model: 'plain',
      domain: `a${i + 1}.${team}.bench.test`,
      strategy: 'rolling',
      version: 'v1',
      ...(runtime === 'binary'
        ? { binary: { asset_url: 'http://127.0.0.1:9/never-fetched.tar.gz' } }
        : { docker: { image: 'crate-test/busybox', tag: '1', command: ['/bin/busybox', 'httpd', '-f', '-p', '8080', '-h', '/'] } }),
      env: {},
      health_check_path: '/',
      instances: { web: { port, state: 'running', generation: 0 } },
    },
    deployment: { id: String(i + 1), callback_url: callbackUrl, requested_at: new Date().toISOString() },
  };
}

/** In batches of `size`, at most `par` batches at once. */
async function inBatches<T>(items: readonly T[], size: number, par: number, f: (batch: T[]) => Promise<void>): Promise<void> {
  const batches: T[][] = [];
  for (let i = 0; i < items.length; i += size) batches.push(items.slice(i, i + size));
  let next = 0;
  await Promise.all(
    Array.from({ length: Math.min(par, batches.length) }, async () => {
      while (next < batches.length) {
        const b = batches[next++] as T[];
        await f(b);
      }
    }),
  );
}

async function scenario(host: TestHost, runtime: Runtime, n: number, opts: { passes: number; naivePasses: number }): Promise<Row> {
  const team = benchTeam(runtime === 'binary' ? 'rb' : 'rd');
  const stateDir = path.join(host.tmpRoot, 'bench', `scaling-${team}`);
  const env = systemdEnvOf(host);
  const notes: string[] = [];
  const bo = await startBenchOperator(host, stateDir, { team, watch: false });
  try {
    const cfg = bo.config;
    const t0 = performance.now();
    // ---- Set up N apps exactly as desired ----
    const ports = await freePorts(n);
    const www = path.join(stateDir, 'www');
    await mkdir(www, { recursive: true });
    await writeFile(path.join(www, 'index.html'), 'ok\n');
    const store = bo.op.store;
    const docs = ports.map((port, i) => benchDoc(team, i, runtime, port, bo.callbackUrl(String(i + 1))));
    await inBatches(docs, 50, 4, async (b) => {
      for (const d of b) await store.write(d);
    });
    const keyOf = (i: number): AppKey => ({ team, env: 1, app: i + 1 });
    if (runtime === 'binary') {
      const driver = createSystemdDriver({ scope: 'user', env, appsDir: cfg.appsDir, stopTimeoutSec: cfg.stopTimeoutSec });
      const specs: UnitSpec[] = docs.map((d, i) =>
        instanceUnitSpec(
          { appsDir: cfg.appsDir, scope: 'user', stopTimeoutSec: cfg.stopTimeoutSec },
          {
            key: keyOf(i),
            instance: 'web',
            version: 'v1',
            generation: 0,
            deployment: d.deployment.id,
            spec: specHash(d),
            port: ports[i] as number,
            env: {},
            release: { dir: www, command: { argv: [BUSYBOX, 'httpd', '-f', '-p', `127.0.0.1:${ports[i]}`, '-h', www] } },
          },
        ),
      );
      await driver.writeUnits(specs);
      await driver.daemonReload();
      await inBatches(
        specs.map((s) => unitName(s.key, s.instance, s.spec)),
        250,
        1,
        (b) => driver.start(b, { timeoutMs: 120_000 }),
      );
    } else {
      const driver = createDockerDriver({ socketPath: host.docker.socket });
      try {
        await inBatches(docs, 1, 4, async ([d]) => {
          const doc = d as DesiredApp;
          const i = doc.metadata.app - 1;
          const spec = specHash(doc);
          const c = await driver.create({
            key: keyOf(i),
            instance: 'web',
            version: 'v1',
            deployment: doc.deployment.id,
            generation: 0,
            spec,
            name: containerName(keyOf(i), 'web', spec),
            image: 'crate-test/busybox',
            tag: '1',
            port: ports[i] as number,
            env: {},
            command: doc.spec.docker?.command,
            restart: 'unless-stopped',
            stopTimeoutSec: cfg.stopTimeoutSec,
          });
          await driver.start(c.name);
        });
      } finally {
        await driver.close();
      }
    }
    // Every route in one config change (the operator's driver would make N).
    const routes = docs.map((d, i) => routeJson(keyOf(i), d.spec.domain, [ports[i] as number]));
    const res = await request(`${host.caddy.adminUrl}/config/apps/http/servers/${host.caddy.serverName}/routes/...`, {
      method: 'POST',
      reset: true,
      body: JSON.stringify(routes),
      headers: { 'content-type': 'application/json' },
      headersTimeout: 120_000,
      bodyTimeout: 120_000,
    });
    if (res.statusCode !== 200) throw new Error(`caddy: cannot add ${n} routes: ${res.statusCode} ${await res.body.text()}`);
    await res.body.dump();

    // ---- Observers as the operator builds them ----
    const sdObs = createSystemdObserver({ scope: 'user', env });
    const dkObs = createDockerObserver(host.docker.socket);
    const cdObs = createCaddyObserver(host.caddy.adminUrl, host.caddy.serverName);
    const observers: HostObservers = { systemd: () => sdObs.observe(), docker: () => dkObs.observe(), caddy: () => cdObs.observe() };
    try {
      // Wait until every run is up (units and containers start asynchronously).
      const until = Date.now() + 180_000;
      for (;;) {
        const snap = await observeHost(observers, Date.now);
        const up = [...snap.apps.values()].filter((a) => a.runs.some((r) => r.state === 'running')).length;
        if (up === n) break;
        if (Date.now() > until) throw new Error(`only ${up} of ${n} ${runtime} apps running after 180 s`);
        await new Promise((r) => setTimeout(r, 200));
      }
      const setupMs = performance.now() - t0;

      // ---- No-op pass: observeHost + plan() per app ----
      const emptyApp = (key: AppKey): ObservedApp => ({ key, runs: [], route: null });
      let actions = 0;
      const samples: number[] = [];
      const observeMs: number[] = [];
      const planMs: number[] = [];
      const onePass = async (): Promise<void> => {
        const t0 = performance.now();
        const snap = await observeHost(observers, Date.now);
        const t1 = performance.now();
        observeMs.push(t1 - t0);
        for (const doc of store.list()) {
          const key = { team: doc.metadata.team, env: doc.metadata.environment, app: doc.metadata.app };
          const observed = snap.apps.get(appKeyString(key)) ?? emptyApp(key);
          const p = plan(toDesiredModel(doc), observed, { usedPorts: snap.usedPorts, surgePorts: cfg.surgePorts, availability: snap.availability, deploy: false }, snap.at);
          if (p.actions.length > 0) {
            actions += 1;
            if (notes.length < 3) notes.push(`${appKeyString(key)} planned: ${p.actions.map((a) => a.name).join('; ')}`);
          }
        }
        planMs.push(performance.now() - t1);
      };
      for (let i = 0; i < 3; i++) await onePass(); // warm-up (JIT, connection set-up)
      actions = 0;
      observeMs.length = 0;
      planMs.length = 0;
      const before = hostCallCounts();
      for (let i = 0; i < opts.passes; i++) samples.push((await timed(onePass))[1]);
      const calls = callsSince(before, opts.passes);

      // ---- The operator's own loop over every app ----
      const loop = bo.op.reconciler.loop;
      const keys = docs.map((_, i) => appKeyString(keyOf(i)));
      const loopPass = async (): Promise<void> => {
        for (const k of keys) loop.trigger(k);
        await loop.idle();
      };
      // First pass records each hand-written document as a deployment (it succeeds at once: nothing to do).
      await loopPass();
      await loopPass();
      const loopSamples: number[] = [];
      const beforeLoop = hostCallCounts();
      for (let i = 0; i < opts.passes; i++) loopSamples.push((await timed(loopPass))[1]);
      const loopCalls = callsSince(beforeLoop, opts.passes);
      const notDone = [...loop.outcomes()].filter(([, o]) => o && o.kind !== 'done');
      if (notDone.length > 0) notes.push(`loop: ${notDone.length} keys did not settle as done (e.g. ${JSON.stringify(notDone[0])})`);
      const active = bo.op.records.active();
      if (active.length > 0) notes.push(`loop: ${active.length} deployments still active`);

      // ---- The operator as its own process: its memory while it resyncs these N apps every second ----
      const childDir = path.join(host.tmpRoot, 'bench', `scaling-${team}-proc`);
      await cp(store.root, path.join(childDir, 'desired'), { recursive: true });
      const child = await startChildOperator(host, childDir, { resyncSeconds: 1 });
      let rssMiB = 0;
      let hwmMiB = 0;
      try {
        const until = Date.now() + 120_000;
        // Its first pass records each document as a deployment; the last one tells the pass is done.
        for (;;) {
          const r = await request(`${child.url}/v1/app/deploy/${n}/status`, { headers: { authorization: `Bearer ${TOKEN}` }, reset: true });
          const body = (await r.body.json()) as { status?: string };
          if (body.status === 'succeeded') break;
          if (Date.now() > until) throw new Error(`operator process: deployment ${n} not succeeded after 120 s (${JSON.stringify(body)})`);
          await new Promise((res) => setTimeout(res, 200));
        }
        for (let i = 0; i < 20; i++) {
          await new Promise((res) => setTimeout(res, 250));
          const mem = child.memory();
          rssMiB = Math.max(rssMiB, mem.rssMiB);
          hwmMiB = mem.hwmMiB;
        }
      } finally {
        await child.stop();
        await rm(childDir, { recursive: true, force: true });
      }

      // ---- Naive observers ----
      const naiveSamples: number[] = [];
      const beforeNaive = hostCallCounts();
      let batchedShowMs: number | null = null;
      if (runtime === 'binary') {
        const systemctl = (args: string[]) => {
          countHostCall('systemctl');
          return execa('systemctl', ['--user', '--no-pager', ...args], { env: { PATH: systemPath(), ...env }, extendEnv: false, timeout: 600_000 });
        };
        const props = 'Id,LoadState,ActiveState,SubState,Description';
        const naivePass = async (): Promise<void> => {
          const units = (await readdir(host.systemd.unitDir)).filter((f) => f.startsWith(`crate-${team}:`));
          for (const u of units) await systemctl(['show', '-p', props, u]);
        };
        for (let i = 0; i < opts.naivePasses; i++) naiveSamples.push((await timed(naivePass))[1]);
        const units = (await readdir(host.systemd.unitDir)).filter((f) => f.startsWith(`crate-${team}:`));
        batchedShowMs = (await timed(() => systemctl(['show', '-p', props, ...units])))[1];
      } else {
        const client = createDockerClient(host.docker.socket);
        try {
          const naivePass = async (): Promise<void> => {
            const filters = encodeURIComponent(JSON.stringify({ label: [`crate.team=${team}`] }));
            const list = JSON.parse((await client.call('GET', `/containers/json?all=1&filters=${filters}`)).body) as { Id: string }[];
            for (const c of list) await client.call('GET', `/containers/${c.Id}/json`);
          };
          for (let i = 0; i < opts.naivePasses; i++) naiveSamples.push((await timed(naivePass))[1]);
        } finally {
          await client.close();
        }
      }
      const naiveCalls = Math.round(((hostCallCounts()[runtime === 'binary' ? 'systemctl' : 'docker'] - beforeNaive[runtime === 'binary' ? 'systemctl' : 'docker']) - (batchedShowMs === null ? 0 : 1)) / opts.naivePasses);
      const pass = summarize(samples);
      const naive = summarize(naiveSamples);
      return {
        runtime,
        n,
        setupMs: Math.round(setupMs),
        pass,
        observe: summarize(observeMs),
        plan: summarize(planMs),
        calls,
        actions,
        loop: summarize(loopSamples),
        loopCalls,
        naive,
        naiveCalls,
        batchedShowMs: batchedShowMs === null ? null : Math.round(batchedShowMs),
        ratio: Math.round((naive.median / pass.median) * 10) / 10,
        rssMiB,
        hwmMiB,
        notes,
      };
    } finally {
      await cdObs.close();
      await dkObs.close();
    }
  } finally {
    await bo.close();
  }
}

/** `binary:10,100 docker:10` → sizes per runtime. */
function parseSizes(args: string[], quick: boolean): Record<Runtime, number[]> {
  const sizes: Record<Runtime, number[]> = quick ? { binary: [10, 100], docker: [10] } : { binary: [10, 100, 1000], docker: [10, 50, 200] };
  for (const a of args) {
    const m = /^(binary|docker):([0-9,]*)$/.exec(a);
    if (m) sizes[m[1] as Runtime] = (m[2] as string).split(',').filter(Boolean).map(Number);
  }
  return sizes;
}

export async function reconcileScaling(host: TestHost, opts: BenchOptions): Promise<BenchResult> {
  const m = machine();
  const sizes = parseSizes(opts.args, opts.quick);
  const rows: Row[] = [];
  for (const runtime of ['binary', 'docker'] as const) {
    for (const n of sizes[runtime]) {
      const passes = opts.quick ? 20 : 30;
      const naivePasses = n >= 500 ? 2 : n >= 100 ? 3 : opts.quick ? 5 : 10;
      console.error(`reconcile-scaling: ${runtime} N=${n}…`);
      rows.push(await scenario(host, runtime, n, { passes, naivePasses }));
    }
  }
  const text = [
    'No-op reconcile pass: observeHost + plan() for every app (pass), the operator loop over every app (loop), and a naive observer (per-unit systemctl show / per-container inspect).',
    table(
      ['runtime', 'N', 'pass median', 'pass p95', 'observe', 'plan', 'calls/pass (sd/dk/cd)', 'actions', 'loop median', 'loop p95', 'loop calls', 'naive median', 'naive calls', 'naive/pass', 'batched show', 'RSS MiB', 'peak MiB'],
      rows.map((r) => [
        r.runtime,
        r.n,
        r.pass.median,
        r.pass.p95,
        r.observe.median,
        r.plan.median,
        `${r.calls.systemctl}/${r.calls.docker}/${r.calls.caddy}`,
        r.actions,
        r.loop.median,
        r.loop.p95,
        `${r.loopCalls.systemctl}/${r.loopCalls.docker}/${r.loopCalls.caddy}`,
        r.naive.median,
        r.naiveCalls,
        `${fmt(r.ratio)}x`,
        r.batchedShowMs === null ? '-' : r.batchedShowMs,
        r.rssMiB,
        r.hwmMiB,
      ]),
    ),
    '(times in ms; set-up per row: ' + rows.map((r) => `${r.runtime} ${r.n}: ${(r.setupMs / 1000).toFixed(1)} s`).join(', ') + ')',
    ...rows.flatMap((r) => r.notes.map((n) => `note ${r.runtime} N=${r.n}: ${n}`)),
  ].join('\n');

  const failures: string[] = [];
  for (const r of rows) {
    if (r.actions > 0) failures.push(`${r.runtime} N=${r.n}: ${r.actions} no-op plans had actions (${r.notes[0] ?? ''})`);
    const total = r.calls.systemctl + r.calls.docker + r.calls.caddy;
    if (total !== 3) failures.push(`${r.runtime} N=${r.n}: ${total} host calls per pass (expected 3)`);
  }
  const bin = rows.filter((r) => r.runtime === 'binary');
  const biggest = bin.reduce<Row | undefined>((a, r) => (!a || r.n > a.n ? r : a), undefined);
  const constant = rows.every((r) => r.calls.systemctl === 1 && r.calls.docker === 1 && r.calls.caddy === 1);
  const maxRss = Math.max(...rows.map((r) => r.rssMiB));
  const maxPeak = Math.max(...rows.map((r) => r.hwmMiB));
  const targets: Target[] = [
    ...(biggest
      ? [
          { what: `no-op pass median, ${biggest.n} binary apps`, target: biggest.n >= 1000 ? '≤ 100 ms' : '≤ 100 ms (at 1,000)', measured: `${fmt(biggest.pass.median)} ms (loop ${fmt(biggest.loop.median)} ms)`, met: biggest.pass.median <= 100 },
        ]
      : []),
    { what: 'host calls per pass constant in N', target: '1 systemctl + 1 docker + 1 caddy', measured: constant ? 'yes, 1/1/1 at every N' : rows.map((r) => `${r.runtime} ${r.n}: ${r.calls.systemctl}/${r.calls.docker}/${r.calls.caddy}`).join(', '), met: constant },
    { what: 'operator RSS', target: '≤ 100 MB', measured: `${maxRss} MiB (peak ${maxPeak}), operator process`, met: maxRss <= 100 },
  ];
  return { name: 'reconcile-scaling', quick: opts.quick, machine: finishMachine(m), figures: { rows }, targets, text, failures };
}

if (isMain(import.meta.url)) await runMain([reconcileScaling]);
