/**
 * A node is looked up by id or name, the id first: an agent that names its node after another node's
 * id must not make a drain or a removal by that id reach its own node instead.
 */
import { expect, it } from 'vitest';
import { openPglite } from '../../scheduler/store/db.js';
import { migrate } from '../../scheduler/store/migrate.js';
import * as nodes from '../../scheduler/store/nodes.js';
import { PLAIN_CAPABILITIES } from '../helpers/protocol-agent.js';

it('an id names its node even when another node is named after it', async () => {
  const db = await openPglite(null);
  try {
    await migrate(db);
    const node = (id: string, name: string) =>
      nodes.upsertNode(db, {
        id,
        name,
        resources: { cpu: 1, memory_mb: 64, disk_mb: 0 },
        capabilities: PLAIN_CAPABILITIES,
        version: 'test',
      });
    await node('n-impostor', 'n-real'); // registered first, named after the real node's id
    await node('n-real', 'real');
    expect((await nodes.getNode(db, 'n-real'))?.name).toBe('real');
    expect((await nodes.getNode(db, 'real'))?.id).toBe('n-real');
    expect((await nodes.getNode(db, 'n-impostor'))?.name).toBe('n-real');
  } finally {
    await db.close();
  }
});
