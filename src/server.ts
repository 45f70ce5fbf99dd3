/**
 * The server file only listens and shuts down (fastify's demo-app style): it takes a built app,
 * listens on the configured address, and on SIGINT/SIGTERM stops accepting, lets in-flight requests
 * finish (with a deadline), runs the caller's shutdown hook, and lets the process exit.
 */
import type { FastifyInstance } from 'fastify';
import type { OperatorConfig } from './config.ts';
import { CrateError, describeError } from './core/errors.ts';

/** A listening server. */
export interface RunningServer {
  /** `http://host:port` actually bound (port 0 resolved). */
  readonly url: string;
  /** Resolves once the server has shut down (after a signal or `close()`). */
  readonly closed: Promise<void>;
  /** Graceful shutdown: stop accepting, finish in-flight requests (deadline), run `onClose`. Idempotent. */
  close(): Promise<void>;
}

/** Options of startServer. */
export interface ServerOptions {
  /** Released after the HTTP server closed (reconciler, records, child components). */
  onClose?: () => Promise<void>;
  /** Install SIGINT/SIGTERM handlers that call close(); default true. */
  handleSignals?: boolean;
  /** Longest wait for in-flight requests before connections are cut; default 10 s. */
  drainMs?: number;
}

/** Listen on `config.listen`. Throws CrateError `E_LISTEN` when the address cannot be bound. */
export async function startServer(app: FastifyInstance, config: OperatorConfig, opts: ServerOptions = {}): Promise<RunningServer> {
  try {
    await app.listen({ host: config.listen.host, port: config.listen.port });
  } catch (err) {
    throw new CrateError('E_LISTEN', `cannot listen on ${config.listen.host}:${config.listen.port}: ${describeError(err).message}`, { cause: err });
  }
  const addr = app.server.address();
  const port = addr && typeof addr === 'object' ? addr.port : config.listen.port;
  const host = config.listen.host.includes(':') ? `[${config.listen.host}]` : config.listen.host;

  let resolveClosed: () => void = () => undefined;
  const closed = new Promise<void>((r) => (resolveClosed = r));
  let closing: Promise<void> | undefined;
  const signals: NodeJS.Signals[] = ['SIGINT', 'SIGTERM'];

  const close = (): Promise<void> => {
    closing ??= (async () => {
      for (const s of signals) process.removeListener(s, onSignal);
      // Idle keep-alive connections would hold close() open; in-flight ones get `drainMs`.
      app.server.closeIdleConnections();
      const cut = setTimeout(() => app.server.closeAllConnections(), opts.drainMs ?? 10_000);
      cut.unref();
      try {
        await app.close();
      } finally {
        clearTimeout(cut);
        try {
          await opts.onClose?.();
        } finally {
          resolveClosed();
        }
      }
    })();
    return closing;
  };

  function onSignal(signal: NodeJS.Signals): void {
    app.log.info({ signal }, 'shutting down');
    close().catch((err: unknown) => {
      app.log.error({ err }, 'shutdown failed');
      process.exitCode = 1;
    });
  }
  if (opts.handleSignals ?? true) for (const s of signals) process.on(s, onSignal);

  return { url: `http://${host}:${port}`, closed, close };
}
