/**
 * The HTTP API as a fastify instance built from its dependencies (fastify's demo-app style):
 * the server file only listens and shuts down; tests use `app.inject()`.
 *
 * Handlers never touch systemd, Docker or Caddy: a mutating request becomes a desired-state document
 * change plus a `pending` deployment record, and `deps.onDesiredChange(key)` tells the reconciler.
 * The one synchronous exception, the domain update, goes through `deps.moveDomain`.
 *
 * Validation: fastify's ajv with `coerceTypes: false` (a "1" is not 1), `removeAdditional: false`
 * (unknown fields are refused, not dropped) and `allErrors: true` (a 400 names every offending field).
 * Query and path parameters are converted explicitly (`dry_run`, the int32 status id) before it.
 */
import swagger from '@fastify/swagger';
import swaggerUi from '@fastify/swagger-ui';
import type { TypeBoxTypeProvider } from '@fastify/type-provider-typebox';
import Fastify, { type FastifyBaseLogger, type FastifyInstance, type FastifyReply, type RawReplyDefaultExpression, type RawRequestDefaultExpression, type RawServerDefault } from 'fastify';
import { randomUUID } from 'node:crypto';
import { Type } from 'typebox';
import type { OperatorConfig } from '../config.ts';
import { CrateError } from '../core/errors.ts';
import type { AppKey } from '../core/identity.ts';
import type { DesiredApp } from '../desired/document.ts';
import type { KeyedMutex } from '../desired/lock.ts';
import type { DesiredStore } from '../desired/store.ts';
import type { Records } from '../records/records.ts';
import { bearerChecker, unauthorized } from './auth.ts';
import { errorBody, handleError, validationError } from './errors.ts';
import { registerMutations } from './mutations.ts';
import { registerQueries } from './queries.ts';
import { registerPlan, type PlanOfDocument } from './plan.ts';

/** Reachability of the three components the operator drives. */
export interface BackendStatus {
  systemd: { reachable: boolean; detail: string };
  docker: { reachable: boolean; detail: string };
  caddy: { reachable: boolean; detail: string };
}

export interface AppDeps {
  config: OperatorConfig;
  /** Checks the components; called by `/healthz`. Must answer within its own deadline. */
  checkBackends: () => Promise<BackendStatus>;
  /** Logger settings or `false` (tests). */
  logger?: boolean | object;
  /** The desired-state documents (opened by the caller). */
  store: DesiredStore;
  /** The deployment records (opened by the caller). */
  records: Records;
  /**
   * Called after a change to an app's desired document has been written and its deployment
   * recorded: enqueue the app for reconciliation. Must not throw or block (errors are logged).
   */
  onDesiredChange: (key: AppKey) => void;
  /**
   * Move the app's Caddy route from `oldDomain` to `newDomain` now (the domain update is synchronous).
   * Throws CrateError E_ROUTE_NOT_FOUND (→ 404), E_DOMAIN_EXISTS (→ 409) or E_CADDY_UNAVAILABLE
   * (→ 503). The API updates the document only after it resolved.
   */
  moveDomain: (key: AppKey, oldDomain: string, newDomain: string) => Promise<void>;
  /**
   * Run `fn` as the app's only route writer (the reconciler's): the domain update moves the route and
   * writes the document inside it, so no heal or deployment rewrites the route from the old document
   * in between. Absent: `fn` runs as is.
   */
  asRouteWriter?: <T>(key: AppKey, fn: () => Promise<T>) => Promise<T>;
  /** The last observed state of an app (JSON, no secrets) for `GET /v1/apps`; undefined if unknown. */
  observed?: (key: AppKey) => unknown;
  /**
   * The reconciler's plan for a document a dry run would write (undefined: the app would be deleted).
   * The result is returned to the client as is, so it must hold no secret.
   */
  planFor?: (key: AppKey, doc: DesiredApp | undefined) => unknown;
  /**
   * What the next reconcile would do if `doc` were its app's document (`POST /v1/plan`); changes
   * nothing. Without it `POST /v1/plan` answers 500 E_NO_PLANNER.
   */
  planDocument?: (doc: DesiredApp) => Promise<PlanOfDocument>;
  /** Clock (tests pin it). */
  now?: () => Date;
  /** Ids of operations the platform sends without one (start/stop/restart, delete without id). */
  newDeploymentId?: () => string;
  /** Server-sent events: keep-alive comment interval and the longest a stream stays open (ms). */
  sse?: { heartbeatMs?: number; maxStreamMs?: number };
  /** Deadline of `moveDomain` (ms); past it the answer is 503. Default 20 s. */
  moveDomainTimeoutMs?: number;
  /**
   * Prometheus exposition for `GET /metrics` (no auth, like `/healthz`: counts and durations only,
   * no app identity, no secret). Absent: no `/metrics` route.
   */
  metrics?: () => Promise<{ contentType: string; body: string }>;
}

