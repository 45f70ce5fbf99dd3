/**
 * The Docker observer: one plain, JSON-serialisable snapshot of every container the operator owns.
 *
 * Cost per pass is ONE Engine API request whatever the number of apps:
 * `GET /v1.41/containers/json?all=1&filters={"label":["crate.app"]}`. Containers are sorted by name.
 * A daemon that cannot be reached yields `{unavailable: true, code, message}`, never a throw, so a pass
 * can tell "no containers" from "could not look".
 */
import { describeError } from '../core/errors.ts';
import { LABELS } from '../core/identity.ts';
import { CONFIG_HASH_LABEL, identityFromLabels } from '../drivers/docker-spec.ts';
import type { ContainerIdentity } from '../drivers/docker-spec.ts';
import { containerState, createDockerClient, daemonMessage } from '../drivers/docker.ts';
import type { ContainerHealth, ContainerPort, ContainerState, DockerClient } from '../drivers/docker.ts';
import { parseJsonBody } from '../drivers/http.ts';

/** One container carrying the operator's `crate.app` label. */
export interface ObservedContainer {
  id: string;
  name: string;
  /** Undefined when the labels do not name a valid app and instance (reported, never acted on). */
  identity: ContainerIdentity | undefined;
  state: ContainerState;
  /** Docker's human status line (`Up 3 minutes`, `Exited (0) 2 seconds ago`), for display only. */
  status: string;
  /** From the status line's `(healthy)` / `(unhealthy)` / `(health: starting)`; `none` without HEALTHCHECK. */
  health: ContainerHealth;
  /** Exit code of an exited container, from the status line `Exited (N) …`; undefined otherwise. */
  exitCode: number | undefined;
  ports: ContainerPort[];
  /** Image reference as created (`repo:tag`). */
  image: string;
  imageId: string;
  /** Creation time, unix seconds. */
  created: number;
  configHash: string | undefined;
}

export interface DockerSnapshot {
  unavailable: false;
  containers: ObservedContainer[];
}

export interface DockerUnavailable {
  unavailable: true;
  code: string;
  message: string;
}

export type DockerObservation = DockerSnapshot | DockerUnavailable;

interface ListJson {
  Id: string;
  Names?: string[] | null;
  Image: string;
  ImageID: string;
  Created: number;
  State: string;
  Status: string;
  Ports?: Array<{ IP?: string; PrivatePort: number; PublicPort?: number; Type: string }> | null;
  Labels?: Record<string, string> | null;
}

/** Health as the list endpoint reports it (inside the status line). */
export function healthFromStatus(status: string): ContainerHealth {
  if (/\(healthy\)/.test(status)) return 'healthy';
  if (/\(unhealthy\)/.test(status)) return 'unhealthy';
  if (/\(health: starting\)/.test(status)) return 'starting';
  return 'none';
}

/** The exit code in a status line `Exited (N) 3 seconds ago`. */
export function exitCodeFromStatus(status: string): number | undefined {
  const m = /^Exited \((-?[0-9]{1,5})\)/.exec(status);
  return m ? Number(m[1]) : undefined;
}

/** Turn the list reply into observed containers (pure). */
export function parseContainerList(list: readonly ListJson[]): ObservedContainer[] {
  return list
    .map((c): ObservedContainer => {
      const labels = c.Labels ?? {};
      return {
        id: c.Id,
        name: (c.Names?.[0] ?? '').replace(/^\//, ''),
        identity: identityFromLabels(labels),
        state: containerState(c.State),
        status: c.Status,
        health: healthFromStatus(c.Status),
        exitCode: exitCodeFromStatus(c.Status),
        ports: (c.Ports ?? [])
          .filter((p) => p.PublicPort !== undefined)
          .map((p) => ({ hostIp: p.IP ?? '', hostPort: p.PublicPort as number, containerPort: p.PrivatePort, protocol: p.Type })),
        image: c.Image,
        imageId: c.ImageID,
        created: c.Created,
        configHash: labels[CONFIG_HASH_LABEL],
      };
    })
    .sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
}

/** Observe through `client` (one request). */
export async function observeDocker(client: DockerClient, opts: { timeoutMs?: number } = {}): Promise<DockerObservation> {
  const filters = encodeURIComponent(JSON.stringify({ label: [LABELS.app] }));
  try {
    const r = await client.call('GET', `/containers/json?all=1&filters=${filters}`, opts.timeoutMs === undefined ? {} : { timeoutMs: opts.timeoutMs });
    if (r.status !== 200) return { unavailable: true, code: 'E_DOCKER', message: daemonMessage(r) };
    const list = parseJsonBody(r, 'container list');
    if (!Array.isArray(list)) return { unavailable: true, code: 'E_BAD_REPLY', message: 'container list is not an array' };
    return { unavailable: false, containers: parseContainerList(list as ListJson[]) };
  } catch (err) {
    return { unavailable: true, ...describeError(err) };
  }
}

/** An observer bound to a socket (config.dockerSocket). */
export function createDockerObserver(socketPath: string, opts: { timeoutMs?: number } = {}): { observe(): Promise<DockerObservation>; close(): Promise<void> } {
  const client = createDockerClient(socketPath, opts);
  return { observe: () => observeDocker(client, opts), close: () => client.close() };
}
