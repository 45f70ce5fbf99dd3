/**
 * The Docker driver and observer against the harness's real dockerd: create → observe → start →
 * observe → change → remove → observe gone, idempotency, volumes, faults, and the observer's constant
 * host-call cost.
 */
import { readFile, symlink } from 'node:fs/promises';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { containerName } from '../../src/core/identity.ts';
import type { AppKey } from '../../src/core/identity.ts';
import { createDockerDriver } from '../../src/drivers/docker.ts';
import type { ContainerSpec } from '../../src/drivers/docker.ts';
import { createDockerObserver } from '../../src/observers/docker.ts';
import type { DockerSnapshot } from '../../src/observers/docker.ts';
import { cleanupAfter, cleanupContainer, dockerApi, freePort, getTestHost, httpGet, tempDir, uniqueName, waitFor } from '../harness/index.ts';

const host = getTestHost();
const docker = createDockerDriver({ socketPath: host.docker.socket });
const observer = createDockerObserver(host.docker.socket);
afterAll(async () => {
  await docker.close();
  await observer.close();
});

function splitRef(ref: string): { image: string; tag: string } {
  const i = ref.lastIndexOf(':');
  return { image: ref.slice(0, i), tag: ref.slice(i + 1) };
}

function specFor(key: AppKey, instance: string, port: number, over: Partial<ContainerSpec> = {}): ContainerSpec {
  return {
    key,
    instance,
    version: 'v1',
    deployment: 'd1',
    generation: 1,
    ...splitRef(host.docker.image),
    port,
    env: { APP_VERSION: 'v1' },
    restart: 'unless-stopped',
    stopTimeoutSec: 5,
    ...over,
  };
}

async function mine(team: string): Promise<DockerSnapshot['containers']> {
  const o = await observer.observe();
  if (o.unavailable) throw new Error(`docker unavailable: ${o.message}`);
  return o.containers.filter((c) => c.identity?.key.team === team);
}

