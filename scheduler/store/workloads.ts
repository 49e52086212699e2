/**
 * SQL for `workloads` and their `workload_events`. Every status change is one statement guarded by the
 * status it expects (`transition`; many at once in store/placement-apply.ts), checked against
 * core/lifecycle's state machine and recorded as an event with its reason; losing a race yields no row,
 * never an overwrite.
 */
import type { z } from 'zod';
import type { ProcessReport, WorkloadStatus } from '../../spec/messages.js';
import {
  ACTIVE_STATUSES,
  checkTransition,
  emptyCounts,
  isTerminal,
  type Outcome,
  outcomeOf,
  type StateCounts,
  type WorkloadState,
} from '../core/lifecycle.js';
import type { Queryable } from './db.js';

export interface WorkloadRow {
  id: string;
  job_id: string;
  job_version: number;
  instance: number;
  status: WorkloadStatus;
  node_id: string | null;
  cpu: number;
  memory_mb: number;
  disk_mb: number;
  isolation: 'process' | 'sandbox' | 'microvm';
  pending_reason: string | null;
  error: string | null;
  restarts: number;
  ports: Record<string, number>;
  processes: z.infer<typeof ProcessReport>[];
  created_at: Date;
  updated_at: Date;
  started_at: Date | null;
  finished_at: Date | null;
  fetched_paths: number | null;
  fetched_bytes: number | null;
  health: 'unknown' | 'healthy' | 'unhealthy' | null;
  /** How it ended, once terminal. */
  outcome: Outcome | null;
  /** A restart of a flapping task is not placed before this. */
  not_before: Date | null;
  restart_delay_ms: number;
}

export interface WorkloadEventRow {
  id: number;
  workload_id: string;
  ts: Date;
  from_status: WorkloadStatus | null;
  to_status: WorkloadStatus;
  reason: string;
}

export type NewWorkload = Pick<
  WorkloadRow,
  'id' | 'job_id' | 'job_version' | 'instance' | 'cpu' | 'memory_mb' | 'disk_mb' | 'isolation' | 'restarts'
> & {
  /** Restart back-off: placed no earlier than this, having waited `restart_delay_ms`. */
  not_before?: Date | null;
  restart_delay_ms?: number;
};

/** The columns `insertWorkloads` writes, as `unnest` over `$first`…. */
export function workloadRowsSql(first: number): string {
  const p = (i: number) => `$${first + i}`;
  return `unnest(${p(0)}::text[], ${p(1)}::text[], ${p(2)}::int[], ${p(3)}::int[], ${p(4)}::text[], ${p(5)}::float8[],
       ${p(6)}::int[], ${p(7)}::int[], ${p(8)}::text[], ${p(9)}::int[], ${p(10)}::timestamptz[], ${p(11)}::int[])`;
}

/** The parameters of `workloadRowsSql`, in its order. */
export function workloadRowsParams(ws: readonly NewWorkload[]): unknown[] {
  return [
    ws.map((w) => w.id),
    ws.map((w) => w.job_id),
    ws.map((w) => w.job_version),
    ws.map((w) => w.instance),
    ws.map(() => 'pending'),
    ws.map((w) => w.cpu),
    ws.map((w) => w.memory_mb),
    ws.map((w) => w.disk_mb),
    ws.map((w) => w.isolation),
    ws.map((w) => w.restarts),
    ws.map((w) => w.not_before?.toISOString() ?? null),
    ws.map((w) => w.restart_delay_ms ?? 0),
  ];
}

/** The columns of `workloadRowsSql` (insertNewJob's statement writes the same). */
export const WORKLOAD_INSERT_COLUMNS = `id, job_id, job_version, instance, status, cpu, memory_mb, disk_mb, isolation, restarts,
       not_before, restart_delay_ms`;

/** Creates pending workloads and their first events, in one statement. */
export async function insertWorkloads(q: Queryable, ws: NewWorkload[], reason: string): Promise<void> {
  if (ws.length === 0) return;
  await q.query(
    `WITH created AS (
       INSERT INTO workloads (${WORKLOAD_INSERT_COLUMNS})
       SELECT * FROM ${workloadRowsSql(2)}
       RETURNING id
     )
     INSERT INTO workload_events (workload_id, from_status, to_status, reason)
     SELECT id, NULL, 'pending', $1 FROM created`,
    [reason, ...workloadRowsParams(ws)],
  );
}

