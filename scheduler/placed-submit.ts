/**
 * A submit's own placement: a new job's few workloads planned by the pure core on the coordinator's
 * cluster view as it stands (no read of it), for store/placed-insert.ts to insert already placed, under
 * a guard that re-checks the locked node rows. What the guard refuses stays pending for the next pass.
 */
import { randomUUID } from 'node:crypto';
import type { JobSpec } from '../spec/job.js';
import type { ClusterView } from './cluster-view.js';
import { type Demand, place, type Strategy, workloadDemand } from './core/place.js';
import type { ClosurePath } from './store/closures.js';
import type { NewWorkload } from './store/workloads.js';

/** Instances a submit places itself at most: a bigger job goes to a pass, whose applies batch. */
export const SUBMIT_PLACES_AT_MOST = 16;

export interface SubmitPlan {
  /** The node chosen for each workload, in order (null: left pending for a pass). */
  nodeOf: (string | null)[];
  /** The chosen nodes, each with the capabilities (JSON) the plan saw. */
  nodes: { id: string; capabilities: string }[];
  /** The view's refreshes when it planned (ClusterView.took). */
  reads: number;
}

/**
 * Which nodes hold which closure paths, as a read answered, kept for the submits that place their own
 * job (so a submit of a known closure reads nothing before its insert). Changes this coordinator hears
 * of (its agents' store_paths reports) are applied at once; an entry is read again once `maxAgeMs` old,
 * which bounds how long a change reported to another coordinator goes unseen. Locality only ranks
 * nodes: a stale entry can cost a fetch, never a wrong placement.
 */
export class HolderCache {
  private readonly entries = new Map<string, { nodes: Set<string>; at: number }>();
  /** Bumped by every change heard of: a read that began before one is not kept. */
  private generation = 0;

  constructor(
    private readonly maxAgeMs = 5000,
    private readonly maxPaths = 50_000,
  ) {}

  /** The holders of `paths` (node → the paths it holds) when every entry is known and fresh, else null. */
  lookup(paths: readonly string[], now: number): Map<string, Set<string>> | null {
    const out = new Map<string, Set<string>>();
    for (const p of paths) {
      const e = this.entries.get(p);
      if (!e || now - e.at > this.maxAgeMs) return null;
      for (const n of e.nodes) {
        const s = out.get(n);
        if (s) s.add(p);
        else out.set(n, new Set([p]));
      }
    }
    return out;
  }

  /** Where a read starts: pass it to `record` with the read's answer. */
  mark(): number {
    return this.generation;
  }

  /** Keeps what a read of `paths` answered (node → paths held), unless a change was heard since `mark`. */
  record(
    paths: readonly string[],
    held: ReadonlyMap<string, ReadonlySet<string>>,
    now: number,
    mark: number,
  ): void {
    if (mark !== this.generation) return;
    if (this.entries.size + paths.length > this.maxPaths) this.entries.clear();
    const byPath = new Map<string, Set<string>>(paths.map((p) => [p, new Set()]));
    for (const [node, ps] of held) for (const p of ps) byPath.get(p)?.add(node);
    for (const [p, nodes] of byPath) this.entries.set(p, { nodes, at: now });
  }

  /** A node reported paths it now holds, or no longer holds. */
  changed(nodeId: string, added: readonly string[], removed: readonly string[]): void {
    this.generation++;
    for (const p of added) this.entries.get(p)?.nodes.add(nodeId);
    for (const p of removed) this.entries.get(p)?.nodes.delete(nodeId);
  }

  /** Forgets everything (a node replaced its whole list, on hello). */
  clear(): void {
    this.generation++;
    this.entries.clear();
  }
}

/**
 * Plans a new job's workloads on the view as it stands: no instances of the job run anywhere yet, and
 * `held` says which nodes hold which of its closure paths. Null when there is no view yet or nothing
 * fits on it (a pass then plans the job and says why it waits).
 */
export function planSubmitted(
  view: ClusterView,
  spec: Pick<JobSpec, 'constraints'>,
  closure: readonly ClosurePath[],
  created: readonly NewWorkload[],
  held: ReadonlyMap<string, ReadonlySet<string>>,
  strategy: Strategy,
): SubmitPlan | null {
  const nodes = view.current();
  if (!nodes || nodes.length === 0 || created.length === 0) return null;
  const constraints = spec.constraints ?? {};
  const sized = closure.map((p) => ({ path: p.path, size: p.nar_size }));
  const demands: Demand[] = created.map((w) => workloadDemand(w, constraints, sized));
  const plan = place(
    {
      nodes: held.size ? nodes.map((n) => ({ ...n, storePaths: held.get(n.id) ?? new Set() })) : nodes,
      placed: [],
    },
    demands,
    { strategy, seed: randomUUID() },
  );
  if (plan.placements.length === 0) return null;
  const nodeOf = new Map(plan.placements.map((p) => [p.workloadId, p.nodeId]));
  const chosen = [...new Set(plan.placements.map((p) => p.nodeId))];
  return {
    nodeOf: created.map((w) => nodeOf.get(w.id) ?? null),
    nodes: chosen.map((id) => ({ id, capabilities: view.capabilitiesOf(id)! })),
    reads: view.reads,
  };
}
