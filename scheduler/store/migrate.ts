/**
 * Applies the numbered `.sql` migrations in `migrations/`, in order, each in its own transaction under a
 * transaction-scoped advisory lock, so two coordinators starting at once both succeed.
 */
import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { repoPath } from '../paths.js';
import type { Db } from './db.js';

const MIGRATION_LOCK = 727_274_001;

export interface Migration {
  id: number;
  name: string;
  sql: string;
}

/** The migrations shipped with mxc, sorted by number. */
export function loadMigrations(dir = repoPath('scheduler', 'store', 'migrations')): Migration[] {
  return readdirSync(dir)
    .filter((f) => /^\d+_.+\.sql$/.test(f))
    .map((f) => ({ id: Number.parseInt(f, 10), name: f, sql: readFileSync(join(dir, f), 'utf8') }))
    .sort((a, b) => a.id - b.id);
}

/** Brings the schema up to date; returns the names of the migrations it applied. */
export async function migrate(db: Db, migrations = loadMigrations()): Promise<string[]> {
  const applied: string[] = [];
  for (const m of migrations) {
    const did = await db.tx(async (q) => {
      await q.query('SELECT pg_advisory_xact_lock($1)', [MIGRATION_LOCK]);
      await q.query(
        'CREATE TABLE IF NOT EXISTS mxc_migrations (id integer PRIMARY KEY, name text NOT NULL, applied_at timestamptz NOT NULL DEFAULT now())',
      );
      const done = await q.query('SELECT 1 FROM mxc_migrations WHERE id = $1', [m.id]);
      if (done.length > 0) return false;
      await q.exec(m.sql);
      await q.query('INSERT INTO mxc_migrations (id, name) VALUES ($1, $2)', [m.id, m.name]);
      return true;
    });
    if (did) applied.push(m.name);
  }
  return applied;
}
