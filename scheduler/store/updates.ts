/** SQL for `job_updates`: rolling updates of a job from one version to another, batch by batch. */
import type { Queryable } from './db.js';

export type UpdateStatus = 'rolling' | 'paused' | 'succeeded' | 'failed' | 'rolled_back' | 'cancelled';

export interface UpdateRow {
  id: string;
  job_id: string;
  from_version: number;
  to_version: number;
  status: UpdateStatus;
  rollback: boolean;
  /** A restart of the same version: instances count once they were started after the restart began. */
  restart: boolean;
  next_instance: number;
  message: string;
  created_at: Date;
  updated_at: Date;
}

export async function insertUpdate(
  q: Queryable,
  u: Pick<UpdateRow, 'id' | 'job_id' | 'from_version' | 'to_version' | 'rollback' | 'restart' | 'message'>,
): Promise<void> {
  await q.query(
    `INSERT INTO job_updates (id, job_id, from_version, to_version, status, rollback, restart, message)
     VALUES ($1, $2, $3, $4, 'rolling', $5, $6, $7)`,
    [u.id, u.job_id, u.from_version, u.to_version, u.rollback, u.restart, u.message],
  );
}

/** Rolling updates, locked so that two coordinators never advance the same one. */
export async function lockRolling(q: Queryable): Promise<UpdateRow[]> {
  return q.query<UpdateRow>(
    `SELECT * FROM job_updates WHERE status = 'rolling' ORDER BY created_at FOR UPDATE SKIP LOCKED`,
  );
}

/**
 * Moves a rolling update on (progress, or its end), guarded: only while it is still rolling. Returns
 * false when it was not (cancelled or ended meanwhile): the caller's step is then void.
 */
export async function moveRolling(
  q: Queryable,
  id: string,
  f: { status?: UpdateStatus; next_instance?: number; message?: string },
): Promise<boolean> {
  const rows = await q.query(
    `UPDATE job_updates SET status = COALESCE($2, status), next_instance = COALESCE($3, next_instance),
       message = COALESCE($4, message), updated_at = now() WHERE id = $1 AND status = 'rolling' RETURNING id`,
    [id, f.status ?? null, f.next_instance ?? null, f.message ?? null],
  );
  return rows.length === 1;
}

/** Ends a job's rolling (or paused) update, if any, because a newer submit or a stop supersedes it. */
export async function cancelRolling(q: Queryable, jobId: string, message: string): Promise<void> {
  await moveUpdate(q, jobId, ['rolling', 'paused'], 'cancelled', message);
}

/**
 * Moves a job's update from one of `from` to `to` (pause: rolling → paused, resume: paused → rolling,
 * abort: rolling or paused → cancelled), guarded: returns the update moved, or null when the job had
 * none in those states.
 */
export async function moveUpdate(
  q: Queryable,
  jobId: string,
  from: readonly UpdateStatus[],
  to: UpdateStatus,
  message: string,
): Promise<UpdateRow | null> {
  const rows = await q.query<UpdateRow>(
    `UPDATE job_updates SET status = $3, message = $4, updated_at = now()
     WHERE job_id = $1 AND status = ANY($2::text[]) RETURNING *`,
    [jobId, from, to, message],
  );
  return rows[0] ?? null;
}

export async function listUpdates(q: Queryable, jobId: string): Promise<UpdateRow[]> {
  return q.query<UpdateRow>('SELECT * FROM job_updates WHERE job_id = $1 ORDER BY created_at DESC', [jobId]);
}
