/**
 * Starts a coordinator: opens the database (PostgreSQL from DATABASE_URL, else embedded PGlite in the
 * data dir), migrates it, builds the HTTP app and listens. Returns handles for a clean shutdown.
 */
import { randomUUID } from 'node:crypto';
import { existsSync } from 'node:fs';
import { mkdir, readFile, rename, writeFile } from 'node:fs/promises';
import { createServer } from 'node:net';
import { hostname } from 'node:os';
import { join } from 'node:path';
import type { FastifyInstance } from 'fastify';
import type { Logger } from 'pino';
import { MXC_VERSION } from '../lib/version.js';
import type { S3Location } from '../spec/s3-location.js';
import { buildApp } from './api/app.js';
import { Auth, type Tokens } from './api/auth.js';
import { cachedClosure } from './cache/closure.js';
import { cachePlugin, openCacheStore } from './cache/index.js';
import type { CacheCompression } from './cache/ingest.js';
import type { S3Credentials } from './cache/storage-s3.js';
import { Coordinator } from './coordinator.js';
import type { Strategy } from './core/place.js';
import { AURORA_FLAPPING, type FlappingPolicy } from './core/restart.js';
import type { Clock } from './engine/clock.js';
import { errors, MxcError } from './errors.js';
import { LeaderLease, leaseTimings } from './leader-lease.js';
import * as cachePushes from './store/cache-pushes.js';
import * as coordinatorsStore from './store/coordinators.js';
import { type Db, lockDataFolder, openDb } from './store/db.js';
import { migrate } from './store/migrate.js';
import type { RetentionPolicy } from './store/retention.js';
import * as settingsStore from './store/settings.js';
import * as tokensStore from './store/tokens.js';
import { dashboardPlugin } from './ui/index.js';

/** The mxc_settings row holding the cache signing key coordinators on one database share. */
const CACHE_KEY_SETTING = 'cache_signing_key';

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
  /** The binary cache's directory (MXC_CACHE_DIR); default `<dataDir>/cache`. Coordinators may share one. */
  cacheDir?: string;
  /** An S3-compatible bucket for the binary cache instead of the directory (MXC_CACHE_S3_URL). */
  cacheS3?: { location: S3Location; credentials?: S3Credentials };
  /** The cache signing key file (MXC_CACHE_KEY_FILE); unset: one key shared through PostgreSQL. */
  cacheKeyFile?: string;
  /** How the cache stores NARs (MXC_CACHE_COMPRESSION); default `none`. */
  cacheCompression?: CacheCompression;
  /** Leader lease in ms (MXC_LEADER_LEASE seconds); default 15 s, renew deadline 2/3, retry 2/15. */
  leaderLeaseMs?: number;
  /** The URL other coordinators and the cluster status show for this one; default the listen address. */
  advertiseUrl?: string;
  /** Restart back-off for flapping tasks (MXC_*_FLAPPING_*); Aurora's defaults when unset. */
  flapping?: FlappingPolicy;
  /** MXC_PREEMPTION_DELAY in ms; null: never preempt; default 180 s. */
  preemptionDelayMs?: number | null;
  /** PEM files of the certificate chain and key: serve HTTPS (and WSS for agents). */
  tls?: { certFile: string; keyFile: string };
  /** Allow an open API (no client token) on a non-loopback address. */
  insecure?: boolean;
  /** How long and how many ended workloads are kept (MXC_RETENTION_*); 7 days and 100 per job. */
  retention?: RetentionPolicy;
  /** The newest lines of a workload's log kept (MXC_LOG_LINES_KEPT); 100,000 when unset. */
  logLinesKept?: number;
  /** Connections taken at once; default: as the open-file limit allows. */
  maxConnections?: number;
  /** Connections taken from one client address (MXC_MAX_CONNECTIONS_PER_ADDRESS); default half the limit. */
  maxConnectionsPerAddress?: number;
  /** The coordinator's and the lease's clock; the system clock when unset (tests pass a manual one). */
  clock?: Clock;
}

const isLoopbackHost = (h: string) => h === 'localhost' || h === '::1' || /^127\./.test(h);

