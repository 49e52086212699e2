/**
 * The coordinator's HTTP app as one fastify plugin tree: infrastructure first (errors, auth, websocket),
 * then the binary cache, then the API routes one file per resource, then the dashboard.
 */
import websocket from '@fastify/websocket';
import Fastify, { type FastifyBaseLogger, type FastifyInstance, LogController } from 'fastify';
import type { Logger } from 'pino';
import type { Coordinator } from '../coordinator.js';
import { errors } from '../errors.js';
import type { Auth } from './auth.js';
import { installErrorHandler } from './error-handler.js';
import { openApiDocument } from './openapi.js';
import { agentSocketRoutes } from './routes/agent-ws.js';
import { clusterRoutes } from './routes/cluster.js';
import { eventRoutes } from './routes/events.js';
import { jobRoutes } from './routes/jobs.js';
import { nodeRoutes } from './routes/nodes.js';
import { tokenRoutes } from './routes/tokens.js';
import { workloadRoutes } from './routes/workloads.js';

export interface AppOptions {
  coordinator: Coordinator;
  auth: Auth;
  logger: Logger;
  /** Largest JSON body accepted (job specs). */
  bodyLimit?: number;
  /** Extra plugins registered after the API (cache, dashboard), given the app. */
  plugins?: ((app: FastifyInstance) => Promise<void>)[];
  /** The coordinator's version, shown in the OpenAPI document. */
  version?: string;
  /** Extra fields for /api/cluster/status (cache key, …). */
  statusExtra?: () => Promise<Record<string, unknown>>;
}

/** Routes reachable without a client token. The agent socket checks its own token. */
const OPEN_ROUTES = new Set(['/healthz', '/api/agent/ws', '/api/openapi.json']);

export async function buildApp(opts: AppOptions): Promise<FastifyInstance> {
  const app = Fastify({
    loggerInstance: opts.logger as FastifyBaseLogger,
    bodyLimit: opts.bodyLimit ?? 4 * 1024 * 1024,
    // Requests are not logged one by one (agents poll and heartbeat); errors are.
    logController: new LogController({ disableRequestLogging: true }),
    // Live streams (events, followed logs) must not hold a shutdown open.
    forceCloseConnections: true,
  });
  installErrorHandler(app);
  await app.register(websocket, { options: { maxPayload: 16 * 1024 * 1024 } });

  app.addHook('onRequest', async (req) => {
    const path = req.url.split('?')[0]!;
    if (!path.startsWith('/api/') && path !== '/metrics') return;
    if (OPEN_ROUTES.has(path) || path.startsWith('/api/cache/')) return;
    // Agents may read what they need with their own token.
    if (opts.auth.isClient(req)) return;
    throw errors.unauthorized('API');
  });

  await app.register(agentSocketRoutes, { coordinator: opts.coordinator, auth: opts.auth });
  await app.register(tokenRoutes, { auth: opts.auth, db: opts.coordinator.db });
  await app.register(jobRoutes, { coordinator: opts.coordinator });
  await app.register(workloadRoutes, { coordinator: opts.coordinator });
  await app.register(nodeRoutes, { coordinator: opts.coordinator });
  await app.register(clusterRoutes, { coordinator: opts.coordinator, extra: opts.statusExtra });
  await app.register(eventRoutes, { coordinator: opts.coordinator });
  const openapi = openApiDocument(opts.version ?? '0.0.0');
  app.get('/api/openapi.json', async () => openapi);
  for (const p of opts.plugins ?? []) await p(app);
  return app;
}
