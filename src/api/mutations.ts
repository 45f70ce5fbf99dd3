/**
 * The mutating endpoints. Each one: validate → build the next document from the one in force (pure,
 * translate.ts) → check host-wide rules → write it → record a `pending` deployment (superseding the
 * app's pending/in-progress ones) → `onDesiredChange(key)` → 202 `{deployment_id, status, status_url}`.
 *
 * - Idempotency: a `deployment_id` already accepted with the same endpoint and body (canonical JSON
 *   hash) answers the same 202 and changes nothing; with another body it is a 409 E_CONFLICT.
 * - Concurrency: each request holds its deployment id, then its app (KeyedMutex), so the
 *   read-modify-write of one document and the id check are never interleaved.
 * - `?dry_run=true`: the same checks, then 200 `{dry_run: true, document, diff, plan?}` with secrets
 *   redacted; nothing is written and the reconciler is not told.
 * - A 4xx never writes anything: every check runs before the first write.
 */
import { createHash } from 'node:crypto';
import { Type } from 'typebox';
import { CrateError, stateWriteError } from '../core/errors.ts';
import { appKeyString, type AppKey } from '../core/identity.ts';
import { diffDesired, summarizeDesired, type DesiredApp } from '../desired/document.ts';
import { httpUrlProblem } from '../desired/schema.ts';
import { appLockKey } from '../desired/store.ts';
import type { DeploymentAction } from '../records/status.ts';
import type { ApiContext, ApiInstance } from './app.ts';
import { validationError, type FieldIssue } from './errors.ts';
import {
  Accepted,
  BinaryDeployBody,
  DeleteBody,
  DockerDeployBody,
  DomainUpdateBody,
  DomainUpdated,
  DryRunQuery,
  DryRunResult,
  ErrorBody,
  InstanceActionBody,
  InstanceBinaryDeployBody,
  InstanceDockerDeployBody,
} from './schemas.ts';
import {
  checkAgainstOtherApps,
  deleteDoc,
  instanceActionDoc,
  instanceBinaryDoc,
  instanceDockerDoc,
  keyOf,
  plainBinaryDoc,
  plainDockerDoc,
  type ChangeContext,
  type InstanceAction,
} from './translate.ts';

/** JSON with object keys sorted at every level: equal values give equal strings. */
export function canonicalJson(v: unknown): string {
  if (v === null || typeof v !== 'object') return JSON.stringify(v);
  if (Array.isArray(v)) return `[${v.map(canonicalJson).join(',')}]`;
  const o = v as Record<string, unknown>;
  return `{${Object.keys(o)
    .sort()
    .map((k) => `${JSON.stringify(k)}:${canonicalJson(o[k])}`)
    .join(',')}}`;
}

/** The idempotency hash of a request: endpoint and canonical body. */
export function requestHash(endpoint: string, body: unknown): string {
  return createHash('sha256').update(endpoint).update('\n').update(canonicalJson(body)).digest('hex');
}

interface Mutation {
  endpoint: string;
  key: AppKey;
  /** The platform's deployment id, when the request carries one. */
  platformId: number | null;
  action: DeploymentAction;
  /** Which status endpoint the 202 points at. */
  statusRoute: 'instance' | 'app';
  body: unknown;
  params?: Record<string, unknown>;
  callbackUrl: string;
  /** The next document (null: delete it). Throws a 400 for requests that break a rule. */
  next: (old: DesiredApp | undefined, c: ChangeContext) => DesiredApp | null;
}

type MutationAnswer = { code: 200; body: DryRunResult } | { code: 202; body: Accepted };

async function dryRunBody(ctx: ApiContext, key: AppKey, old: DesiredApp | undefined, next: DesiredApp | null | undefined, replay: boolean): Promise<DryRunResult> {
  const before = old ? summarizeDesired(old) : undefined;
  const after = next ? summarizeDesired(next) : undefined;
  const body: DryRunResult = { dry_run: true, document: after ?? null, diff: diffDesired(before, after) };
  if (ctx.deps.planFor) body.plan = (await ctx.deps.planFor(key, next ?? undefined)) ?? null;
  if (replay) body.replay = true;
  return body;
}

