/**
 * The operator's configuration: one module, three sources. Flags beat environment, environment beats
 * the YAML file (`--config`), the file beats the defaults. Names are the ones platform tooling relies
 * on (API.md "Running it"); keep them stable.
 */
import { readFileSync } from 'node:fs';
import { hostname } from 'node:os';
import path from 'node:path';
import { parse as parseYaml } from 'yaml';
import { CrateError } from './core/errors.ts';

export type SystemdScope = 'system' | 'user';

export interface OperatorConfig {
  /** API listen address. */
  listen: { host: string; port: number };
  /** Valid bearer tokens (two at once during rotation). Empty means "none configured". */
  tokens: string[];
  stateDir: string;
  appsDir: string;
  systemdScope: SystemdScope;
  dockerSocket: string;
  /** `http://host:port` or `unix:/path`. */
  caddyAdmin: string;
  caddyServer: string;
  /** Listen addresses of the Caddy server the operator creates when it is missing (e.g. `:80`). */
  caddyListen: string[];
  /** Caddy's `grace_period` when the operator creates the server: how long a reload waits for in-flight requests. */
  caddyGraceMs: number;
  serverId: string;
  callbackSecret: string | undefined;
  surgePorts: { from: number; to: number };
  /** Periodic resync of every app, in milliseconds. */
  resyncMs: number;
  /** Apps reconciled in parallel. */
  concurrency: number;
  /** Releases kept per app. */
  keepReleases: number;
  /** Host-path volumes must live under this root; empty means only named volumes are allowed. */
  volumesRoot: string | undefined;
  /** Seconds systemd/Docker wait after SIGTERM before SIGKILL. */
  stopTimeoutSec: number;
  /** Deadlines of deployment steps, in milliseconds. */
  /**
   * `fetchMs`: how long a release download may take (a slow or hanging asset server fails the
   * deployment with E_ASSET_TIMEOUT after it); default 5 minutes.
   */
  deadlines: { probeIntervalMs: number; probeTimeoutMs: number; healthyMs: number; drainMs: number; deploymentMs: number; fetchMs?: number };
  /** Hosts/CIDRs that callback and asset URLs may reach although loopback/private (SSRF allow-list). */
  allowPrivateNetworks: string[];
}

/** One setting as it may appear in each source. */
interface Setting {
  flag: string;
  env: string;
  file: string;
}

const SETTINGS = {
  listen: { flag: 'listen', env: 'CRATE_LISTEN', file: 'listen' },
  token: { flag: 'token', env: 'CRATE_API_TOKEN', file: 'token' },
  stateDir: { flag: 'stateDir', env: 'CRATE_STATE_DIR', file: 'state_dir' },
  appsDir: { flag: 'appsDir', env: 'CRATE_APPS_DIR', file: 'apps_dir' },
  systemdScope: { flag: 'systemdScope', env: 'CRATE_SYSTEMD_SCOPE', file: 'systemd_scope' },
  dockerSocket: { flag: 'dockerSocket', env: 'CRATE_DOCKER_SOCKET', file: 'docker_socket' },
  caddyAdmin: { flag: 'caddyAdmin', env: 'CRATE_CADDY_ADMIN', file: 'caddy_admin' },
  caddyServer: { flag: 'caddyServer', env: 'CRATE_CADDY_SERVER', file: 'caddy_server' },
  caddyListen: { flag: 'caddyListen', env: 'CRATE_CADDY_LISTEN', file: 'caddy_listen' },
  serverId: { flag: 'serverId', env: 'CRATE_SERVER_ID', file: 'server_id' },
  callbackSecret: { flag: 'callbackSecret', env: 'CRATE_CALLBACK_SECRET', file: 'callback_secret' },
  surgePorts: { flag: 'surgePorts', env: 'CRATE_SURGE_PORTS', file: 'surge_ports' },
  resyncSeconds: { flag: 'resyncSeconds', env: 'CRATE_RESYNC_SECONDS', file: 'resync_seconds' },
  concurrency: { flag: 'concurrency', env: 'CRATE_CONCURRENCY', file: 'concurrency' },
  keepReleases: { flag: 'keepReleases', env: 'CRATE_KEEP_RELEASES', file: 'keep_releases' },
  volumesRoot: { flag: 'volumesRoot', env: 'CRATE_VOLUMES_ROOT', file: 'volumes_root' },
  stopTimeoutSec: { flag: 'stopTimeout', env: 'CRATE_STOP_TIMEOUT', file: 'stop_timeout' },
  allowPrivate: { flag: 'allowPrivate', env: 'CRATE_ALLOW_PRIVATE', file: 'allow_private' },
  healthyTimeout: { flag: 'healthyTimeout', env: 'CRATE_HEALTHY_TIMEOUT', file: 'healthy_timeout' },
  drainTimeout: { flag: 'drainTimeout', env: 'CRATE_DRAIN_TIMEOUT', file: 'drain_timeout' },
} as const satisfies Record<string, Setting>;

