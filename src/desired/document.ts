/**
 * The desired-state document: one YAML file per app and environment, holding everything the
 * reconciler needs to converge that app and nothing it observed (no status).
 *
 * ```yaml
 * apiVersion: crate-operator/v1
 * kind: App
 * metadata: { team: acme, environment: 2, app: 17 }
 * spec:
 *   runtime: binary            # binary | docker
 *   model: instance            # instance (slots from the platform) | plain (instances map)
 *   domain: shop.example.com
 *   strategy: blue_green       # blue_green | rolling | recreate
 *   version: v1.2.3            # see below
 *   binary: { asset_url: https://assets.example.com/shop-1.2.3.tgz }
 *   # docker: { image, tag, command?, credentials?: {username, password, server?}, volumes? }
 *   env: { KEY: value }
 *   health_check_path: /healthz  # or null
 *   instances:
 *     i-101: { port: 3001, slot: blue, state: running, generation: 0 }
 *     i-102: { port: 3002, slot: green, state: running, generation: 0 }
 * deployment: { id: "42", callback_url: https://platform.example.com/cb, requested_at: 2025-01-01T00:00:00.000Z }
 * ```
 *
 * `spec.version` is the platform's `target_version` where the API has one; for plain docker deploys
 * it is the `image_tag`; for plain binary deploys (no version in the API) it is derived from the asset
 * URL: `a-<first 12 hex digits of sha256(asset_url)>` (plainBinaryVersion), so the same URL always
 * yields the same version and a new URL a new one.
 *
 * Instance `state` is the desired run state (start/stop flip it); `generation` is bumped by a restart,
 * as `kubectl rollout restart` does. In the instance model each instance names its `slot`; for
 * `blue_green` both slots are listed as `running`: the reconciler runs the live slot and uses the idle
 * one for the next version. `deployment` names the request that produced this version of the document.
 *
 * Secrets (env values, registry password) live in this file only; every summary that leaves the
 * operator goes through `summarizeDesired`, which redacts them.
 */
import { createHash, createHmac, randomBytes } from 'node:crypto';
import jsonpatch from 'fast-json-patch';
import type { Operation } from 'fast-json-patch';
import type { Static } from 'typebox';
import { Compile } from 'typebox/compile';
import { parse as parseYaml, stringify as stringifyYaml } from 'yaml';
import type { AppKey } from '../core/identity.ts';
import { API_VERSION, DesiredAppSchema, DOC_KIND, httpUrlProblem } from './schema.ts';

export { API_VERSION, DOC_KIND, DesiredAppSchema };

/** A valid desired-state document (schema and invariants checked). */
export type DesiredApp = Static<typeof DesiredAppSchema>;
export type DesiredInstance = DesiredApp['spec']['instances'][string];

/** Outcome of parsing a document file. `error` is a one-line, secret-free description. */
export type ParseResult = { ok: true; doc: DesiredApp } | { ok: false; error: string };

const validator = Compile(DesiredAppSchema);

/** The identity of the app a document describes. */
export function docKey(doc: DesiredApp): AppKey {
  return { team: doc.metadata.team, env: doc.metadata.environment, app: doc.metadata.app };
}

/** The version of a plain-model binary deploy: stable per asset URL. */
export function plainBinaryVersion(assetUrl: string): string {
  return `a-${createHash('sha256').update(assetUrl).digest('hex').slice(0, 12)}`;
}

/**
 * Rules JSON Schema cannot state. Returns one message per violation (empty when the document is
 * consistent). The API checks the same rules on requests with request field names.
 */
export function checkInvariants(doc: DesiredApp): string[] {
  const out: string[] = [];
  const s = doc.spec;
  const urlProblem = s.binary ? httpUrlProblem(s.binary.asset_url) : undefined;
  if (urlProblem) out.push(`spec.binary.asset_url: ${urlProblem}`);
  const cbProblem = httpUrlProblem(doc.deployment.callback_url);
  if (cbProblem) out.push(`deployment.callback_url: ${cbProblem}`);
  if (s.runtime === 'binary' && (!s.binary || s.docker)) out.push('spec: runtime binary needs spec.binary and no spec.docker');
  if (s.runtime === 'docker' && (!s.docker || s.binary)) out.push('spec: runtime docker needs spec.docker and no spec.binary');
  const ports = new Map<number, string>();
  const slots = new Map<string, string>();
  for (const [id, inst] of Object.entries(s.instances)) {
    const other = ports.get(inst.port);
    if (other !== undefined) out.push(`spec.instances.${id}.port: port ${inst.port} is also used by instance ${other}`);
    ports.set(inst.port, id);
    if (s.model === 'instance') {
      if (inst.slot === undefined) out.push(`spec.instances.${id}.slot: the instance model needs a slot per instance`);
      else {
        const o = slots.get(inst.slot);
        if (o !== undefined) out.push(`spec.instances.${id}.slot: slot ${inst.slot} is also filled by instance ${o}`);
        slots.set(inst.slot, id);
      }
    } else if (inst.slot !== undefined) out.push(`spec.instances.${id}.slot: the plain model has no slots`);
  }
  if (s.model === 'instance' && s.strategy === 'blue_green' && Object.keys(s.instances).length !== 2) {
    out.push('spec.instances: blue_green needs exactly 2 slots');
  }
  return out;
}

/** Validate an already-parsed value as a document: schema, then invariants. */
export function validateDesired(value: unknown): ParseResult {
  if (!validator.Check(value)) {
    const msgs: string[] = [];
    for (const e of validator.Errors(value)) {
      // Messages name the path and rule only, never the offending value (it may be a secret).
      msgs.push(`${e.instancePath === '' ? '/' : e.instancePath}: ${e.message}`);
      if (msgs.length >= 5) break;
    }
    return { ok: false, error: `invalid document: ${msgs.join('; ')}` };
  }
  const inv = checkInvariants(value);
  if (inv.length > 0) return { ok: false, error: `invalid document: ${inv.join('; ')}` };
  return { ok: true, doc: value };
}

