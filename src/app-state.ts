/**
 * The state of an app as one word, for people: the `apps` table, the `crate_apps{state}` gauge and
 * the one log line per change (`{app, state, was}`). Derived, never stored: a pure function of the
 * document in force, the latest deployment record and the last observation of the host.
 *
 * States (APP_STATES):
 * - `deploying` / `removing`: a deployment (or delete) is pending or in progress;
 * - `running`: every instance that should serve has a running run, and the route exists;
 * - `stopped`: every instance is meant to be stopped and none runs;
 * - `degraded`: it should serve but fewer runs than desired are up, or the route is missing (the
 *   reconciler heals it);
 * - `failed`: the latest deployment failed or was rolled back (the previous version may still serve);
 * - `invalid`: the document on disk does not parse or validate (the last valid one stays in force);
 * - `orphaned`: units/containers/routes of this app exist but there is no document (left alone);
 * - `unknown`: not observed yet, or a component the app needs did not answer.
 * An app with no document and nothing on the host is `removed` (reported once, then forgotten).
 */
import { appKeyString, type AppKey } from './core/identity.ts';

export const APP_STATES = ['deploying', 'removing', 'running', 'stopped', 'degraded', 'failed', 'invalid', 'orphaned', 'unknown'] as const;
export type AppState = (typeof APP_STATES)[number];

/** What the state is derived from (plain data). */
export interface AppStateInput {
  /** The document in force, or null. */
  desired: {
    model: 'instance' | 'plain';
    strategy: 'blue_green' | 'rolling' | 'recreate';
    instances: { state: 'running' | 'stopped' }[];
  } | null;
  /** The file on disk is broken (a last valid version may still be in force). */
  documentError: boolean;
  /** The app's latest deployment record. */
  latest: { status: string; action: string } | null;
  /** The last observation, or null when the app has not been observed yet. */
  observed: {
    /** A component this app needs did not answer in that observation. */
    blind: boolean;
    runs: { instance: string; state: string }[];
    route: boolean;
  } | null;
}

/** The state of one app (pure). `removed` means: nothing desired, nothing on the host. */
export function deriveAppState(i: AppStateInput): AppState | 'removed' {
  if (i.latest && (i.latest.status === 'pending' || i.latest.status === 'in_progress')) {
    return i.latest.action === 'delete' ? 'removing' : 'deploying';
  }
  if (i.observed?.blind) return 'unknown';
  if (!i.desired) {
    if (i.documentError) return 'invalid';
    if (!i.observed) return 'removed';
    return i.observed.runs.length > 0 || i.observed.route ? 'orphaned' : 'removed';
  }
  if (i.documentError) return 'invalid';
  if (i.latest && i.latest.action === 'deploy' && (i.latest.status === 'failed' || i.latest.status === 'rolled_back')) return 'failed';
  if (!i.observed) return 'unknown';
  const wanted = i.desired.instances.filter((x) => x.state === 'running').length;
  // Blue/green in the instance model lists both slots as running; only the live one serves.
  const expected = i.desired.model === 'instance' && i.desired.strategy === 'blue_green' ? Math.min(1, wanted) : wanted;
  const up = new Set(i.observed.runs.filter((r) => r.state === 'running').map((r) => r.instance)).size;
  if (expected === 0) return up === 0 ? 'stopped' : 'degraded';
  return up >= expected && i.observed.route ? 'running' : 'degraded';
}

/** Where state-change lines go. */
export interface StateLogger {
  info(o: object, msg: string): void;
}

/**
 * Remembers each app's last state and logs one line when it changes: `{app, state, was}` (`was` is
 * null the first time an app is seen). Counts per state feed the `crate_apps` gauge.
 */
export class AppStateTracker {
  private readonly states = new Map<string, AppState>();

  constructor(private readonly log: StateLogger) {}

  /** Record the app's current state; logs when it differs from the last one. Returns the state. */
  update(key: AppKey, input: AppStateInput): AppState | 'removed' {
    const k = appKeyString(key);
    const state = deriveAppState(input);
    const was = this.states.get(k) ?? null;
    if (state === 'removed') {
      if (was !== null) {
        this.states.delete(k);
        this.log.info({ app: k, state, was }, 'app state changed');
      }
      return state;
    }
    if (state !== was) {
      this.states.set(k, state);
      this.log.info({ app: k, state, was }, 'app state changed');
    }
    return state;
  }

  /** The last state of one app (undefined when unknown or removed). */
  stateOf(key: AppKey): AppState | undefined {
    return this.states.get(appKeyString(key));
  }

  /** Number of apps in each state (every state present, zeros included). */
  counts(): Record<AppState, number> {
    const out = Object.fromEntries(APP_STATES.map((s) => [s, 0])) as Record<AppState, number>;
    for (const s of this.states.values()) out[s] += 1;
    return out;
  }
}
