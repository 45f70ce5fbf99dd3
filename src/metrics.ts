/**
 * Operator telemetry: Prometheus metrics (prom-client, served at `GET /metrics`) and the one log line
 * per state change. `createTelemetry` returns the hooks the composition root (operator.ts) hands to
 * the reconciler, the deployment runner, the callback sender and the records.
 *
 * Metrics (every label has a small, fixed set of values; no app identity, URL or secret is a label):
 * - `crate_deployments_total{action,strategy,result}`: deployments that reached a terminal status;
 * - `crate_deployment_duration_seconds{action,strategy,result}`: accepted → terminal;
 * - `crate_deployment_step_duration_seconds{step,result}`: one observation per finished step, by
 *   action kind (fetchRelease, createRun, waitHealthy, setRoute, drain, ...);
 * - `crate_deployments_in_flight`: pending or in progress;
 * - `crate_reconcile_duration_seconds{outcome}`: one reconcile of one app (done|retry|requeue|terminal);
 * - `crate_host_calls_total{component}`: calls made to systemctl, Docker and Caddy (src/core/hostcalls.ts);
 * - `crate_heal_events_total{kind,outcome}`: drift heals (kind heal|delete, outcome healed|failed);
 * - `crate_callback_deliveries_total{result}`: callback attempts (delivered|retry|failed);
 * - `crate_apps{state}`: apps by state (src/app-state.ts);
 * - `crate_document_errors`: desired-state files that do not parse or validate;
 * plus prom-client's default process and Node.js metrics.
 *
 * Log lines: `{app, state, was}` when an app's state changes (AppStateTracker) and
 * `{app, deployment, state, was}` when a deployment's status changes. Neither holds a secret.
 */
import { collectDefaultMetrics, Counter, Gauge, Histogram, Registry } from 'prom-client';
import { APP_STATES, AppStateTracker, type AppStateInput, type StateLogger } from './app-state.ts';
import { hostCallCounts, type HostComponent } from './core/hostcalls.ts';
import { appKeyString, parseAppKey, type AppKey } from './core/identity.ts';
import type { DeliveryEvent } from './drivers/callbacks.ts';
import type { StepEvent } from './machines/runner.ts';
import type { Outcome } from './reconciler/loop.ts';
import type { Plan } from './reconciler/model.ts';
import type { DesiredStore } from './desired/store.ts';
import type { DeploymentChange, Records } from './records/records.ts';
import { isTerminal } from './records/status.ts';

/** What the telemetry reads to derive app states (satisfied by the store, records and reconciler). */
export interface TelemetrySources {
  /** The document in force for an app, or undefined. */
  desired(key: AppKey): AppStateInput['desired'] | undefined;
  /** True when the app's file on disk is broken. */
  documentError(key: AppKey): boolean;
  /** Number of broken files under state/desired. */
  documentErrors(): number;
  latest(key: AppKey): AppStateInput['latest'] | undefined;
  /** The last observation of the app, or undefined before the first one. */
  observed(key: AppKey): AppStateInput['observed'] | undefined;
  /** Deployments pending or in progress. */
  inFlight(): number;
}

export interface Telemetry {
  readonly registry: Registry;
  readonly apps: AppStateTracker;
  /** Reconciler `onPass`: one reconcile of one app settled. */
  onPass(key: string, outcome: Outcome, ms: number): void;
  /** Reconciler `onHeal`. */
  onHeal(key: string, plan: Plan, outcome: 'healed' | 'failed'): void;
  /** Deployment runner `onStep`. */
  onStep(e: StepEvent): void;
  /** Callback sender `onEvent`. */
  onCallback(e: DeliveryEvent): void;
  /** Records `onChange`. */
  onDeploymentChange(c: DeploymentChange): void;
  /** Re-derive one app's state now (logs a change). */
  refresh(key: AppKey): void;
  /** The exposition: Prometheus text format. */
  render(): Promise<{ contentType: string; body: string }>;
}

const COMPONENTS: HostComponent[] = ['systemctl', 'docker', 'caddy'];