export async function getWorkload(q: Queryable, id: string, forUpdate = false): Promise<WorkloadRow | null> {
  const rows = await q.query<WorkloadRow>(
    `SELECT * FROM workloads WHERE id = $1${forUpdate ? ' FOR UPDATE' : ''}`,
    [id],
  );
  return rows[0] ?? null;
}

export interface WorkloadFilter {
  status?: WorkloadStatus[];
  jobId?: string;
  nodeId?: string;
  /** Only workloads whose id starts with this. */
  idPrefix?: string;
  limit?: number;
}

export async function listWorkloads(q: Queryable, f: WorkloadFilter = {}): Promise<WorkloadRow[]> {
  const where: string[] = [];
  const params: unknown[] = [];
  if (f.status?.length) {
    params.push(f.status);
    where.push(`status = ANY($${params.length}::text[])`);
  }
  if (f.jobId) {
    params.push(f.jobId);
    where.push(`job_id = $${params.length}`);
  }
  if (f.nodeId) {
    params.push(f.nodeId);
    where.push(`node_id = $${params.length}`);
  }
  if (f.idPrefix) {
    params.push(f.idPrefix);
    // Not LIKE: `_` in an id is a character, not a wildcard. A workload's id begins with its job's name
    // and `-` (workload-changes.ts), so the jobs table (small) narrows it down and the job_id index finds
    // the rows: the id alone has no index a prefix can use whatever the database's collation, and a
    // lookup read every workload (~120 ms at 200,000).
    const p = `$${params.length}`;
    where.push(
      `left(id, length(${p})) = ${p} AND job_id IN (SELECT j.id FROM jobs j WHERE left(j.name, length(${p})) = ${p} OR left(${p}, length(j.name) + 1) = j.name || '-')`,
    );
  }
  params.push(f.limit ?? 1000);
  return q.query<WorkloadRow>(
    `SELECT * FROM workloads ${where.length ? `WHERE ${where.join(' AND ')}` : ''}
     ORDER BY created_at DESC, instance LIMIT $${params.length}`,
    params,
  );
}

/** What a scheduling pass needs of a pending workload (not its runtime columns, never set while pending). */
export type PendingWorkload = Pick<
  WorkloadRow,
  | 'id'
  | 'job_id'
  | 'job_version'
  | 'instance'
  | 'cpu'
  | 'memory_mb'
  | 'disk_mb'
  | 'isolation'
  | 'not_before'
  | 'restart_delay_ms'
>;

/** The pending workloads a scheduling pass plans, oldest first (at most `limit`). */
export async function listPending(q: Queryable, limit: number): Promise<PendingWorkload[]> {
  return q.query<PendingWorkload>(
    // No created_at: it orders the list, and parsing it was a third of the read's client time.
    `SELECT id, job_id, job_version, instance, cpu, memory_mb, disk_mb, isolation, not_before, restart_delay_ms
     FROM workloads WHERE status = 'pending' ORDER BY created_at, instance LIMIT $1`,
    [limit],
    'mxc_list_pending',
  );
}

/**
 * Whether pending workloads were inserted since `watermark` (a snapshot this returned before; null: say
 * yes), and the watermark to ask with next time. A pending row is new when its inserting transaction was
 * not visible to that snapshot: at or past its xmax, or among its in-progress ones (xip). The snapshot's
 * xmin alone would also count every row inserted after the oldest transaction still open then, anywhere
 * on the server (another database's included), so one long transaction made every sweep read the backlog.
 */
