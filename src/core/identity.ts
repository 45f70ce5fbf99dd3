/**
 * App identity and the names the operator gives to what it owns on the host.
 *
 * Ownership is by name and label: every unit, container and route carries the app identity, so the
 * operator can rebuild its picture of the host from the host alone. All ids are restricted to
 * `ID_PATTERN` (or are positive integers), so names built from them never need escaping.
 */
import { createHash } from 'node:crypto';

/** Instance ids, team ids and slot names: they become parts of unit and container names. */
export const ID_PATTERN = /^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$/;
/** `target_version` and `image_tag`. */
export const VERSION_PATTERN = /^[A-Za-z0-9][A-Za-z0-9_.+-]{0,127}$/;
/** Environment variable names. */
export const ENV_KEY_PATTERN = /^[A-Za-z_][A-Za-z0-9_]*$/;
/**
 * App domains: a lower-case DNS host name (RFC 1123 labels of 1..63 characters, no leading or trailing
 * `-`), optionally with one leading `*.` wildcard label. The 253-character total limit is checked
 * separately (DOMAIN_MAX_LENGTH). Domains reach Caddy host matchers, so nothing else may pass.
 */
export const DOMAIN_PATTERN = /^(?:\*\.)?[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?(?:\.[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?)*$/;
export const DOMAIN_MAX_LENGTH = 253;

/** The identity of one app in one environment of one team. */
export interface AppKey {
  readonly team: string;
  readonly env: number;
  readonly app: number;
}

/** `team/env/app`: the key used by queues, records and logs. */
export function appKeyString(k: AppKey): string {
  return `${k.team}/${k.env}/${k.app}`;
}

/** Inverse of appKeyString; undefined when the string is not a valid key. */
export function parseAppKey(s: string): AppKey | undefined {
  const parts = s.split('/');
  if (parts.length !== 3) return undefined;
  const [team, env, app] = parts as [string, string, string];
  if (!ID_PATTERN.test(team) || !/^[1-9][0-9]{0,9}$/.test(env) || !/^[1-9][0-9]{0,9}$/.test(app)) return undefined;
  return { team, env: Number(env), app: Number(app) };
}

export function sameApp(a: AppKey, b: AppKey): boolean {
  return a.team === b.team && a.env === b.env && a.app === b.app;
}

/** Prefix shared by every unit the operator owns. */
export const UNIT_PREFIX = 'crate-';

/** Spec ids (the reconciler's hash of a revision) as they appear in names. */
export const SPEC_PATTERN = /^[a-f0-9]{6,16}$/;

/**
 * systemd unit name of one run of an instance: `crate-<team>:<env>:<app>:<instance>[:<spec>].service`.
 * `:` cannot occur in any id, so the name is injective and parseable. The spec part lets two
 * revisions of one instance run side by side during a rollout.
 */
export function unitName(k: AppKey, instance: string, spec?: string): string {
  return `${UNIT_PREFIX}${k.team}:${k.env}:${k.app}:${instance}${spec === undefined ? '' : `:${spec}`}.service`;
}

/** Inverse of unitName; undefined for units the operator does not own. */
export function parseUnitName(name: string): { key: AppKey; instance: string; spec: string | undefined } | undefined {
  if (!name.startsWith(UNIT_PREFIX) || !name.endsWith('.service')) return undefined;
  const parts = name.slice(UNIT_PREFIX.length, -'.service'.length).split(':');
  if (parts.length !== 4 && parts.length !== 5) return undefined;
  const [team, env, app, instance, spec] = parts as [string, string, string, string, string | undefined];
  const key = parseAppKey(`${team}/${env}/${app}`);
  if (!key || !ID_PATTERN.test(instance)) return undefined;
  if (spec !== undefined && !SPEC_PATTERN.test(spec)) return undefined;
  return { key, instance, spec };
}

/** Docker labels the operator sets on every container it creates. */
export const LABELS = {
  team: 'crate.team',
  env: 'crate.env',
  app: 'crate.app',
  instance: 'crate.instance',
  slot: 'crate.slot',
  version: 'crate.version',
  deployment: 'crate.deployment',
  generation: 'crate.generation',
  port: 'crate.port',
} as const;

/**
 * Docker container name of one instance. Docker names allow no `:`, so the name is readable
 * (`crate-<app>-<env>-<instance>`) plus a short hash of the full identity to stay unique.
 */
export function containerName(k: AppKey, instance: string, spec?: string): string {
  const h = createHash('sha256').update(`${appKeyString(k)}/${instance}`).digest('hex').slice(0, 8);
  return `crate-${k.app}-${k.env}-${instance}-${h}${spec === undefined ? '' : `-${spec}`}`;
}

/** Caddy `@id` of the app's route. */
export function routeId(k: AppKey): string {
  return `crate-route-${k.team}-${k.env}-${k.app}`;
}
