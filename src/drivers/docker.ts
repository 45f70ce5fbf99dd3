/**
 * The Docker driver: verbs on images and containers over the Docker Engine API (pinned to 1.41,
 * Docker 20.10) on the daemon's unix socket, with undici.
 *
 * Promises:
 * - Every request has a deadline and counts one host call (`countHostCall('docker')`).
 * - Verbs are idempotent: creating a container that exists with the identical configuration returns
 *   it (`created: false`); starting a running or stopping a stopped container succeeds (HTTP 304);
 *   stopping or removing a container that does not exist succeeds.
 * - Failures are CrateErrors with stable codes: E_DOCKER_UNAVAILABLE (socket missing/refused),
 *   E_DOCKER_TIMEOUT, E_DOCKER (the daemon's message), E_DOCKER_PULL, E_REGISTRY_AUTH,
 *   E_IMAGE_REFUSED, E_IMAGE_NOT_FOUND, E_VOLUME_REFUSED, E_CONTAINER_SPEC, E_CONTAINER_CONFLICT
 *   (same name, different configuration), E_CONTAINER_NOT_FOUND, E_PORT_IN_USE.
 *
 * Pull policy: `pull()` always asks the registry (a tag may have moved; a deploy means "this tag as
 * the registry has it now") unless `{ ifMissing: true }`, which skips the registry when the image is
 * present locally: the reconciler uses that to heal (re-create a lost container) without depending on
 * the registry being up.
 */
import type { Agent } from 'undici';
import { CrateError } from '../core/errors.ts';
import { countHostCall } from '../core/hostcalls.ts';
import {
  CONFIG_HASH_LABEL,
  checkContainerRef,
  createBody,
  identityFromLabels,
  imageRef,
  registryAuthHeader,
  resolveVolumes,
  specName,
} from './docker-spec.ts';
import type { ContainerIdentity, ContainerSpec, RegistryCredentials } from './docker-spec.ts';
import { TransportError, httpCall, parseJsonBody, unixSocketAgent } from './http.ts';
import type { HttpReply } from './http.ts';

export type { ContainerIdentity, ContainerSpec, RegistryCredentials, RestartPolicy } from './docker-spec.ts';

/** Engine API version every path is pinned to. */
export const DOCKER_API = '/v1.41';

/** Docker's container states. */
export type ContainerState = 'created' | 'running' | 'paused' | 'restarting' | 'removing' | 'exited' | 'dead';
/** `none` when the image has no HEALTHCHECK. */
export type ContainerHealth = 'none' | 'starting' | 'healthy' | 'unhealthy';

/** One published port. */
export interface ContainerPort {
  hostIp: string;
  hostPort: number;
  containerPort: number;
  protocol: string;
}

/** A container as `inspect` shows it. Plain data. */
export interface ContainerInfo {
  id: string;
  name: string;
  /** The image reference it was created from (`repo:tag`). */
  image: string;
  imageId: string;
  state: ContainerState;
  exitCode: number;
  /** 0 when not running. */
  pid: number;
  startedAt: string;
  finishedAt: string;
  restartCount: number;
  oomKilled: boolean;
  health: ContainerHealth;
  labels: Record<string, string>;
  identity: ContainerIdentity | undefined;
  ports: ContainerPort[];
  configHash: string | undefined;
  /** Env as `K=V` strings (what the process got). */
  env: string[];
}

/** Outcome of `pull`. */
export interface PullResult {
  /** False when `ifMissing` found the image locally and the registry was not asked. */
  pulled: boolean;
  imageId: string;
}

/** Outcome of `create`. */
export interface CreateResult {
  id: string;
  name: string;
  /** False when an identical container already existed. */
  created: boolean;
}

/** An image as the daemon has it. */
export interface ImageInfo {
  id: string;
  exposedPorts: Record<string, unknown>;
}

