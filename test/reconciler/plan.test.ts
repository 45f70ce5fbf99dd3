import { describe, expect, it } from 'vitest';
import type { DesiredModel, ObservedApp, ObservedRun, PlanContext } from '../../src/reconciler/model.ts';
import { plan } from '../../src/reconciler/plan.ts';
import { applyPlan, runName } from './simulate.ts';

const key = { team: 't1', env: 2, app: 3 };
const ctx = (over: Partial<PlanContext> = {}): PlanContext => ({
  usedPorts: new Set(),
  surgePorts: { from: 20000, to: 20009 },
  availability: { systemd: true, docker: true, caddy: true },
  deploy: true,
  ...over,
});

function desired(over: Partial<DesiredModel> = {}): DesiredModel {
  return {
    key,
    runtime: 'binary',
    model: 'instance',
    domain: 'app.example.com',
    strategy: 'blue_green',
    version: 'v2',
    spec: 'B',
    healthPath: '/healthz',
    instances: [
      { id: 'i-blue', port: 3001, slot: 'blue', state: 'running', generation: 0 },
      { id: 'i-green', port: 3002, slot: 'green', state: 'running', generation: 0 },
    ],
    ...over,
  };
}

function run(instance: string, spec: string, port: number, over: Partial<ObservedRun> = {}): ObservedRun {
  return { instance, spec, port, version: spec === 'B' ? 'v2' : 'v1', generation: 0, runtime: 'binary', name: runName(instance, spec), state: 'running', fileMissing: false, ...over };
}

const names = (p: ReturnType<typeof plan>): string[] => p.actions.map((a) => a.action.type);

describe('plan: blue/green (instance model)', () => {
  it('first deploy starts the first slot, probes it and routes it', () => {
    const p = plan(desired(), { key, runs: [], route: null }, ctx(), 0);
    expect(p.kind).toBe('deploy');
    expect(names(p)).toEqual(['fetchRelease', 'createRun', 'waitHealthy', 'setRoute']);
    expect(p.actions[1]?.action).toMatchObject({ instance: 'i-blue', port: 3001 });
    expect(p.actions[3]?.commit).toBe(true);
  });

  it('deploys to the idle slot, switches once, drains and stops the old slot', () => {
    const obs: ObservedApp = { key, runs: [run('i-blue', 'A', 3001)], route: { domain: 'app.example.com', ports: [3001] } };
    const p = plan(desired(), obs, ctx(), 0);
    expect(p.strategy).toBe('blue_green');
    expect(p.dropsTraffic).toBe(false);
    expect(p.actions.map((a) => a.name)).toEqual([
      'fetch release v2',
      'start i-green v2 on :3002',
      'wait until i-green is healthy',
      'route app.example.com → :3002',
      'drain :3001',
      'stop i-blue v1 on :3001',
    ]);
    expect(p.actions.filter((a) => a.action.type === 'setRoute')).toHaveLength(1);
    const after = applyPlan(p, desired(), obs);
    expect(plan(desired(), after, ctx({ deploy: false }), 0).actions).toEqual([]);
  });

  it('picks the idle slot from what is live (green live → blue)', () => {
    const obs: ObservedApp = { key, runs: [run('i-green', 'A', 3002), run('i-blue', 'Z', 3001, { state: 'stopped' })], route: { domain: 'app.example.com', ports: [3002] } };
    const p = plan(desired(), obs, ctx(), 0);
    expect(p.actions.find((a) => a.action.type === 'createRun')?.action).toMatchObject({ instance: 'i-blue', port: 3001 });
    // The blue slot's older stopped revision is cleaned up once blue runs the new one.
    expect(p.actions.at(-1)?.action).toMatchObject({ type: 'removeRun', instance: 'i-blue', spec: 'Z' });
  });

  it('falls back to recreate when the other slot was stopped by the platform, and says so', () => {
    const d = desired({ instances: [{ id: 'i-blue', port: 3001, slot: 'blue', state: 'running', generation: 0 }, { id: 'i-green', port: 3002, slot: 'green', state: 'stopped', generation: 0 }] });
    const obs: ObservedApp = { key, runs: [run('i-blue', 'A', 3001)], route: { domain: 'app.example.com', ports: [3001] } };
    const p = plan(d, obs, ctx(), 0);
    expect(p.fallback).toMatchObject({ from: 'blue_green', to: 'recreate' });
    expect(p.dropsTraffic).toBe(true);
  });
});