export async function pendingInsertedSince(
  q: Queryable,
  watermark: string | null,
): Promise<{ watermark: string; inserted: boolean }> {
  // The newest pending row's xid, from the end of the partial index (an EXISTS over `>=` could be
  // planned as a filter over every pending row, as a generic plan guesses a third of them match); the
  // in-progress xids, each one index probe.
  const [row] = await q.query<{ watermark: string; inserted: boolean | null }>(
    `SELECT pg_current_snapshot()::text AS watermark,
            (SELECT created_xid FROM workloads WHERE status = 'pending' AND created_xid IS NOT NULL
              ORDER BY created_xid DESC LIMIT 1) >= pg_snapshot_xmax($1::pg_snapshot)
            OR EXISTS (SELECT 1 FROM workloads WHERE status = 'pending'
                         AND created_xid IN (SELECT pg_snapshot_xip($1::pg_snapshot))) AS inserted`,
    [watermark],
    'mxc_pending_inserted_since',
  );
  return { watermark: row!.watermark, inserted: watermark === null || row!.inserted === true };
}

/**
 * Moves a workload from `from` to `to` in one statement guarded by the expected status, recording the
 * event in the same statement. Returns the row as it is now, or null when the workload was not in
 * `from` any more (a concurrent change won): the caller re-reads and decides, never overwrites.
 */
export async function transition(
  q: Queryable,
  w: Pick<WorkloadRow, 'id' | 'status'>,
  to: WorkloadStatus,
  reason: string,
  extra: { error?: string | null; node_id?: string | null } = {},
): Promise<WorkloadRow | null> {
  checkTransition(w.status, to);
  const sets = ['status = $3', 'updated_at = now()'];
  const params: unknown[] = [w.id, w.status, to, reason];
  if (to === 'running') sets.push('started_at = COALESCE(started_at, now())');
  if (isTerminal(to)) {
    params.push(outcomeOf(w.status, to));
    sets.push('finished_at = now()', `outcome = $${params.length}`);
  }
  if (to !== 'pending') sets.push('pending_reason = NULL');
  if (extra.error !== undefined) {
    params.push(extra.error);
    sets.push(`error = $${params.length}`);
  }
  if (extra.node_id !== undefined) {
    params.push(extra.node_id);
    sets.push(`node_id = $${params.length}`);
  }
  // A change of what the workload holds updates its node's usage (a trigger, migration 011), which
  // locks the node row: lock it first, so node-before-workload is the one lock order everywhere (the
  // apply and the liveness verdict lock nodes first too) and concurrent changes cannot deadlock.
  const locksNode = holdsResources(w.status) !== holdsResources(to) || extra.node_id !== undefined;
  let guard = '';
  if (locksNode) {
    params.push(extra.node_id ?? null);
    guard = `AND (SELECT count(*) FROM node_locked) >= 0`;
  }
  const rows = await q.query<WorkloadRow>(
    `WITH ${
      locksNode
        ? `node_locked AS MATERIALIZED (
       SELECT n.id FROM nodes n
       WHERE n.id = (SELECT node_id FROM workloads WHERE id = $1) OR n.id = $${params.length}
       ORDER BY n.id FOR UPDATE
     ), `
        : ''
    }moved AS (
       UPDATE workloads SET ${sets.join(', ')} WHERE id = $1 AND status = $2 ${guard} RETURNING *
     ), ev AS (
       INSERT INTO workload_events (workload_id, from_status, to_status, reason)
       SELECT id, $2, $3, $4 FROM moved
     )
     SELECT * FROM moved`,
    params,
  );
  return rows[0] ?? null;
}

/** Whether a workload in this status holds its node's resources. */
const holdsResources = (s: WorkloadStatus) => ACTIVE_STATUSES.includes(s);

/** What to do with a workload as it is now: the status to move it to, or null to leave it. */
export type Decision = { to: WorkloadStatus; reason: string; error?: string | null } | null;

/**
 * A guarded transition that handles a lost race explicitly: when the workload is no longer in the
 * status `decide` saw, it is re-read and `decide` asked again (a bounded number of times). Returns the
 * row as moved, or null when `decide` left it (or it is gone).
 */
