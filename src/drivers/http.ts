/**
 * Small undici helpers shared by the drivers that speak HTTP to local components (Docker Engine API on
 * a unix socket, Caddy's admin API on TCP or a unix socket) and to the outside (callbacks).
 *
 * Every request made through `httpCall` has a deadline (an AbortSignal covering connect, headers and
 * body) and comes back as a plain `{status, headers, body, trailers}` with the body fully read, so
 * no caller can leak a half-consumed response stream.
 */
import { Agent, request } from 'undici';
import type { Dispatcher } from 'undici';
import { CrateError } from '../core/errors.ts';

/** Where an HTTP API lives: an origin plus the dispatcher that reaches it. */
export interface HttpTarget {
  /** `http://host:port` (for unix sockets a placeholder host; the socket decides). */
  readonly origin: string;
  readonly dispatcher: Dispatcher;
  /** For messages: the address as configured (`unix:/run/x.sock`, `http://127.0.0.1:2019`). */
  readonly label: string;
  /** Headers sent with every request to this target (a call's own headers win). */
  readonly headers?: Readonly<Record<string, string>>;
}

/**
 * An undici Agent whose every connection goes to the unix socket `socketPath`.
 * Keep-alive is allowed; pass `reset: true` per request to avoid reuse.
 */
export function unixSocketAgent(socketPath: string, opts: { connectTimeoutMs?: number } = {}): Agent {
  return new Agent({ connect: { socketPath, timeout: opts.connectTimeoutMs ?? 5_000 } });
}

/**
 * Target of an address written `http://host:port` or `unix:/path/to.sock` (the forms the operator's
 * settings use for Caddy's admin API). Throws E_CONFIG for anything else.
 */
export function parseHttpTarget(address: string): HttpTarget {
  if (address.startsWith('unix:')) {
    const socketPath = address.slice('unix:'.length);
    if (!socketPath.startsWith('/')) throw new CrateError('E_CONFIG', `unix socket address must be absolute: ${address}`);
    // Caddy checks the Host header of admin requests; for a unix-socket listener the only allowed
    // origin is the empty host, so send an empty Host header.
    return { origin: 'http://localhost', dispatcher: unixSocketAgent(socketPath), label: address, headers: { host: '' } };
  }
  let url: URL;
  try {
    url = new URL(address);
  } catch (err) {
    throw new CrateError('E_CONFIG', `not an http:// or unix: address: ${address}`, { cause: err });
  }
  if (url.protocol !== 'http:' && url.protocol !== 'https:') throw new CrateError('E_CONFIG', `not an http:// or unix: address: ${address}`);
  return { origin: url.origin, dispatcher: new Agent({ connect: { timeout: 5_000 } }), label: address };
}

/** A request to send with `httpCall`. */
export interface HttpCall {
  method: Dispatcher.HttpMethod;
  /** Path and query, starting with `/`. Callers build it with encodeURIComponent/URLSearchParams. */
  path: string;
  headers?: Record<string, string>;
  body?: string | Buffer;
  /** Overall deadline of this request (connect + headers + full body), milliseconds. */
  timeoutMs: number;
  /** Send `Connection: close` and never reuse the connection (Caddy's admin restarts on every change). */
  noReuse?: boolean;
  /** Stop reading the body after this many bytes (E_HTTP_TOO_LARGE). Default 64 MiB. */
  maxBodyBytes?: number;
  /** An outer signal (caller cancellation); combined with the deadline. */
  signal?: AbortSignal;
}

/** A fully read response. */
export interface HttpReply {
  status: number;
  headers: Record<string, string | string[] | undefined>;
  body: string;
  trailers: Record<string, string | string[] | undefined>;
}

/** The error codes httpCall produces for transport problems; callers map them to their own. */
export type TransportFailure = 'unreachable' | 'timeout' | 'aborted' | 'too_large' | 'protocol';

