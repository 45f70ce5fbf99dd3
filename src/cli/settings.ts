/**
 * The operator's settings as command-line flags: one flag per entry of SETTING_NAMES (src/config.ts),
 * with its environment variable and default in the help text. The table is typed by SettingName, so a
 * setting added to config.ts without a line here does not compile.
 */
import { Command, Option } from 'commander';
import { SETTING_NAMES, type SettingName } from '../config.ts';

/** Help text of each setting: what it is, its value syntax, and its default (production `serve`). */
export const SETTING_HELP: Readonly<Record<SettingName, { what: string; arg: string; def: string }>> = {
  listen: { what: 'API listen address', arg: 'host:port', def: '127.0.0.1:7070' },
  token: { what: 'API bearer token(s), comma-separated, each ≥ 16 characters', arg: 'tokens', def: 'none: `serve` refuses to start; `start` generates one' },
  stateDir: { what: 'state directory (desired state, records, token)', arg: 'dir', def: './state' },
  appsDir: { what: "where apps' releases and env files live", arg: 'dir', def: '<state dir>/apps' },
  systemdScope: { what: 'systemd scope', arg: 'system|user', def: 'system' },
  dockerSocket: { what: 'Docker Engine socket', arg: 'path', def: '/var/run/docker.sock' },
  caddyAdmin: { what: 'Caddy admin API, http://HOST:PORT or unix:/path', arg: 'url', def: 'http://127.0.0.1:2019' },
  caddyServer: { what: 'Caddy HTTP server the routes live in', arg: 'name', def: 'crate' },
  caddyListen: { what: 'listen addresses of that server when the operator creates it, comma-separated', arg: 'addrs', def: ':80 (`start`: 127.0.0.1:8080)' },
  serverId: { what: "this host's server id (domain updates for another id are refused)", arg: 'id', def: 'the host name (`start`: local)' },
  callbackSecret: { what: 'callback signing secret (HMAC-SHA256 in X-Crate-Signature)', arg: 'secret', def: 'none (callbacks unsigned)' },
  surgePorts: { what: 'surge port range for successors without a port of their own', arg: 'a-b', def: '20000-29999' },
  resyncSeconds: { what: 'periodic resync of every app (drift healing), seconds', arg: 'n', def: '10' },
  concurrency: { what: 'apps reconciled in parallel', arg: 'n', def: '8' },
  keepReleases: { what: 'releases kept per binary app', arg: 'n', def: '5' },
  volumesRoot: { what: 'host-path Docker volumes must live under this folder', arg: 'dir', def: 'none: named volumes only' },
  stopTimeoutSec: { what: 'seconds systemd/Docker wait after SIGTERM before SIGKILL', arg: 'n', def: '30' },
  allowPrivate: { what: 'hosts/CIDRs asset and callback URLs may reach although private or loopback, comma-separated', arg: 'list', def: 'none (`start`: 127.0.0.0/8, ::1)' },
  healthyTimeout: { what: 'seconds an instance may take to become healthy', arg: 'n', def: '60 (`start`: 10)' },
  drainTimeout: { what: 'seconds to wait for in-flight requests before stopping an old instance', arg: 'n', def: '30' },
};

/** `caddyListen` → `--caddy-listen`. */
export function flagName(flag: string): string {
  return `--${flag.replace(/[A-Z]/g, (c) => `-${c.toLowerCase()}`)}`;
}

/** Add every setting flag, and `--config`, to `cmd`. */
export function addSettings(cmd: Command): Command {
  for (const [name, s] of Object.entries(SETTING_NAMES) as [SettingName, (typeof SETTING_NAMES)[SettingName]][]) {
    const h = SETTING_HELP[name];
    const opt = new Option(`${flagName(s.flag)} <${h.arg}>`, `${h.what} (${s.env}; default ${h.def})`);
    if (name === 'systemdScope') opt.choices(['system', 'user']);
    cmd.addOption(opt);
  }
  return cmd.option('--config <file>', 'YAML file with any of these settings in snake_case (CRATE_CONFIG)');
}