export type SettingName = keyof typeof SETTINGS;

/** Every setting with its flag, environment variable and file key, for help texts and the README. */
export const SETTING_NAMES: Readonly<Record<SettingName, Setting>> = SETTINGS;

export interface ConfigSources {
  /** Parsed flags, keyed by the camelCase flag names above (commander's output). */
  flags?: Partial<Record<string, unknown>>;
  env?: NodeJS.ProcessEnv;
  /** Path of the YAML config file, if any. */
  configFile?: string | undefined;
  /** Defaults that differ from the production ones (the embedded-default start uses this). */
  defaults?: Partial<OperatorConfig>;
}

function fail(field: string, message: string): never {
  throw new CrateError('E_CONFIG', `${field}: ${message}`, { details: { field } });
}

function readFile(file: string): Record<string, unknown> {
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch (err) {
    throw new CrateError('E_CONFIG', `cannot read config file ${file}`, { cause: err });
  }
  const doc: unknown = parseYaml(text, { maxAliasCount: 100 });
  if (doc === null || doc === undefined) return {};
  if (typeof doc !== 'object' || Array.isArray(doc)) fail(file, 'must be a YAML mapping');
  const known = new Set<string>(Object.values(SETTINGS).map((s) => s.file));
  for (const k of Object.keys(doc)) if (!known.has(k)) fail(`${file}: ${k}`, 'unknown setting');
  return doc as Record<string, unknown>;
}

/** A string, number or boolean as a string; undefined for anything else (objects, functions...). */
function scalar(x: unknown): string | undefined {
  return typeof x === 'string' || typeof x === 'number' || typeof x === 'boolean' ? String(x) : undefined;
}

function parsePort(field: string, s: string): number {
  if (!/^[0-9]{1,5}$/.test(s)) fail(field, `not a port: ${s}`);
  const n = Number(s);
  if (n < 1 || n > 65535) fail(field, `port out of range: ${s}`);
  return n;
}

/** `HOST:PORT` or `[v6]:PORT`. */
export function parseListen(s: string): { host: string; port: number } {
  const m = /^(?:\[([0-9a-fA-F:.]+)\]|([^:\s]+)):([0-9]+)$/.exec(s);
  if (!m) fail('listen', `expected HOST:PORT, got ${JSON.stringify(s)}`);
  return { host: (m[1] ?? m[2]) as string, port: parsePort('listen', m[3] as string) };
}

function parseRange(s: string): { from: number; to: number } {
  const m = /^([0-9]+)-([0-9]+)$/.exec(s);
  if (!m) fail('surge_ports', `expected A-B, got ${JSON.stringify(s)}`);
  const from = parsePort('surge_ports', m[1] as string);
  const to = parsePort('surge_ports', m[2] as string);
  if (from > to) fail('surge_ports', `empty range ${s}`);
  return { from, to };
}

function parseIntSetting(field: string, s: string, min: number, max: number): number {
  if (!/^[0-9]+$/.test(s)) fail(field, `not an integer: ${s}`);
  const n = Number(s);
  if (n < min || n > max) fail(field, `must be between ${min} and ${max}`);
  return n;
}

/**
 * Resolve the configuration. Throws CrateError `E_CONFIG` naming the setting on any bad value.
 * Does not check that a token exists: `serve` refuses to start without one, the embedded start makes one.
 */
