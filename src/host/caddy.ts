/**
 * A private Caddy: `caddy run --config <boot.json>` with the admin API and one HTTP server on free
 * loopback ports, automatic HTTPS off, a bounded grace period, nothing persisted, and its data and
 * config folders inside its own private folder.
 */
import { mkdir, rm, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { request } from 'undici';
import { CrateError, hasCode } from '../core/errors.ts';
import { freePort, killAll, logTail, pidsMentioning, removeTree, requireBinary, spawnComponent, stopComponent, systemPath, waitReady } from './process.ts';

/** Options of startCaddy. */
export interface CaddyOptions {
  /** Private folder (created; removed by stop()). */
  dir: string;
  /** Name of the HTTP server the operator puts its routes in; default `crate`. */
  serverName?: string;
  /** `apps.http.grace_period`; default `10s`. */
  gracePeriod?: string;
  /** Readiness deadline; default 15 s. */
  readyDeadlineMs?: number;
  /**
   * Listen address of the HTTP server (`HOST:PORT`, e.g. `127.0.0.1:8080`). Default: a free loopback
   * port. A fixed address that is taken fails the start (E_HOST_START) instead of moving elsewhere.
   */
  httpListen?: string;
}

/** A running private Caddy. */
export interface CaddyHandle {
  readonly pid: number;
  /** `http://127.0.0.1:<port>` (no trailing slash). */
  readonly adminUrl: string;
  /** Loopback port of the HTTP server `serverName`. */
  readonly httpPort: number;
  readonly serverName: string;
  readonly configFile: string;
  readonly logFile: string;
  /** Stop Caddy (graceful, then SIGKILL), remove its folder. Idempotent. */
  stop(): Promise<void>;
}

/** The boot configuration: admin on `adminPort`, one empty HTTP server `serverName` on `httpPort` (or `httpListen`). */
export function caddyBootConfig(o: { adminPort: number; httpPort: number; httpListen?: string | undefined; serverName: string; gracePeriod: string }): object {
  return {
    admin: { listen: `127.0.0.1:${o.adminPort}`, config: { persist: false } },
    logging: { logs: { default: { level: 'WARN' } } },
    apps: {
      http: {
        grace_period: o.gracePeriod,
        servers: {
          [o.serverName]: {
            listen: [o.httpListen ?? `127.0.0.1:${o.httpPort}`],
            automatic_https: { disable: true },
            routes: [],
          },
        },
      },
    },
  };
}

/** GET `<adminUrl>/config/`; true on 200. A fresh connection each time (Caddy restarts its admin listener on every change). */
export async function pingCaddy(adminUrl: string, timeoutMs = 2000): Promise<boolean> {
  const res = await request(`${adminUrl}/config/`, { method: 'GET', headersTimeout: timeoutMs, bodyTimeout: timeoutMs, reset: true });
  await res.body.text();
  return res.statusCode === 200;
}

/**
 * Start a private Caddy and wait (with a deadline) until `GET /config/` answers. A port taken between
 * choosing and binding is retried with new ports. Throws CrateError `E_HOST_MISSING` (naming the
 * package) or `E_HOST_START` (with Caddy's log tail).
 */
export async function startCaddy(opts: CaddyOptions): Promise<CaddyHandle> {
  const caddy = requireBinary('caddy', 'caddy');
  const serverName = opts.serverName ?? 'crate';
  if (!/^[A-Za-z0-9_-]{1,64}$/.test(serverName)) throw new CrateError('E_HOST_START', `bad caddy server name ${serverName}`);
  const home = path.join(opts.dir, 'home');
  await mkdir(home, { recursive: true, mode: 0o700 });
  const configFile = path.join(opts.dir, 'caddy.json');
  const logFile = path.join(opts.dir, 'caddy.log');
  let fixedPort: number | undefined;
  if (opts.httpListen !== undefined) {
    const m = /:([0-9]{1,5})$/.exec(opts.httpListen);
    if (!m) throw new CrateError('E_HOST_START', `caddy: bad listen address ${opts.httpListen}`);
    fixedPort = Number(m[1]);
  }

  for (let attempt = 1; ; attempt++) {
    const adminPort = await freePort();
    let httpPort = fixedPort ?? (await freePort());
    while (httpPort === adminPort) httpPort = await freePort();
    const config = caddyBootConfig({ adminPort, httpPort, httpListen: opts.httpListen, serverName, gracePeriod: opts.gracePeriod ?? '10s' });
    await writeFile(configFile, JSON.stringify(config, null, 2));
    await rm(logFile, { force: true });
    const proc = spawnComponent(caddy, ['run', '--config', configFile], {
      env: {
        PATH: systemPath(),
        HOME: home,
        XDG_DATA_HOME: path.join(home, 'data'),
        XDG_CONFIG_HOME: path.join(home, 'config'),
      },
      logFile,
      cwd: opts.dir,
    });
    const adminUrl = `http://127.0.0.1:${adminPort}`;
    let stopped: Promise<void> | undefined;
    const stop = (): Promise<void> => {
      stopped ??= (async () => {
        await stopComponent(proc, 15_000);
        await killAll(await pidsMentioning(opts.dir));
        await removeTree(opts.dir);
      })();
      return stopped;
    };
    try {
      await waitReady('caddy', proc, () => pingCaddy(adminUrl, 1000), opts.readyDeadlineMs ?? 15_000);
      return { pid: proc.pid, adminUrl, httpPort, serverName, configFile, logFile, stop };
    } catch (err) {
      const log = logTail(logFile, 50);
      const inUse = /address already in use/i.test(log);
      // Only the admin port can move; a fixed HTTP address that is taken is the caller's to change.
      const httpTaken = fixedPort !== undefined && new RegExp(`:${fixedPort}\\b[^\\n]*address already in use`, 'i').test(log);
      if (httpTaken) {
        await stop().catch(() => undefined);
        throw new CrateError('E_HOST_START', `caddy: ${opts.httpListen ?? ''} is already in use`, { cause: err, details: { listen: opts.httpListen } });
      }
      if (inUse && attempt < 4 && hasCode(err, 'E_HOST_START')) {
        await stopComponent(proc, 5000);
        continue;
      }
      await stop().catch(() => undefined);
      throw err;
    }
  }
}
