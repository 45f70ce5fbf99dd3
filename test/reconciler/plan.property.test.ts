/**
 * Safety rules of the planner, as properties over random desired and observed states:
 * - no run is started on a port another active run holds;
 * - the route never points at a run that was not waited healthy (or already routed);
 * - no routed run is stopped or removed (except by recreate, which declares the traffic drop);
 * - an instance the platform stopped is never started by healing;
 * - planning again after applying a plan yields no actions (convergence);
 * - a failed health check before the commit point leaves the old serving set serving.
 * The simulator (simulate.ts) throws on the first three.
 */
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import type { DesiredModel, ObservedApp, ObservedRun, PlanContext, Strategy } from '../../src/reconciler/model.ts';
import { plan } from '../../src/reconciler/plan.ts';
import { applyPlan, applyWithRollback, runName } from './simulate.ts';

const key = { team: 't', env: 1, app: 1 };
const ctxOf = (deploy: boolean): PlanContext => ({ usedPorts: new Set([20001]), surgePorts: { from: 20000, to: 20020 }, availability: { systemd: true, docker: true, caddy: true }, deploy });

const arbCase = fc
  .record({
    strategy: fc.constantFrom<Strategy>('blue_green', 'rolling', 'recreate'),
    model: fc.constantFrom('instance' as const, 'plain' as const),
    n: fc.integer({ min: 1, max: 3 }),
    states: fc.array(fc.constantFrom('running' as const, 'running' as const, 'stopped' as const), { minLength: 3, maxLength: 3 }),
    gens: fc.array(fc.integer({ min: 0, max: 2 }), { minLength: 3, maxLength: 3 }),
    runs: fc.array(
      fc.record({
        inst: fc.integer({ min: 0, max: 3 }),
        spec: fc.constantFrom('A', 'B', 'Z'),
        surge: fc.option(fc.integer({ min: 0, max: 4 }), { nil: undefined }),
        state: fc.constantFrom('running' as const, 'stopped' as const, 'failed' as const),
        fileMissing: fc.boolean(),
        gen: fc.integer({ min: 0, max: 2 }),
      }),
      { maxLength: 5 },
    ),
    routeKind: fc.constantFrom('none', 'active', 'some', 'otherDomain'),
    unhealthy: fc.boolean(),
  })
  .map((c) => {
    const bg = c.strategy === 'blue_green' && c.model === 'instance';
    const count = bg ? 2 : c.n;
    const ids = ['i0', 'i1', 'i2', 'ix'];
    const desired: DesiredModel = {
      key,
      runtime: 'binary',
      model: c.model,
      domain: 'a.example.com',
      strategy: c.strategy,
      version: 'vB',
      spec: 'B',
      healthPath: null,
      instances: ids.slice(0, count).map((id, i) => ({ id, port: 3000 + i, state: c.states[i] ?? 'running', generation: c.gens[i] ?? 0, ...(bg ? { slot: i === 0 ? 'blue' : 'green' } : {}) })),
    };
    const runs: ObservedRun[] = [];
    const activePorts = new Set<number>();
    for (const r of c.runs) {
      const instance = ids[r.inst] as string;
      if (runs.some((x) => x.name === runName(instance, r.spec))) continue;
      const port = r.surge === undefined ? 3000 + r.inst : 20000 + r.surge;
      const active = r.state === 'running';
      if (active && activePorts.has(port)) continue;
      if (active) activePorts.add(port);
      runs.push({ instance, spec: r.spec, port, version: `v${r.spec}`, generation: r.gen, runtime: 'binary', name: runName(instance, r.spec), state: r.state, fileMissing: r.fileMissing && active });
    }
    const ports = [...activePorts].sort((a, b) => a - b);
    const route =
      c.routeKind === 'none' ? null : { domain: c.routeKind === 'otherDomain' ? 'old.example.com' : 'a.example.com', ports: c.routeKind === 'some' ? ports.slice(0, 1) : ports };
    const observed: ObservedApp = { key, runs, route };
    return { desired, observed, unhealthy: c.unhealthy };
  });

describe('plan properties', () => {
  it('keeps the safety rules and converges in one application', () => {
    fc.assert(
      fc.property(arbCase, fc.boolean(), ({ desired, observed }, deploy) => {
        const p = plan(desired, observed, ctxOf(deploy), 0);
        const after = applyPlan(p, desired, observed);
        const again = plan(desired, after, ctxOf(false), 0);
        expect(again.actions.map((a) => a.name)).toEqual([]);
      }),
      { numRuns: 2000 },
    );
  });

  it('never starts an instance the platform stopped, when healing', () => {
    fc.assert(
      fc.property(arbCase, ({ desired, observed }) => {
        const p = plan(desired, observed, ctxOf(false), 0);
        const stopped = new Set(desired.instances.filter((i) => i.state === 'stopped').map((i) => i.id));
        for (const a of p.actions) {
          if (a.action.type === 'createRun' || a.action.type === 'startRun' || a.action.type === 'restartRun') expect(stopped.has(a.action.instance)).toBe(false);
        }
      }),
      { numRuns: 1000 },
    );
  });

  it('a new revision that never gets healthy leaves the app served as before', () => {
    fc.assert(
      fc.property(arbCase, ({ desired, observed }) => {
        const p = plan(desired, observed, ctxOf(true), 0);
        if (p.dropsTraffic) return;
        const unhealthy = new Set(desired.instances.map((i) => runName(i.id, desired.spec)));
        const { state, outcome } = applyWithRollback(p, desired, observed, { unhealthy });
        if (outcome !== 'rolled_back') return;
        const servedBefore = observed.route ? observed.route.ports.filter((port) => observed.runs.some((r) => r.port === port && r.state === 'running')) : [];
        const servedAfter = state.route ? state.route.ports.filter((port) => state.runs.some((r) => r.port === port && r.state === 'running')) : [];
        expect(servedAfter.sort()).toEqual(servedBefore.sort());
        expect(state.runs.some((r) => r.spec === desired.spec && r.state === 'running' && !observed.runs.some((o) => o.name === r.name))).toBe(false);
      }),
      { numRuns: 1000 },
    );
  });

  it('never plans anything for an app whose document is invalid (the caller passes the last valid one) or deletes from a blind spot', () => {
    fc.assert(
      fc.property(arbCase, fc.constantFrom('systemd', 'docker', 'caddy'), ({ observed }, down) => {
        const ctx = { ...ctxOf(true), availability: { systemd: down !== 'systemd', docker: down !== 'docker', caddy: down !== 'caddy' } };
        const p = plan(null, { ...observed, runs: [] }, ctx, 0);
        expect(p.actions.filter((a) => a.action.type === 'removeRun')).toEqual([]);
        if (down === 'caddy') expect(p.actions).toEqual([]);
      }),
      { numRuns: 300 },
    );
  });
});
