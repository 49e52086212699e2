/**
 * The pure placement core: `place(snapshot, demands, opts) → Plan`. Feasibility is a chain of small
 * checkers (each passes a node or names a rejection reason), ranking a chain of scorers, ties broken by a
 * hash seeded from the evaluation id. No I/O, no clock, no unseeded randomness.
 */
import { fitsOn, take } from './fit.js';

export { demandOf, fits, type Resources } from './fit.js';

export type Isolation = 'process' | 'sandbox' | 'microvm';

export interface NodeView {
  id: string;
  name: string;
  status: 'ready' | 'down' | 'draining';
  /** False while its agent is known to have no socket to any coordinator (a node view without it is connected). */
  connected?: boolean;
  cpu: number;
  memory_mb: number;
  disk_mb: number;
  used: { cpu: number; memory_mb: number; disk_mb: number };
  isolation: readonly Isolation[];
  /** Attributes matched by placement constraints; `host` is always the node name. */
  attributes: Readonly<Record<string, string>>;
  /** Store paths the node holds, among those the demands need (closure locality). */
  storePaths?: ReadonlySet<string>;
}

/** Instances already placed (count for `limit` constraints and the spread-by-job scorer). */
export interface PlacedInstance {
  jobId: string;
  nodeId: string;
  /** How many instances of the job run on the node (default 1). */
  count?: number;
}

export interface Snapshot {
  nodes: readonly NodeView[];
  placed: readonly PlacedInstance[];
}

export interface Demand {
  workloadId: string;
  jobId: string;
  cpu: number;
  memory_mb: number;
  disk_mb: number;
  isolation: Isolation;
  /** Aurora placement constraints: attribute → "value" | "!value" | "limit:N". */
  constraints: Readonly<Record<string, string>>;
  /** The job's closure with NAR sizes; nodes missing fewer bytes of it score higher. */
  closure?: readonly { path: string; size: number }[];
}

/**
 * A workload's demand, from its row's fields and its job version's constraints and closure: what a
 * scheduling pass and a submit placing its own new job both plan.
 */
export function workloadDemand(
  w: { id: string; job_id: string; cpu: number; memory_mb: number; disk_mb: number; isolation: Isolation },
  constraints: Demand['constraints'],
  closure: Demand['closure'],
): Demand {
  return {
    workloadId: w.id,
    jobId: w.job_id,
    cpu: w.cpu,
    memory_mb: w.memory_mb,
    disk_mb: w.disk_mb,
    isolation: w.isolation,
    constraints,
    closure,
  };
}

export type Strategy = 'spread' | 'pack';

export interface PlaceOptions {
  strategy: Strategy;
  /** Seeds the tie-break, so a placement can be replayed (the evaluation id). */
  seed: string;
  /**
   * Stop looking once this many feasible nodes were scored (Nomad's limit iterator): the best of a
   * seeded sample, instead of scoring every node for every workload. Default: every node up to 16,
   * then 2·log2(nodes), at least 16. Nodes holding part of the closure are always looked at first.
   */
  candidateLimit?: number;
}

export interface Placement {
  workloadId: string;
  nodeId: string;
  score: number;
  /** Bytes of the closure the node has to fetch. */
  missingBytes: number;
}

export interface Failure {
  workloadId: string;
  /** How many nodes each reason filtered. */
  reasons: Record<RejectionCode, number>;
  /** One human sentence: "3 nodes: insufficient memory (need 512 MiB, max free 256 MiB)". */
  summary: string;
}

export interface Plan {
  placements: Placement[];
  failures: Failure[];
  /**
   * Failures answered without looking at the nodes again (Nomad's coalesced failures): a demand the
   * same as one that failed (job, resources, isolation, constraints), with nothing placed since, fails
   * the same way for the same reasons.
   */
  coalescedFailures: number;
}

/** Rejection reasons, stable codes shown by the API. */
export const REJECTION = {
  NODE_DOWN: 'node down',
  NODE_DRAINING: 'node draining',
  NODE_DISCONNECTED: 'agent disconnected',
  CPU: 'insufficient cpu',
  MEMORY: 'insufficient memory',
  DISK: 'insufficient disk',
  ISOLATION: 'isolation not supported',
  CONSTRAINT: 'constraint not met',
  DEDICATED: 'dedicated to another job',
  LIMIT: 'limit reached',
} as const;
export type RejectionCode = keyof typeof REJECTION;
const CODE_ORDER = Object.fromEntries(Object.keys(REJECTION).map((code, i) => [code, i])) as Record<
  RejectionCode,
  number
