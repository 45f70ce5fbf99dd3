/**
 * Can the operator reach the three components it drives? One cheap, read-only call each, run in
 * parallel, each with its own deadline: systemd `list-units --output=json` (in the configured scope),
 * Docker `GET /_ping` on the configured socket, Caddy `GET /config/` on the configured admin address.
 * Never throws: an unreachable component is reported with the reason.
 */
import { execa } from 'execa';
import { Client, request } from 'undici';
import type { BackendStatus } from '../api/app.ts';
import type { OperatorConfig } from '../config.ts';
import { describeError } from '../core/errors.ts';
import { countHostCall } from '../core/hostcalls.ts';

/** Options of checkBackends. */
export interface ReachabilityOptions {
  /** Deadline per component; default 2000 ms. */
  timeoutMs?: number;
  /** Environment for systemctl (user scope needs XDG_RUNTIME_DIR); default this process's. */
  env?: NodeJS.ProcessEnv;
}

type One = { reachable: boolean; detail: string };

async function checkSystemd(config: OperatorConfig, timeoutMs: number, env: NodeJS.ProcessEnv): Promise<One> {
  countHostCall('systemctl');
  const scope = config.systemdScope === 'user' ? ['--user'] : [];
  const r = await execa('systemctl', [...scope, '--no-pager', 'list-units', '--output=json', 'crate-*'], {
    env,
    extendEnv: false,
    reject: false,
    timeout: timeoutMs,
  });
  if (r.timedOut) return { reachable: false, detail: `systemctl timed out after ${timeoutMs} ms` };
  if (r.failed) return { reachable: false, detail: String(r.stderr || r.shortMessage).trim().slice(0, 300) };
  try {
    const units = JSON.parse(String(r.stdout)) as unknown[];
    return { reachable: true, detail: `${config.systemdScope} manager, ${units.length} crate unit(s) loaded` };
  } catch {
    return { reachable: false, detail: 'systemctl answered something that is not JSON' };
  }
}

async function checkDocker(config: OperatorConfig, timeoutMs: number): Promise<One> {
  countHostCall('docker');
  const client = new Client('http://docker', { socketPath: config.dockerSocket, connectTimeout: timeoutMs, headersTimeout: timeoutMs, bodyTimeout: timeoutMs });
  try {
    const res = await client.request({ method: 'GET', path: '/_ping', signal: AbortSignal.timeout(timeoutMs) });
    const text = await res.body.text();
    if (res.statusCode !== 200 || text !== 'OK') return { reachable: false, detail: `GET /_ping answered ${res.statusCode}` };
    return { reachable: true, detail: `Docker API ${String(res.headers['api-version'] ?? 'unknown')} at ${config.dockerSocket}` };
  } catch (err) {
    return { reachable: false, detail: `${config.dockerSocket}: ${describeError(err).message}` };
  } finally {
    await client.close();
  }
}

async function checkCaddy(config: OperatorConfig, timeoutMs: number): Promise<One> {
  countHostCall('caddy');
  const signal = AbortSignal.timeout(timeoutMs);
  try {
    let status: number;
    if (config.caddyAdmin.startsWith('unix:')) {
      const client = new Client('http://localhost', { socketPath: config.caddyAdmin.slice('unix:'.length), connectTimeout: timeoutMs });
      try {
        const res = await client.request({ method: 'GET', path: '/config/', signal });
        await res.body.text();
        status = res.statusCode;
      } finally {
        await client.close();
      }
    } else {
      // A fresh connection: Caddy restarts its admin listener on every config change.
      const res = await request(`${config.caddyAdmin}/config/`, { method: 'GET', reset: true, signal });
      await res.body.text();
      status = res.statusCode;
    }
    if (status !== 200) return { reachable: false, detail: `GET /config/ answered ${status}` };
    return { reachable: true, detail: `admin API at ${config.caddyAdmin}` };
  } catch (err) {
    return { reachable: false, detail: `${config.caddyAdmin}: ${describeError(err).message}` };
  }
}

/** Check all three components in parallel; resolves within about `timeoutMs`, never rejects. */
export async function checkBackends(config: OperatorConfig, opts: ReachabilityOptions = {}): Promise<BackendStatus> {
  const timeoutMs = opts.timeoutMs ?? 2000;
  const guard = (p: Promise<One>): Promise<One> => p.catch((err: unknown) => ({ reachable: false, detail: describeError(err).message }));
  const [systemd, docker, caddy] = await Promise.all([
    guard(checkSystemd(config, timeoutMs, opts.env ?? process.env)),
    guard(checkDocker(config, timeoutMs)),
    guard(checkCaddy(config, timeoutMs)),
  ]);
  return { systemd, docker, caddy };
}
