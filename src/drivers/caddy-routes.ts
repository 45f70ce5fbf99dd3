/**
 * The Caddy routes the operator writes, decided without talking to Caddy: the route of an app, where it
 * goes in the server's route list, and the single admin-API write that turns one route list into
 * another.
 *
 * Route shape (one per app, `@id` = routeId(key)):
 *
 *   { "@id": "crate-route-<team>-<env>-<app>",
 *     "match": [{ "host": ["<domain>"] }],
 *     "handle": [{ "handler": "reverse_proxy",
 *                  "upstreams": [{ "dial": "127.0.0.1:<port>" }, ...],
 *                  "load_balancing": { "try_duration": "5s", "try_interval": "100ms" } }],
 *     "terminal": true }
 *
 * Reverse-proxy settings, chosen for zero downtime on Caddy 2.6.2 (measured, see caddy.ts):
 * - `try_duration`/`try_interval`: when dialing an upstream fails (connection refused: an instance
 *   that just stopped, or has not bound its port yet during `recreate`), Caddy waits `try_interval`
 *   and picks again (any method: no request was sent) until `try_duration` has passed, instead of
 *   answering 502 at once. The default random selection makes a retry likely to land on another
 *   upstream. On 2.6.2 a retried request that carries a body fails anyway (the body was consumed by
 *   the failed attempt; `buffer_requests` would fix that but buffers whole bodies in memory, so it is
 *   not set); bodyless requests (GET, HEAD, DELETE...) are the ones rescued.
 * - No active or passive health checks: the operator's own probes decide health and traffic only moves
 *   to healthy instances; a passive check would mark a briefly refusing single upstream down and turn
 *   the next requests into immediate 503s instead of retried dials.
 * - Only `127.0.0.1:<port>` upstreams: apps listen on loopback.
 *
 * Ordering: Caddy tries routes in order and host matchers are not sorted for JSON configs, so exact
 * host routes are kept before wildcard (`*.example.com`) and catch-all routes.
 */
import { isDeepStrictEqual } from 'node:util';
import { CrateError } from '../core/errors.ts';
import { ID_PATTERN, routeId } from '../core/identity.ts';
import type { AppKey } from '../core/identity.ts';

/** Prefix of every route `@id` the operator owns. */
export const ROUTE_ID_PREFIX = 'crate-route-';

/** Reverse-proxy retry settings (see module comment). */
export interface ProxySettings {
  /** `load_balancing.try_duration`; 0 disables retries. */
  tryDurationMs: number;
  /** `load_balancing.try_interval`. */
  tryIntervalMs: number;
}

export const DEFAULT_PROXY: ProxySettings = { tryDurationMs: 5_000, tryIntervalMs: 100 };

/** A route as JSON (what the admin API stores). */
export type CaddyRoute = Record<string, unknown>;

/** The app key of an operator route id; undefined for ids the operator does not own. */
export function parseRouteId(id: unknown): AppKey | undefined {
  if (typeof id !== 'string' || !id.startsWith(ROUTE_ID_PREFIX)) return undefined;
  // env and app are positive integers at the end; the team (which may contain '-') is the rest.
  const m = /^(.+)-([1-9][0-9]{0,9})-([1-9][0-9]{0,9})$/.exec(id.slice(ROUTE_ID_PREFIX.length));
  if (!m || !ID_PATTERN.test(m[1] as string)) return undefined;
  return { team: m[1] as string, env: Number(m[2]), app: Number(m[3]) };
}

/** Throw E_ROUTE_REFUSED unless `domain` is a plausible host matcher value (the API validated it already). */
export function checkDomain(domain: string): void {
  if (!/^(?:\*\.)?[a-z0-9](?:[a-z0-9.-]{0,251}[a-z0-9])?$/.test(domain) || domain.includes('..')) {
    throw new CrateError('E_ROUTE_REFUSED', `not a domain: ${JSON.stringify(domain)}`, { details: { domain } });
  }
}

/** Throw E_ROUTE_REFUSED unless `ports` is a non-empty list of distinct TCP ports. */
export function checkPorts(ports: readonly number[]): void {
  if (ports.length === 0) throw new CrateError('E_ROUTE_REFUSED', 'a route needs at least one upstream');
  for (const p of ports) if (!Number.isInteger(p) || p < 1 || p > 65535) throw new CrateError('E_ROUTE_REFUSED', `not a port: ${p}`);
  if (new Set(ports).size !== ports.length) throw new CrateError('E_ROUTE_REFUSED', `duplicate upstream ports: ${ports.join(',')}`);
}

function duration(ms: number): string {
  return ms % 1000 === 0 ? `${ms / 1000}s` : `${ms}ms`;
}

/** What a route without upstreams answers (with 503): the app exists but none of its instances runs. */
export const NO_UPSTREAM_BODY = 'no instance of this app is running\n';

/**
 * The route of app `key` for `domain` proxying to `127.0.0.1:<port>` for each port, in order. With no
 * ports (the platform stopped every instance) the route keeps the domain and answers 503
 * NO_UPSTREAM_BODY, so the domain neither falls through to another route nor looks served.
 */
export function routeJson(key: AppKey, domain: string, ports: readonly number[], proxy: ProxySettings = DEFAULT_PROXY): CaddyRoute {
  checkDomain(domain);
  if (ports.length === 0) {
    return { '@id': routeId(key), match: [{ host: [domain] }], handle: [{ handler: 'static_response', status_code: 503, body: NO_UPSTREAM_BODY }], terminal: true };
  }
  checkPorts(ports);
  const handler: Record<string, unknown> = {
    handler: 'reverse_proxy',
    upstreams: ports.map((p) => ({ dial: `127.0.0.1:${p}` })),
  };
  if (proxy.tryDurationMs > 0) handler.load_balancing = { try_duration: duration(proxy.tryDurationMs), try_interval: duration(proxy.tryIntervalMs) };
  return { '@id': routeId(key), match: [{ host: [domain] }], handle: [handler], terminal: true };
}

