/**
 * Preemption (Aurora's preemptor), pure: which live workloads make room for pending ones that fit
 * nowhere. Aurora's rule: a production job's workload may preempt any non-production one; within a
 * role, a workload may preempt one of lower priority, but a production workload is preempted only by
 * production work. Only production jobs and jobs of priority above 0 preempt (the default, priority 0
 * and not production, never does). On each node the fewest victims that make room are taken, the
 * lowest-ranked first; a node whose stopping workloads already make room (an earlier preemption, a stop
 * under way) is waited for instead, so a pending workload never preempts twice.
 */
import { type Resources, take } from './fit.js';
import { type CheckContext, type Demand, firstRejection, type NodeView, type Snapshot } from './place.js';

/** What preemption compares: the job's role, whether it is production, its priority. */
export interface Rank {
  role: string;
  production: boolean;
  priority: number;
}

/** Whether a workload of rank `pending` may take the place of one of rank `victim` (Aurora's rule). */
export function mayPreempt(pending: Rank, victim: Rank): boolean {
  if (pending.production && !victim.production) return true;
  return (
    pending.role === victim.role &&
    pending.priority > victim.priority &&
    (pending.production || !victim.production)
  );
}

/** Whether a workload of this rank preempts at all: production, or a priority above the default 0. */
export function preempts(rank: Rank): boolean {
  return rank.production || rank.priority > 0;
}

/** Orders pending work: production first, then higher priority (then the caller's order). */
export function compareRank(
  a: Pick<Rank, 'production' | 'priority'>,
  b: Pick<Rank, 'production' | 'priority'>,
) {
  return Number(b.production) - Number(a.production) || b.priority - a.priority;
}

/** A workload holding resources on a node. */
export interface ActiveWorkload extends Rank {
  workloadId: string;
  jobId: string;
  nodeId: string;
  status: 'starting' | 'running' | 'stopping';
  cpu: number;
  memory_mb: number;
  disk_mb: number;
}

export interface Preemptor {
  demand: Demand;
  rank: Rank;
}

export interface PreemptionPlan {
  /** Pending workloads that get a node by stopping these victims there. */
  preemptions: { workloadId: string; nodeId: string; victims: string[] }[];
  /** Pending workloads that will fit once workloads already stopping on the node have stopped. */
  awaiting: { workloadId: string; nodeId: string }[];
}

/**
 * Plans preemptions for `preemptors`, in the order given (the caller's: highest rank first), on the
 * nodes of `snapshot` with the `active` workloads on them. Each victim is taken once, and the room made
 * (or awaited) on a node is held for the preemptor it was made for, so two never count on the same room.
 */
export function planPreemptions(
  snapshot: Snapshot,
  active: readonly ActiveWorkload[],
  preemptors: readonly Preemptor[],
): PreemptionPlan {
  const nodes = [...snapshot.nodes].sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
  const byId = new Map(nodes.map((n) => [n.id, n]));
  const perJob = new Map<string, Map<string, number>>();
  for (const p of snapshot.placed) {
    const m = perJob.get(p.jobId) ?? new Map<string, number>();
    perJob.set(p.jobId, m);
    m.set(p.nodeId, (m.get(p.nodeId) ?? 0) + (p.count ?? 1));
  }
  const countFor: CheckContext['countFor'] = (jobId, attribute, value) => {
    const m = perJob.get(jobId);
    if (!m || value === undefined) return 0;
    let c = 0;
    for (const [nodeId, k] of m) if (byId.get(nodeId)?.attributes[attribute] === value) c += k;
    return c;
  };
  // Per node: what its stopping workloads will give back, what this plan holds there, its candidates.
  const stopping = new Map<string, Resources>();
  const live = new Map<string, ActiveWorkload[]>();
  for (const w of active) {
    if (w.status === 'stopping') take(sumOf(stopping, w.nodeId), w);
    else {
      const list = live.get(w.nodeId) ?? [];
      live.set(w.nodeId, list);
      list.push(w);
    }
  }
  const held = new Map<string, Resources>();
  const taken = new Set<string>();
  const plan: PreemptionPlan = { preemptions: [], awaiting: [] };

  /** The node as it would be with `gone` stopped, its stopping workloads ended and this plan's holds taken. */
  const viewWithout = (n: NodeView, gone: readonly ActiveWorkload[]): NodeView => {
    const used = { ...n.used };
    const back = stopping.get(n.id);
    if (back) take(used, negated(back));
    for (const g of gone) take(used, negated(g));
    const hold = held.get(n.id);
    if (hold) take(used, hold);
    return { ...n, used };
  };
  const fits = (demand: Demand, node: NodeView) => firstRejection({ demand, node, countFor }) === null;
  const hold = (nodeId: string, d: Demand) => take(sumOf(held, nodeId), d);

  for (const { demand, rank } of preemptors) {
    const awaited = nodes.find((n) => fits(demand, viewWithout(n, [])));
    if (awaited) {
      hold(awaited.id, demand);
      plan.awaiting.push({ workloadId: demand.workloadId, nodeId: awaited.id });
      continue;
    }
    let best: { node: NodeView; victims: ActiveWorkload[] } | null = null;
    for (const n of nodes) {
      // Lowest rank first; among equals the smallest, so no more is stopped than needed.
      const candidates = (live.get(n.id) ?? [])
        .filter((w) => !taken.has(w.workloadId) && w.jobId !== demand.jobId && mayPreempt(rank, w))
        .sort((a, b) => -compareRank(a, b) || a.cpu - b.cpu || a.memory_mb - b.memory_mb);
      if (candidates.length === 0 || !fits(demand, viewWithout(n, candidates))) continue;
      const victims: ActiveWorkload[] = [];
      for (const c of candidates) {
        victims.push(c);
        if (fits(demand, viewWithout(n, victims))) break;
      }
      if (!best || victims.length < best.victims.length) best = { node: n, victims };
    }
    if (!best) continue;
    for (const v of best.victims) {
      taken.add(v.workloadId);
      take(sumOf(stopping, best.node.id), v);
    }
    hold(best.node.id, demand);
    plan.preemptions.push({
      workloadId: demand.workloadId,
      nodeId: best.node.id,
      victims: best.victims.map((v) => v.workloadId),
    });
  }
  return plan;
}

const negated = (r: Resources): Resources => ({ cpu: -r.cpu, memory_mb: -r.memory_mb, disk_mb: -r.disk_mb });

/** The running sum kept for `key` (made empty on first use). */
function sumOf<K>(m: Map<K, Resources>, key: K): Resources {
  let v = m.get(key);
  if (!v) {
    v = { cpu: 0, memory_mb: 0, disk_mb: 0 };
    m.set(key, v);
  }
  return v;
}
