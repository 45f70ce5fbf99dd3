/**
 * Bad input: every 4xx names each offending field in `{error: {code, message, details}}` and writes
 * nothing (the state dir and the records are byte-for-byte unchanged).
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  AUTH,
  base,
  deleteBody,
  domainUpdate,
  instanceAction,
  instanceBinary,
  instanceDocker,
  errorOf,
  fieldsOf,
  json,
  makeApi,
  plainBinary,
  plainDocker,
  type TestApi,
} from './helpers.ts';

let t: TestApi;
let before: string;

beforeAll(async () => {
  t = await makeApi();
  // Something in force, so "writes nothing" is checked against a non-empty state.
  expect((await t.post('/v1/app/instance/binary/deploy', instanceBinary())).statusCode).toBe(202);
  before = await t.snapshot();
});
afterAll(async () => {
  await t.close();
});

type Body = Record<string, unknown>;

const endpoints: Array<{ url: string; body: () => Body; required: string[] }> = [
  {
    url: '/v1/app/instance/binary/deploy',
    body: () => instanceBinary({ deployment_id: 900 }),
    required: ['app_id', 'asset_url', 'callback_url', 'deployment_id', 'deployment_strategy', 'domain', 'env_vars', 'environment_id', 'slots', 'target_version', 'team_id'],
  },
  {
    url: '/v1/app/instance/docker/deploy',
    body: () => instanceDocker({ deployment_id: 901 }),
    required: ['app_id', 'callback_url', 'deployment_id', 'deployment_strategy', 'domain', 'env_vars', 'environment_id', 'image', 'image_tag', 'slots', 'target_version', 'team_id'],
  },
  {
    url: '/v1/app/binary/deploy',
    body: () => plainBinary({ deployment_id: 902 }),
    required: ['app_id', 'asset_url', 'callback_url', 'deployment_id', 'deployment_strategy', 'domain', 'env_vars', 'environment_id', 'instances', 'team_id'],
  },
  {
    url: '/v1/app/docker/deploy',
    body: () => plainDocker({ deployment_id: 903 }),
    required: ['app_id', 'callback_url', 'deployment_id', 'deployment_strategy', 'domain', 'environment_id', 'image', 'image_tag', 'instances', 'team_id'],
  },
  { url: '/v1/app/delete', body: () => deleteBody(), required: ['app_id', 'callback_url', 'domain', 'environment_id', 'instance_ids', 'team_id'] },
  { url: '/v1/app/domain/update', body: () => domainUpdate(), required: ['app_id', 'environment_id', 'new_domain', 'old_domain', 'server_id', 'team_id'] },
  { url: '/v1/app/start', body: () => instanceAction(), required: ['app_id', 'callback_url', 'domain', 'environment_id', 'instance_id', 'team_id'] },
  { url: '/v1/app/stop', body: () => instanceAction(), required: ['app_id', 'callback_url', 'domain', 'environment_id', 'instance_id', 'team_id'] },
  { url: '/v1/app/restart', body: () => instanceAction(), required: ['app_id', 'callback_url', 'domain', 'environment_id', 'instance_id', 'team_id'] },
];

/** POST, expect a 400 naming exactly `fields` (each with a reason), and nothing written. */
async function expect400(url: string, body: unknown, fields: string[], reason?: RegExp): Promise<void> {
  const r = await t.post(url, body);
  expect(r.statusCode, r.body).toBe(400);
  const e = errorOf(r);
  expect(e.code).toBe('E_VALIDATION');
  expect(typeof e.message).toBe('string');
  const issues = fieldsOf(r);
  expect(issues.map((f) => f.field).sort()).toEqual([...fields].sort());
  for (const f of issues) expect(f.reason.length).toBeGreaterThan(3);
  if (reason) expect(issues.map((f) => f.reason).join('\n')).toMatch(reason);
  expect(await t.snapshot()).toBe(before);
}

describe('required fields, unknown fields, types', () => {
  for (const ep of endpoints) {
    it(`${ep.url}: each required field missing is named`, async () => {
      for (const f of ep.required) {
        const b = ep.body();
        delete b[f];
        await expect400(ep.url, b, [f], /is required/);
      }
    });
    it(`${ep.url}: an unknown field is named, several problems are all named`, async () => {
      await expect400(ep.url, { ...ep.body(), colour: 'blue' }, ['colour'], /not an allowed field/);
      const b = { ...ep.body(), app_id: '17', environment_id: 1.5, extra: true };
      await expect400(ep.url, b, ['app_id', 'environment_id', 'extra']);
    });
    it(`${ep.url}: body that is not an object`, async () => {
      await expect400(ep.url, [ep.body()], ['(body)'], /must be object/);
    });
  }
});

