/**
 * From a desired-state document to the planner's DesiredModel, and the spec hash that names a run.
 *
 * The spec hash covers everything every run of one revision shares and that needs a new process to
 * change: runtime, version, artifact (asset URL or image/tag/command/volumes), env and health path.
 * It does not cover ports (per run), instance states or restart generations (they change runs in
 * place), the domain (a route change), the strategy or registry credentials (they change how, not what).
 */
import { createHash } from 'node:crypto';
import { canonicalJson } from '../core/canonical.ts';
import type { DesiredApp } from '../desired/document.ts';
import { docKey } from '../desired/document.ts';
import type { DesiredModel } from './model.ts';

/** 10 hex characters: short enough for unit and container names, collisions irrelevant per app. */
export function specHash(doc: DesiredApp): string {
  const s = doc.spec;
  const material = {
    runtime: s.runtime,
    version: s.version,
    asset: s.binary?.asset_url,
    image: s.docker ? { image: s.docker.image, tag: s.docker.tag, command: s.docker.command, volumes: s.docker.volumes } : undefined,
    env: s.env,
    health: s.health_check_path,
  };
  return createHash('sha256').update(canonicalJson(material)).digest('hex').slice(0, 10);
}

export function toDesiredModel(doc: DesiredApp): DesiredModel {
  const s = doc.spec;
  return {
    key: docKey(doc),
    runtime: s.runtime,
    model: s.model,
    domain: s.domain,
    strategy: s.strategy,
    version: s.version,
    spec: specHash(doc),
    healthPath: s.health_check_path,
    image: s.docker ? { name: s.docker.image, tag: s.docker.tag } : undefined,
    instances: Object.entries(s.instances)
      .map(([id, i]) => ({ id, port: i.port, slot: i.slot, state: i.state, generation: i.generation }))
      .sort((a, b) => a.id.localeCompare(b.id)),
  };
}