async function mutate(ctx: ApiContext, m: Mutation, dryRun: boolean, log: { warn: (o: object, s: string) => void }): Promise<MutationAnswer> {
  const { store, records } = ctx.deps;
  const id = m.platformId !== null ? String(m.platformId) : ctx.newId();
  const hash = m.platformId !== null ? requestHash(m.endpoint, m.body) : null;
  const keys = [`id:${id}`, appLockKey(m.key)];
  return ctx.lock.run(keys, async () => {
    const existing = records.getRecord(id);
    if (existing) {
      if (hash === null || existing.request_hash !== hash) {
        throw new CrateError('E_CONFLICT', `deployment ${id} was already accepted with a different request`, { details: { deployment_id: id } });
      }
      if (dryRun) return { code: 200, body: await dryRunBody(ctx, m.key, store.get(m.key), store.get(m.key), true) };
      return { code: 202, body: existing.response as Accepted };
    }
    const urls = urlIssues(m.body);
    if (urls.length > 0) throw validationError(urls);
    const old = store.get(m.key);
    const now = ctx.now();
    const next = m.next(old, { deploymentId: id, now });
    if (next) {
      const clash = checkAgainstOtherApps(next, store.list());
      if (clash.length > 0) throw validationError(clash);
    }
    if (dryRun) return { code: 200, body: await dryRunBody(ctx, m.key, old, next, false) };

    // The document and its record go together: if either cannot be written, the previous document is
    // put back (best effort), or the reconciler would adopt the new one as written by hand and deploy
    // what the platform was told failed.
    const putBack = (): Promise<void> =>
      (old ? store.write(old).then(() => undefined) : store.remove(m.key).then(() => undefined)).catch((e: unknown) => {
        log.warn({ err: e, app: appKeyString(m.key) }, 'cannot put the previous document back after a failed write');
      });
    try {
      if (next) await store.write(next);
      else await store.remove(m.key);
    } catch (err) {
      // The file may be in place with only its last-good copy missing.
      if (next) await putBack();
      throw stateWriteError(err, 'the desired document');
    }
    const statusUrl = m.statusRoute === 'instance' ? `/v1/app/instance/deploy/${id}/status` : `/v1/app/deploy/${id}/status`;
    const response: Accepted = { deployment_id: m.platformId ?? id, status: 'accepted', status_url: statusUrl };
    const source = next ?? old;
    let accepted;
    try {
      accepted = records.accept({
        id,
        key: m.key,
        action: m.action,
        kind: source?.spec.runtime ?? null,
        model: source?.spec.model ?? null,
        strategy: source?.spec.strategy ?? null,
        target_version: source?.spec.version ?? null,
        callback_url: m.callbackUrl,
        request_hash: hash,
        endpoint: m.endpoint,
        response,
        params: { ...(m.params ?? {}), ...(next === null ? { document_removed: true } : {}) },
      });
    } catch (err) {
      await putBack();
      throw stateWriteError(err, 'the deployment record');
    }
    if (accepted.outcome !== 'created') {
      // Unreachable while the id lock is held; kept so a broken invariant is loud, not silent.
      throw new CrateError('E_INTERNAL', `deployment ${id} appeared while its lock was held`);
    }
    try {
      ctx.deps.onDesiredChange(m.key);
    } catch (err) {
      // The document and record are durable; the reconciler's periodic resync picks the app up.
      log.warn({ err, app: appKeyString(m.key) }, 'onDesiredChange failed');
    }
    return { code: 202, body: response };
  });
}

/** The URL fields of a request that the operator's HTTP client could not use (see httpUrlProblem). */
function urlIssues(body: unknown): FieldIssue[] {
  const b = body as Record<string, unknown>;
  const out: FieldIssue[] = [];
  for (const field of ['asset_url', 'callback_url']) {
    const v = b[field];
    const reason = typeof v === 'string' ? httpUrlProblem(v) : undefined;
    if (reason) out.push({ field, reason });
  }
  return out;
}

const mutationResponses = (withConflict: boolean) => ({
  202: { ...Accepted, description: 'Accepted' },
  200: { ...DryRunResult, description: 'Dry run (`?dry_run=true`): what would change; nothing changed' },
  400: { ...ErrorBody, description: 'Bad Request: details.fields names each offending field' },
  ...(withConflict ? { 409: { ...ErrorBody, description: 'deployment_id already accepted with a different request' } } : {}),
  500: { ...ErrorBody, description: 'Server Error' },
});

