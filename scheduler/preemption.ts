/**
 * Preemption's plumbing, run by the leader after a scheduling pass (core/preempt.ts decides): of the
 * pending workloads that fit nowhere and may preempt, those pending for longer than the preemption
 * delay (Aurora's `--preemption_delay`) get room. The live workloads they may take the place of are
 * read with their jobs' rank; each preemption commits in one transaction that finds its preemptor
 * still pending, moves every victim from starting or running to stopping (its agent told, as for any
 * stop) and inserts a pending replacement of each victim's instance, which waits for room like any
 * other workload. A victim that changed meanwhile undoes that preemption; the next pass decides again.
 */
import type { Logger } from 'pino';
import type { NodeView } from './core/place.js';
import { type ActiveWorkload, type Preemptor, planPreemptions } from './core/preempt.js';
import type { Db, Queryable } from './store/db.js';
import * as wl from './store/workloads.js';
import { queueStops, replaceWorkloads } from './workload-changes.js';

/** How long a workload that may preempt is pending first, unless configured (Aurora's default). */
export const DEFAULT_PREEMPTION_DELAY_MS = 180_000;
/** Pending workloads one pass preempts for at most (the highest-ranked). */
const PREEMPTORS_PER_PASS = 64;
/** Live workloads read as possible victims at most. */
const VICTIMS_READ = 200_000;

export interface PreemptionDeps {
  db: Db;
  log: Logger;
  /** How long a workload is pending before it preempts. */
  delayMs: number;
  now: () => number;
  /** The nodes as they stand now (the cluster view, brought up to date). */
  nodes: () => Promise<readonly NodeView[]>;
  /** After a commit that moved victims to stopping: tell views and deliver their stops. */
  stopped: (ws: wl.WorkloadRow[]) => void;
}

/** Thrown inside a preemption's transaction to undo it: a victim is no longer there to stop. */
class VictimGone extends Error {}

/**
 * Preempts for the candidates (highest rank first) that have waited out the delay; returns those room
 * is made for (or freed for: workloads stopping), and when the first of the others will have waited
 * it out (Infinity: none).
 */
export async function preemptFor(
  deps: PreemptionDeps,
  candidates: readonly Preemptor[],
): Promise<{ reserved: string[]; due: number }> {
  const reserved: string[] = [];
  if (candidates.length === 0) return { reserved, due: Number.POSITIVE_INFINITY };
  const listed = candidates.slice(0, PREEMPTORS_PER_PASS);
  // Pending for how long, by the database's clock (which stamped created_at).
  const waits = await deps.db.query<{ id: string; wait_ms: number }>(
    `SELECT id, (EXTRACT(EPOCH FROM created_at - now()) * 1000 + $2::float8)::float8 AS wait_ms
       FROM workloads WHERE id = ANY($1::text[]) AND status = 'pending'`,
    [listed.map((c) => c.demand.workloadId), deps.delayMs],
  );
  const waitOf = new Map(waits.map((r) => [r.id, Number(r.wait_ms)]));
  let next = Number.POSITIVE_INFINITY;
  const due = listed.filter((c) => {
    const wait = waitOf.get(c.demand.workloadId);
    if (wait === undefined) return false;
    if (wait <= 0) return true;
    next = Math.min(next, deps.now() + Math.ceil(wait));
    return false;
  });
  if (due.length === 0) return { reserved, due: next };
  const maxPriority = Math.max(...due.map((c) => c.rank.priority));
  const [nodes, active, placed] = await Promise.all([
    deps.nodes(),
    liveWorkloads(deps.db, maxPriority),
    wl.activePlacementsOf(deps.db, [...new Set(due.map((c) => c.demand.jobId))]),
  ]);
  const plan = planPreemptions(
    { nodes, placed: placed.map((p) => ({ jobId: p.job_id, nodeId: p.node_id, count: p.n })) },
    active,
    due,
  );
  const names = new Map(nodes.map((n) => [n.id, n.name]));
  const byId = new Map(due.map((c) => [c.demand.workloadId, c]));
  for (const p of plan.preemptions) {
    const node = names.get(p.nodeId) ?? p.nodeId;
    const rank = byId.get(p.workloadId)!.rank;
    const why = `preempted for ${p.workloadId} (${rank.production ? 'production' : `priority ${rank.priority}`}) on ${node}`;
    try {
      const stopped = await deps.db.tx(async (q) => {
        const [pending] = await q.query<{ status: string }>(
          'SELECT status FROM workloads WHERE id = $1 FOR UPDATE',
          [p.workloadId],
        );
        if (pending?.status !== 'pending') return [];
        const moved: wl.WorkloadRow[] = [];
        for (const id of p.victims) {
          const row = await wl.getWorkload(q, id, true);
          const m =
            row &&
            (await wl.transitionWith(q, row, (cur) =>
              cur.status === 'starting' || cur.status === 'running' ? { to: 'stopping', reason: why } : null,
            ));
          if (!m) throw new VictimGone(id);
          moved.push(m);
        }
        await queueStops(q, moved);
        await replaceWorkloads(q, moved, why);
        await wl.setPendingReasons(q, [
          {
            id: p.workloadId,
            reason: `preempting ${moved.length} workload${moved.length === 1 ? '' : 's'} on ${node}: placed there once they have stopped`,
          },
        ]);
        return moved;
      });
      if (stopped.length === 0) continue;
      reserved.push(p.workloadId);
      deps.stopped(stopped);
      deps.log.info({ workload: p.workloadId, node, victims: p.victims }, 'preempting');
    } catch (err) {
      if (!(err instanceof VictimGone)) throw err;
    }
  }
  for (const a of plan.awaiting) reserved.push(a.workloadId);
  if (plan.awaiting.length) {
    await wl.setPendingReasons(
      deps.db,
      plan.awaiting.map((a) => ({
        id: a.workloadId,
        reason: `waiting for workloads stopping on ${names.get(a.nodeId) ?? a.nodeId} to make room (preemption)`,
      })),
    );
  }
  return { reserved, due: next };
}

/**
 * The workloads holding resources on nodes that a preemptor of at most `maxPriority` might take the
 * place of (non-production, or of a lower priority), and every stopping one (room on its way).
 */
async function liveWorkloads(q: Queryable, maxPriority: number): Promise<ActiveWorkload[]> {
  const rows = await q.query<{
    id: string;
    job_id: string;
    node_id: string;
    status: ActiveWorkload['status'];
    cpu: number;
    memory_mb: number;
    disk_mb: number;
    role: string;
    production: boolean;
    priority: number;
  }>(
    `SELECT w.id, w.job_id, w.node_id, w.status, w.cpu, w.memory_mb, w.disk_mb, j.role, r.production, r.priority
       FROM workloads w
       JOIN jobs j ON j.id = w.job_id
       JOIN job_versions v ON v.job_id = w.job_id AND v.version = w.job_version,
       LATERAL (SELECT COALESCE((v.spec->>'production')::boolean, false) AS production,
                       COALESCE((v.spec->>'priority')::int, 0) AS priority) r
      WHERE w.status IN ('starting', 'running', 'stopping') AND w.node_id IS NOT NULL
        AND (w.status = 'stopping' OR NOT r.production OR r.priority < $1)
      LIMIT $2`,
    [maxPriority, VICTIMS_READ],
  );
  return rows.map((r) => ({
    workloadId: r.id,
    jobId: r.job_id,
    nodeId: r.node_id,
    status: r.status,
    cpu: Number(r.cpu),
    memory_mb: Number(r.memory_mb),
    disk_mb: Number(r.disk_mb),
    role: r.role,
    production: r.production,
    priority: r.priority,
  }));
}
