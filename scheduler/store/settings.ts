/** SQL for `mxc_settings`: cluster-wide values every coordinator on the database shares (the cache signing key). */
import type { Queryable } from './db.js';

export async function getSetting(q: Queryable, name: string): Promise<string | null> {
  const [row] = await q.query<{ value: string }>('SELECT value FROM mxc_settings WHERE name = $1', [name]);
  return row?.value ?? null;
}

/** Stores a value unless one is there already; the first writer wins, the caller reads it back. */
export async function insertSettingIfAbsent(q: Queryable, name: string, value: string): Promise<void> {
  await q.query('INSERT INTO mxc_settings (name, value) VALUES ($1, $2) ON CONFLICT (name) DO NOTHING', [
    name,
    value,
  ]);
}
