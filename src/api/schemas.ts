/**
 * One TypeBox schema per request body and response of the HTTP API (API.md), the single source of
 * request validation, handler types and the OpenAPI document. Field names, required and optional sets
 * are exactly API.md's; value rules come from src/desired/schema.ts.
 *
 * Decisions where API.md is silent:
 * - `team_id` is a string matching ID_PATTERN (`^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$`): it becomes part
 *   of unit names, container labels and file paths.
 * - Every object refuses unknown fields (`additionalProperties: false`) and every map refuses the keys
 *   `__proto__`, `constructor` and `prototype`.
 * - URLs are http(s) without user info. Env values may hold anything but NUL and unpaired surrogates
 *   (neither can reach a process environment).
 * - Extensions beyond API.md's codes: `?dry_run=true` answers 200 on every mutating endpoint, and a
 *   re-used `deployment_id` with a different body answers 409.
 */
import { Type, type Static } from 'typebox';
import { ID_PATTERN } from '../core/identity.ts';
import { DeploymentStatusSchema, InstanceStatusSchema } from '../records/status.ts';
import {
  Domain,
  DockerCommand,
  EnvVars,
  HealthPath,
  HttpUrl,
  Image,
  InstanceId,
  Int32Id,
  KeyedMap,
  Port,
  Printable,
  RegistryCredentials,
  StrategySchema,
  TeamId,
  Version,
  Volumes,
} from '../desired/schema.ts';

const obj = <P extends Parameters<typeof Type.Object>[0]>(props: P, opts: { description?: string; examples?: unknown[] } = {}) =>
  Type.Object(props, { additionalProperties: false, ...opts });

// ---- Common objects ----

export const InstancePort = obj({ instance_id: InstanceId, port: Port }, { description: 'One slot of the instance model.' });
export const Slots = KeyedMap(ID_PATTERN, InstancePort, {
  minProperties: 1,
  maxProperties: 64,
  description: 'Slots by name (e.g. blue, green). blue_green needs exactly two; rolling and recreate one or more.',
});
export const BinaryAppInstance = obj({ port: Port });
export const Instances = KeyedMap(ID_PATTERN, BinaryAppInstance, { minProperties: 1, maxProperties: 1024, description: 'Instances by id.' });
const HealthCheckPath = Type.Union([HealthPath, Type.Null()], { description: 'Optional HTTP path used for readiness checks (for example `/healthz`).' });

const example = {
  team_id: 'acme',
  environment_id: 2,
  app_id: 17,
  domain: 'shop.example.com',
  callback_url: 'https://platform.example.com/hooks/deployments',
  env_vars: { DATABASE_URL: 'postgres://db.internal/shop', GREETING: 'hello "world" $HOME 100%' },
};

// ---- Request bodies ----

export const InstanceBinaryDeployBody = obj(
  {
    app_id: Int32Id,
    asset_url: HttpUrl,
    callback_url: HttpUrl,
    deployment_id: Int32Id,
    deployment_strategy: StrategySchema,
    domain: Domain,
    env_vars: EnvVars,
    environment_id: Int32Id,
    slots: Slots,
    target_version: Version,
    team_id: TeamId,
    health_check_path: Type.Optional(HealthCheckPath),
  },
  {
    examples: [
      {
        ...example,
        deployment_id: 4101,
        deployment_strategy: 'blue_green',
        asset_url: 'https://assets.example.com/shop/shop-1.4.0.tar.gz',
        target_version: '1.4.0',
        slots: { blue: { instance_id: 'i-101', port: 3001 }, green: { instance_id: 'i-102', port: 3002 } },
        health_check_path: '/healthz',
      },
    ],
  },
);
export type InstanceBinaryDeployBody = Static<typeof InstanceBinaryDeployBody>;

const dockerOptional = {
  docker_command: Type.Optional(DockerCommand),
  health_check_path: Type.Optional(HealthCheckPath),
  registry_credentials: Type.Optional(RegistryCredentials),
  volumes: Type.Optional(Volumes),
};

export const InstanceDockerDeployBody = obj(
  {
    app_id: Int32Id,
    callback_url: HttpUrl,
    deployment_id: Int32Id,
    deployment_strategy: StrategySchema,
    domain: Domain,
    env_vars: EnvVars,
    environment_id: Int32Id,
    image: Image,
    image_tag: Version,
    slots: Slots,
    target_version: Version,
    team_id: TeamId,
    ...dockerOptional,
  },
  {
    examples: [
      {
        ...example,
        deployment_id: 4102,
        deployment_strategy: 'blue_green',
        image: 'registry.example.com/acme/shop',
        image_tag: '1.4.0',
        target_version: '1.4.0',
        slots: { blue: { instance_id: 'i-101', port: 3001 }, green: { instance_id: 'i-102', port: 3002 } },
        docker_command: ['./server', '--port', '$PORT'],
        registry_credentials: { username: 'deploy', password: 's3cret' },
        health_check_path: '/healthz',
      },
    ],
  },
);
export type InstanceDockerDeployBody = Static<typeof InstanceDockerDeployBody>;

