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
 * Claims paths for an upload before they are published: records each unless some upload claimed it
 * first, and returns, for each, the NarHash of the first claim. Coordinators sharing a cache agree
 * through these rows on which of two different uploads of one path wins, whatever their storage can
 * promise. One statement for a whole group of a batch upload (and one more to read the paths another
 * upload holds), instead of one or two per path.
 *
 * A claim older than `ttlMs` is taken over by a different upload. That is safe because an upload only
 * gets here for a path whose narinfo the cache does not hold (the upload's first check refuses another
 * NarHash of a published path), and publishing never replaces a narinfo: a claim taken over is one
 * whose narinfo was never published, and one that was published keeps its path whatever its age.
 */
export async function claimPushes(
  q: Queryable,
  pushes: readonly { path: string; narHash: string; pushedBy: string }[],
  ttlMs = CLAIM_TTL_MS,
): Promise<string[]> {
  if (pushes.length === 0) return [];
  // Each path once (a row cannot be claimed twice in one statement), in path order: two uploads
  // claiming overlapping paths lock their rows in the same order, so they wait instead of deadlocking.
  const rows = [...new Map(pushes.map((p) => [p.path, p])).values()].sort((a, b) =>
    a.path < b.path ? -1 : a.path > b.path ? 1 : 0,
  );
  const won = new Map<string, string>();
  const inserted = await q.query<{ path: string; nar_hash: string }>(
    `INSERT INTO cache_pushes (path, nar_hash, pushed_by)
     SELECT * FROM unnest($1::text[], $2::text[], $3::text[])
     ON CONFLICT (path) DO UPDATE SET nar_hash = EXCLUDED.nar_hash, pushed_by = EXCLUDED.pushed_by,
       pushed_at = now()
     WHERE cache_pushes.nar_hash <> EXCLUDED.nar_hash
       AND cache_pushes.pushed_at < now() - $4::double precision * interval '1 millisecond'
     RETURNING path, nar_hash`,
    [rows.map((r) => r.path), rows.map((r) => r.narHash), rows.map((r) => r.pushedBy), ttlMs],
  );
  for (const r of inserted) won.set(r.path, r.nar_hash);
  const others = rows.filter((r) => !won.has(r.path)).map((r) => r.path);
  if (others.length > 0) {
    // Other uploads' rows: read in a statement of its own, whose snapshot sees their commits.
    const held = await q.query<{ path: string; nar_hash: string }>(
      'SELECT path, nar_hash FROM cache_pushes WHERE path = ANY($1::text[])',
      [others],
    );
    for (const r of held) won.set(r.path, r.nar_hash);
  }
  return pushes.map((p) => {
    const first = won.get(p.path);
    if (first === undefined) throw new Error(`the cache push of ${p.path} was neither recorded nor found`);
    return first;
  });
}

export async function getPush(q: Queryable, path: string): Promise<CachePush | null> {
  const [row] = await q.query<CachePush>('SELECT * FROM cache_pushes WHERE path = $1', [path]);
  return row ?? null;
}
