/**
 * What the Docker driver sends, decided without talking to Docker: image reference checks, volume
 * checks, the container-create body, labels and their parsing back into an identity.
 *
 * Nothing from a request reaches Docker unchecked: image names follow Docker's reference grammar
 * (no leading `-`, no whitespace or control characters), tags Docker's tag grammar, volumes are
 * named volumes or host paths under the configured root, env keys ENV_KEY_PATTERN and no NUL bytes
 * anywhere. Everything is sent as JSON fields and argv arrays, never through a shell.
 */
import { createHash } from 'node:crypto';
import { mkdir, realpath } from 'node:fs/promises';
import path from 'node:path';
import { CrateError } from '../core/errors.ts';
import { ENV_KEY_PATTERN, ID_PATTERN, LABELS, containerName, parseAppKey } from '../core/identity.ts';
import type { AppKey } from '../core/identity.ts';

/** Label holding the caller's spec id (the reconciler's revision hash), so observers can report it. */
export const SPEC_LABEL = 'crate.spec';
/** Label holding a hash of the full create request + image id: an identical create is a no-op. */
export const CONFIG_HASH_LABEL = 'crate.config-hash';

/** Registry credentials (API.md `DockerRegistryCredentials`). */
export interface RegistryCredentials {
  username: string;
  password: string;
  /** Registry host; defaults to the registry host of the image. */
  server?: string | undefined;
}

export type RestartPolicy = 'unless-stopped' | 'on-failure';

/** Everything one container of one instance is made from. Plain data. */
export interface ContainerSpec {
  key: AppKey;
  instance: string;
  slot?: string | undefined;
  version: string;
  deployment: string;
  generation: number;
  /** The reconciler's spec id of this revision (label `crate.spec`). */
  spec?: string | undefined;
  /** Container name; default containerName(key, instance). Runs of two specs of one instance need distinct names. */
  name?: string | undefined;
  /** Repository without tag, e.g. `registry.example.com:5000/team/app`. */
  image: string;
  tag: string;
  /** Host port: published on 127.0.0.1 only. */
  port: number;
  /** App variables (PORT and HOST are set by the driver on top). */
  env: Readonly<Record<string, string>>;
  /** `docker_command`: replaces the image's CMD (argv, no shell). */
  command?: readonly string[] | undefined;
  /** `name:/path[:ro|rw]` (named volume) or `/host/path:/path[:ro|rw]` (under the volumes root). */
  volumes?: readonly string[] | undefined;
  restart: RestartPolicy;
  /** Seconds between SIGTERM and SIGKILL on stop. */
  stopTimeoutSec: number;
  /** Maximum restarts for `on-failure` (default 5). */
  maxRetries?: number | undefined;
}

// Docker's reference grammar (distribution/reference), without tag or digest.
const DOMAIN_COMPONENT = '(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])';
const DOMAIN = `${DOMAIN_COMPONENT}(?:\\.${DOMAIN_COMPONENT})*(?::[0-9]{1,5})?`;
const PATH_COMPONENT = '[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*';
const PATH_COMPONENT_RE = new RegExp(`^${PATH_COMPONENT}$`);
const IMAGE_RE = new RegExp(`^(?:(${DOMAIN})/)?(${PATH_COMPONENT}(?:/${PATH_COMPONENT})*)$`);
const TAG_RE = /^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$/;
const NAME_RE = /^[a-zA-Z0-9][a-zA-Z0-9_.-]{0,254}$/;
const VOLUME_NAME_RE = /^[a-zA-Z0-9][a-zA-Z0-9_.-]{1,254}$/;
// eslint-disable-next-line no-control-regex
const CONTROL_RE = /[\u0000-\u001f\u007f]/;

