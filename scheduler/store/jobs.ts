/** SQL for `jobs` (one row per job identity) and `job_versions` (every submitted spec). */
import type { JobSpec } from '../../spec/job.js';
import { errors } from '../errors.js';
import type { ClosurePath } from './closures.js';
import type { Queryable } from './db.js';
import { type NewWorkload, WORKLOAD_INSERT_COLUMNS } from './workloads.js';

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

export async function getJobByKey(q: Queryable, key: string): Promise<JobRow | null> {
  const rows = await q.query<JobRow>('SELECT * FROM jobs WHERE key = $1', [key]);
  return rows[0] ?? null;
}

/**
 * Locks a job's row for the transaction and returns its status and current version as they are now,
 * after any transaction that held the lock before (a stop, a submit, another restart) committed.
 */
export async function lockJobState(
  q: Queryable,
  id: string,
): Promise<Pick<JobRow, 'status' | 'current_version'> | null> {
  const rows = await q.query<Pick<JobRow, 'status' | 'current_version'>>(
    'SELECT status, current_version FROM jobs WHERE id = $1 FOR UPDATE',
    [id],
  );
  return rows[0] ?? null;
}

/** A job by key, locked for a submit, with the spec hash of its current version: one round trip. */
export async function lockJobForSubmit(
  q: Queryable,
  key: string,
): Promise<(JobRow & { current_hash: string | null; latest_version: number }) | null> {
  // The latest version, not the current one, numbers the next: a rollback makes an earlier one current.
  const rows = await q.query<JobRow & { current_hash: string | null; latest_version: number }>(
    `SELECT j.*, v.spec_hash AS current_hash,
       (SELECT max(version) FROM job_versions WHERE job_id = j.id) AS latest_version
     FROM jobs j
       LEFT JOIN job_versions v ON v.job_id = j.id AND v.version = j.current_version
     WHERE j.key = $1 FOR UPDATE OF j`,
    [key],
  );
  return rows[0] ?? null;
}

/**
 * A job by id, key or name: an id or a key (each names one job) wins over a name; a name that several
 * jobs share (one per environment, say) names none of them: 409 AMBIGUOUS with their keys, never
 * whichever the table returns first (a stop reached one environment's job, the next run another's).
 */
export async function getJob(q: Queryable, idOrKey: string): Promise<JobRow | null> {
  const rows = await q.query<JobRow>(
    `SELECT * FROM jobs WHERE id = $1 OR key = $1 OR name = $1
     ORDER BY (id = $1 OR key = $1) DESC, key LIMIT 6`,
    [idOrKey],
  );
  const first = rows[0];
  if (!first || rows.length === 1 || first.id === idOrKey || first.key === idOrKey) return first ?? null;
  throw errors.conflict(
    'AMBIGUOUS',
    `${rows.length > 5 ? 'more than 5' : rows.length} jobs are named "${idOrKey}": ${rows
      .slice(0, 5)
      .map((r) => r.key)
      .join(', ')}; name one by its key (cluster/role/environment/name) or id`,
  );
}

/**
 * A page of jobs by key with their current spec and its size in bytes (so a page can stop short of its
 * row count when the specs are large), after the key `after`.
 */
