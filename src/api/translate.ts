/**
 * Requests to desired-state documents: pure functions (no I/O, the clock passed in) from a validated
 * request body and the document in force to the next document. They also check the rules JSON
 * Schema cannot state, naming request fields, and throw a 400 (E_VALIDATION) when one is broken.
 *
 * Choices:
 * - A deploy replaces the app's spec and instance set: instances not in the request are dropped
 *   (the reconciler removes them); instances in it are desired `running` (a deploy runs what it
 *   deploys, even an instance stopped before) and keep their restart generation.
 * - start/stop flip one instance's `state`; restart bumps its `generation` and makes it `running`.
 *   All three need the app's document and the instance in it (400 otherwise).
 * - delete drops the listed instances (ids unknown to the document are fine: the reconciler removes
 *   whatever it finds on the host); when none remain the document goes (null).
 * - Every change stamps `deployment` with the id, callback URL and time of the request.
 */
import path from 'node:path';
import { produce } from 'immer';
import type { AppKey } from '../core/identity.ts';
import { plainBinaryVersion, type DesiredApp, type DesiredInstance } from '../desired/document.ts';
import { API_VERSION, DOC_KIND, INT32_MAX } from '../desired/schema.ts';
import { validationError, type FieldIssue } from './errors.ts';
import type { BinaryDeployBody, DeleteBody, DockerDeployBody, InstanceActionBody, InstanceBinaryDeployBody, InstanceDockerDeployBody } from './schemas.ts';

/** What every change needs besides the request: the deployment id it runs under and the time. */
export interface ChangeContext {
  deploymentId: string;
  now: Date;
}

type Identity = { team_id: string; environment_id: number; app_id: number };

export function keyOf(b: Identity): AppKey {
  return { team: b.team_id, env: b.environment_id, app: b.app_id };
}

function throwIfAny(issues: FieldIssue[]): void {
  if (issues.length > 0) throw validationError(issues);
}

/** Ports must be unique within the app; blue_green needs exactly two slots; instance ids unique. */
export function checkSlots(strategy: string, slots: Record<string, { instance_id: string; port: number }>): FieldIssue[] {
  const out: FieldIssue[] = [];
  const names = Object.keys(slots);
  if (strategy === 'blue_green' && names.length !== 2) out.push({ field: 'slots', reason: `blue_green needs exactly 2 slots, got ${names.length}` });
  const ports = new Map<number, string>();
  const ids = new Map<string, string>();
  for (const name of names) {
    const s = slots[name] as { instance_id: string; port: number };
    const p = ports.get(s.port);
    if (p !== undefined) out.push({ field: `slots.${name}.port`, reason: `port ${s.port} is also the port of slot ${p}` });
    else ports.set(s.port, name);
    const i = ids.get(s.instance_id);
    if (i !== undefined) out.push({ field: `slots.${name}.instance_id`, reason: `instance ${s.instance_id} already fills slot ${i}` });
    else ids.set(s.instance_id, name);
  }
  return out;
}

/** Ports must be unique within the app. */
export function checkInstances(instances: Record<string, { port: number }>): FieldIssue[] {
  const out: FieldIssue[] = [];
  const ports = new Map<number, string>();
  for (const [id, inst] of Object.entries(instances)) {
    const p = ports.get(inst.port);
    if (p !== undefined) out.push({ field: `instances.${id}.port`, reason: `port ${inst.port} is also the port of instance ${p}` });
    else ports.set(inst.port, id);
  }
  return out;
}

/**
 * Volumes: named volumes always; host paths only below the configured volumes root (normalised, no
 * `.`/`..` segments); container paths normalised and absolute.
 */
export function checkVolumes(volumes: readonly string[] | undefined, volumesRoot: string | undefined): FieldIssue[] {
  const out: FieldIssue[] = [];
  (volumes ?? []).forEach((v, i) => {
    const field = `volumes.${i}`;
    const parts = v.split(':');
    const [src, dst] = parts as [string, string];
    if (path.posix.normalize(dst) !== dst || dst.includes('/./') || dst.split('/').includes('..')) {
      out.push({ field, reason: 'container path must be absolute and normalised (no . or .. segments)' });
    }
    if (src.startsWith('/')) {
      if (volumesRoot === undefined) out.push({ field, reason: 'host paths are not allowed on this host (no volumes root configured); use a named volume' });
      else if (path.posix.normalize(src) !== src || src.split('/').includes('..') || !(src === volumesRoot || src.startsWith(`${volumesRoot.replace(/\/$/, '')}/`))) {
        out.push({ field, reason: `host path must be a normalised path below ${volumesRoot}` });
      }
    }
  });
  return out;
}

