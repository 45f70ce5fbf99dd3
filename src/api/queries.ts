/**
 * The reading endpoints: the two deployment status endpoints, the deployment event stream (SSE) and
 * the app listing. None of them changes anything; none of them shows a secret.
 *
 * SSE (`GET /v1/app/deploy/{id}/events`, `text/event-stream`): the current status document first,
 * then one `status` event per committed change (`id:` is the record's revision), a `: keep-alive`
 * comment every `heartbeatMs`; the stream ends after the terminal status, when the client goes, when
 * the server closes, or after `maxStreamMs` (the client reconnects and gets the current state again).
 */
import { appKeyString, type AppKey } from '../core/identity.ts';
import { CrateError } from '../core/errors.ts';
import { docKey, summarizeDesired } from '../desired/document.ts';
import { DEPLOYMENT_ID_PATTERN, INT32_MAX } from '../desired/schema.ts';
import type { DeploymentChange } from '../records/records.ts';
import { isTerminal } from '../records/status.ts';
import type { ApiContext, ApiInstance } from './app.ts';
import { AppDeploymentStatus, AppsList, ErrorBody, InstanceDeploymentStatus, Int32IdParams, StringIdParams } from './schemas.ts';

function notFound(id: string): CrateError {
  return new CrateError('E_NOT_FOUND', `no deployment ${id}`);
}

/**
 * The string-id routes document 200 and 404 only: an id that cannot name a deployment (empty, too
 * long, not of the stored form) is simply unknown, a 404, not a 400. Ids are not echoed back: a
 * path segment may hold anything.
 */
const unknownIdAs404 = (req: { params: unknown }, _reply: unknown, done: (err?: Error) => void): void => {
  const raw = String((req.params as { deployment_id: unknown }).deployment_id);
  done(DEPLOYMENT_ID_PATTERN.test(raw) ? undefined : new CrateError('E_NOT_FOUND', 'no such deployment'));
};