/** The Docker driver's verbs (fakes are objects of these function fields). */
export interface DockerDriver {
  /** Pull `image:tag` (tag always explicit), with optional registry credentials. */
  pull(image: string, tag: string, credentials?: RegistryCredentials, opts?: { ifMissing?: boolean; signal?: AbortSignal }): Promise<PullResult>;
  /** Local image info, undefined when absent. */
  imageInfo(image: string, tag: string): Promise<ImageInfo | undefined>;
  /**
   * Create (not start) the container of `spec`; no-op when an identical one exists (same name, same
   * config hash, which covers every field of the spec and the image id). Docker labels are immutable:
   * a changed spec (including `generation`) under the same name is E_CONTAINER_CONFLICT, so give runs
   * of different specs different names, or remove first.
   */
  create(spec: ContainerSpec): Promise<CreateResult>;
  start(nameOrId: string): Promise<void>;
  /** SIGTERM, then SIGKILL after `timeoutSec`. */
  stop(nameOrId: string, timeoutSec: number): Promise<void>;
  /**
   * Force-remove with its anonymous volumes (named volumes and bind mounts stay). A running container
   * is killed (SIGKILL): call `stop` first for a graceful end.
   */
  remove(nameOrId: string): Promise<void>;
  /** Undefined when no such container. */
  inspect(nameOrId: string): Promise<ContainerInfo | undefined>;
}

/** A counted, deadline-bound Engine API caller. Shared with the Docker observer. */
export interface DockerClient {
  /** One request to `/v1.41<path>`; rejects with E_DOCKER_UNAVAILABLE / E_DOCKER_TIMEOUT on transport failures. */
  call(method: 'GET' | 'POST' | 'DELETE', path: string, opts?: { body?: unknown; headers?: Record<string, string>; timeoutMs?: number; signal?: AbortSignal }): Promise<HttpReply>;
  close(): Promise<void>;
}

export interface DockerOptions {
  /** Engine API socket (config.dockerSocket). */
  socketPath: string;
  /** Host-path volumes must live under this root (config.volumesRoot). */
  volumesRoot?: string | undefined;
  /** Deadline of ordinary requests. Default 30 s. */
  timeoutMs?: number;
  /** Deadline of a pull. Default 10 min. */
  pullTimeoutMs?: number;
}

/** A client for the daemon at `socketPath`. */
export function createDockerClient(socketPath: string, opts: { timeoutMs?: number } = {}): DockerClient {
  const agent: Agent = unixSocketAgent(socketPath);
  const target = { origin: 'http://docker', dispatcher: agent, label: `unix:${socketPath}` };
  const timeoutMs = opts.timeoutMs ?? 30_000;
  return {
    async call(method, path, o = {}) {
      countHostCall('docker');
      const headers: Record<string, string> = { ...(o.headers ?? {}) };
      let body: string | undefined;
      if (o.body !== undefined) {
        body = JSON.stringify(o.body);
        headers['content-type'] = 'application/json';
      }
      try {
        return await httpCall(target, { method, path: `${DOCKER_API}${path}`, headers, timeoutMs: o.timeoutMs ?? timeoutMs, ...(body === undefined ? {} : { body }), ...(o.signal ? { signal: o.signal } : {}) });
      } catch (err) {
        if (err instanceof TransportError && err.reason === 'timeout') {
          throw new CrateError('E_DOCKER_TIMEOUT', `Docker ${method} ${path}: no answer within ${o.timeoutMs ?? timeoutMs} ms`, { cause: err });
        }
        if (err instanceof TransportError && err.reason === 'aborted') throw new CrateError('E_ABORTED', `Docker ${method} ${path}: aborted`, { cause: err });
        throw new CrateError('E_DOCKER_UNAVAILABLE', `Docker daemon at ${socketPath} unreachable: ${err instanceof Error ? err.message : String(err)}`, { cause: err });
      }
    },
    close: () => agent.close(),
  };
}

/** The daemon's `{"message": ...}` of an error reply. */
export function daemonMessage(reply: HttpReply): string {
  try {
    const j = JSON.parse(reply.body) as { message?: unknown };
    if (typeof j.message === 'string') return j.message;
  } catch {
    // Not JSON: use the text as it is.
  }
  return reply.body.trim().slice(0, 500) || `HTTP ${reply.status}`;
}

function dockerError(reply: HttpReply, what: string, code = 'E_DOCKER'): CrateError {
  const message = daemonMessage(reply);
  if (/port is already allocated|address already in use/i.test(message)) {
    return new CrateError('E_PORT_IN_USE', `${what}: ${message}`, { details: { status: reply.status } });
  }
  return new CrateError(code, `${what}: ${message}`, { details: { status: reply.status } });
}