/** Throw E_IMAGE_REFUSED unless `image` (no tag) and `tag` are valid Docker references. */
export function checkImageRef(image: string, tag: string): void {
  if (image.startsWith('-') || /\s/.test(image) || CONTROL_RE.test(image) || image.length > 255) {
    throw new CrateError('E_IMAGE_REFUSED', `image name refused: ${JSON.stringify(image)}`, { details: { image } });
  }
  const m = IMAGE_RE.exec(image);
  // A first component is a registry only when it looks like a host (Docker's rule); otherwise it is a
  // path component and must be lower-case like the others.
  const first = m?.[1];
  if (!m || (first !== undefined && !/[.:]/.test(first) && first !== 'localhost' && !PATH_COMPONENT_RE.test(first))) {
    throw new CrateError('E_IMAGE_REFUSED', `not a Docker image name (repository without tag): ${JSON.stringify(image)}`, { details: { image } });
  }
  if (!TAG_RE.test(tag)) throw new CrateError('E_IMAGE_REFUSED', `not a Docker tag: ${JSON.stringify(tag)}`, { details: { tag } });
}

/** `image:tag`, checked. */
export function imageRef(image: string, tag: string): string {
  checkImageRef(image, tag);
  return `${image}:${tag}`;
}

/** The registry host of an image name (`docker.io` when the name has no registry part). */
export function registryHost(image: string): string {
  const slash = image.indexOf('/');
  if (slash < 0) return 'docker.io';
  const first = image.slice(0, slash);
  return /[.:]/.test(first) || first === 'localhost' ? first : 'docker.io';
}

/**
 * The `X-Registry-Auth` header value: base64url JSON {username, password, serveraddress}. Padding is
 * kept: dockerd decodes with padded URL encoding and silently treats an undecodable header as "no
 * credentials".
 */
