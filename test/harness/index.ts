/**
 * What tests import to reach the real components the globalSetup started (see ./global-setup.ts):
 *
 *   const host = getTestHost();
 *   const team = uniqueName('t');                      // unique ids: the host is shared by parallel files
 *   cleanupUnit(unit); cleanupContainer(name); ...     // registered before creating, run after the test
 *   await systemctlUser(['start', unit]);
 *   await dockerApi('POST', '/containers/create?name=x', {...});
 *   await caddyApi('POST', '/config/apps/http/servers/crate/routes', route);
 *
 * Every helper that reaches a component has a deadline. Cleanups run after the test whether it
 * passed or failed (vitest `onTestFinished`), in reverse order of registration.
 */
import { randomBytes } from 'node:crypto';
import { mkdtemp, rm, unlink } from 'node:fs/promises';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { execa, type Options as ExecaOptions, type Result } from 'execa';
import { Client, request } from 'undici';
import { inject, onTestFinished } from 'vitest';
import { freePort } from '../../src/host/process.ts';
import type { TestHost } from './types.ts';

export type { TestHost } from './types.ts';
export { freePort };

/** The components of this run. Throws when the globalSetup did not run (e.g. a custom vitest config). */
export function getTestHost(): TestHost {
  const host = inject('crateHost');
  if (!host) throw new Error('crateHost not provided: run the tests through vitest.config.ts (globalSetup test/harness/global-setup.ts)');
  return host;
}

let counter = 0;

/**
 * A name unique across parallel test files and runs: `<prefix>-<6 hex><n>`, lower-case, valid as an
 * id (ID_PATTERN), unit-name part, container name and Caddy `@id` part. Keep prefixes short.
 */
export function uniqueName(prefix = 't'): string {
  counter += 1;
  return `${prefix}-${randomBytes(3).toString('hex')}${counter.toString(36)}`;
}

/** Environment for anything that talks to the test user manager (systemctl, the systemd driver). */
export function systemdEnv(): Record<string, string> {
  return { PATH: process.env.PATH ?? '/usr/bin:/bin', ...getTestHost().systemd.env };
}

/** `systemctl --user <args>` against the test user manager. Rejects on a non-zero exit unless `reject: false`. */
export async function systemctlUser(args: string[], opts: { reject?: boolean; timeoutMs?: number } = {}): Promise<Result<ExecaOptions>> {
  return execa('systemctl', ['--user', '--no-pager', ...args], {
    env: systemdEnv(),
    extendEnv: false,
    reject: opts.reject ?? true,
    timeout: opts.timeoutMs ?? 15_000,
  });
}

/** An HTTP answer with its body parsed as JSON when it is JSON, else as text. */
export interface HttpAnswer {
  status: number;
  headers: Record<string, string | string[] | undefined>;
  body: unknown;
  text: string;
}