/** A transport-level failure (no HTTP status), with the reason as a closed set. */
export class TransportError extends Error {
  readonly reason: TransportFailure;
  constructor(reason: TransportFailure, message: string, cause: unknown) {
    super(message, { cause });
    this.name = 'TransportError';
    this.reason = reason;
  }
}

const UNREACHABLE = new Set(['ECONNREFUSED', 'ENOENT', 'ECONNRESET', 'EPIPE', 'EHOSTUNREACH', 'ENETUNREACH', 'EACCES', 'UND_ERR_SOCKET', 'UND_ERR_CLOSED', 'ENOTFOUND', 'EAI_AGAIN']);

function errCode(err: unknown): string | undefined {
  let e: unknown = err;
  for (let i = 0; i < 5 && e !== null && typeof e === 'object'; i += 1) {
    const code = (e as { code?: unknown }).code;
    if (typeof code === 'string' && code !== 'UND_ERR_ABORTED' && code !== 'ABORT_ERR') return code;
    e = (e as { cause?: unknown }).cause;
  }
  return undefined;
}

/**
 * Classify a thrown transport error: unreachable (refused, no socket file, reset), timeout (the
 * deadline fired), aborted (the caller's signal fired), or protocol (anything else).
 */
export function classifyTransportError(err: unknown, deadline: AbortSignal, outer?: AbortSignal): TransportError {
  if (err instanceof TransportError) return err;
  const message = err instanceof Error ? err.message : String(err);
  if (outer?.aborted) return new TransportError('aborted', 'request aborted by caller', err);
  if (deadline.aborted) return new TransportError('timeout', 'request deadline exceeded', err);
  const code = errCode(err);
  if (code === 'UND_ERR_CONNECT_TIMEOUT' || code === 'UND_ERR_HEADERS_TIMEOUT' || code === 'UND_ERR_BODY_TIMEOUT') {
    return new TransportError('timeout', `${code}: ${message}`, err);
  }
  if (code !== undefined && UNREACHABLE.has(code)) return new TransportError('unreachable', `${code}: ${message}`, err);
  return new TransportError('protocol', message, err);
}

/**
 * Send one request and read the whole response within `timeoutMs`. Resolves for every HTTP status
 * (callers decide what a status means); rejects only with a TransportError.
 */
export async function httpCall(target: HttpTarget, call: HttpCall): Promise<HttpReply> {
  const deadline = AbortSignal.timeout(call.timeoutMs);
  const signal = call.signal ? AbortSignal.any([deadline, call.signal]) : deadline;
  const headers: Record<string, string> = { ...(target.headers ?? {}), ...(call.headers ?? {}) };
  if (call.noReuse) headers.connection = 'close';
  const max = call.maxBodyBytes ?? 64 * 1024 * 1024;
  try {
    const res = await request(`${target.origin}${call.path}`, {
      dispatcher: target.dispatcher,
      method: call.method,
      headers,
      body: call.body ?? null,
      signal,
      reset: call.noReuse === true,
      headersTimeout: call.timeoutMs,
      bodyTimeout: call.timeoutMs,
    });
    const chunks: Buffer[] = [];
    let size = 0;
    for await (const chunk of res.body) {
      const b = chunk as Buffer;
      size += b.length;
      if (size > max) {
        res.body.destroy();
        throw new TransportError('too_large', `response body exceeds ${max} bytes`, undefined);
      }
      chunks.push(b);
    }
    return { status: res.statusCode, headers: res.headers, body: Buffer.concat(chunks).toString('utf8'), trailers: res.trailers };
  } catch (err) {
    throw classifyTransportError(err, deadline, call.signal);
  }
}

/** Parse a JSON body; undefined for an empty body; throws E_BAD_REPLY for malformed JSON. */
export function parseJsonBody(reply: HttpReply, what: string): unknown {
  const text = reply.body.trim();
  if (text === '') return undefined;
  try {
    return JSON.parse(text) as unknown;
  } catch (err) {
    throw new CrateError('E_BAD_REPLY', `${what}: malformed JSON in reply (HTTP ${reply.status})`, { cause: err });
  }
}
