/**
 * The Docker observer against the harness's real dockerd: one Engine API request per observation
 * whatever the number of apps, identities read back from labels, and a typed "unavailable".
 */
import { afterAll, describe, expect, it } from 'vitest';
import { hostCallCounts } from '../../src/core/hostcalls.ts';
import { containerName } from '../../src/core/identity.ts';
import type { AppKey } from '../../src/core/identity.ts';
import { createDockerDriver } from '../../src/drivers/docker.ts';
import type { ContainerSpec } from '../../src/drivers/docker.ts';
import { createDockerObserver } from '../../src/observers/docker.ts';
import type { DockerSnapshot } from '../../src/observers/docker.ts';
import { cleanupAfter, cleanupContainer, getTestHost, tempDir, uniqueName } from '../harness/index.ts';

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
  return { key, instance, version: 'v1', deployment: 'd1', generation: 1, ...splitRef(host.docker.busyboxImage), port, env: {}, restart: 'unless-stopped', stopTimeoutSec: 1, ...over };
}

async function mine(team: string): Promise<DockerSnapshot['containers']> {
  const o = await observer.observe();
  if (o.unavailable) throw new Error(`docker unavailable: ${o.message}`);
  return o.containers.filter((c) => c.identity?.key.team === team);
}

describe('docker observer cost', () => {
  it('one host call per observation, for 1 app and for 50 apps', async () => {
    const team = uniqueName('ob');
    const { image, tag } = splitRef(host.docker.busyboxImage);
    const make = async (app: number): Promise<void> => {
      const key = { team, env: 1, app };
      cleanupContainer(containerName(key, 'i'));
      await docker.create(specFor(key, 'i', 30000 + app, { image, tag }));
    };
    await make(1);
    let before = hostCallCounts().docker;
    let seen = await mine(team);
    expect(hostCallCounts().docker - before).toBe(1);
    expect(seen).toHaveLength(1);

    for (let app = 2; app <= 50; app += 10) await Promise.all(Array.from({ length: Math.min(10, 51 - app) }, (_, i) => make(app + i)));
    before = hostCallCounts().docker;
    seen = await mine(team);
    expect(hostCallCounts().docker - before).toBe(1);
    expect(seen).toHaveLength(50);
    expect(new Set(seen.map((c) => c.identity?.key.app)).size).toBe(50);
  });
});

describe('docker observer faults', () => {
  it('a missing socket is a typed unavailable observation, not a throw', async () => {
    const dir = await tempDir('nosock');
    const gone = createDockerObserver(`${dir}/docker.sock`);
    cleanupAfter(() => gone.close());
    expect(await gone.observe()).toMatchObject({ unavailable: true, code: 'E_DOCKER_UNAVAILABLE' });
  });
});