/** Host matcher values of a route (every `match[].host[]`). */
export function routeDomains(route: unknown): string[] {
  const out: string[] = [];
  const match = (route as { match?: unknown } | null)?.match;
  if (!Array.isArray(match)) return out;
  for (const m of match) {
    const host = (m as { host?: unknown } | null)?.host;
    if (Array.isArray(host)) for (const h of host) if (typeof h === 'string') out.push(h.toLowerCase());
  }
  return out;
}

/** Upstream dial addresses of a route's reverse_proxy handlers, in order. */
export function routeDials(route: unknown): string[] {
  const out: string[] = [];
  const handle = (route as { handle?: unknown } | null)?.handle;
  if (!Array.isArray(handle)) return out;
  for (const h of handle) {
    const hh = h as { handler?: unknown; upstreams?: unknown } | null;
    if (hh?.handler !== 'reverse_proxy' || !Array.isArray(hh.upstreams)) continue;
    for (const u of hh.upstreams) {
      const dial = (u as { dial?: unknown } | null)?.dial;
      if (typeof dial === 'string') out.push(dial);
    }
  }
  return out;
}

/** The port of a loopback dial address (`127.0.0.1:20001` → 20001); undefined otherwise. */
export function dialPort(dial: string): number | undefined {
  const m = /^(?:127\.0\.0\.1|localhost|\[::1\]):([0-9]{1,5})$/.exec(dial);
  return m ? Number(m[1]) : undefined;
}

function routeIdOf(r: unknown): unknown {
  return (r as { '@id'?: unknown } | null)?.['@id'];
}

/** True when every host matcher of the route is an exact host (no wildcard) and it has at least one. */
function exactOnly(r: unknown): boolean {
  const d = routeDomains(r);
  return d.length > 0 && d.every((h) => !h.includes('*'));
}

/**
 * The route list with `route` in place of every route carrying the same `@id` (duplicates collapse to
 * one): an exact-host route first in the list, a wildcard route after the others but before the first
 * route without host matchers (a catch-all). A route already in a valid position stays there, so an
 * upstream change is a single in-place patch.
 */
export function placeRoute(routes: readonly unknown[], route: CaddyRoute): unknown[] {
  const id = route['@id'];
  const at = routes.findIndex((r) => routeIdOf(r) === id);
  const others = routes.filter((r) => routeIdOf(r) !== id);
  const hasHosts = (r: unknown): boolean => routeDomains(r).length > 0;
  if (at >= 0 && routes.length - others.length === 1) {
    const kept = [...routes];
    kept[at] = route;
    const before = kept.slice(0, at);
    const after = kept.slice(at + 1);
    const valid = exactOnly(route) ? before.every(exactOnly) : before.every(hasHosts) && !after.some(exactOnly);
    if (valid) return kept;
  }
  if (exactOnly(route)) return [route, ...others];
  const i = others.findIndex((r) => !hasHosts(r));
  return i < 0 ? [...others, route] : [...others.slice(0, i), route, ...others.slice(i)];
}

/** The one admin-API write that turns one route list into another. */
export type RouteWrite =
  | { op: 'none' }
  | { op: 'patch'; index: number; route: unknown }
  | { op: 'insert'; index: number; route: unknown }
  | { op: 'append'; route: unknown }
  | { op: 'delete'; index: number }
  | { op: 'replace'; routes: unknown[] };

const same = (a: unknown, b: unknown): boolean => isDeepStrictEqual(a, b);

/** Decide the smallest single write from `before` to `after` (never more than one config change). */
export function planRouteWrite(before: readonly unknown[], after: readonly unknown[]): RouteWrite {
  if (before.length === after.length) {
    const diff = before.map((r, i) => (same(r, after[i]) ? -1 : i)).filter((i) => i >= 0);
    if (diff.length === 0) return { op: 'none' };
    if (diff.length === 1) return { op: 'patch', index: diff[0] as number, route: after[diff[0] as number] };
    return { op: 'replace', routes: [...after] };
  }
  let i = 0;
  while (i < Math.min(before.length, after.length) && same(before[i], after[i])) i += 1;
  if (after.length === before.length + 1 && same(before.slice(i), after.slice(i + 1))) {
    return i === before.length ? { op: 'append', route: after[i] } : { op: 'insert', index: i, route: after[i] };
  }
  if (after.length === before.length - 1 && same(before.slice(i + 1), after.slice(i))) return { op: 'delete', index: i };
  return { op: 'replace', routes: [...after] };
}

/** The operator route of `key` in a route list (the first, when duplicated), with its index. */
export function findRoute(routes: readonly unknown[], key: AppKey): { index: number; route: CaddyRoute } | undefined {
  const id = routeId(key);
  const index = routes.findIndex((r) => routeIdOf(r) === id);
  return index < 0 ? undefined : { index, route: routes[index] as CaddyRoute };
}

/** Routes other than `key`'s whose host matchers include `domain`. */
export function routesMatching(routes: readonly unknown[], domain: string, except: AppKey | undefined): unknown[] {
  const id = except ? routeId(except) : undefined;
  const d = domain.toLowerCase();
  return routes.filter((r) => routeIdOf(r) !== id && routeDomains(r).includes(d));
}
