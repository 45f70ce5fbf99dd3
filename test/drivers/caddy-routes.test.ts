/**
 * Pure parts of the Caddy driver: route JSON, ids, placement and the one write between two lists.
 */
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { ID_PATTERN, routeId } from '../../src/core/identity.ts';
import {
  checkDomain,
  checkPorts,
  dialPort,
  NO_UPSTREAM_BODY,
  parseRouteId,
  placeRoute,
  planRouteWrite,
  routeDials,
  routeDomains,
  routeJson,
  routesMatching,
} from '../../src/drivers/caddy-routes.ts';
import type { RouteWrite } from '../../src/drivers/caddy-routes.ts';
import { parseServer } from '../../src/observers/caddy.ts';

const key = { team: 'acme-eu-2', env: 12, app: 345 };

/** Apply a write the way Caddy's admin API does (index paths; PUT inserts, POST appends, PATCH replaces). */
function applyWrite(before: readonly unknown[], w: RouteWrite): unknown[] {
  const out = [...before];
  switch (w.op) {
    case 'none':
      return out;
    case 'patch':
      out[w.index] = w.route;
      return out;
    case 'insert':
      out.splice(w.index, 0, w.route);
      return out;
    case 'append':
      return [...out, w.route];
    case 'delete':
      out.splice(w.index, 1);
      return out;
    case 'replace':
      return [...w.routes];
  }
}

describe('route ids', () => {
  it('round-trips every valid key, teams with dashes and digits included', () => {
    const team = fc.stringMatching(ID_PATTERN);
    fc.assert(
      fc.property(team, fc.integer({ min: 1, max: 2 ** 31 - 1 }), fc.integer({ min: 1, max: 2 ** 31 - 1 }), (t, env, app) => {
        expect(parseRouteId(routeId({ team: t, env, app }))).toEqual({ team: t, env, app });
      }),
    );
  });
  it('rejects ids the operator does not own', () => {
    for (const id of ['route-x-1-2', 'crate-route-', 'crate-route-x-1', 'crate-route-x-0-2', 'crate-route--1-2', 42, undefined, 'crate-route-a b-1-2']) {
      expect(parseRouteId(id)).toBeUndefined();
    }
  });
});

describe('route JSON', () => {
  it('has the documented shape, JSON values only', () => {
    expect(routeJson(key, 'shop.example.com', [20001, 20002])).toEqual({
      '@id': 'crate-route-acme-eu-2-12-345',
      match: [{ host: ['shop.example.com'] }],
      handle: [
        {
          handler: 'reverse_proxy',
          upstreams: [{ dial: '127.0.0.1:20001' }, { dial: '127.0.0.1:20002' }],
          load_balancing: { try_duration: '5s', try_interval: '100ms' },
        },
      ],
      terminal: true,
    });
    expect(routeJson(key, 'a.test', [1], { tryDurationMs: 0, tryIntervalMs: 0 }).handle).toEqual([{ handler: 'reverse_proxy', upstreams: [{ dial: '127.0.0.1:1' }] }]);
  });
  it('refuses bad domains and ports', () => {
    for (const d of ['', 'A.test', 'a..b', 'a b', 'a"b', '-a.test', 'a.test.', '*.*.a', 'x/y']) expect(() => checkDomain(d), d).toThrow(/not a domain/);
    expect(() => checkPorts([])).toThrow(/at least one/);
    expect(() => routeJson(key, 'a.test', [0])).toThrow(/not a port/);
    expect(() => routeJson(key, 'a.test', [5, 5])).toThrow(/duplicate/);
  });
  it('a route without upstreams keeps its domain and answers 503 (every instance stopped)', () => {
    const r = routeJson(key, 'a.test', []);
    expect(r).toEqual({
      '@id': 'crate-route-acme-eu-2-12-345',
      match: [{ host: ['a.test'] }],
      handle: [{ handler: 'static_response', status_code: 503, body: NO_UPSTREAM_BODY }],
      terminal: true,
    });
    expect(routeDials(r)).toEqual([]);
  });
  it('reads domains, dials and ports back', () => {
    const r = routeJson(key, '*.example.com', [20001]);
    expect(routeDomains(r)).toEqual(['*.example.com']);
    expect(routeDials(r)).toEqual(['127.0.0.1:20001']);
    expect(dialPort('127.0.0.1:20001')).toBe(20001);
    expect(dialPort('10.0.0.1:80')).toBeUndefined();
    expect(routesMatching([r, routeJson({ ...key, app: 1 }, 'a.test', [1])], '*.example.com', undefined)).toHaveLength(1);
    expect(routesMatching([r], '*.example.com', key)).toHaveLength(0);
  });
});

