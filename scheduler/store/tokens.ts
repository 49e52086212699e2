/** SQL for `api_tokens`: named client and agent tokens with their scope, kept as SHA-256 digests only. */
import type { Queryable } from './db.js';

export interface TokenRow {
  id: string;
  name: string;
  kind: 'client' | 'agent';
  /** read, push or admin (agents: read). */
  scope: 'read' | 'push' | 'admin';
  token_hash: string;
  created_at: Date;
}

export async function insertToken(
  q: Queryable,
  t: { id: string; name: string; kind: 'client' | 'agent'; scope: TokenRow['scope']; hash: string },
): Promise<void> {
  await q.query('INSERT INTO api_tokens (id, name, kind, scope, token_hash) VALUES ($1, $2, $3, $4, $5)', [
    t.id,
    t.name,
    t.kind,
    t.scope,
    t.hash,
  ]);
}

/**
 * Whether the database holds a client token, read without migrating it: a database not migrated yet
 * (no `api_tokens` table) holds none.
 */
export async function hasStoredClientTokens(q: Queryable): Promise<boolean> {
  const [t] = await q.query<{ present: boolean }>("SELECT to_regclass('api_tokens') IS NOT NULL AS present");
  if (!t?.present) return false;
  return (await q.query("SELECT 1 FROM api_tokens WHERE kind = 'client' LIMIT 1")).length > 0;
}

export async function listTokens(q: Queryable): Promise<TokenRow[]> {
  return q.query<TokenRow>('SELECT * FROM api_tokens ORDER BY name');
}

export async function deleteToken(q: Queryable, name: string): Promise<boolean> {
  const rows = await q.query('DELETE FROM api_tokens WHERE name = $1 RETURNING id', [name]);
  return rows.length > 0;
}
