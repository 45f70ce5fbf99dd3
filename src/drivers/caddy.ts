/**
 * The Caddy driver: the operator's HTTP server and its app routes, through Caddy's admin API
 * (config.caddyAdmin: `http://host:port` or `unix:/path`).
 *
 * Promises:
 * - Every admin request uses a fresh connection (`Connection: close`: Caddy restarts its admin
 *   listener on each config change, so a kept-alive connection would be reset), has a deadline and
 *   counts one host call (`countHostCall('caddy')`). A connection refused or reset (the listener's
 *   restart window) is retried for up to 1.5 s before E_CADDY_UNAVAILABLE.
 * - Every read-modify-write runs under a per-admin-address lock (no two of this process interleave)
 *   AND sends `If-Match` with the ETag of what it read (Caddy answers 412 if anyone else changed it in
 *   between; the operation is then re-read and retried after a short jittered pause, at most 8 times,
 *   else E_CADDY_CONFLICT).
 * - Each verb makes at most ONE config change (every change reloads every server: see
 *   /work/shared/DESIGN.md), and none when the config already is as wanted (`changed: false`).
 * - Only the operator's server (config.caddyServer) and routes whose `@id` it owns are written; other
 *   servers and routes are never changed (they are only read, to refuse a domain another route serves).
 * - Everything is JSON-encoded; nothing from a request is concatenated into config text.
 * - Errors: E_CADDY_UNAVAILABLE (admin API unreachable or not answering in time), E_ROUTE_NOT_FOUND,
 *   E_DOMAIN_EXISTS, E_ROUTE_REFUSED (bad domain/ports), E_CADDY_CONFLICT, E_CADDY (Caddy refused the
 *   change; its message is kept).
 * - Caddy restarted with an empty config: `ensureServer()` (also done implicitly by `upsertRoute`)
 *   recreates the server and `grace_period`; upserting each app's route puts everything back.
 */
import { CrateError } from '../core/errors.ts';
import { countHostCall } from '../core/hostcalls.ts';
import { routeId } from '../core/identity.ts';
import type { AppKey } from '../core/identity.ts';
import {
  DEFAULT_PROXY,
  checkDomain,
  checkPorts,
  dialPort,
  findRoute,
  placeRoute,
  planRouteWrite,
  routeDomains,
  routeJson,
  routesMatching,
} from './caddy-routes.ts';
import type { CaddyRoute, ProxySettings, RouteWrite } from './caddy-routes.ts';
import { TransportError, httpCall, parseHttpTarget, parseJsonBody } from './http.ts';
import type { HttpReply, HttpTarget } from './http.ts';

/** The operator's HTTP server as created when missing. */
export interface CaddyServerSettings {
  /** `listen` addresses, e.g. `[':80', ':443']` in production, `['127.0.0.1:8080']` in tests. */
  listen: readonly string[];
  /** `apps.http.grace_period` (set only when the config has none): how long a reload waits for in-flight requests. */
  gracePeriodMs: number;
  /** Set `automatic_https.disable` on the server (plain-HTTP hosts, tests). */
  disableAutomaticHttps?: boolean;
}

export interface CaddyOptions {
  /** config.caddyAdmin. */
  admin: string;
  /** config.caddyServer. */
  server: string;
  serverSettings: CaddyServerSettings;
  proxy?: Partial<ProxySettings>;
  /** Deadline of one admin request. Default 10 s. */
  timeoutMs?: number;
}

/** What a write verb did. */
export interface CaddyChange {
  /** False when the config already was as wanted (no config change, no reload). */
  changed: boolean;
}

/** One upstream as Caddy's `/reverse_proxy/upstreams` reports it. */
export interface UpstreamCount {
  /** `127.0.0.1:20001`. */
  address: string;
  /** Loopback port of the address, when it is one. */
  port: number | undefined;
  /** Requests in flight to this upstream right now (across all routes and old configs still draining). */
  numRequests: number;
  fails: number;
}

