/**
 * The composition root: from a configuration to a running operator. Opens the desired-state store
 * and the records, builds the drivers and observers for the configured components, the reconciler
 * (loop, deployment runner, GitOps watcher), the callback sender and the HTTP API, and starts them.
 * `stop()` undoes it in reverse order; apps keep running and their state stays on disk.
 */
import { pino, type DestinationStream, type Logger } from 'pino';
import { buildApp } from './api/app.ts';
import type { OperatorConfig } from './config.ts';
import { appKeyString, parseAppKey, type AppKey } from './core/identity.ts';
import { DesiredStore } from './desired/store.ts';
import { createCallbackSender, recordsCallbackStore } from './drivers/callbacks.ts';
import { createCaddyDriver } from './drivers/caddy.ts';
import { createDockerDriver } from './drivers/docker.ts';
import { guardedAgent } from './drivers/net-policy.ts';
import { createSystemdDriver } from './drivers/systemd.ts';
import { checkBackends } from './host/reachability.ts';
import { createCaddyObserver } from './observers/caddy.ts';
import { createDockerObserver } from './observers/docker.ts';
import { createSystemdObserver } from './observers/systemd.ts';
import { createTelemetry, telemetrySources, type Telemetry } from './metrics.ts';
import { planView } from './reconciler/format.ts';
import { Reconciler } from './reconciler/reconciler.ts';
import { Records } from './records/records.ts';
import { startServer, type RunningServer } from './server.ts';

export interface OperatorOptions {
  /** Environment for systemctl (user scope needs XDG_RUNTIME_DIR/XDG_CONFIG_HOME). Default: process.env. */
  systemdEnv?: Readonly<Record<string, string | undefined>>;
  logger?: Logger;
  /** Listen on the configured address (default) or not at all (tests use `app.inject`). */
  listen?: boolean;
  /** Disable the GitOps watcher (tests that drive triggers themselves). */
  watch?: boolean;
}

export interface RunningOperator {
  config: OperatorConfig;
  store: DesiredStore;
  records: Records;
  reconciler: Reconciler;
  /** Metrics (`GET /metrics`) and app states. */
  telemetry: Telemetry;
  app: Awaited<ReturnType<typeof buildApp>>;
  server: RunningServer | undefined;
  stop(): Promise<void>;
}

/** Redact secrets from every log line (env values, passwords, tokens never reach the logs). */
export const REDACT_PATHS = ['req.headers.authorization', '*.password', '*.env', '*.env_vars', '*.token', '*.credentials', '*.registry_credentials'];

/**
 * The operator's logger: JSON lines (pino) on stdout, or pretty lines when stdout is a terminal and
 * CRATE_LOG_FORMAT is not `json`; level from CRATE_LOG_LEVEL (default info); REDACT_PATHS censored.
 * `destination` (tests) receives JSON lines.
 */
export function createLogger(destination?: DestinationStream): Logger {
  const pretty = !destination && process.stdout.isTTY && process.env.CRATE_LOG_FORMAT !== 'json';
  const options = {
    level: process.env.CRATE_LOG_LEVEL ?? 'info',
    redact: { paths: REDACT_PATHS, censor: '[redacted]' },
    ...(pretty ? { transport: { target: 'pino-pretty', options: { colorize: true, translateTime: 'SYS:HH:MM:ss.l', ignore: 'pid,hostname' } } } : {}),
  };
  return destination ? pino(options, destination) : pino(options);
}

