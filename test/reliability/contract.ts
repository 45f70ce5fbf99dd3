/**
 * The API's published contract as a test oracle: the operator's own /openapi.json, compiled with ajv
 * (ajv-formats for date-time, uri, int32), answering "does this response match what the document
 * says this route answers with this status?". Statuses a route does not list are allowed only when
 * the API description documents them for every route (401, 404 for unknown routes, 413, 415), and
 * then the body must be the one error shape.
 */
import { Ajv, type ValidateFunction } from 'ajv';
import addFormatsModule from 'ajv-formats';
import type { JsonSchema } from './schema-arb.ts';

// ajv-formats is CommonJS with a default export; under ESM interop it arrives wrapped.
const addFormats = ((addFormatsModule as unknown as { default?: unknown }).default ?? addFormatsModule) as (a: Ajv) => Ajv;

interface Media {
  schema?: JsonSchema;
}
interface Operation {
  parameters?: Array<{ name: string; in: string; schema: JsonSchema }>;
  requestBody?: { content: Record<string, Media> };
  responses: Record<string, { content?: Record<string, Media> }>;
}
/** The parts of an OpenAPI 3.1 document the oracle reads. */
export interface OpenApiDoc {
  paths: Record<string, Record<string, Operation>>;
}

/** One operation of the document, with a matcher for concrete URLs. */
export interface RouteInfo {
  method: string;
  path: string;
  re: RegExp;
  op: Operation;
}

/** Statuses every route may answer although no route lists them (see the API description). */
const GLOBAL_ERROR_STATUSES = new Set([401, 404, 413, 415]);

const ERROR_BODY: JsonSchema = {
  type: 'object',
  required: ['error'],
  additionalProperties: false,
  properties: {
    error: {
      type: 'object',
      required: ['code', 'message'],
      additionalProperties: false,
      properties: { code: { type: 'string', pattern: '^E_[A-Z0-9_]+$' }, message: { type: 'string' }, details: {} },
    },
  },
};

export class Contract {
  readonly routes: RouteInfo[];
  private readonly ajv: Ajv;
  private readonly cache = new Map<string, ValidateFunction>();
  private readonly errorBody: ValidateFunction;

  constructor(readonly doc: OpenApiDoc) {
    this.ajv = new Ajv({ strict: false, allErrors: true, validateFormats: true });
    addFormats(this.ajv);
    this.errorBody = this.ajv.compile(ERROR_BODY);
    this.routes = [];
    for (const [p, ops] of Object.entries(doc.paths)) {
      const re = new RegExp(`^${p.replace(/[.*+?^$()|[\]\\]/g, '\\$&').replace(/\{[^}]+\}/g, '[^/?#]*')}$`);
      for (const [method, op] of Object.entries(ops)) this.routes.push({ method: method.toUpperCase(), path: p, re, op });
    }
  }

  /** The operation a request would reach, if any (by method and path, query ignored). */
  route(method: string, url: string): RouteInfo | undefined {
    // The router matches the percent-decoded path, except an encoded `/` (it stays inside a segment).
    const raw = url.split(/[?#]/)[0] ?? '';
    const p = raw.replace(/%([0-9A-Fa-f]{2})/g, (m: string, hex: string) => {
      const c = String.fromCharCode(parseInt(hex, 16));
      return c === '/' || c === '?' || c === '#' || c === '%' || parseInt(hex, 16) > 0x7e ? m : c;
    });
    return this.routes.find((r) => r.method === method && r.re.test(p));
  }

  /** The request body schema of a route. */
  bodySchema(method: string, path: string): JsonSchema | undefined {
    return this.routes.find((r) => r.method === method && r.path === path)?.op.requestBody?.content['application/json']?.schema;
  }

  /**
   * Check one response. Returns undefined when it matches the document, else a description of the
   * mismatch (for the assertion message).
   */
  check(method: string, url: string, status: number, contentType: string | undefined, body: string): string | undefined {
    if (method === 'HEAD') {
      // HEAD is GET without a body (fastify exposes HEAD for every GET route).
      if (body !== '') return `HEAD ${url}: answered with a body`;
      if (status === 200 && /^\/(openapi\.json|docs)(?:[/?#]|$)/.test(url)) return undefined;
      const get = this.route('GET', url);
      const ok = get ? get.op.responses[String(status)] !== undefined || GLOBAL_ERROR_STATUSES.has(status) : status === 404 || status === 401;
      return ok ? undefined : `HEAD ${url}: status ${status} is not documented for ${get ? get.path : 'an unknown route'}`;
    }
    const route = this.route(method, url);
    // The documentation endpoints themselves are outside the document (hidden on purpose).
    if (!route && status === 200 && /^\/(openapi\.json|docs)(?:[/?#]|$)/.test(url)) return undefined;
    const listed = route?.op.responses[String(status)];
    const isJson = (contentType ?? '').startsWith('application/json');
    if (!listed) {
      if (!GLOBAL_ERROR_STATUSES.has(status)) return `${method} ${url}: status ${status} is not documented for ${route ? route.path : 'an unknown route'}`;
      if (route === undefined && status !== 404 && status !== 401) return `${method} ${url}: unknown route answered ${status}`;
      if (!isJson) return `${method} ${url}: ${status} with content-type ${contentType ?? '(none)'}`;
      return this.validate(this.errorBody, body, `${method} ${url} ${status}`);
    }
    const media = listed.content ?? {};
    if (Object.keys(media).length === 0) return body === '' ? undefined : `${method} ${url}: ${status} documents no body`;
    const type = Object.keys(media).find((t) => (contentType ?? '').startsWith(t));
    if (!type) return `${method} ${url}: ${status} with content-type ${contentType ?? '(none)'}, documented: ${Object.keys(media).join(', ')}`;
    if (type !== 'application/json') return undefined;
    const key = `${route?.method} ${route?.path} ${status}`;
    let v = this.cache.get(key);
    if (!v) {
      v = this.ajv.compile(media[type]?.schema ?? {});
      this.cache.set(key, v);
    }
    const err = this.validate(v, body, key);
    if (err) return err;
    // Every error answer, documented or not, is the one error shape.
    return status >= 400 ? this.validate(this.errorBody, body, key) : undefined;
  }

  private validate(v: ValidateFunction, body: string, what: string): string | undefined {
    let value: unknown;
    try {
      value = JSON.parse(body);
    } catch {
      return `${what}: body is not JSON: ${body.slice(0, 200)}`;
    }
    if (v(value)) return undefined;
    return `${what}: ${this.ajv.errorsText(v.errors)} in ${body.slice(0, 400)}`;
  }
}
