/** SQL for `cache_pushes`: who pushed each cache path (a token's name) and with which NarHash. */
import type { Queryable } from './db.js';

export interface CachePush {
  path: string;
  nar_hash: string;
  pushed_by: string;
  pushed_at: Date;
}

/** Records the first upload of a path; a later identical upload keeps the first record. */
export async function recordPush(
  q: Queryable,
  p: { path: string; narHash: string; pushedBy: string },
): Promise<void> {
  await q.query(
    'INSERT INTO cache_pushes (path, nar_hash, pushed_by) VALUES ($1, $2, $3) ON CONFLICT (path) DO NOTHING',
    [p.path, p.narHash, p.pushedBy],
  );
}

export async function getPush(q: Queryable, path: string): Promise<CachePush | null> {
  const [row] = await q.query<CachePush>('SELECT * FROM cache_pushes WHERE path = $1', [path]);
  return row ?? null;
}