>;

export interface CheckContext {
  demand: Demand;
  node: NodeView;
  /** Instances of each job per attribute value, kept current as the plan grows. */
  countFor: (jobId: string, attribute: string, value: string | undefined) => number;
}

type Checker = (ctx: CheckContext) => RejectionCode | null;

const free = (n: NodeView) => ({
  cpu: n.cpu - n.used.cpu,
  memory_mb: n.memory_mb - n.used.memory_mb,
  disk_mb: n.disk_mb - n.used.disk_mb,
});

// Tolerate float dust in fractional cpu sums (0.1 + 0.2).
const EPS = 1e-9;

export const NodeReadyChecker: Checker = ({ node }) =>
  node.status === 'down'
    ? 'NODE_DOWN'
    : node.status === 'draining'
      ? 'NODE_DRAINING'
      : node.connected === false
        ? 'NODE_DISCONNECTED'
        : null;
export const IsolationChecker: Checker = ({ node, demand }) =>
  node.isolation.includes(demand.isolation) ? null : 'ISOLATION';
export const CpuChecker: Checker = ({ node, demand }) =>
  fitsOn('cpu', node, node.used, demand) ? null : 'CPU';
export const MemoryChecker: Checker = ({ node, demand }) =>
  fitsOn('memory_mb', node, node.used, demand) ? null : 'MEMORY';
export const DiskChecker: Checker = ({ node, demand }) =>
  fitsOn('disk_mb', node, node.used, demand) ? null : 'DISK';

/** `"value"` must equal the node attribute, `"!value"` must not. `limit:` and `dedicated` are checked elsewhere. */
export const ValueConstraintChecker: Checker = ({ node, demand }) => {
  for (const attr in demand.constraints) {
    const want = demand.constraints[attr]!;
    if (want.startsWith('limit:') || attr === 'dedicated') continue;
    const have = node.attributes[attr];
    if (want.startsWith('!')) {
      if (
        want
          .slice(1)
          .split(',')
          .includes(have ?? '')
      )
        return 'CONSTRAINT';
    } else if (!want.split(',').includes(have ?? '\u0000')) {
      return 'CONSTRAINT';
    }
  }
  return null;
};

/** A node with a `dedicated` attribute takes only jobs asking for that value; a job asking for one goes only there. */
export const DedicatedChecker: Checker = ({ node, demand }) => {
  const nodeDedicated = node.attributes.dedicated;
  const wanted = demand.constraints.dedicated;
  if (nodeDedicated === undefined && wanted === undefined) return null;
  return nodeDedicated === wanted ? null : 'DEDICATED';
};

/** `attr: "limit:N"`: at most N instances of this job per distinct value of `attr`. */
export const LimitChecker: Checker = ({ node, demand, countFor }) => {
  for (const attr in demand.constraints) {
    const want = demand.constraints[attr]!;
    if (!want.startsWith('limit:')) continue;
    const limit = Number.parseInt(want.slice('limit:'.length), 10);
    if (countFor(demand.jobId, attr, node.attributes[attr]) >= limit) return 'LIMIT';
  }
  return null;
};

export const CHECKERS: readonly Checker[] = [
  NodeReadyChecker,
  IsolationChecker,
  DedicatedChecker,
  ValueConstraintChecker,
  LimitChecker,
  CpuChecker,
  MemoryChecker,
  DiskChecker,
];

/**
 * The first of CHECKERS (in their order) that rejects the node, or null. Written out rather than looped
 * over: one call site per checker lets each be inlined (a loop's one call site sees eight functions).
 * A test holds it to the loop over CHECKERS.
 */
export const firstRejection = (ctx: CheckContext): RejectionCode | null =>
  NodeReadyChecker(ctx) ??
  IsolationChecker(ctx) ??
  DedicatedChecker(ctx) ??
  ValueConstraintChecker(ctx) ??
  LimitChecker(ctx) ??
  CpuChecker(ctx) ??
  MemoryChecker(ctx) ??
  DiskChecker(ctx);

