/**
 * SQL for `node_secrets`: the hash of the secret a node received on its first join (Nomad's node
 * secret). Kept out of `nodes` so no node view can ever carry it.
 */
import type { Queryable } from './db.js';

export async function getSecretHash(q: Queryable, nodeId: string): Promise<string | null> {
  const rows = await q.query<{ secret_hash: string }>(
    'SELECT secret_hash FROM node_secrets WHERE node_id = $1',
    [nodeId],
  );
  return rows[0]?.secret_hash ?? null;
}

export async function setSecretHash(q: Queryable, nodeId: string, hash: string): Promise<void> {
  await q.query(
    `INSERT INTO node_secrets (node_id, secret_hash) VALUES ($1, $2)
     ON CONFLICT (node_id) DO UPDATE SET secret_hash = EXCLUDED.secret_hash, created_at = now()`,
    [nodeId, hash],
  );
}
