/**
 * Smoke test: the harness's dockerd is real. A container from the imported test image answers HTTP
 * on a port published on 127.0.0.1, reports its version, and drains and exits 0 on SIGTERM.
 */
import { describe, expect, it } from 'vitest';
import { cleanupContainer, dockerApi, freePort, getTestHost, httpGet, uniqueName, waitFor } from '../harness/index.ts';

async function runApp(image: string, env: string[] = []): Promise<{ name: string; port: number }> {
  const name = uniqueName('smoke');
  const port = await freePort();
  cleanupContainer(name);
  const created = await dockerApi('POST', `/containers/create?name=${name}`, {
    Image: image,
    Env: env,
    Labels: { 'crate.test': 'smoke' },
    HostConfig: { PortBindings: { '8080/tcp': [{ HostIp: '127.0.0.1', HostPort: String(port) }] } },
  });
  expect(created.status, created.text).toBe(201);
  const started = await dockerApi('POST', `/containers/${name}/start`);
  expect(started.status, started.text).toBe(204);
  return { name, port };
}

describe('dockerd (real)', () => {
  it('runs the imported test image, published on 127.0.0.1', async () => {
    const host = getTestHost();
    const ping = await dockerApi('GET', '/_ping');
    expect(ping.text).toBe('OK');
    const { name, port } = await runApp(host.docker.image, ['INSTANCE_ID=smoke-1', 'GREETING=a "quoted" $value']);

    const res = await waitFor('the container to answer', async () => {
      const r = await httpGet(`http://127.0.0.1:${port}/`);
      return r.status === 200 ? r : undefined;
    });
    expect(res.body).toMatchObject({ version: 'v1', instance: 'smoke-1' });
    expect((await httpGet(`http://127.0.0.1:${port}/healthz`)).status).toBe(200);
    expect((await httpGet(`http://127.0.0.1:${port}/env/?name=GREETING`)).text).toBe('a "quoted" $value');

    const inspect = await dockerApi('GET', `/images/${encodeURIComponent(host.docker.image)}/json`);
    expect(inspect.body).toMatchObject({ Config: { ExposedPorts: { '8080/tcp': {} } } });

    // A request in flight when SIGTERM arrives still completes; then the container exits 0.
    const held = httpGet(`http://127.0.0.1:${port}/hold/?ms=700`);
    await new Promise((r) => setTimeout(r, 200));
    const stopped = dockerApi('POST', `/containers/${name}/stop?t=10`);
    const heldRes = await held;
    expect(heldRes.status).toBe(200);
    expect(heldRes.body).toMatchObject({ held_ms: 700 });
    expect((await stopped).status).toBe(204);
    const state = await dockerApi('GET', `/containers/${name}/json`);
    expect(state.body).toMatchObject({ State: { Status: 'exited', ExitCode: 0 } });
  });

  it('the broken image fails its health check', async () => {
    const host = getTestHost();
    const { port } = await runApp(host.docker.images.broken);
    await waitFor('the container to answer', async () => (await httpGet(`http://127.0.0.1:${port}/`)).status === 200);
    expect((await httpGet(`http://127.0.0.1:${port}/healthz`)).status).toBeGreaterThanOrEqual(400);
  });
});