describe('plan: rolling', () => {
  const d = desired({
    strategy: 'rolling',
    model: 'plain',
    instances: ['a', 'b', 'c'].map((id, n) => ({ id, port: 4000 + n, state: 'running' as const, generation: 0 })),
  });
  const obs: ObservedApp = { key, runs: ['a', 'b', 'c'].map((id, n) => run(id, 'A', 4000 + n)), route: { domain: 'app.example.com', ports: [4000, 4001, 4002] } };

  it('replaces one instance at a time on surge ports, never below the serving count', () => {
    const p = plan(d, obs, ctx({ usedPorts: new Set([20000]) }), 0);
    expect(p.strategy).toBe('rolling');
    const creates = p.actions.filter((a) => a.action.type === 'createRun').map((a) => (a.action as { port: number }).port);
    expect(creates).toEqual([20001, 20002, 20003]);
    const routes = p.actions.filter((a) => a.action.type === 'setRoute').map((a) => (a.action as { ports: number[] }).ports);
    expect(routes).toEqual([
      [4001, 4002, 20001],
      [4002, 20001, 20002],
      [20001, 20002, 20003],
    ]);
    const after = applyPlan(p, d, obs);
    expect(after.runs.map((r) => r.name).sort()).toEqual(['a/B', 'b/B', 'c/B']);
    expect(plan(d, after, ctx({ deploy: false }), 0).actions).toEqual([]);
  });

  it('the next rollout moves back to the instances own ports', () => {
    const after = applyPlan(plan(d, obs, ctx(), 0), d, obs);
    const d3 = { ...d, spec: 'C', version: 'v3' };
    const p = plan(d3, after, ctx(), 0);
    expect(p.actions.filter((a) => a.action.type === 'createRun').map((a) => (a.action as { port: number }).port)).toEqual([4000, 4001, 4002]);
  });

  it('falls back to recreate when the surge range is exhausted', () => {
    const p = plan(d, obs, ctx({ surgePorts: { from: 20000, to: 20001 }, usedPorts: new Set([20000, 20001]) }), 0);
    expect(p.fallback).toMatchObject({ from: 'rolling', to: 'recreate' });
    expect(p.strategy).toBe('recreate');
    expect(p.dropsTraffic).toBe(true);
  });
});

describe('plan: recreate', () => {
  it('stops all, starts new on the given ports, probes, routes, and marks the traffic drop', () => {
    const d = desired({ strategy: 'recreate', model: 'plain', instances: [{ id: 'a', port: 4000, state: 'running', generation: 0 }] });
    const obs: ObservedApp = { key, runs: [run('a', 'A', 4000)], route: { domain: 'app.example.com', ports: [4000] } };
    const p = plan(d, obs, ctx(), 0);
    expect(names(p)).toEqual(['fetchRelease', 'stopRun', 'createRun', 'waitHealthy', 'removeRun']);
    expect(p.dropsTraffic).toBe(true);
    expect(p.notes.join()).toMatch(/recreate/);
    expect(p.actions[1]?.undo.map((u) => u.type)).toEqual(['startRun', 'waitHealthy']);
    // The status shows step names: the stop of a routed run says that traffic drops there.
    expect(p.actions[1]?.name).toBe('stop a v1 on :4000 (traffic drops until the new version serves)');
  });
});

