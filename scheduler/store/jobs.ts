/** SQL for `jobs` (one row per job identity) and `job_versions` (every submitted spec). */
import type { JobSpec } from '../../spec/job.js';
import type { Queryable } from './db.js';

export interface JobRow {
  id: string;
  key: string;
  cluster: string;
  role: string;
  environment: string;
  name: string;
  current_version: number;
  status: 'active' | 'stopped';
  created_at: Date;
  updated_at: Date;
  next_run_at: Date | null;
  /** Cron jobs: the run last launched (or skipped by CANCEL_NEW). */
  last_run_at: Date | null;
}

export interface JobVersionRow {
  job_id: string;
  version: number;
  spec: JobSpec;
  spec_hash: string;
  created_at: Date;
}

export async function getJobByKey(q: Queryable, key: string, forUpdate = false): Promise<JobRow | null> {
  const rows = await q.query<JobRow>(`SELECT * FROM jobs WHERE key = $1${forUpdate ? ' FOR UPDATE' : ''}`, [
    key,
  ]);
  return rows[0] ?? null;
}

export async function getJob(q: Queryable, idOrKey: string): Promise<JobRow | null> {
  const rows = await q.query<JobRow>(
    'SELECT * FROM jobs WHERE id = $1 OR key = $1 OR name = $1 ORDER BY (id = $1) DESC LIMIT 2',
    [idOrKey],
  );
  return rows[0] ?? null;
}

export async function listJobs(q: Queryable): Promise<(JobRow & { spec: JobSpec })[]> {
  return q.query(
    `SELECT j.*, v.spec FROM jobs j JOIN job_versions v ON v.job_id = j.id AND v.version = j.current_version
     ORDER BY j.key`,
  );
}

export async function insertJob(
  q: Queryable,
  j: { id: string; key: string; spec: JobSpec; specHash: string },
): Promise<JobRow> {
  const rows = await q.query<JobRow>(
    `INSERT INTO jobs (id, key, cluster, role, environment, name, current_version, status)
     VALUES ($1, $2, $3, $4, $5, $6, 1, 'active') RETURNING *`,
    [j.id, j.key, j.spec.cluster, j.spec.role, j.spec.environment, j.spec.name],
  );
  await insertJobVersion(q, j.id, 1, j.spec, j.specHash);
  return rows[0]!;
}

export async function insertJobVersion(
  q: Queryable,
  jobId: string,
  version: number,
  spec: JobSpec,
  hash: string,
) {
  await q.query('INSERT INTO job_versions (job_id, version, spec, spec_hash) VALUES ($1, $2, $3, $4)', [
    jobId,
    version,
    JSON.stringify(spec),
    hash,
  ]);
}

export async function setJobVersion(q: Queryable, jobId: string, version: number): Promise<void> {
  await q.query(`UPDATE jobs SET current_version = $2, status = 'active', updated_at = now() WHERE id = $1`, [
    jobId,
    version,
  ]);
}

export async function setJobStatus(q: Queryable, jobId: string, status: JobRow['status']): Promise<void> {
  await q.query('UPDATE jobs SET status = $2, updated_at = now() WHERE id = $1', [jobId, status]);
}

export async function getJobVersion(
  q: Queryable,
  jobId: string,
  version: number,
): Promise<JobVersionRow | null> {
  const rows = await q.query<JobVersionRow>('SELECT * FROM job_versions WHERE job_id = $1 AND version = $2', [
    jobId,
    version,
  ]);
  return rows[0] ?? null;
}

export async function listJobVersions(q: Queryable, jobId: string): Promise<JobVersionRow[]> {
  return q.query<JobVersionRow>('SELECT * FROM job_versions WHERE job_id = $1 ORDER BY version DESC', [
    jobId,
  ]);
}

export async function setNextRun(q: Queryable, jobId: string, at: Date | null): Promise<void> {
  await q.query('UPDATE jobs SET next_run_at = $2 WHERE id = $1', [jobId, at?.toISOString() ?? null]);
}

/** Records a cron run (launched or skipped) and the next one. */
export async function setCronRun(
  q: Queryable,
  jobId: string,
  ran: Date | null,
  next: Date | null,
): Promise<void> {
  await q.query('UPDATE jobs SET last_run_at = COALESCE($2, last_run_at), next_run_at = $3 WHERE id = $1', [
    jobId,
    ran?.toISOString() ?? null,
    next?.toISOString() ?? null,
  ]);
}

/** Active cron jobs due to run, locked so two coordinators never launch the same run. */
export async function dueCronJobs(q: Queryable, now: Date): Promise<JobRow[]> {
  return q.query<JobRow>(
    `SELECT * FROM jobs WHERE status = 'active' AND next_run_at IS NOT NULL AND next_run_at <= $1
     ORDER BY next_run_at FOR UPDATE SKIP LOCKED`,
    [now.toISOString()],
  );
}
