/** SQL for the `nodes` table: agents that joined, their resources, capabilities and liveness. */
import type { Capabilities, NodeResources } from '../../spec/messages.js';
import type { Queryable } from './db.js';

export interface NodeRow {
  id: string;
  name: string;
  status: 'ready' | 'down' | 'draining';
  /** Whether its agent holds a socket to a coordinator (migration 017); nothing is placed on it while not. */
  connected: boolean;
  cpu: number;
  memory_mb: number;
  disk_mb: number;
  capabilities: Capabilities;
  /** What its active workloads hold (kept by triggers on workloads, migration 011). */
  used_cpu: number;
  used_memory_mb: number;
  used_disk_mb: number;
  version: string;
  last_seen_at: Date;
  created_at: Date;
  updated_at: Date;
}

/** What the scheduler sees of a node: its row without the liveness and bookkeeping columns. */
export type SchedulingNodeRow = Pick<
  NodeRow,
  | 'id'
  | 'name'
  | 'status'
  | 'connected'
  | 'cpu'
  | 'memory_mb'
  | 'disk_mb'
  | 'capabilities'
  | 'used_cpu'
  | 'used_memory_mb'
  | 'used_disk_mb'
>;

/** What a node's active workloads hold, as its row keeps it. */
export const usedOf = (n: SchedulingNodeRow): { cpu: number; memory_mb: number; disk_mb: number } => ({
  cpu: n.used_cpu,
  memory_mb: n.used_memory_mb,
  disk_mb: n.used_disk_mb,
});

/** Registers a node by name, or refreshes it when it rejoins; a draining node stays draining. */
export async function upsertNode(
  q: Queryable,
  n: { id: string; name: string; resources: NodeResources; capabilities: Capabilities; version: string },
): Promise<NodeRow> {
  const rows = await q.query<NodeRow>(
    `INSERT INTO nodes (id, name, status, cpu, memory_mb, disk_mb, capabilities, version, last_seen_at)
     VALUES ($1, $2, 'ready', $3, $4, $5, $6, $7, now())
     ON CONFLICT (name) DO UPDATE SET
       status = CASE WHEN nodes.status = 'draining' THEN 'draining' ELSE 'ready' END,
       cpu = EXCLUDED.cpu, memory_mb = EXCLUDED.memory_mb, disk_mb = EXCLUDED.disk_mb,
       capabilities = EXCLUDED.capabilities, version = EXCLUDED.version, last_seen_at = now(), updated_at = now()
     RETURNING *`,
    [
      n.id,
      n.name,
      n.resources.cpu,
      n.resources.memory_mb,
      n.resources.disk_mb,
      JSON.stringify(n.capabilities),
      n.version,
    ],
  );
  return rows[0]!;
}

export async function listNodes(q: Queryable): Promise<NodeRow[]> {
  return q.query<NodeRow>('SELECT * FROM nodes ORDER BY name');
}

/** The nodes whose scheduling-relevant columns changed since `watermark`, and the next watermark. */
export interface NodeChanges {
  /**
   * The oldest transaction still running when the read was taken (its snapshot's xmin): every change
   * committed later carries a transaction id at least this, so the next read starts here.
   */
  watermark: string;
  /** How many nodes exist (a removed node shows as a count below the view's). */
  total: number;
  rows: SchedulingNodeRow[];
}

/**
 * Nodes changed by transactions from `watermark` on (all of them when null), read in one statement so
 * the rows, the count and the next watermark come from one snapshot. A row can come twice (a
 * transaction still running at one read is re-read at the next): the reader overwrites, so that is fine.
 */
export async function nodesChangedSince(q: Queryable, watermark: string | null): Promise<NodeChanges> {
  // Two texts, so that the prepared delta read (every pass's) has a plan of its own for change_xid.
  // The columns the scheduler sees only: every pass reads each node its last apply changed, and the
  // row's three timestamps were most of the parsing (postgres-date, ~3 µs each).
  const rows = await q.query<SchedulingNodeRow & { watermark: string; total: number }>(
    `SELECT s.watermark, s.total, n.id, n.name, n.status, n.connected, n.cpu, n.memory_mb, n.disk_mb, n.capabilities,
            n.used_cpu, n.used_memory_mb, n.used_disk_mb FROM
       (SELECT pg_snapshot_xmin(pg_current_snapshot())::text AS watermark,
               (SELECT count(*)::int FROM nodes) AS total) s
       LEFT JOIN nodes n ON ${watermark === null ? 'true' : 'n.change_xid >= $1::xid8'}`,
    watermark === null ? [] : [watermark],
    watermark === null ? undefined : 'mxc_nodes_changed_since',
  );
  const first = rows[0]!;
  return {
    watermark: first.watermark,
    total: first.total,
    rows: first.id === null ? [] : rows,
  };
}

