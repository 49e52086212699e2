/**
 * Node-down handling in the store: reads the liveness snapshot (database clock) and a gone node's
 * workloads, asks core/reconcile/node what changes, and applies that with guarded transitions. A
 * verdict (leader only) is fenced and re-checked under the node's row lock in its own transaction.
 */
import { ACTIVE_STATUSES } from './core/lifecycle.js';
import {
  type DownVerdict,
  goneNodeChanges,
  goneNodeMove,
  judgeSilence,
  type LivenessSnapshot,
  type NodeLivenessView,
} from './core/reconcile/node.js';
import * as commands from './store/agent-commands.js';
import type { Db, Queryable } from './store/db.js';
import * as nodes from './store/nodes.js';
import * as wl from './store/workloads.js';
import { insertReplacements, jobReplacementViews } from './workload-changes.js';

export interface SilenceJudge {
  heartbeatTtlMs: number;
  coordinatorDeadMs: number;
  /**
   * The judge's remaining grace (start, election, stall): no verdict while > 0. Asked again right
   * before each verdict, so a stall while judging (our own flushes late) stops it.
   */
  graceRemainingMs: () => number;
  /** Re-checks the leader lease inside the verdict's transaction. */
  fence: (q: Queryable) => Promise<void>;
}

const livenessView = (r: nodes.NodeLivenessRow): NodeLivenessView => ({
  id: r.id,
  name: r.name,
  status: r.status,
  lastSeenAt: r.last_seen_at.getTime(),
  holderBeatAt: r.holder_beat_at?.getTime() ?? null,
});

/** The liveness snapshot of the given rows (all read in one statement, so one database `now`). */
function snapshotOf(rows: nodes.NodeLivenessRow[], judge: SilenceJudge): LivenessSnapshot {
  return {
    nodes: rows.map(livenessView),
    now: rows[0]?.db_now.getTime() ?? 0,
    ttlMs: judge.heartbeatTtlMs,
    coordinatorDeadMs: judge.coordinatorDeadMs,
    graceRemainingMs: judge.graceRemainingMs(),
  };
}

/**
 * The leader's liveness sweep: declares down the nodes silent past the TTL, each in its own fenced
 * transaction that re-checks its silence under the row lock. Returns each downed node with the
 * workloads that were active on it.
 */
export async function judgeSilentNodes(
  db: Db,
  judge: SilenceJudge,
): Promise<{ node: NodeLivenessView; active: wl.WorkloadRow[] }[]> {
  if (judge.graceRemainingMs() > 0) return [];
  const candidates = await nodes.nodeLiveness(db, judge.heartbeatTtlMs);
  const verdicts = judgeSilence(snapshotOf(candidates, judge));
  const out: { node: NodeLivenessView; active: wl.WorkloadRow[] }[] = [];
  for (const v of verdicts) {
    const n = livenessView(candidates.find((c) => c.id === v.nodeId)!);
    const active = await markNodeDown(db, { id: n.id, name: n.name }, judge.heartbeatTtlMs, judge);
    if (active) out.push({ node: n, active });
  }
  return out;
}

/**
 * Marks the node down and returns the workloads that were active on it. With `verdict` (the leader's
 * liveness sweep): the lease is fenced first, in the same transaction, so a deposed leader's verdict
 * fails; and the node's silence is judged again under its row lock, returning null when it spoke since.
 */
export async function markNodeDown(
  db: Db,
  n: { id: string; name: string },
  heartbeatTtlMs: number,
  verdict?: Omit<SilenceJudge, 'heartbeatTtlMs'>,
): Promise<wl.WorkloadRow[] | null> {
  return db.tx(async (q) => {
    let reason = `node ${n.name} missed heartbeats for ${heartbeatTtlMs} ms`;
    if (verdict) {
      await verdict.fence(q);
      const fresh = await nodes.nodeLiveness(q, heartbeatTtlMs, n.id);
      const [still]: DownVerdict[] = judgeSilence(snapshotOf(fresh, { ...verdict, heartbeatTtlMs }));
      if (!still) return null;
      reason = still.reason;
    }
    await nodes.setNodeStatus(q, n.id, 'down');
    return loseNodeWorkloads(q, n, reason);
  });
}

/** A clean stop of an agent (goodbye): its node is down and its workloads are replaced now, not after the TTL. */
export async function nodeLeft(db: Db, n: { id: string; name: string }): Promise<wl.WorkloadRow[]> {
  return db.tx(async (q) => {
    await nodes.setNodeStatus(q, n.id, 'down');
    return loseNodeWorkloads(q, n, `agent ${n.name} shut down`);
  });
}

/**
 * Removes a node (an operator's decision), in the caller's transaction: its row is locked first, so no
 * placement lands on it between the read of its workloads and its deletion (see nodes.lockNode); its
 * active workloads are lost and replaced as a gone node's, then it is deleted. Returns those workloads.
 */
export async function removeNodeRecord(
  q: Queryable,
  n: { id: string; name: string },
  why: string,
): Promise<wl.WorkloadRow[]> {
  await nodes.lockNode(q, n.id);
  const active = await loseNodeWorkloads(q, n, why);
  await nodes.deleteNode(q, n.id);
  return active;
}

/**
 * Ends a gone node's workloads as core/reconcile/node decides: stopping ones stopped, the others lost,
 * their stops queued for the node in the outbox (delivered at once to an agent still connected, else
 * after it reconnects) and, where their job still wants them, replaced. Each move is guarded by the
 * status it expects; a workload that changed meanwhile is decided again on its fresh row, and only what
 * this change turned lost is stopped and replaced (a workload that ended meanwhile was handled there).
 * Returns the active workloads.
 */
export async function loseNodeWorkloads(
  q: Queryable,
  n: { id: string; name: string },
  why: string,
): Promise<wl.WorkloadRow[]> {
  const active = await wl.listWorkloads(q, {
    nodeId: n.id,
    status: [...ACTIVE_STATUSES],
    limit: 100_000,
  });
  const changes = goneNodeChanges({
    node: n,
    workloads: active,
    jobs: await jobReplacementViews(q, active),
    why,
  });
  const byId = new Map(active.map((w) => [w.id, w]));
  const replacementOf = new Map(changes.replacements.map((r) => [r.replaces, r]));
  const stopOf = new Map(changes.stops.map((s) => [s.workloadId, s]));
  const replace = [];
  const stops: commands.QueuedCommand[] = [];
  for (const m of changes.moves) {
    const moved = await wl.transitionWith(q, byId.get(m.workloadId)!, (cur) => {
      const d = cur.node_id === n.id ? goneNodeMove(cur, n.name, why) : null;
      return d && { to: d.to, reason: d.reason };
    });
    if (moved?.status !== 'lost') continue;
    const r = replacementOf.get(m.workloadId);
    if (r) replace.push(r);
    const stop = stopOf.get(m.workloadId);
    if (stop)
      stops.push({
        nodeId: n.id,
        message: { type: 'stop', workload_id: stop.workloadId, reason: stop.reason },
      });
  }
  await commands.enqueueCommands(q, stops);
  await insertReplacements(q, replace);
  return active;
}
