/**
 * SQL for `agent_commands`, the outbox: a command decided on any coordinator for an agent whose socket
 * another coordinator holds waits here until that holder takes it (woken by NOTIFY, or by polling).
 */
import type { Queryable } from './db.js';

export const COMMANDS_CHANNEL = 'mxc_agent_commands';

/** What the outbox carries: agent messages, or a start by reference (the holder reads the spec). */
export type OutboxMessage =
  | { type: 'start_ref'; workload_id: string }
  | { type: 'stop'; workload_id: string; reason?: string }
  | { type: 'prewarm'; job_id: string; paths: string[] };

export interface CommandRow {
  id: number;
  node_id: string;
  message: OutboxMessage;
}

/** Queues a command and wakes its holder (NOTIFY is delivered at commit, so call it in the deciding transaction). */
export async function enqueueCommand(q: Queryable, nodeId: string, message: OutboxMessage): Promise<void> {
  await q.query('INSERT INTO agent_commands (node_id, message) VALUES ($1, $2)', [
    nodeId,
    JSON.stringify(message),
  ]);
  await q.query('SELECT pg_notify($1, $2)', [COMMANDS_CHANNEL, nodeId]);
}

/**
 * Takes (deletes and returns, oldest first) the commands of the nodes whose sockets `coordinatorId`
 * holds at the given epochs; a stale holder's epoch matches nothing, so it takes nothing.
 */
export async function takeCommands(
  q: Queryable,
  coordinatorId: string,
  held: { nodeId: string; epoch: number }[],
  limit = 1000,
): Promise<CommandRow[]> {
  if (held.length === 0) return [];
  return q
    .query<CommandRow>(
      `DELETE FROM agent_commands WHERE id IN (
       SELECT c.id FROM agent_commands c
         JOIN node_sessions s ON s.node_id = c.node_id AND s.coordinator_id = $1
         JOIN (SELECT unnest($2::text[]) AS node_id, unnest($3::bigint[]) AS epoch) h
           ON h.node_id = c.node_id AND h.epoch = s.conn_epoch
       ORDER BY c.id LIMIT $4 FOR UPDATE OF c SKIP LOCKED)
     RETURNING id, node_id, message`,
      [coordinatorId, held.map((h) => h.nodeId), held.map((h) => h.epoch), limit],
    )
    .then((rows) => rows.sort((a, b) => a.id - b.id));
}