export function registryAuthHeader(image: string, creds: RegistryCredentials): string {
  const json = JSON.stringify({ username: creds.username, password: creds.password, serveraddress: creds.server ?? registryHost(image) });
  return Buffer.from(json, 'utf8').toString('base64').replace(/\+/g, '-').replace(/\//g, '_');
}

/** Throw E_DOCKER_REF unless `ref` is a plausible container name or id (it goes into URL paths). */
export function checkContainerRef(ref: string): void {
  if (!NAME_RE.test(ref)) throw new CrateError('E_DOCKER_REF', `not a container name or id: ${JSON.stringify(ref)}`);
}

/** One parsed volume entry. */
export type VolumeMount =
  | { type: 'volume'; source: string; target: string; readOnly: boolean }
  | { type: 'bind'; source: string; target: string; readOnly: boolean };

function refuse(entry: string, why: string): never {
  throw new CrateError('E_VOLUME_REFUSED', `volume ${JSON.stringify(entry)} refused: ${why}`, { details: { volume: entry } });
}

/**
 * Parse `source:target[:ro|rw]` without touching the disk. Named volumes follow Docker's volume-name
 * grammar; host paths must be absolute and free of `..`; the target must be an absolute, normalised
 * path other than `/`. Throws E_VOLUME_REFUSED.
 */
export function parseVolume(entry: string): VolumeMount {
  if (CONTROL_RE.test(entry)) refuse(entry, 'control characters');
  const parts = entry.split(':');
  if (parts.length < 2 || parts.length > 3) refuse(entry, 'expected source:target[:ro|rw]');
  const [source, target, mode] = parts as [string, string, string | undefined];
  if (mode !== undefined && mode !== 'ro' && mode !== 'rw') refuse(entry, 'mode must be ro or rw');
  if (!target.startsWith('/') || target === '/' || path.posix.normalize(target) !== target || target.endsWith('/') || target.split('/').includes('..')) {
    refuse(entry, 'target must be a normalised absolute path other than /');
  }
  const readOnly = mode === 'ro';
  if (source.startsWith('/')) {
    if (source.split('/').includes('..') || path.posix.normalize(source) !== source) refuse(entry, 'host path must be normalised, without ..');
    return { type: 'bind', source, target, readOnly };
  }
  if (!VOLUME_NAME_RE.test(source)) refuse(entry, 'not a volume name or absolute host path');
  return { type: 'volume', source, target, readOnly };
}

function within(root: string, p: string): boolean {
  const rel = path.relative(root, p);
  return rel !== '' && !rel.startsWith('..') && !path.isAbsolute(rel);
}

/** The deepest existing ancestor of `p` (p itself when it exists), resolved through symlinks. */
async function realExistingPrefix(p: string): Promise<{ real: string; rest: string }> {
  let cur = p;
  const rest: string[] = [];
  for (;;) {
    try {
      return { real: await realpath(cur), rest: path.join(...(rest.length ? rest : ['.'])) };
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
      const parent = path.dirname(cur);
      if (parent === cur) throw err;
      rest.unshift(path.basename(cur));
      cur = parent;
    }
  }
}

/**
 * Check every volume and make host-path sources exist. A host path must lie strictly inside
 * `volumesRoot` after resolving symlinks (no escape through a link); a missing one is created
 * (0750) inside the root. Without a root only named volumes are allowed. Throws E_VOLUME_REFUSED.
 */
export async function resolveVolumes(entries: readonly string[], volumesRoot: string | undefined): Promise<VolumeMount[]> {
  const out: VolumeMount[] = [];
  const targets = new Set<string>();
  for (const entry of entries) {
    const v = parseVolume(entry);
    if (targets.has(v.target)) refuse(entry, `target ${v.target} mounted twice`);
    targets.add(v.target);
    if (v.type === 'volume') {
      out.push(v);
      continue;
    }
    if (!volumesRoot) refuse(entry, 'host paths are not allowed (no volumes root configured)');
    const root = await realpath(volumesRoot).catch((err: unknown) => {
      throw new CrateError('E_VOLUME_REFUSED', `volumes root ${volumesRoot} is not usable`, { cause: err });
    });
    if (!within(path.resolve(volumesRoot), v.source) && !within(root, v.source)) refuse(entry, `host path outside ${volumesRoot}`);
    // Resolve symlinks of what exists; only then create what is missing, inside the resolved root.
    const pre = await realExistingPrefix(v.source);
    if (pre.real !== root && !within(root, pre.real)) refuse(entry, `host path resolves outside ${volumesRoot}`);
    if (pre.rest !== '.') await mkdir(path.join(pre.real, pre.rest), { recursive: true, mode: 0o750 });
    const real = await realpath(v.source);
    if (!within(root, real)) refuse(entry, `host path resolves outside ${volumesRoot}`);
    out.push({ ...v, source: real });
  }
  return out;
}

/**
 * The port the app listens on inside the container: the image's only exposed TCP port when it has
 * exactly one, else the instance port itself (API.md "Docker ports").
 */
export function containerPort(exposedPorts: Readonly<Record<string, unknown>> | null | undefined, instancePort: number): number {
  const tcp = Object.keys(exposedPorts ?? {})
    .map((k) => /^([0-9]{1,5})(?:\/tcp)?$/.exec(k))
    .filter((m): m is RegExpExecArray => m !== null)
    .map((m) => Number(m[1]));
  return tcp.length === 1 ? (tcp[0] as number) : instancePort;
}

/** The labels of a container made from `spec` (identity + version + deployment + generation). */
export function containerLabels(spec: ContainerSpec): Record<string, string> {
  const labels: Record<string, string> = {
    [LABELS.team]: spec.key.team,
    [LABELS.env]: String(spec.key.env),
    [LABELS.app]: String(spec.key.app),
    [LABELS.instance]: spec.instance,
    [LABELS.version]: spec.version,
    [LABELS.deployment]: spec.deployment,
    [LABELS.generation]: String(spec.generation),
    // The host port is also a label: a stopped container lists no published ports.
    [LABELS.port]: String(spec.port),
  };
  if (spec.slot !== undefined) labels[LABELS.slot] = spec.slot;
  if (spec.spec !== undefined) labels[SPEC_LABEL] = spec.spec;
  return labels;
}

/** The identity a container's labels carry. */
export interface ContainerIdentity {
  key: AppKey;
  instance: string;
  slot: string | undefined;
  version: string | undefined;
  deployment: string | undefined;
  generation: number | undefined;
  spec: string | undefined;
  port: number | undefined;
}

/** Parse labels back into an identity; undefined when they do not name a valid app and instance. */
export function identityFromLabels(labels: Readonly<Record<string, string>> | null | undefined): ContainerIdentity | undefined {
  if (!labels) return undefined;
  const key = parseAppKey(`${labels[LABELS.team]}/${labels[LABELS.env]}/${labels[LABELS.app]}`);
  const instance = labels[LABELS.instance];
  if (!key || instance === undefined || !ID_PATTERN.test(instance)) return undefined;
  const gen = labels[LABELS.generation];
  const port = labels[LABELS.port];
  return {
    key,
    instance,
    slot: labels[LABELS.slot],
    version: labels[LABELS.version],
    deployment: labels[LABELS.deployment],
    generation: gen !== undefined && /^[0-9]{1,15}$/.test(gen) ? Number(gen) : undefined,
    spec: labels[SPEC_LABEL],
    port: port !== undefined && /^[0-9]{1,5}$/.test(port) && Number(port) >= 1 && Number(port) <= 65535 ? Number(port) : undefined,
  };
}

function checkSpec(spec: ContainerSpec): void {
  const bad = (field: string, why: string): never => {
    throw new CrateError('E_CONTAINER_SPEC', `${field}: ${why}`, { details: { field } });
  };
  if (!ID_PATTERN.test(spec.instance)) bad('instance', 'not an instance id');
  if (spec.slot !== undefined && !ID_PATTERN.test(spec.slot)) bad('slot', 'not a slot name');
  if (!Number.isInteger(spec.port) || spec.port < 1 || spec.port > 65535) bad('port', 'not a port');
  if (!Number.isInteger(spec.generation) || spec.generation < 0) bad('generation', 'not a non-negative integer');
  if (!Number.isInteger(spec.stopTimeoutSec) || spec.stopTimeoutSec < 0 || spec.stopTimeoutSec > 3600) bad('stopTimeoutSec', 'must be 0..3600');
  for (const [field, v] of [['version', spec.version], ['deployment', spec.deployment], ['spec', spec.spec ?? '']] as const) {
    if (CONTROL_RE.test(v) || v.length > 256) bad(field, 'control characters or too long');
  }
  for (const [k, v] of Object.entries(spec.env)) {
    if (!ENV_KEY_PATTERN.test(k)) bad(`env.${k}`, 'not a variable name');
    if (v.includes('\0')) bad(`env.${k}`, 'NUL byte in value');
  }
  for (const a of spec.command ?? []) if (a.includes('\0')) bad('command', 'NUL byte in argument');
  if (spec.name !== undefined) checkContainerRef(spec.name);
}

/**
 * The body of `POST /containers/create` for `spec`, given the image's exposed ports and the resolved
 * volumes. The app gets PORT (the port it listens on inside the container) and HOST=0.0.0.0: inside
 * its own network namespace the app must listen on all interfaces for the published port to reach it;
 * exposure is limited by publishing on 127.0.0.1 only. Includes the config-hash label.
 */
export function createBody(spec: ContainerSpec, image: { id: string; exposedPorts: Readonly<Record<string, unknown>> | null | undefined }, mounts: readonly VolumeMount[]): Record<string, unknown> {
  checkSpec(spec);
  const ref = imageRef(spec.image, spec.tag);
  const inside = containerPort(image.exposedPorts, spec.port);
  const env = { ...spec.env, PORT: String(inside), HOST: '0.0.0.0' };
  const portKey = `${inside}/tcp`;
  const body: Record<string, unknown> = {
    Image: ref,
    Env: Object.entries(env)
      .sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0))
      .map(([k, v]) => `${k}=${v}`),
    Labels: containerLabels(spec),
    ExposedPorts: { [portKey]: {} },
    StopTimeout: spec.stopTimeoutSec,
    HostConfig: {
      PortBindings: { [portKey]: [{ HostIp: '127.0.0.1', HostPort: String(spec.port) }] },
      RestartPolicy: spec.restart === 'on-failure' ? { Name: 'on-failure', MaximumRetryCount: spec.maxRetries ?? 5 } : { Name: 'unless-stopped', MaximumRetryCount: 0 },
      Mounts: mounts.map((m) => ({ Type: m.type, Source: m.source, Target: m.target, ReadOnly: m.readOnly })),
    },
  };
  if (spec.command !== undefined && spec.command.length > 0) body.Cmd = [...spec.command];
  const hash = createHash('sha256').update(JSON.stringify({ body, imageId: image.id })).digest('hex').slice(0, 16);
  (body.Labels as Record<string, string>)[CONFIG_HASH_LABEL] = hash;
  return body;
}

/** The container name of `spec`. */
export function specName(spec: ContainerSpec): string {
  return spec.name ?? containerName(spec.key, spec.instance);
}
