/**
 * The deployment status document (API.md "Deployment status"): what both status endpoints answer,
 * what the SSE endpoint streams and what callbacks POST. TypeBox, so the records, the API response
 * schemas and the OpenAPI document share one definition. It never holds a secret.
 *
 * Beyond API.md's fields: `action` (deploy|start|stop|restart|delete: what the request asked for) and
 * `superseded_by` (the deployment that superseded this one, else null). `kind`, `strategy` and
 * `target_version` are null only for a delete of an app this host has no document for.
 * `started_at` is when the operator accepted the request (never null); `finished_at` is set when the
 * status becomes terminal (succeeded, failed, rolled_back, superseded), after which nothing changes.
 */
import { Type, type Static } from 'typebox';
import { STRATEGIES } from '../desired/schema.ts';

export const DEPLOYMENT_STATUSES = ['pending', 'in_progress', 'succeeded', 'failed', 'rolled_back', 'superseded'] as const;
export type DeploymentState = (typeof DEPLOYMENT_STATUSES)[number];
/** States a deployment never leaves. */
export const TERMINAL_STATUSES: ReadonlySet<DeploymentState> = new Set(['succeeded', 'failed', 'rolled_back', 'superseded']);
export function isTerminal(s: DeploymentState): boolean {
  return TERMINAL_STATUSES.has(s);
}

export const ACTIONS = ['deploy', 'start', 'stop', 'restart', 'delete'] as const;
export type DeploymentAction = (typeof ACTIONS)[number];

export const STEP_STATUSES = ['pending', 'running', 'succeeded', 'failed', 'skipped', 'rolled_back'] as const;
export const INSTANCE_STATES = ['starting', 'running', 'stopped', 'failed', 'removed'] as const;

const Timestamp = Type.String({ format: 'date-time' });
const NullableTimestamp = Type.Union([Timestamp, Type.Null()]);

export const StepSchema = Type.Object(
  {
    name: Type.String(),
    status: Type.Enum([...STEP_STATUSES]),
    started_at: NullableTimestamp,
    finished_at: NullableTimestamp,
    detail: Type.Union([Type.String(), Type.Null()]),
  },
  { additionalProperties: false },
);
export type Step = Static<typeof StepSchema>;

export const InstanceStatusSchema = Type.Object(
  {
    instance_id: Type.String(),
    slot: Type.Optional(Type.String()),
    port: Type.Integer({ minimum: 1, maximum: 65535 }),
    version: Type.String(),
    state: Type.Enum([...INSTANCE_STATES]),
    healthy: Type.Boolean(),
  },
  { additionalProperties: false },
);
export type InstanceStatus = Static<typeof InstanceStatusSchema>;

export const TrafficSchema = Type.Object(
  {
    instance_id: Type.String(),
    slot: Type.Optional(Type.String()),
    port: Type.Integer({ minimum: 1, maximum: 65535 }),
    weight: Type.Integer({ minimum: 0, maximum: 100 }),
  },
  { additionalProperties: false },
);
export type Traffic = Static<typeof TrafficSchema>;

export const DeploymentErrorSchema = Type.Object({ code: Type.String(), message: Type.String() }, { additionalProperties: false });

export const DeploymentStatusSchema = Type.Object(
  {
    deployment_id: Type.String(),
    action: Type.Enum([...ACTIONS]),
    app_id: Type.Integer(),
    environment_id: Type.Integer(),
    team_id: Type.String(),
    kind: Type.Union([Type.Enum(['binary', 'docker']), Type.Null()]),
    strategy: Type.Union([Type.Enum([...STRATEGIES]), Type.Null()]),
    target_version: Type.Union([Type.String(), Type.Null()]),
    status: Type.Enum([...DEPLOYMENT_STATUSES]),
    phase: Type.String(),
    error: Type.Union([DeploymentErrorSchema, Type.Null()]),
    started_at: Timestamp,
    updated_at: Timestamp,
    finished_at: NullableTimestamp,
    superseded_by: Type.Union([Type.String(), Type.Null()]),
    steps: Type.Array(StepSchema),
    instances: Type.Array(InstanceStatusSchema),
    traffic: Type.Array(TrafficSchema),
  },
  { additionalProperties: false },
);
export type DeploymentStatus = Static<typeof DeploymentStatusSchema>;