/** The fastify instance type with the TypeBox type provider. */
export type ApiInstance = FastifyInstance<RawServerDefault, RawRequestDefaultExpression, RawReplyDefaultExpression, FastifyBaseLogger, TypeBoxTypeProvider>;

/** What route modules share. */
export interface ApiContext {
  deps: AppDeps;
  now: () => Date;
  newId: () => string;
  /** Serialises mutations per deployment id and per app. */
  lock: KeyedMutex;
}

const API_DESCRIPTION = `The Crate Operator host API: deploy web apps onto this host as systemd units or Docker
containers behind Caddy. Every /v1 route requires \`Authorization: Bearer <token>\` (401 otherwise).
Bodies are JSON (\`application/json\`, else 415) of at most 1 MiB (else 413). Every error body is
\`{"error": {"code", "message", "details"?}}\`; a 400 lists each offending field in
\`details.fields\`. Extensions: \`?dry_run=true\` on every mutating endpoint answers 200 with the document
that would be written and its diff, changing nothing; a re-sent \`deployment_id\` with the same body
answers the same 202 again, with a different body 409.`;

const Reachability = Type.Object({ reachable: Type.Boolean(), detail: Type.String() }, { additionalProperties: false });
/** `GET /healthz`: the operator answers; each component's reachability (never a reason to answer non-200). */
const HealthStatus = Type.Object(
  {
    status: Type.Literal('ok'),
    server_id: Type.String(),
    backends: Type.Object({ systemd: Reachability, docker: Reachability, caddy: Reachability }, { additionalProperties: false }),
  },
  { additionalProperties: false },
);

function isLoggerInstance(l: unknown): l is FastifyBaseLogger {
  return typeof l === 'object' && l !== null && typeof (l as { child?: unknown }).child === 'function' && typeof (l as { info?: unknown }).info === 'function';
}