export async function listJobsPage(
  q: Queryable,
  opts: { after?: string; limit: number },
): Promise<(JobRow & { spec: JobSpec; spec_bytes: number })[]> {
  return q.query(
    `SELECT j.*, v.spec, octet_length(v.spec::text) AS spec_bytes
     FROM jobs j JOIN job_versions v ON v.job_id = j.id AND v.version = j.current_version
     WHERE ($1::text IS NULL OR j.key > $1) ORDER BY j.key LIMIT $2`,
    [opts.after ?? null, opts.limit],
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

/**
 * The parameters of a new job's workloads: their ids and instances, and what they all share (they are
 * newWorkloads' of version 1: one job version, one demand, pending, no restart yet). Throws on any that
 * does not share it, a caller's mistake.
 */
function sameJobWorkloadsParams(jobId: string, ws: readonly NewWorkload[]): unknown[] {
  const f = ws[0];
  for (const w of ws) {
    if (
      w.job_id !== jobId ||
      w.job_version !== 1 ||
      w.cpu !== f!.cpu ||
      w.memory_mb !== f!.memory_mb ||
      w.disk_mb !== f!.disk_mb ||
      w.isolation !== f!.isolation ||
      w.restarts !== f!.restarts ||
      w.not_before ||
      w.restart_delay_ms
    )
      throw new Error(
        `insertNewJob: workload ${w.id} is not one of job ${jobId}'s version 1 like the others`,
      );
  }
  return [
    ws.map((w) => w.id),
    ws.map((w) => w.instance),
    f?.cpu ?? 0,
    f?.memory_mb ?? 0,
    f?.disk_mb ?? 0,
    f?.isolation ?? 'process',
    f?.restarts ?? 0,
  ];
}

/**
 * The `version` and `closure` steps of a statement that inserts a new job in a CTE named `job`: its
 * version 1 (spec JSON and hash) and that version's closure (two arrays: paths and NAR sizes), each a
 * parameter placeholder. Shared by a submit's two inserts, pending (insertNewJob) and placed
 * (store/placed-insert.ts).
 */
export function firstVersionSql(spec: string, specHash: string, paths: string, sizes: string): string {
  return `version AS (
       INSERT INTO job_versions (job_id, version, spec, spec_hash) SELECT id, 1, ${spec}, ${specHash} FROM job
     ), closure AS (
       INSERT INTO job_closure (job_id, version, path, nar_size)
       SELECT job.id, 1, c.path, c.nar_size FROM job, unnest(${paths}::text[], ${sizes}::bigint[]) AS c(path, nar_size)
       ON CONFLICT DO NOTHING
     )`;
}

/**
 * Creates a job that does not exist yet, in one statement (atomic on its own, no transaction needed):
 * the job row at version 1, its spec, its closure, its workloads and their first events. Returns null,
 * changing nothing, when a job with that key exists (the caller then takes the path for a known job).
 */
export async function insertNewJob(
  q: Queryable,
  j: {
    id: string;
    key: string;
    spec: JobSpec;
    specHash: string;
    closure: readonly ClosurePath[];
    workloads: readonly NewWorkload[];
    reason: string;
    nextRunAt: Date | null;
  },
): Promise<JobRow | null> {
  const rows = await q.query<JobRow>(
    `WITH job AS (
       INSERT INTO jobs (id, key, cluster, role, environment, name, current_version, status, next_run_at)
       VALUES ($1, $2, $3, $4, $5, $6, 1, 'active', $7) ON CONFLICT (key) DO NOTHING
       RETURNING *
     ), ${firstVersionSql('$8', '$9', '$10', '$11')}, created AS (
       -- Only the ids and instances as arrays (12 arrays of a column each were a tenth of the insert's
       -- cost in PostgreSQL and a fifth in the coordinator's parameter encoding).
       INSERT INTO workloads (${WORKLOAD_INSERT_COLUMNS})
       SELECT w.id, job.id, 1, w.instance, 'pending', $15, $16, $17, $18, $19, NULL, 0
         FROM job, unnest($13::text[], $14::int[]) AS w(id, instance)
       RETURNING id
     ), events AS (
       INSERT INTO workload_events (workload_id, from_status, to_status, reason)
       SELECT id, NULL, 'pending', $12 FROM created
     )
     SELECT * FROM job`,
    [
      j.id,
      j.key,
      j.spec.cluster,
      j.spec.role,
      j.spec.environment,
      j.spec.name,
      j.nextRunAt?.toISOString() ?? null,
      JSON.stringify(j.spec),
      j.specHash,
      j.closure.map((p) => p.path),
      j.closure.map((p) => p.nar_size),
      j.reason,
      ...sameJobWorkloadsParams(j.id, j.workloads),
    ],
    // Prepared: its plan (inserts of the arrays' rows) does not depend on their sizes.
    'mxc_insert_new_job',
  );
  return rows[0] ?? null;
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

/** A page of a job's versions, newest first, before version `before`, with each spec's size in bytes. */
export async function listJobVersionsPage(
  q: Queryable,
  jobId: string,
  opts: { before?: number; limit: number },
): Promise<(JobVersionRow & { spec_bytes: number })[]> {
  return q.query(
    `SELECT *, octet_length(spec::text) AS spec_bytes FROM job_versions
     WHERE job_id = $1 AND ($2::int IS NULL OR version < $2) ORDER BY version DESC LIMIT $3`,
    [jobId, opts.before ?? null, opts.limit],
  );
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
