/**
 * The database handle: one small interface over two engines, PostgreSQL through `pg` (DATABASE_URL)
 * and embedded PGlite (a data directory). Same SQL dialect, same migrations, same queries.
 */
import { mkdirSync } from 'node:fs';
import pg from 'pg';
import { FolderInUseError, lockFolder } from '../../lib/pid-lock.js';
import { MxcError } from '../errors.js';

export interface Queryable {
  /**
   * Runs one parameterised statement and returns its rows. `name` makes it a prepared statement on
   * PostgreSQL (parsed once per connection; after five runs PostgreSQL may keep a generic plan), so it
   * must always go with the same text, and suits only statements whose best plan does not depend on
   * the parameters (array sizes, say). PGlite ignores it.
   */
  query<T = Record<string, unknown>>(sql: string, params?: readonly unknown[], name?: string): Promise<T[]>;
  /** Runs a script of several statements without parameters (migrations). */
  exec(sql: string): Promise<void>;
}

export interface Db extends Queryable {
  readonly engine: 'postgres' | 'pglite';
  /** Runs `fn` in one transaction; rolls back when it throws. */
  tx<T>(fn: (q: Queryable) => Promise<T>): Promise<T>;
  /**
   * LISTENs on a channel (a dedicated connection on PostgreSQL, re-established when lost). A wake-up
   * only: notifications are lost while nobody listens, so callers also poll. Returns an unlisten.
   */
  listen(channel: string, onNotify: (payload: string) => void): Promise<() => Promise<void>>;
  close(): Promise<void>;
}

// Bigint (int8) and numeric come back as strings from pg by default; our counters fit in a double.
pg.types.setTypeParser(20, (v) => Number(v));
pg.types.setTypeParser(1700, (v) => Number(v));

/** Network errors of a connection to the database that cannot be made, or was lost. */
const CONNECTION_ERRNOS = new Set([
  'ECONNREFUSED',
  'ECONNRESET',
  'ENOTFOUND',
  'EAI_AGAIN',
  'ETIMEDOUT',
  'EHOSTUNREACH',
  'ENETUNREACH',
]);
/** SQLSTATEs of a server that is going away or not taking connections (class 08: connection exception). */
const UNAVAILABLE_SQLSTATES = new Set(['57P01', '57P02', '57P03', '53300']);

/**
 * Whether `err` says the database cannot be reached now (refused, lost, shutting down, full), rather
 * than that a statement failed: the request or work may succeed once it is back.
 */
export function isDatabaseUnavailable(err: unknown, depth = 0): boolean {
  if (!err || typeof err !== 'object' || depth > 4) return false;
  const e = err as { code?: unknown; message?: unknown; errors?: unknown; cause?: unknown };
  const code = typeof e.code === 'string' ? e.code : '';
  if (CONNECTION_ERRNOS.has(code) || UNAVAILABLE_SQLSTATES.has(code) || code.startsWith('08')) return true;
  // pg's own words for a connection that ended, or that the pool could not hand out in time.
  const message = typeof e.message === 'string' ? e.message : '';
  if (
    /^Connection terminated|timeout exceeded when trying to connect|is not queryable|^Query read timeout/.test(
      message,
    )
  )
    return true;
  // Several addresses refused (localhost: ::1 and 127.0.0.1) come as one AggregateError.
  if (Array.isArray(e.errors) && e.errors.some((x) => isDatabaseUnavailable(x, depth + 1))) return true;
  return isDatabaseUnavailable(e.cause, depth + 1);
}

/** PostgreSQL's refusal of a prepared statement whose result columns a schema change altered. */
function isStalePreparedStatement(err: unknown): boolean {
  const e = err as { code?: string; message?: string };
  return e.code === '0A000' && /cached plan must not change result type/.test(e.message ?? '');
}

/** How long opening a connection to PostgreSQL may take. */
export const CONNECT_TIMEOUT_MS = 5000;
/**
 * How long one statement may wait for PostgreSQL's answer (the longest here: a 10,000-placement apply,
 * well under a second, or a migration).
 */
export const QUERY_TIMEOUT_MS = 60_000;

/** Query parameters of a connection string that carry a secret (pg reads `?password=` as the user info's). */
const SECRET_PARAMS = ['password', 'sslpassword'];