export const BinaryDeployBody = obj(
  {
    app_id: Int32Id,
    asset_url: HttpUrl,
    callback_url: HttpUrl,
    deployment_id: Int32Id,
    deployment_strategy: StrategySchema,
    domain: Domain,
    env_vars: EnvVars,
    environment_id: Int32Id,
    instances: Instances,
    team_id: TeamId,
    health_check_path: Type.Optional(HealthCheckPath),
  },
  {
    examples: [
      {
        ...example,
        deployment_id: 4103,
        deployment_strategy: 'rolling',
        asset_url: 'https://assets.example.com/shop/shop-1.4.0.tar.gz',
        instances: { 'web-1': { port: 3101 }, 'web-2': { port: 3102 } },
      },
    ],
  },
);
export type BinaryDeployBody = Static<typeof BinaryDeployBody>;

export const DockerDeployBody = obj(
  {
    app_id: Int32Id,
    callback_url: HttpUrl,
    deployment_id: Int32Id,
    deployment_strategy: StrategySchema,
    domain: Domain,
    environment_id: Int32Id,
    image: Image,
    image_tag: Version,
    instances: Instances,
    team_id: TeamId,
    env_vars: Type.Optional(EnvVars),
    ...dockerOptional,
  },
  {
    examples: [
      {
        ...example,
        deployment_id: 4104,
        deployment_strategy: 'recreate',
        image: 'registry.example.com/acme/shop',
        image_tag: '1.4.0',
        instances: { 'web-1': { port: 3201 } },
        volumes: ['shop-data:/var/lib/shop'],
      },
    ],
  },
);
export type DockerDeployBody = Static<typeof DockerDeployBody>;

export const DeleteBody = obj(
  {
    app_id: Int32Id,
    callback_url: HttpUrl,
    domain: Domain,
    environment_id: Int32Id,
    instance_ids: Type.Array(InstanceId, { minItems: 1, maxItems: 1024 }),
    team_id: TeamId,
    deployment_id: Type.Optional(Type.Union([Int32Id, Type.Null()])),
  },
  { examples: [{ team_id: 'acme', environment_id: 2, app_id: 17, domain: 'shop.example.com', callback_url: example.callback_url, instance_ids: ['i-101', 'i-102'], deployment_id: null }] },
);
export type DeleteBody = Static<typeof DeleteBody>;

export const DomainUpdateBody = obj(
  {
    app_id: Int32Id,
    environment_id: Int32Id,
    new_domain: Domain,
    old_domain: Domain,
    server_id: Printable(253),
    team_id: TeamId,
  },
  { examples: [{ team_id: 'acme', environment_id: 2, app_id: 17, old_domain: 'shop.example.com', new_domain: 'store.example.com', server_id: 'host-7' }] },
);
export type DomainUpdateBody = Static<typeof DomainUpdateBody>;

export const InstanceActionBody = obj(
  {
    app_id: Int32Id,
    callback_url: HttpUrl,
    domain: Domain,
    environment_id: Int32Id,
    instance_id: InstanceId,
    team_id: TeamId,
  },
  { examples: [{ team_id: 'acme', environment_id: 2, app_id: 17, domain: 'shop.example.com', callback_url: example.callback_url, instance_id: 'web-1' }] },
);
export type InstanceActionBody = Static<typeof InstanceActionBody>;

// ---- Parameters ----

export const DryRunQuery = obj({
  dry_run: Type.Optional(Type.Boolean({ description: 'Answer 200 with the document that would be written and its diff; change nothing.' })),
});
export type DryRunQuery = Static<typeof DryRunQuery>;

export const StringIdParams = obj({ deployment_id: Type.String({ minLength: 1, maxLength: 128 }) });
export const Int32IdParams = obj({ deployment_id: Int32Id });

// ---- Responses ----

export const ErrorBody = obj(
  {
    error: obj({
      code: Type.String({ description: 'Stable machine-readable code, e.g. E_VALIDATION.' }),
      message: Type.String(),
      details: Type.Optional(Type.Unknown({ description: 'For E_VALIDATION: {fields: [{field, reason}]}, one entry per offending field.' })),
    }),
  },
  { examples: [{ error: { code: 'E_VALIDATION', message: 'invalid request', details: { fields: [{ field: 'slots.blue.port', reason: 'must be <= 65535' }] } } }] },
);
export type ErrorBody = Static<typeof ErrorBody>;

