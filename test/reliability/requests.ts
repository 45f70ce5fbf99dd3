/**
 * Request generators for the API fuzzer, in four families:
 *
 * - `valid`: realistic requests for every endpoint over a small space of apps, ids and ports, so
 *   replays, conflicts, supersedes, start/stop of existing instances and domain moves all happen.
 * - `schema`: bodies derived from the request schemas of /openapi.json (schema-arb.ts): structurally
 *   valid, semantically anything.
 * - `mutated`: a valid request with 1-3 mutations (a field removed, retyped, replaced by a hostile
 *   string, an unknown or prototype-polluting key added, a map key made hostile).
 * - `hostile`: raw bytes, broken and pathological JSON, duplicate keys, wrong media types and
 *   methods, oversize bodies, traversal and junk in paths and queries, missing or wrong tokens.
 */
import fc from 'fast-check';
import { ENV_VALUES, HOSTILE_DOMAINS, HOSTILE_IDS, HOSTILE_IMAGES, HOSTILE_STRINGS, hostileVolumes } from './corpus.ts';
import type { Contract } from './contract.ts';
import { valueOf } from './schema-arb.ts';

/** One request for `app.inject`. */
export interface FuzzRequest {
  family: 'valid' | 'schema' | 'mutated' | 'hostile';
  method: string;
  url: string;
  headers: Record<string, string>;
  /** Raw body text or bytes (undefined: no body). */
  payload?: string | Buffer;
}

export interface FuzzSetup {
  token: string;
  serverId: string;
  volumesRoot: string;
  contract: Contract;
}

export const TEAMS = ['acme', 'beta', 'T-1.x'] as const;
const LONE_SURROGATE = /[\uD800-\uDBFF](?![\uDC00-\uDFFF])|(?<![\uD800-\uDBFF])[\uDC00-\uDFFF]/;
const INSTANCE_IDS = ['i-1', 'i-2', 'i-3', 'web-1'];
const MAX_DEPLOYMENT_ID = 300;

type Json = Record<string, unknown>;

const POST_PATHS = [
  '/v1/app/instance/binary/deploy',
  '/v1/app/instance/docker/deploy',
  '/v1/app/binary/deploy',
  '/v1/app/docker/deploy',
  '/v1/app/delete',
  '/v1/app/domain/update',
  '/v1/app/start',
  '/v1/app/stop',
  '/v1/app/restart',
] as const;

const keyArb = fc.record({
  team_id: fc.constantFrom(...TEAMS),
  environment_id: fc.integer({ min: 1, max: 2 }),
  app_id: fc.integer({ min: 1, max: 3 }),
});

/** Each app's own port block and domain, so most valid requests pass the host-wide checks. */
function portBase(k: { team_id: string; environment_id: number; app_id: number }): number {
  const t = TEAMS.indexOf(k.team_id as (typeof TEAMS)[number]);
  return 3000 + (t * 6 + (k.environment_id - 1) * 3 + (k.app_id - 1)) * 10;
}
function domainOf(k: { team_id: string; environment_id: number; app_id: number }): string {
  return `app${k.app_id}.env${k.environment_id}.${k.team_id.toLowerCase().replace(/[^a-z0-9-]/g, '-')}.example.com`;
}