/** The Caddy driver's verbs (fakes are objects of these function fields). */
export interface CaddyDriver {
  /** Create the operator's server (and `apps.http.grace_period`) when missing; never touches others. */
  ensureServer(): Promise<CaddyChange>;
  /**
   * Make app `key`'s route serve `domain` from `127.0.0.1:<port>` for each of `upstreams` (in order);
   * no upstreams: the route answers 503 (see routeJson). E_DOMAIN_EXISTS when another route of the
   * server already matches `domain`.
   */
  upsertRoute(key: AppKey, domain: string, upstreams: readonly number[]): Promise<CaddyChange>;
  /** Replace the upstreams of app `key`'s route (one config change: the traffic switch). E_ROUTE_NOT_FOUND without a route. */
  setUpstreams(key: AppKey, upstreams: readonly number[]): Promise<CaddyChange>;
  /** Remove app `key`'s route (all copies, if duplicated). No route: `changed: false`. */
  removeRoute(key: AppKey): Promise<CaddyChange>;
  /**
   * Move app `key`'s route from `oldDomain` to `newDomain`, keeping its upstreams. E_ROUTE_NOT_FOUND when
   * the app has no route for `oldDomain` (a route already on `newDomain` is success, `changed: false`),
   * E_DOMAIN_EXISTS when another route in any server already matches `newDomain`, E_CADDY_UNAVAILABLE
   * when Caddy does not answer.
   */
  moveDomain(key: AppKey, oldDomain: string, newDomain: string): Promise<CaddyChange>;
  /** In-flight request counts per upstream (`GET /reverse_proxy/upstreams`), for draining. */
  upstreamCounts(): Promise<UpstreamCount[]>;
}

/** How long a refused/reset admin connection is retried before Caddy counts as unavailable. */
const RECONNECT_WINDOW_MS = 1_500;

/** A counted, deadline-bound, never-reused admin API caller. Shared with the Caddy observer. */
export interface CaddyAdmin {
  readonly label: string;
  call(method: 'GET' | 'POST' | 'PUT' | 'PATCH' | 'DELETE', path: string, opts?: { body?: unknown; ifMatch?: string }): Promise<HttpReply>;
  /** GET a config path: `value` undefined when the path does not exist; `etag` for If-Match. */
  read(path: string): Promise<{ value: unknown; etag: string | undefined }>;
  close(): Promise<void>;
}

/** A client for the admin API at `admin` (`http://host:port` or `unix:/path`). */
export function createCaddyAdmin(admin: string, opts: { timeoutMs?: number } = {}): CaddyAdmin {
  const target: HttpTarget = parseHttpTarget(admin);
  const timeoutMs = opts.timeoutMs ?? 10_000;
  const call: CaddyAdmin['call'] = async (method, path, o = {}) => {
    countHostCall('caddy');
    const headers: Record<string, string> = {};
    let body: string | undefined;
    if (o.body !== undefined) {
      body = JSON.stringify(o.body);
      headers['content-type'] = 'application/json';
    }
    if (o.ifMatch !== undefined) headers['if-match'] = o.ifMatch;
    // Caddy closes and reopens its admin listener after every config change, so a connection made in
    // that window is refused or reset. Retry such failures briefly. A write retried after it was in
    // fact applied is harmless: writes carry If-Match, so the repeat gets 412 and the verb re-reads.
    const started = Date.now();
    for (let attempt = 1; ; attempt += 1) {
      try {
        return await httpCall(target, { method, path, headers, timeoutMs, noReuse: true, ...(body === undefined ? {} : { body }) });
      } catch (err) {
        const unreachable = err instanceof TransportError && err.reason === 'unreachable';
        if (!unreachable || Date.now() - started >= RECONNECT_WINDOW_MS) {
          const why = err instanceof TransportError && err.reason === 'timeout' ? `no answer within ${timeoutMs} ms` : err instanceof Error ? err.message : String(err);
          throw new CrateError('E_CADDY_UNAVAILABLE', `Caddy admin API at ${target.label} unavailable: ${why}`, { cause: err, details: { attempts: attempt } });
        }
        await new Promise((resolve) => setTimeout(resolve, Math.min(200, 10 * 2 ** attempt)));
        countHostCall('caddy');
      }
    }
  };
  return {
    label: target.label,
    call,
    async read(path) {
      const r = await call('GET', path);
      // A path below a missing key: Caddy 2.6 answers 400 "invalid traversal path"; a missing key: 200 null.
      if (r.status === 400 && /invalid traversal path|unknown object key/i.test(r.body)) return { value: undefined, etag: undefined };
      if (r.status !== 200) throw caddyError(r, `GET ${path}`);
      const value = parseJsonBody(r, `GET ${path}`);
      const etag = r.trailers.etag ?? r.headers.etag;
      return { value: value === null ? undefined : value, etag: typeof etag === 'string' ? etag : undefined };
    },
    close: () => target.dispatcher.close(),
  };
}

/** Caddy's `{"error": ...}` message of a reply. */
export function caddyMessage(r: HttpReply): string {
  try {
    const j = JSON.parse(r.body) as { error?: unknown };
    if (typeof j.error === 'string') return j.error;
  } catch {
    // Not JSON: keep the text.
  }
  return r.body.trim().slice(0, 500) || `HTTP ${r.status}`;
}

function caddyError(r: HttpReply, what: string): CrateError {
  if (r.status === 412) return new CrateError('E_CADDY_CONFLICT', `${what}: the config changed since it was read`, { details: { status: 412 } });
  return new CrateError('E_CADDY', `${what}: ${caddyMessage(r)}`, { details: { status: r.status } });
}

