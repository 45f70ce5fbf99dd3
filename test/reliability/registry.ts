/**
 * A private Docker registry for a test (Debian's docker-registry, htpasswd auth, plain HTTP on a free
 * loopback port, which dockerd treats as insecure-allowed), and pushing the harness's test images to
 * it. Stopped and removed after the test.
 */
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { execa } from 'execa';
import { request } from 'undici';
import { createDockerDriver } from '../../src/drivers/docker.ts';
import { registryAuthHeader } from '../../src/drivers/docker-spec.ts';
import { cleanupAfter, freePort, getTestHost, waitFor } from '../harness/index.ts';

export interface TestRegistry {
  /** `127.0.0.1:<port>` */
  addr: string;
  username: string;
  password: string;
  /** Push local image `source` as `<addr>/<repo>:<tag>` and remove the local tag again. */
  push(source: string, repo: string, tag: string): Promise<string>;
}

export async function startRegistry(username: string, password: string): Promise<TestRegistry> {
  const host = getTestHost();
  const dir = await mkdtemp(path.join(host.tmpRoot, 'registry-'));
  const addr = `127.0.0.1:${await freePort()}`;
  const { stdout: htpasswd } = await execa('htpasswd', ['-Bbn', username, password], { timeout: 10_000 });
  await writeFile(path.join(dir, 'htpasswd'), `${htpasswd}\n`);
  await writeFile(
    path.join(dir, 'config.yml'),
    ['version: 0.1', 'log: {level: error}', `storage: {filesystem: {rootdirectory: ${path.join(dir, 'data')}}}`, `http: {addr: "${addr}"}`, `auth: {htpasswd: {realm: crate-test, path: ${path.join(dir, 'htpasswd')}}}`, ''].join('\n'),
  );
  const proc = execa('docker-registry', ['serve', path.join(dir, 'config.yml')], { stdio: ['ignore', 'ignore', 'pipe'], reject: false, cleanup: true });
  const docker = createDockerDriver({ socketPath: host.docker.socket });
  cleanupAfter(async () => {
    proc.kill('SIGTERM');
    await proc;
    await docker.close();
    await rm(dir, { recursive: true, force: true });
  });
  await waitFor(
    'registry listening',
    async () => {
      const r = await request(`http://${addr}/v2/`, { reset: true, headersTimeout: 2_000, bodyTimeout: 2_000 });
      await r.body.dump();
      return r.statusCode === 401;
    },
    15_000,
  );
  return {
    addr,
    username,
    password,
    async push(source, repo, tag) {
      const ref = `${addr}/${repo}`;
      const t = await docker.client.call('POST', `/images/${encodeURIComponent(source)}/tag?repo=${encodeURIComponent(ref)}&tag=${encodeURIComponent(tag)}`);
      if (t.status !== 201) throw new Error(`tag ${source} as ${ref}:${tag}: ${t.status} ${t.body}`);
      const p = await docker.client.call('POST', `/images/${ref}/push?tag=${tag}`, { headers: { 'x-registry-auth': registryAuthHeader(ref, { username, password }) }, timeoutMs: 60_000 });
      if (p.status !== 200 || /"error"/.test(p.body)) throw new Error(`push ${ref}:${tag}: ${p.status} ${p.body}`);
      const u = await docker.client.call('DELETE', `/images/${ref}:${tag}`);
      if (u.status !== 200) throw new Error(`untag ${ref}:${tag}: ${u.status} ${u.body}`);
      return ref;
    },
  };
}