const envKey = fc.stringMatching(/^[A-Za-z_][A-Za-z0-9_]{0,15}$/).filter((k) => !['__proto__', 'constructor', 'prototype'].includes(k));
const envValue = fc.oneof(
  { weight: 3, arbitrary: fc.string({ maxLength: 40, unit: 'grapheme' }) },
  { weight: 2, arbitrary: fc.constantFrom(...Object.values(ENV_VALUES)) },
  { weight: 1, arbitrary: fc.string({ maxLength: 20, unit: 'binary' }).map((x) => x.split(String.fromCharCode(0)).join('')).filter((x) => !LONE_SURROGATE.test(x)) },
);
const envVars = fc.dictionary(envKey, envValue, { maxKeys: 6, noNullPrototype: true });
const version = fc.stringMatching(/^[A-Za-z0-9][A-Za-z0-9_.+-]{0,15}$/);
const assetUrl = fc.oneof(
  version.map((v) => `https://assets.example.com/app-${v}.tar.gz`),
  fc.constantFrom('https://assets.example.com/a.zip?sig=abc&x=1', 'http://10.0.0.5:8080/app.tgz', 'https://[::1]/x', 'https://2130706433/app'),
);
const callbackUrl = fc.constantFrom('https://platform.example.com/hooks', 'https://platform.example.com/hooks?token=t0k3n', 'http://127.0.0.1:9/cb');
const strategy = fc.constantFrom('blue_green', 'rolling', 'recreate');
const image = fc.constantFrom('registry.example.com/acme/shop', 'nginx', 'localhost:5000/a/b', 'ghcr.io/org/app-x');
const dryRun = fc.constantFrom('', '', '', '?dry_run=true', '?dry_run=1', '?dry_run=false');

function slotsFor(base: number, strat: string, picks: { ids: string[]; n: number }): Json {
  if (strat === 'blue_green') return { blue: { instance_id: picks.ids[0] ?? 'i-1', port: base }, green: { instance_id: picks.ids[1] ?? 'i-2', port: base + 1 } };
  const out: Json = {};
  for (let i = 0; i < picks.n; i++) out[`s${i}`] = { instance_id: picks.ids[i] ?? `x-${i}`, port: base + i };
  return out;
}

const idPicks = fc.record({ ids: fc.shuffledSubarray(INSTANCE_IDS, { minLength: 3, maxLength: 4 }), n: fc.integer({ min: 1, max: 3 }) });
/** Now and then a port another app owns (a 400 naming the port). */
const portBaseArb = (k: { team_id: string; environment_id: number; app_id: number }): fc.Arbitrary<number> =>
  fc.oneof({ weight: 9, arbitrary: fc.constant(portBase(k)) }, { weight: 1, arbitrary: fc.constantFrom(3000, 3010, 3100) });
const domainArb = (k: { team_id: string; environment_id: number; app_id: number }): fc.Arbitrary<string> =>
  fc.oneof({ weight: 9, arbitrary: fc.constant(domainOf(k)) }, { weight: 1, arbitrary: fc.constantFrom('app1.env1.acme.example.com', '*.wild.example.com') });

const dockerExtras = (volumesRoot: string): fc.Arbitrary<Json> =>
  fc.record(
    {
      docker_command: fc.array(fc.oneof(fc.constantFrom('./server', '--port', '$PORT', '${PORT}', '%h', 'a b'), fc.string({ maxLength: 10 })), { maxLength: 4 }),
      registry_credentials: fc.record({ username: fc.constantFrom('deploy', 'u'), password: envValue }, { requiredKeys: ['username', 'password'] }),
      volumes: fc.array(fc.constantFrom('data:/var/lib/app', `${volumesRoot}/a:/data`, `${volumesRoot}/b:/srv:ro`, 'cache:/tmp/cache:rw'), { maxLength: 2 }),
      health_check_path: fc.constantFrom('/healthz', '/', null),
    },
    { requiredKeys: [] },
  );

