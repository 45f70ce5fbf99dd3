/**
 * Binds the plan's actions to the drivers for one app: the only place where a planned step becomes
 * a host change. Every effect is idempotent (a re-run after a crash finds the work done and does
 * nothing) and bounded by the step's absolute deadline.
 *
 * Effects read the app's document when they run (`doc()`), and refuse to render a revision that is no
 * longer the document's (E_DOCUMENT_CHANGED): a newer request won, the run rolls back and the
 * reconciler plans again from what is there.
 */
import type { Dispatcher } from 'undici';
import type { OperatorConfig } from '../config.ts';
import { CrateError } from '../core/errors.ts';
import { appKeyString, containerName, unitName, type AppKey } from '../core/identity.ts';
import type { DesiredApp } from '../desired/document.ts';
import type { KeyedMutex } from '../desired/lock.ts';
import { fetchRelease, removeAppDir, pruneReleases, type Release } from '../drivers/assets.ts';
import type { CaddyDriver } from '../drivers/caddy.ts';
import type { DockerDriver } from '../drivers/docker.ts';
import { waitHealthy } from '../drivers/health.ts';
import { appDir } from '../drivers/layout.ts';
import type { SystemdDriver } from '../drivers/systemd.ts';
import { instanceUnitSpec } from '../drivers/unit.ts';
import type { EffectInput, Effects } from '../machines/deployment-machine.ts';
import { specHash } from './desired-model.ts';
import type { Action, RunRef } from './model.ts';

export interface EffectDrivers {
  config: OperatorConfig;
  systemd: SystemdDriver;
  docker: DockerDriver;
  caddy: CaddyDriver;
  /** SSRF-guarded dispatcher for asset downloads. */
  dispatcher?: Dispatcher | undefined;
  now(): number;
  /** Called with what a step changed on the host (logs, metrics). */
  onHostChange?(key: AppKey, action: Action, detail: string): void;
  /**
   * One writer per app route: deployments, heals and domain moves hold the app's key while they
   * write its route, so a route write never lands between a move's Caddy change and its document
   * write. Without it, route writes are not serialised (single-writer tests).
   */
  routeLock?: KeyedMutex;
}

/**
 * Run `fn` as the app's only route writer (see EffectDrivers.routeLock). A domain move runs its Caddy
 * change and its document write in one such call, so a heal or deployment that planned from the old
 * document writes the route only after the document moved (and then with the new domain).
 */
export function asRouteWriter<T>(lock: KeyedMutex | undefined, key: AppKey, fn: () => Promise<T>): Promise<T> {
  return lock ? lock.run([`route:${appKeyString(key)}`], fn) : fn();
}

type E<T extends Action['type']> = EffectInput<Extract<Action, { type: T }>>;

/**
 * The least time a drain lasts after the route change that took its ports out, before the old runs
 * may be stopped (bounded by the drain deadline). After a reload, Caddy 2.6.2's superseded server keeps
 * routing requests that arrive on client connections it already had to the old upstreams for a while
 * (bench/zero-downtime.ts saw them up to ~320 ms after the switch on a loaded 2-core machine), does not
 * retry them (its context is already cancelled), and `/reverse_proxy/upstreams` stops listing the old
 * upstreams at the reload, their in-flight requests included, so the counts cannot tell when that is
 * over. Stopping the old run sooner turns those requests into 502s; requests still running after the
 * drain are finished by the app on SIGTERM (stop_timeout bounds them).
 */
export const DRAIN_SETTLE_MS = 1_000;

/** First pause between health probes of a starting instance; pauses double up to probeIntervalMs. */
export const PROBE_FIRST_INTERVAL_MS = 25;

function remaining(deadlineAt: number, now: number): number {
  return Math.max(1, deadlineAt - now);
}

function sleep(ms: number, signal: AbortSignal): Promise<void> {
  return new Promise((resolve, reject) => {
    if (signal.aborted) {
      reject(new CrateError('E_ABORTED', 'aborted'));
      return;
    }
    const t = setTimeout(() => {
      signal.removeEventListener('abort', onAbort);
      resolve();
    }, ms);
    const onAbort = (): void => {
      clearTimeout(t);
      reject(new CrateError('E_ABORTED', 'aborted'));
    };
    signal.addEventListener('abort', onAbort, { once: true });
  });
}