export function createTelemetry(sources: TelemetrySources, log: StateLogger): Telemetry {
  const registry = new Registry();
  collectDefaultMetrics({ register: registry });
  const apps = new AppStateTracker(log);

  const deployments = new Counter({
    name: 'crate_deployments_total',
    help: 'Deployments (and start/stop/restart/delete operations) that reached a terminal status',
    labelNames: ['action', 'strategy', 'result'] as const,
    registers: [registry],
  });
  const deploymentSeconds = new Histogram({
    name: 'crate_deployment_duration_seconds',
    help: 'Time from acceptance to terminal status',
    labelNames: ['action', 'strategy', 'result'] as const,
    buckets: [0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 900],
    registers: [registry],
  });
  const stepSeconds = new Histogram({
    name: 'crate_deployment_step_duration_seconds',
    help: 'Duration of finished deployment steps, by action kind',
    labelNames: ['step', 'result'] as const,
    buckets: [0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300],
    registers: [registry],
  });
  new Gauge({
    name: 'crate_deployments_in_flight',
    help: 'Deployments pending or in progress',
    registers: [registry],
    collect() {
      this.set(sources.inFlight());
    },
  });
  const reconcileSeconds = new Histogram({
    name: 'crate_reconcile_duration_seconds',
    help: 'Duration of one reconcile of one app, by outcome',
    labelNames: ['outcome'] as const,
    buckets: [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10],
    registers: [registry],
  });
  new Counter({
    name: 'crate_host_calls_total',
    help: 'Calls made to the host components (systemctl runs, Docker Engine API and Caddy admin API requests)',
    labelNames: ['component'] as const,
    registers: [registry],
    collect() {
      // The counters live in core/hostcalls.ts (process-wide, monotonic): mirror them.
      const c = hostCallCounts();
      this.reset();
      for (const k of COMPONENTS) this.inc({ component: k }, c[k]);
    },
  });
  const heals = new Counter({
    name: 'crate_heal_events_total',
    help: 'Drift heals carried out by the reconciler',
    labelNames: ['kind', 'outcome'] as const,
    registers: [registry],
  });
  const callbacks = new Counter({
    name: 'crate_callback_deliveries_total',
    help: 'Callback delivery attempts by result (retry: failed attempt, will retry; failed: given up)',
    labelNames: ['result'] as const,
    registers: [registry],
  });
  for (const r of ['delivered', 'retry', 'failed']) callbacks.inc({ result: r }, 0);
  new Gauge({
    name: 'crate_apps',
    help: 'Apps by state',
    labelNames: ['state'] as const,
    registers: [registry],
    collect() {
      const counts = apps.counts();
      for (const s of APP_STATES) this.set({ state: s }, counts[s]);
    },
  });
  new Gauge({
    name: 'crate_document_errors',
    help: 'Desired-state files that do not parse or validate',
    registers: [registry],
    collect() {
      this.set(sources.documentErrors());
    },
  });

  const refresh = (key: AppKey): void => {
    apps.update(key, {
      desired: sources.desired(key) ?? null,
      documentError: sources.documentError(key),
      latest: sources.latest(key) ?? null,
      observed: sources.observed(key) ?? null,
    });
  };

  /** Last status seen per deployment not yet terminal (so a transition is counted once). */
  const lastStatus = new Map<string, string>();

  return {
    registry,
    apps,
    onPass(key, outcome, ms) {
      reconcileSeconds.observe({ outcome: outcome.kind }, ms / 1000);
      const k = parseAppKey(key);
      if (k) refresh(k);
    },
    onHeal(_key, plan, outcome) {
      heals.inc({ kind: plan.kind, outcome });
    },
    onStep(e) {
      stepSeconds.observe({ step: e.action, result: e.status }, e.ms / 1000);
    },
    onCallback(e) {
      callbacks.inc({ result: e.type });
    },
    onDeploymentChange({ status: s }) {
      const was = lastStatus.get(s.deployment_id) ?? null;
      if (was === s.status) return;
      const key = { team: s.team_id, env: s.environment_id, app: s.app_id };
      log.info({ app: appKeyString(key), deployment: s.deployment_id, action: s.action, state: s.status, was }, 'deployment state changed');
      if (isTerminal(s.status)) {
        lastStatus.delete(s.deployment_id);
        const labels = { action: s.action, strategy: s.strategy ?? 'none', result: s.status };
        deployments.inc(labels);
        const ms = Date.parse(s.finished_at ?? s.updated_at) - Date.parse(s.started_at);
        if (Number.isFinite(ms) && ms >= 0) deploymentSeconds.observe(labels, ms / 1000);
        // The app's new state shows in the next reconcile pass (the runner triggers one): the last
        // observation predates the deployment's effects, so deriving it now would report a false state.
      } else {
        lastStatus.set(s.deployment_id, s.status);
        refresh(key);
      }
    },
    refresh,
    async render() {
      return { contentType: registry.contentType, body: await registry.metrics() };
    },
  };
}

/** The shape of `Reconciler.observedView` this module reads. */
interface ObservedView {
  unavailable: Partial<Record<'systemd' | 'docker' | 'caddy', string>>;
  runs: { instance_id: string; state: string }[];
  route: unknown;
}

function isObservedView(v: unknown): v is ObservedView {
  const o = v as Partial<ObservedView> | undefined;
  return typeof o === 'object' && o !== null && Array.isArray(o.runs) && typeof o.unavailable === 'object';
}

/** TelemetrySources over the operator's store, records and `Reconciler.observedView`. */
export function telemetrySources(store: DesiredStore, records: Records, observedView: (key: AppKey) => unknown): TelemetrySources {
  return {
    desired(key) {
      const d = store.get(key);
      return d ? { model: d.spec.model, strategy: d.spec.strategy, instances: Object.values(d.spec.instances) } : undefined;
    },
    documentError: (key) => store.errorFor(key) !== undefined,
    documentErrors: () => store.errors().size,
    latest(key) {
      const r = records.latestForApp(key);
      return r ? { status: r.status.status, action: r.status.action } : undefined;
    },
    observed(key) {
      const v = observedView(key);
      if (!isObservedView(v)) return undefined;
      const runtime = store.get(key)?.spec.runtime;
      const needs = ['caddy', runtime === 'docker' ? 'docker' : 'systemd'] as const;
      return {
        blind: needs.some((c) => v.unavailable[c] !== undefined),
        runs: v.runs.map((r) => ({ instance: r.instance_id, state: r.state })),
        route: v.route !== null && v.route !== undefined,
      };
    },
    inFlight: () => records.active().length,
  };
}