/** A realistic request body for each POST endpoint. */
function validBody(path: (typeof POST_PATHS)[number], s: FuzzSetup): fc.Arbitrary<Json> {
  return keyArb.chain((k): fc.Arbitrary<Json> => {
    const common = { team_id: fc.constant(k.team_id), environment_id: fc.constant(k.environment_id), app_id: fc.constant(k.app_id), callback_url: callbackUrl };
    switch (path) {
      case '/v1/app/instance/binary/deploy':
        return fc
          .record({
            ...common,
            deployment_id: fc.integer({ min: 1, max: MAX_DEPLOYMENT_ID }),
            asset_url: assetUrl,
            domain: domainArb(k),
            env_vars: envVars,
            target_version: version,
            health_check_path: fc.constantFrom('/healthz', null, '/'),
            layout: fc.tuple(strategy, portBaseArb(k), idPicks),
          })
          .map(({ layout: [st, base, picks], ...b }) => ({ ...b, deployment_strategy: st, slots: slotsFor(base, st, picks) }));
      case '/v1/app/instance/docker/deploy':
        return fc
          .record({
            ...common,
            deployment_id: fc.integer({ min: 1, max: MAX_DEPLOYMENT_ID }),
            domain: domainArb(k),
            env_vars: envVars,
            image,
            image_tag: version,
            target_version: version,
            extras: dockerExtras(s.volumesRoot),
            layout: fc.tuple(strategy, portBaseArb(k), idPicks),
          })
          .map(({ extras, layout: [st, base, picks], ...b }) => ({ ...b, ...extras, deployment_strategy: st, slots: slotsFor(base, st, picks) }));
      case '/v1/app/binary/deploy':
        return fc
          .record({
            ...common,
            deployment_id: fc.integer({ min: 1, max: MAX_DEPLOYMENT_ID }),
            deployment_strategy: strategy,
            domain: domainArb(k),
            env_vars: envVars,
            asset_url: assetUrl,
            base: portBaseArb(k),
            ids: fc.shuffledSubarray(INSTANCE_IDS, { minLength: 1, maxLength: 3 }),
          })
          .map(({ base, ids, ...b }) => ({ ...b, instances: Object.fromEntries(ids.map((id, i) => [id, { port: base + i }])) }));
      case '/v1/app/docker/deploy':
        return fc
          .record({
            ...common,
            deployment_id: fc.integer({ min: 1, max: MAX_DEPLOYMENT_ID }),
            deployment_strategy: strategy,
            domain: domainArb(k),
            env_vars: envVars,
            image,
            image_tag: version,
            extras: dockerExtras(s.volumesRoot),
            base: portBaseArb(k),
            ids: fc.shuffledSubarray(INSTANCE_IDS, { minLength: 1, maxLength: 3 }),
          })
          .map(({ base, ids, extras, ...b }) => ({ ...b, ...extras, instances: Object.fromEntries(ids.map((id, i) => [id, { port: base + i }])) }));
      case '/v1/app/delete':
        return fc.record(
          {
            ...common,
            domain: domainArb(k),
            instance_ids: fc.shuffledSubarray(INSTANCE_IDS, { minLength: 1 }),
            deployment_id: fc.oneof(fc.integer({ min: 1, max: MAX_DEPLOYMENT_ID }), fc.constant(null)),
          },
          { requiredKeys: ['team_id', 'environment_id', 'app_id', 'callback_url', 'domain', 'instance_ids'] },
        );
      case '/v1/app/domain/update':
        return fc.record({
          team_id: fc.constant(k.team_id),
          environment_id: fc.constant(k.environment_id),
          app_id: fc.constant(k.app_id),
          old_domain: fc.constantFrom(domainOf(k), `moved.${domainOf(k)}`),
          new_domain: fc.constantFrom(`moved.${domainOf(k)}`, domainOf(k), 'app1.env1.acme.example.com'),
          server_id: fc.oneof({ weight: 9, arbitrary: fc.constant(s.serverId) }, { weight: 1, arbitrary: fc.constant('other-host') }),
        });
      default:
        return fc.record({ ...common, domain: domainArb(k), instance_id: fc.constantFrom(...INSTANCE_IDS, 'x-0') });
    }
  });
}

const statusId = fc.oneof(
  fc.integer({ min: 1, max: MAX_DEPLOYMENT_ID }).map(String),
  fc.constantFrom('op-0', '0', '-1', '2147483648', '99999999999', '1.5', '1e3', '%20', '%00', '..%2f..%2fetc', 'a%2Fb', '%2e%2e', 'x'.repeat(129), 'x'.repeat(600), '%E2%9C%93'),
  fc.string({ minLength: 1, maxLength: 20 }).map(encodeURIComponent),
);

