/**
 * Smoke test: the harness's Caddy is real. A route added through the admin API proxies requests
 * arriving on Caddy's HTTP port with the route's Host to a container of the test image.
 */
import { describe, expect, it } from 'vitest';
import { caddyApi, caddyGet, cleanupCaddyId, cleanupContainer, dockerApi, freePort, getTestHost, httpGet, uniqueName, waitFor } from '../harness/index.ts';

describe('caddy (real)', () => {
  it('proxies a route added through the admin API to a container', async () => {
    const host = getTestHost();
    const config = (await caddyGet('/config/')) as { apps: { http: { grace_period: string; servers: Record<string, unknown> } } };
    expect(config.apps.http.grace_period).toBeTruthy();
    expect(config.apps.http.servers[host.caddy.serverName]).toMatchObject({ automatic_https: { disable: true } });

    const name = uniqueName('smoke');
    const port = await freePort();
    cleanupContainer(name);
    const created = await dockerApi('POST', `/containers/create?name=${name}`, {
      Image: host.docker.images.v2,
      HostConfig: { PortBindings: { '8080/tcp': [{ HostIp: '127.0.0.1', HostPort: String(port) }] } },
    });
    expect(created.status, created.text).toBe(201);
    expect((await dockerApi('POST', `/containers/${name}/start`)).status).toBe(204);
    await waitFor('the container to answer', async () => (await httpGet(`http://127.0.0.1:${port}/`)).status === 200);

    const domain = `${name}.crate.test`;
    const id = `smoke-route-${name}`;
    cleanupCaddyId(id);
    const added = await caddyApi('POST', `/config/apps/http/servers/${host.caddy.serverName}/routes`, {
      '@id': id,
      match: [{ host: [domain] }],
      handle: [{ handler: 'reverse_proxy', upstreams: [{ dial: `127.0.0.1:${port}` }] }],
      terminal: true,
    });
    expect(added.status, added.text).toBe(200);

    const res = await waitFor('the route to proxy', async () => {
      const r = await httpGet(`http://127.0.0.1:${host.caddy.httpPort}/`, { host: domain });
      return r.status === 200 ? r : undefined;
    });
    expect(res.body).toMatchObject({ version: 'v2' });
    // Another host name is not routed to the container.
    const other = await httpGet(`http://127.0.0.1:${host.caddy.httpPort}/`, { host: `other-${domain}` });
    expect(other.text).not.toContain('"version"');

    expect((await caddyApi('DELETE', `/id/${id}`)).status).toBe(200);
    expect((await caddyApi('GET', `/id/${id}`)).status).toBeGreaterThanOrEqual(400);
  });
});
