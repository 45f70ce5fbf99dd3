/**
 * What the client commands (`apps`, `status`, `deploy`, and others that talk to a running operator)
 * share: the `--url`/`--token` options with their defaults, one JSON request with a deadline, and the
 * server-sent events reader of `GET /v1/app/deploy/{id}/events`.
 *
 * Defaults: `--url` is `http://<listen>` of the configuration (CRATE_LISTEN, the `--config` file,
 * else 127.0.0.1:7070; a wildcard listen host becomes 127.0.0.1). `--token` is CRATE_API_TOKEN (its
 * first token) or the token file the embedded-default start saved: `<state dir>/token`.
 */
import { readFileSync } from 'node:fs';
import path from 'node:path';
import type { Command } from 'commander';
import { request } from 'undici';
import { loadConfig } from '../config.ts';
import { CrateError } from '../core/errors.ts';

/** Where and how to reach the operator. */
export interface ClientTarget {
  /** Base URL, no trailing slash. */
  url: string;
  token: string;
}

/** Output of a command: stdout lines and whether stdout is a terminal. */
export interface CliIO {
  out(text: string): void;
  isTTY: boolean;
  /** Terminal width (TTY only). */
  columns?: number;
}

/** Add `--url`, `--token`, `--state-dir` and `--config` to a client command. */
export function addClientOptions(cmd: Command): Command {
  return cmd
    .option('--url <url>', 'operator API base URL (default: http://<listen> from CRATE_LISTEN or --config, else http://127.0.0.1:7070)')
    .option('--token <token>', 'API bearer token (default: CRATE_API_TOKEN, else the token file <state dir>/token saved by `start`)')
    .option('--state-dir <dir>', 'state directory holding the saved token (CRATE_STATE_DIR; default ./state)')
    .option('--config <file>', 'operator config file to take the listen address and state dir from (CRATE_CONFIG)');
}

/** Resolve the target from the client options (see the module comment for the defaults). */
export function clientTarget(flags: { url?: string; token?: string; stateDir?: string; config?: string }, env: NodeJS.ProcessEnv = process.env): ClientTarget {
  const config = loadConfig({ flags: { ...(flags.stateDir ? { stateDir: flags.stateDir } : {}), ...(flags.config ? { config: flags.config } : {}) }, env });
  let url = flags.url;
  if (!url) {
    const h = config.listen.host;
    const host = h === '0.0.0.0' || h === '::' ? '127.0.0.1' : h.includes(':') ? `[${h}]` : h;
    url = `http://${host}:${config.listen.port}`;
  }
  if (!/^https?:\/\/[^\s/]+\/?$/.test(url)) throw new CrateError('E_CONFIG', `--url: expected http://HOST:PORT, got ${JSON.stringify(url)}`);
  let token = flags.token ?? config.tokens[0];
  if (!token) {
    const file = path.join(config.stateDir, 'token');
    try {
      token = readFileSync(file, 'utf8').trim();
    } catch {
      throw new CrateError('E_CONFIG', `no API token: pass --token, set CRATE_API_TOKEN, or start the operator with \`npm start\` (it saves one to ${file})`);
    }
  }
  return { url: url.replace(/\/$/, ''), token };
}

/** One JSON request to the operator. Rejects with CrateError E_CLIENT when it cannot be reached. */
export async function apiRequest(
  t: ClientTarget,
  method: 'GET' | 'POST',
  apiPath: string,
  body?: unknown,
  timeoutMs = 30_000,
): Promise<{ status: number; body: unknown }> {
  let res;
  try {
    res = await request(`${t.url}${apiPath}`, {
      method,
      headers: { authorization: `Bearer ${t.token}`, ...(body === undefined ? {} : { 'content-type': 'application/json' }) },
      ...(body === undefined ? {} : { body: JSON.stringify(body) }),
      headersTimeout: timeoutMs,
      bodyTimeout: timeoutMs,
      signal: AbortSignal.timeout(timeoutMs),
    });
  } catch (err) {
    throw new CrateError('E_CLIENT', `cannot reach the operator at ${t.url}: ${err instanceof Error ? err.message : String(err)}`, { cause: err });
  }
  const text = await res.body.text();
  let parsed: unknown = text;
  try {
    parsed = text.length > 0 ? JSON.parse(text) : null;
  } catch {
    // Not JSON (should not happen with this API): keep the text for the error message.
  }
  return { status: res.statusCode, body: parsed };
}

