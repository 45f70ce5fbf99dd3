/**
 * The HTTP API as a fastify instance built from its dependencies (fastify's demo-app style):
 * the server file only listens and shuts down; tests use `app.inject()`.
 */
import Fastify, { type FastifyInstance } from 'fastify';
import type { OperatorConfig } from '../config.ts';

/** Reachability of the three components the operator drives. */
export interface BackendStatus {
  systemd: { reachable: boolean; detail: string };
  docker: { reachable: boolean; detail: string };
  caddy: { reachable: boolean; detail: string };
}

export interface AppDeps {
  config: OperatorConfig;
  /** Checks the components; called by `/healthz`. Must answer within its own deadline. */
  checkBackends: () => Promise<BackendStatus>;
  /** Logger settings or `false` (tests). */
  logger?: boolean | object;
}

export async function buildApp(deps: AppDeps): Promise<FastifyInstance> {
  const app = Fastify({ logger: deps.logger ?? false, bodyLimit: 1024 * 1024 });

  app.get('/healthz', async () => {
    const backends = await deps.checkBackends();
    return { status: 'ok', server_id: deps.config.serverId, backends };
  });

  await app.ready();
  return app;
}