/** One page of nodes in name order (names are unique): those after `after`, at most `limit`. */
export async function listNodesPage(
  q: Queryable,
  opts: { after?: string; limit: number },
): Promise<NodeRow[]> {
  return q.query<NodeRow>(
    'SELECT * FROM nodes WHERE ($1::text IS NULL OR name > $1) ORDER BY name LIMIT $2',
    [opts.after ?? null, opts.limit],
  );
}

export async function getNode(q: Queryable, idOrName: string): Promise<NodeRow | null> {
  // An id wins over a name: an agent may name its node after another node's id, and a drain or a
  // removal by that id must still reach the node it names.
  const rows = await q.query<NodeRow>(
    'SELECT * FROM nodes WHERE id = $1 OR name = $1 ORDER BY (id = $1) DESC LIMIT 1',
    [idOrName],
  );
  return rows[0] ?? null;
}

export async function getNodeByName(q: Queryable, name: string): Promise<NodeRow | null> {
  const rows = await q.query<NodeRow>('SELECT * FROM nodes WHERE name = $1', [name]);
  return rows[0] ?? null;
}

/**
 * Locks a node row until the transaction ends. A removal takes it before it reads the node's workloads:
 * a placement that locked the node first has committed by then, and one after it waits, then finds no
 * node row and places nothing there (no foreign key checks workloads.node_id: migration 015).
 */
export async function lockNode(q: Queryable, id: string): Promise<boolean> {
  const rows = await q.query('SELECT id FROM nodes WHERE id = $1 FOR UPDATE', [id]);
  return rows.length > 0;
}

/**
 * Forgets a node (an operator's removal): its workloads keep their history but no longer name it;
 * its store paths, secret, socket claim and queued commands go with it (ON DELETE CASCADE). Call it
 * in the transaction that took lockNode before reading the node's workloads.
 */
export async function deleteNode(q: Queryable, id: string): Promise<boolean> {
  await q.query('UPDATE workloads SET node_id = NULL WHERE node_id = $1', [id]);
  const rows = await q.query('DELETE FROM nodes WHERE id = $1 RETURNING id', [id]);
  return rows.length > 0;
}

export async function setNodeStatus(
  q: Queryable,
  id: string,
  status: NodeRow['status'],
): Promise<NodeRow | null> {
  const rows = await q.query<NodeRow>(
    'UPDATE nodes SET status = $2, updated_at = now() WHERE id = $1 RETURNING *',
    [id, status],
  );
  return rows[0] ?? null;
}

/**
 * Persists last-seen times for many nodes in one statement (heartbeats are batched in memory). Each
 * time is given as an age in ms and stored on the database clock, which the leader judges by. Returns
 * the status of each node touched, so the holder can close sockets of nodes declared down.
 */
export async function touchNodes(
  q: Queryable,
  seen: { id: string; ageMs: number }[],
): Promise<{ id: string; status: NodeRow['status'] }[]> {
  if (seen.length === 0) return [];
  // Rows are locked in id order, as the placement apply does (store/placement-apply.ts), so a flush
  // never deadlocks with a plan's apply.
  const sorted = [...seen].sort((a, b) => (a.id < b.id ? -1 : a.id > b.id ? 1 : 0));
  return q.query<{ id: string; status: NodeRow['status'] }>(
    `WITH locked AS (SELECT id FROM nodes WHERE id = ANY($1::text[]) ORDER BY id FOR UPDATE)
     UPDATE nodes SET last_seen_at = GREATEST(nodes.last_seen_at, now() - v.age * interval '1 millisecond')
     FROM (SELECT unnest($1::text[]) AS id, unnest($2::double precision[]) AS age) AS v, locked
     WHERE nodes.id = v.id AND locked.id = v.id
     RETURNING nodes.id, nodes.status`,
    [sorted.map((s) => s.id), sorted.map((s) => Math.max(0, s.ageMs))],
  );
}

