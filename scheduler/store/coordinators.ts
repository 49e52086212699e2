/** SQL for `mxc_coordinators`: every coordinator beats its row; a silent one is dead (database clock). */
import type { Queryable } from './db.js';

export interface CoordinatorRow {
  id: string;
  url: string;
  started_at: Date;
  last_seen_at: Date;
}

export async function beatCoordinator(q: Queryable, id: string, url: string): Promise<void> {
  await q.query(
    `INSERT INTO mxc_coordinators (id, url) VALUES ($1, $2)
     ON CONFLICT (id) DO UPDATE SET url = EXCLUDED.url, last_seen_at = now()`,
    [id, url],
  );
}

/** Coordinators seen within `withinMs` (the live ones), oldest first. */
export async function listCoordinators(q: Queryable, withinMs: number): Promise<CoordinatorRow[]> {
  return q.query<CoordinatorRow>(
    `SELECT * FROM mxc_coordinators WHERE last_seen_at > now() - $1 * interval '1 millisecond'
     ORDER BY started_at, id`,
    [withinMs],
  );
}

/** A clean shutdown: the row goes at once. */
export async function removeCoordinator(q: Queryable, id: string): Promise<void> {
  await q.query('DELETE FROM mxc_coordinators WHERE id = $1', [id]);
}

/** Forgets coordinators silent for longer than `afterMs` (leader housekeeping). */
export async function pruneCoordinators(q: Queryable, afterMs: number): Promise<number> {
  const rows = await q.query(
    `DELETE FROM mxc_coordinators WHERE last_seen_at < now() - $1 * interval '1 millisecond' RETURNING id`,
    [afterMs],
  );
  return rows.length;
}