type Scorer = (node: NodeView, demand: Demand, sameJobOnNode: number) => number;

/** Fraction of the node left free after placing, averaged over cpu and memory (0..1). */
const freeFractionAfter = (node: NodeView, d: Demand) => {
  const cpu = node.cpu > 0 ? (node.cpu - node.used.cpu - d.cpu) / node.cpu : 0;
  const mem = node.memory_mb > 0 ? (node.memory_mb - node.used.memory_mb - d.memory_mb) / node.memory_mb : 0;
  return (cpu + mem) / 2;
};

/** spread: prefer the emptiest node. */
export const SpreadScorer: Scorer = (node, d) => freeFractionAfter(node, d);
/** pack: prefer the fullest node that fits. */
export const PackScorer: Scorer = (node, d) => 1 - freeFractionAfter(node, d);
/** Anti-affinity between instances of one job: each one already on the node costs half a point. */
export const JobSpreadScorer: Scorer = (_node, _d, sameJobOnNode) => -0.5 * sameJobOnNode;

/** Bytes of the demand's closure the node does not hold yet. */
export function missingBytes(node: NodeView, d: Demand): number {
  let missing = 0;
  for (const p of d.closure ?? []) if (!node.storePaths?.has(p.path)) missing += p.size;
  return missing;
}

/**
 * closure locality: a node holding the whole closure gains half a point over one holding none of it,
 * as much as one more instance of the job costs, so locality breaks ties without stacking instances.
 */
export const ClosureLocalityScorer: Scorer = (node, d) => {
  const total = (d.closure ?? []).reduce((a, p) => a + p.size, 0);
  return total > 0 ? 0.5 * (1 - missingBytes(node, d) / total) : 0;
};

/**
 * A 32-bit hash of a string (FNV-1a, then murmur3's finaliser): seeded per evaluation through the
 * workload's hash. Tie-breaks need spread and replay, not a cryptographic hash (sha256 was a tenth of
 * the core's time).
 */
function hash32(s: string): number {
  let h = 0x811c9dc5;
  for (let i = 0; i < s.length; i++) h = Math.imul(h ^ s.charCodeAt(i), 0x01000193);
  return mix(h >>> 0, 0x6a09e667);
}

/** Mixes two 32-bit values (murmur3's finaliser): one hash per workload and per node, not per pair. */
function mix(a: number, b: number): number {
  let h = (a ^ Math.imul(b, 0x9e3779b1)) >>> 0;
  h = Math.imul(h ^ (h >>> 16), 0x85ebca6b) >>> 0;
  h = Math.imul(h ^ (h >>> 13), 0xc2b2ae35) >>> 0;
  return (h ^ (h >>> 16)) >>> 0;
}

const MiB = (mb: number) => (mb >= 1024 ? `${(mb / 1024).toFixed(1)} GiB` : `${Math.round(mb)} MiB`);

function describe(
  reasons: Partial<Record<RejectionCode, number>>,
  total: number,
  demand: Demand,
  nodes: readonly NodeView[],
): string {
  if (total === 0) return 'no nodes have joined the cluster';
  const parts = (Object.entries(reasons) as [RejectionCode, number][])
    // Most nodes first, ties in the checkers' order: the same reasons always read the same (not in the
    // order this demand's scan met them), so a pass over an unchanged backlog rewrites no reason.
    .sort((a, b) => b[1] - a[1] || CODE_ORDER[a[0]] - CODE_ORDER[b[0]])
    .map(([code, count]) => {
      const label = `${count} node${count === 1 ? '' : 's'}: ${REJECTION[code]}`;
      const ready = nodes.filter((n) => n.status === 'ready');
      const maxFree = (k: 'cpu' | 'memory_mb' | 'disk_mb') => Math.max(0, ...ready.map((n) => free(n)[k]));
      switch (code) {
        case 'MEMORY':
          return `${label} (need ${MiB(demand.memory_mb)}, max free ${MiB(maxFree('memory_mb'))})`;
        case 'CPU':
          return `${label} (need ${demand.cpu}, max free ${Math.round(maxFree('cpu') * 100) / 100})`;
        case 'DISK':
          return `${label} (need ${MiB(demand.disk_mb)}, max free ${MiB(maxFree('disk_mb'))})`;
        case 'ISOLATION':
          return `${label} (needs ${demand.isolation})`;
        case 'CONSTRAINT':
          return `${label} (${Object.entries(demand.constraints)
            .filter(([a, v]) => a !== 'dedicated' && !v.startsWith('limit:'))
            .map(([a, v]) => `${a}=${v}`)
            .join(', ')})`;
        default:
          return label;
      }
    });
  return parts.join('; ');
}

