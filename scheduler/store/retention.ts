/**
 * Retention (Nomad's core GC): ended workloads, with their events (deleted by the same statement) and
 * logs (ON DELETE CASCADE), are deleted once they ended longer ago than the retention period, or when
 * their job has more ended workloads than it keeps. The newest workload of each instance of a job stays, so a job still says
 * how it ended. One bounded statement per pass.
 */
import type { Queryable } from './db.js';

export interface RetentionPolicy {
  /** Ended workloads older than this are deleted. */
  periodMs: number;
  /** Each job keeps at most this many ended workloads (the newest), besides the newest of each instance. */
  perJob: number;
}

/** Deletes what the policy no longer keeps, at most `limit` workloads; returns how many went. */
export async function deleteExpiredWorkloads(
  q: Queryable,
  policy: RetentionPolicy,
  now: Date,
  limit = 5000,
): Promise<number> {
  const rows = await q.query<{ n: number }>(
    `WITH ended AS (
       SELECT w.id, w.job_id, w.finished_at,
              NOT EXISTS (
                SELECT 1 FROM workloads l WHERE l.job_id = w.job_id AND l.instance = w.instance
                  AND (l.created_at > w.created_at OR (l.created_at = w.created_at AND l.id > w.id))
              ) AS newest
       FROM workloads w WHERE w.status IN ('stopped', 'failed', 'lost')
     ), ranked AS (
       -- the newest workload of each instance stays and does not count against the job
       SELECT id, finished_at,
              row_number() OVER (PARTITION BY job_id ORDER BY finished_at DESC NULLS FIRST, id) AS in_job
       FROM ended WHERE NOT newest
     ), doomed AS (
       SELECT id FROM ranked WHERE finished_at < $1 OR in_job > $2 LIMIT $3
     ), gone AS (
       DELETE FROM workloads WHERE id IN (SELECT id FROM doomed) RETURNING id
     ), events AS (
       DELETE FROM workload_events WHERE workload_id IN (SELECT id FROM gone)
     )
     SELECT count(*)::int AS n FROM gone`,
    [new Date(now.getTime() - policy.periodMs).toISOString(), policy.perJob, limit],
  );
  return rows[0]?.n ?? 0;
}