/** A connection string with its password left out, in the user info or the query (for messages and logs). */
export function urlWithoutPassword(url: string): string {
  try {
    const u = new URL(url);
    const secrets = SECRET_PARAMS.filter((p) => u.searchParams.has(p));
    if (!u.password && secrets.length === 0) return url;
    u.password = '';
    for (const p of secrets) u.searchParams.set(p, '***');
    return u.toString();
  } catch {
    // Not a URL the WHATWG parser reads: drop whatever sits between the user's colon and the '@', and
    // every secret parameter's value.
    return url
      .replace(/^([^:/]+:\/\/[^:@/]*):[^@]*@/, '$1@')
      .replace(/([?&](?:ssl)?password=)[^&]*/gi, '$1***');
  }
}

/** Why a connection failed, in pg's or the kernel's words (several addresses tried: each of them). */
function describeConnectError(err: unknown): string {
  const e = err as { message?: string; code?: string; errors?: unknown[] };
  if (Array.isArray(e.errors) && e.errors.length)
    return e.errors.map((x) => (x as Error).message ?? String(x)).join('; ');
  return e.message || e.code || String(err);
}

/** Opens PostgreSQL at `url`. */
export async function openPostgres(url: string, opts: { max?: number } = {}): Promise<Db> {
  const pool = new pg.Pool({
    connectionString: url,
    max: opts.max ?? 10,
    // A database that stops answering without closing the connection (a network black hole, a hung
    // proxy or failover address) held every query, /healthz included, with no end: a connection is
    // given CONNECT_TIMEOUT_MS to open, a statement QUERY_TIMEOUT_MS to answer (then its connection is
    // dropped), and the kernel probes idle connections.
    connectionTimeoutMillis: CONNECT_TIMEOUT_MS,
    query_timeout: QUERY_TIMEOUT_MS,
    keepAlive: true,
    keepAliveInitialDelayMillis: 10_000,
    // A coordinator cut off mid-transaction would hold its row locks (nodes, the lease) against the
    // others until its TCP connection died; the server ends such a session instead.
    idle_in_transaction_session_timeout: QUERY_TIMEOUT_MS,
  });
  pool.on('error', () => {
    // An idle client lost its connection; the pool replaces it. Queries report their own errors.
  });
  try {
    await pool.query('SELECT 1');
  } catch (err) {
    await pool.end().catch(() => {});
    // A start against a database that cannot be reached (down, a wrong host, port, name or password)
    // is said plainly, naming it without its password, not shown as a crash with a stack trace.
    throw new MxcError(
      'DATABASE_UNREACHABLE',
      503,
      `the database at ${urlWithoutPassword(url)} is unreachable: ${describeConnectError(err)}`,
      undefined,
      { cause: err },
    );
  }
  return {
    engine: 'postgres',
    async query<T>(sql: string, params: readonly unknown[] = [], name?: string) {
      if (!name) return (await pool.query(sql, params as unknown[])).rows as T[];
      try {
        return (await pool.query({ name, text: sql, values: params as unknown[] })).rows as T[];
      } catch (err) {
        // A migration changed a table under a statement prepared on this connection (a rolling
        // upgrade): PostgreSQL refuses that statement from then on, so it runs unprepared instead.
        if (!isStalePreparedStatement(err)) throw err;
        return (await pool.query(sql, params as unknown[])).rows as T[];
      }
    },
    async exec(sql: string) {
      await pool.query(sql);
    },
    async tx<T>(fn: (q: Queryable) => Promise<T>): Promise<T> {
      // PostgreSQL ends one of two transactions that wait on each other (a deadlock: a stop moving a
      // job's workloads while a placement pass holds their nodes, found by test/scheduler/job-races);
      // that one is run again, whole, as the PostgreSQL manual advises, a few times at most.
      for (let attempt = 1; ; attempt++) {
        try {
          return await once(fn);
        } catch (err) {
          const code = (err as { code?: unknown }).code;
          if ((code !== '40P01' && code !== '40001') || attempt >= TX_ATTEMPTS) throw err;
          await new Promise((r) => setTimeout(r, Math.random() * 20 * attempt));
        }
      }
    },
    listen: (channel, onNotify) => listenPostgres(url, channel, onNotify),
    async close() {
      if (!pool.ended) await pool.end();
    },
  };

  async function once<T>(fn: (q: Queryable) => Promise<T>): Promise<T> {
    const client = await pool.connect();
    // A checked-out client has no pool listener: a connection lost between two statements (server
    // restart, pg_terminate_backend) would be an uncaught 'error'. It fails the transaction instead,
    // and the client is destroyed, not returned to the pool.
    let lost: Error | undefined;
    const onLost = (err: Error) => {
      lost = err;
    };
    client.on('error', onLost);
    try {
      await client.query('BEGIN');
      const q: Queryable = {
        // Unprepared inside a transaction: a statement refused there (see isStalePreparedStatement)
        // would abort the whole transaction.
        async query<R>(sql: string, params: readonly unknown[] = []) {
          return (await client.query(sql, params as unknown[])).rows as R[];
        },
        async exec(sql: string) {
          await client.query(sql);
        },
      };
      const out = await fn(q);
      await client.query('COMMIT');
      return out;
    } catch (err) {
      // A connection that timed out or broke is dropped, not handed to the next transaction.
      if (isDatabaseUnavailable(err)) lost ??= err as Error;
      else await client.query('ROLLBACK').catch(() => {});
      throw err;
    } finally {
      client.off('error', onLost);
      client.release(lost);
    }
  }
}