export async function transitionWith(
  q: Queryable,
  w: WorkloadRow,
  decide: (current: WorkloadRow) => Decision,
): Promise<WorkloadRow | null> {
  let current: WorkloadRow | null = w;
  for (let attempt = 0; attempt < 5 && current; attempt++) {
    const d = decide(current);
    if (!d) return null;
    const moved = await transition(
      q,
      current,
      d.to,
      d.reason,
      d.error !== undefined ? { error: d.error } : {},
    );
    if (moved) return moved;
    current = await getWorkload(q, current.id);
  }
  return null;
}

/**
 * Records why pending workloads wait. A row whose reason is already that one is left alone: every pass
 * (a leader sweeps every 10 s) re-plans an unplaceable backlog, and rewriting each of its rows with the
 * same text each time would be a dead tuple and WAL per waiting workload per pass.
 */
export async function setPendingReasons(
  q: Queryable,
  reasons: { id: string; reason: string }[],
): Promise<void> {
  if (reasons.length === 0) return;
  await q.query(
    `UPDATE workloads SET pending_reason = v.reason
     FROM (SELECT unnest($1::text[]) AS id, unnest($2::text[]) AS reason) AS v
     WHERE workloads.id = v.id AND workloads.status = 'pending'
       AND workloads.pending_reason IS DISTINCT FROM v.reason`,
    [reasons.map((r) => r.id), reasons.map((r) => r.reason)],
  );
}

/** What an agent reports of a workload's runtime beside its status. */
export interface WorkloadRuntime {
  ports?: Record<string, number>;
  processes?: unknown[];
  fetched?: { paths: number; bytes: number };
  health?: 'unknown' | 'healthy' | 'unhealthy';
}

export async function setWorkloadRuntime(q: Queryable, id: string, r: WorkloadRuntime): Promise<void> {
  await q.query(
    `UPDATE workloads SET ports = COALESCE($2::jsonb, ports), processes = COALESCE($3::jsonb, processes),
       fetched_paths = COALESCE($4, fetched_paths), fetched_bytes = COALESCE($5, fetched_bytes),
       health = COALESCE($6, health), updated_at = now()
     WHERE id = $1`,
    [
      id,
      r.ports ? JSON.stringify(r.ports) : null,
      r.processes ? JSON.stringify(r.processes) : null,
      r.fetched?.paths ?? null,
      r.fetched?.bytes ?? null,
      r.health ?? null,
    ],
  );
}

/** Resources held on each node by its active workloads. */
export async function usageByNode(
  q: Queryable,
  nodeIds?: string[],
): Promise<Map<string, { cpu: number; memory_mb: number; disk_mb: number }>> {
  const rows = await q.query<{ node_id: string; cpu: number; memory_mb: number; disk_mb: number }>(
    `SELECT node_id, COALESCE(sum(cpu), 0)::float8 AS cpu, COALESCE(sum(memory_mb), 0)::float8 AS memory_mb,
            COALESCE(sum(disk_mb), 0)::float8 AS disk_mb
     FROM workloads WHERE status = ANY($1::text[]) AND node_id IS NOT NULL
     ${nodeIds ? 'AND node_id = ANY($2::text[])' : ''} GROUP BY node_id`,
    nodeIds ? [ACTIVE_STATUSES, nodeIds] : [ACTIVE_STATUSES],
  );
  return new Map(rows.map((r) => [r.node_id, { cpu: r.cpu, memory_mb: r.memory_mb, disk_mb: r.disk_mb }]));
}

/** Active instances per job and node, for limit constraints and spreading. */
export async function activePlacements(
  q: Queryable,
): Promise<{ job_id: string; node_id: string; n: number }[]> {
  return q.query(
    `SELECT job_id, node_id, count(*)::int AS n FROM workloads
     WHERE status = ANY($1::text[]) AND node_id IS NOT NULL GROUP BY job_id, node_id`,
    [ACTIVE_STATUSES],
  );
}

/** Active instances per node of the given jobs only (what a pass placing them needs). */
export async function activePlacementsOf(
  q: Queryable,
  jobIds: string[],
): Promise<{ job_id: string; node_id: string; n: number }[]> {
  if (jobIds.length === 0) return [];
  return q.query(
    `SELECT job_id, node_id, count(*)::int AS n FROM workloads
     WHERE job_id = ANY($2::text[]) AND status = ANY($1::text[]) AND node_id IS NOT NULL GROUP BY job_id, node_id`,
    [ACTIVE_STATUSES, jobIds],
  );
}

