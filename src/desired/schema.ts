/**
 * Field rules shared by the API request schemas and the desired-state document schema (TypeBox, so
 * one definition gives validation, TypeScript types and the OpenAPI document).
 *
 * Every rule here is plain JSON Schema (no custom keywords), so fastify's ajv, TypeBox's compiler and
 * @fastify/swagger read the same thing. The messages in `PATTERN_REASONS` turn a failed `pattern`
 * into a sentence a platform engineer can act on.
 */
import { Type, type Static, type TSchema } from 'typebox';
import { DOMAIN_MAX_LENGTH, DOMAIN_PATTERN, ENV_KEY_PATTERN, ID_PATTERN, VERSION_PATTERN } from '../core/identity.ts';

export const INT32_MAX = 2_147_483_647;

/** Keys that would reach Object.prototype machinery if a map were ever copied naively. */
export const FORBIDDEN_KEYS = ['__proto__', 'constructor', 'prototype'] as const;

/**
 * `http://` or `https://`, a host without user info, then anything without whitespace or control
 * characters. User info is refused because URLs are stored in records and shown in summaries.
 */
// eslint-disable-next-line no-control-regex -- refusing control characters is the point
export const HTTP_URL_PATTERN = /^https?:\/\/[^\s/?#@\u0000-\u001f\u007f]+(?:[/?#][^\s\u0000-\u001f\u007f]*)?$/;
/** Env values: anything a process environment can carry byte for byte (no NUL, no lone surrogate). */
// eslint-disable-next-line no-control-regex -- refusing control characters is the point
export const ENV_VALUE_PATTERN = /^[^\u0000\uD800-\uDFFF]*$/u;
/** Health check paths: absolute, printable ASCII without spaces. */
export const HEALTH_PATH_PATTERN = /^\/[\u0021-\u007e]{0,1023}$/;
/**
 * Docker image names without tag or digest: optional registry host[:port], then lower-case path
 * components as the distribution reference grammar has them.
 */
export const IMAGE_PATTERN = /^(?:[A-Za-z0-9](?:[A-Za-z0-9.-]{0,252})(?::[0-9]{1,5})?\/)?[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*(?:\/[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*)*$/;
/** Registry servers in credentials: host[:port]. */
export const REGISTRY_SERVER_PATTERN = /^[A-Za-z0-9](?:[A-Za-z0-9.-]{0,252})(?::[0-9]{1,5})?$/;
/**
 * Docker volumes: `<named volume or absolute host path>:<absolute container path>[:ro|:rw]`.
 * Whether a host path is allowed at all (the configured volumes root) is checked by the API.
 */
// eslint-disable-next-line no-control-regex -- refusing control characters is the point
export const VOLUME_PATTERN = /^(?:[A-Za-z0-9][A-Za-z0-9_.-]{0,127}|\/[^:\u0000-\u001f]{0,1023}):\/[^:\u0000-\u001f]{0,1023}(?::(?:ro|rw))?$/;
/** Strings that reach argv, credentials or names: no control characters at all. */
// eslint-disable-next-line no-control-regex -- refusing control characters is the point
export const PRINTABLE_PATTERN = /^[^\u0000-\u001f\u007f\uD800-\uDFFF]*$/u;
/** Deployment ids as stored: the decimal form of the platform's int32, or an operator id. */
export const DEPLOYMENT_ID_PATTERN = /^(?:[1-9][0-9]{0,9}|op-[a-z0-9-]{1,64})$/;

/** Reason shown in a 400 when a value fails one of the patterns above, keyed by pattern source. */
export const PATTERN_REASONS: ReadonlyMap<string, string> = new Map([
  [ID_PATTERN.source, 'must be 1-63 characters of A-Z a-z 0-9 _ . -, starting with a letter or digit'],
  [VERSION_PATTERN.source, 'must be 1-128 characters of A-Z a-z 0-9 _ . + -, starting with a letter or digit'],
  [ENV_KEY_PATTERN.source, 'must be an identifier: a letter or _, then letters, digits or _'],
  [DOMAIN_PATTERN.source, 'must be a lower-case DNS host name (RFC 1123), optionally with one leading *. label'],
  [HTTP_URL_PATTERN.source, 'must be an http:// or https:// URL without user info or whitespace'],
  [ENV_VALUE_PATTERN.source, 'must not contain NUL characters or unpaired surrogates'],
  [HEALTH_PATH_PATTERN.source, 'must be an absolute path of printable ASCII without spaces, at most 1024 characters'],
  [IMAGE_PATTERN.source, 'must be a Docker image name without tag (e.g. registry.example.com/team/app)'],
  [REGISTRY_SERVER_PATTERN.source, 'must be a registry host name, optionally with :port'],
  [VOLUME_PATTERN.source, 'must be <volume name or /host/path>:/container/path, optionally with :ro or :rw'],
  [PRINTABLE_PATTERN.source, 'must not contain control characters'],
  [DEPLOYMENT_ID_PATTERN.source, 'must be a positive decimal int32 or an operator id (op-...)'],
]);

const pattern = (re: RegExp): string => re.source;

export const Int32Id = Type.Integer({ minimum: 1, maximum: INT32_MAX, format: 'int32' });
export const Port = Type.Integer({ minimum: 1, maximum: 65535 });
export const TeamId = Type.String({ pattern: pattern(ID_PATTERN), description: 'Team id: matches ^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$ (it becomes part of unit names).' });
export const InstanceId = Type.String({ pattern: pattern(ID_PATTERN) });
export const SlotName = Type.String({ pattern: pattern(ID_PATTERN) });
export const Version = Type.String({ pattern: pattern(VERSION_PATTERN) });
export const Domain = Type.String({ pattern: pattern(DOMAIN_PATTERN), maxLength: DOMAIN_MAX_LENGTH });
// No `format: 'uri'`: fastify's ajv and TypeBox implement it differently (a request could pass one
// and fail the other); httpUrlProblem is the one extra rule, applied by the API and the document.
export const HttpUrl = Type.String({ pattern: pattern(HTTP_URL_PATTERN), maxLength: 4096 });

/**
 * What the pattern cannot say: the URL must be one the operator's HTTP client can use (WHATWG URL
 * parsing, as undici does: a numeric port, a valid host), http or https, without user info.
 * Returns the reason, or undefined for a usable URL.
 */
export function httpUrlProblem(s: string): string | undefined {
  if (!URL.canParse(s)) return 'must be a URL an HTTP client can parse (valid host, numeric port)';
  const u = new URL(s);
  if (u.protocol !== 'http:' && u.protocol !== 'https:') return 'must be an http:// or https:// URL';
  if (u.username !== '' || u.password !== '') return 'must not contain user info';
  return undefined;
}
export const HealthPath = Type.String({ pattern: pattern(HEALTH_PATH_PATTERN) });
export const Image = Type.String({ pattern: pattern(IMAGE_PATTERN), maxLength: 255 });
export const Volume = Type.String({ pattern: pattern(VOLUME_PATTERN), maxLength: 2100 });
export const Printable = (max: number): ReturnType<typeof Type.String> =>
  Type.String({ pattern: pattern(PRINTABLE_PATTERN), maxLength: max });

export const STRATEGIES = ['blue_green', 'rolling', 'recreate'] as const;
export type Strategy = (typeof STRATEGIES)[number];
export const StrategySchema = Type.Enum([...STRATEGIES], { description: 'DeploymentStrategy: blue_green, rolling or recreate.' });

/**
 * A string-keyed map whose keys match `keyPattern` and are never `__proto__`/`constructor`/
 * `prototype`. Expressed with `propertyNames` (not `patternProperties`), so a bad key is reported as
 * a bad key rather than as an unknown field.
 */
export function KeyedMap<V extends TSchema>(
  keyPattern: RegExp,
  value: V,
  opts: { minProperties?: number; maxProperties?: number; description?: string } = {},
): ReturnType<typeof Type.Unsafe<Record<string, Static<V>>>> {
  return Type.Unsafe<Record<string, Static<V>>>({
    type: 'object',
    propertyNames: { pattern: keyPattern.source, not: { enum: [...FORBIDDEN_KEYS] } },
    additionalProperties: value,
    ...opts,
  });
}

export const EnvVars = KeyedMap(ENV_KEY_PATTERN, Type.String({ pattern: pattern(ENV_VALUE_PATTERN) }), {
  maxProperties: 4096,
  description: 'Environment variables: keys are identifiers, values any string (quotes, $, %, newlines) and reach the app byte for byte.',
});

export const DockerCommand = Type.Array(Type.String({ pattern: pattern(ENV_VALUE_PATTERN), maxLength: 65536 }), { maxItems: 1024 });
export const Volumes = Type.Array(Volume, { maxItems: 256 });

export const RegistryCredentials = Type.Object(
  {
    username: Printable(1024),
    password: Type.String({ pattern: pattern(ENV_VALUE_PATTERN), maxLength: 65536 }),
    server: Type.Optional(Type.String({ pattern: pattern(REGISTRY_SERVER_PATTERN), maxLength: 261 })),
  },
  { additionalProperties: false },
);
export type RegistryCredentials = Static<typeof RegistryCredentials>;

// ---- The desired-state document ----

export const API_VERSION = 'crate-operator/v1';
export const DOC_KIND = 'App';

export const DesiredInstanceSchema = Type.Object(
  {
    port: Port,
    /** Instance model only: the slot (e.g. blue/green) this instance fills. */
    slot: Type.Optional(SlotName),
    state: Type.Enum(['running', 'stopped']),
    /** Restart generation: a restart bumps it; the reconciler restarts instances whose generation moved. */
    generation: Type.Integer({ minimum: 0, maximum: INT32_MAX }),
  },
  { additionalProperties: false },
);

export const DesiredAppSchema = Type.Object(
  {
    apiVersion: Type.Literal(API_VERSION),
    kind: Type.Literal(DOC_KIND),
    metadata: Type.Object({ team: TeamId, environment: Int32Id, app: Int32Id }, { additionalProperties: false }),
    spec: Type.Object(
      {
        runtime: Type.Enum(['binary', 'docker']),
        model: Type.Enum(['instance', 'plain']),
        domain: Domain,
        strategy: StrategySchema,
        version: Version,
        binary: Type.Optional(Type.Object({ asset_url: HttpUrl }, { additionalProperties: false })),
        docker: Type.Optional(
          Type.Object(
            {
              image: Image,
              tag: Version,
              command: Type.Optional(DockerCommand),
              credentials: Type.Optional(RegistryCredentials),
              volumes: Type.Optional(Volumes),
            },
            { additionalProperties: false },
          ),
        ),
        env: EnvVars,
        health_check_path: Type.Union([HealthPath, Type.Null()]),
        instances: KeyedMap(ID_PATTERN, DesiredInstanceSchema, { minProperties: 1, maxProperties: 1024 }),
      },
      { additionalProperties: false },
    ),
    deployment: Type.Object(
      {
        id: Type.String({ pattern: pattern(DEPLOYMENT_ID_PATTERN) }),
        callback_url: HttpUrl,
        requested_at: Type.String({ format: 'date-time', maxLength: 64 }),
      },
      { additionalProperties: false },
    ),
  },
  { additionalProperties: false },
);
