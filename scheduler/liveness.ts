/**
 * Liveness verdicts (leader only), judged on the database clock: declaring a silent node down in one transaction: its stopping workloads end, the others are lost
 * and replaced elsewhere.
 */
import { ACTIVE_STATUSES } from './core/lifecycle.js';
import type { Db, Queryable } from './store/db.js';
import * as nodes from './store/nodes.js';
import * as wl from './store/workloads.js';
import { replaceWorkloads } from './workload-changes.js';

/**
 * Marks the node down and returns the workloads that were active on it. With `verdict` (the leader's
 * liveness sweep): the lease is fenced first, in the same transaction, so a deposed leader's verdict
 * fails; and the node's silence is re-checked under its row lock, returning null when it spoke since.
 */
export async function markNodeDown(
  db: Db,
  n: nodes.NodeRow,
  heartbeatTtlMs: number,
  verdict?: { coordinatorDeadMs: number; fence: (q: Queryable) => Promise<void> },
): Promise<wl.WorkloadRow[] | null> {
  return db.tx(async (q) => {
    if (verdict) {
      await verdict.fence(q);
      const still = await nodes.silentNodes(q, heartbeatTtlMs, verdict.coordinatorDeadMs, n.id);
      if (still.length === 0) return null;
    }
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
