/** SQL for the `nodes` table: agents that joined, their resources, capabilities and liveness. */
import type { Capabilities, NodeResources } from '../../spec/messages.js';
import type { Queryable } from './db.js';

export interface NodeRow {
  id: string;
  name: string;
  status: 'ready' | 'down' | 'draining';
  cpu: number;
  memory_mb: number;
  disk_mb: number;
  capabilities: Capabilities;
  version: string;
  last_seen_at: Date;
  created_at: Date;
  updated_at: Date;
}

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

export async function getNode(q: Queryable, idOrName: string): Promise<NodeRow | null> {
  const rows = await q.query<NodeRow>('SELECT * FROM nodes WHERE id = $1 OR name = $1', [idOrName]);
  return rows[0] ?? null;
}

export async function getNodeByName(q: Queryable, name: string): Promise<NodeRow | null> {
  const rows = await q.query<NodeRow>('SELECT * FROM nodes WHERE name = $1', [name]);
  return rows[0] ?? null;
}

/**
 * Forgets a node (an operator's removal): its workloads keep their history but no longer name it;
 * its store paths, secret, socket claim and queued commands go with it (ON DELETE CASCADE).
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

/** Persists last-seen times for many nodes in one statement (heartbeats are batched in memory). */
export async function touchNodes(q: Queryable, seen: { id: string; at: Date }[]): Promise<void> {
  if (seen.length === 0) return;
  // Rows are locked in id order, as lockNodes does, so a flush never deadlocks with a plan's apply.
  const sorted = [...seen].sort((a, b) => (a.id < b.id ? -1 : a.id > b.id ? 1 : 0));
  await q.query(
    `WITH locked AS (SELECT id FROM nodes WHERE id = ANY($1::text[]) ORDER BY id FOR UPDATE)
     UPDATE nodes SET last_seen_at = v.at
     FROM (SELECT unnest($1::text[]) AS id, unnest($2::timestamptz[]) AS at) AS v, locked
     WHERE nodes.id = v.id AND locked.id = v.id AND v.at > nodes.last_seen_at`,
    [sorted.map((s) => s.id), sorted.map((s) => s.at.toISOString())],
  );
}

/** Locks the given nodes' rows for a plan's apply, in id order to avoid deadlocks. */
export async function lockNodes(q: Queryable, ids: string[]): Promise<NodeRow[]> {
  if (ids.length === 0) return [];
  return q.query<NodeRow>('SELECT * FROM nodes WHERE id = ANY($1::text[]) ORDER BY id FOR UPDATE', [ids]);
}
