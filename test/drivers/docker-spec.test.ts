/**
 * Pure parts of the Docker driver: what is refused, what is sent.
 */
import { mkdir, mkdtemp, rm, symlink, stat } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  CONFIG_HASH_LABEL,
  SPEC_LABEL,
  checkImageRef,
  containerPort,
  createBody,
  identityFromLabels,
  parseVolume,
  registryAuthHeader,
  registryHost,
  resolveVolumes,
} from '../../src/drivers/docker-spec.ts';
import type { ContainerSpec } from '../../src/drivers/docker-spec.ts';
import { pullOutcome } from '../../src/drivers/docker.ts';
import { exitCodeFromStatus, healthFromStatus, parseContainerList } from '../../src/observers/docker.ts';

const codeOf = (f: () => unknown): string | undefined => {
  try {
    f();
    return undefined;
  } catch (err) {
    return (err as { code?: string }).code;
  }
};

describe('image references', () => {
  it.each([
    ['busybox', '1'],
    ['library/busybox', 'latest'],
    ['registry.example.com/team/app', 'v1.2.3'],
    ['127.0.0.1:5000/crate/app', 'v1'],
    ['localhost/app', 'a_b-c.d'],
    ['my-registry:443/a__b/c.d', 'X'],
  ])('accepts %s:%s', (image, tag) => {
    expect(codeOf(() => checkImageRef(image, tag))).toBeUndefined();
  });

  it.each([
    ['-busybox', '1'],
    ['--help', '1'],
    ['busy box', '1'],
    ['busybox\n', '1'],
    ['busybox\u0000', '1'],
    ['busybox:1', '1'],
    ['busybox@sha256:abc', '1'],
    ['Upper/app', '1'],
    ['app/', '1'],
    ['', '1'],
    ['busybox', ''],
    ['busybox', '-x'],
    ['busybox', 'v1+build'],
    ['busybox', 'a b'],
    ['busybox', 'x'.repeat(129)],
  ])('refuses %j:%j', (image, tag) => {
    expect(codeOf(() => checkImageRef(image, tag))).toBe('E_IMAGE_REFUSED');
  });

  it('registry host and auth header (padded base64url JSON)', () => {
    expect(registryHost('busybox')).toBe('docker.io');
    expect(registryHost('team/app')).toBe('docker.io');
    expect(registryHost('127.0.0.1:5000/a')).toBe('127.0.0.1:5000');
    expect(registryHost('localhost/a')).toBe('localhost');
    const h = registryAuthHeader('127.0.0.1:5000/a', { username: 'u?>', password: 'p~~~' });
    expect(h).toMatch(/^[A-Za-z0-9_-]+=*$/);
    expect(h.length % 4).toBe(0);
    expect(JSON.parse(Buffer.from(h, 'base64url').toString('utf8'))).toEqual({ username: 'u?>', password: 'p~~~', serveraddress: '127.0.0.1:5000' });
    const h2 = registryAuthHeader('a', { username: 'u', password: 'p', server: 'reg.example' });
    expect((JSON.parse(Buffer.from(h2, 'base64url').toString('utf8')) as { serveraddress: string }).serveraddress).toBe('reg.example');
  });
});

describe('volumes', () => {
  it.each([
    ['data:/data', { type: 'volume', source: 'data', target: '/data', readOnly: false }],
    ['my_vol.1:/var/lib/x:ro', { type: 'volume', source: 'my_vol.1', target: '/var/lib/x', readOnly: true }],
    ['/srv/vols/a:/a:rw', { type: 'bind', source: '/srv/vols/a', target: '/a', readOnly: false }],
  ])('parses %s', (entry, want) => {
    expect(parseVolume(entry)).toEqual(want);
  });

  it.each(['data', 'data:/data:rx', 'data:relative', 'data:/', 'data:/a/../b', 'data:/a/', '/srv/../etc:/x', '/srv//x:/x', './x:/x', 'a:/x', '-v:/x', 'da ta:/x', 'data:/x\n', 'a:b:c:d'])(
    'refuses %j',
    (entry) => {
      expect(codeOf(() => parseVolume(entry))).toBe('E_VOLUME_REFUSED');
    },
  );

  let root = '';
  let outside = '';
  beforeAll(async () => {
    const base = await mkdtemp(path.join(tmpdir(), 'crate-vol-'));
    root = path.join(base, 'root');
    outside = path.join(base, 'outside');
    await mkdir(root);
    await mkdir(outside);
    await symlink(outside, path.join(root, 'escape'));
    await symlink('/etc', path.join(root, 'etc-link'));
    await mkdir(path.join(root, 'app1'));
  });
  afterAll(async () => rm(path.dirname(root), { recursive: true, force: true }));

  it('host paths only strictly inside the root, after resolving symlinks; missing ones are created', async () => {
    const ok = await resolveVolumes([`${root}/app1/data:/data`, 'named:/n:ro'], root);
    expect(ok).toEqual([
      { type: 'bind', source: `${root}/app1/data`, target: '/data', readOnly: false },
      { type: 'volume', source: 'named', target: '/n', readOnly: true },
    ]);
    expect((await stat(`${root}/app1/data`)).isDirectory()).toBe(true);

    const refused = async (entries: string[], r: string | null = root): Promise<string | undefined> =>
      resolveVolumes(entries, r ?? undefined).then(
        () => undefined,
        (err: { code?: string }) => err.code,
      );
    expect(await refused([`${root}:/all`])).toBe('E_VOLUME_REFUSED');
    expect(await refused(['/etc:/etc'])).toBe('E_VOLUME_REFUSED');
    expect(await refused([`${outside}:/o`])).toBe('E_VOLUME_REFUSED');
    expect(await refused([`${root}/escape:/x`])).toBe('E_VOLUME_REFUSED');
    expect(await refused([`${root}/escape/new/dir:/x`])).toBe('E_VOLUME_REFUSED');
    expect(await refused([`${root}/etc-link:/x`])).toBe('E_VOLUME_REFUSED');
    expect(await refused([`${root}/app1/x:/x`], null)).toBe('E_VOLUME_REFUSED');
    expect(await refused(['a1:/x', 'a2:/x'])).toBe('E_VOLUME_REFUSED');
    // Nothing was created through the escaping link.
    await expect(stat(`${outside}/new`)).rejects.toMatchObject({ code: 'ENOENT' });
  });
});