describe('ints', () => {
  it('out of range and wrong type', async () => {
    const url = '/v1/app/instance/binary/deploy';
    await expect400(url, instanceBinary({ app_id: 0 }), ['app_id'], />= 1/);
    await expect400(url, instanceBinary({ app_id: 2 ** 31 }), ['app_id'], /<= 2147483647/);
    await expect400(url, instanceBinary({ environment_id: -1 }), ['environment_id']);
    await expect400(url, instanceBinary({ deployment_id: 2 ** 31 }), ['deployment_id']);
    await expect400(url, instanceBinary({ deployment_id: '101' }), ['deployment_id'], /must be integer/);
    await expect400(url, instanceBinary({ slots: { blue: { instance_id: 'a', port: 0 }, green: { instance_id: 'b', port: 65536 } } }), ['slots.blue.port', 'slots.green.port']);
    await expect400('/v1/app/binary/deploy', plainBinary({ instances: { 'web-1': { port: 70000 } } }), ['instances.web-1.port']);
    await expect400('/v1/app/binary/deploy', plainBinary({ instances: { 'web-1': { port: '80' } } }), ['instances.web-1.port'], /must be integer/);
    await expect400('/v1/app/delete', deleteBody({ deployment_id: 'x' }), ['deployment_id'], /integer or null/);
  });
});

describe('strategy', () => {
  it('unknown strategy lists the allowed values', async () => {
    await expect400('/v1/app/docker/deploy', plainDocker({ deployment_strategy: 'canary' }), ['deployment_strategy'], /blue_green, rolling, recreate/);
    await expect400('/v1/app/docker/deploy', plainDocker({ deployment_strategy: 'Rolling' }), ['deployment_strategy']);
  });
  it('blue_green needs exactly 2 slots', async () => {
    const url = '/v1/app/instance/binary/deploy';
    await expect400(url, instanceBinary({ deployment_id: 900, slots: { blue: { instance_id: 'i-1', port: 3001 } } }), ['slots'], /exactly 2 slots/);
    const three = { a: { instance_id: 'i-1', port: 3001 }, b: { instance_id: 'i-2', port: 3002 }, c: { instance_id: 'i-3', port: 3003 } };
    await expect400(url, instanceBinary({ deployment_id: 900, slots: three }), ['slots'], /exactly 2 slots/);
    await expect400(url, instanceBinary({ slots: {} }), ['slots']);
  });
  it('duplicate ports and instance ids across slots or instances', async () => {
    await expect400(
      '/v1/app/instance/binary/deploy',
      instanceBinary({ deployment_id: 900, slots: { blue: { instance_id: 'i-1', port: 3001 }, green: { instance_id: 'i-2', port: 3001 } } }),
      ['slots.green.port'],
      /also the port of slot blue/,
    );
    await expect400(
      '/v1/app/instance/docker/deploy',
      instanceDocker({ slots: { blue: { instance_id: 'i-1', port: 3001 }, green: { instance_id: 'i-1', port: 3002 } } }),
      ['slots.green.instance_id'],
    );
    await expect400('/v1/app/binary/deploy', plainBinary({ instances: { 'web-1': { port: 3101 }, 'web-2': { port: 3101 } } }), ['instances.web-2.port']);
  });
});

describe('domains', () => {
  const bad = [
    'Shop.example.com',
    'shop example.com',
    'shop}.example.com',
    'shop..example.com',
    '.shop.example.com',
    'shop.example.com.',
    '-shop.example.com',
    'shop-.example.com',
    `${'a'.repeat(64)}.example.com`,
    `${`${'a'.repeat(62)}.`.repeat(4)}com`,
    '',
    '*.*.example.com',
    'shop.example.com/x',
    'shöp.example.com',
    'shop.example.com\n',
  ];
  it('refuses each bad domain on every endpoint that takes one', async () => {
    for (const d of bad) {
      await expect400('/v1/app/instance/binary/deploy', instanceBinary({ domain: d }), ['domain']);
      await expect400('/v1/app/start', instanceAction({ domain: d }), ['domain']);
      await expect400('/v1/app/domain/update', domainUpdate({ new_domain: d }), ['new_domain']);
    }
    await expect400('/v1/app/domain/update', domainUpdate({ old_domain: 'A.b', new_domain: 'c d' }), ['old_domain', 'new_domain']);
  });
  it('253 characters pass, 254 do not; wildcards and single labels pass', async () => {
    const long = `${`${'a'.repeat(62)}.`.repeat(4)}`.slice(0, 253 - 4) + '.com';
    expect(long.length).toBe(253);
    const ok = await t.post('/v1/app/instance/binary/deploy?dry_run=true', instanceBinary({ domain: long, deployment_id: 950 }));
    expect(ok.statusCode, ok.body).toBe(200);
    await expect400('/v1/app/instance/binary/deploy', instanceBinary({ domain: `a${long}` }), ['domain']);
    for (const d of ['*.example.com', 'localhost', 'xn--shp-sna.example.com', '1.2.3.example']) {
      const r = await t.post('/v1/app/instance/binary/deploy?dry_run=true', instanceBinary({ domain: d, deployment_id: 951 }));
      expect(r.statusCode, d).toBe(200);
    }
    expect(await t.snapshot()).toBe(before);
  });
});

