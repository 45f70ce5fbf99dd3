/**
 * What one reconcile of one app would do, decided purely from facts: the document in force, the
 * app's observation, what the deployment records say, and whether the document was deleted while the
 * operator watched. The reconciler acts on the answer; the dry runs (`POST /v1/plan`, `?dry_run=true`,
 * `crate-operator diff`) only show it. One function, so what a dry run shows is what a pass does.
 *
 * How heal vs deployment is decided:
 * - a deployment record of the app is `pending`/`in_progress`, or the document names a deployment id
 *   the records do not know (a document written by hand) → `deploy`: the plan goes to a deployment
 *   machine (a new revision is rolled out by its strategy; the record tracks it);
 * - otherwise → `heal`: the plan only puts back what drifted (never rolls a new revision out) and is
 *   carried out directly;
 * - no document: the app is removed only after a delete request (the latest record is a `delete`) or
 *   when its file was deleted while the operator watched (`pruned`); else it is `left_alone` (never
 *   remove what cannot be accounted for: a lost or unreadable state dir must not wipe the host).
 */
import type { AppKey } from '../core/identity.ts';
import type { DesiredApp } from '../desired/document.ts';
import { toDesiredModel } from './desired-model.ts';
import type { ObservedApp, Plan, PlanContext } from './model.ts';
import { plan } from './plan.ts';

/** The facts about one app a reconcile decides from. Plain data. */
export interface AppFacts {
  key: AppKey;
  /** The document in force (the last valid version); undefined when the app is not desired. */
  doc: DesiredApp | undefined;
  /** The app in this pass's snapshot (empty when the host has nothing of it). */
  observed: ObservedApp;
  /** The app's latest deployment record, if any. */
  latest: { id: string; action: string; status: string } | undefined;
  /** Whether the document's `deployment.id` is already a deployment record. */
  docRecorded: boolean;
  /** The document was deleted while the operator watched (a GitOps prune). */
  pruned: boolean;
}

/**
 * - `deploy`: hand the plan to a deployment (record `deploymentId`, created first when `newRecord`);
 *   an empty plan just marks the deployment succeeded;
 * - `heal`: carry the plan out directly (empty: in sync);
 * - `left_alone`: no document and no delete: nothing is done, whatever the host holds.
 */
export type AppPlanMode = 'deploy' | 'heal' | 'left_alone';

export interface AppPlan {
  key: AppKey;
  mode: AppPlanMode;
  plan: Plan;
  /** For `deploy`: the deployment the plan belongs to, and whether its record does not exist yet. */
  deploymentId: string | null;
  newRecord: boolean;
  /** The observation the plan was made from (unknown ports filled in from the document). */
  observed: ObservedApp;
}

const ACTIVE = new Set(['pending', 'in_progress']);

/** Runs whose port could not be observed (unit file and description gone) take their instance's port. */
export function fillPorts(app: ObservedApp, doc: DesiredApp | undefined): ObservedApp {
  if (!app.runs.some((r) => r.port === 0)) return app;
  return { ...app, runs: app.runs.map((r) => (r.port === 0 ? { ...r, port: doc?.spec.instances[r.instance]?.port ?? 0 } : r)).filter((r) => r.port !== 0) };
}

/** Decide and plan one app (pure; `now` in epoch ms). */
export function planApp(f: AppFacts, ctx: Omit<PlanContext, 'deploy'>, now: number): AppPlan {
  const observed = fillPorts(f.observed, f.doc);
  const active = f.latest && ACTIVE.has(f.latest.status) ? f.latest : undefined;
  const newRecord = f.doc !== undefined && active === undefined && !f.docRecorded;
  const deploymentId = active?.id ?? (newRecord ? (f.doc?.deployment.id ?? null) : null);
  if (!f.doc) {
    const deleting = active?.action === 'delete' || f.latest?.action === 'delete' || f.pruned;
    if (!deleting) {
      const base = plan(null, observed, { ...ctx, deploy: false }, now);
      const onHost = observed.runs.length > 0 || observed.route !== null;
      const notes = onHost ? ['on the host without a document or a delete request: left alone'] : [];
      return { key: f.key, mode: 'left_alone', plan: { ...base, kind: 'noop', actions: [], diff: [], notes }, deploymentId: null, newRecord: false, observed };
    }
  }
  const deploy = deploymentId !== null;
  const p = plan(f.doc ? toDesiredModel(f.doc) : null, observed, { ...ctx, deploy }, now);
  return { key: f.key, mode: deploy ? 'deploy' : 'heal', plan: p, deploymentId, newRecord, observed };
}