/** Largest document file accepted (well above anything the API can produce from a 1 MiB body). */
export const MAX_DOC_BYTES = 4 * 1024 * 1024;

/**
 * Parse YAML text into a valid document. Never throws: YAML errors (including alias bombs, which
 * `maxAliasCount` stops, and duplicate keys) and schema/invariant violations come back as
 * `{ok: false, error}`.
 */
export function parseDesiredYaml(text: string): ParseResult {
  if (text.length > MAX_DOC_BYTES) return { ok: false, error: `document larger than ${MAX_DOC_BYTES} bytes` };
  let value: unknown;
  try {
    value = parseYaml(text, { maxAliasCount: 16, uniqueKeys: true, schema: 'core', prettyErrors: false });
  } catch (err) {
    const msg = err instanceof Error ? err.message.split('\n')[0] : String(err);
    return { ok: false, error: `YAML: ${msg}` };
  }
  return validateDesired(value);
}

/**
 * Canonical YAML of a document: fixed key order (the order the schema lists), strings quoted where
 * YAML would read them as something else, no line folding. parseDesiredYaml(serializeDesired(d))
 * deep-equals d for every valid d.
 */
export function serializeDesired(doc: DesiredApp): string {
  return stringifyYaml(canonical(doc), { lineWidth: 0, minContentWidth: 0, defaultKeyType: 'PLAIN', aliasDuplicateObjects: false });
}

/** The document with keys in schema order (so equal documents serialise to equal bytes). */
function canonical(doc: DesiredApp): DesiredApp {
  const s = doc.spec;
  const sorted = <T>(m: Record<string, T>): Record<string, T> => {
    const out: Record<string, T> = {};
    for (const k of Object.keys(m).sort()) out[k] = m[k] as T;
    return out;
  };
  const instances: Record<string, DesiredInstance> = {};
  for (const [id, i] of Object.entries(sorted(s.instances))) {
    instances[id] = { port: i.port, ...(i.slot !== undefined ? { slot: i.slot } : {}), state: i.state, generation: i.generation };
  }
  return {
    apiVersion: doc.apiVersion,
    kind: doc.kind,
    metadata: { team: doc.metadata.team, environment: doc.metadata.environment, app: doc.metadata.app },
    spec: {
      runtime: s.runtime,
      model: s.model,
      domain: s.domain,
      strategy: s.strategy,
      version: s.version,
      ...(s.binary ? { binary: { asset_url: s.binary.asset_url } } : {}),
      ...(s.docker
        ? {
            docker: {
              image: s.docker.image,
              tag: s.docker.tag,
              ...(s.docker.command ? { command: [...s.docker.command] } : {}),
              ...(s.docker.credentials
                ? {
                    credentials: {
                      username: s.docker.credentials.username,
                      password: s.docker.credentials.password,
                      ...(s.docker.credentials.server !== undefined ? { server: s.docker.credentials.server } : {}),
                    },
                  }
                : {}),
              ...(s.docker.volumes ? { volumes: [...s.docker.volumes] } : {}),
            },
          }
        : {}),
      env: sorted(s.env),
      health_check_path: s.health_check_path,
      instances,
    },
    deployment: { id: doc.deployment.id, callback_url: doc.deployment.callback_url, requested_at: doc.deployment.requested_at },
  };
}

/**
 * JSON-Patch (RFC 6902) from `before` to `after` (either may be absent: creation or deletion).
 * Maps are keyed (instances by id, env by name), so an operation names what changed, not an index.
 * Pass redacted documents (summarizeDesired) when the patch leaves the operator.
 */
export function diffDesired(before: object | undefined, after: object | undefined): Operation[] {
  if (before === undefined && after === undefined) return [];
  if (before === undefined) return [{ op: 'add', path: '', value: after }];
  if (after === undefined) return [{ op: 'remove', path: '' }];
  return jsonpatch.compare(before, after);
}

// Redaction markers are HMACs under a per-process key: equal secrets give equal markers (so a diff
// still shows which value changed) without the marker revealing or confirming the value.
const redactionKey = randomBytes(32);

/** A marker standing for a secret value: `<redacted:8 hex>`. */
export function redactSecret(value: string): string {
  return `<redacted:${createHmac('sha256', redactionKey).update(value).digest('hex').slice(0, 8)}>`;
}

/** The query string (often a signature) and fragment of a URL replaced by a marker. */
export function redactUrl(url: string): string {
  const cut = url.search(/[?#]/);
  return cut < 0 ? url : `${url.slice(0, cut)}?${redactSecret(url.slice(cut))}`;
}

/**
 * The document with every secret replaced by a marker: env values, the registry password and the
 * query parts of the asset and callback URLs (signed URLs carry tokens there). This is the only form of a document that may appear in a response,
 * a log line or a record.
 */
export function summarizeDesired(doc: DesiredApp): DesiredApp {
  const c = canonical(doc);
  const env: Record<string, string> = {};
  for (const [k, v] of Object.entries(c.spec.env)) env[k] = redactSecret(v);
  c.spec.env = env;
  if (c.spec.binary) c.spec.binary.asset_url = redactUrl(c.spec.binary.asset_url);
  c.deployment.callback_url = redactUrl(c.deployment.callback_url);
  if (c.spec.docker?.credentials) c.spec.docker.credentials.password = redactSecret(c.spec.docker.credentials.password);
  return c;
}
