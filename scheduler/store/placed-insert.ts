/**
 * A new job inserted with its workloads already placed, in one statement (a submit's one round trip):
 * the planned nodes are locked in id order and re-checked (ready, the capabilities the plan saw, room
 * for the placements on their trigger-kept usage); the job, its version, closure and workloads are then
 * inserted, those whose node still fits as starting there (queued in the outbox), the others pending for
 * the next scheduling pass. The guard is the placement apply's (store/placement-apply.ts, fitsLockedNodeSql).
 */
import { COMMANDS_CHANNEL, queueStartRefsSql, wakeHoldersSql } from './agent-commands.js';
import type { Queryable } from './db.js';
import { firstVersionSql, type JobRow } from './jobs.js';
import { fitsLockedNodeSql } from './placement-apply.js';

/** The job's own row fields as JobRow has them, then what its insert writes beside it. */
export interface PlacedJobInsert
  extends Pick<JobRow, 'id' | 'key' | 'cluster' | 'role' | 'environment' | 'name'> {
  specJson: string;
  specHash: string;
  closure: readonly { path: string; nar_size: number }[];
  /** What each workload asks for (a new job's instances all ask the same). */
  demand: { cpu: number; memory_mb: number; disk_mb: number; isolation: string };
  /** The workloads in instance order, each with the node the plan chose (null: left pending). */
  workloads: readonly { id: string; instance: number; nodeId: string | null }[];
  /** The planned nodes with the capabilities (JSON) the plan read: a node changed since is not used. */
  nodes: readonly { id: string; capabilities: string }[];
  /** Reason of each workload's first (pending) event. */
  reason: string;
  /** The deciding coordinator: no NOTIFY for the agents whose sockets it holds (enqueueCommands). */
  holder?: string;
}

export interface PlacedJob {
  job: JobRow;
  /** The workloads inserted as starting, in instance order, with their node's outbox row. */
  placed: { index: number; nodeId: string; commandId: number }[];
}

/**
 * Inserts a new job with its planned placements. Returns null, changing nothing, when a job with that
 * key exists. A placement whose node is no longer ready, changed its capabilities or lacks the room
 * leaves its workload pending (as every later one on that node): the caller asks for a pass.
 */
export async function insertPlacedJob(q: Queryable, j: PlacedJobInsert): Promise<PlacedJob | null> {
  const rows = await q.query<
    JobRow & {
      placed: { i: number; node_id: string }[] | null;
      queued: { id: number; node_id: string }[] | null;
    }
  >(
    `WITH w AS (
       SELECT * FROM unnest($13::text[], $14::int[], $15::text[]) WITH ORDINALITY AS w(id, instance, node_id, i)
     ), locked AS (
       SELECT n.id, n.name, n.cpu, n.memory_mb, n.disk_mb, n.used_cpu, n.used_memory_mb, n.used_disk_mb
         FROM nodes n JOIN unnest($16::text[], $17::text[]) AS e(id, capabilities) ON e.id = n.id
        WHERE n.status = 'ready' AND n.connected AND n.capabilities = e.capabilities::jsonb
        ORDER BY n.id FOR UPDATE OF n
     ), fit AS (
       SELECT w.i, l.name,
              ${fitsLockedNodeSql('$18::float8 * count(*) OVER win', '$19::bigint * count(*) OVER win', '$20::bigint * count(*) OVER win')} AS fit
         FROM w JOIN locked l ON l.id = w.node_id
       WINDOW win AS (PARTITION BY w.node_id ORDER BY w.i)
     ), job AS (
       -- The nodes are locked first (the subquery runs before the insert), in id order as every
       -- statement that locks several nodes does, so this cannot deadlock with them.
       INSERT INTO jobs (id, key, cluster, role, environment, name, current_version, status)
       SELECT $1, $2, $3, $4, $5, $6, 1, 'active' WHERE (SELECT count(*) FROM fit) >= 0
       ON CONFLICT (key) DO NOTHING
       RETURNING *
     ), ${firstVersionSql('$7', '$8', '$9', '$10')}, created AS (
       INSERT INTO workloads (id, job_id, job_version, instance, status, node_id, cpu, memory_mb, disk_mb, isolation)
       SELECT w.id, job.id, 1, w.instance, CASE WHEN f.fit THEN 'starting' ELSE 'pending' END,
              CASE WHEN f.fit THEN w.node_id END, $18, $19, $20, $21
         FROM job, w LEFT JOIN fit f ON f.i = w.i
        ORDER BY w.i
       RETURNING id, status, node_id
     ), placed AS (
       SELECT w.i, c.id, c.node_id, f.name FROM created c JOIN w ON w.id = c.id JOIN fit f ON f.i = w.i
        WHERE c.status = 'starting'
     ), events AS (
       INSERT INTO workload_events (workload_id, from_status, to_status, reason)
       SELECT e.id, e.from_status, e.to_status, e.reason FROM (
         SELECT w.i, 0 AS step, c.id, NULL::text AS from_status, 'pending' AS to_status, $11 AS reason
           FROM created c JOIN w ON w.id = c.id
         UNION ALL
         SELECT i, 1, id, 'pending', 'starting', 'placed on ' || name FROM placed
       ) e ORDER BY e.i, e.step
     ), ${queueStartRefsSql('placed')}, ${wakeHoldersSql('$22', '$12')}
     SELECT job.*,
            (SELECT json_agg(json_build_object('i', i, 'node_id', node_id)) FROM placed) AS placed,
            (SELECT json_agg(json_build_object('id', id, 'node_id', node_id)) FROM queued) AS queued
       FROM job WHERE (SELECT count(*) FROM woken) >= 0`,
    [
      j.id,
      j.key,
      j.cluster,
      j.role,
      j.environment,
      j.name,
      j.specJson,
      j.specHash,
      j.closure.map((p) => p.path),
      j.closure.map((p) => p.nar_size),
      j.reason,
      j.holder ?? null,
      j.workloads.map((w) => w.id),
      j.workloads.map((w) => w.instance),
      j.workloads.map((w) => w.nodeId),
      j.nodes.map((n) => n.id),
      j.nodes.map((n) => n.capabilities),
      j.demand.cpu,
      j.demand.memory_mb,
      j.demand.disk_mb,
      j.demand.isolation,
      COMMANDS_CHANNEL,
    ],
    // Prepared: a submit's few rows; the plan does not depend on the arrays' sizes.
    'mxc_insert_placed_job',
  );
  const row = rows[0];
  if (!row) return null;
  const { placed, queued, ...job } = row;
  const commandOf = new Map((queued ?? []).map((c) => [c.node_id, c.id]));
  return {
    job: job as JobRow,
    placed: (placed ?? [])
      .map((p) => ({ index: p.i - 1, nodeId: p.node_id, commandId: commandOf.get(p.node_id)! }))
      .sort((a, b) => a.index - b.index),
  };
}