function instancesFromSlots(slots: Record<string, { instance_id: string; port: number }>, old: DesiredApp | undefined): Record<string, DesiredInstance> {
  const out: Record<string, DesiredInstance> = {};
  for (const [slot, s] of Object.entries(slots)) {
    out[s.instance_id] = { port: s.port, slot, state: 'running', generation: old?.spec.instances[s.instance_id]?.generation ?? 0 };
  }
  return out;
}

function instancesFromMap(instances: Record<string, { port: number }>, old: DesiredApp | undefined): Record<string, DesiredInstance> {
  const out: Record<string, DesiredInstance> = {};
  for (const [id, i] of Object.entries(instances)) {
    out[id] = { port: i.port, state: 'running', generation: old?.spec.instances[id]?.generation ?? 0 };
  }
  return out;
}

function header(b: Identity & { callback_url: string }, ctx: ChangeContext): Pick<DesiredApp, 'apiVersion' | 'kind' | 'metadata' | 'deployment'> {
  return {
    apiVersion: API_VERSION,
    kind: DOC_KIND,
    metadata: { team: b.team_id, environment: b.environment_id, app: b.app_id },
    deployment: { id: ctx.deploymentId, callback_url: b.callback_url, requested_at: ctx.now.toISOString() },
  };
}

type DockerFields = Pick<DockerDeployBody, 'image' | 'image_tag' | 'docker_command' | 'registry_credentials' | 'volumes'>;

function dockerSpec(b: DockerFields): NonNullable<DesiredApp['spec']['docker']> {
  return {
    image: b.image,
    tag: b.image_tag,
    ...(b.docker_command !== undefined ? { command: [...b.docker_command] } : {}),
    ...(b.registry_credentials !== undefined ? { credentials: { ...b.registry_credentials } } : {}),
    ...(b.volumes !== undefined ? { volumes: [...b.volumes] } : {}),
  };
}

/** POST /v1/app/instance/binary/deploy. */
export function instanceBinaryDoc(b: InstanceBinaryDeployBody, old: DesiredApp | undefined, ctx: ChangeContext): DesiredApp {
  throwIfAny(checkSlots(b.deployment_strategy, b.slots));
  return {
    ...header(b, ctx),
    spec: {
      runtime: 'binary',
      model: 'instance',
      domain: b.domain,
      strategy: b.deployment_strategy,
      version: b.target_version,
      binary: { asset_url: b.asset_url },
      env: { ...b.env_vars },
      health_check_path: b.health_check_path ?? null,
      instances: instancesFromSlots(b.slots, old),
    },
  };
}

/** POST /v1/app/instance/docker/deploy. */
export function instanceDockerDoc(b: InstanceDockerDeployBody, old: DesiredApp | undefined, ctx: ChangeContext, volumesRoot: string | undefined): DesiredApp {
  throwIfAny([...checkSlots(b.deployment_strategy, b.slots), ...checkVolumes(b.volumes, volumesRoot)]);
  return {
    ...header(b, ctx),
    spec: {
      runtime: 'docker',
      model: 'instance',
      domain: b.domain,
      strategy: b.deployment_strategy,
      version: b.target_version,
      docker: dockerSpec(b),
      env: { ...b.env_vars },
      health_check_path: b.health_check_path ?? null,
      instances: instancesFromSlots(b.slots, old),
    },
  };
}

/** POST /v1/app/binary/deploy. The version is derived from the asset URL (plainBinaryVersion). */
export function plainBinaryDoc(b: BinaryDeployBody, old: DesiredApp | undefined, ctx: ChangeContext): DesiredApp {
  throwIfAny(checkInstances(b.instances));
  return {
    ...header(b, ctx),
    spec: {
      runtime: 'binary',
      model: 'plain',
      domain: b.domain,
      strategy: b.deployment_strategy,
      version: plainBinaryVersion(b.asset_url),
      binary: { asset_url: b.asset_url },
      env: { ...b.env_vars },
      health_check_path: b.health_check_path ?? null,
      instances: instancesFromMap(b.instances, old),
    },
  };
}