/** How many times a transaction PostgreSQL ended for a deadlock or a serialization failure is run. */
const TX_ATTEMPTS = 4;

/** A dedicated client for LISTEN (pooled clients cannot keep one), reconnecting after errors. */
async function listenPostgres(
  url: string,
  channel: string,
  onNotify: (payload: string) => void,
): Promise<() => Promise<void>> {
  let client: pg.Client | null = null;
  let stopped = false;
  let retry: NodeJS.Timeout | null = null;
  const connect = async () => {
    const c = new pg.Client({ connectionString: url });
    c.on('notification', (n) => {
      if (n.channel === channel) onNotify(n.payload ?? '');
    });
    c.on('error', () => {
      if (client === c) client = null;
      void c.end().catch(() => {});
      if (!stopped && !retry) retry = setTimeout(reconnect, 1000);
    });
    await c.connect();
    await c.query(`LISTEN ${pg.escapeIdentifier(channel)}`);
    if (stopped) {
      await c.end().catch(() => {});
      return;
    }
    client = c;
  };
  const reconnect = () => {
    retry = null;
    connect().catch(() => {
      if (!stopped && !retry) retry = setTimeout(reconnect, 1000);
    });
  };
  await connect();
  return async () => {
    stopped = true;
    if (retry) clearTimeout(retry);
    await client?.end().catch(() => {});
    client = null;
  };
}

/** Holds `dir` for this process (see lib/pid-lock.ts); a folder another one holds is DATA_DIR_IN_USE. */
export async function lockDataFolder(dir: string): Promise<() => Promise<void>> {
  try {
    return await lockFolder(dir);
  } catch (err) {
    if (err instanceof FolderInUseError)
      throw new MxcError('DATA_DIR_IN_USE', 409, err.message, { pid: err.pid }, { cause: err });
    throw err;
  }
}

/** Opens (creating when needed) an embedded PGlite database in `dir`, or in memory when dir is null. */
export async function openPglite(dir: string | null): Promise<Db> {
  const { PGlite } = await import('@electric-sql/pglite');
  if (dir) mkdirSync(dir, { recursive: true });
  // PGlite is one process's database: a second coordinator (or `mxc up`) on the same data dir wrote
  // into it beside the first, both leading with one id.
  const unlock = dir ? await lockDataFolder(dir) : async () => {};
  // int8 and numeric as numbers, as with pg above.
  const parsers = { 20: (v: string) => Number(v), 1700: (v: string) => Number(v) };
  let db: InstanceType<typeof PGlite>;
  try {
    db = dir ? new PGlite(dir, { parsers }) : new PGlite({ parsers });
    await db.waitReady;
  } catch (err) {
    await unlock();
    throw err;
  }
  const wrap = (q: {
    query: (s: string, p?: unknown[]) => Promise<{ rows: unknown[] }>;
    exec: (s: string) => Promise<unknown>;
  }): Queryable => ({
    async query<T>(sql: string, params: readonly unknown[] = []) {
      const r = await q.query(sql, params as unknown[]);
      return r.rows as T[];
    },
    async exec(sql: string) {
      await q.exec(sql);
    },
  });
  return {
    engine: 'pglite',
    ...wrap(db),
    async tx<T>(fn: (q: Queryable) => Promise<T>): Promise<T> {
      return db.transaction(async (t) => fn(wrap(t)));
    },
    async listen(channel, onNotify) {
      const unlisten = await db.listen(channel, onNotify);
      return async () => {
        if (!db.closed) await unlisten();
      };
    },
    async close() {
      if (!db.closed) await db.close();
      await unlock();
    },
  };
}

/** PostgreSQL when a URL is given, else PGlite in `dataDir/db`. */
export async function openDb(opts: {
  databaseUrl?: string;
  dataDir?: string | null;
  poolSize?: number;
}): Promise<Db> {
  if (opts.databaseUrl) return openPostgres(opts.databaseUrl, { max: opts.poolSize });
  return openPglite(opts.dataDir ? `${opts.dataDir}/db` : null);
}