export interface CoordinatorServer {
  app: FastifyInstance;
  coordinator: Coordinator;
  db: Db;
  url: string;
  close(): Promise<void>;
}

export async function startCoordinator(opts: CoordinatorServerOptions): Promise<CoordinatorServer> {
  const host = opts.host ?? '127.0.0.1';
  // Without a client token anyone who reaches the port controls the cluster: loopback only.
  const openApiRefusal = () =>
    new MxcError(
      'OPEN_API_NOT_LOOPBACK',
      400,
      `refusing to listen on ${host} with an open API (no client token): set MXC_API_TOKEN or MXC_API_TOKEN_FILE, create a token first on 127.0.0.1 (mxc tokens create), or pass --insecure (MXC_INSECURE=1) to accept the risk`,
    );
  const mayBeOpen = opts.tokens.api === undefined && !isLoopbackHost(host) && !opts.insecure;
  // An embedded database not made yet holds no token: refused before anything is made.
  if (mayBeOpen && !opts.databaseUrl && !existsSync(join(opts.dataDir, 'db'))) throw openApiRefusal();
  await mkdir(opts.dataDir, { recursive: true });
  // The data dir holds this coordinator's id (and, unless told otherwise, its cache): two coordinators
  // on one dir would lead with one id and void each other's fencing, on PostgreSQL as on PGlite.
  const unlockDataDir = await lockDataFolder(opts.dataDir);
  let db: Db;
  try {
    // A port in use or an address this machine lacks is said now, not after a database was made and
    // migrated (PGlite: seconds, and a database left in a folder the user may have mistyped).
    await probeListen(opts.port, host);
    db = await openDb({ databaseUrl: opts.databaseUrl, dataDir: opts.dataDir, poolSize: opts.poolSize });
  } catch (err) {
    await unlockDataDir();
    throw err;
  }
  try {
    // Decided on the tokens the database already holds, before it is migrated: a refused start
    // changes nothing.
    if (mayBeOpen && !(await tokensStore.hasStoredClientTokens(db))) throw openApiRefusal();
    const applied = await migrate(db);
    if (applied.length) opts.logger.info({ applied }, 'database migrated');
    const cache = await openCacheStore(opts.dataDir, {
      dir: opts.cacheDir,
      s3: opts.cacheS3,
      keyFile: opts.cacheKeyFile,
      compression: opts.cacheCompression,
      onCorrupt: (p) => opts.logger.error(p, p.message),
      // Coordinators sharing PostgreSQL sign with one key kept there (PGlite has one coordinator).
      sharedKey:
        db.engine === 'postgres'
          ? {
              read: () => settingsStore.getSetting(db, CACHE_KEY_SETTING),
              insertIfAbsent: (secret) => settingsStore.insertSettingIfAbsent(db, CACHE_KEY_SETTING, secret),
            }
          : undefined,
    });
    const auth = new Auth(opts.tokens, db);
    await auth.load();
    if (mayBeOpen && !auth.hasClientTokens()) throw openApiRefusal();
    const tls = opts.tls
      ? { cert: await readFile(opts.tls.certFile), key: await readFile(opts.tls.keyFile) }
      : undefined;
    // Several coordinators share the table: pick up tokens created or revoked elsewhere, within a
    // second, so a token revoked on one coordinator also ends its streams on the others.
    const authReload = setInterval(() => void auth.load().catch(() => {}), 1000);
    authReload.unref();
    const ttl = opts.heartbeatTtlMs ?? 30_000;
    const id = await coordinatorId(opts.dataDir);
    const log = opts.logger.child({ component: 'coordinator', coordinator: id });
    const lease = new LeaderLease(
      db,
      id,
      leaseTimings(opts.leaderLeaseMs),
      opts.logger.child({ component: 'lease', coordinator: id }),
      opts.clock,
    );
    const coordinator = new Coordinator(db, log, {
      id,
      lease,
      heartbeatTtlMs: ttl,
      heartbeatIntervalMs: opts.heartbeatIntervalMs ?? Math.max(50, Math.min(5000, Math.floor(ttl / 3))),
      strategy: opts.strategy ?? 'spread',
      flapping: opts.flapping ?? AURORA_FLAPPING,
      preemptionDelayMs: opts.preemptionDelayMs,
      retention: opts.retention,
      logLinesKept: opts.logLinesKept,
      collectCache: () => cache.collectOrphanNars(),
      clock: opts.clock,
      // A job is accepted only when its closure is complete in the cache (the cache refuses a path
      // whose references it lacks, so present roots mean a complete closure).
      closureOf: async (spec) => {
        const c = await cachedClosure(cache, spec.mxc.closure);
        if (c.missing.length) throw errors.closureIncomplete(c.missing);
        return c.paths;
      },
    });
    const app = await buildApp({
      version: MXC_VERSION,
      coordinator,
      auth,
      tls,
      logger: opts.logger,
      maxConnections: opts.maxConnections,
      maxConnectionsPerAddress: opts.maxConnectionsPerAddress,
      plugins: [
        async (a) => {
          await a.register(cachePlugin, {
            dataDir: opts.dataDir,
            store: cache,
            pusherOf: (req) => req.principal?.name,
            // Recorded before publishing: the first upload of a path wins on every coordinator.
            claimPaths: (pushes) => cachePushes.claimPushes(db, pushes),
            // Access is decided by the app's route hook (config.access on each cache route).
          });
        },
        async (a) => {
          if (opts.ui !== false) await a.register(dashboardPlugin);
        },
      ],
      openHosts: [
        hostname(),
        host,
        ...(opts.advertiseUrl && URL.canParse(opts.advertiseUrl)
          ? [new URL(opts.advertiseUrl).hostname]
          : []),
      ],
      statusExtra: async () => ({
        cache_public_key: cache.key.publicKey,
        cache_paths: await cache.count(),
      }),
    });
    const address = await app.listen({ port: opts.port, host });
    const url = address.replace('[::1]', '127.0.0.1').replace(/^http:/, tls ? 'https:' : 'http:');
    coordinator.opts.url = opts.advertiseUrl ?? url;
    await coordinatorsStore.beatCoordinator(db, id, coordinator.opts.url);
    // The first election round runs before we serve work, so a lone coordinator leads at once.
    await lease.start();
    coordinator.start();
    opts.logger.info({ url, database: db.engine }, 'coordinator listening');
    // Said at every start while it holds: an open API is root on every agent for whoever reaches it.
    if (!auth.hasClientTokens()) {
      opts.logger.warn(
        { url, host },
        isLoopbackHost(host)
          ? 'open API (no client token): every process on this machine, any user’s and any workload’s with network "host", can submit jobs that agents run as root; `mxc tokens create` closes it'
          : 'open API (no client token) on a non-loopback address (--insecure): everyone who reaches it can submit jobs that agents run as root; `mxc tokens create` closes it',
      );
    }
    return {
      app,
      coordinator,
      db,
      url,
      async close() {
        clearInterval(authReload);
        await coordinator.close();
        // Released at once (and NOTIFYed), so another coordinator takes over without waiting.
        await lease.stop();
        await app.close();
        await cache.close().catch(() => {});
        await db.close();
        await unlockDataDir();
      },
    };
  } catch (err) {
    await db.close().catch(() => {});
    await unlockDataDir();
    throw err;
  }
}

/**
 * Binds `host:port` and lets it go at once: the error app.listen would meet later (EADDRINUSE,
 * EADDRNOTAVAIL), met before anything is opened. The real listen still reports a port taken in between.
 */
function probeListen(port: number, host: string): Promise<void> {
  return new Promise((resolve, reject) => {
    const probe = createServer();
    probe.once('error', reject);
    probe.listen({ port, host, exclusive: true }, () => probe.close(() => resolve()));
  });
}

/**
 * This coordinator's id, kept in its data dir (stable across restarts). The data dir's lock makes it
 * one process's; no variable overrides it, since two coordinators with one id void each other's fencing.
 */
async function coordinatorId(dataDir: string): Promise<string> {
  const file = join(dataDir, 'coordinator-id');
  try {
    const id = (await readFile(file, 'utf8')).trim();
    if (id) return id;
  } catch {
    // first start
  }
  const id = randomUUID();
  const tmp = `${file}.${process.pid}.tmp`;
  await writeFile(tmp, `${id}\n`);
  await rename(tmp, file);
  return id;
}
