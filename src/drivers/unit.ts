/**
 * systemd unit rendering for one app instance: pure functions, no I/O.
 *
 * Escaping rules (checked against systemd 252, see test/drivers/systemd-real.test.ts):
 * - App environment variables live only in the `EnvironmentFile=` (written 0600 by the driver), one
 *   `KEY="value"` line each, with `\`, `"`, `$` and backtick backslash-escaped. Every other byte
 *   (newlines, `\r`, tabs, `%`, `#`, `;`, quotes, unicode, other control characters) reaches the process
 *   unchanged. NUL and unpaired UTF-16 surrogates cannot be represented and are refused.
 * - `ExecStart=` arguments are double-quoted with `\` and `"` backslash-escaped, `%` → `%%` (specifiers)
 *   and `$` → `$$` (variable expansion). The only exception is an explicit environment reference
 *   (`{ env: 'PORT' }` in an ExecArg), rendered as `${PORT}` for systemd to expand from the unit's
 *   environment as exactly one argument; Procfile parsing produces those for `$PORT`/`${PORT}`.
 * - Every other field is built from pattern-restricted ids or checked paths; a control character (or
 *   any character outside the allowed set) anywhere else is refused with `E_INVALID_UNIT_FIELD`.
 *
 * The `Description=` carries the whole identity (`crate team=… env=… app=… instance=… [slot=…]
 * version=… gen=… port=… [deployment=…] [spec=…]`), so one `systemctl list-units` call tells the observer what
 * runs where; `X-Crate-*` lines repeat it for people reading the file.
 */
import path from 'node:path';
import type { SystemdScope } from '../config.ts';
import { CrateError } from '../core/errors.ts';
import { ENV_KEY_PATTERN, ID_PATTERN, SPEC_PATTERN, VERSION_PATTERN, unitName, type AppKey } from '../core/identity.ts';
import { envFilePath } from './layout.ts';

/** Deployment ids as they appear in units: the platform's integers or the operator's own string ids. */
export const DEPLOYMENT_ID_PATTERN = /^[A-Za-z0-9][A-Za-z0-9_.:+-]{0,127}$/;

/** Paths that may appear in a unit file: absolute, normalized, from a conservative character set. */
const UNIT_PATH_PATTERN = /^\/[A-Za-z0-9_.+@:/-]*$/;
/** Bare executable names that systemd looks up in its own search path. */
const BARE_EXECUTABLE_PATTERN = /^[A-Za-z0-9_][A-Za-z0-9_.+-]*$/;
// eslint-disable-next-line no-control-regex
const CONTROL_CHARS = /[\u0000-\u001f\u007f]/;
const LONE_SURROGATE = /[\uD800-\uDBFF](?![\uDC00-\uDFFF])|(?<![\uD800-\uDBFF])[\uDC00-\uDFFF]/;

/** False when `s` holds an unpaired UTF-16 surrogate, which has no UTF-8 encoding. */
export function isWellFormedText(s: string): boolean {
  return !LONE_SURROGATE.test(s);
}

/** Linux refuses (E2BIG) any single `KEY=value` string of 128 KiB or more at exec time. */
export const MAX_ENV_ENTRY_BYTES = 128 * 1024 - 1;
/** Cap of a whole environment file, well below the kernel's limit on argv + environment. */
export const MAX_ENV_FILE_BYTES = 1024 * 1024;

/**
 * One `ExecStart=` argument: a literal string (always escaped), or a template whose `{ env }` parts
 * systemd replaces by the value of that variable of the unit's environment (one argument, spaces kept).
 */
export type ExecArg = string | { readonly parts: readonly (string | { readonly env: string })[] };

/** Everything the unit of one run (instance × revision) is rendered from. */
export interface UnitSpec {
  readonly key: AppKey;
  readonly instance: string;
  readonly slot?: string | undefined;
  readonly version: string;
  /** Restart generation: bumping it changes the unit, which is how a restart is requested declaratively. */
  readonly generation: number;
  readonly deployment?: string | undefined;
  /** The revision this run belongs to (the reconciler's spec hash): part of the unit name and Description. */
  readonly spec?: string | undefined;
  /** The instance's port: `PORT` in its environment, `port=` in its Description. */
  readonly port: number;
  /** The release folder. */
  readonly workingDirectory: string;
  /** argv[0] is an absolute normalized path or a bare name systemd looks up; it is never a template. */
  readonly argv: readonly ExecArg[];
  /** Absolute path of the instance's environment file. */
  readonly envFile: string;
  /** The app's env_vars (PORT and HOST are added by instanceEnv and win over these). */
  readonly env: Readonly<Record<string, string>>;
  /** Seconds between SIGTERM and SIGKILL on stop. */
  readonly stopTimeoutSec: number;
  /** Decides the target the unit is enabled for (`default.target` for user, `multi-user.target` for system). */
  readonly scope: SystemdScope;
}