describe('placement', () => {
  const k = (app: number): typeof key => ({ ...key, app });
  const exact = (app: number, d = `a${app}.test`): Record<string, unknown> => routeJson(k(app), d, [20000 + app]);
  const wild = (app: number): Record<string, unknown> => routeJson(k(app), `*.w${app}.test`, [20000 + app]);
  const catchAll = { handle: [{ handler: 'static_response', body: 'fallback' }] };

  it('exact hosts go first, wildcards before catch-alls, existing valid positions are kept', () => {
    let routes: unknown[] = [catchAll];
    routes = placeRoute(routes, wild(1));
    routes = placeRoute(routes, exact(2));
    routes = placeRoute(routes, exact(3));
    routes = placeRoute(routes, wild(4));
    expect(routes.map((r) => routeDomains(r)[0] ?? 'catch-all')).toEqual(['a3.test', 'a2.test', '*.w1.test', '*.w4.test', 'catch-all']);
    // Changing upstreams keeps the position.
    const moved = placeRoute(routes, routeJson(k(2), 'a2.test', [30000]));
    expect(moved.map((r) => routeDomains(r)[0] ?? 'catch-all')).toEqual(['a3.test', 'a2.test', '*.w1.test', '*.w4.test', 'catch-all']);
    // An exact route turned wildcard moves behind the other wildcards, before the catch-all.
    const w = placeRoute(routes, routeJson(k(3), '*.x.test', [1]));
    expect(w.map((r) => routeDomains(r)[0] ?? 'catch-all')).toEqual(['a2.test', '*.w1.test', '*.w4.test', '*.x.test', 'catch-all']);
  });

  it('duplicate ids collapse to one', () => {
    const dup = [exact(1), exact(2), exact(1)];
    expect(placeRoute(dup, exact(1)).map((r) => routeDomains(r)[0])).toEqual(['a1.test', 'a2.test']);
  });
});

describe('one write between two lists', () => {
  it('picks the smallest op', () => {
    const a = { '@id': 'a' };
    const b = { '@id': 'b' };
    const c = { '@id': 'c' };
    expect(planRouteWrite([a, b], [a, b])).toEqual({ op: 'none' });
    expect(planRouteWrite([a, b], [a, c])).toEqual({ op: 'patch', index: 1, route: c });
    expect(planRouteWrite([a, b], [c, a, b])).toEqual({ op: 'insert', index: 0, route: c });
    expect(planRouteWrite([a, b], [a, b, c])).toEqual({ op: 'append', route: c });
    expect(planRouteWrite([], [c])).toEqual({ op: 'append', route: c });
    expect(planRouteWrite([a, b, c], [a, c])).toEqual({ op: 'delete', index: 1 });
    expect(planRouteWrite([a, b], [b, a])).toEqual({ op: 'replace', routes: [b, a] });
  });

  it('applying the planned write always yields the target list', () => {
    const item = fc.constantFrom(...'abcdef').map((id) => ({ '@id': id, v: 1 }));
    fc.assert(
      fc.property(fc.array(item, { maxLength: 6 }), fc.array(item, { maxLength: 6 }), (before, after) => {
        expect(applyWrite(before, planRouteWrite(before, after))).toEqual(after);
      }),
    );
  });
});

describe('observer parsing', () => {
  it('owned routes with keys, dials and ports; foreign and duplicate routes counted', () => {
    const snap = parseServer({
      listen: [':80'],
      routes: [routeJson(key, 'a.test', [20001, 20002]), { handle: [] }, routeJson(key, 'a.test', [20003]), { '@id': 'crate-route-bad' }],
    });
    expect(snap).toEqual({
      unavailable: false,
      serverExists: true,
      routes: [
        { id: routeId(key), key, index: 0, domains: ['a.test'], dials: ['127.0.0.1:20001', '127.0.0.1:20002'], ports: [20001, 20002], drift: ['duplicate route'] },
        { id: routeId(key), key, index: 2, domains: ['a.test'], dials: ['127.0.0.1:20003'], ports: [20003], drift: ['duplicate route'] },
      ],
      duplicateIds: [routeId(key)],
      foreignRoutes: 2,
    });
    expect(parseServer(undefined)).toMatchObject({ serverExists: false, routes: [] });
  });
});
