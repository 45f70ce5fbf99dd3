/**
 * The Caddy observer: one plain, JSON-serialisable snapshot of the routes the operator owns in its
 * server (config.caddyServer).
 *
 * Cost per pass is ONE admin request whatever the number of apps:
 * `GET /config/apps/http/servers/<server>`. Owned routes are those whose `@id` starts with
 * `crate-route-` and parses back to an app key; they are reported in route order with their host
 * matchers, upstream dials and the loopback ports of those dials. An unreachable admin API yields
 * `{unavailable: true, code, message}`, never a throw. In-flight counts per upstream are a separate,
 * on-demand call (CaddyDriver.upstreamCounts), used only while draining.
 */
import { describeError } from '../core/errors.ts';
import type { AppKey } from '../core/identity.ts';
import { createCaddyAdmin } from '../drivers/caddy.ts';
import type { CaddyAdmin } from '../drivers/caddy.ts';
import { isDeepStrictEqual } from 'node:util';
import { DEFAULT_PROXY, dialPort, parseRouteId, routeDials, routeDomains, routeJson, type ProxySettings } from '../drivers/caddy-routes.ts';

/** One operator route. */
export interface ObservedCaddyRoute {
  id: string;
  key: AppKey;
  /** Position in the server's route list. */
  index: number;
  /** Host matcher values (lower-case). */
  domains: string[];
  /** Upstream dial addresses, in order. */
  dials: string[];
  /** Loopback ports of `dials` (dials that are not `127.0.0.1:<port>` are left out). */
  ports: number[];
  /**
   * How the route differs from what the operator writes for its first host and these ports, in words
   * (`host <h>` for an extra host, `upstream <dial>` for a dial that is not `127.0.0.1:<port>`,
   * `route settings` for any other edit, `duplicate route`); empty when it is exactly as written.
   * Ports alone cannot show these edits, so the planner rewrites any route with drift.
   */
  drift: string[];
}

export interface CaddySnapshot {
  unavailable: false;
  /** Whether the operator's server exists (false after Caddy restarted with an empty config). */
  serverExists: boolean;
  routes: ObservedCaddyRoute[];
  /** Route ids present more than once (Caddy accepts duplicate `@id`s silently); upserting repairs them. */
  duplicateIds: string[];
  /** Routes in the server the operator does not own. */
  foreignRoutes: number;
}

export interface CaddyUnavailable {
  unavailable: true;
  code: string;
  message: string;
}

export type CaddyObservation = CaddySnapshot | CaddyUnavailable;

/** What makes `route` differ from the operator's rendering of it (see ObservedCaddyRoute.drift). */
function routeDrift(route: unknown, key: AppKey, domains: string[], dials: string[], ports: number[], proxy: ProxySettings): string[] {
  const out = [...domains.slice(1).map((h) => `host ${h}`), ...dials.filter((d) => !/^127\.0\.0\.1:[0-9]{1,5}$/.test(d)).map((d) => `upstream ${d}`)];
  if (out.length > 0) return out;
  let rendered: unknown;
  try {
    rendered = routeJson(key, domains[0] ?? '', ports, proxy);
  } catch {
    // No host or no upstream: nothing the operator would write.
    return ['route settings'];
  }
  return isDeepStrictEqual(route, rendered) ? [] : ['route settings'];
}

/**
 * Turn a server object (or undefined when missing) into a snapshot (pure). `proxy` are the settings
 * the operator's Caddy driver renders routes with (drift is measured against them).
 */
export function parseServer(server: unknown, proxy: ProxySettings = DEFAULT_PROXY): CaddySnapshot {
  if (server === undefined || server === null || typeof server !== 'object') {
    return { unavailable: false, serverExists: false, routes: [], duplicateIds: [], foreignRoutes: 0 };
  }
  const list = (server as { routes?: unknown }).routes;
  const routes: ObservedCaddyRoute[] = [];
  const seen = new Set<string>();
  const dup = new Set<string>();
  let foreign = 0;
  (Array.isArray(list) ? list : []).forEach((r: unknown, index) => {
    const id = (r as { '@id'?: unknown } | null)?.['@id'];
    const key = parseRouteId(id);
    if (!key || typeof id !== 'string') {
      foreign += 1;
      return;
    }
    if (seen.has(id)) dup.add(id);
    seen.add(id);
    const dials = routeDials(r);
    const domains = routeDomains(r);
    const ports = dials.map(dialPort).filter((p): p is number => p !== undefined);
    routes.push({ id, key, index, domains, dials, ports, drift: routeDrift(r, key, domains, dials, ports, proxy) });
  });
  for (const r of routes) if (dup.has(r.id)) r.drift.push('duplicate route');
  return { unavailable: false, serverExists: true, routes, duplicateIds: [...dup].sort(), foreignRoutes: foreign };
}

/** Observe server `server` through `admin` (one request). */
export async function observeCaddy(admin: CaddyAdmin, server: string, proxy: ProxySettings = DEFAULT_PROXY): Promise<CaddyObservation> {
  try {
    const { value } = await admin.read(`/config/apps/http/servers/${encodeURIComponent(server)}`);
    return parseServer(value, proxy);
  } catch (err) {
    return { unavailable: true, ...describeError(err) };
  }
}

/** An observer bound to config.caddyAdmin and config.caddyServer; `proxy` as given to the Caddy driver. */
export function createCaddyObserver(
  adminAddress: string,
  server: string,
  opts: { timeoutMs?: number; proxy?: Partial<ProxySettings> } = {},
): { observe(): Promise<CaddyObservation>; close(): Promise<void> } {
  const admin = createCaddyAdmin(adminAddress, opts);
  const proxy = { ...DEFAULT_PROXY, ...opts.proxy };
  return { observe: () => observeCaddy(admin, server, proxy), close: () => admin.close() };
}