/**
 * The nodes holding part of a demand's closure, most bytes held first: they are looked at before the
 * others, which follow from a seeded offset (see place), so samples differ per workload but replay.
 */
function holdersFirst<N extends NodeView>(nodes: N[], closure: NonNullable<Demand['closure']>): N[] {
  return nodes
    .map((n) => ({ n, held: closure.reduce((a, p) => a + (n.storePaths?.has(p.path) ? p.size : 0), 0) }))
    .filter((x) => x.held > 0)
    .sort((a, b) => b.held - a.held)
    .map((x) => x.n);
}

/**
 * Places each demand on the best feasible node, in order, accounting for what the plan already used.
 * Never exceeds a node's capacity; every demand that does not fit gets a failure with its reasons.
 */
export function place(snapshot: Snapshot, demands: readonly Demand[], opts: PlaceOptions): Plan {
  return new Planner(snapshot, opts).plan(demands);
}

/**
 * place() in parts: a planner made from a snapshot plans the demands it is given, call after call, each
 * on the snapshot plus everything it has placed before (room taken, instances per job, failures
 * coalesced), so planning demands in slices makes the plan place() makes of them all in one call. A
 * caller can then do other work between slices (the coordinator answers its agents and requests). It
 * reads nothing but its arguments and keeps its own copy of the nodes.
 */
export class Planner {
  private readonly nodes: NodeView[];
  /** jobId → nodeId → instances. */
  private readonly perNode = new Map<string, Map<string, number>>();
  private readonly nodeSalt: Map<string, number>;
  private readonly limit: number;
  private readonly scorer: Scorer;
  private readonly countFor: CheckContext['countFor'];
  /** Placements made so far, over every call. */
  private placedSoFar = 0;
  /** The failure of each demand alike that found no node, and placedSoFar then (see alikeKey). */
  private readonly failedAlike = new Map<string, { failure: Failure; placed: number }>();
  private readonly constraintKeys = new WeakMap<object, string>();

  constructor(
    snapshot: Snapshot,
    private readonly opts: PlaceOptions,
  ) {
    const nodes = snapshot.nodes.map((n) => ({ ...n, used: { ...n.used } }));
    const byId = new Map(nodes.map((n) => [n.id, n]));
    this.nodes = nodes;
    for (const p of snapshot.placed) this.bump(p.jobId, p.nodeId, p.count ?? 1);
    this.nodeSalt = new Map(nodes.map((n) => [n.id, hash32(n.id)]));
    this.limit =
      opts.candidateLimit ??
      (nodes.length <= 16 ? nodes.length : Math.max(16, 2 * Math.ceil(Math.log2(nodes.length))));
    const perNode = this.perNode;
    this.countFor = (jobId, attribute, value) => {
      const m = perNode.get(jobId);
      if (!m || value === undefined) return 0;
      let c = 0;
      for (const [nodeId, k] of m) if (byId.get(nodeId)?.attributes[attribute] === value) c += k;
      return c;
    };
    this.scorer = opts.strategy === 'pack' ? PackScorer : SpreadScorer;
  }

  private bump(jobId: string, nodeId: string, n = 1): void {
    const m = this.perNode.get(jobId) ?? new Map<string, number>();
    this.perNode.set(jobId, m);
    m.set(nodeId, (m.get(nodeId) ?? 0) + n);
  }