describe('plan: healing', () => {
  const d = desired({ strategy: 'rolling', model: 'plain', instances: [{ id: 'a', port: 4000, state: 'running', generation: 0 }, { id: 'b', port: 4001, state: 'stopped', generation: 0 }] });
  const routed = { domain: 'app.example.com', ports: [4000] };

  it('does nothing when in sync', () => {
    const p = plan(d, { key, runs: [run('a', 'B', 4000), run('b', 'B', 4001, { state: 'stopped' })], route: routed }, ctx({ deploy: false }), 0);
    expect(p.kind).toBe('noop');
    expect(p.diff).toEqual([]);
  });

  it('restarts a killed process and waits for it', () => {
    const p = plan(d, { key, runs: [run('a', 'B', 4000, { state: 'failed' })], route: routed }, ctx({ deploy: false }), 0);
    expect(p.kind).toBe('heal');
    expect(names(p)).toEqual(['startRun', 'waitHealthy']);
  });

  it('re-creates a run whose unit file was removed, and a vanished run', () => {
    const p1 = plan(d, { key, runs: [run('a', 'B', 4000, { fileMissing: true })], route: routed }, ctx({ deploy: false }), 0);
    expect(names(p1)).toEqual(['fetchRelease', 'createRun', 'waitHealthy']);
    const p2 = plan(d, { key, runs: [], route: routed }, ctx({ deploy: false }), 0);
    expect(names(p2)).toEqual(['fetchRelease', 'createRun', 'waitHealthy']);
  });

  it('puts back a deleted or edited route', () => {
    const p = plan(d, { key, runs: [run('a', 'B', 4000)], route: null }, ctx({ deploy: false }), 0);
    expect(names(p)).toEqual(['waitHealthy', 'setRoute']);
    const p2 = plan(d, { key, runs: [run('a', 'B', 4000)], route: { domain: 'app.example.com', ports: [4000, 9999] } }, ctx({ deploy: false }), 0);
    // :4000 already serves through the route, so only the stray upstream goes.
    expect(names(p2)).toEqual(['setRoute']);
  });

  it('rewrites a route edited by hand even when its upstream ports are right (an extra host, a foreign upstream)', () => {
    const edited = { domain: 'app.example.com', ports: [4000], drift: ['host evil.example.com', 'upstream 192.0.2.1:80'] };
    const p = plan(d, { key, runs: [run('a', 'B', 4000), run('b', 'B', 4001, { state: 'stopped' })], route: edited }, ctx({ deploy: false }), 0);
    expect(p.kind).toBe('heal');
    expect(p.actions.map((a) => a.action)).toEqual([{ type: 'setRoute', domain: 'app.example.com', ports: [4000] }]);
    expect(p.diff).toContainEqual({ op: 'remove', path: '/route/drift' });
    // A deployment's route switch rewrites it too, and a delete removes it as it is.
    expect(plan(null, { key, runs: [], route: edited }, ctx(), 0).actions.map((a) => a.action.type)).toEqual(['removeRoute', 'removeFiles']);
  });

  it('never starts an instance the platform stopped; stops it if it runs, after taking it out of the route', () => {
    const p = plan(d, { key, runs: [run('a', 'B', 4000), run('b', 'B', 4001)], route: { domain: 'app.example.com', ports: [4000, 4001] } }, ctx({ deploy: false }), 0);
    expect(p.actions.map((a) => a.name)).toEqual(['route app.example.com → :4000', 'drain :4001', 'stop b v2 on :4001']);
  });

  it('restarts on a bumped restart generation', () => {
    const d2 = { ...d, instances: [{ id: 'a', port: 4000, state: 'running' as const, generation: 3 }] };
    const p = plan(d2, { key, runs: [run('a', 'B', 4000, { generation: 2 })], route: routed }, ctx({ deploy: false }), 0);
    expect(p.actions[0]?.action).toEqual({ type: 'restartRun', instance: 'a', spec: 'B', port: 4000, runtime: 'binary', generation: 3 });
  });

  it('does not roll a new revision out by healing', () => {
    const p = plan(d, { key, runs: [run('a', 'A', 4000)], route: routed }, ctx({ deploy: false }), 0);
    expect(p.actions).toEqual([]);
    expect(p.notes.join()).toMatch(/waits for a deployment/);
  });

  it('plans nothing while a component it needs is unavailable', () => {
    const p = plan(d, { key, runs: [], route: null }, ctx({ availability: { systemd: false, docker: true, caddy: true } }), 0);
    expect(p.actions).toEqual([]);
    expect(p.notes[0]).toMatch(/systemd is unavailable/);
    const del = plan(null, { key, runs: [], route: routed }, ctx({ availability: { systemd: true, docker: false, caddy: true } }), 0);
    expect(del.actions).toEqual([]);
  });
});

describe('plan: delete', () => {
  it('removes the route first, drains, removes every run and the files', () => {
    const obs: ObservedApp = { key, runs: [run('a', 'B', 4000), run('b', 'A', 4001, { state: 'stopped' })], route: { domain: 'app.example.com', ports: [4000] } };
    const p = plan(null, obs, ctx(), 0);
    expect(p.kind).toBe('delete');
    expect(names(p)).toEqual(['removeRoute', 'drain', 'removeRun', 'removeRun', 'removeFiles']);
    expect(applyPlan(p, null, obs)).toEqual({ key, runs: [], route: null });
  });
});

describe('plan: healing after a rollback', () => {
  it('starts the stopped earlier revision again instead of rolling the failed one out', () => {
    const d = desired(); // wants spec B (the revision that failed)
    const obs: ObservedApp = { key, runs: [run('i-blue', 'A', 3001, { state: 'failed' })], route: { domain: 'app.example.com', ports: [3001] } };
    const p = plan(d, obs, ctx({ deploy: false }), 0);
    expect(p.actions.map((a) => a.action.type)).toEqual(['startRun', 'waitHealthy']);
    expect(p.actions[0]?.action).toMatchObject({ instance: 'i-blue', spec: 'A' });
  });
});