describe('create body', () => {
  const spec: ContainerSpec = {
    key: { team: 'acme', env: 3, app: 42 },
    instance: 'web-1',
    slot: 'blue',
    version: 'v1.2.3',
    deployment: '77',
    generation: 2,
    spec: 'abc123',
    image: 'registry.example.com/acme/web',
    tag: 'v1.2.3',
    port: 20001,
    env: { B: 'two\nlines "quoted" $HOME %d', A: '1', PORT: 'ignored', HOST: 'ignored' },
    command: ['/bin/app', '--flag', 'a b; rm -rf /'],
    restart: 'unless-stopped',
    stopTimeoutSec: 30,
  };

  it('publishes on 127.0.0.1 only, to the image port when it exposes exactly one', () => {
    const b = createBody(spec, { id: 'sha256:1', exposedPorts: { '8080/tcp': {} } }, []);
    expect(b.ExposedPorts).toEqual({ '8080/tcp': {} });
    expect(b.HostConfig).toMatchObject({ PortBindings: { '8080/tcp': [{ HostIp: '127.0.0.1', HostPort: '20001' }] } });
    expect(b.Env).toEqual(['A=1', 'B=two\nlines "quoted" $HOME %d', 'HOST=0.0.0.0', 'PORT=8080']);
    expect(b.Cmd).toEqual(['/bin/app', '--flag', 'a b; rm -rf /']);
    expect(b.Image).toBe('registry.example.com/acme/web:v1.2.3');
    expect(b.StopTimeout).toBe(30);
    expect(b.HostConfig).toMatchObject({ RestartPolicy: { Name: 'unless-stopped' } });
    expect(b.Labels).toMatchObject({
      'crate.team': 'acme',
      'crate.env': '3',
      'crate.app': '42',
      'crate.instance': 'web-1',
      'crate.slot': 'blue',
      'crate.version': 'v1.2.3',
      'crate.deployment': '77',
      'crate.generation': '2',
      'crate.port': '20001',
      [SPEC_LABEL]: 'abc123',
    });
    expect(identityFromLabels(b.Labels as Record<string, string>)).toEqual({
      key: spec.key,
      instance: 'web-1',
      slot: 'blue',
      version: 'v1.2.3',
      deployment: '77',
      generation: 2,
      spec: 'abc123',
      port: 20001,
    });
  });

  it('uses the instance port inside when the image exposes none or several', () => {
    expect(containerPort({}, 20001)).toBe(20001);
    expect(containerPort(null, 20001)).toBe(20001);
    expect(containerPort({ '80/tcp': {}, '443/tcp': {} }, 20001)).toBe(20001);
    expect(containerPort({ '53/udp': {}, '8080/tcp': {} }, 20001)).toBe(8080);
    const b = createBody({ ...spec, restart: 'on-failure' }, { id: 'x', exposedPorts: {} }, []);
    expect(b.Env).toContain('PORT=20001');
    expect(b.HostConfig).toMatchObject({ RestartPolicy: { Name: 'on-failure', MaximumRetryCount: 5 } });
  });

  it('the config hash changes with anything that matters, including the image id', () => {
    const h = (s: ContainerSpec, id = 'sha256:1'): string => (createBody(s, { id, exposedPorts: {} }, []).Labels as Record<string, string>)[CONFIG_HASH_LABEL] as string;
    expect(h(spec)).toBe(h({ ...spec }));
    expect(h(spec)).not.toBe(h(spec, 'sha256:2'));
    expect(h(spec)).not.toBe(h({ ...spec, env: { ...spec.env, B: 'x' } }));
    expect(h(spec)).not.toBe(h({ ...spec, port: 20002 }));
    expect(h(spec)).not.toBe(h({ ...spec, generation: 3 }));
  });

  it('refuses bad fields', () => {
    expect(codeOf(() => createBody({ ...spec, env: { 'BAD-KEY': 'x' } }, { id: 'x', exposedPorts: {} }, []))).toBe('E_CONTAINER_SPEC');
    expect(codeOf(() => createBody({ ...spec, env: { K: 'a\0b' } }, { id: 'x', exposedPorts: {} }, []))).toBe('E_CONTAINER_SPEC');
    expect(codeOf(() => createBody({ ...spec, instance: '../x' }, { id: 'x', exposedPorts: {} }, []))).toBe('E_CONTAINER_SPEC');
    expect(codeOf(() => createBody({ ...spec, port: 70000 }, { id: 'x', exposedPorts: {} }, []))).toBe('E_CONTAINER_SPEC');
    expect(codeOf(() => createBody({ ...spec, image: '-x' }, { id: 'x', exposedPorts: {} }, []))).toBe('E_IMAGE_REFUSED');
  });
});