/** What `Description=` tells about an instance (parseUnitDescription's result). */
export interface UnitIdentity {
  readonly key: AppKey;
  readonly instance: string;
  readonly slot: string | undefined;
  readonly version: string;
  readonly generation: number;
  readonly port: number;
  readonly deployment: string | undefined;
  readonly spec: string | undefined;
}

function invalid(field: string, message: string): never {
  throw new CrateError('E_INVALID_UNIT_FIELD', `${field}: ${message}`, { details: { field } });
}

function checkPattern(field: string, value: string, re: RegExp): string {
  if (!re.test(value)) invalid(field, `${JSON.stringify(value)} does not match ${re.source}`);
  return value;
}

function checkInt(field: string, n: number, min: number, max: number): number {
  if (!Number.isSafeInteger(n) || n < min || n > max) invalid(field, `must be an integer in ${min}..${max}, got ${n}`);
  return n;
}

/** Absolute, normalized, no `%`, whitespace or control characters: safe verbatim in any path setting. */
export function checkUnitPath(field: string, p: string): string {
  checkPattern(field, p, UNIT_PATH_PATTERN);
  if (p !== '/' && (path.posix.normalize(p) !== p || p.endsWith('/'))) invalid(field, `path is not normalized: ${p}`);
  return p;
}

function checkKey(key: AppKey): void {
  checkPattern('team', key.team, ID_PATTERN);
  checkInt('env', key.env, 1, 9_999_999_999);
  checkInt('app', key.app, 1, 9_999_999_999);
}

/** An argument string may hold anything but control characters and unpaired surrogates. */
function checkArgText(field: string, s: string): void {
  if (CONTROL_CHARS.test(s)) invalid(field, 'control characters are not allowed');
  if (!isWellFormedText(s)) invalid(field, 'unpaired UTF-16 surrogate');
}