function getRequest(s: FuzzSetup): fc.Arbitrary<FuzzRequest> {
  const auth = { authorization: `Bearer ${s.token}` };
  return fc.oneof(
    { weight: 6, arbitrary: statusId.map((id) => ({ family: 'valid' as const, method: 'GET', url: `/v1/app/deploy/${id}/status`, headers: auth })) },
    { weight: 6, arbitrary: statusId.map((id) => ({ family: 'valid' as const, method: 'GET', url: `/v1/app/instance/deploy/${id}/status`, headers: auth })) },
    { weight: 1, arbitrary: statusId.map((id) => ({ family: 'valid' as const, method: 'GET', url: `/v1/app/deploy/${id}/events`, headers: auth })) },
    { weight: 1, arbitrary: fc.constant({ family: 'valid' as const, method: 'GET', url: '/v1/apps', headers: auth }) },
    { weight: 1, arbitrary: fc.constant({ family: 'valid' as const, method: 'GET', url: '/healthz', headers: {} }) },
  );
}

/** Realistic requests across every endpoint. */
export function validRequests(s: FuzzSetup): fc.Arbitrary<FuzzRequest> {
  const headers = { authorization: `Bearer ${s.token}`, 'content-type': 'application/json' };
  const posts = POST_PATHS.map((p) =>
    fc.tuple(validBody(p, s), dryRun).map(([b, q]): FuzzRequest => ({ family: 'valid', method: 'POST', url: `${p}${q}`, headers, payload: JSON.stringify(b) })),
  );
  return fc.oneof({ weight: 8, arbitrary: fc.oneof(...posts) }, { weight: 2, arbitrary: getRequest(s) }, { weight: 1, arbitrary: planRequests(s) });
}

/** Bodies generated from the request schemas of the OpenAPI document. */
export function schemaRequests(s: FuzzSetup): fc.Arbitrary<FuzzRequest> {
  const headers = { authorization: `Bearer ${s.token}`, 'content-type': 'application/json' };
  // Every POST operation the document publishes (a route added later is fuzzed without editing this).
  const posts = s.contract.routes.filter((r) => r.method === 'POST' && s.contract.bodySchema('POST', r.path) !== undefined).map((r) => r.path);
  if (!POST_PATHS.every((p) => posts.includes(p))) throw new Error(`/openapi.json lacks some of ${POST_PATHS.join(', ')}`);
  const arbs = posts.map((p) => {
    const schema = s.contract.bodySchema('POST', p) as NonNullable<ReturnType<Contract['bodySchema']>>;
    // Mostly within the valid family's small app space (so families interact: conflicts, supersedes,
    // start/stop of instances they created) and so the state stays small enough to compare each time.
    const identity = fc.option(keyArb, { freq: 10, nil: undefined });
    const plain = (POST_PATHS as readonly string[]).includes(p);
    return fc.tuple(valueOf(schema), identity, plain ? dryRun : fc.constant('')).map(([b, k, q]): FuzzRequest => ({
      family: 'schema',
      method: 'POST',
      url: `${p}${q}`,
      headers,
      payload: JSON.stringify(k && plain ? { ...(b as Json), ...k } : b),
    }));
  });
  return fc.oneof(...arbs);
}