/** The API's error body as one line (`E_CODE: message`), or the raw answer. */
export function errorLine(status: number, body: unknown): string {
  const e = (body as { error?: { code?: string; message?: string; details?: { fields?: { field: string; reason: string }[] } } } | null)?.error;
  if (e?.code) {
    const fields = e.details?.fields?.map((f) => `\n  ${f.field}: ${f.reason}`).join('') ?? '';
    return `HTTP ${status} ${e.code}: ${e.message ?? ''}${fields}`;
  }
  return `HTTP ${status}: ${typeof body === 'string' ? body.slice(0, 500) : JSON.stringify(body)}`;
}

/** One server-sent event. */
export interface SseEvent {
  event: string;
  data: string;
  id?: string;
  retry?: number;
}

/**
 * Incremental parser of a text/event-stream (WHATWG): feed chunks, get complete events. Comments
 * (`: keep-alive`) are dropped; a `retry:` line alone yields an event with `retry` and no data.
 */
export class SseParser {
  private buffer = '';
  private cur: { event?: string; data: string[]; id?: string; retry?: number } = { data: [] };

  push(chunk: string): SseEvent[] {
    this.buffer += chunk;
    const out: SseEvent[] = [];
    for (;;) {
      const nl = this.buffer.search(/\r\n|\n|\r/);
      if (nl < 0) break;
      // A CR at the end of a chunk may be the first half of a CRLF cut in two: wait for the next byte.
      if (nl === this.buffer.length - 1 && this.buffer[nl] === '\r') break;
      const line = this.buffer.slice(0, nl);
      this.buffer = this.buffer.slice(nl + (this.buffer.startsWith('\r\n', nl) ? 2 : 1));
      if (line === '') {
        const c = this.cur;
        this.cur = { data: [] };
        if (c.data.length > 0 || c.retry !== undefined) {
          out.push({ event: c.event ?? 'message', data: c.data.join('\n'), ...(c.id !== undefined ? { id: c.id } : {}), ...(c.retry !== undefined ? { retry: c.retry } : {}) });
        }
        continue;
      }
      if (line.startsWith(':')) continue;
      const colon = line.indexOf(':');
      const field = colon < 0 ? line : line.slice(0, colon);
      let value = colon < 0 ? '' : line.slice(colon + 1);
      if (value.startsWith(' ')) value = value.slice(1);
      if (field === 'data') this.cur.data.push(value);
      else if (field === 'event') this.cur.event = value;
      else if (field === 'id') this.cur.id = value;
      else if (field === 'retry' && /^[0-9]+$/.test(value)) this.cur.retry = Number(value);
    }
    return out;
  }
}

/**
 * Read one connection of the deployment's event stream, calling `onEvent` for each event, until the
 * server ends it, `signal` aborts, or `idleMs` pass without any byte (keep-alives count). Resolves
 * with the retry delay the server asked for (ms), if any. A 404 rejects with E_NOT_FOUND.
 */
export async function readEvents(
  t: ClientTarget,
  deploymentId: string,
  onEvent: (e: SseEvent) => void,
  opts: { signal?: AbortSignal; idleMs?: number; lastEventId?: string } = {},
): Promise<{ retryMs?: number }> {
  const idleMs = opts.idleMs ?? 60_000;
  let res;
  try {
    res = await request(`${t.url}/v1/app/deploy/${encodeURIComponent(deploymentId)}/events`, {
      method: 'GET',
      headers: { authorization: `Bearer ${t.token}`, accept: 'text/event-stream', ...(opts.lastEventId ? { 'last-event-id': opts.lastEventId } : {}) },
      headersTimeout: idleMs,
      bodyTimeout: idleMs,
      ...(opts.signal ? { signal: opts.signal } : {}),
    });
  } catch (err) {
    throw new CrateError('E_CLIENT', `cannot reach the operator at ${t.url}: ${err instanceof Error ? err.message : String(err)}`, { cause: err });
  }
  if (res.statusCode !== 200) {
    const text = await res.body.text();
    let body: unknown = text;
    try {
      body = JSON.parse(text);
    } catch {
      // keep the text
    }
    throw new CrateError(res.statusCode === 404 ? 'E_NOT_FOUND' : 'E_CLIENT', errorLine(res.statusCode, body));
  }
  const parser = new SseParser();
  let retryMs: number | undefined;
  res.body.setEncoding('utf8');
  try {
    for await (const chunk of res.body) {
      for (const e of parser.push(chunk as string)) {
        if (e.retry !== undefined) retryMs = e.retry;
        if (e.data !== '' || e.retry === undefined) onEvent(e);
      }
    }
  } catch (err) {
    // An aborted, timed-out or cut stream ends this connection; the caller decides whether to reconnect.
    const code = (err as { code?: unknown }).code;
    if (!opts.signal?.aborted && !(typeof code === 'string' && (code.startsWith('UND_ERR') || code === 'ECONNRESET' || code === 'ABORT_ERR'))) throw err;
  }
  return retryMs === undefined ? {} : { retryMs };
}