function quoteLiteral(s: string): string {
  return s.replace(/[\\"]/g, (c) => `\\${c}`).replace(/%/g, '%%').replace(/\$/g, '$$$$');
}

/** One ExecStart argument, double-quoted and escaped. Exported for tests and `plan` output. */
export function renderExecArg(arg: ExecArg, field = 'argv'): string {
  if (typeof arg === 'string') {
    checkArgText(field, arg);
    return `"${quoteLiteral(arg)}"`;
  }
  let out = '';
  for (const part of arg.parts) {
    if (typeof part === 'string') {
      checkArgText(field, part);
      out += quoteLiteral(part);
    } else {
      checkPattern(`${field} variable`, part.env, ENV_KEY_PATTERN);
      out += `\${${part.env}}`;
    }
  }
  return `"${out}"`;
}

function renderExecStart(argv: readonly ExecArg[]): string {
  const [exe, ...rest] = argv;
  if (exe === undefined) invalid('argv', 'empty command');
  if (typeof exe !== 'string') invalid('argv[0]', 'the executable cannot contain variable references');
  if (exe.startsWith('/')) checkUnitPathLoose('argv[0]', exe);
  else checkPattern('argv[0]', exe, BARE_EXECUTABLE_PATTERN);
  return [renderExecArg(exe, 'argv[0]'), ...rest.map((a, i) => renderExecArg(a, `argv[${i + 1}]`))].join(' ');
}

/** The executable may be any normalized absolute path (it is quoted), but never a control character. */
function checkUnitPathLoose(field: string, p: string): void {
  checkArgText(field, p);
  if (path.posix.normalize(p) !== p || p.endsWith('/')) invalid(field, `path is not normalized: ${p}`);
}

/** Validate the identity part of a spec (also used by the observer-side parser). */
function checkIdentity(s: Pick<UnitSpec, 'key' | 'instance' | 'slot' | 'version' | 'generation' | 'deployment' | 'port' | 'spec'>): void {
  checkKey(s.key);
  checkPattern('instance', s.instance, ID_PATTERN);
  if (s.slot !== undefined) checkPattern('slot', s.slot, ID_PATTERN);
  checkPattern('version', s.version, VERSION_PATTERN);
  checkInt('generation', s.generation, 0, Number.MAX_SAFE_INTEGER);
  if (s.deployment !== undefined) checkPattern('deployment', s.deployment, DEPLOYMENT_ID_PATTERN);
  checkInt('port', s.port, 1, 65535);
  if (s.spec !== undefined) checkPattern('spec', s.spec, SPEC_PATTERN);
}

/** `Description=` of an instance: every value is pattern-restricted, so no escaping is needed. */
export function unitDescription(s: Pick<UnitSpec, 'key' | 'instance' | 'slot' | 'version' | 'generation' | 'deployment' | 'port' | 'spec'>): string {
  checkIdentity(s);
  return [
    'crate',
    `team=${s.key.team}`,
    `env=${s.key.env}`,
    `app=${s.key.app}`,
    `instance=${s.instance}`,
    ...(s.slot !== undefined ? [`slot=${s.slot}`] : []),
    `version=${s.version}`,
    `gen=${s.generation}`,
    `port=${s.port}`,
    ...(s.deployment !== undefined ? [`deployment=${s.deployment}`] : []),
    ...(s.spec !== undefined ? [`spec=${s.spec}`] : []),
  ].join(' ');
}

/**
 * Inverse of unitDescription; undefined for anything that is not exactly such a description (a unit
 * someone else made, or one whose file is gone: systemd then reports the unit name as description).
 */
export function parseUnitDescription(desc: string): UnitIdentity | undefined {
  const words = desc.split(' ');
  if (words.shift() !== 'crate') return undefined;
  const kv = new Map<string, string>();
  for (const w of words) {
    const i = w.indexOf('=');
    if (i <= 0 || kv.has(w.slice(0, i))) return undefined;
    kv.set(w.slice(0, i), w.slice(i + 1));
  }
  const allowed = new Set(['team', 'env', 'app', 'instance', 'slot', 'version', 'gen', 'port', 'deployment', 'spec']);
  for (const k of kv.keys()) if (!allowed.has(k)) return undefined;
  const num = (s: string | undefined): number => (s !== undefined && /^[0-9]{1,16}$/.test(s) ? Number(s) : NaN);
  const id: UnitIdentity = {
    key: { team: kv.get('team') ?? '', env: num(kv.get('env')), app: num(kv.get('app')) },
    instance: kv.get('instance') ?? '',
    slot: kv.get('slot'),
    version: kv.get('version') ?? '',
    generation: num(kv.get('gen')),
    port: num(kv.get('port')),
    deployment: kv.get('deployment'),
    spec: kv.get('spec'),
  };
  try {
    checkIdentity(id);
  } catch {
    // Not one of ours (or tampered with): the caller treats it as unidentified.
    return undefined;
  }
  return id;
}

/** The environment an instance runs with: the app's variables, then PORT and HOST=127.0.0.1 on top. */
export function instanceEnv(spec: Pick<UnitSpec, 'env' | 'port'>): Record<string, string> {
  return { ...spec.env, PORT: String(spec.port), HOST: '127.0.0.1' };
}

/**
 * Render an environment file: a comment line, then `KEY="value"` per variable in key order.
 * Throws `E_INVALID_UNIT_FIELD` for a bad key, a value with NUL or an unpaired surrogate, an entry of
 * 128 KiB or more, or a file over 1 MiB.
 */
export function renderEnvFile(env: Readonly<Record<string, string>>): string {
  const lines = ['# Managed by crate-operator; values are double-quoted with \\ " $ ` escaped.'];
  let bytes = 0;
  for (const k of Object.keys(env).sort()) {
    const v = env[k] as string;
    checkPattern('env key', k, ENV_KEY_PATTERN);
    if (typeof v !== 'string') invalid(`env ${k}`, 'value must be a string');
    if (v.includes('\0')) invalid(`env ${k}`, 'NUL cannot be part of an environment value');
    if (!isWellFormedText(v)) invalid(`env ${k}`, 'unpaired UTF-16 surrogate');
    const entry = Buffer.byteLength(k) + 1 + Buffer.byteLength(v);
    if (entry > MAX_ENV_ENTRY_BYTES) invalid(`env ${k}`, `KEY=value is ${entry} bytes; the limit is ${MAX_ENV_ENTRY_BYTES}`);
    bytes += entry + 1;
    lines.push(`${k}="${v.replace(/[\\"$`]/g, (c) => `\\${c}`)}"`);
  }
  if (bytes > MAX_ENV_FILE_BYTES) invalid('env', `environment is ${bytes} bytes; the limit is ${MAX_ENV_FILE_BYTES}`);
  return `${lines.join('\n')}\n`;
}

