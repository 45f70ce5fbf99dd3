/**
 * Planning for the whole host from one observation, without acting: what the next pass would do for
 * every app with a document, a deployment in flight or a footprint on the host. Used by
 * `Reconciler.planAll` (a running operator) and by `planOffline` (the `crate-operator diff` command,
 * which reads the state dir and the host without starting an operator and without writing anything).
 */
import { existsSync } from 'node:fs';
import type { OperatorConfig } from '../config.ts';
import { CrateError } from '../core/errors.ts';
import { appKeyString, parseAppKey, type AppKey } from '../core/identity.ts';
import { docKey, type DesiredApp } from '../desired/document.ts';
import { DesiredStore, type DocError } from '../desired/store.ts';
import { createCaddyObserver } from '../observers/caddy.ts';
import { createDockerObserver } from '../observers/docker.ts';
import { createSystemdObserver } from '../observers/systemd.ts';
import { openRecordsReader } from '../records/records.ts';
import { planApp, type AppFacts, type AppPlan } from './app-plan.ts';
import type { PlanContext } from './model.ts';
import { observeHost, type HostSnapshot } from './observe.ts';

/** What planning needs from the deployment records (a running operator's Records or a read-only view). */
export interface RecordsView {
  latestForApp(key: AppKey): { status: { deployment_id: string; action: string; status: string } } | undefined;
  getRecord(id: string): unknown;
  active(): { key: AppKey }[];
}

/** The facts of one app (see AppFacts), read from the document, the snapshot and the records. */
export function appFacts(key: AppKey, doc: DesiredApp | undefined, snap: HostSnapshot, records: RecordsView, pruned: ReadonlySet<string>): AppFacts {
  const k = appKeyString(key);
  const latest = records.latestForApp(key);
  return {
    key,
    doc,
    observed: snap.apps.get(k) ?? { key, runs: [], route: null },
    latest: latest ? { id: latest.status.deployment_id, action: latest.status.action, status: latest.status.status } : undefined,
    docRecorded: doc ? records.getRecord(doc.deployment.id) !== undefined : false,
    pruned: pruned.has(k),
  };
}

/** Plan every app of the host (documents, deployments in flight, apps observed), sorted by key. */
export function planHost(snap: HostSnapshot, docs: readonly DesiredApp[], records: RecordsView, pruned: ReadonlySet<string>, ctx: Omit<PlanContext, 'deploy'>, now: number): AppPlan[] {
  const byKey = new Map(docs.map((d) => [appKeyString(docKey(d)), d]));
  const keys = new Set([...byKey.keys(), ...snap.apps.keys(), ...records.active().map((r) => appKeyString(r.key))]);
  const out: AppPlan[] = [];
  for (const k of [...keys].sort()) {
    const key = parseAppKey(k);
    if (!key) continue;
    out.push(planApp(appFacts(key, byKey.get(k), snap, records, pruned), ctx, now));
  }
  return out;
}

/** The result of an offline plan of the host. */
export interface HostPlan {
  plans: AppPlan[];
  /** Documents that could not be read or are invalid (the last valid version, if any, was planned). */
  documentErrors: DocError[];
  /** Components that did not answer (code: message); plans touching them are empty. */
  unavailable: HostSnapshot['unavailable'];
}

/**
 * Plan the host from a state dir and the configured components, as a pass of an operator started on
 * that state dir would, without starting one and without writing anything (documents are read
 * read-only, the records database is opened read-only or treated as empty when there is none).
 * Apps whose document was deleted while no operator ran are planned for removal, as the operator
 * would at its next start. Throws E_CONFIG when the state dir does not exist.
 */
export async function planOffline(config: OperatorConfig, opts: { systemdEnv?: Readonly<Record<string, string | undefined>>; now?: () => number } = {}): Promise<HostPlan> {
  const now = opts.now ?? Date.now;
  // A mistyped state dir would otherwise plan "nothing desired" and look in sync.
  if (!existsSync(config.stateDir)) throw new CrateError('E_CONFIG', `state dir ${config.stateDir} does not exist`);
  const store = await DesiredStore.open(config.stateDir, { readOnly: true });
  const records = openRecordsReader(config.stateDir);
  const sdOpts = { scope: config.systemdScope, ...(opts.systemdEnv ? { env: opts.systemdEnv } : {}) };
  const systemd = createSystemdObserver(sdOpts);
  const docker = createDockerObserver(config.dockerSocket);
  const caddy = createCaddyObserver(config.caddyAdmin, config.caddyServer);
  try {
    const snap = await observeHost({ systemd: () => systemd.observe(), docker: () => docker.observe(), caddy: () => caddy.observe() }, now);
    const view: RecordsView = records ?? { latestForApp: () => undefined, getRecord: () => undefined, active: () => [] };
    const plans = planHost(snap, store.list(), view, new Set(store.removedWhileClosed().map(appKeyString)), { usedPorts: snap.usedPorts, surgePorts: config.surgePorts, availability: snap.availability }, now());
    return { plans, documentErrors: [...store.errors().values()], unavailable: snap.unavailable };
  } finally {
    records?.close();
    await docker.close();
    await caddy.close();
  }
}