/**
 * Active instances per node of every job that has pending workloads, read beside the pending list
 * (not after it). Every job covered has a row: one with a null node when none of it is active.
 */
export async function activePlacementsOfPendingJobs(
  q: Queryable,
): Promise<{ job_id: string; node_id: string | null; n: number }[]> {
  return q.query(
    `SELECT j.job_id, w.node_id, count(w.id)::int AS n
     FROM (SELECT DISTINCT job_id FROM workloads WHERE status = 'pending') j
     LEFT JOIN workloads w ON w.job_id = j.job_id AND w.status = ANY($1::text[]) AND w.node_id IS NOT NULL
     GROUP BY j.job_id, w.node_id`,
    [ACTIVE_STATUSES],
    'mxc_active_placements_of_pending_jobs',
  );
}

/**
 * Why each workload is in its status, by workload id: the reason of its last status change, except that
 * a stop's reason is the one it began with ("job stopped", "replaced by version 2"), not the agent's
 * word at its end ("stopped").
 */
export async function lastReasons(q: Queryable, workloadIds: string[]): Promise<Map<string, string>> {
  if (workloadIds.length === 0) return new Map();
  const rows = await q.query<{ workload_id: string; reason: string }>(
    `SELECT DISTINCT ON (workload_id) workload_id, reason FROM workload_events
     WHERE workload_id = ANY($1::text[]) AND NOT (from_status = 'stopping' AND to_status = 'stopped')
     ORDER BY workload_id, id DESC`,
    [workloadIds],
  );
  return new Map(rows.map((r) => [r.workload_id, r.reason]));
}

export async function listEvents(q: Queryable, workloadId: string): Promise<WorkloadEventRow[]> {
  return q.query<WorkloadEventRow>('SELECT * FROM workload_events WHERE workload_id = $1 ORDER BY id', [
    workloadId,
  ]);
}

export async function countByStatus(q: Queryable): Promise<Record<string, number>> {
  const rows = await q.query<{ status: string; n: number }>(
    'SELECT status, count(*)::int AS n FROM workloads GROUP BY status',
  );
  return Object.fromEntries(rows.map((r) => [r.status, r.n]));
}

/**
 * Per job: how many workloads are in each state (live ones by status, ended ones by outcome), over all
 * of them (`counts`) and over the latest workload of each instance (`latest`, what the job is doing now).
 */
export async function jobStateCounts(
  q: Queryable,
  jobIds: string[],
): Promise<Map<string, { counts: StateCounts; latest: StateCounts }>> {
  const out = new Map<string, { counts: StateCounts; latest: StateCounts }>();
  if (jobIds.length === 0) return out;
  for (const id of jobIds) out.set(id, { counts: emptyCounts(), latest: emptyCounts() });
  const rows = await q.query<{ job_id: string; state: WorkloadState; n: number; latest: number }>(
    `SELECT job_id, state, count(*)::int AS n, count(*) FILTER (WHERE rn = 1)::int AS latest FROM (
       SELECT job_id, COALESCE(outcome, status) AS state,
              row_number() OVER (PARTITION BY job_id, instance ORDER BY created_at DESC, id) AS rn
       FROM workloads WHERE job_id = ANY($1::text[])
     ) t GROUP BY job_id, state`,
    [jobIds],
  );
  for (const r of rows) {
    const s = out.get(r.job_id)!;
    s.counts[r.state] = r.n;
    s.latest[r.state] = r.latest;
  }
  return out;
}

/** What a rollout step reads: a job's live workloads and those created since `since` (its start). */
export async function rolloutWorkloads(q: Queryable, jobId: string, since: Date): Promise<WorkloadRow[]> {
  return q.query<WorkloadRow>(
    `SELECT * FROM workloads WHERE job_id = $1
       AND (status IN ('pending', 'starting', 'running') OR created_at >= $2)
     ORDER BY created_at DESC, instance`,
    [jobId, since.toISOString()],
  );
}