/** Start-rate limit: a crash loop stops after this many starts within the interval (unit ends `failed`). */
export const START_LIMIT = { intervalSec: 60, burst: 5 } as const;

/**
 * Render the unit file of one instance. Deterministic (same spec, same bytes), so the driver can
 * compare contents to decide whether anything changed. Throws `E_INVALID_UNIT_FIELD` naming the field.
 */
export function renderUnit(spec: UnitSpec): string {
  const description = unitDescription(spec);
  const wd = checkUnitPath('workingDirectory', spec.workingDirectory);
  const envFile = checkUnitPath('envFile', spec.envFile);
  const stop = checkInt('stopTimeoutSec', spec.stopTimeoutSec, 1, 3600);
  const execStart = renderExecStart(spec.argv);
  if (spec.scope !== 'user' && spec.scope !== 'system') invalid('scope', `must be user or system, got ${String(spec.scope)}`);
  const name = unitName(spec.key, spec.instance, spec.spec);
  const logId = `crate-${spec.key.team}-${spec.key.env}-${spec.key.app}-${spec.instance}`;
  return [
    `# ${name}: managed by crate-operator; changes are overwritten.`,
    '[Unit]',
    `Description=${description}`,
    `StartLimitIntervalSec=${START_LIMIT.intervalSec}`,
    `StartLimitBurst=${START_LIMIT.burst}`,
    `X-Crate-Team=${spec.key.team}`,
    `X-Crate-Env=${spec.key.env}`,
    `X-Crate-App=${spec.key.app}`,
    `X-Crate-Instance=${spec.instance}`,
    ...(spec.slot !== undefined ? [`X-Crate-Slot=${spec.slot}`] : []),
    `X-Crate-Version=${spec.version}`,
    `X-Crate-Generation=${spec.generation}`,
    `X-Crate-Port=${spec.port}`,
    ...(spec.deployment !== undefined ? [`X-Crate-Deployment=${spec.deployment}`] : []),
    ...(spec.spec !== undefined ? [`X-Crate-Spec=${spec.spec}`] : []),
    '',
    '[Service]',
    // exec: `systemctl start` fails when the binary cannot be executed, instead of reporting success.
    'Type=exec',
    `WorkingDirectory=${wd}`,
    `EnvironmentFile=${envFile}`,
    `ExecStart=${execStart}`,
    `SyslogIdentifier=${logId}`,
    'Restart=on-failure',
    'RestartSec=1s',
    'TimeoutStartSec=30s',
    'KillMode=control-group',
    'KillSignal=SIGTERM',
    `TimeoutStopSec=${stop}s`,
    'SendSIGKILL=yes',
    'NoNewPrivileges=yes',
    '',
    '[Install]',
    `WantedBy=${spec.scope === 'user' ? 'default.target' : 'multi-user.target'}`,
    '',
  ].join('\n');
}

/** The operator settings every unit spec needs (from OperatorConfig). */
export interface UnitDefaults {
  appsDir: string;
  scope: SystemdScope;
  stopTimeoutSec: number;
}

/** One instance to run: identity, port, env_vars and the release (assets.ts fetchRelease's result). */
export interface InstanceInput {
  key: AppKey;
  instance: string;
  slot?: string | undefined;
  version: string;
  generation: number;
  deployment?: string | undefined;
  /** The revision (spec hash): two revisions of one instance are two units. */
  spec?: string | undefined;
  port: number;
  env: Readonly<Record<string, string>>;
  release: { readonly dir: string; readonly command: { readonly argv: readonly ExecArg[] } };
}

/** Build the UnitSpec of one instance: WorkingDirectory is the release folder, env file per layout.ts. */
export function instanceUnitSpec(defaults: UnitDefaults, i: InstanceInput): UnitSpec {
  return {
    key: i.key,
    instance: i.instance,
    slot: i.slot,
    version: i.version,
    generation: i.generation,
    deployment: i.deployment,
    spec: i.spec,
    port: i.port,
    workingDirectory: i.release.dir,
    argv: [...i.release.command.argv],
    envFile: envFilePath(defaults.appsDir, i.key, i.instance, i.spec),
    env: i.env,
    stopTimeoutSec: defaults.stopTimeoutSec,
    scope: defaults.scope,
  };
}
