/** SQL for `cache_pushes`: who pushed each cache path (a token's name) and with which NarHash. */
import type { Queryable } from './db.js';

export interface CachePush {
  path: string;
  nar_hash: string;
  pushed_by: string;
  pushed_at: Date;
}

/**
 * How long a claim stands against a different upload of its path. A claim is made right before its
 * narinfo is published (seconds at most); one older than this whose narinfo was never published (the
 * publish failed, or its coordinator died) must not refuse the path for ever.
 */
export const CLAIM_TTL_MS = 10 * 60_000;

/**
 * Claims a path for an upload before it is published: records it unless some upload claimed it
 * first, and returns the NarHash of the first claim. Coordinators sharing a cache agree through this
 * row on which of two different uploads of one path wins, whatever their storage can promise.
 *
 * A claim older than `ttlMs` is taken over by a different upload. That is safe because an upload only
 * gets here for a path whose narinfo the cache does not hold (the upload's first check refuses another
 * NarHash of a published path), and publishing never replaces a narinfo: a claim taken over is one
 * whose narinfo was never published, and one that was published keeps its path whatever its age.
 */
export async function claimPush(
  q: Queryable,
  p: { path: string; narHash: string; pushedBy: string },
  ttlMs = CLAIM_TTL_MS,
): Promise<string> {
  const [inserted] = await q.query<{ nar_hash: string }>(
    `INSERT INTO cache_pushes (path, nar_hash, pushed_by) VALUES ($1, $2, $3)
     ON CONFLICT (path) DO UPDATE SET nar_hash = EXCLUDED.nar_hash, pushed_by = EXCLUDED.pushed_by,
       pushed_at = now()
     WHERE cache_pushes.nar_hash <> EXCLUDED.nar_hash
       AND cache_pushes.pushed_at < now() - $4::double precision * interval '1 millisecond'
     RETURNING nar_hash`,
    [p.path, p.narHash, p.pushedBy, ttlMs],
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
