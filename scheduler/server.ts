/**
 * Starts a coordinator: opens the database (PostgreSQL from DATABASE_URL, else embedded PGlite in the
 * data dir), migrates it, builds the HTTP app and listens. Returns handles for a clean shutdown.
 */
import { mkdir } from 'node:fs/promises';
import type { FastifyInstance } from 'fastify';
import type { Logger } from 'pino';
import { buildApp } from './api/app.js';
import { Auth, type Tokens } from './api/auth.js';
import { cachedClosure } from './cache/closure.js';
import { cachePlugin, openCacheStore } from './cache/index.js';
import { Coordinator } from './coordinator.js';
import type { Strategy } from './core/place.js';
import { errors } from './errors.js';
import { type Db, openDb } from './store/db.js';
import { migrate } from './store/migrate.js';
import { dashboardPlugin } from './ui/index.js';

export interface CoordinatorServerOptions {
  port: number;
  host?: string;
  dataDir: string;
  databaseUrl?: string;
  tokens: Tokens;
  logger: Logger;
  heartbeatTtlMs?: number;
  heartbeatIntervalMs?: number;
  strategy?: Strategy;
  /** PostgreSQL connections (POOL_SIZE); default 10. */
  poolSize?: number;
  /** Serve the dashboard (MXC_UI_ENABLED); default true. */
  ui?: boolean;
}

export interface CoordinatorServer {
  app: FastifyInstance;
  coordinator: Coordinator;
  db: Db;
  url: string;
  close(): Promise<void>;
}

export async function startCoordinator(opts: CoordinatorServerOptions): Promise<CoordinatorServer> {
  await mkdir(opts.dataDir, { recursive: true });
  const db = await openDb({ databaseUrl: opts.databaseUrl, dataDir: opts.dataDir, poolSize: opts.poolSize });
  try {
    const applied = await migrate(db);
    if (applied.length) opts.logger.info({ applied }, 'database migrated');
    const cache = await openCacheStore(opts.dataDir);
    const auth = new Auth(opts.tokens, db);
    await auth.load();
    // Several coordinators share the table: pick up tokens created or revoked elsewhere, within a
    // second, so a token revoked on one coordinator also ends its streams on the others.
    const authReload = setInterval(() => void auth.load().catch(() => {}), 1000);
    authReload.unref();
    const ttl = opts.heartbeatTtlMs ?? 30_000;
    const coordinator = new Coordinator(db, opts.logger.child({ component: 'coordinator' }), {
      heartbeatTtlMs: ttl,
      heartbeatIntervalMs: opts.heartbeatIntervalMs ?? Math.max(50, Math.min(5000, Math.floor(ttl / 3))),
      strategy: opts.strategy ?? 'spread',
      // A job is accepted only when its closure is complete in the cache (the cache refuses a path
      // whose references it lacks, so present roots mean a complete closure).
      closureOf: async (spec) => {
        const c = await cachedClosure(cache, spec.mxc.closure);
        if (c.missing.length) throw errors.closureIncomplete(c.missing);
        return c.paths;
      },
    });
    const app = await buildApp({
      coordinator,
      auth,
      logger: opts.logger,
      plugins: [
        async (a) => {
          await a.register(cachePlugin, {
            dataDir: opts.dataDir,
            store: cache,
            // Access is decided by the app's route hook (config.access on each cache route).
          });
        },
        async (a) => {
          if (opts.ui !== false) await a.register(dashboardPlugin);
        },
      ],
      statusExtra: async () => ({
        cache_public_key: cache.key.publicKey,
        cache_paths: await cache.count(),
      }),
    });
    const address = await app.listen({ port: opts.port, host: opts.host ?? '127.0.0.1' });
    coordinator.start();
    const url = address.replace('[::1]', '127.0.0.1');
    opts.logger.info({ url, database: db.engine }, 'coordinator listening');
    return {
      app,
      coordinator,
      db,
      url,
      async close() {
        clearInterval(authReload);
        await coordinator.close();
        await app.close();
        await db.close();
      },
    };
  } catch (err) {
    await db.close().catch(() => {});
    throw err;
  }
}