const AUTH_RE = /unauthorized|authentication required|no basic auth credentials|incorrect username or password|denied: requested access/i;

/**
 * Decide the outcome of a pull reply: the daemon answers 200 and streams NDJSON progress even when the
 * pull fails; an `error`/`errorDetail` line is the failure. Authentication failures become
 * E_REGISTRY_AUTH, others E_DOCKER_PULL.
 */
export function pullOutcome(reply: HttpReply, ref: string): void {
  let message: string | undefined;
  if (reply.status !== 200) {
    message = daemonMessage(reply);
  } else {
    for (const line of reply.body.split('\n')) {
      const t = line.trim();
      if (t === '') continue;
      let j: { error?: unknown; errorDetail?: { message?: unknown } };
      try {
        j = JSON.parse(t) as typeof j;
      } catch {
        continue;
      }
      if (j.errorDetail !== undefined || j.error !== undefined) {
        message = typeof j.errorDetail?.message === 'string' ? j.errorDetail.message : String(j.error);
        break;
      }
    }
  }
  if (message === undefined) return;
  const code = AUTH_RE.test(message) ? 'E_REGISTRY_AUTH' : 'E_DOCKER_PULL';
  throw new CrateError(code, `pull ${ref}: ${message}`, { details: { image: ref, status: reply.status } });
}

const STATES = new Set<string>(['created', 'running', 'paused', 'restarting', 'removing', 'exited', 'dead']);

/** Docker's state string, or `dead` for anything unknown. */
export function containerState(s: unknown): ContainerState {
  return typeof s === 'string' && STATES.has(s) ? (s as ContainerState) : 'dead';
}

interface InspectJson {
  Id: string;
  Name: string;
  Image: string;
  RestartCount?: number;
  State: { Status: string; ExitCode: number; Pid: number; StartedAt: string; FinishedAt: string; OOMKilled: boolean; Health?: { Status?: string } };
  Config: { Image: string; Labels: Record<string, string> | null; Env: string[] | null };
  NetworkSettings?: { Ports?: Record<string, Array<{ HostIp: string; HostPort: string }> | null> | null };
}

