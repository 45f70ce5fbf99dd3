/**
 * The planner's cost per app must not grow with the size of the host: a pass plans every app against
 * one snapshot, so per-app work proportional to the host (e.g. copying the host-wide set of used ports)
 * makes a pass quadratic in the number of apps (bench/reconcile-scaling.ts: at 1,000 apps such a copy
 * was most of the planning time). The planner may only ask `usedPorts` about single ports.
 */
import { describe, expect, it } from 'vitest';
import type { DesiredModel, ObservedApp, ObservedRun, PlanContext } from '../../src/reconciler/model.ts';
import { plan } from '../../src/reconciler/plan.ts';

/** A set of many used ports that refuses to be iterated (copied, spread, listed). */
class AskOnlySet extends Set<number> {
  override [Symbol.iterator](): SetIterator<number> {
    throw new Error('usedPorts was iterated');
  }
  override values(): SetIterator<number> {
    throw new Error('usedPorts was iterated');
  }
  override keys(): SetIterator<number> {
    throw new Error('usedPorts was iterated');
  }
  override entries(): SetIterator<[number, number]> {
    throw new Error('usedPorts was iterated');
  }
  override forEach(): void {
    throw new Error('usedPorts was iterated');
  }
}

function usedPorts(): AskOnlySet {
  const s = new AskOnlySet();
  // Every port of a busy host, including the start of the surge range.
  for (let p = 10_000; p < 11_000; p++) Set.prototype.add.call(s, p);
  for (let p = 20_000; p < 20_005; p++) Set.prototype.add.call(s, p);
  return s;
}

const key = { team: 't1', env: 1, app: 7 };
const ctx = (deploy: boolean): PlanContext => ({
  usedPorts: usedPorts(),
  surgePorts: { from: 20_000, to: 20_099 },
  availability: { systemd: true, docker: true, caddy: true },
  deploy,
});

function desired(strategy: DesiredModel['strategy'], spec: string): DesiredModel {
  return {
    key,
    runtime: 'binary',
    model: 'plain',
    domain: 'app.example.com',
    strategy,
    version: spec === 'B' ? 'v2' : 'v1',
    spec,
    healthPath: '/healthz',
    instances: [
      { id: 'w1', port: 10_001, state: 'running', generation: 0 },
      { id: 'w2', port: 10_002, state: 'running', generation: 0 },
    ],
  };
}

const run = (instance: string, spec: string, port: number, over: Partial<ObservedRun> = {}): ObservedRun => ({
  instance,
  spec,
  port,
  version: spec === 'B' ? 'v2' : 'v1',
  generation: 0,
  runtime: 'binary',
  name: `${instance}-${spec}`,
  state: 'running',
  fileMissing: false,
  ...over,
});

const observed = (runs: ObservedRun[], ports: number[]): ObservedApp => ({ key, runs, route: { domain: 'app.example.com', ports } });

describe('plan: cost independent of the host size', () => {
  it('a rolling deploy picks surge ports by asking usedPorts, never copying it', () => {
    const p = plan(desired('rolling', 'B'), observed([run('w1', 'A', 10_001), run('w2', 'A', 10_002)], [10_001, 10_002]), ctx(true), 0);
    const starts = p.actions.filter((a) => a.action.type === 'createRun').map((a) => (a.action as { port: number }).port);
    // The first free ports of the surge range: 20000-20004 are in use on the host.
    expect(starts).toEqual([20_005, 20_006]);
  });

  it('blue/green (plain model) and heals do not iterate it either', () => {
    const bg = plan(desired('blue_green', 'B'), observed([run('w1', 'A', 10_001), run('w2', 'A', 10_002)], [10_001, 10_002]), ctx(true), 0);
    expect(bg.actions.map((a) => a.action.type)).toContain('setRoute');
    const noop = plan(desired('rolling', 'A'), observed([run('w1', 'A', 10_001), run('w2', 'A', 10_002)], [10_001, 10_002]), ctx(false), 0);
    expect(noop.actions).toEqual([]);
    // A crashed instance is started again and routed.
    const heal = plan(desired('rolling', 'A'), observed([run('w1', 'A', 10_001, { state: 'failed' }), run('w2', 'A', 10_002)], [10_002]), ctx(false), 0);
    expect(heal.actions.map((a) => a.action.type)).toEqual(['startRun', 'waitHealthy', 'setRoute']);
  });
});