export const Accepted = obj(
  {
    deployment_id: Type.Union([Type.Integer(), Type.String()], { description: "The request's deployment_id, or an operator-generated string id." }),
    status: Type.Literal('accepted'),
    status_url: Type.String(),
  },
  { examples: [{ deployment_id: 4101, status: 'accepted', status_url: '/v1/app/instance/deploy/4101/status' }] },
);
export type Accepted = Static<typeof Accepted>;

const PatchOp = Type.Object({
  op: Type.String(),
  path: Type.String(),
  value: Type.Optional(Type.Unknown()),
  from: Type.Optional(Type.String()),
});

export const DryRunResult = obj(
  {
    dry_run: Type.Literal(true),
    document: Type.Union([Type.Unknown(), Type.Null()], { description: 'The document that would be in force (secrets redacted); null when it would be deleted.' }),
    diff: Type.Array(PatchOp, { description: 'JSON-Patch from the current document to that one (secrets redacted).' }),
    plan: Type.Optional(Type.Unknown({ description: "The reconciler's plan for that document." })),
    replay: Type.Optional(Type.Boolean({ description: 'True when the request repeats an accepted deployment (it would change nothing).' })),
  },
  { examples: [{ dry_run: true, document: null, diff: [{ op: 'replace', path: '/spec/version', value: '1.4.0' }] }] },
);
export type DryRunResult = Static<typeof DryRunResult>;

export const DomainUpdated = obj(
  {
    status: Type.Literal('updated'),
    team_id: Type.String(),
    environment_id: Type.Integer(),
    app_id: Type.Integer(),
    old_domain: Type.String(),
    domain: Type.String(),
  },
  { examples: [{ status: 'updated', team_id: 'acme', environment_id: 2, app_id: 17, old_domain: 'shop.example.com', domain: 'store.example.com' }] },
);

const statusExample = {
  deployment_id: '4101',
  action: 'deploy',
  app_id: 17,
  environment_id: 2,
  team_id: 'acme',
  kind: 'binary',
  strategy: 'blue_green',
  target_version: '1.4.0',
  status: 'in_progress',
  phase: 'waiting for green to become healthy',
  error: null,
  started_at: '2025-01-01T12:00:00.000Z',
  updated_at: '2025-01-01T12:00:03.000Z',
  finished_at: null,
  superseded_by: null,
  steps: [{ name: 'start i-102 1.4.0 on :3002', status: 'succeeded', started_at: '2025-01-01T12:00:00.100Z', finished_at: '2025-01-01T12:00:01.000Z', detail: null }],
  instances: [{ instance_id: 'i-101', slot: 'blue', port: 3001, version: '1.3.9', state: 'running', healthy: true }],
  traffic: [{ instance_id: 'i-101', slot: 'blue', port: 3001, weight: 100 }],
};

/** `GET /v1/app/instance/deploy/{id}/status`: the full status document, slots and traffic included. */
export const InstanceDeploymentStatus = Type.Object(DeploymentStatusSchema.properties, {
  additionalProperties: false,
  examples: [statusExample],
});

/** `GET /v1/app/deploy/{id}/status`: the status document without slots and traffic. */
export const AppDeploymentStatus = (() => {
  const { traffic: _t, instances: _i, ...rest } = DeploymentStatusSchema.properties;
  const { slot: _s, ...inst } = InstanceStatusSchema.properties;
  const { traffic: _x, ...ex } = statusExample;
  return Type.Object(
    { ...rest, instances: Type.Array(Type.Object(inst, { additionalProperties: false })) },
    { additionalProperties: false, examples: [{ ...ex, instances: ex.instances.map(({ slot: _y, ...i }) => i) }] },
  );
})();

const DocError = obj({ path: Type.String(), error: Type.String(), at: Type.String() });

export const AppSummary = obj({
  team_id: Type.String(),
  environment_id: Type.Integer(),
  app_id: Type.Integer(),
  desired: Type.Union([Type.Unknown(), Type.Null()], { description: 'The document in force, secrets redacted.' }),
  document_error: Type.Union([DocError, Type.Null()], { description: 'Why the file on disk is not in force (the last valid version stays in force).' }),
  observed: Type.Union([Type.Unknown(), Type.Null()], { description: 'The last observed state of the app.' }),
  last_deployment: Type.Union([InstanceDeploymentStatus, Type.Null()]),
});

export const AppsList = obj(
  {
    apps: Type.Array(AppSummary),
    errors: Type.Array(DocError, { description: 'Files under state/desired that belong to no app (wrong place or name).' }),
  },
  { examples: [{ apps: [{ team_id: 'acme', environment_id: 2, app_id: 17, desired: null, document_error: null, observed: null, last_deployment: null }], errors: [] }] },
);
