/**
 * Pure tests (no real components): app states from their inputs, the state-change log lines, the
 * metrics hooks and the exposition's validity (checked by a strict parser that is itself tested to
 * reject broken text).
 */
import { describe, expect, it } from 'vitest';
import { AppStateTracker, deriveAppState, type AppStateInput } from '../../src/app-state.ts';
import { countHostCall } from '../../src/core/hostcalls.ts';
import { createTelemetry, type TelemetrySources } from '../../src/metrics.ts';
import type { Plan } from '../../src/reconciler/model.ts';
import type { DeploymentStatus } from '../../src/records/status.ts';
import { parsePrometheusText, sumOf, valueOf } from './prom-text.ts';

const bg = (states: ('running' | 'stopped')[] = ['running', 'running']): AppStateInput['desired'] => ({
  model: 'instance',
  strategy: 'blue_green',
  instances: states.map((state) => ({ state })),
});
const obs = (runs: [string, string][], route = true, blind = false): AppStateInput['observed'] => ({
  blind,
  route,
  runs: runs.map(([instance, state]) => ({ instance, state })),
});
const input = (over: Partial<AppStateInput>): AppStateInput => ({ desired: bg(), documentError: false, latest: { status: 'succeeded', action: 'deploy' }, observed: obs([['b', 'running']]), ...over });

describe('deriveAppState', () => {
  it.each<[string, Partial<AppStateInput>, string]>([
    ['blue/green: one live slot serves', {}, 'running'],
    ['deployment pending', { latest: { status: 'pending', action: 'deploy' } }, 'deploying'],
    ['delete in progress', { latest: { status: 'in_progress', action: 'delete' } }, 'removing'],
    ['latest deploy rolled back', { latest: { status: 'rolled_back', action: 'deploy' } }, 'failed'],
    ['latest deploy failed', { latest: { status: 'failed', action: 'deploy' } }, 'failed'],
    ['a failed stop is not a failed app', { latest: { status: 'failed', action: 'stop' } }, 'running'],
    ['route missing', { observed: obs([['b', 'running']], false) }, 'degraded'],
    ['nothing runs', { observed: obs([['b', 'failed']]) }, 'degraded'],
    ['rolling: one of two instances down', { desired: { model: 'plain', strategy: 'rolling', instances: [{ state: 'running' }, { state: 'running' }] }, observed: obs([['a', 'running'], ['b', 'stopped']]) }, 'degraded'],
    ['rolling: both up', { desired: { model: 'plain', strategy: 'rolling', instances: [{ state: 'running' }, { state: 'running' }] }, observed: obs([['a', 'running'], ['b', 'running']]) }, 'running'],
    ['all stopped', { desired: bg(['stopped', 'stopped']), observed: obs([['b', 'stopped']]) }, 'stopped'],
    ['stopped but still running', { desired: bg(['stopped', 'stopped']) }, 'degraded'],
    ['broken file', { documentError: true }, 'invalid'],
    ['component blind', { observed: obs([], false, true) }, 'unknown'],
    ['not observed yet', { observed: null }, 'unknown'],
    ['no document, footprint on the host', { desired: null, latest: null }, 'orphaned'],
    ['no document, nothing on the host', { desired: null, latest: null, observed: obs([], false) }, 'removed'],
  ])('%s', (_name, over, state) => {
    expect(deriveAppState(input(over))).toBe(state);
  });
});

describe('AppStateTracker', () => {
  it('logs one {app, state, was} line per change and none when nothing changed', () => {
    const lines: object[] = [];
    const t = new AppStateTracker({ info: (o) => lines.push(o) });
    const key = { team: 'acme', env: 1, app: 2 };
    t.update(key, input({ latest: { status: 'pending', action: 'deploy' } }));
    t.update(key, input({ latest: { status: 'in_progress', action: 'deploy' } }));
    t.update(key, input({}));
    t.update(key, input({}));
    t.update(key, input({ desired: null, latest: null, observed: obs([], false) }));
    t.update(key, input({ desired: null, latest: null, observed: obs([], false) }));
    expect(lines).toEqual([
      { app: 'acme/1/2', state: 'deploying', was: null },
      { app: 'acme/1/2', state: 'running', was: 'deploying' },
      { app: 'acme/1/2', state: 'removed', was: 'running' },
    ]);
    expect(t.stateOf(key)).toBeUndefined();
    expect(Object.values(t.counts()).every((n) => n === 0)).toBe(true);
  });
});

function status(over: Partial<DeploymentStatus>): DeploymentStatus {
  return {
    deployment_id: '7',
    action: 'deploy',
    app_id: 2,
    environment_id: 1,
    team_id: 'acme',
    kind: 'binary',
    strategy: 'blue_green',
    target_version: 'v1',
    status: 'pending',
    phase: 'pending',
    error: null,
    started_at: '2025-01-01T00:00:00.000Z',
    updated_at: '2025-01-01T00:00:00.000Z',
    finished_at: null,
    steps: [],
    instances: [],
    traffic: [],
    superseded_by: null,
    ...over,
  };
}