/** Registers the 4 deploy endpoints, start/stop/restart, delete and the domain update. */
export function registerMutations(app: ApiInstance, ctx: ApiContext): void {
  const vr = ctx.deps.config.volumesRoot;

  app.post(
    '/v1/app/instance/binary/deploy',
    {
      schema: {
        tags: ['deploy'],
        summary: 'Deploy or create app via instance model',
        description:
          'The platform sends instance ids (persistent DB keys) and port configs per slot. The operator inspects local state to decide create vs update, executes, and reports instance state and traffic allocations.',
        body: InstanceBinaryDeployBody,
        querystring: DryRunQuery,
        response: mutationResponses(true),
      },
    },
    async (req, reply) => {
      const b = req.body;
      const r = await mutate(
        ctx,
        {
          endpoint: '/v1/app/instance/binary/deploy',
          key: keyOf(b),
          platformId: b.deployment_id,
          action: 'deploy',
          statusRoute: 'instance',
          body: b,
          callbackUrl: b.callback_url,
          next: (old, c) => instanceBinaryDoc(b, old, c),
        },
        req.query.dry_run === true,
        req.log,
      );
      return reply.code(r.code).send(r.body);
    },
  );

  app.post(
    '/v1/app/instance/docker/deploy',
    {
      schema: {
        tags: ['deploy'],
        summary: 'Deploy or create docker app via instance model',
        description: 'Like the binary instance deploy, with Docker image information.',
        body: InstanceDockerDeployBody,
        querystring: DryRunQuery,
        response: mutationResponses(true),
      },
    },
    async (req, reply) => {
      const b = req.body;
      const r = await mutate(
        ctx,
        {
          endpoint: '/v1/app/instance/docker/deploy',
          key: keyOf(b),
          platformId: b.deployment_id,
          action: 'deploy',
          statusRoute: 'instance',
          body: b,
          callbackUrl: b.callback_url,
          next: (old, c) => instanceDockerDoc(b, old, c, vr),
        },
        req.query.dry_run === true,
        req.log,
      );
      return reply.code(r.code).send(r.body);
    },
  );

  app.post(
    '/v1/app/binary/deploy',
    {
      schema: {
        tags: ['deploy'],
        summary: 'Deploy or create binary app',
        description:
          'Creates the app if it does not yet exist on this host, otherwise deploys it with the given strategy. The version is derived from the asset URL: `a-<first 12 hex of sha256(asset_url)>`.',
        body: BinaryDeployBody,
        querystring: DryRunQuery,
        response: mutationResponses(true),
      },
    },
    async (req, reply) => {
      const b = req.body;
      const r = await mutate(
        ctx,
        {
          endpoint: '/v1/app/binary/deploy',
          key: keyOf(b),
          platformId: b.deployment_id,
          action: 'deploy',
          statusRoute: 'app',
          body: b,
          callbackUrl: b.callback_url,
          next: (old, c) => plainBinaryDoc(b, old, c),
        },
        req.query.dry_run === true,
        req.log,
      );
      return reply.code(r.code).send(r.body);
    },
  );

  app.post(
    '/v1/app/docker/deploy',
    {
      schema: {
        tags: ['deploy'],
        summary: 'Deploy or create docker app',
        description: 'Creates the app if it does not yet exist on this host, otherwise deploys it with the given strategy. The version is the image tag.',
        body: DockerDeployBody,
        querystring: DryRunQuery,
        response: mutationResponses(true),
      },
    },
    async (req, reply) => {
      const b = req.body;
      const r = await mutate(
        ctx,
        {
          endpoint: '/v1/app/docker/deploy',
          key: keyOf(b),
          platformId: b.deployment_id,
          action: 'deploy',
          statusRoute: 'app',
          body: b,
          callbackUrl: b.callback_url,
          next: (old, c) => plainDockerDoc(b, old, c, vr),
        },
        req.query.dry_run === true,
        req.log,
      );
      return reply.code(r.code).send(r.body);
    },
  );

  app.post(
    '/v1/app/delete',
    {
      schema: {
        tags: ['lifecycle'],
        summary: 'Delete app (remove service and files)',
        description:
          "Asynchronously stops and removes the listed instances' units or containers, app files, config and, when no instance remains, the Caddy route. Instance ids unknown to this host's document are accepted (whatever the host still has of them is removed).",
        body: DeleteBody,
        querystring: DryRunQuery,
        response: { ...mutationResponses(true), 202: { ...Accepted, description: 'Accepted — deletion is in progress' } },
      },
    },
    async (req, reply) => {
      const b = req.body;
      const ids = [...new Set(b.instance_ids)];
      const r = await mutate(
        ctx,
        {
          endpoint: '/v1/app/delete',
          key: keyOf(b),
          platformId: b.deployment_id ?? null,
          action: 'delete',
          statusRoute: 'app',
          body: b,
          callbackUrl: b.callback_url,
          params: { instance_ids: ids },
          next: (old, c) => deleteDoc(b, old, c),
        },
        req.query.dry_run === true,
        req.log,
      );
      return reply.code(r.code).send(r.body);
    },
  );

  const instanceAction = (action: InstanceAction, summary: string): void => {
    const endpoint = `/v1/app/${action}`;
    app.post(
      endpoint,
      {
        schema: {
          tags: ['lifecycle'],
          summary,
          description: `${summary} by instance_id, asynchronously. The operator generates the deployment id.`,
          body: InstanceActionBody,
          querystring: DryRunQuery,
          response: mutationResponses(false),
        },
      },
      async (req, reply) => {
        const b = req.body;
        const r = await mutate(
          ctx,
          {
            endpoint,
            key: keyOf(b),
            platformId: null,
            action,
            statusRoute: 'app',
            body: b,
            callbackUrl: b.callback_url,
            params: { instance_id: b.instance_id },
            next: (old, c) => instanceActionDoc(action, b, old, c),
          },
          req.query.dry_run === true,
          req.log,
        );
        return reply.code(r.code).send(r.body);
      },
    );
  };
  instanceAction('start', 'Start app service');
  instanceAction('stop', 'Stop app service');
  instanceAction('restart', 'Restart app service');

  const moveTimeout = ctx.deps.moveDomainTimeoutMs ?? 20_000;
  app.post(
    '/v1/app/domain/update',
    {
      schema: {
        tags: ['lifecycle'],
        summary: 'Update app domain route in Caddy',
        description:
          "Moves the app's Caddy route from old_domain to new_domain synchronously, then records the new domain in the app's document. A server_id other than this host's is a 400.",
        body: DomainUpdateBody,
        querystring: DryRunQuery,
        response: {
          200: Type.Union([DomainUpdated, DryRunResult], { description: 'OK: the route serves new_domain (with dry_run: what would change)' }),
          400: { ...ErrorBody, description: 'Bad Request (also: server_id is not this host)' },
          404: { ...ErrorBody, description: 'Route not found' },
          409: { ...ErrorBody, description: 'Target domain already exists' },
          503: { ...ErrorBody, description: 'Caddy unavailable' },
        },
      },
    },
    async (req, reply) => {
      const b = req.body;
      const cfg = ctx.deps.config;
      if (b.server_id !== cfg.serverId) {
        throw validationError([{ field: 'server_id', reason: `this host is ${JSON.stringify(cfg.serverId)}; the request is for another server` }]);
      }
      const key = keyOf(b);
      const body = await ctx.lock.run([appLockKey(key)], async () => {
        const { store } = ctx.deps;
        for (const other of store.list()) {
          const k = appKeyString({ team: other.metadata.team, env: other.metadata.environment, app: other.metadata.app });
          if (k !== appKeyString(key) && other.spec.domain === b.new_domain) {
            throw new CrateError('E_DOMAIN_EXISTS', `${b.new_domain} is already the domain of app ${k} on this host`);
          }
        }
        const old = store.get(key);
        const next = old && old.spec.domain !== b.new_domain ? { ...old, spec: { ...old.spec, domain: b.new_domain } } : old;
        if (req.query.dry_run === true) return dryRunBody(ctx, key, old, next, false);
        const exclusive = ctx.deps.asRouteWriter ?? (<T>(_k: AppKey, fn: () => Promise<T>): Promise<T> => fn());
        // The route and the document move together: nothing writes the route from the old document in between.
        await withDeadline(
          exclusive(key, async () => {
            await ctx.deps.moveDomain(key, b.old_domain, b.new_domain);
            if (next && next !== old) await store.write(next);
          }),
          moveTimeout,
        );
        if (next && next !== old) {
          try {
            ctx.deps.onDesiredChange(key);
          } catch (err) {
            req.log.warn({ err, app: appKeyString(key) }, 'onDesiredChange failed');
          }
        }
        return { status: 'updated' as const, team_id: b.team_id, environment_id: b.environment_id, app_id: b.app_id, old_domain: b.old_domain, domain: b.new_domain };
      });
      return reply.code(200).send(body);
    },
  );
}

/** Resolve/reject with `p`, or reject with E_CADDY_UNAVAILABLE after `ms`. */
async function withDeadline<T>(p: Promise<T>, ms: number): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const deadline = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new CrateError('E_CADDY_UNAVAILABLE', `the route change did not finish within ${ms} ms`)), ms);
  });
  try {
    return await Promise.race([p, deadline]);
  } finally {
    clearTimeout(timer);
  }
}
