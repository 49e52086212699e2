/**
 * Declaring a silent node down in one transaction: its stopping workloads end, the others are lost
 * and replaced elsewhere.
 */
import { ACTIVE_STATUSES } from './core/lifecycle.js';
import type { Db, Queryable } from './store/db.js';
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
    return loseNodeWorkloads(q, n, `node ${n.name} missed heartbeats for ${heartbeatTtlMs} ms`);
  });
}

/** Ends a node's stopping workloads and loses (and replaces) the others; returns them all. */
export async function loseNodeWorkloads(
  q: Queryable,
  n: nodes.NodeRow,
  why: string,
): Promise<wl.WorkloadRow[]> {
  const active = await wl.listWorkloads(q, {
    nodeId: n.id,
    status: [...ACTIVE_STATUSES],
    limit: 100_000,
  });
  const lost: wl.WorkloadRow[] = [];
  for (const w of active) {
    const moved = await wl.transitionWith(q, w, (cur) =>
      cur.status === 'stopping'
        ? { to: 'stopped', reason: `node ${n.name} went away while stopping` }
        : cur.status === 'starting' || cur.status === 'running'
          ? { to: 'lost', reason: why }
          : null,
    );
    // Only what this change turned lost is replaced: a workload that ended meanwhile was handled there.
    if (moved?.status === 'lost') lost.push(w);
  }
  await replaceWorkloads(q, lost, `rescheduled: ${why}`);
  return active;
}
