/**
 * SQL for `agent_commands`, the outbox: every decision that sends an agent a command writes its row in
 * the deciding transaction, so a committed decision is never lost to a crash before delivery. The
 * coordinator holding that agent's socket takes the rows (right after its own commits, when NOTIFY
 * wakes it, by polling, and after a reconnect) and sends them in order.
 */
import type { WorkloadStatus } from '../../spec/messages.js';
import type { Queryable } from './db.js';

export const COMMANDS_CHANNEL = 'mxc_agent_commands';

/**
 * What the outbox carries: agent messages, or starts by reference (the holder reads each spec), one row
 * for all of an apply transaction's starts on a node (a row from before carries one `workload_id`).
 */
export type OutboxMessage =
  | { type: 'start_ref'; workload_ids: string[] }
  | { type: 'stop'; workload_id: string; reason?: string }
  | { type: 'prewarm'; job_id: string; paths: string[] };

/** A command as taken: a start by reference is one workload's. */
export type TakenMessage =
  | { type: 'start_ref'; workload_id: string }
  | Exclude<OutboxMessage, { type: 'start_ref' }>;

export interface QueuedCommand {
  nodeId: string;
  message: OutboxMessage;
}

export interface CommandRow {
  id: number;
  node_id: string;
  message: TakenMessage;
  /** For a start_ref: the workload as it is when taken (null when it is gone). */
  workload: {
    status: WorkloadStatus;
    node_id: string | null;
    job_id: string;
    job_version: number;
    instance: number;
  } | null;
}

/**
 * The `queued` step of a statement that moved workloads to starting in a CTE named `moved` (with `id`,
 * `node_id` and the placement's position `i`): one start_ref row a node, its workloads and the rows in
 * placement order. Shared by the placement apply and a submit's placed insert.
 */
export function queueStartRefsSql(moved: string): string {
  return `queued AS (
       INSERT INTO agent_commands (node_id, message)
       SELECT node_id, jsonb_build_object('type', 'start_ref', 'workload_ids', jsonb_agg(id ORDER BY i))
         FROM ${moved} GROUP BY node_id ORDER BY min(i)
       RETURNING id, node_id
     )`;
}

/**
 * The `woken` step of a statement that queues commands in a CTE named `queued` (with `node_id`):
 * NOTIFYs `channel` (a parameter holding COMMANDS_CHANNEL) once for each of their nodes, except the
 * nodes whose socket `holder` (a parameter, NULL for none) holds itself. Shared with the placement apply.
 */
export function wakeHoldersSql(channel: string, holder: string): string {
  return `woken AS (
       SELECT pg_notify(${channel}, node_id) FROM (SELECT DISTINCT node_id FROM queued) AS w
        WHERE ${holder}::text IS NULL OR NOT EXISTS (
          SELECT 1 FROM node_sessions s WHERE s.node_id = w.node_id AND s.coordinator_id = ${holder})
     )`;
}

/**
 * Queues commands and wakes their holders, in one statement; returns the rows' ids in `cmds` order. Call it inside the deciding transaction:
 * the rows commit (or roll back) with the decision, and NOTIFY is delivered only at commit. `holder`
 * (the deciding coordinator's id) skips the NOTIFY for the agents whose sockets it holds itself: it
 * takes those right after its commit, and NOTIFY is not free (it serialises commits).
 */
export async function enqueueCommands(
  q: Queryable,
  cmds: readonly QueuedCommand[],
  opts: { holder?: string } = {},
): Promise<number[]> {
  if (cmds.length === 0) return [];
  const rows = await q.query<{ id: number }>(
    `WITH queued AS (
       INSERT INTO agent_commands (node_id, message)
       SELECT n, m::jsonb FROM unnest($2::text[], $3::text[]) WITH ORDINALITY AS c(n, m, i) ORDER BY i
       RETURNING id, node_id
     ), ${wakeHoldersSql('$1', '$4')}
     SELECT id FROM queued WHERE (SELECT count(*) FROM woken) >= 0 ORDER BY id`,
    [
      COMMANDS_CHANNEL,
      cmds.map((c) => c.nodeId),
      cmds.map((c) => JSON.stringify(c.message)),
      opts.holder ?? null,
    ],
  );
  return rows.map((r) => r.id);
}