describe('instance ids', () => {
  const bad = ['a/b', '..', '../x', '.hidden', '-a', 'a\nb', 'a b', 'a'.repeat(64), '', 'é', 'a:b'];
  it('refuses each bad id in slots, instance maps, start/stop/restart and delete', async () => {
    for (const id of bad) {
      await expect400('/v1/app/instance/binary/deploy', instanceBinary({ slots: { blue: { instance_id: id, port: 3001 }, green: { instance_id: 'ok', port: 3002 } } }), ['slots.blue.instance_id']);
      await expect400('/v1/app/binary/deploy', plainBinary({ instances: { [id]: { port: 3101 } } }), [`instances.${id}`], /^key must be/);
      await expect400('/v1/app/stop', instanceAction({ instance_id: id }), ['instance_id']);
      await expect400('/v1/app/delete', deleteBody({ instance_ids: ['ok', id] }), ['instance_ids.1']);
    }
    // Slot names follow the same rule.
    await expect400('/v1/app/instance/binary/deploy', instanceBinary({ slots: { 'bl/ue': { instance_id: 'a', port: 3001 }, green: { instance_id: 'b', port: 3002 } } }), ['slots.bl/ue']);
    // 63 characters is the longest allowed.
    const r = await t.post('/v1/app/binary/deploy?dry_run=true', plainBinary({ instances: { ['a'.repeat(63)]: { port: 3101 } }, deployment_id: 952 }));
    expect(r.statusCode).toBe(200);
  });
  it('refuses bad team ids and an empty delete list', async () => {
    await expect400('/v1/app/instance/binary/deploy', instanceBinary({ team_id: '../etc' }), ['team_id']);
    await expect400('/v1/app/instance/binary/deploy', instanceBinary({ team_id: 42 }), ['team_id'], /must be string/);
    await expect400('/v1/app/delete', deleteBody({ instance_ids: [] }), ['instance_ids']);
  });
});

describe('env vars', () => {
  it('keys that are not identifiers are named', async () => {
    for (const k of ['1A', 'A-B', 'A B', '', 'É', 'A=B', 'A\nB']) {
      await expect400('/v1/app/instance/binary/deploy', instanceBinary({ env_vars: { OK: 'x', [k]: 'v' } }), [`env_vars.${k}`], /identifier/);
    }
  });
  it('values must be strings without NUL or unpaired surrogates', async () => {
    await expect400('/v1/app/instance/binary/deploy', instanceBinary({ env_vars: { A: 1 } }), ['env_vars.A'], /must be string/);
    await expect400('/v1/app/instance/binary/deploy', instanceBinary({ env_vars: { A: 'x\u0000y' } }), ['env_vars.A'], /NUL/);
    await expect400('/v1/app/instance/binary/deploy', instanceBinary({ env_vars: { A: 'x\ud800y' } }), ['env_vars.A']);
    await expect400('/v1/app/docker/deploy', plainDocker({ env_vars: null }), ['env_vars']);
  });
});

describe('URLs', () => {
  const bad = ['ftp://files.example.com/a.tgz', 'file:///etc/passwd', 'javascript:alert(1)', 'http://user:pw@example.com/x', 'https://', 'https:// example.com', '//example.com/x', 'example.com', 'HTTP://EXAMPLE.COM/'];
  it('callback_url and asset_url must be http(s) without user info', async () => {
    for (const u of bad) {
      await expect400('/v1/app/instance/binary/deploy', instanceBinary({ callback_url: u, asset_url: u }), ['callback_url', 'asset_url']);
      await expect400('/v1/app/restart', instanceAction({ callback_url: u }), ['callback_url'], /http/);
    }
  });
});