/** Valid desired-state documents for `POST /v1/plan` (a dry run of a document). */
export function planRequests(s: FuzzSetup): fc.Arbitrary<FuzzRequest> {
  const headers = { authorization: `Bearer ${s.token}`, 'content-type': 'application/json' };
  return fc
    .record({ k: keyArb, version, env: envVars, runtime: fc.constantFrom('binary', 'docker'), strat: strategy, n: fc.integer({ min: 1, max: 3 }), asset: assetUrl, cb: callbackUrl, id: fc.integer({ min: 1, max: MAX_DEPLOYMENT_ID }) })
    .map(({ k, version: v, env, runtime, strat, n, asset, cb, id }): FuzzRequest => {
      const base = portBase(k);
      const instances = Object.fromEntries(Array.from({ length: strat === 'blue_green' ? 2 : n }, (_, i) => [`i-${i + 1}`, { port: base + i, slot: ['blue', 'green', 's3'][i], state: 'running', generation: 0 }]));
      const doc = {
        apiVersion: 'crate-operator/v1',
        kind: 'App',
        metadata: { team: k.team_id, environment: k.environment_id, app: k.app_id },
        spec: {
          runtime,
          model: 'instance',
          domain: domainOf(k),
          strategy: strat,
          version: v,
          ...(runtime === 'binary' ? { binary: { asset_url: asset } } : { docker: { image: 'registry.example.com/acme/shop', tag: v } }),
          env,
          health_check_path: '/healthz',
          instances,
        },
        deployment: { id: String(id), callback_url: cb, requested_at: '2025-01-01T00:00:00.000Z' },
      };
      return { family: 'valid', method: 'POST', url: '/v1/plan', headers, payload: JSON.stringify(doc) };
    });
}

const hostileValue: fc.Arbitrary<unknown> = fc.oneof(
  fc.constantFrom(...HOSTILE_STRINGS),
  fc.constantFrom(0, -1, 1.5, 2 ** 31, 2 ** 53, -(2 ** 31) - 1, 1e308, '1', 'true', true, false, null, [], {}, [null], { $ref: '#' }),
  fc.anything({ maxDepth: 3, withNullPrototype: false }),
  fc.integer({ min: 1, max: 2000 }).map((n) => JSON.parse(`${'['.repeat(n)}${']'.repeat(n)}`) as unknown),
);

/** Every path to a value in a JSON tree (keys of objects, indices of arrays). */
function paths(v: unknown, prefix: (string | number)[] = [], out: (string | number)[][] = []): (string | number)[][] {
  // Depth bombs from earlier mutations are values, not places to mutate further.
  if (prefix.length > 6) return out;
  if (Array.isArray(v)) v.forEach((x, i) => paths(x, [...prefix, i], out).push([...prefix, i]));
  else if (v !== null && typeof v === 'object') for (const [k, x] of Object.entries(v)) paths(x, [...prefix, k], out).push([...prefix, k]);
  return out;
}

function getAt(root: unknown, p: (string | number)[]): { parent: Record<string | number, unknown>; key: string | number } | undefined {
  let cur = root as Record<string | number, unknown>;
  for (const k of p.slice(0, -1)) cur = cur[k] as Record<string | number, unknown>;
  const key = p[p.length - 1];
  return key === undefined ? undefined : { parent: cur, key };
}

type Mutation = { op: 'delete' | 'retype' | 'add' | 'rekey' | 'proto'; pick: number; value: unknown; name: string };

const mutation: fc.Arbitrary<Mutation> = fc.record({
  op: fc.constantFrom('delete', 'retype', 'retype', 'add', 'rekey', 'proto'),
  pick: fc.nat(),
  value: hostileValue,
  name: fc.oneof(fc.constantFrom(...HOSTILE_IDS, 'colour', 'env', 'status'), fc.string({ maxLength: 8 })),
});

function applyMutations(body: Json, ms: Mutation[]): string {
  const root = structuredClone(body);
  const protoKeys: string[] = [];
  for (const m of ms) {
    const all = paths(root);
    if (m.op === 'proto') {
      protoKeys.push(['__proto__', 'constructor', 'prototype'][m.pick % 3] as string);
      continue;
    }
    if (m.op === 'add') {
      const objs = [[], ...all].filter((p) => {
        const at = p.length === 0 ? root : getAt(root, p)?.parent[p[p.length - 1] as string];
        return at !== null && typeof at === 'object' && !Array.isArray(at);
      });
      const p = objs[m.pick % objs.length] as (string | number)[];
      const target = (p.length === 0 ? root : (getAt(root, p)?.parent[p[p.length - 1] as string] as Json));
      // A copy each time: constant values are shared between samples, and one inserted twice (or
      // into itself) would make a cycle.
      target[m.name] = structuredClone(m.value);
      continue;
    }
    if (all.length === 0) continue;
    const p = all[m.pick % all.length] as (string | number)[];
    const at = getAt(root, p);
    if (!at) continue;
    if (m.op === 'delete') {
      if (Array.isArray(at.parent)) (at.parent as unknown[]).splice(Number(at.key), 1);
      else delete at.parent[at.key];
    } else if (m.op === 'retype') at.parent[at.key] = structuredClone(m.value);
    else if (!Array.isArray(at.parent)) {
      const v = at.parent[at.key];
      delete at.parent[at.key];
      at.parent[m.name] = v;
    }
  }
  let text = JSON.stringify(root);
  // JSON.stringify cannot write an own `__proto__` key: splice prototype keys into the text.
  for (const k of protoKeys) text = `{"${k}":{"polluted":true},${text.slice(1)}`;
  return text;
}

