/**
 * The reconciler's vocabulary: what the planner reads (a desired app, an observed app) and what it
 * returns (a Plan of named, ordered actions). Plain, JSON-serialisable data only.
 *
 * A *run* is one process of one instance: a systemd unit or a Docker container running one spec of the
 * app on one port. During a rolling or blue/green deploy an instance briefly has two runs (the old spec
 * and the new one); afterwards exactly one. Runs are named by (instance, spec), so two specs of one
 * instance never share a unit or container, and undoing a step is "start the old run again".
 */
import type { Operation } from 'fast-json-patch';
import type { AppKey } from '../core/identity.ts';

export type Runtime = 'binary' | 'docker';
export type Strategy = 'blue_green' | 'rolling' | 'recreate';
export type InstanceModel = 'instance' | 'plain';

/** One instance as the desired-state document wants it. */
export interface DesiredInstance {
  id: string;
  port: number;
  slot?: string | undefined;
  state: 'running' | 'stopped';
  generation: number;
}

/** The parts of a desired-state document the planner needs. Built from the document by `fromDocument`. */
export interface DesiredModel {
  key: AppKey;
  runtime: Runtime;
  model: InstanceModel;
  domain: string;
  strategy: Strategy;
  version: string;
  /** Short hash of everything every run of this revision shares (artifact, env, command, health path...). */
  spec: string;
  healthPath: string | null;
  /** Docker runtime: the image to pull. */
  image?: { name: string; tag: string } | undefined;
  /** Sorted by id. */
  instances: DesiredInstance[];
}

export type RunState = 'running' | 'starting' | 'stopped' | 'failed';

/** One unit or container the operator owns, as observed. */
export interface ObservedRun {
  instance: string;
  spec: string;
  port: number;
  version: string;
  generation: number;
  runtime: Runtime;
  /** Unit or container name. */
  name: string;
  state: RunState;
  /** A unit that is loaded but whose file was removed from disk (must be re-rendered). */
  fileMissing: boolean;
}

export interface ObservedRoute {
  domain: string;
  /** Upstream ports on 127.0.0.1, in route order. */
  ports: number[];
  /**
   * Hand edits the domain and ports do not show (an extra host, a foreign upstream, edited settings,
   * a duplicate), in words. Absent or empty: the route is exactly as the operator writes it. Any entry
   * makes the planner write the route again.
   */
  drift?: string[] | undefined;
}

/** Everything observed about one app in one snapshot. */
export interface ObservedApp {
  key: AppKey;
  runs: ObservedRun[];
  route: ObservedRoute | null;
}

/** Which components answered in this snapshot. The planner never plans removals from a blind spot. */
export interface Availability {
  systemd: boolean;
  docker: boolean;
  caddy: boolean;
}

/** Which run an action targets: its instance, revision and port, and where it lives. */
export interface RunRef {
  instance: string;
  spec: string;
  port: number;
  runtime: Runtime;
}

/** The named effects a plan is made of. Each is idempotent when executed. */
export type Action =
  | { type: 'fetchRelease'; version: string }
  | { type: 'pullImage'; image: string; tag: string }
  /** Render (unit + env file, or container) for the desired revision `spec` and start it. No-op when already so. */
  | { type: 'createRun'; instance: string; spec: string; port: number; slot?: string | undefined }
  /** Start an existing run as it is (used to heal and to undo a stop). */
  | ({ type: 'startRun' } & RunRef)
  | ({ type: 'restartRun'; generation: number } & RunRef)
  | ({ type: 'waitHealthy' } & RunRef)
  /** Make the app's route exactly this domain and these upstream ports (one Caddy change). */
  | { type: 'setRoute'; domain: string; ports: number[] }
  | { type: 'drain'; ports: number[] }
  | ({ type: 'stopRun' } & RunRef)
  /** Stop and delete the unit/container and its env file. */
  | ({ type: 'removeRun' } & RunRef)
  | { type: 'removeRoute' }
  /** Delete the app's releases and env files. */
  | { type: 'removeFiles' };

export type ActionType = Action['type'];

/** One step of a plan: an action, a readable name, and how to undo it if a later step fails. */
export interface PlannedAction {
  /** Stable within the plan: `s1`, `s2`, ... */
  id: string;
  /** Human-readable, e.g. "start web-1 v2 on :20001". */
  name: string;
  action: Action;
  /** Actions that restore the state before this step, run in order when rolling back. */
  undo: Action[];
  /**
   * The point of no return: once this step succeeded, a later failure does not roll back (the new
   * version is serving); remaining steps are retried by healing instead.
   */
  commit?: boolean;
}

export type PlanKind = 'noop' | 'heal' | 'deploy' | 'delete';

export interface Plan {
  key: AppKey;
  kind: PlanKind;
  /** The strategy actually used (may differ from the requested one, see `fallback`). */
  strategy: Strategy | null;
  fallback: { from: Strategy; to: Strategy; reason: string } | null;
  /** True when the plan stops every serving run before its replacement serves (recreate). */
  dropsTraffic: boolean;
  actions: PlannedAction[];
  /** JSON-Patch from the observed app to the desired app (keyed maps, not lists). */
  diff: Operation[];
  /** Why the plan is what it is, and anything it could not do (e.g. a component unavailable). */
  notes: string[];
}

/** Facts about the rest of the host the planner needs, all observed, never read by the planner itself. */
export interface PlanContext {
  /** Ports in use on 127.0.0.1 by any run of any app (for surge port choice). */
  usedPorts: ReadonlySet<number>;
  surgePorts: { from: number; to: number };
  availability: Availability;
  /**
   * Whether the desired revision should be rolled out as a deployment (a pending deployment record
   * exists, or a document edit introduced a new spec). When false, the planner only heals.
   */
  deploy: boolean;
}