describe('__proto__ and friends', () => {
  const raw = (s: string) => ({ method: 'POST' as const, url: '/v1/app/binary/deploy', headers: { ...AUTH, 'content-type': 'application/json' }, payload: s });
  it('a top-level __proto__ key is an unknown field', async () => {
    const body = JSON.stringify(plainBinary()).replace(/^\{/, '{"__proto__":{"polluted":true},');
    const r = await t.app.inject(raw(body));
    expect(r.statusCode).toBe(400);
    expect(fieldsOf(r)).toEqual([{ field: '__proto__', reason: 'is not an allowed field' }]);
    expect(({} as Record<string, unknown>).polluted).toBeUndefined();
    expect(await t.snapshot()).toBe(before);
  });
  it('__proto__, constructor and prototype keys in every map are refused', async () => {
    for (const k of ['__proto__', 'constructor', 'prototype']) {
      const envBody = JSON.stringify(plainBinary()).replace('"env_vars":{', `"env_vars":{"${k}":"x",`);
      let r = await t.app.inject(raw(envBody));
      expect(r.statusCode).toBe(400);
      expect(fieldsOf(r)).toEqual([{ field: `env_vars.${k}`, reason: 'key is a reserved name' }]);
      const instBody = JSON.stringify(plainBinary()).replace('"instances":{', `"instances":{"${k}":{"port":3999},`);
      r = await t.app.inject(raw(instBody));
      expect(r.statusCode).toBe(400);
      expect(fieldsOf(r).map((f) => f.field)).toEqual([`instances.${k}`]);
      const slotBody = JSON.stringify(instanceBinary()).replace('"slots":{"blue":', `"slots":{"${k}":{"instance_id":"x","port":3999},"blue":`);
      r = await t.app.inject({ ...raw(slotBody), url: '/v1/app/instance/binary/deploy' });
      expect(r.statusCode).toBe(400);
      expect(fieldsOf(r).map((f) => f.field)).toContain(`slots.${k}`);
    }
    expect(await t.snapshot()).toBe(before);
  });
});

describe('versions, images, volumes, paths', () => {
  it('target_version and image_tag patterns', async () => {
    for (const v of ['-1', 'a b', 'x'.repeat(129), '', 'v1/2', 'v1:2']) {
      await expect400('/v1/app/instance/docker/deploy', instanceDocker({ target_version: v, image_tag: v }), ['target_version', 'image_tag']);
    }
  });
  it('images, commands, credentials', async () => {
    await expect400('/v1/app/docker/deploy', plainDocker({ image: 'Registry/UPPER' }), ['image']);
    await expect400('/v1/app/docker/deploy', plainDocker({ image: 'shop:1.0' }), ['image']);
    await expect400('/v1/app/docker/deploy', plainDocker({ docker_command: ['ok', 3] }), ['docker_command.1']);
    await expect400('/v1/app/docker/deploy', plainDocker({ docker_command: 'run' }), ['docker_command']);
    await expect400('/v1/app/docker/deploy', plainDocker({ registry_credentials: { username: 'u' } }), ['registry_credentials.password']);
    await expect400('/v1/app/docker/deploy', plainDocker({ registry_credentials: { username: 'u', password: 'p', token: 't' } }), ['registry_credentials.token']);
    await expect400('/v1/app/docker/deploy', plainDocker({ registry_credentials: { username: 'u\n', password: 'p', server: 'a b' } }), ['registry_credentials.username', 'registry_credentials.server']);
  });
  it('volumes: host paths need a volumes root; container paths normalised', async () => {
    await expect400('/v1/app/docker/deploy', plainDocker({ volumes: ['/etc:/etc'] }), ['volumes.0'], /no volumes root/);
    await expect400('/v1/app/docker/deploy', plainDocker({ volumes: ['data:/var/../etc'] }), ['volumes.0'], /normalised/);
    await expect400('/v1/app/docker/deploy', plainDocker({ volumes: ['data:relative'] }), ['volumes.0']);
    await expect400('/v1/app/docker/deploy', plainDocker({ volumes: ['data:/x:rx'] }), ['volumes.0']);
    const rooted = await makeApi({}, { volumesRoot: '/srv/crate' });
    try {
      const url = '/v1/app/docker/deploy?dry_run=true';
      expect((await rooted.post(url, plainDocker({ volumes: ['/srv/crate/shop:/data:ro'] }))).statusCode).toBe(200);
      for (const v of ['/srv/crate/../etc:/data', '/srv/crateX/a:/data', '/etc:/data']) {
        const r = await rooted.post(url, plainDocker({ volumes: [v] }));
        expect(r.statusCode, v).toBe(400);
        expect(fieldsOf(r)[0]?.field).toBe('volumes.0');
      }
    } finally {
      await rooted.close();
    }
  });
  it('health_check_path', async () => {
    for (const p of ['healthz', '/a b', '/a\nb', 5, '']) {
      await expect400('/v1/app/instance/binary/deploy', instanceBinary({ health_check_path: p }), ['health_check_path']);
    }
    const r = await t.post('/v1/app/instance/binary/deploy?dry_run=true', instanceBinary({ health_check_path: null, deployment_id: 953 }));
    expect(r.statusCode).toBe(200);
  });
});

describe('transport-level refusals', () => {
  it('bodies over 1 MiB are a 413', async () => {
    const big = instanceBinary({ env_vars: { BIG: 'x'.repeat(1024 * 1024) } });
    const r = await t.post('/v1/app/instance/binary/deploy', big);
    expect(r.statusCode).toBe(413);
    expect(errorOf(r).code).toBe('E_PAYLOAD_TOO_LARGE');
    expect(await t.snapshot()).toBe(before);
  });
  it('anything but application/json is a 415', async () => {
    for (const ct of ['text/plain', 'application/x-www-form-urlencoded', 'application/yaml', 'multipart/form-data; boundary=x']) {
      const r = await t.app.inject({ method: 'POST', url: '/v1/app/start', headers: { ...AUTH, 'content-type': ct }, payload: JSON.stringify(instanceAction()) });
      expect(r.statusCode, ct).toBe(415);
      expect(errorOf(r).code).toBe('E_UNSUPPORTED_MEDIA_TYPE');
    }
    const ok = await t.app.inject({ method: 'POST', url: '/v1/app/start?dry_run=true', headers: { ...AUTH, 'content-type': 'application/json; charset=utf-8' }, payload: JSON.stringify(instanceAction()) });
    expect(ok.statusCode).toBe(200);
    expect(await t.snapshot()).toBe(before);
  });
  it('malformed JSON and empty bodies are a 400', async () => {
    for (const payload of ['{"app_id": 1,', '', 'nope', '{"a":1}{']) {
      const r = await t.app.inject({ method: 'POST', url: '/v1/app/start', headers: { ...AUTH, 'content-type': 'application/json' }, payload });
      expect(r.statusCode, payload).toBe(400);
      expect(errorOf(r).code).toBe('E_VALIDATION');
      expect(fieldsOf(r)[0]?.field).toBe('(body)');
    }
    expect(await t.snapshot()).toBe(before);
  });
  it('query: dry_run must be a boolean, other parameters are refused', async () => {
    let r = await t.post('/v1/app/start?dry_run=maybe', instanceAction());
    expect(r.statusCode).toBe(400);
    expect(fieldsOf(r)).toEqual([{ field: 'dry_run', reason: 'must be boolean' }]);
    r = await t.post('/v1/app/start?force=1', instanceAction());
    expect(r.statusCode).toBe(400);
    expect(fieldsOf(r)[0]?.field).toBe('force');
    expect(await t.snapshot()).toBe(before);
  });
});

describe('semantic refusals', () => {
  it('start/stop/restart of an unknown app or instance', async () => {
    await expect400('/v1/app/start', instanceAction({ instance_id: 'nope' }), ['instance_id'], /no such instance/);
    await expect400('/v1/app/restart', instanceAction({ app_id: 999 }), ['instance_id'], /no document/);
  });
  it('domain update for another server', async () => {
    await expect400('/v1/app/domain/update', domainUpdate({ server_id: 'host-8' }), ['server_id'], /another server/);
    expect(t.moves).toEqual([]);
  });
  it('another app already has the domain or a port', async () => {
    const other = { ...base, app_id: 18 };
    await expect400('/v1/app/binary/deploy', plainBinary({ ...other, instances: { w: { port: 4000 } } }), ['domain'], /acme\/2\/17/);
    await expect400('/v1/app/binary/deploy', plainBinary({ ...other, domain: 'other.example.com', instances: { w: { port: 3002 } } }), ['instances.w.port'], /port 3002 is used by app acme\/2\/17/);
    await expect400(
      '/v1/app/instance/binary/deploy',
      instanceBinary({ ...other, deployment_id: 960, domain: 'other.example.com', slots: { blue: { instance_id: 'x1', port: 3001 }, green: { instance_id: 'x2', port: 5002 } } }),
      ['slots.blue.port'],
    );
  });
  it('every error body has exactly code, message, details', async () => {
    const r = await t.post('/v1/app/start', {});
    expect(Object.keys(json(r))).toEqual(['error']);
    expect(Object.keys(errorOf(r)).sort()).toEqual(['code', 'details', 'message']);
    expect(t.changes).toHaveLength(1);
  });
});
