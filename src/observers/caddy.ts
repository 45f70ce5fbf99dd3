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
import { dialPort, parseRouteId, routeDials, routeDomains } from '../drivers/caddy-routes.ts';

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

/** Turn a server object (or undefined when missing) into a snapshot (pure). */
export function parseServer(server: unknown): CaddySnapshot {
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
    routes.push({
      id,
      key,
      index,
      domains: routeDomains(r),
      dials,
      ports: dials.map(dialPort).filter((p): p is number => p !== undefined),
    });
  });
  return { unavailable: false, serverExists: true, routes, duplicateIds: [...dup].sort(), foreignRoutes: foreign };
}

/** Observe server `server` through `admin` (one request). */
export async function observeCaddy(admin: CaddyAdmin, server: string): Promise<CaddyObservation> {
  try {
    const { value } = await admin.read(`/config/apps/http/servers/${encodeURIComponent(server)}`);
    return parseServer(value);
  } catch (err) {
    return { unavailable: true, ...describeError(err) };
  }
}

/** An observer bound to config.caddyAdmin and config.caddyServer. */
export function createCaddyObserver(adminAddress: string, server: string, opts: { timeoutMs?: number } = {}): { observe(): Promise<CaddyObservation>; close(): Promise<void> } {
  const admin = createCaddyAdmin(adminAddress, opts);
  return { observe: () => observeCaddy(admin, server), close: () => admin.close() };
}