export function registerQueries(app: ApiInstance, ctx: ApiContext): void {
  const { records, store } = ctx.deps;

  app.get(
    '/v1/app/deploy/:deployment_id/status',
    {
      schema: {
        tags: ['status'],
        summary: 'Get operator update status',
        description: 'The status document of any deployment or operation (slots and traffic: see the instance status endpoint).',
        params: StringIdParams,
        response: { 200: { ...AppDeploymentStatus, description: 'App Binary Deployment Status' }, 404: { ...ErrorBody, description: 'Not Found' } },
      },
      preValidation: unknownIdAs404,
    },
    (req) => {
      const s = records.get(req.params.deployment_id);
      if (!s) throw notFound(req.params.deployment_id);
      return s;
    },
  );

  app.get(
    '/v1/app/instance/deploy/:deployment_id/status',
    {
      schema: {
        tags: ['status'],
        summary: 'Get instance deployment status',
        description: 'The status document with slots and traffic allocations.',
        params: Int32IdParams,
        response: { 200: { ...InstanceDeploymentStatus, description: 'Instance Deployment Status' }, 404: { ...ErrorBody, description: 'Not Found' } },
      },
      // A path segment is a string and ajv does not coerce: anything but a positive decimal int32
      // cannot name a deployment, so it is a 404 like any unknown id.
      preValidation: (req, _reply, done) => {
        const p = req.params as { deployment_id: unknown };
        const raw = String(p.deployment_id);
        if (!/^[1-9][0-9]{0,9}$/.test(raw) || Number(raw) > INT32_MAX) {
          done(notFound(raw));
          return;
        }
        p.deployment_id = Number(raw);
        done();
      },
    },
    (req) => {
      const id = String(req.params.deployment_id);
      const s = records.get(id);
      if (!s) throw notFound(id);
      return s;
    },
  );

  const heartbeatMs = ctx.deps.sse?.heartbeatMs ?? 15_000;
  const maxStreamMs = ctx.deps.sse?.maxStreamMs ?? 60 * 60_000;
  const open = new Set<() => void>();
  app.addHook('preClose', (done) => {
    for (const finish of [...open]) finish();
    done();
  });

  app.get(
    '/v1/app/deploy/:deployment_id/events',
    {
      schema: {
        tags: ['status'],
        summary: 'Stream a deployment’s status changes (server-sent events)',
        description:
          'text/event-stream: the current status document first (`event: status`, `id:` its revision), then one event per change; the stream ends after a terminal status.',
        params: StringIdParams,
        produces: ['text/event-stream'],
        response: {
          200: { description: 'An event stream of status documents', content: { 'text/event-stream': { schema: { type: 'string' } } } },
          // The error is JSON, not an event stream: say so, or the document would claim text/event-stream.
          404: { description: 'Not Found', content: { 'application/json': { schema: ErrorBody } } },
        },
      },
      preValidation: unknownIdAs404,
    },
    (req, reply) => {
      const id = req.params.deployment_id;
      if (!records.getRecord(id)) throw notFound(id);
      reply.hijack();
      const res = reply.raw;
      res.writeHead(200, {
        'content-type': 'text/event-stream; charset=utf-8',
        'cache-control': 'no-cache, no-transform',
        connection: 'keep-alive',
        'x-accel-buffering': 'no',
      });
      res.write('retry: 3000\n\n');
      let last = 0;
      let closed = false;
      const finish = (): void => {
        if (closed) return;
        closed = true;
        open.delete(finish);
        unsubscribe();
        clearInterval(heartbeat);
        clearTimeout(deadline);
        res.end();
      };
      const send = (c: DeploymentChange): void => {
        if (closed || c.revision <= last) return;
        last = c.revision;
        res.write(`id: ${c.revision}\nevent: status\ndata: ${JSON.stringify(c.status)}\n\n`);
        if (isTerminal(c.status.status)) finish();
      };
      // Subscribe before reading the current state, so no change between the two is lost.
      const unsubscribe = records.subscribe(id, send);
      const heartbeat = setInterval(() => res.write(': keep-alive\n\n'), heartbeatMs);
      const deadline = setTimeout(finish, maxStreamMs);
      open.add(finish);
      res.on('close', finish);
      // A write racing a vanished client must end this stream, not the process.
      res.on('error', finish);
      const cur = records.getRecord(id);
      if (cur) send({ status: cur.status, revision: cur.revision });
    },
  );

  app.get(
    '/v1/apps',
    {
      schema: {
        tags: ['status'],
        summary: 'Every app on this host: desired document (secrets redacted), document errors, last observed state, last deployment',
        response: { 200: { ...AppsList, description: 'The apps of this host' } },
      },
    },
    async (req) => {
      const keys = new Map<string, AppKey>();
      for (const d of store.list()) keys.set(appKeyString(docKey(d)), docKey(d));
      for (const e of store.errors().values()) if (e.key) keys.set(appKeyString(e.key), e.key);
      // Apps being deleted have no document any more but still a deployment in flight.
      for (const r of records.active()) keys.set(appKeyString(r.key), r.key);
      const apps = [];
      for (const k of [...keys.keys()].sort()) {
        const key = keys.get(k) as AppKey;
        const doc = store.get(key);
        const err = store.errorFor(key);
        let observed: unknown = null;
        try {
          observed = (await ctx.deps.observed?.(key)) ?? null;
        } catch (e) {
          req.log.warn({ err: e, app: k }, 'observed state unavailable');
        }
        apps.push({
          team_id: key.team,
          environment_id: key.env,
          app_id: key.app,
          desired: doc ? summarizeDesired(doc) : null,
          document_error: err ? { path: err.path, error: err.error, at: err.at } : null,
          observed,
          last_deployment: records.latestForApp(key)?.status ?? null,
        });
      }
      const errors = [...store.errors().values()].filter((e) => !e.key).map((e) => ({ path: e.path, error: e.error, at: e.at }));
      return { apps, errors };
    },
  );
}
