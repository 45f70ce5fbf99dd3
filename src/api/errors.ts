/**
 * The API's one error shape, `{error: {code, message, details?}}`, and the mapping from everything
 * that can go wrong in a request to a status code:
 *
 * | code | status |
 * | --- | --- |
 * | E_VALIDATION (schema, JSON syntax, semantic rules) | 400, details `{fields: [{field, reason}]}` |
 * | E_UNAUTHORIZED | 401 |
 * | E_NOT_FOUND, E_ROUTE_NOT_FOUND | 404 |
 * | E_CONFLICT, E_DOMAIN_EXISTS | 409 |
 * | E_PAYLOAD_TOO_LARGE | 413 |
 * | E_UNSUPPORTED_MEDIA_TYPE | 415 |
 * | E_CADDY_UNAVAILABLE | 503 |
 * | E_STATE_FULL (the state directory's disk is full) | 500, with its code and message |
 * | anything else | 500 E_INTERNAL, message without internals, details `{request_id}` |
 *
 * Reasons name the rule, never the offending value (it may be a secret).
 */
import type { FastifyError, FastifyReply, FastifyRequest } from 'fastify';
import { CrateError } from '../core/errors.ts';
import { PATTERN_REASONS } from '../desired/schema.ts';

/** One offending field: a dotted path into the body (or the parameter name) and the rule it breaks. */
export interface FieldIssue {
  field: string;
  reason: string;
}

/** A 400 naming each offending field. */
export function validationError(fields: FieldIssue[], message = 'invalid request'): CrateError {
  return new CrateError('E_VALIDATION', message, { details: { fields } });
}

const STATUS_BY_CODE: Record<string, number> = {
  E_VALIDATION: 400,
  E_UNAUTHORIZED: 401,
  E_NOT_FOUND: 404,
  E_ROUTE_NOT_FOUND: 404,
  E_CONFLICT: 409,
  E_DOMAIN_EXISTS: 409,
  E_PAYLOAD_TOO_LARGE: 413,
  E_UNSUPPORTED_MEDIA_TYPE: 415,
  E_CADDY_UNAVAILABLE: 503,
  E_STATE_FULL: 500,
};

/** Server-side failures whose code and message are safe and useful to show (others are E_INTERNAL). */
const EXPOSED_5XX = new Set(['E_CADDY_UNAVAILABLE', 'E_STATE_FULL']);

/** The HTTP status of a CrateError code (500 for codes the API does not expose). */
export function statusOf(code: string): number {
  return STATUS_BY_CODE[code] ?? 500;
}

interface AjvIssue {
  keyword: string;
  instancePath: string;
  params: Record<string, unknown>;
  message?: string;
  propertyName?: string;
}

function pointerToPath(pointer: string): string[] {
  if (pointer === '') return [];
  return pointer
    .slice(1)
    .split('/')
    .map((s) => s.replace(/~1/g, '/').replace(/~0/g, '~'));
}

function joinPath(parts: string[]): string {
  if (parts.length === 0) return '(body)';
  // A top-level empty key would make an empty field name: show it as "" (nested ones read `env_vars.`).
  return parts.length === 1 && parts[0] === '' ? '""' : parts.join('.');
}

function reasonOf(e: AjvIssue): string | undefined {
  const p = e.params;
  switch (e.keyword) {
    case 'required':
      return 'is required';
    case 'additionalProperties':
      return 'is not an allowed field';
    case 'pattern':
      return PATTERN_REASONS.get(String(p.pattern)) ?? e.message;
    case 'enum':
      return `must be one of: ${(p.allowedValues as unknown[]).map(String).join(', ')}`;
    case 'const':
      return `must be ${JSON.stringify(p.allowedValue)}`;
    case 'type':
      return `must be ${String(p.type)}`;
    case 'format':
      return `must be a valid ${String(p.format)}`;
    case 'not':
      return 'is a reserved name';
    case 'anyOf':
    case 'oneOf':
    case 'propertyNames':
    case 'if':
      return undefined;
    default:
      return e.message;
  }
}

/**
 * Turn ajv's errors into one issue per offending field. Alternatives of a union (e.g. `string | null`)
 * are joined with "or"; several broken rules of one field with "; ".
 */