  /**
   * What every checker decides for a demand is its job, resources, isolation and constraints against
   * the nodes' room and the job's instances so far: with nothing placed since a demand alike found no
   * node, this one finds none either, for the same reasons, whatever order it would look in. Without
   * this, a backlog of 100,000 that fits nowhere cost every pass (the leader sweeps every 10 s) a check
   * of each on every node: 14–18 s of CPU on 1,000 nodes, in one synchronous run.
   */
  private alikeKey(d: Demand): string {
    let c = this.constraintKeys.get(d.constraints);
    if (c === undefined) {
      c = JSON.stringify(Object.entries(d.constraints).sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0)));
      this.constraintKeys.set(d.constraints, c);
    }
    return `${d.jobId}\u0000${d.cpu}\u0000${d.memory_mb}\u0000${d.disk_mb}\u0000${d.isolation}\u0000${c}`;
  }

  /** Plans `demands`, in order, after everything this planner planned before. */
  plan(demands: readonly Demand[]): Plan {
    const { nodes, perNode, nodeSalt, limit, scorer, opts, failedAlike } = this;
    const plan: Plan = { placements: [], failures: [], coalescedFailures: 0 };
    if (nodes.length === 0) {
      for (const demand of demands) {
        plan.failures.push({
          workloadId: demand.workloadId,
          reasons: {} as Record<RejectionCode, number>,
          summary: describe({}, 0, demand, nodes),
        });
      }
      return plan;
    }
    // The demand being placed and its search so far, read and written by `consider` (no allocation per
    // demand or candidate beyond the reasons counted: a generator, a set and an object per better node
    // here were a fifth of place()'s time in garbage collection).
    let demand = demands[0]!;
    let demandSalt = 0;
    let jobCounts: Map<string, number> | undefined;
    let reasons: Partial<Record<RejectionCode, number>> = {};
    let best: NodeView | null = null;
    let bestScore = 0;
    let bestTie = 0;
    let feasible = 0;
    // One context, pointed at each demand and candidate in turn.
    const ctx: CheckContext = { demand, node: nodes[0]!, countFor: this.countFor };
    /** Checks and scores one candidate node; false once `limit` feasible nodes have been scored. */
    const consider = (node: NodeView): boolean => {
      if (feasible >= limit) return false;
      ctx.node = node;
      const rejected = firstRejection(ctx);
      if (rejected) {
        reasons[rejected] = (reasons[rejected] ?? 0) + 1;
        return true;
      }
      feasible++;
      const same = jobCounts?.get(node.id) ?? 0;
      const score =
        scorer(node, demand, same) +
        JobSpreadScorer(node, demand, same) +
        ClosureLocalityScorer(node, demand, same);
      const tie = mix(demandSalt, nodeSalt.get(node.id)!);
      if (!best || score > bestScore + EPS || (Math.abs(score - bestScore) <= EPS && tie > bestTie)) {
        best = node;
        bestScore = score;
        bestTie = tie;
      }
      return true;
    };
    for (const d of demands) {
      if (failedAlike.size > 0) {
        const alike = failedAlike.get(this.alikeKey(d));
        if (alike && alike.placed === this.placedSoFar) {
          const { reasons, summary } = alike.failure;
          plan.failures.push({ workloadId: d.workloadId, reasons, summary });
          plan.coalescedFailures++;
          continue;
        }
      }
      demand = d;
      ctx.demand = d;
      demandSalt = hash32(`${opts.seed}\u0000${d.workloadId}`);
      jobCounts = perNode.get(d.jobId);
      reasons = {};
      best = null;
      feasible = 0;
      // Nodes holding part of the closure first, then every other node from a seeded offset.
      const first = d.closure?.length ? holdersFirst(nodes, d.closure) : [];
      const seen = first.length > 0 ? new Set(first) : null;
      let more = true;
      for (let i = 0; more && i < first.length; i++) more = consider(first[i]!);
      const start = demandSalt % nodes.length;
      for (let i = 0; more && i < nodes.length; i++) {
        const n = nodes[(start + i) % nodes.length]!;
        if (!seen?.has(n)) more = consider(n);
      }
      const chosen = best as NodeView | null;
      if (chosen) {
        take(chosen.used, d);
        this.bump(d.jobId, chosen.id);
        this.placedSoFar++;
        plan.placements.push({
          workloadId: d.workloadId,
          nodeId: chosen.id,
          score: bestScore,
          missingBytes: missingBytes(chosen, d),
        });
      } else {
        const failure: Failure = {
          workloadId: d.workloadId,
          reasons: reasons as Record<RejectionCode, number>,
          summary: describe(reasons, nodes.length, d, nodes),
        };
        plan.failures.push(failure);
        failedAlike.set(this.alikeKey(d), { failure, placed: this.placedSoFar });
      }
    }
    return plan;
  }
}