/** The effects of one app. `doc` returns the document in force (undefined once the app is deleted). */
export function bindEffects(d: EffectDrivers, key: AppKey, doc: () => DesiredApp | undefined): Effects {
  const cfg = d.config;
  const dir = appDir(cfg.appsDir, key);
  const unit = (r: Pick<RunRef, 'instance' | 'spec'>): string => unitName(key, r.instance, r.spec);
  const container = (r: Pick<RunRef, 'instance' | 'spec'>): string => containerName(key, r.instance, r.spec);

  /** The document, checked to still describe revision `spec`. */
  const current = (spec: string): DesiredApp => {
    const x = doc();
    if (!x) throw new CrateError('E_DOCUMENT_CHANGED', 'the app is no longer desired');
    if (specHash(x) !== spec) throw new CrateError('E_DOCUMENT_CHANGED', `the document changed since this step was planned (revision ${spec} is no longer desired)`);
    return x;
  };

  const release = async (x: DesiredApp, signal: AbortSignal, deadlineAt: number): Promise<Release> => {
    const assetUrl = x.spec.binary?.asset_url;
    if (!assetUrl) throw new CrateError('E_DOCUMENT_INVALID', 'a binary app needs spec.binary.asset_url');
    return fetchRelease({
      assetUrl,
      appDir: dir,
      version: x.spec.version,
      signal,
      limits: { timeoutMs: remaining(deadlineAt, d.now()) },
      ...(d.dispatcher ? { dispatcher: d.dispatcher } : {}),
    });
  };

  const ensureImage = async (x: DesiredApp, signal: AbortSignal): Promise<string> => {
    const dk = x.spec.docker;
    if (!dk) throw new CrateError('E_DOCUMENT_INVALID', 'a docker app needs spec.docker');
    // Tags are treated as immutable: a present image is not pulled again (no registry round trip per deploy).
    const r = await d.docker.pull(dk.image, dk.tag, dk.credentials, { ifMissing: true, signal });
    return r.pulled ? `pulled ${dk.image}:${dk.tag}` : `image ${dk.image}:${dk.tag} present`;
  };

  const createContainer = async (x: DesiredApp, a: { instance: string; spec: string; port: number; slot?: string | undefined }, generation: number, deploymentId: string): Promise<string> => {
    const dk = x.spec.docker;
    if (!dk) throw new CrateError('E_DOCUMENT_INVALID', 'a docker app needs spec.docker');
    const spec = {
      key,
      instance: a.instance,
      slot: a.slot,
      version: x.spec.version,
      deployment: deploymentId,
      generation,
      spec: a.spec,
      name: container(a),
      image: dk.image,
      tag: dk.tag,
      port: a.port,
      env: x.spec.env,
      command: dk.command,
      volumes: dk.volumes,
      restart: 'unless-stopped' as const,
      stopTimeoutSec: cfg.stopTimeoutSec,
    };
    let created;
    try {
      created = await d.docker.create(spec);
    } catch (err) {
      // Same name, other settings (a new port or restart generation): replace it.
      if (!(err instanceof CrateError && err.code === 'E_CONTAINER_CONFLICT')) throw err;
      await d.docker.remove(spec.name);
      created = await d.docker.create(spec);
    }
    await d.docker.start(created.name);
    return created.created ? `container ${created.name} created and started` : `container ${created.name} running`;
  };

  const createUnit = async (x: DesiredApp, a: { instance: string; spec: string; port: number; slot?: string | undefined }, generation: number, deploymentId: string, signal: AbortSignal, deadlineAt: number): Promise<string> => {
    const rel = await release(x, signal, deadlineAt);
    const spec = instanceUnitSpec(
      { appsDir: cfg.appsDir, scope: cfg.systemdScope, stopTimeoutSec: cfg.stopTimeoutSec },
      { key, instance: a.instance, slot: a.slot, version: x.spec.version, generation, deployment: deploymentId, spec: a.spec, port: a.port, env: x.spec.env, release: rel },
    );
    const [w] = await d.systemd.writeUnits([spec]);
    const name = w?.unit ?? unit(a);
    if (w?.changed) {
      await d.systemd.daemonReload();
      // New files: a running unit must restart to pick them up; a stopped one just starts.
      await d.systemd.resetFailed([name]);
      await d.systemd.restart([name]);
      return `unit ${name} written and (re)started`;
    }
    await d.systemd.resetFailed([name]);
    await d.systemd.start([name]);
    return `unit ${name} running`;
  };

  const generationOf = (x: DesiredApp, instance: string): number => x.spec.instances[instance]?.generation ?? 0;

  const effects: Effects = {
    async fetchRelease({ signal, deadlineAt }: E<'fetchRelease'>) {
      const x = doc();
      if (!x) throw new CrateError('E_DOCUMENT_CHANGED', 'the app is no longer desired');
      const rel = await release(x, signal, deadlineAt);
      // Keep the newest N releases besides the one just fetched (older runs use recent ones).
      await pruneReleases({ appDir: dir, keep: [rel.version], keepCount: cfg.keepReleases });
      return rel.reused ? `release ${rel.version} present` : `fetched release ${rel.version} (${rel.bytes} bytes, sha256 ${rel.sha256.slice(0, 12)})`;
    },
    async pullImage({ signal }: E<'pullImage'>) {
      const x = doc();
      if (!x) throw new CrateError('E_DOCUMENT_CHANGED', 'the app is no longer desired');
      return ensureImage(x, signal);
    },
    async createRun({ action: a, deploymentId, signal, deadlineAt }: E<'createRun'>) {
      const x = current(a.spec);
      const gen = generationOf(x, a.instance);
      if (x.spec.runtime === 'docker') {
        await ensureImage(x, signal);
        return createContainer(x, a, gen, deploymentId);
      }
      return createUnit(x, a, gen, deploymentId, signal, deadlineAt);
    },
    async startRun({ action: a }: E<'startRun'>) {
      if (a.runtime === 'docker') {
        await d.docker.start(container(a));
        return `container ${container(a)} started`;
      }
      await d.systemd.resetFailed([unit(a)]);
      await d.systemd.start([unit(a)]);
      return `unit ${unit(a)} started`;
    },
    async restartRun({ action: a, deploymentId, signal, deadlineAt }: E<'restartRun'>) {
      // The generation is part of the unit/container, so a restart re-renders it with the new one.
      const x = current(a.spec);
      const slot = x.spec.instances[a.instance]?.slot;
      if (a.runtime === 'docker') {
        await d.docker.remove(container(a));
        return createContainer(x, { ...a, slot }, a.generation, deploymentId);
      }
      const rel = await release(x, signal, deadlineAt);
      const spec = instanceUnitSpec(
        { appsDir: cfg.appsDir, scope: cfg.systemdScope, stopTimeoutSec: cfg.stopTimeoutSec },
        { key, instance: a.instance, slot, version: x.spec.version, generation: a.generation, deployment: deploymentId, spec: a.spec, port: a.port, env: x.spec.env, release: rel },
      );
      const [w] = await d.systemd.writeUnits([spec]);
      if (w?.changed) await d.systemd.daemonReload();
      await d.systemd.resetFailed([unit(a)]);
      await d.systemd.restart([unit(a)]);
      return `unit ${unit(a)} restarted (generation ${a.generation})`;
    },
    async waitHealthy({ action: a, signal, deadlineAt }: E<'waitHealthy'>) {
      const x = doc();
      const path = x?.spec.health_check_path ?? undefined;
      const r = await waitHealthy({
        port: a.port,
        path,
        timeoutMs: cfg.deadlines.probeTimeoutMs,
        intervalMs: cfg.deadlines.probeIntervalMs,
        // Probe again soon after a first miss (25, 50, 100 ms, …): the wait for a healthy new instance
        // is deploy time, and most apps listen well before a full interval has passed.
        firstIntervalMs: PROBE_FIRST_INTERVAL_MS,
        // A deadline that passed while the operator was down (a resumed step) or is about to pass still
        // gets one full probe window: the step fails on the app's answer, not on the operator's delay.
        deadlineMs: Math.max(remaining(deadlineAt, d.now()), cfg.deadlines.probeTimeoutMs),
        signal,
      });
      if (!r.healthy) {
        const why = r.lastError ? `${r.lastError.code}: ${r.lastError.message}` : 'no answer';
        throw new CrateError('E_HEALTH_TIMEOUT', `${a.instance} on :${a.port} was not healthy after ${r.attempts} probes (${why})`, { details: { port: a.port } });
      }
      return `healthy after ${r.attempts} probe${r.attempts === 1 ? '' : 's'} (${Math.round(r.elapsedMs)} ms)`;
    },
    async setRoute({ action: a }: E<'setRoute'>) {
      return asRouteWriter(d.routeLock, key, async () => {
        // The domain in force now: a domain move since planning changed the document, not the plan.
        const domain = doc()?.spec.domain ?? a.domain;
        await d.caddy.ensureServer();
        const c = await d.caddy.upsertRoute(key, domain, a.ports);
        return c.changed ? `route ${domain} → ${a.ports.map((p) => `:${p}`).join(', ') || 'none'}` : 'route already so';
      });
    },
    async drain({ action: a, signal, deadlineAt }: E<'drain'>) {
      const watched = new Set(a.ports);
      // A drain always follows the route change that took these ports out (see DRAIN_SETTLE_MS).
      const settledAt = Math.min(deadlineAt, d.now() + DRAIN_SETTLE_MS);
      for (;;) {
        const counts = await d.caddy.upstreamCounts();
        const inFlight = counts.filter((c) => c.port !== undefined && watched.has(c.port)).reduce((n, c) => n + c.numRequests, 0);
        const now = d.now();
        if (inFlight === 0 && now >= settledAt) return 'drained';
        if (now >= deadlineAt) return `drain deadline reached with ${inFlight} request${inFlight === 1 ? '' : 's'} in flight`;
        await sleep(Math.min(100, remaining(inFlight === 0 ? settledAt : deadlineAt, now)), signal);
      }
    },
    async stopRun({ action: a }: E<'stopRun'>) {
      if (a.runtime === 'docker') await d.docker.stop(container(a), cfg.stopTimeoutSec);
      else await d.systemd.stop([unit(a)]);
      return `stopped ${a.instance} on :${a.port}`;
    },
    async removeRun({ action: a }: E<'removeRun'>) {
      if (a.runtime === 'docker') await d.docker.remove(container(a));
      else await d.systemd.remove([unit(a)]);
      return `removed ${a.instance} on :${a.port}`;
    },
    async removeRoute() {
      const c = await asRouteWriter(d.routeLock, key, () => d.caddy.removeRoute(key));
      return c.changed ? 'route removed' : 'no route';
    },
    async removeFiles() {
      await removeAppDir(dir);
      return 'release and env files removed';
    },
  };
  return effects;
}