async function answer(res: { statusCode: number; headers: Record<string, string | string[] | undefined>; body: { text(): Promise<string> } }): Promise<HttpAnswer> {
  const text = await res.body.text();
  let body: unknown = text;
  const type = String(res.headers['content-type'] ?? '');
  if (text.length > 0 && (type.includes('json') || /^[[{]/.test(text))) {
    try {
      body = JSON.parse(text);
    } catch {
      // Not JSON after all (e.g. Docker's NDJSON streams): keep the text.
      body = text;
    }
  }
  return { status: res.statusCode, headers: res.headers, body, text };
}

/** One Engine API call over the test dockerd's socket, e.g. `dockerApi('GET', '/containers/json?all=1')`. */
export async function dockerApi(method: string, apiPath: string, body?: unknown, timeoutMs = 30_000): Promise<HttpAnswer> {
  const client = new Client('http://docker', { socketPath: getTestHost().docker.socket, headersTimeout: timeoutMs, bodyTimeout: timeoutMs });
  try {
    const res = await client.request({
      method,
      path: apiPath,
      ...(body === undefined ? {} : { body: JSON.stringify(body), headers: { 'content-type': 'application/json' } }),
    });
    return await answer(res);
  } finally {
    await client.close();
  }
}

/**
 * One Caddy admin API call, e.g. `caddyApi('GET', '/config/apps/http/servers/crate')`. A fresh
 * connection each time: Caddy restarts its admin listener on every config change.
 */
export async function caddyApi(method: string, apiPath: string, body?: unknown, timeoutMs = 15_000): Promise<HttpAnswer> {
  const res = await request(`${getTestHost().caddy.adminUrl}${apiPath}`, {
    method: method as 'GET',
    reset: true,
    headersTimeout: timeoutMs,
    bodyTimeout: timeoutMs,
    ...(body === undefined ? {} : { body: JSON.stringify(body), headers: { 'content-type': 'application/json' } }),
  });
  return answer(res);
}

/** GET a Caddy admin path and return its JSON (throws on non-200). */
export async function caddyGet(apiPath: string): Promise<unknown> {
  const r = await caddyApi('GET', apiPath);
  if (r.status !== 200) throw new Error(`caddy GET ${apiPath}: ${r.status} ${r.text}`);
  return r.body;
}

/**
 * Plain HTTP GET with a deadline and no connection reuse; `host` sets the Host header (to reach a
 * route through Caddy's HTTP port).
 */
export async function httpGet(url: string, opts: { host?: string; timeoutMs?: number } = {}): Promise<HttpAnswer> {
  const res = await request(url, {
    method: 'GET',
    reset: true,
    headersTimeout: opts.timeoutMs ?? 10_000,
    bodyTimeout: opts.timeoutMs ?? 10_000,
    ...(opts.host ? { headers: { host: opts.host } } : {}),
  });
  return answer(res);
}

/**
 * Poll `probe` until it returns a value other than `undefined`/`false`, or throw after `timeoutMs`
 * naming `what` and the last error. Errors thrown by the probe count as "not yet".
 */
export async function waitFor<T>(what: string, probe: () => Promise<T | undefined | false>, timeoutMs = 10_000, intervalMs = 50): Promise<T> {
  const until = Date.now() + timeoutMs;
  let last: unknown;
  for (;;) {
    try {
      const v = await probe();
      if (v !== undefined && v !== false) return v;
    } catch (err) {
      last = err;
    }
    if (Date.now() >= until) {
      throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}${last instanceof Error ? `: ${last.message}` : ''}`, { cause: last });
    }
    await sleep(intervalMs);
  }
}

/**
 * Run `fn` after the current test, passed or failed. Call it inside a test (or beforeEach) right
 * before creating the thing it removes; cleanups run in reverse order of registration.
 */
export function cleanupAfter(fn: () => unknown): void {
  onTestFinished(async () => {
    await fn();
  });
}

/** After the test: stop the unit, clear its failed state, delete its unit file (and drop-ins), daemon-reload. */
export function cleanupUnit(unit: string): void {
  cleanupAfter(async () => {
    await systemctlUser(['stop', unit], { reject: false });
    await systemctlUser(['reset-failed', unit], { reject: false });
    const dir = getTestHost().systemd.unitDir;
    await unlink(path.join(dir, unit)).catch((err: NodeJS.ErrnoException) => {
      if (err.code !== 'ENOENT') throw err;
    });
    await rm(path.join(dir, `${unit}.d`), { recursive: true, force: true });
    await systemctlUser(['daemon-reload']);
  });
}

/** After the test: force-remove the container (and its anonymous volumes); a missing one is fine. */
export function cleanupContainer(nameOrId: string): void {
  cleanupAfter(async () => {
    const r = await dockerApi('DELETE', `/containers/${encodeURIComponent(nameOrId)}?force=true&v=true`);
    if (r.status !== 204 && r.status !== 404) throw new Error(`cleanup of container ${nameOrId}: ${r.status} ${r.text}`);
  });
}

/** After the test: delete the Caddy object tagged `@id`; a missing one is fine. */
export function cleanupCaddyId(id: string): void {
  cleanupAfter(async () => {
    const r = await caddyApi('DELETE', `/id/${encodeURIComponent(id)}`);
    if (r.status !== 200 && !/unknown object ID|not found/i.test(r.text)) throw new Error(`cleanup of caddy @id ${id}: ${r.status} ${r.text}`);
  });
}

/** After the test: delete a Caddy config path (e.g. `/config/apps/http/servers/x`); a missing one is fine. */
export function cleanupCaddyPath(configPath: string): void {
  cleanupAfter(async () => {
    const r = await caddyApi('DELETE', configPath);
    if (r.status !== 200 && !/invalid traversal path|not found|nonexistent/i.test(r.text)) {
      throw new Error(`cleanup of caddy ${configPath}: ${r.status} ${r.text}`);
    }
  });
}

/**
 * A Caddy HTTP server of this test alone (name unique, own free loopback port, no routes, automatic
 * HTTPS off), removed after the test. For tests that replace a whole server's routes, which would
 * race with other test files on the shared server.
 */
export async function caddyServer(prefix = 'srv'): Promise<{ name: string; port: number }> {
  const name = uniqueName(prefix).replace(/-/g, '_');
  for (let attempt = 0; ; attempt++) {
    const port = await freePort();
    cleanupCaddyPath(`/config/apps/http/servers/${name}`);
    const r = await caddyApi('PUT', `/config/apps/http/servers/${name}`, {
      listen: [`127.0.0.1:${port}`],
      automatic_https: { disable: true },
      routes: [],
    });
    if (r.status === 200) return { name, port };
    if (attempt >= 3 || !/address already in use/i.test(r.text)) throw new Error(`cannot add caddy server ${name}: ${r.status} ${r.text}`);
  }
}

/** A fresh folder for this test inside the run's folder, removed after the test. */
export async function tempDir(prefix = 't'): Promise<string> {
  const dir = await mkdtemp(path.join(getTestHost().tmpRoot, 'tests', `${prefix}-`));
  cleanupAfter(() => rm(dir, { recursive: true, force: true }));
  return dir;
}
