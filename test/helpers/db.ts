/**
 * Test databases: a migrated template database on the real PostgreSQL server, cloned per test (fast and
 * isolated), and in-memory PGlite for the same suites. `ENGINES` lists what a suite runs on.
 */
import { createHash, randomBytes } from 'node:crypto';
import pg from 'pg';
import { type Db, openPglite, openPostgres } from '../../scheduler/store/db.js';
import { loadMigrations, migrate } from '../../scheduler/store/migrate.js';

export const PG_ADMIN_URL = process.env.MXC_TEST_PG_URL ?? 'postgres://postgres@127.0.0.1:5432/postgres';
// One template per set of migrations, migrated once and cloned per test. Keyed by the migrations' content,
// so concurrent runs share it and a changed migration gets a new one; old ones are harmless leftovers.
const TEMPLATE = `mxc_tpl_${createHash('sha256')
  .update(
    loadMigrations()
      .map((m) => m.sql)
      .join('\u0000'),
  )
  .digest('hex')
  .slice(0, 16)}`;

export const urlFor = (db: string) => {
  const u = new URL(PG_ADMIN_URL);
  u.pathname = `/${db}`;
  return u.toString();
};

async function admin<T>(fn: (c: pg.Client) => Promise<T>): Promise<T> {
  const c = new pg.Client({ connectionString: PG_ADMIN_URL });
  await c.connect();
  try {
    return await fn(c);
  } finally {
    await c.end();
  }
}

let templateReady: Promise<void> | null = null;

/** Creates (once per run, under an advisory lock shared by parallel workers) the migrated template. */
function ensureTemplate(): Promise<void> {
  templateReady ??= admin(async (c) => {
    await c.query('SELECT pg_advisory_lock(727274999)');
    try {
      const exists = await c.query('SELECT 1 FROM pg_database WHERE datname = $1', [TEMPLATE]);
      if (exists.rowCount) return;
      await c.query(`CREATE DATABASE ${TEMPLATE}`);
      const db = await openPostgres(urlFor(TEMPLATE), { max: 1 });
      await migrate(db);
      await db.close();
    } finally {
      await c.query('SELECT pg_advisory_unlock(727274999)');
    }
  });
  return templateReady;
}

/** A fresh, migrated PostgreSQL database; returns its URL. Dropped by `dropPostgresDb`. */
export async function createPostgresDb(): Promise<{ url: string; name: string }> {
  await ensureTemplate();
  const name = `mxc_test_${randomBytes(6).toString('hex')}`;
  await admin((c) => c.query(`CREATE DATABASE ${name} TEMPLATE ${TEMPLATE}`));
  return { url: urlFor(name), name };
}

export async function dropPostgresDb(name: string): Promise<void> {
  await admin((c) => c.query(`DROP DATABASE IF EXISTS ${name} WITH (FORCE)`));
}

export type Engine = 'postgres' | 'pglite';
export const ENGINES: Engine[] = ['pglite', 'postgres'];

/** Opens a fresh migrated database on the engine; `close()` also drops it. */
export async function freshDb(engine: Engine): Promise<Db & { url?: string }> {
  if (engine === 'pglite') {
    const db = await openPglite(null);
    await migrate(db);
    return db;
  }
  const { url, name } = await createPostgresDb();
  const db = await openPostgres(url);
  return {
    ...db,
    url,
    engine: 'postgres',
    query: db.query,
    exec: db.exec,
    tx: db.tx,
    async close() {
      await db.close();
      await dropPostgresDb(name);
    },
  };
}

let pgliteTemplate: Promise<string> | null = null;

/**
 * A migrated PGlite data directory, made once per worker and copied per test: a PGlite initdb costs
 * seconds, a copy of its directory milliseconds.
 */
export async function seedPgliteDataDir(dataDir: string): Promise<void> {
  const { cp, mkdtemp } = await import('node:fs/promises');
  const { tmpdir } = await import('node:os');
  const { join } = await import('node:path');
  pgliteTemplate ??= (async () => {
    const dir = join(await mkdtemp(join(tmpdir(), 'mxc-pglite-tpl-')), 'db');
    const db = await openPglite(dir);
    await migrate(db);
    await db.close();
    return dir;
  })();
  await cp(await pgliteTemplate, join(dataDir, 'db'), { recursive: true });
}