describe('telemetry', () => {
  let latest = { status: 'succeeded', action: 'deploy' };
  const sources: TelemetrySources = {
    desired: () => bg(),
    documentError: () => false,
    documentErrors: () => 1,
    latest: () => latest,
    observed: () => obs([['b', 'running']]),
    inFlight: () => 0,
  };

  it('counters and histograms move with the hooks; the exposition parses', async () => {
    const lines: Record<string, unknown>[] = [];
    const t = createTelemetry(sources, { info: (o) => lines.push(o as Record<string, unknown>) });
    const before = parsePrometheusText((await t.render()).body);
    expect(valueOf(before, 'crate_deployments_total', { result: 'succeeded' })).toBe(0);

    const change = (over: Partial<DeploymentStatus>, revision: number): void => {
      const s = status(over);
      latest = { status: s.status, action: s.action };
      t.onDeploymentChange({ status: s, revision });
    };
    change({}, 1);
    change({ status: 'in_progress' }, 2);
    change({ status: 'in_progress', phase: 'x' }, 3);
    change({ status: 'succeeded', finished_at: '2025-01-01T00:00:04.000Z' }, 4);
    t.onStep({ deploymentId: '7', app: 'acme/1/2', action: 'waitHealthy', status: 'succeeded', ms: 1500 });
    t.onPass('acme/1/2', { kind: 'done' }, 12);
    t.onPass('acme/1/2', { kind: 'retry', error: { code: 'E', message: 'm' } }, 30);
    t.onHeal('acme/1/2', { kind: 'heal' } as Plan, 'healed');
    t.onCallback({ type: 'retry', eventId: 'e', url: 'http://x', attempts: 1 });
    t.onCallback({ type: 'delivered', eventId: 'e', url: 'http://x', attempts: 2 });
    countHostCall('caddy');

    const m = (await t.render()).body;
    const f = parsePrometheusText(m);
    expect(valueOf(f, 'crate_deployments_total', { action: 'deploy', strategy: 'blue_green', result: 'succeeded' })).toBe(1);
    expect(valueOf(f, 'crate_deployment_duration_seconds_sum', { result: 'succeeded' })).toBe(4);
    expect(valueOf(f, 'crate_deployment_step_duration_seconds_count', { step: 'waitHealthy', result: 'succeeded' })).toBe(1);
    expect(valueOf(f, 'crate_deployment_step_duration_seconds_bucket', { step: 'waitHealthy', le: '1' })).toBe(0);
    expect(valueOf(f, 'crate_deployment_step_duration_seconds_bucket', { step: 'waitHealthy', le: '2.5' })).toBe(1);
    expect(valueOf(f, 'crate_reconcile_duration_seconds_count', { outcome: 'done' })).toBe(1);
    expect(valueOf(f, 'crate_reconcile_duration_seconds_count', { outcome: 'retry' })).toBe(1);
    expect(valueOf(f, 'crate_heal_events_total', { kind: 'heal', outcome: 'healed' })).toBe(1);
    expect(valueOf(f, 'crate_callback_deliveries_total', { result: 'retry' })).toBe(1);
    expect(valueOf(f, 'crate_callback_deliveries_total', { result: 'delivered' })).toBe(1);
    expect(valueOf(f, 'crate_host_calls_total', { component: 'caddy' })).toBeGreaterThanOrEqual(1);
    expect(valueOf(f, 'crate_apps', { state: 'running' })).toBe(1);
    expect(sumOf(f, 'crate_apps')).toBe(1);
    expect(valueOf(f, 'crate_document_errors')).toBe(1);
    expect(f.get('crate_deployments_total')?.type).toBe('counter');
    expect(f.get('process_cpu_user_seconds_total')?.type).toBe('counter');

    // One line per deployment status change (the repeated in_progress is not a change).
    expect(lines.filter((l) => 'deployment' in l).map((l) => [l.state, l.was])).toEqual([
      ['pending', null],
      ['in_progress', 'pending'],
      ['succeeded', 'in_progress'],
    ]);
    expect(lines).toContainEqual({ app: 'acme/1/2', state: 'running', was: 'deploying' });
  });

  it('labels carry no app identity', async () => {
    const t = createTelemetry(sources, { info: () => undefined });
    t.onDeploymentChange({ status: status({ team_id: 'secret-team-name', status: 'failed', finished_at: '2025-01-01T00:00:01.000Z' }), revision: 1 });
    t.onPass('secret-team-name/1/2', { kind: 'done' }, 1);
    expect((await t.render()).body).not.toContain('secret-team-name');
  });
});

describe('the Prometheus text parser', () => {
  const good = '# HELP a_total x\n# TYPE a_total counter\na_total{k="v\\"q"} 3\n';
  it('accepts valid text and unescapes label values', () => {
    expect(valueOf(parsePrometheusText(good), 'a_total', { k: 'v"q' })).toBe(3);
  });
  it.each([
    ['no trailing newline', good.trimEnd()],
    ['sample without TYPE', 'b 1\n'],
    ['bad value', '# TYPE a gauge\na one\n'],
    ['unquoted label', '# TYPE a gauge\na{k=v} 1\n'],
    ['bad escape', '# TYPE a gauge\na{k="\\x"} 1\n'],
    ['duplicate series', '# TYPE a gauge\na 1\na 2\n'],
    ['negative counter', '# TYPE a counter\na -1\n'],
    ['split family', '# TYPE a gauge\na 1\n# TYPE b gauge\nb 1\n# TYPE a gauge\n'],
    ['bucket +Inf != count', '# TYPE h histogram\nh_bucket{le="1"} 1\nh_bucket{le="+Inf"} 2\nh_sum 1\nh_count 3\n'],
    ['buckets not cumulative', '# TYPE h histogram\nh_bucket{le="1"} 2\nh_bucket{le="+Inf"} 1\nh_sum 1\nh_count 1\n'],
  ])('rejects %s', (_n, text) => {
    expect(() => parsePrometheusText(text)).toThrow();
  });
});
