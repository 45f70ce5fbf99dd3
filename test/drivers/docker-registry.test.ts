/**
 * Pulls against a real local registry (Debian's docker-registry, htpasswd auth, plain HTTP on
 * 127.0.0.1, which dockerd treats as an insecure registry by default): right credentials pull, wrong
 * or missing ones give E_REGISTRY_AUTH, a missing tag E_DOCKER_PULL, and a layer that fails mid-stream
 * (HTTP 200 with an NDJSON error line) E_DOCKER_PULL.
 */
import { mkdir, mkdtemp, readdir, rm, stat, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { Readable } from 'node:stream';
import { randomBytes } from 'node:crypto';
import { execa } from 'execa';
import type { ResultPromise } from 'execa';
import { create as createTar } from 'tar';
import { Agent, request } from 'undici';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createDockerDriver } from '../../src/drivers/docker.ts';
import { registryAuthHeader } from '../../src/drivers/docker-spec.ts';
import { freePort, getTestHost, uniqueName, waitFor } from '../harness/index.ts';

const host = getTestHost();
const docker = createDockerDriver({ socketPath: host.docker.socket });
const GOOD = { username: 'crate', password: 'right-pass' };

let dir = '';
let registry: ResultPromise | undefined;
let addr = '';

async function blobs(): Promise<Array<{ file: string; size: number }>> {
  const root = path.join(dir, 'data/docker/registry/v2/blobs/sha256');
  const out: Array<{ file: string; size: number }> = [];
  for (const a of await readdir(root).catch(() => [] as string[])) {
    for (const d of await readdir(path.join(root, a))) {
      const file = path.join(root, a, d, 'data');
      out.push({ file, size: (await stat(file)).size });
    }
  }
  return out;
}

/** Push `repo:tag` (already tagged locally) with the good credentials; fail on an NDJSON error line. */
async function push(repo: string, tag: string): Promise<void> {
  const r = await docker.client.call('POST', `/images/${repo}/push?tag=${tag}`, { headers: { 'x-registry-auth': registryAuthHeader(repo, GOOD) }, timeoutMs: 60_000 });
  expect(r.status, r.body).toBe(200);
  expect(r.body).not.toMatch(/"error"/);
}

async function untag(ref: string): Promise<void> {
  const r = await docker.client.call('DELETE', `/images/${ref}`);
  expect([200, 404]).toContain(r.status);
}

beforeAll(async () => {
  dir = await mkdtemp(path.join(host.tmpRoot, 'registry-'));
  const port = await freePort();
  addr = `127.0.0.1:${port}`;
  const { stdout: htpasswd } = await execa('htpasswd', ['-Bbn', GOOD.username, GOOD.password], { timeout: 10_000 });
  await writeFile(path.join(dir, 'htpasswd'), `${htpasswd}\n`);
  await writeFile(
    path.join(dir, 'config.yml'),
    [
      'version: 0.1',
      'log: {level: error}',
      `storage: {filesystem: {rootdirectory: ${path.join(dir, 'data')}}, delete: {enabled: true}}`,
      `http: {addr: "${addr}"}`,
      `auth: {htpasswd: {realm: crate-test, path: ${path.join(dir, 'htpasswd')}}}`,
      '',
    ].join('\n'),
  );
  registry = execa('docker-registry', ['serve', path.join(dir, 'config.yml')], { stdio: ['ignore', 'ignore', 'pipe'], reject: false, cleanup: true });
  await waitFor(
    'registry listening',
    async () => {
      const r = await request(`http://${addr}/v2/`, { reset: true, headersTimeout: 2_000, bodyTimeout: 2_000 });
      await r.body.dump();
      return r.statusCode === 401;
    },
    15_000,
  );
}, 30_000);

afterAll(async () => {
  if (registry) {
    registry.kill('SIGTERM');
    await registry;
  }
  await docker.close();
  await rm(dir, { recursive: true, force: true });
});

describe('pull from a local registry with htpasswd', () => {
  it('right credentials pull; wrong or none give E_REGISTRY_AUTH; a missing tag E_DOCKER_PULL', async () => {
    const repo = `${addr}/crate/${uniqueName('img')}`;
    const t = await docker.client.call('POST', `/images/${host.docker.busyboxImage}/tag?repo=${encodeURIComponent(repo)}&tag=1`);
    expect(t.status).toBe(201);
    try {
      await push(repo, '1');
      await untag(`${repo}:1`);
      expect(await docker.imageInfo(repo, '1')).toBeUndefined();

      await expect(docker.pull(repo, '1', { ...GOOD, password: 'wrong-pass' })).rejects.toMatchObject({ code: 'E_REGISTRY_AUTH' });
      await expect(docker.pull(repo, '1')).rejects.toMatchObject({ code: 'E_REGISTRY_AUTH' });
      expect(await docker.imageInfo(repo, '1')).toBeUndefined();

      const ok = await docker.pull(repo, '1', GOOD);
      expect(ok.pulled).toBe(true);
      expect(await docker.imageInfo(repo, '1')).toMatchObject({ id: ok.imageId });
      // Present now: ifMissing does not ask the registry (wrong credentials would fail if it did).
      expect(await docker.pull(repo, '1', { ...GOOD, password: 'wrong-pass' }, { ifMissing: true })).toEqual({ pulled: false, imageId: ok.imageId });

      await expect(docker.pull(repo, 'no-such-tag', GOOD)).rejects.toMatchObject({ code: 'E_DOCKER_PULL' });
    } finally {
      await untag(`${repo}:1`);
    }
  });

  it('a layer failing mid-stream (HTTP 200 + NDJSON error line) is E_DOCKER_PULL', async () => {
    // An image with a layer of its own (random bytes), so the daemon must download it.
    const root = path.join(dir, uniqueName('rootfs'));
    await mkdir(root);
    await writeFile(path.join(root, 'random.bin'), randomBytes(64 * 1024));
    const repo = `${addr}/crate/${uniqueName('rnd')}`;
    const agent = new Agent({ connect: { socketPath: host.docker.socket } });
    try {
      const tar = createTar({ cwd: root, portable: true }, ['random.bin']);
      const r = await request(`http://docker/v1.41/images/create?fromSrc=-&repo=${encodeURIComponent(repo)}&tag=1`, {
        method: 'POST',
        dispatcher: agent,
        body: Readable.from(tar),
        headers: { 'content-type': 'application/x-tar' },
        headersTimeout: 60_000,
        bodyTimeout: 60_000,
      });
      const text = await r.body.text();
      expect(r.statusCode, text).toBe(200);
      const before = new Set((await blobs()).map((b) => b.file));
      await push(repo, '1');
      await untag(`${repo}:1`);
      // The new blobs are the config, the manifest and the layer; the layer (64 KiB of noise) is the largest.
      const added = (await blobs()).filter((b) => !before.has(b.file)).sort((a, b) => b.size - a.size);
      expect(added.length).toBeGreaterThanOrEqual(2);
      await rm(added[0]?.file as string);

      const err = await docker.pull(repo, '1', GOOD).then(
        () => undefined,
        (e: unknown) => e as { code: string; message: string; details: { status: number } },
      );
      expect(err).toMatchObject({ code: 'E_DOCKER_PULL', details: { status: 200 } });
      expect(err?.message).toMatch(/unknown blob|blob unknown|not found/i);
    } finally {
      await untag(`${repo}:1`);
      await agent.close();
    }
  });
});