export function issuesFromAjv(errors: readonly AjvIssue[], context: string | undefined): FieldIssue[] {
  const byField = new Map<string, { reasons: string[]; union: boolean }>();
  const unionPaths = new Set(errors.filter((e) => e.keyword === 'anyOf' || e.keyword === 'oneOf').map((e) => e.instancePath));
  for (const e of errors) {
    const parts = pointerToPath(e.instancePath);
    let field: string;
    let reason = reasonOf(e);
    if (e.keyword === 'required') field = joinPath([...parts, String(e.params.missingProperty)]);
    else if (e.keyword === 'additionalProperties') field = joinPath([...parts, String(e.params.additionalProperty)]);
    else if (e.propertyName !== undefined) {
      // A rule of `propertyNames` failed: the offending thing is the key itself.
      field = joinPath([...parts, e.propertyName]);
      reason = reason === undefined ? undefined : `key ${reason}`;
    } else field = joinPath(parts);
    if (field === '(body)' && context !== undefined && context !== 'body') field = `(${context})`;
    if (reason === undefined) continue;
    const entry = byField.get(field) ?? { reasons: [], union: unionPaths.has(e.instancePath) };
    if (!entry.reasons.includes(reason)) entry.reasons.push(reason);
    byField.set(field, entry);
  }
  return [...byField].map(([field, { reasons, union }]) => {
    if (!union) return { field, reason: reasons.join('; ') };
    // "must be string" + "must be null" reads better as "must be string or null".
    const all = reasons.every((r) => r.startsWith('must be '));
    return { field, reason: all ? `must be ${reasons.map((r) => r.slice('must be '.length)).join(' or ')}` : reasons.join(' or ') };
  });
}

/** The body of an error answer. */
export function errorBody(code: string, message: string, details?: unknown): { error: { code: string; message: string; details?: unknown } } {
  return { error: details === undefined ? { code, message } : { code, message, details } };
}

/** fastify's own errors, by code. */
const FASTIFY_ERRORS: Record<string, { status: number; code: string; message: string; details?: unknown }> = {
  FST_ERR_CTP_BODY_TOO_LARGE: { status: 413, code: 'E_PAYLOAD_TOO_LARGE', message: 'request body too large' },
  FST_ERR_CTP_INVALID_MEDIA_TYPE: { status: 415, code: 'E_UNSUPPORTED_MEDIA_TYPE', message: 'content-type must be application/json' },
  FST_ERR_CTP_EMPTY_JSON_BODY: {
    status: 400,
    code: 'E_VALIDATION',
    message: 'invalid request',
    details: { fields: [{ field: '(body)', reason: 'must not be empty' }] },
  },
  FST_ERR_CTP_INVALID_CONTENT_LENGTH: { status: 400, code: 'E_VALIDATION', message: 'body size does not match content-length' },
};

/** The one error handler of the app. */
export function handleError(err: FastifyError | CrateError | Error, req: FastifyRequest, reply: FastifyReply): void {
  const fe = err as FastifyError & { validation?: AjvIssue[]; validationContext?: string };
  if (Array.isArray(fe.validation)) {
    void reply.code(400).send(errorBody('E_VALIDATION', 'invalid request', { fields: issuesFromAjv(fe.validation, fe.validationContext) }));
    return;
  }
  if (err instanceof CrateError) {
    const status = statusOf(err.code);
    if (status < 500 || EXPOSED_5XX.has(err.code)) {
      if (status >= 500) req.log.warn({ code: err.code, err: err.message }, 'request failed');
      void reply.code(status).send(errorBody(err.code, err.message, err.details));
      return;
    }
  }
  const known = typeof fe.code === 'string' ? FASTIFY_ERRORS[fe.code] : undefined;
  if (known) {
    void reply.code(known.status).send(errorBody(known.code, known.message, known.details));
    return;
  }
  if (typeof fe.statusCode === 'number' && fe.statusCode >= 400 && fe.statusCode < 500) {
    void reply.code(fe.statusCode).send(errorBody(fe.statusCode === 400 ? 'E_VALIDATION' : 'E_BAD_REQUEST', fe.message));
    return;
  }
  req.log.error({ err }, 'internal error');
  void reply.code(500).send(errorBody('E_INTERNAL', 'internal error', { request_id: req.id }));
}
