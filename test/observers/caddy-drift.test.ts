/**
 * The Caddy observer reports how an operator route differs from what the operator writes (pure
 * parsing, no Caddy): hand edits the ports alone do not show must still make the route drifted.
 */
import { describe, expect, it } from 'vitest';
import { routeId } from '../../src/core/identity.ts';
import { routeJson } from '../../src/drivers/caddy-routes.ts';
import { parseServer } from '../../src/observers/caddy.ts';

const key = { team: 'acme', env: 1, app: 2 };
const driftOf = (route: unknown, more: unknown[] = []): string[] | undefined => parseServer({ routes: [route, ...more] }).routes[0]?.drift;

describe('caddy observer: route drift', () => {
  it('an untouched route has none, also with other proxy settings when told', () => {
    expect(driftOf(routeJson(key, 'a.test', [20001, 20002]))).toEqual([]);
    const noRetry = routeJson(key, 'a.test', [20001], { tryDurationMs: 0, tryIntervalMs: 100 });
    expect(parseServer({ routes: [noRetry] }, { tryDurationMs: 0, tryIntervalMs: 100 }).routes[0]?.drift).toEqual([]);
    expect(driftOf(noRetry)).toEqual(['route settings']);
  });

  it('names extra hosts, upstreams that are not 127.0.0.1 ports, edited settings and duplicates', () => {
    const r = routeJson(key, 'a.test', [20001]) as { match: { host: string[] }[]; handle: Record<string, unknown>[] };
    const extraHost = structuredClone(r);
    extraHost.match[0]?.host.push('evil.test');
    expect(driftOf(extraHost)).toEqual(['host evil.test']);
    const foreignDial = structuredClone(r);
    (foreignDial.handle[0] as { upstreams: { dial: string }[] }).upstreams.push({ dial: '192.0.2.1:80' }, { dial: 'localhost:20001' });
    expect(driftOf(foreignDial)).toEqual(['upstream 192.0.2.1:80', 'upstream localhost:20001']);
    const extraHandler = structuredClone(r);
    extraHandler.handle.unshift({ handler: 'headers', response: { set: { 'X-Evil': ['1'] } } });
    expect(driftOf(extraHandler)).toEqual(['route settings']);
    expect(driftOf(r, [routeJson(key, 'a.test', [20009])])).toEqual(['duplicate route']);
    expect(routeId(key)).toBe(r['@id' as keyof typeof r]);
  });
});
