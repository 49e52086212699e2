/**
 * Declaring a silent node down in one transaction: its stopping workloads end, the others are lost
 * and replaced elsewhere.
 */
import { ACTIVE_STATUSES } from './core/lifecycle.js';
import type { Db } from './store/db.js';
import * as nodes from './store/nodes.js';
import * as wl from './store/workloads.js';
import { replaceWorkloads } from './workload-changes.js';

/** Marks the node down and returns the workloads that were active on it. */
export async function markNodeDown(
  db: Db,
  n: nodes.NodeRow,
  heartbeatTtlMs: number,
): Promise<wl.WorkloadRow[]> {
  return db.tx(async (q) => {
    await nodes.setNodeStatus(q, n.id, 'down');
    const active = await wl.listWorkloads(q, {
      nodeId: n.id,
      status: [...ACTIVE_STATUSES],
      limit: 100_000,
    });
    for (const w of active) {
      if (w.status === 'stopping')
        await wl.transition(q, w, 'stopped', `node ${n.name} went down while stopping`);
      else await wl.transition(q, w, 'lost', `node ${n.name} missed heartbeats for ${heartbeatTtlMs} ms`);
    }
    await replaceWorkloads(
      q,
      active.filter((w) => w.status !== 'stopping'),
      `rescheduled: node ${n.name} down`,
    );
    return active;
  });
}