describe('pull outcome', () => {
  const reply = (status: number, body: string): Parameters<typeof pullOutcome>[0] => ({ status, headers: {}, body, trailers: {} });
  it('200 with progress only is success', () => {
    expect(() => pullOutcome(reply(200, '{"status":"Pulling from a"}\n{"status":"Digest: sha256:1"}\n'), 'a:1')).not.toThrow();
  });
  it('200 with an error line is a failure', () => {
    expect(codeOf(() => pullOutcome(reply(200, '{"status":"Downloading"}\n{"errorDetail":{"message":"unknown blob"},"error":"unknown blob"}\n'), 'a:1'))).toBe('E_DOCKER_PULL');
    expect(codeOf(() => pullOutcome(reply(200, '{"error":"unauthorized: authentication required"}\n'), 'a:1'))).toBe('E_REGISTRY_AUTH');
  });
  it('error statuses', () => {
    expect(codeOf(() => pullOutcome(reply(500, '{"message":"unauthorized: authentication required"}'), 'a:1'))).toBe('E_REGISTRY_AUTH');
    expect(codeOf(() => pullOutcome(reply(500, '{"message":"Head \\"http://r/v2/a/manifests/1\\": no basic auth credentials"}'), 'a:1'))).toBe('E_REGISTRY_AUTH');
    expect(codeOf(() => pullOutcome(reply(404, '{"message":"manifest unknown"}'), 'a:1'))).toBe('E_DOCKER_PULL');
  });
});

describe('container list parsing', () => {
  it('health from the status line, identity from labels, published ports only', () => {
    expect(healthFromStatus('Up 3 seconds (healthy)')).toBe('healthy');
    expect(healthFromStatus('Up 3 seconds (unhealthy)')).toBe('unhealthy');
    expect(healthFromStatus('Up 1 second (health: starting)')).toBe('starting');
    expect(healthFromStatus('Exited (0) 2 seconds ago')).toBe('none');
    expect(exitCodeFromStatus('Exited (137) 2 seconds ago')).toBe(137);
    expect(exitCodeFromStatus('Up 2 seconds')).toBeUndefined();
    const out = parseContainerList([
      {
        Id: 'b',
        Names: ['/zeta'],
        Image: 'x:1',
        ImageID: 'sha256:1',
        Created: 1,
        State: 'running',
        Status: 'Up 1 second',
        Ports: [{ IP: '127.0.0.1', PrivatePort: 8080, PublicPort: 20001, Type: 'tcp' }, { PrivatePort: 9000, Type: 'tcp' }],
        Labels: { 'crate.team': 't', 'crate.env': '1', 'crate.app': '2', 'crate.instance': 'i' },
      },
      { Id: 'a', Names: ['/alpha'], Image: 'x:1', ImageID: 'sha256:1', Created: 1, State: 'weird', Status: '', Labels: { 'crate.app': 'nope' } },
    ]);
    expect(out.map((c) => c.name)).toEqual(['alpha', 'zeta']);
    expect(out[0]).toMatchObject({ identity: undefined, state: 'dead' });
    expect(out[1]).toMatchObject({ identity: { key: { team: 't', env: 1, app: 2 }, instance: 'i' }, ports: [{ hostIp: '127.0.0.1', hostPort: 20001, containerPort: 8080, protocol: 'tcp' }] });
  });
});