/** Caddy duration text of milliseconds. */
function duration(ms: number): string {
  return ms % 1000 === 0 ? `${ms / 1000}s` : `${ms}ms`;
}

const locks = new Map<string, Promise<void>>();
/** Read-modify-write attempts before E_CADDY_CONFLICT. */
const MAX_ATTEMPTS = 8;

/** Run `fn` after every earlier holder of `name` in this process finished (a FIFO mutex). */
async function withLock<T>(name: string, fn: () => Promise<T>): Promise<T> {
  const prev = locks.get(name) ?? Promise.resolve();
  let release = (): void => undefined;
  const mine = new Promise<void>((resolve) => {
    release = resolve;
  });
  const tail = prev.then(() => mine);
  locks.set(name, tail);
  await prev;
  try {
    return await fn();
  } finally {
    release();
    if (locks.get(name) === tail) locks.delete(name);
  }
}

/** The real driver. */
export function createCaddyDriver(opts: CaddyOptions): CaddyDriver & { admin: CaddyAdmin; close(): Promise<void> } {
  const admin = createCaddyAdmin(opts.admin, opts.timeoutMs === undefined ? {} : { timeoutMs: opts.timeoutMs });
  const proxy: ProxySettings = { ...DEFAULT_PROXY, ...(opts.proxy ?? {}) };
  const server = opts.server;
  if (!/^[A-Za-z0-9_-]{1,64}$/.test(server)) throw new CrateError('E_CONFIG', `caddy server name refused: ${server}`);
  const serverPath = `/config/apps/http/servers/${server}`;
  const routesPath = `${serverPath}/routes`;

  /** Read-modify-write under the lock, retried when If-Match says someone else wrote in between. */
  const rmw = async <T>(fn: () => Promise<T>): Promise<T> =>
    withLock(admin.label, async () => {
      for (let attempt = 1; ; attempt += 1) {
        try {
          return await fn();
        } catch (err) {
          if (!(err instanceof CrateError && err.code === 'E_CADDY_CONFLICT') || attempt >= MAX_ATTEMPTS) throw err;
        }
        // Another writer won the race: back off a little (jittered) so two writers stop colliding.
        await new Promise((resolve) => setTimeout(resolve, Math.floor(attempt * (10 + Math.random() * 40))));
      }
    });

  const write = async (method: 'POST' | 'PUT' | 'PATCH' | 'DELETE', path: string, body: unknown, etag: string | undefined): Promise<void> => {
    const r = await admin.call(method, path, { ...(body === undefined ? {} : { body }), ...(etag === undefined ? {} : { ifMatch: etag }) });
    if (r.status !== 200) throw caddyError(r, `${method} ${path}`);
  };

  const apply = async (w: RouteWrite, etag: string | undefined): Promise<CaddyChange> => {
    switch (w.op) {
      case 'none':
        return { changed: false };
      case 'patch':
        await write('PATCH', `${routesPath}/${w.index}`, w.route, etag);
        break;
      case 'insert':
        await write('PUT', `${routesPath}/${w.index}`, w.route, etag);
        break;
      case 'append':
        await write('POST', routesPath, w.route, etag);
        break;
      case 'delete':
        await write('DELETE', `${routesPath}/${w.index}`, undefined, etag);
        break;
      case 'replace':
        await write('PATCH', routesPath, w.routes, etag);
        break;
    }
    return { changed: true };
  };

  const newServer = (): Record<string, unknown> => ({
    listen: [...opts.serverSettings.listen],
    routes: [],
    ...(opts.serverSettings.disableAutomaticHttps ? { automatic_https: { disable: true } } : {}),
  });

  /** ensureServer without the lock (callers hold it). One write at most. */
  const ensureServerLocked = async (): Promise<CaddyChange> => {
    const { value: cfg, etag } = await admin.read('/config/');
    const grace = duration(opts.serverSettings.gracePeriodMs);
    const c = (cfg ?? {}) as { apps?: { http?: { grace_period?: unknown; servers?: Record<string, { routes?: unknown }> } } };
    if (cfg === undefined) {
      await write('POST', '/config/', { apps: { http: { grace_period: grace, servers: { [server]: newServer() } } } }, etag);
      return { changed: true };
    }
    if (c.apps === undefined) {
      await write('PUT', '/config/apps', { http: { grace_period: grace, servers: { [server]: newServer() } } }, etag);
      return { changed: true };
    }
    const http = c.apps.http;
    if (http === undefined) {
      await write('PUT', '/config/apps/http', { grace_period: grace, servers: { [server]: newServer() } }, etag);
      return { changed: true };
    }
    const existing = http.servers?.[server];
    const needServer = existing === undefined || existing === null;
    const needRoutes = !needServer && !Array.isArray(existing.routes);
    const needGrace = http.grace_period === undefined;
    if (!needServer && !needRoutes && !needGrace) return { changed: false };
    // One change for everything missing: the http app with only the missing parts added.
    const merged = {
      ...http,
      ...(needGrace ? { grace_period: grace } : {}),
      servers: { ...(http.servers ?? {}), [server]: needServer ? newServer() : { ...existing, routes: [] } },
    };
    await write('PATCH', '/config/apps/http', merged, etag);
    return { changed: true };
  };

  /** The server's routes (ensuring the server exists when `ensure`), with the ETag of what was read. */
  const readRoutes = async (ensure: boolean): Promise<{ routes: unknown[]; etag: string | undefined } | undefined> => {
    let { value, etag } = await admin.read(routesPath);
    if (!Array.isArray(value)) {
      if (!ensure) return undefined;
      await ensureServerLocked();
      ({ value, etag } = await admin.read(routesPath));
      if (!Array.isArray(value)) throw new CrateError('E_CADDY', `server ${server} has no route list after ensureServer`);
    }
    return { routes: value as unknown[], etag };
  };

  const notFound = (key: AppKey, what: string): CrateError =>
    new CrateError('E_ROUTE_NOT_FOUND', `no route ${routeId(key)}${what}`, { details: { route: routeId(key) } });

  return {
    admin,
    close: () => admin.close(),

    ensureServer: () => rmw(ensureServerLocked),

    upsertRoute: (key, domain, upstreams) =>
      rmw(async () => {
        const route = routeJson(key, domain, upstreams, proxy);
        const cur = (await readRoutes(true)) as { routes: unknown[]; etag: string | undefined };
        if (routesMatching(cur.routes, domain, key).length > 0) {
          throw new CrateError('E_DOMAIN_EXISTS', `another route already serves ${domain}`, { details: { domain } });
        }
        return apply(planRouteWrite(cur.routes, placeRoute(cur.routes, route)), cur.etag);
      }),

    setUpstreams: (key, upstreams) =>
      rmw(async () => {
        checkPorts(upstreams);
        const cur = await readRoutes(false);
        const found = cur ? findRoute(cur.routes, key) : undefined;
        const domain = found ? routeDomains(found.route)[0] : undefined;
        if (!cur || !found || domain === undefined) throw notFound(key, '');
        return apply(planRouteWrite(cur.routes, placeRoute(cur.routes, routeJson(key, domain, upstreams, proxy))), cur.etag);
      }),

    removeRoute: (key) =>
      rmw(async () => {
        const cur = await readRoutes(false);
        if (!cur) return { changed: false };
        const id = routeId(key);
        const after = cur.routes.filter((r) => (r as { '@id'?: unknown } | null)?.['@id'] !== id);
        return apply(planRouteWrite(cur.routes, after), cur.etag);
      }),

    moveDomain: (key, oldDomain, newDomain) =>
      rmw(async () => {
        checkDomain(oldDomain);
        checkDomain(newDomain);
        // One read of every server: our routes plus everyone's host matchers for the conflict check.
        const { value, etag } = await admin.read('/config/apps/http/servers');
        const servers = (value ?? {}) as Record<string, { routes?: unknown } | null>;
        const routes = servers[server]?.routes;
        const found = Array.isArray(routes) ? findRoute(routes, key) : undefined;
        if (!Array.isArray(routes) || !found) throw notFound(key, '');
        const domains = routeDomains(found.route);
        if (domains.includes(newDomain) && domains.length === 1) return { changed: false };
        if (!domains.includes(oldDomain)) throw notFound(key, ` for ${oldDomain}`);
        for (const [name, s] of Object.entries(servers)) {
          const rs = s?.routes;
          if (Array.isArray(rs) && routesMatching(rs, newDomain, name === server ? key : undefined).length > 0) {
            throw new CrateError('E_DOMAIN_EXISTS', `a route already serves ${newDomain}`, { details: { domain: newDomain, server: name } });
          }
        }
        const moved: CaddyRoute = { ...found.route, match: [{ host: [newDomain] }] };
        return apply(planRouteWrite(routes, placeRoute(routes, moved)), etag);
      }),

    async upstreamCounts() {
      const r = await admin.call('GET', '/reverse_proxy/upstreams');
      if (r.status !== 200) throw caddyError(r, 'GET /reverse_proxy/upstreams');
      const list = parseJsonBody(r, 'upstreams');
      if (!Array.isArray(list)) return [];
      return list.map((u: { address?: unknown; num_requests?: unknown; fails?: unknown }) => {
        const address = typeof u.address === 'string' ? u.address : '';
        return { address, port: dialPort(address), numRequests: Number(u.num_requests ?? 0), fails: Number(u.fails ?? 0) };
      });
    },
  };
}