function toInfo(j: InspectJson): ContainerInfo {
  const labels = j.Config.Labels ?? {};
  const ports: ContainerPort[] = [];
  for (const [k, binds] of Object.entries(j.NetworkSettings?.Ports ?? {})) {
    const [p, proto] = k.split('/');
    for (const b of binds ?? []) ports.push({ hostIp: b.HostIp, hostPort: Number(b.HostPort), containerPort: Number(p), protocol: proto ?? 'tcp' });
  }
  const h = j.State.Health?.Status;
  return {
    id: j.Id,
    name: j.Name.replace(/^\//, ''),
    image: j.Config.Image,
    imageId: j.Image,
    state: containerState(j.State.Status),
    exitCode: j.State.ExitCode,
    pid: j.State.Pid,
    startedAt: j.State.StartedAt,
    finishedAt: j.State.FinishedAt,
    restartCount: j.RestartCount ?? 0,
    oomKilled: j.State.OOMKilled,
    health: h === 'starting' || h === 'healthy' || h === 'unhealthy' ? h : 'none',
    labels,
    identity: identityFromLabels(labels),
    ports,
    configHash: labels[CONFIG_HASH_LABEL],
    env: j.Config.Env ?? [],
  };
}

/** The real driver. */
export function createDockerDriver(opts: DockerOptions): DockerDriver & { client: DockerClient; close(): Promise<void> } {
  const client = createDockerClient(opts.socketPath, opts.timeoutMs === undefined ? {} : { timeoutMs: opts.timeoutMs });
  const pullTimeoutMs = opts.pullTimeoutMs ?? 10 * 60_000;

  const imageInfo = async (image: string, tag: string): Promise<ImageInfo | undefined> => {
    const ref = imageRef(image, tag);
    const r = await client.call('GET', `/images/${ref}/json`);
    if (r.status === 404) return undefined;
    if (r.status !== 200) throw dockerError(r, `inspect image ${ref}`);
    const j = parseJsonBody(r, 'image inspect') as { Id: string; Config?: { ExposedPorts?: Record<string, unknown> | null } | null };
    return { id: j.Id, exposedPorts: j.Config?.ExposedPorts ?? {} };
  };

  const inspect = async (nameOrId: string): Promise<ContainerInfo | undefined> => {
    checkContainerRef(nameOrId);
    const r = await client.call('GET', `/containers/${nameOrId}/json`);
    if (r.status === 404) return undefined;
    if (r.status !== 200) throw dockerError(r, `inspect container ${nameOrId}`);
    return toInfo(parseJsonBody(r, 'container inspect') as InspectJson);
  };

  return {
    client,
    close: () => client.close(),
    imageInfo,
    inspect,

    async pull(image, tag, credentials, pullOpts = {}) {
      const ref = imageRef(image, tag);
      if (pullOpts.ifMissing) {
        const have = await imageInfo(image, tag);
        if (have) return { pulled: false, imageId: have.id };
      }
      const q = new URLSearchParams({ fromImage: image, tag });
      const headers: Record<string, string> = credentials ? { 'x-registry-auth': registryAuthHeader(image, credentials) } : {};
      const r = await client.call('POST', `/images/create?${q.toString()}`, { headers, timeoutMs: pullTimeoutMs, ...(pullOpts.signal ? { signal: pullOpts.signal } : {}) });
      pullOutcome(r, ref);
      const info = await imageInfo(image, tag);
      if (!info) throw new CrateError('E_DOCKER_PULL', `pull ${ref} reported success but the image is not present`);
      return { pulled: true, imageId: info.id };
    },

    async create(spec) {
      const name = specName(spec);
      checkContainerRef(name);
      const mounts = await resolveVolumes(spec.volumes ?? [], opts.volumesRoot);
      const image = await imageInfo(spec.image, spec.tag);
      if (!image) throw new CrateError('E_IMAGE_NOT_FOUND', `image ${spec.image}:${spec.tag} is not present: pull it first`, { details: { image: `${spec.image}:${spec.tag}` } });
      const body = createBody(spec, image, mounts);
      const hash = (body.Labels as Record<string, string>)[CONFIG_HASH_LABEL];
      const r = await client.call('POST', `/containers/create?name=${encodeURIComponent(name)}`, { body });
      if (r.status === 201) return { id: (parseJsonBody(r, 'container create') as { Id: string }).Id, name, created: true };
      if (r.status === 409) {
        const existing = await inspect(name);
        if (existing && existing.configHash === hash) return { id: existing.id, name, created: false };
        throw new CrateError('E_CONTAINER_CONFLICT', `container ${name} exists with a different configuration`, { details: { name, existing: existing?.configHash, wanted: hash } });
      }
      if (r.status === 404) throw dockerError(r, `create ${name}`, 'E_IMAGE_NOT_FOUND');
      throw dockerError(r, `create ${name}`);
    },

    async start(nameOrId) {
      checkContainerRef(nameOrId);
      const r = await client.call('POST', `/containers/${nameOrId}/start`);
      if (r.status === 204 || r.status === 304) return;
      if (r.status === 404) throw dockerError(r, `start ${nameOrId}`, 'E_CONTAINER_NOT_FOUND');
      throw dockerError(r, `start ${nameOrId}`);
    },

    async stop(nameOrId, timeoutSec) {
      checkContainerRef(nameOrId);
      const t = Math.max(0, Math.floor(timeoutSec));
      // The daemon answers after the container exited: allow the grace period plus the kill.
      const r = await client.call('POST', `/containers/${nameOrId}/stop?t=${t}`, { timeoutMs: (t + 30) * 1000 });
      if (r.status === 204 || r.status === 304 || r.status === 404) return;
      throw dockerError(r, `stop ${nameOrId}`);
    },

    async remove(nameOrId) {
      checkContainerRef(nameOrId);
      const r = await client.call('DELETE', `/containers/${nameOrId}?force=true&v=true`);
      if (r.status === 204 || r.status === 404) return;
      if (r.status === 409 && /already in progress/i.test(daemonMessage(r))) {
        // Someone else is removing it: wait (bounded) until it is gone so callers can rely on "removed".
        const until = Date.now() + 15_000;
        while (Date.now() < until) {
          if (!(await inspect(nameOrId))) return;
          await new Promise((res) => setTimeout(res, 100));
        }
        throw new CrateError('E_DOCKER_TIMEOUT', `remove ${nameOrId}: still present 15 s after removal began`);
      }
      throw dockerError(r, `remove ${nameOrId}`);
    },
  };
}