/** Valid requests with 1-3 mutations. */
export function mutatedRequests(s: FuzzSetup): fc.Arbitrary<FuzzRequest> {
  const headers = { authorization: `Bearer ${s.token}`, 'content-type': 'application/json' };
  return fc.oneof(
    ...POST_PATHS.map((p) =>
      fc.tuple(validBody(p, s), fc.array(mutation, { minLength: 1, maxLength: 3 }), dryRun).map(([b, ms, q]): FuzzRequest => ({
        family: 'mutated',
        method: 'POST',
        url: `${p}${q}`,
        headers,
        payload: applyMutations(b, ms),
      })),
    ),
    // Single hostile values in the fields that reach names, paths and configs.
    fc
      .tuple(validBody('/v1/app/instance/docker/deploy', s), fc.constantFrom('team_id', 'domain', 'image', 'target_version', 'image_tag', 'health_check_path'), fc.oneof(fc.constantFrom(...HOSTILE_IDS), fc.constantFrom(...HOSTILE_DOMAINS), fc.constantFrom(...HOSTILE_IMAGES)))
      .map(([b, f, v]): FuzzRequest => ({ family: 'mutated', method: 'POST', url: '/v1/app/instance/docker/deploy', headers, payload: JSON.stringify({ ...b, [f]: v }) })),
    fc
      .tuple(validBody('/v1/app/docker/deploy', s), fc.constantFrom(...hostileVolumes(s.volumesRoot)))
      .map(([b, v]): FuzzRequest => ({ family: 'mutated', method: 'POST', url: '/v1/app/docker/deploy', headers, payload: JSON.stringify({ ...b, volumes: [v] }) })),
  );
}

const BROKEN_JSON = ['', ' ', '{', '}', '{"a":', '{"a" 1}', 'nul', 'NaN', 'undefined', "{'a':1}", '{"a":1,}', '[1,]', '\u0000', '\uFEFF{}', '{"a":"\\x"}', '{"a":"\\ud800"}', '"\\u0000"', '1e999', '-', '{"__proto__":', '/* */{}'];