/** A node's liveness as stored: its last heartbeat and its socket holder's last registry beat. */
export interface NodeLivenessRow {
  id: string;
  name: string;
  status: NodeRow['status'];
  last_seen_at: Date;
  /** The last beat of the coordinator claiming its socket; null when nobody claims it. */
  holder_beat_at: Date | null;
  /** The database clock's now, which the leader judges by. */
  db_now: Date;
}

/**
 * The liveness of nodes not yet down that were last heard from more than `silentForMs` ago on the
 * database clock (a cheap necessary condition: silence never exceeds that), or of one node
 * (`onlyId`, row-locked for a verdict's re-check). Whether they are silent is core/reconcile/node's call.
 */
export async function nodeLiveness(
  q: Queryable,
  silentForMs: number,
  onlyId?: string,
): Promise<NodeLivenessRow[]> {
  return q.query<NodeLivenessRow>(
    `SELECT n.id, n.name, n.status, n.last_seen_at, c.last_seen_at AS holder_beat_at, now() AS db_now
       FROM nodes n
       LEFT JOIN node_sessions s ON s.node_id = n.id
       LEFT JOIN mxc_coordinators c ON c.id = s.coordinator_id
     WHERE n.status <> 'down' AND ($2::text IS NULL OR n.id = $2)
       AND n.last_seen_at < now() - $1 * interval '1 millisecond'
     ORDER BY n.id
     ${onlyId ? 'FOR UPDATE OF n' : ''}`,
    [silentForMs, onlyId ?? null],
  );
}

/**
 * Records that `coordinatorId` now holds the node's socket (and that its agent is connected again); the
 * new epoch fences the previous holder.
 */
export async function claimSession(q: Queryable, nodeId: string, coordinatorId: string): Promise<number> {
  const rows = await q.query<{ conn_epoch: number }>(
    `WITH claimed AS (
       INSERT INTO node_sessions (node_id, coordinator_id, conn_epoch) VALUES ($1, $2, 1)
       ON CONFLICT (node_id) DO UPDATE SET coordinator_id = EXCLUDED.coordinator_id,
         conn_epoch = node_sessions.conn_epoch + 1, connected_at = now()
       RETURNING conn_epoch
     ), back AS (
       UPDATE nodes SET connected = true WHERE id = $1 AND NOT connected
     )
     SELECT conn_epoch FROM claimed`,
    [nodeId, coordinatorId],
  );
  return rows[0]!.conn_epoch;
}

/**
 * The socket closed: the claim is cleared, and the node marked disconnected (nothing more is placed on
 * it), unless a newer connection took it meanwhile.
 */
export async function releaseSession(
  q: Queryable,
  nodeId: string,
  coordinatorId: string,
  epoch: number,
): Promise<void> {
  await q.query(
    `WITH released AS (
       UPDATE node_sessions SET coordinator_id = NULL
        WHERE node_id = $1 AND coordinator_id = $2 AND conn_epoch = $3
       RETURNING node_id
     )
     UPDATE nodes SET connected = false FROM released WHERE nodes.id = released.node_id AND nodes.connected`,
    [nodeId, coordinatorId, epoch],
  );
}

/** Nodes whose socket a live coordinator (seen within `withinMs`) holds. */
export async function heldNodeIds(q: Queryable, withinMs: number): Promise<Set<string>> {
  const rows = await q.query<{ node_id: string }>(
    `SELECT s.node_id FROM node_sessions s JOIN mxc_coordinators c ON c.id = s.coordinator_id
     WHERE c.last_seen_at > now() - $1 * interval '1 millisecond'`,
    [withinMs],
  );
  return new Set(rows.map((r) => r.node_id));
}

/** Whether `coordinatorId` still holds the node's socket at `epoch`. */
export async function holdsSession(
  q: Queryable,
  nodeId: string,
  coordinatorId: string,
  epoch: number,
): Promise<boolean> {
  const rows = await q.query(
    'SELECT 1 FROM node_sessions WHERE node_id = $1 AND coordinator_id = $2 AND conn_epoch = $3',
    [nodeId, coordinatorId, epoch],
  );
  return rows.length > 0;
}
