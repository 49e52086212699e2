/** SQL for `api_tokens`: named client and agent tokens, kept as SHA-256 digests only. */
import type { Queryable } from './db.js';

export interface TokenRow {
  id: string;
  name: string;
  kind: 'client' | 'agent';
  token_hash: string;
  created_at: Date;
}

export async function insertToken(
  q: Queryable,
  t: { id: string; name: string; kind: 'client' | 'agent'; hash: string },
): Promise<void> {
  await q.query('INSERT INTO api_tokens (id, name, kind, token_hash) VALUES ($1, $2, $3, $4)', [
    t.id,
    t.name,
    t.kind,
    t.hash,
  ]);
}

export async function listTokens(q: Queryable): Promise<TokenRow[]> {
  return q.query<TokenRow>('SELECT * FROM api_tokens ORDER BY name');
}

export async function deleteToken(q: Queryable, name: string): Promise<boolean> {
  const rows = await q.query('DELETE FROM api_tokens WHERE name = $1 RETURNING id', [name]);
  return rows.length > 0;
}