describe('docker driver (real dockerd)', () => {
  it('create → observe → start → serve → re-create is a no-op → stop → remove → gone', async () => {
    const key = { team: uniqueName('dk'), env: 1, app: 7 };
    const port = await freePort();
    const name = containerName(key, 'web-1');
    cleanupContainer(name);
    const weird = 'line1\nline2 "double" \'single\' $HOME `tick` %s \\back ✓';
    const spec = specFor(key, 'web-1', port, { slot: 'blue', spec: 'spec-a', env: { APP_VERSION: 'v1', WEIRD: weird, PORT: '1', HOST: '127.0.0.1' } });

    const created = await docker.create(spec);
    expect(created).toMatchObject({ name, created: true });
    let seen = await mine(key.team);
    expect(seen).toHaveLength(1);
    expect(seen[0]).toMatchObject({ name, state: 'created', identity: { key, instance: 'web-1', slot: 'blue', version: 'v1', deployment: 'd1', generation: 1, spec: 'spec-a' } });

    await docker.start(name);
    await docker.start(name); // 304: already running
    const info = await docker.inspect(name);
    expect(info).toMatchObject({ state: 'running', ports: [{ hostIp: '127.0.0.1', hostPort: port, containerPort: 8080, protocol: 'tcp' }] });
    expect(info?.env).toEqual(expect.arrayContaining(['PORT=8080', 'HOST=0.0.0.0', `WEIRD=${weird}`]));

    // The app answers on 127.0.0.1:<port> and got the value byte for byte.
    const health = await waitFor('app healthy', async () => ((await httpGet(`http://127.0.0.1:${port}/healthz`)).status === 200 ? true : undefined), 15_000);
    expect(health).toBe(true);
    const env = await httpGet(`http://127.0.0.1:${port}/env/?name=WEIRD`);
    expect(env.text).toBe(weird);
    seen = await mine(key.team);
    expect(seen[0]).toMatchObject({ state: 'running', ports: [{ hostIp: '127.0.0.1', hostPort: port, containerPort: 8080 }] });

    // Identical create: no-op, same id. Different configuration under the same name: refused.
    expect(await docker.create(spec)).toEqual({ id: created.id, name, created: false });
    await expect(docker.create({ ...spec, env: { APP_VERSION: 'v2' } })).rejects.toMatchObject({ code: 'E_CONTAINER_CONFLICT' });

    await docker.stop(name, 5);
    await docker.stop(name, 5); // 304: already stopped
    seen = await mine(key.team);
    expect(seen[0]).toMatchObject({ state: 'exited', exitCode: 0 });

    await docker.remove(name);
    await docker.remove(name); // 404: already gone
    await docker.stop(name, 1); // stopping what does not exist: nothing runs, fine
    expect(await mine(key.team)).toEqual([]);
    expect(await docker.inspect(name)).toBeUndefined();
    await expect(docker.start(name)).rejects.toMatchObject({ code: 'E_CONTAINER_NOT_FOUND' });
  });

  it('docker_command replaces CMD (argv, no shell); on-failure restart policy; stop timeout', async () => {
    const key = { team: uniqueName('dk'), env: 1, app: 8 };
    const port = await freePort();
    const name = containerName(key, 'cmd');
    cleanupContainer(name);
    const { image, tag } = splitRef(host.docker.busyboxImage);
    await docker.create(specFor(key, 'cmd', port, { image, tag, command: ['/bin/sh', '-c', 'echo "$0" > /tmp/arg0; exec sleep 600', 'a b; $(x)'], restart: 'on-failure', stopTimeoutSec: 2 }));
    await docker.start(name);
    const ins = await dockerApi('GET', `/containers/${name}/json`);
    const j = ins.body as { Config: { Cmd: string[]; StopTimeout: number }; HostConfig: { RestartPolicy: { Name: string } } };
    expect(j.Config.Cmd).toEqual(['/bin/sh', '-c', 'echo "$0" > /tmp/arg0; exec sleep 600', 'a b; $(x)']);
    expect(j.Config.StopTimeout).toBe(2);
    expect(j.HostConfig.RestartPolicy.Name).toBe('on-failure');
    // sleep ignores SIGTERM as PID 1 child of sh exec: stop must end it by SIGKILL after ~2 s.
    const t0 = Date.now();
    await docker.stop(name, 2);
    expect(Date.now() - t0).toBeLessThan(10_000);
    expect((await docker.inspect(name))?.state).toBe('exited');
    await docker.remove(name);
  });

  it('volumes: a named volume and a host path under the root; escapes refused before anything is created', async () => {
    const key = { team: uniqueName('dk'), env: 1, app: 9 };
    const root = await tempDir('vols');
    const drv = createDockerDriver({ socketPath: host.docker.socket, volumesRoot: root });
    cleanupAfter(() => drv.close());
    const vol = uniqueName('vol');
    cleanupAfter(async () => dockerApi('DELETE', `/volumes/${vol}?force=true`));
    const name = containerName(key, 'v');
    cleanupContainer(name);
    const { image, tag } = splitRef(host.docker.busyboxImage);
    const spec = specFor(key, 'v', await freePort(), {
      image,
      tag,
      command: ['/bin/sh', '-c', 'echo hello > /hostdir/out && echo named > /named/out && sleep 600'],
      volumes: [`${root}/app/data:/hostdir`, `${vol}:/named`],
      stopTimeoutSec: 1,
    });
    await drv.create(spec);
    await drv.start(name);
    const out = await waitFor('file written through the bind mount', async () => readFile(path.join(root, 'app/data/out'), 'utf8').catch(() => undefined), 10_000);
    expect(out).toBe('hello\n');
    await drv.remove(name);
    // Named volumes survive removal (only anonymous volumes go with the container).
    expect((await dockerApi('GET', `/volumes/${vol}`)).status).toBe(200);

    await symlink('/etc', path.join(root, 'etc'));
    for (const volumes of [['/etc:/x'], [`${root}/etc:/x`], [`${root}/etc/sub:/x`], ['../x:/x'], [`${root}:/x`]]) {
      const n = containerName(key, 'bad');
      await expect(drv.create({ ...spec, instance: 'bad', volumes }), volumes[0]).rejects.toMatchObject({ code: 'E_VOLUME_REFUSED' });
      expect(await drv.inspect(n)).toBeUndefined();
    }
    // Without a configured root, host paths are refused altogether.
    await expect(docker.create({ ...spec, instance: 'noroot' })).rejects.toMatchObject({ code: 'E_VOLUME_REFUSED' });
  });

  it('refuses bad image references and reports missing images', async () => {
    const key = { team: uniqueName('dk'), env: 1, app: 10 };
    const port = await freePort();
    for (const image of ['-rm', 'a b', 'evil\nimage']) {
      await expect(docker.create(specFor(key, 'x', port, { image }))).rejects.toMatchObject({ code: 'E_IMAGE_REFUSED' });
      await expect(docker.pull(image, 'v1')).rejects.toMatchObject({ code: 'E_IMAGE_REFUSED' });
    }
    await expect(docker.create(specFor(key, 'x', port, { image: 'crate-test/nope', tag: 'v1' }))).rejects.toMatchObject({ code: 'E_IMAGE_NOT_FOUND' });
    const { image, tag } = splitRef(host.docker.image);
    expect(await docker.imageInfo(image, tag)).toMatchObject({ exposedPorts: { '8080/tcp': {} } });
    // ifMissing: present locally, the registry is not asked (this image exists in no registry).
    expect(await docker.pull(image, tag, undefined, { ifMissing: true })).toMatchObject({ pulled: false });
  });

  it('two containers publishing the same host port: the second start fails with E_PORT_IN_USE', async () => {
    const key = { team: uniqueName('dk'), env: 1, app: 11 };
    const port = await freePort();
    cleanupContainer(containerName(key, 'a'));
    cleanupContainer(containerName(key, 'b'));
    await docker.create(specFor(key, 'a', port));
    await docker.create(specFor(key, 'b', port));
    await docker.start(containerName(key, 'a'));
    await expect(docker.start(containerName(key, 'b'))).rejects.toMatchObject({ code: 'E_PORT_IN_USE' });
  });

  it('an unreachable daemon: E_DOCKER_UNAVAILABLE from verbs, a typed unavailable observation', async () => {
    const dir = await tempDir('nosock');
    const gone = createDockerDriver({ socketPath: path.join(dir, 'docker.sock') });
    const goneObs = createDockerObserver(path.join(dir, 'docker.sock'));
    cleanupAfter(async () => {
      await gone.close();
      await goneObs.close();
    });
    await expect(gone.inspect('x1')).rejects.toMatchObject({ code: 'E_DOCKER_UNAVAILABLE' });
    await expect(gone.pull('busybox', '1')).rejects.toMatchObject({ code: 'E_DOCKER_UNAVAILABLE' });
    expect(await goneObs.observe()).toMatchObject({ unavailable: true, code: 'E_DOCKER_UNAVAILABLE' });
  });
});