export function loadConfig(sources: ConfigSources = {}): OperatorConfig {
  const flags = sources.flags ?? {};
  const env = sources.env ?? process.env;
  const fileName = (flags.config as string | undefined) ?? sources.configFile ?? env.CRATE_CONFIG;
  const file = fileName ? readFile(fileName) : {};

  const raw = (name: SettingName): string | undefined => {
    const s = SETTINGS[name];
    const f = flags[s.flag];
    if (f !== undefined && f !== null && f !== '') return scalar(f) ?? fail(s.flag, 'must be a scalar');
    const e = env[s.env];
    if (e !== undefined && e !== '') return e;
    const v = file[s.file];
    if (v === undefined || v === null) return undefined;
    if (Array.isArray(v)) return v.map(String).join(',');
    return scalar(v) ?? fail(s.file, 'must be a scalar');
  };
  const d = sources.defaults ?? {};

  const stateDir = path.resolve(raw('stateDir') ?? d.stateDir ?? './state');
  const scope = raw('systemdScope') ?? d.systemdScope ?? 'system';
  if (scope !== 'system' && scope !== 'user') fail('systemd_scope', `must be system or user, got ${JSON.stringify(scope)}`);
  const tokens = (raw('token') ?? '').split(',').map((t) => t.trim()).filter((t) => t.length > 0);
  for (const t of tokens) if (t.length < 16) fail('token', 'each token must be at least 16 characters');
  const caddyAdmin = raw('caddyAdmin') ?? d.caddyAdmin ?? 'http://127.0.0.1:2019';
  if (!/^(https?:\/\/[^\s/]+\/?|unix:\/.+)$/.test(caddyAdmin)) fail('caddy_admin', `expected http://HOST:PORT or unix:/path, got ${JSON.stringify(caddyAdmin)}`);
  const caddyServer = raw('caddyServer') ?? d.caddyServer ?? 'crate';
  if (!/^[A-Za-z0-9_-]{1,64}$/.test(caddyServer)) fail('caddy_server', 'must match [A-Za-z0-9_-]{1,64}');
  const serverId = raw('serverId') ?? d.serverId ?? hostname();
  if (!/^[A-Za-z0-9][A-Za-z0-9_.-]{0,252}$/.test(serverId)) fail('server_id', 'must be a host-name-like id');
  const secs = (n: SettingName, def: number, min: number, max: number): number => {
    const r = raw(n);
    return r === undefined ? def : parseIntSetting(SETTINGS[n].file, r, min, max);
  };
  const listenRaw = raw('listen');

  return {
    listen: listenRaw ? parseListen(listenRaw) : (d.listen ?? { host: '127.0.0.1', port: 7070 }),
    tokens: tokens.length > 0 ? tokens : (d.tokens ?? []),
    stateDir,
    appsDir: path.resolve(raw('appsDir') ?? d.appsDir ?? path.join(stateDir, 'apps')),
    systemdScope: scope,
    dockerSocket: raw('dockerSocket') ?? d.dockerSocket ?? '/var/run/docker.sock',
    caddyAdmin: caddyAdmin.replace(/\/$/, ''),
    caddyServer,
    caddyListen: ((): string[] => {
      const r = raw('caddyListen');
      const list = r === undefined ? (d.caddyListen ?? [':80']) : r.split(',').map((x) => x.trim()).filter((x) => x.length > 0);
      for (const a of list) if (!/^[A-Za-z0-9.:[\]-]*:[0-9]{1,5}$/.test(a)) fail('caddy_listen', `not a listen address: ${JSON.stringify(a)}`);
      return list;
    })(),
    caddyGraceMs: d.caddyGraceMs ?? 30_000,
    serverId,
    callbackSecret: raw('callbackSecret') ?? d.callbackSecret,
    surgePorts: ((): { from: number; to: number } => {
      const r = raw('surgePorts');
      return r ? parseRange(r) : (d.surgePorts ?? { from: 20000, to: 29999 });
    })(),
    resyncMs: secs('resyncSeconds', (d.resyncMs ?? 10_000) / 1000, 1, 86_400) * 1000,
    concurrency: secs('concurrency', d.concurrency ?? 8, 1, 256),
    keepReleases: secs('keepReleases', d.keepReleases ?? 5, 1, 100),
    volumesRoot: ((): string | undefined => {
      const r = raw('volumesRoot');
      return r ? path.resolve(r) : d.volumesRoot;
    })(),
    stopTimeoutSec: secs('stopTimeoutSec', d.stopTimeoutSec ?? 30, 1, 3600),
    deadlines: {
      probeIntervalMs: d.deadlines?.probeIntervalMs ?? 1000,
      probeTimeoutMs: d.deadlines?.probeTimeoutMs ?? 5000,
      healthyMs: secs('healthyTimeout', (d.deadlines?.healthyMs ?? 60_000) / 1000, 1, 3600) * 1000,
      drainMs: secs('drainTimeout', (d.deadlines?.drainMs ?? 30_000) / 1000, 0, 3600) * 1000,
      deploymentMs: d.deadlines?.deploymentMs ?? 15 * 60_000,
      fetchMs: d.deadlines?.fetchMs ?? 5 * 60_000,
    },
    allowPrivateNetworks: (raw('allowPrivate') ?? (d.allowPrivateNetworks ?? []).join(','))
      .split(',')
      .map((s) => s.trim())
      .filter((s) => s.length > 0),
  };
}