/** Queues one command (see enqueueCommands). */
export async function enqueueCommand(q: Queryable, nodeId: string, message: OutboxMessage): Promise<void> {
  await enqueueCommands(q, [{ nodeId, message }]);
}

/**
 * Deletes commands the holder has sent itself straight after its deciding commit, while it still holds
 * their agents' sockets at the given epochs; a row whose agent is held elsewhere by now stays for the
 * new holder (a start sent twice is harmless: the agent answers a start of a workload it has with its
 * status).
 */
export async function deleteSent(
  q: Queryable,
  coordinatorId: string,
  sent: readonly { id: number; nodeId: string; epoch: number }[],
): Promise<number[]> {
  if (sent.length === 0) return [];
  const rows = await q.query<{ id: number }>(
    `DELETE FROM agent_commands c
      USING unnest($2::bigint[], $3::text[], $4::bigint[]) AS h(id, node_id, epoch), node_sessions s
      WHERE c.id = h.id AND c.node_id = h.node_id
        AND s.node_id = h.node_id AND s.coordinator_id = $1 AND s.conn_epoch = h.epoch
      RETURNING c.id`,
    [coordinatorId, sent.map((c) => c.id), sent.map((c) => c.nodeId), sent.map((c) => c.epoch)],
  );
  return rows.map((r) => r.id);
}

/**
 * Takes (deletes and returns, oldest first) at most `limit` commands of the nodes whose sockets
 * `coordinatorId` holds at the given epochs; a stale holder's epoch matches nothing, so it takes nothing.
 * A row of starts by reference comes back as one start per workload, in order, each with its
 * workload's current row, read in the same statement.
 */
export async function takeCommands(
  q: Queryable,
  coordinatorId: string,
  held: { nodeId: string; epoch: number }[],
  limit = 1000,
): Promise<CommandRow[]> {
  if (held.length === 0) return [];
  const rows = await q.query<{
    id: number;
    node_id: string;
    message: OutboxMessage;
    ref: string | null;
    status: WorkloadStatus | null;
    workload_node: string | null;
    job_id: string | null;
    job_version: number | null;
    instance: number | null;
  }>(
    // The workload is read per reference (OFFSET 0 keeps the lookup by primary key, whatever the
    // planner guesses of the array's length).
    `WITH taken AS (
       DELETE FROM agent_commands WHERE id IN (
         SELECT c.id FROM agent_commands c
           JOIN node_sessions s ON s.node_id = c.node_id AND s.coordinator_id = $1
           JOIN (SELECT unnest($2::text[]) AS node_id, unnest($3::bigint[]) AS epoch) h
             ON h.node_id = c.node_id AND h.epoch = s.conn_epoch
         ORDER BY c.id LIMIT $4 FOR UPDATE OF c SKIP LOCKED)
       RETURNING id, node_id, message
     )
     SELECT t.id, t.node_id, t.message, r.ref, w.status, w.node_id AS workload_node, w.job_id, w.job_version,
            w.instance
       FROM taken t
       LEFT JOIN LATERAL jsonb_array_elements_text(
         CASE WHEN t.message->>'type' = 'start_ref'
           THEN COALESCE(t.message->'workload_ids', jsonb_build_array(t.message->'workload_id')) END
       ) WITH ORDINALITY AS r(ref, i) ON true
       LEFT JOIN LATERAL (
         SELECT w.status, w.node_id, w.job_id, w.job_version, w.instance FROM workloads w WHERE w.id = r.ref
         OFFSET 0
       ) w ON true
      ORDER BY t.id, r.i`,
    [coordinatorId, held.map((h) => h.nodeId), held.map((h) => h.epoch), limit],
  );
  return rows.map((r) => ({
    id: r.id,
    node_id: r.node_id,
    message: r.message.type === 'start_ref' ? { type: 'start_ref', workload_id: r.ref! } : r.message,
    workload: r.status
      ? {
          status: r.status,
          node_id: r.workload_node,
          job_id: r.job_id!,
          job_version: r.job_version!,
          instance: r.instance!,
        }
      : null,
  }));
}