/** Pathological requests: bytes, broken JSON, wrong types and methods, oversize, junk URLs, bad tokens. */
export function hostileRequests(s: FuzzSetup): fc.Arbitrary<FuzzRequest> {
  const auth = { authorization: `Bearer ${s.token}` };
  const json = { ...auth, 'content-type': 'application/json' };
  const anyPost = fc.constantFrom(...POST_PATHS, '/v1/plan');
  const anyPath = fc.constantFrom(...POST_PATHS, '/v1/plan', '/v1/app/deploy/1/status', '/v1/app/instance/deploy/1/status', '/v1/apps', '/v1/app/deploy/1/events', '/healthz', '/openapi.json');
  const r = (o: Omit<FuzzRequest, 'family'>): FuzzRequest => ({ family: 'hostile', ...o });
  return fc.oneof(
    fc.tuple(anyPost, fc.uint8Array({ maxLength: 256 })).map(([p, b]) => r({ method: 'POST', url: p, headers: json, payload: Buffer.from(b) })),
    fc.tuple(anyPost, fc.constantFrom(...BROKEN_JSON)).map(([p, b]) => r({ method: 'POST', url: p, headers: json, payload: b })),
    fc.tuple(anyPost, fc.jsonValue({ maxDepth: 4 })).map(([p, v]) => r({ method: 'POST', url: p, headers: json, payload: JSON.stringify(v) })),
    fc.tuple(anyPost, fc.integer({ min: 100, max: 100_000 }), fc.constantFrom('[', '{"a":', '{"team_id":[')).map(([p, n, open]) => r({ method: 'POST', url: p, headers: json, payload: open.repeat(n) })),
    fc.tuple(anyPost, validBody('/v1/app/binary/deploy', s), fc.constantFrom('team_id', 'app_id', 'deployment_id', 'env_vars')).map(([p, b, k]) =>
      // Duplicate keys: the last one wins in JSON.parse; the request must still be judged as one value.
      r({ method: 'POST', url: p, headers: json, payload: `${JSON.stringify(b).slice(0, -1)},"${k}":"../../etc"}` }),
    ),
    fc.tuple(anyPost, fc.constantFrom('text/plain', 'application/x-www-form-urlencoded', 'multipart/form-data; boundary=x', 'application/jsonx', 'application/json; charset=latin1', 'application/xml', '', 'APPLICATION/JSON'))
      .map(([p, ct]) => r({ method: 'POST', url: p, headers: { ...auth, 'content-type': ct }, payload: '{"team_id":"acme"}' })),
    fc.tuple(anyPost, fc.integer({ min: 1024 * 1024 + 1, max: 1024 * 1024 + 4096 })).map(([p, n]) => r({ method: 'POST', url: p, headers: json, payload: `{"team_id":"${'a'.repeat(n)}"}` })),
    fc.tuple(anyPath, fc.constantFrom('PUT', 'DELETE', 'PATCH', 'OPTIONS', 'HEAD', 'GET', 'POST')).map(([p, m]) => r({ method: m, url: p, headers: json, ...(m === 'GET' || m === 'HEAD' ? {} : { payload: '{}' }) })),
    fc.tuple(anyPost, fc.constantFrom('?dry_run=maybe', '?dry_run=true&dry_run=false', '?x=1', '?dry_run', '?dry_run=%00', '?__proto__=1', '?dry_run[]=1', `?${'a'.repeat(5000)}=1`)).map(([p, q]) =>
      r({ method: 'POST', url: `${p}${q}`, headers: json, payload: '{}' }),
    ),
    fc
      .constantFrom('/v1/app/deploy/../../etc/passwd', '/v1/app/%2e%2e/deploy/1/status', '/v1/app/deploy/1/status/..', '/v1//app/deploy/1/status', '/v1/app/deploy//status', '/V1/apps', '/v1/apps/', '/v1/app/deploy/1%2fstatus', '/v1/app/deploy/%ZZ/status', `/v1/app/deploy/${'a'.repeat(10_000)}/status`, '/v1/app/deploy/1/status;x', '/v1/app/deploy/1/status#x', '/v1%00/apps', '/%76%31/apps')
      .map((u) => r({ method: 'GET', url: u, headers: auth })),
    fc
      .tuple(
        fc.constantFrom(...POST_PATHS, '/v1/plan', '/v1/apps', '/v1/app/deploy/1/status'),
        fc.constantFrom('', 'Bearer', 'Bearer ', `Bearer ${s.token}x`, `Bearer ${s.token.slice(0, -1)}`, `Basic ${Buffer.from(`u:${s.token}`).toString('base64')}`, `bearer  ${s.token} extra`, `Bearer\t${s.token}`, s.token, `Bearer ${'x'.repeat(10_000)}`, 'Bearer \u00ff\u00fe'),
      )
      .map(([p, a]) => r({ method: p.startsWith('/v1/app/') && !p.includes('status') ? 'POST' : 'GET', url: p, headers: { authorization: a, 'content-type': 'application/json' }, ...(p.includes('status') || p === '/v1/apps' ? {} : { payload: '{}' }) })),
  );
}
