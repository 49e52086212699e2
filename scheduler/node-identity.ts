/**
 * Node identity beyond a name (Nomad's node secret): the first join of a name issues a random secret
 * that the agent keeps in its state directory and presents on every reconnect. A hello for a known
 * node without it, or with a wrong one, is refused and changes nothing until an operator removes the
 * node. Only a hash is stored.
 */
import { createHash, randomBytes, timingSafeEqual } from 'node:crypto';
import type { AgentMessage } from '../spec/messages.js';
import { MxcError } from './errors.js';
import type { Queryable } from './store/db.js';
import * as secrets from './store/node-secrets.js';
import * as nodes from './store/nodes.js';

/** Serialises joins of one name (transaction-scoped, so it is safe behind PgBouncer). */
const JOIN_LOCK = 727_274_002;

const hashOf = (secret: string) => createHash('sha256').update(secret).digest('hex');

export const nodeSecretRefused = (name: string, presented: boolean) =>
  new MxcError(
    presented ? 'NODE_SECRET_MISMATCH' : 'NODE_SECRET_REQUIRED',
    403,
    `node "${name}" already joined and ${presented ? 'this agent presented a different node secret' : 'this agent presented no node secret'}; ` +
      `an agent keeps its secret in <state-dir>/node-secret.json. If the machine was really reinstalled, remove the old node ` +
      `with \`mxc nodes remove ${name}\` (DELETE /api/nodes/:id) and start the agent again`,
  );

/**
 * Admits a hello: checks the node secret of a known name, then registers or refreshes the node.
 * Returns the node and, on a first join (or for a node from before secrets existed), the new secret.
 */
export async function admitNode(
  q: Queryable,
  hello: Extract<AgentMessage, { type: 'hello' }>,
  newId: string,
): Promise<{ node: nodes.NodeRow; issuedSecret: string | null }> {
  await q.query('SELECT pg_advisory_xact_lock($1, hashtext($2))', [JOIN_LOCK, hello.name]);
  const existing = await nodes.getNodeByName(q, hello.name);
  let issue = true;
  if (existing) {
    const stored = await secrets.getSecretHash(q, existing.id);
    if (stored) {
      const presented = hello.secret ? Buffer.from(hashOf(hello.secret)) : null;
      if (!presented || !timingSafeEqual(presented, Buffer.from(stored)))
        throw nodeSecretRefused(hello.name, Boolean(hello.secret));
      issue = false;
    }
  }
  const node = await nodes.upsertNode(q, {
    id: existing?.id ?? newId,
    name: hello.name,
    resources: hello.resources,
    capabilities: hello.capabilities,
    version: hello.version,
  });
  if (!issue) return { node, issuedSecret: null };
  const secret = randomBytes(32).toString('base64url');
  await secrets.setSecretHash(q, node.id, hashOf(secret));
  return { node, issuedSecret: secret };
}