export async function buildApp(deps: AppDeps): Promise<ApiInstance> {
  const authorized = bearerChecker(deps.config.tokens);
  const isApi = (u: string): boolean => u === '/v1' || u.startsWith('/v1/') || u.startsWith('/v1?');
  const app = Fastify({
    // A logger instance (pino, with the operator's redaction) goes in as `loggerInstance`; options as `logger`.
    ...(isLoggerInstance(deps.logger) ? { loggerInstance: deps.logger } : { logger: deps.logger ?? false }),
    bodyLimit: 1024 * 1024,
    genReqId: () => randomUUID(),
    ajv: { customOptions: { coerceTypes: false, removeAdditional: false, allErrors: true, useDefaults: false } },
    // A path the router cannot even parse (bad percent-encoding, a segment over maxParamLength) names
    // no route: answer as for an unknown route, after the same token check, in the one error shape and
    // without echoing the path (fastify's default answers 400/414 in its own shape with the path).
    frameworkErrors: (_err, req, rawReply) => {
      const reply = rawReply as FastifyReply;
      if (isApi(req.url) && !authorized(req.headers.authorization)) {
        void reply.code(401).header('www-authenticate', 'Bearer').send(errorBody('E_UNAUTHORIZED', unauthorized().message));
        return;
      }
      void reply.code(404).send(errorBody('E_NOT_FOUND', 'no such route or resource'));
    },
  }).withTypeProvider<TypeBoxTypeProvider>();

  const ctx: ApiContext = {
    deps,
    now: deps.now ?? (() => new Date()),
    newId: deps.newDeploymentId ?? (() => `op-${randomUUID()}`),
    // The store's app lock: the reconciler decides under the same keys (see DesiredStore.appLock).
    lock: deps.store.appLock,
  };

  // JSON only (text/plain and others answer 415). JSON.parse keeps a `__proto__` key as an own
  // property, so schema validation sees it and names it instead of a generic parse error.
  app.removeAllContentTypeParsers();
  app.addContentTypeParser('application/json', { parseAs: 'string' }, (_req, body, done) => {
    if (body === '') {
      done(validationError([{ field: '(body)', reason: 'must not be empty' }]), undefined);
      return;
    }
    try {
      done(null, JSON.parse(body as string) as unknown);
    } catch {
      done(validationError([{ field: '(body)', reason: 'is not valid JSON' }]), undefined);
    }
  });

  app.setErrorHandler((err: Error, req, reply) => {
    if (err instanceof CrateError && err.code === 'E_UNAUTHORIZED') void reply.header('www-authenticate', 'Bearer');
    handleError(err, req, reply);
  });
  app.setNotFoundHandler((req, reply) => {
    void reply.code(404).send(errorBody('E_NOT_FOUND', `no route ${req.method} ${req.url.split('?')[0] ?? ''}`));
  });

  app.addHook('onRequest', (req, _reply, done) => {
    // Decide on both the matched route and the raw URL, so no encoding of the path skips the check.
    const route = req.routeOptions.url ?? '';
    done((isApi(route) || isApi(req.url)) && !authorized(req.headers.authorization) ? unauthorized() : undefined);
  });

  // Query flags arrive as strings and ajv does not coerce: convert the one flag explicitly.
  app.addHook('preValidation', (req, _reply, done) => {
    const q = req.query as Record<string, unknown> | undefined;
    if (q && typeof q === 'object' && Object.hasOwn(q, 'dry_run')) {
      if (q.dry_run === 'true' || q.dry_run === '1') q.dry_run = true;
      else if (q.dry_run === 'false' || q.dry_run === '0') q.dry_run = false;
    }
    done();
  });

  await app.register(swagger, {
    openapi: {
      openapi: '3.1.0',
      info: { title: 'Crate Operator host API', version: '1.0.0', description: API_DESCRIPTION },
      components: { securitySchemes: { bearer: { type: 'http', scheme: 'bearer' } } },
      security: [{ bearer: [] }],
      tags: [
        { name: 'deploy', description: 'Deployments (asynchronous: 202, then status/callbacks)' },
        { name: 'lifecycle', description: 'Start, stop, restart, delete, domain' },
        { name: 'status', description: 'Deployment status and app listing' },
        { name: 'operator', description: 'Health and documentation' },
      ],
    },
  });
  await app.register(swaggerUi, { routePrefix: '/docs' });

  app.get('/openapi.json', { schema: { hide: true } }, () => app.swagger());

  app.get(
    '/healthz',
    { schema: { tags: ['operator'], summary: 'Liveness and reachability of systemd, Docker and Caddy', security: [], response: { 200: { ...HealthStatus, description: 'The operator is up; whether each component is reachable' } } } },
    async () => {
      const backends = await deps.checkBackends();
      return { status: 'ok' as const, server_id: deps.config.serverId, backends };
    },
  );

  const metrics = deps.metrics;
  if (metrics) {
    app.get(
      '/metrics',
      { schema: { tags: ['operator'], summary: 'Prometheus metrics (text exposition format); no secrets, no app identities', security: [] } },
      async (_req, reply) => {
        const m = await metrics();
        return reply.header('content-type', m.contentType).send(m.body);
      },
    );
  }

  registerMutations(app, ctx);
  registerQueries(app, ctx);
  registerPlan(app, ctx);

  await app.ready();
  return app;
}
