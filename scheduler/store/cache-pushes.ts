/** SQL for `cache_pushes`: who pushed each cache path (a token's name) and with which NarHash. */
import type { Queryable } from './db.js';

export interface CachePush {
  path: string;
  nar_hash: string;
  pushed_by: string;
  pushed_at: Date;
}

/**
 * Claims a path for an upload before it is published: records it unless some upload claimed it
 * first, and returns the NarHash of the first claim. Coordinators sharing a cache agree through this
 * row on which of two different uploads of one path wins, whatever their storage can promise.
 */
export async function claimPush(
  q: Queryable,
  p: { path: string; narHash: string; pushedBy: string },
): Promise<string> {
  const [inserted] = await q.query<{ nar_hash: string }>(
    `INSERT INTO cache_pushes (path, nar_hash, pushed_by) VALUES ($1, $2, $3)
     ON CONFLICT (path) DO NOTHING RETURNING nar_hash`,
    [p.path, p.narHash, p.pushedBy],
  );
  if (inserted) return inserted.nar_hash;
  // Another upload's row: read in a statement of its own, whose snapshot sees that commit.
  const held = await getPush(q, p.path);
  if (!held) throw new Error(`the cache push of ${p.path} was neither recorded nor found`);
  return held.nar_hash;
}

export async function getPush(q: Queryable, path: string): Promise<CachePush | null> {
  const [row] = await q.query<CachePush>('SELECT * FROM cache_pushes WHERE path = $1', [path]);
  return row ?? null;
}
