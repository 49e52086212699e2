/**
 * The placement apply as one statement (atomic without BEGIN/COMMIT, so one round trip): lock the
 * planned nodes in id order, re-check capacity on the locked rows (their trigger-kept usage is exact
 * under the lock) against what this batch puts on each node, move the pending workloads whose node
 * still fits to starting (with their events; the usage triggers add them to the nodes), and queue the
 * starts in the outbox, one row per node in placement order, all committing together.
 */
import { COMMANDS_CHANNEL, queueStartRefsSql, wakeHoldersSql } from './agent-commands.js';
import type { Queryable } from './db.js';

export interface PlannedStart {
  id: string;
  nodeId: string;
  cpu: number;
  memory_mb: number;
  disk_mb: number;
}

export interface AppliedStarts {
  /** How many placements still fit their node (moved, or skipped because no longer pending). */
  fitted: number;
  /** The workloads moved to starting, in placement order: index into the input, and its node's outbox row. */
  moved: { index: number; commandId: number }[];
}

/** Batches up to this size run as a prepared statement. */
const SMALL_BATCH = 16;

/**
 * The capacity guard of every statement that places workloads (this apply, a submit's placed insert in
 * store/placed-insert.ts): the locked node row `l` still fits when its trigger-kept usage plus `cpu`,
 * `memory` and `disk` (SQL: the demand placed on it so far in this statement, its own included) stays
 * within its capacity.
 */
export function fitsLockedNodeSql(cpu: string, memory: string, disk: string): string {
  return `l.used_cpu::float8 + ${cpu} <= l.cpu + 1e-9
          AND l.used_memory_mb + ${memory} <= l.memory_mb
          AND l.used_disk_mb + ${disk} <= l.disk_mb`;
}

/**
 * Applies placements in one statement. A node's placements fit while the sum of their demands in
 * placement order, on top of the node's locked usage, stays within its capacity: the first that does not
 * fit and every later one on that node are conflicts (the caller replans them on a fresh view). A
 * placement whose workload is no longer pending is counted towards its node's demand (erring towards less
 * use) and not moved. Workloads are locked in id order after the nodes, so two concurrent appliers
 * cannot deadlock. `holder` skips the NOTIFY for agents it holds (enqueueCommands).
 */
export async function applyStarts(
  q: Queryable,
  starts: readonly PlannedStart[],
  holder?: string,
): Promise<AppliedStarts> {
  if (starts.length === 0) return { fitted: 0, moved: [] };
  const rows = await q.query<{
    kind: 'fitted' | 'queued' | 'moved';
    node_id: string | null;
    n: string | null;
  }>(
    `WITH p AS (
       SELECT * FROM unnest($1::text[], $2::text[], $3::float8[], $4::bigint[], $5::bigint[])
         WITH ORDINALITY AS p(id, node_id, cpu, memory_mb, disk_mb, i)
     ), locked AS (
       SELECT id, name, status, connected, cpu, memory_mb, disk_mb, used_cpu, used_memory_mb, used_disk_mb FROM nodes
        WHERE id = ANY($2::text[]) ORDER BY id FOR UPDATE
     ), want AS (
       SELECT p.id, p.node_id, p.i, l.name,
              ${fitsLockedNodeSql('sum(p.cpu) OVER w', 'sum(p.memory_mb) OVER w', 'sum(p.disk_mb) OVER w')} AS fit
         FROM p JOIN locked l ON l.id = p.node_id AND l.status = 'ready' AND l.connected
       WINDOW w AS (PARTITION BY p.node_id ORDER BY p.i)
     ), lockw AS (
       -- Carries the placement along, so the update joins one CTE to the table's key: joining two CTEs
       -- (no statistics, estimated at a row or two) let PostgreSQL pick a nested loop over want × lockw,
       -- 47 of 90 ms for 400 placements. The status is tested by the update, against a column rather
       -- than the constant: with the constant, a scan of every pending workload (the partial index)
       -- could drive either join instead of the key.
       SELECT w.id, want.node_id, want.i, want.name, 'pending'::text AS expected FROM want
         JOIN workloads w ON w.id = want.id
        WHERE want.fit
        ORDER BY w.id FOR UPDATE OF w
     ), moved AS (
       UPDATE workloads SET status = 'starting', updated_at = now(), pending_reason = NULL, node_id = lockw.node_id
         FROM lockw
        WHERE workloads.id = lockw.id AND workloads.status = lockw.expected
       RETURNING workloads.id, lockw.node_id, lockw.i, lockw.name
     ), ev AS (
       INSERT INTO workload_events (workload_id, from_status, to_status, reason)
       SELECT id, 'pending', 'starting', 'placed on ' || name FROM moved ORDER BY i
     ), ${queueStartRefsSql('moved')}, ${wakeHoldersSql('$6', '$7')}
     -- Three kinds of rows, joined here rather than in SQL (a join of two CTEs has no statistics, and
     -- the planner's nested loop over moved × queued cost 120 ms for 1,400 placements on 1,000 nodes).
     -- The moved placements come as one row of their positions (their nodes are the input's): a row
     -- each was ~10,000 rows for the coordinator to parse in the schedule bench.
     SELECT 'fitted' AS kind, NULL::text AS node_id, (SELECT count(*) FROM want WHERE fit)::text AS n
       FROM (SELECT count(*) AS woken FROM woken) w
     UNION ALL SELECT 'queued', node_id, id::text FROM queued
     UNION ALL SELECT 'moved', NULL, string_agg(i::text, ',' ORDER BY i) FROM moved`,
    [
      starts.map((s) => s.id),
      starts.map((s) => s.nodeId),
      starts.map((s) => s.cpu),
      starts.map((s) => s.memory_mb),
      starts.map((s) => s.disk_mb),
      COMMANDS_CHANNEL,
      holder ?? null,
    ],
    // Prepared (planned once per connection) only for small batches, a submit's: planning is most of
    // this statement's time there, while a generic plan would not know a large batch's size.
    starts.length <= SMALL_BATCH ? 'mxc_apply_starts_small' : undefined,
  );
  let fitted = 0;
  const commandOf = new Map<string, number>();
  let positions = '';
  for (const r of rows) {
    if (r.kind === 'fitted') fitted = Number(r.n);
    else if (r.kind === 'queued') commandOf.set(r.node_id!, Number(r.n));
    else positions = r.n ?? '';
  }
  const moved = positions
    ? positions.split(',').map((p) => {
        const index = Number(p) - 1;
        return { index, commandId: commandOf.get(starts[index]!.nodeId)! };
      })
    : [];
  return { fitted, moved };
}