export async function startOperator(config: OperatorConfig, opts: OperatorOptions = {}): Promise<RunningOperator> {
  const log = opts.logger ?? createLogger();
  const store = await DesiredStore.open(config.stateDir, { logger: log });
  const records = Records.open(config.stateDir, {
    onCorrupt: (e) => log.error({ file: e.file, moved_to: e.movedTo, reason: e.reason }, 'records.db is corrupt: set aside, starting with empty records (the documents are adopted again)'),
  });
  const closers: (() => Promise<void> | void)[] = [() => records.close()];
  // The reconciler is built below; until then no app has been observed.
  const view: { of?: (key: AppKey) => unknown } = {};
  const telemetry = createTelemetry(telemetrySources(store, records, (key) => view.of?.(key)), log);
  closers.push(records.onChange((c) => telemetry.onDeploymentChange(c)));
  try {
    const sdOpts = { scope: config.systemdScope, ...(opts.systemdEnv ? { env: opts.systemdEnv } : {}) };
    const systemd = createSystemdDriver({ ...sdOpts, appsDir: config.appsDir, stopTimeoutSec: config.stopTimeoutSec });
    const systemdObserver = createSystemdObserver(sdOpts);
    const docker = createDockerDriver({ socketPath: config.dockerSocket, volumesRoot: config.volumesRoot });
    const dockerObserver = createDockerObserver(config.dockerSocket);
    const caddy = createCaddyDriver({
      admin: config.caddyAdmin,
      server: config.caddyServer,
      serverSettings: { listen: config.caddyListen, gracePeriodMs: config.caddyGraceMs },
    });
    const caddyObserver = createCaddyObserver(config.caddyAdmin, config.caddyServer);
    closers.push(
      () => docker.close(),
      () => dockerObserver.close(),
      () => caddy.close(),
      () => caddyObserver.close(),
    );
    const dispatcher = guardedAgent({ allowPrivateNetworks: config.allowPrivateNetworks });
    closers.push(() => dispatcher.close());
    const callbacks = createCallbackSender({
      store: recordsCallbackStore(records),
      secret: config.callbackSecret,
      allowPrivateNetworks: config.allowPrivateNetworks,
      onEvent: (e) => {
        telemetry.onCallback(e);
        if (e.type === 'delivered') log.debug({ callback: e.eventId, attempts: e.attempts }, 'callback delivered');
        else log.warn({ callback: e.eventId, type: e.type, status: e.status, error: e.error }, 'callback not delivered');
      },
    });
    closers.push(() => callbacks.stop());

    const reconciler = new Reconciler({
      config,
      store,
      records,
      observers: { systemd: () => systemdObserver.observe(), docker: () => dockerObserver.observe(), caddy: () => caddyObserver.observe() },
      drivers: { config, systemd, docker, caddy, dispatcher, now: Date.now },
      callbacks,
      log,
      watch: opts.watch ?? true,
      onPass: (key, outcome, ms) => telemetry.onPass(key, outcome, ms),
      onHeal: (key, plan, outcome) => {
        telemetry.onHeal(key, plan, outcome);
        // Look again after a heal: the next pass observes its result (and the app's state shows it).
        const k = parseAppKey(key);
        if (outcome === 'healed' && k) reconciler.trigger(k);
      },
      onStep: (e) => telemetry.onStep(e),
    });
    view.of = (key) => reconciler.observedView(key);

    const app = await buildApp({
      config,
      checkBackends: () => checkBackends(config, opts.systemdEnv ? { env: opts.systemdEnv } : {}),
      logger: log,
      store,
      records,
      onDesiredChange: (key) => reconciler.trigger(key),
      moveDomain: async (key, oldDomain, newDomain) => {
        await caddy.moveDomain(key, oldDomain, newDomain);
      },
      asRouteWriter: (key, fn) => reconciler.asRouteWriter(key, fn),
      observed: (key) => {
        const v = reconciler.observedView(key);
        return v === undefined ? undefined : { ...(v as object), state: telemetry.apps.stateOf(key) ?? null };
      },
      metrics: () => telemetry.render(),
      planFor: async (key, doc) => planView(await reconciler.planFor(key, doc)),
      planDocument: async (doc) => {
        const a = await reconciler.planDocument(doc);
        return { mode: a.mode, deployment_id: a.deploymentId, plan: planView(a.plan) };
      },
    });
    closers.push(() => app.close());

    await callbacks.start();
    await reconciler.start();
    closers.push(() => reconciler.stop());
    const server = opts.listen === false ? undefined : await startServer(app, config, { handleSignals: false });
    log.info({ listen: server?.url, server_id: config.serverId, state_dir: config.stateDir, apps: store.list().map((d) => appKeyString({ team: d.metadata.team, env: d.metadata.environment, app: d.metadata.app })).length }, 'crate-operator started');
    let stopped = false;
    return {
      config,
      store,
      records,
      reconciler,
      telemetry,
      app,
      server,
      async stop() {
        if (stopped) return;
        stopped = true;
        await server?.close();
        for (const c of closers.reverse()) {
          try {
            await c();
          } catch (err) {
            log.warn({ err: String(err) }, 'error while stopping');
          }
        }
      },
    };
  } catch (err) {
    for (const c of closers.reverse()) await Promise.resolve(c()).catch(() => undefined);
    throw err;
  }
}
