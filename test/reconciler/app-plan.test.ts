/** planApp: how one pass decides between a deployment, a heal and leaving an app alone (pure). */
import { describe, expect, it } from 'vitest';
import { sampleDoc } from '../desired/fixtures.ts';
import { fillPorts, planApp, type AppFacts } from '../../src/reconciler/app-plan.ts';
import { specHash } from '../../src/reconciler/desired-model.ts';
import type { ObservedApp, ObservedRun } from '../../src/reconciler/model.ts';

const doc = sampleDoc({ strategy: 'rolling', model: 'plain', instances: { web: { port: 3001, state: 'running', generation: 0 } } });
const key = { team: 'acme', env: 2, app: 17 };
const ctx = { usedPorts: new Set<number>(), surgePorts: { from: 20000, to: 20009 }, availability: { systemd: true, docker: true, caddy: true } };
const run = (spec: string, over: Partial<ObservedRun> = {}): ObservedRun => ({ instance: 'web', spec, port: 3001, version: '1.0.0', generation: 0, runtime: 'binary', name: `u-${spec}`, state: 'running', fileMissing: false, ...over });
const inSync: ObservedApp = { key, runs: [run(specHash(doc))], route: { domain: doc.spec.domain, ports: [3001] } };
const facts = (over: Partial<AppFacts>): AppFacts => ({ key, doc, observed: inSync, latest: { id: '42', action: 'deploy', status: 'succeeded' }, docRecorded: true, pruned: false, ...over });

describe('planApp', () => {
  it('in sync and recorded: a heal with nothing to do', () => {
    const a = planApp(facts({}), ctx, 0);
    expect([a.mode, a.plan.kind, a.deploymentId, a.newRecord]).toEqual(['heal', 'noop', null, false]);
  });

  it('a pending deployment record: the plan belongs to it', () => {
    const a = planApp(facts({ observed: { key, runs: [], route: null }, latest: { id: '43', action: 'deploy', status: 'pending' } }), ctx, 0);
    expect([a.mode, a.plan.kind, a.deploymentId, a.newRecord]).toEqual(['deploy', 'deploy', '43', false]);
  });

  it('a document naming an unknown deployment (written by hand): a new deployment of that id', () => {
    const a = planApp(facts({ observed: { key, runs: [run('old')], route: { domain: doc.spec.domain, ports: [3001] } }, docRecorded: false }), ctx, 0);
    expect([a.mode, a.plan.kind, a.deploymentId, a.newRecord]).toEqual(['deploy', 'deploy', '42', true]);
  });

  it('the same edit with a known deployment id only heals: a new revision waits for a deployment', () => {
    const a = planApp(facts({ observed: { key, runs: [run('old')], route: { domain: doc.spec.domain, ports: [3001] } } }), ctx, 0);
    expect([a.mode, a.plan.actions]).toEqual(['heal', []]);
    expect(a.plan.notes.join()).toMatch(/waits for a deployment/);
  });

  it('no document: left alone unless a delete was asked for or the file was deleted while watched', () => {
    const none = planApp(facts({ doc: undefined, docRecorded: false }), ctx, 0);
    expect([none.mode, none.plan.actions, none.plan.notes]).toEqual(['left_alone', [], ['on the host without a document or a delete request: left alone']]);
    const pruned = planApp(facts({ doc: undefined, docRecorded: false, pruned: true }), ctx, 0);
    expect([pruned.mode, pruned.plan.kind]).toEqual(['heal', 'delete']);
    const asked = planApp(facts({ doc: undefined, docRecorded: false, latest: { id: 'op-1', action: 'delete', status: 'pending' } }), ctx, 0);
    expect([asked.mode, asked.plan.kind, asked.deploymentId]).toEqual(['deploy', 'delete', 'op-1']);
    const leftovers = planApp(facts({ doc: undefined, docRecorded: false, latest: { id: 'op-1', action: 'delete', status: 'succeeded' } }), ctx, 0);
    expect([leftovers.mode, leftovers.plan.kind]).toEqual(['heal', 'delete']);
  });

  it('fills in ports the observation lost from the document', () => {
    const lost = { key, runs: [run(specHash(doc), { port: 0 }), run('x', { instance: 'gone', port: 0 })], route: null };
    expect(fillPorts(lost, doc).runs.map((r) => [r.instance, r.port])).toEqual([['web', 3001]]);
  });
});