/** POST /v1/app/docker/deploy. The version is the image tag. */
export function plainDockerDoc(b: DockerDeployBody, old: DesiredApp | undefined, ctx: ChangeContext, volumesRoot: string | undefined): DesiredApp {
  throwIfAny([...checkInstances(b.instances), ...checkVolumes(b.volumes, volumesRoot)]);
  return {
    ...header(b, ctx),
    spec: {
      runtime: 'docker',
      model: 'plain',
      domain: b.domain,
      strategy: b.deployment_strategy,
      version: b.image_tag,
      docker: dockerSpec(b),
      env: { ...(b.env_vars ?? {}) },
      health_check_path: b.health_check_path ?? null,
      instances: instancesFromMap(b.instances, old),
    },
  };
}

export type InstanceAction = 'start' | 'stop' | 'restart';

/** POST /v1/app/start|stop|restart. */
export function instanceActionDoc(action: InstanceAction, b: InstanceActionBody, old: DesiredApp | undefined, ctx: ChangeContext): DesiredApp {
  if (!old) throw validationError([{ field: 'instance_id', reason: 'no such instance: this host has no document for the app' }]);
  if (!Object.hasOwn(old.spec.instances, b.instance_id)) throw validationError([{ field: 'instance_id', reason: 'no such instance of this app' }]);
  return produce(old, (d) => {
    const inst = d.spec.instances[b.instance_id] as DesiredInstance;
    if (action === 'stop') inst.state = 'stopped';
    else inst.state = 'running';
    if (action === 'restart') inst.generation = Math.min(inst.generation + 1, INT32_MAX);
    d.deployment = { id: ctx.deploymentId, callback_url: b.callback_url, requested_at: ctx.now.toISOString() };
  });
}

/** POST /v1/app/delete: the next document, or null when no instance remains. */
export function deleteDoc(b: DeleteBody, old: DesiredApp | undefined, ctx: ChangeContext): DesiredApp | null {
  if (!old) return null;
  const drop = new Set(b.instance_ids);
  const remaining = Object.keys(old.spec.instances).filter((id) => !drop.has(id));
  if (remaining.length === 0) return null;
  const next = produce(old, (d) => {
    for (const id of drop) delete d.spec.instances[id];
    d.deployment = { id: ctx.deploymentId, callback_url: b.callback_url, requested_at: ctx.now.toISOString() };
  });
  // Removing one slot of a blue_green pair leaves a document no deploy could produce: refuse.
  if (next.spec.model === 'instance' && next.spec.strategy === 'blue_green' && remaining.length !== 2) {
    throw validationError([{ field: 'instance_ids', reason: 'a blue_green app keeps both slots: delete both (or all) of its instances' }]);
  }
  return next;
}

/** The request field that carries an instance's port. */
function portField(id: string, inst: DesiredInstance): string {
  return inst.slot !== undefined ? `slots.${inst.slot}.port` : `instances.${id}.port`;
}

/**
 * Host-wide rules against every other app's document: no two apps share a domain (requests for one
 * would reach the other) or a port (all listen on 127.0.0.1).
 */
export function checkAgainstOtherApps(doc: DesiredApp, others: Iterable<DesiredApp>): FieldIssue[] {
  const out: FieldIssue[] = [];
  const me = `${doc.metadata.team}/${doc.metadata.environment}/${doc.metadata.app}`;
  const ports = new Map<number, string>();
  for (const o of others) {
    const k = `${o.metadata.team}/${o.metadata.environment}/${o.metadata.app}`;
    if (k === me) continue;
    if (o.spec.domain === doc.spec.domain) out.push({ field: 'domain', reason: `is already the domain of app ${k} on this host` });
    for (const inst of Object.values(o.spec.instances)) ports.set(inst.port, k);
  }
  for (const [id, inst] of Object.entries(doc.spec.instances)) {
    const k = ports.get(inst.port);
    if (k !== undefined) out.push({ field: portField(id, inst), reason: `port ${inst.port} is used by app ${k} on this host` });
  }
  return out;
}
