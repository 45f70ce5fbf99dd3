/**
 * "A pass over N apps with nothing to do makes the same number of host calls for N = 1 and N = 100",
 * against the real operator, systemd user manager and Caddy.
 *
 * The apps are real and in sync: a document each, a running unit each (`busybox httpd` on the app's
 * port, rendered the way the operator renders it) and a route each, in a Caddy server of this test.
 * Setting them up takes a few seconds because units start in one batch and routes go in one config
 * change; nothing is deployed through a rollout.
 */
import { mkdir, writeFile } from 'node:fs/promises';
import net from 'node:net';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { hostCallCounts, type HostComponent } from '../../src/core/hostcalls.ts';
import { appKeyString, unitName, type AppKey } from '../../src/core/identity.ts';
import type { DesiredApp } from '../../src/desired/document.ts';
import { routeJson } from '../../src/drivers/caddy-routes.ts';
import { createSystemdDriver } from '../../src/drivers/systemd.ts';
import { instanceUnitSpec } from '../../src/drivers/unit.ts';
import { specHash } from '../../src/reconciler/desired-model.ts';
import { caddyApi, caddyServer, systemdEnv } from '../harness/index.ts';
import { startTestOperator } from './operator.ts';

const BUSYBOX = '/bin/busybox';

function doc(team: string, app: number, port: number): DesiredApp {
  return {
    apiVersion: 'crate-operator/v1',
    kind: 'App',
    metadata: { team, environment: 1, app },
    spec: {
      runtime: 'binary',
      model: 'plain',
      domain: `a${app}.${team}.calls.test`,
      strategy: 'rolling',
      version: 'v1',
      binary: { asset_url: 'http://127.0.0.1:9/never-fetched.tar.gz' },
      env: {},
      health_check_path: '/',
      instances: { web: { port, state: 'running', generation: 0 } },
    },
    deployment: { id: String(app), callback_url: 'http://127.0.0.1:9/cb', requested_at: '2025-01-01T00:00:00.000Z' },
  };
}

/**
 * `n` free loopback ports below Linux's ephemeral range (32768-60999), so no client connection of a
 * parallel test takes one between the check and the app binding it.
 */
async function quietPorts(n: number): Promise<number[]> {
  const out: number[] = [];
  for (let p = 10_000 + Math.floor(Math.random() * 80) * 100; out.length < n && p < 19_000; p++) {
    const free = await new Promise<boolean>((resolve) => {
      const srv = net.createServer();
      srv.once('error', () => resolve(false));
      srv.listen({ host: '127.0.0.1', port: p, exclusive: true }, () => srv.close(() => resolve(true)));
    });
    if (free) out.push(p);
  }
  if (out.length < n) throw new Error(`only ${out.length} free ports`);
  return out;
}

function since(before: Record<HostComponent, number>): Record<HostComponent, number> {
  const now = hostCallCounts();
  return { systemctl: now.systemctl - before.systemctl, docker: now.docker - before.docker, caddy: now.caddy - before.caddy };
}

describe('host calls of a no-op pass', () => {
  it('are the same for 1 and for 100 apps in sync (loop pass and planAll)', async () => {
    const srv = await caddyServer('hc');
    const t = await startTestOperator({ resyncMs: 3_600_000, caddyServer: srv.name, caddyListen: [`127.0.0.1:${srv.port}`] });
    const www = path.join(t.config.stateDir, 'www');
    await mkdir(www, { recursive: true });
    await writeFile(path.join(www, 'index.html'), 'ok\n');
    const systemd = createSystemdDriver({ scope: 'user', env: systemdEnv(), appsDir: t.config.appsDir, stopTimeoutSec: 5 });
    const keys: AppKey[] = [];

    /** Apps `from..to` exactly as desired: document, running unit, route. */
    const addApps = async (from: number, to: number): Promise<void> => {
      const ports = await quietPorts(to - from + 1);
      const docs = ports.map((port, i) => doc(t.team, from + i, port));
      for (const d of docs) await t.op.store.write(d);
      const specs = docs.map((d) => {
        const port = d.spec.instances.web?.port as number;
        return instanceUnitSpec(
          { appsDir: t.config.appsDir, scope: 'user', stopTimeoutSec: 5 },
          { key: { team: t.team, env: 1, app: d.metadata.app }, instance: 'web', version: 'v1', generation: 0, deployment: d.deployment.id, spec: specHash(d), port, env: {}, release: { dir: www, command: { argv: [BUSYBOX, 'httpd', '-f', '-p', `127.0.0.1:${port}`, '-h', www] } } },
        );
      });
      await systemd.writeUnits(specs);
      await systemd.daemonReload();
      await systemd.start(specs.map((s) => unitName(s.key, s.instance, s.spec)), { timeoutMs: 60_000 });
      const routes = docs.map((d) => routeJson({ team: t.team, env: 1, app: d.metadata.app }, d.spec.domain, [d.spec.instances.web?.port as number]));
      expect((await caddyApi('POST', `/config/apps/http/servers/${srv.name}/routes/...`, routes)).status).toBe(200);
      keys.push(...docs.map((d) => ({ team: t.team, env: 1, app: d.metadata.app })));
    };

    /** One pass of the loop over every key: triggered together, as the resync does. */
    const pass = async (): Promise<{ calls: Record<HostComponent, number>; ms: number }> => {
      await t.op.reconciler.loop.idle();
      const before = hostCallCounts();
      const at = performance.now();
      for (const k of keys) t.op.reconciler.trigger(k);
      await t.op.reconciler.loop.idle();
      const ms = performance.now() - at;
      const calls = since(before);
      const outcomes = t.op.reconciler.loop.outcomes();
      for (const k of keys) expect(outcomes.get(appKeyString(k)), appKeyString(k)).toEqual({ kind: 'done' });
      return { calls, ms };
    };
    const planAll = async (): Promise<Record<HostComponent, number>> => {
      const before = hostCallCounts();
      const plans = (await t.op.reconciler.planAll()).filter((p) => p.key.team === t.team);
      const calls = since(before);
      expect(plans.map((p) => [appKeyString(p.key), p.mode, p.plan.kind, p.plan.actions.map((a) => a.name)])).toEqual(keys.map(appKeyString).sort().map((k) => [k, 'heal', 'noop', []]));
      return calls;
    };
    const inSync = async (): Promise<void> => {
      // The first pass over a document nobody deployed records its deployment (succeeded: nothing to do).
      await pass();
      for (const k of keys) {
        expect(t.op.records.latestForApp(k)?.status.status, appKeyString(k)).toBe('succeeded');
        expect((t.op.reconciler.observedView(k) as { last_heal: unknown }).last_heal, appKeyString(k)).toBeNull();
      }
    };

    await addApps(1, 1);
    await inSync();
    const one = await pass();
    const planOne = await planAll();

    await addApps(2, 100);
    await inSync();
    const hundred = await pass();
    const planHundred = await planAll();

    console.log(`no-op pass host calls: N=1 ${JSON.stringify(one.calls)} (${one.ms.toFixed(0)} ms), N=100 ${JSON.stringify(hundred.calls)} (${hundred.ms.toFixed(0)} ms); planAll N=1 ${JSON.stringify(planOne)}, N=100 ${JSON.stringify(planHundred)}`);
    expect(one.calls).toEqual({ systemctl: 1, docker: 1, caddy: 1 });
    expect(hundred.calls).toEqual(one.calls);
    expect(planOne).toEqual({ systemctl: 1, docker: 1, caddy: 1 });
    expect(planHundred).toEqual(planOne);
  }, 60_000);
});
