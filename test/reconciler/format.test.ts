/** The plan formatter (pure): JSON view, readable report, exit status. */
import { describe, expect, it } from 'vitest';
import type { AppPlan } from '../../src/reconciler/app-plan.ts';
import { formatAppPlan, formatHostPlan, formatOperation, hostPlanStatus, planView } from '../../src/reconciler/format.ts';
import type { DesiredModel, ObservedApp } from '../../src/reconciler/model.ts';
import { plan } from '../../src/reconciler/plan.ts';

const key = { team: 'acme', env: 2, app: 17 };
const ctx = { usedPorts: new Set<number>(), surgePorts: { from: 20000, to: 20009 }, availability: { systemd: true, docker: true, caddy: true } };
const desired: DesiredModel = {
  key,
  runtime: 'binary',
  model: 'instance',
  domain: 'shop.example.com',
  strategy: 'blue_green',
  version: 'v2',
  spec: 'B',
  healthPath: '/healthz',
  instances: [
    { id: 'blue', port: 3001, slot: 'blue', state: 'running', generation: 0 },
    { id: 'green', port: 3002, slot: 'green', state: 'running', generation: 0 },
  ],
};
const running: ObservedApp = {
  key,
  runs: [{ instance: 'blue', spec: 'A', port: 3001, version: 'v1', generation: 0, runtime: 'binary', name: 'u1', state: 'running', fileMissing: false }],
  route: { domain: 'shop.example.com', ports: [3001] },
};
const deploy: AppPlan = { key, mode: 'deploy', plan: plan(desired, running, { ...ctx, deploy: true }, 0), deploymentId: '4102', newRecord: true, observed: running };
const synced: AppPlan = { key: { ...key, app: 18 }, mode: 'heal', plan: plan(null, { key: { ...key, app: 18 }, runs: [], route: null }, { ...ctx, deploy: false }, 0), deploymentId: null, newRecord: false, observed: running };
const alone: AppPlan = { ...synced, key: { ...key, app: 19 }, mode: 'left_alone', plan: { ...synced.plan, notes: ['on the host without a document or a delete request: left alone'] } };

describe('plan formatter', () => {
  it('planView: the JSON clients get', () => {
    expect(planView(deploy.plan)).toEqual({
      kind: 'deploy',
      strategy: 'blue_green',
      fallback: null,
      drops_traffic: false,
      steps: ['fetch release v2', 'start green v2 on :3002', 'wait until green is healthy', 'route shop.example.com → :3002', 'drain :3001', 'stop blue v1 on :3001'],
      diff: deploy.plan.diff,
      notes: [],
    });
  });

  it('an app block: header, numbered steps with the commit point, the diff', () => {
    expect(formatAppPlan(deploy)).toBe(
      [
        '~ acme/2/17  deploy (blue/green), deployment 4102 (new, from the document), 6 steps',
        '    1. fetch release v2',
        '    2. start green v2 on :3002',
        '    3. wait until green is healthy',
        '    4. route shop.example.com → :3002  (commit point)',
        '    5. drain :3001',
        '    6. stop blue v1 on :3001',
        '    diff (observed → desired):',
        ...deploy.plan.diff.map((op) => `      ${formatOperation(op)}`),
        '',
      ].join('\n'),
    );
    expect(formatOperation({ op: 'add', path: '/instances/green/B@3002', value: { port: 3002 } })).toBe('+ /instances/green/B@3002 {"port":3002}');
    expect(formatOperation({ op: 'remove', path: '/route/upstreams/127.0.0.1:3001' })).toBe('- /route/upstreams/127.0.0.1:3001');
    expect(formatOperation({ op: 'replace', path: '/a~1b', value: 'x'.repeat(200) })).toMatch(/^~ \/a\/b "x{98}…$/);
  });

  it('in-sync apps are quiet unless asked; left-alone apps are flagged; colour only when asked', () => {
    expect(formatAppPlan(synced)).toBe('');
    expect(formatAppPlan(synced, { all: true })).toBe('= acme/2/18  in sync\n');
    expect(formatAppPlan(alone)).toBe('! acme/2/19  on the host without a document or a delete request: left alone\n');
    expect(formatAppPlan(deploy).includes('\u001b')).toBe(false);
    expect(formatAppPlan(deploy, { color: true }).startsWith('\u001b[36m~\u001b[0m')).toBe(true);
  });

  it('report and status: in sync 0, changes 1, errors 2', () => {
    const base = { documentErrors: [], unavailable: {} };
    expect(hostPlanStatus({ ...base, plans: [synced, alone] })).toBe('in_sync');
    expect(formatHostPlan({ ...base, plans: [synced, alone] })).toBe('! acme/2/19  on the host without a document or a delete request: left alone\n2 apps, 0 to change, 1 in sync, 1 left alone\n');
    expect(hostPlanStatus({ ...base, plans: [synced, deploy] })).toBe('changes');
    const broken = { plans: [synced], documentErrors: [{ path: '/s/desired/acme/2/20.yaml', error: 'YAML: bad' }], unavailable: { docker: 'E_DOCKER_UNAVAILABLE: no socket' } };
    expect(hostPlanStatus(broken)).toBe('error');
    expect(formatHostPlan(broken)).toBe(
      '✗ /s/desired/acme/2/20.yaml: YAML: bad (the last valid version, if any, is planned)\n✗ docker unavailable: E_DOCKER_UNAVAILABLE: no socket (nothing that depends on it is planned)\n1 app, 0 to change, 1 in sync, 1 document error\n',
    );
  });
});
