/** Starts a real coordinator (listening on 127.0.0.1:0) on a fresh database of the given engine. */

import { mkdtemp, rm } from 'node:fs/promises';
import type { Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Logger } from 'pino';
import type { Tokens } from '../../scheduler/api/auth.js';
import type { FlappingPolicy } from '../../scheduler/core/restart.js';
import type { Clock } from '../../scheduler/engine/clock.js';
import {
  type CoordinatorServer,
  type CoordinatorServerOptions,
  startCoordinator,
} from '../../scheduler/server.js';
import type { JobSpecInput } from '../../spec/job.js';
import { createPostgresDb, dropPostgresDb, type Engine, seedPgliteDataDir } from './db.js';
import { testLogger } from './logger.js';

export interface TestCoordinator extends CoordinatorServer {
  dataDir: string;
  /** The PostgreSQL database made for this coordinator (engine postgres). */
  databaseUrl?: string;
  dbName?: string;
  /** fetch against the coordinator, with JSON in and out. */
  api: <T = any>(
    method: string,
    path: string,
    body?: unknown,
    headers?: Record<string, string>,
  ) => Promise<{ status: number; body: T }>;
  stop(): Promise<void>;
}

export async function startTestCoordinator(
  engine: Engine,
  opts: {
    tokens?: Tokens;
    heartbeatTtlMs?: number;
    /** How often agents beat and ping (default: a third of the TTL, at most 5 s). */
    heartbeatIntervalMs?: number;
    flapping?: FlappingPolicy;
    dataDir?: string;
    databaseUrl?: string;
    port?: number;
    host?: string;
    insecure?: boolean;
    /** Where the coordinator logs (default: silent unless MXC_TEST_LOG). */
    logger?: Logger;
    /** Cache storage and key settings (MXC_CACHE_DIR, MXC_CACHE_S3_URL, MXC_CACHE_KEY_FILE). */
    cache?: Pick<CoordinatorServerOptions, 'cacheDir' | 'cacheS3' | 'cacheKeyFile'>;
    /** A manual clock drives liveness, grace, cron, rollouts and retention (no sleeps in tests). */
    clock?: Clock;
    /** The leader lease (MXC_LEADER_LEASE_MS); a long one keeps leading through big manual-clock jumps. */
    leaderLeaseMs?: number;
    /** The newest lines of a workload's log kept (MXC_LOG_LINES_KEPT). */
    logLinesKept?: number;
    /** Connections taken at once, and from one address (default: as the open-file limit allows, half). */
    maxConnections?: number;
    maxConnectionsPerAddress?: number;
    /** MXC_PREEMPTION_DELAY in ms (null: off; default 180 s). */
    preemptionDelayMs?: number | null;
  } = {},
): Promise<TestCoordinator> {
  const dataDir = opts.dataDir ?? (await mkdtemp(join(tmpdir(), 'mxc-coord-')));
  let databaseUrl = opts.databaseUrl;
  let dbName: string | undefined;
  if (engine === 'pglite' && !opts.dataDir) await seedPgliteDataDir(dataDir);
  if (engine === 'postgres' && !databaseUrl) {
    const created = await createPostgresDb();
    databaseUrl = created.url;
    dbName = created.name;
  }
  const server = await startCoordinator({
    port: opts.port ?? 0,
    host: opts.host,
    insecure: opts.insecure,
    clock: opts.clock,
    leaderLeaseMs: opts.leaderLeaseMs,
    logLinesKept: opts.logLinesKept,
    maxConnections: opts.maxConnections,
    maxConnectionsPerAddress: opts.maxConnectionsPerAddress,
    preemptionDelayMs: opts.preemptionDelayMs,
    dataDir,
    databaseUrl,
    tokens: opts.tokens ?? {},
    logger: opts.logger ?? testLogger(),
    heartbeatTtlMs: opts.heartbeatTtlMs ?? 30_000,
    heartbeatIntervalMs: opts.heartbeatIntervalMs,
    // Aurora's back-off in miniature: restarts of flapping tasks wait 50 ms, doubling up to 400 ms.
    flapping: opts.flapping ?? { thresholdMs: 60_000, initialDelayMs: 50, maxDelayMs: 400 },
    ...opts.cache,
  });
  const api: TestCoordinator['api'] = async (method, path, body, headers = {}) => {
    const res = await fetch(`${server.url}${path}`, {
      method,
      headers: { ...(body !== undefined ? { 'content-type': 'application/json' } : {}), ...headers },
      body: body === undefined ? undefined : typeof body === 'string' ? body : JSON.stringify(body),
    });
    const text = await res.text();
    let parsed: unknown = text;
    try {
      parsed = JSON.parse(text);
    } catch {
      // not JSON (metrics, cache files)
    }
    return { status: res.status, body: parsed as any };
  };
  return {
    ...server,
    dataDir,
    databaseUrl,
    dbName,
    api,
    async stop() {
      await server.close();
      if (dbName && !opts.databaseUrl) await dropPostgresDb(dbName);
      if (!opts.dataDir) await rm(dataDir, { recursive: true, force: true });
    },
  };
}

/** A valid job spec that needs no nix (plain command lines, no closure). */
export function plainJob(over: Partial<JobSpecInput> = {}): JobSpecInput {
  return {
    name: 'web',
    role: 'www',
    cluster: 'test',
    environment: 'prod',
    service: true,
    task: {
      name: 'web',
      processes: [{ name: 'web', cmdline: 'sleep 1000' }],
      resources: { cpu: 1, ram: 512 * 1024 * 1024, disk: 100 * 1024 * 1024 },
    },
    ...over,
  };
}

/** Client tokens made through the API with the admin token, by name: `{ ci: 'push', viewer: 'read' }`. */
export async function clientTokens(
  c: TestCoordinator,
  admin: string,
  scopes: Record<string, 'read' | 'push' | 'admin'>,
): Promise<Record<string, string>> {
  const out: Record<string, string> = {};
  for (const [name, scope] of Object.entries(scopes)) {
    const r = await c.api(
      'POST',
      '/api/tokens',
      { name, kind: 'client', scope },
      { authorization: `Bearer ${admin}` },
    );
    if (r.status !== 201) throw new Error(`POST /api/tokens ${name}: ${r.status} ${JSON.stringify(r.body)}`);
    out[name] = r.body.data.token;
  }
  return out;
}

/**
 * Runs `open` (a client connecting to `c`) and returns what it returns, with the one connection the
 * coordinator accepted meanwhile: its own end of the socket (paused when it stops reading, say).
 */
export async function acceptedWhile<T>(c: TestCoordinator, open: () => Promise<T>): Promise<[T, Socket]> {
  const accepted: Socket[] = [];
  const onConnection = (s: Socket) => accepted.push(s);
  c.app.server.on('connection', onConnection);
  let value: T;
  try {
    value = await open();
  } finally {
    c.app.server.off('connection', onConnection);
  }
  if (accepted.length !== 1)
    throw new Error(`expected one connection accepted while the client connected, not ${accepted.length}`);
  return [value, accepted[0]!];
}
