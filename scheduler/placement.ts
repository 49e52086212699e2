/**
 * The scheduling pass plumbing: the cluster view for the pure core (kept between passes, see
 * cluster-view.ts), the constraints and closures of pending workloads, and applying placements in
 * chunked transactions with a capacity re-check on the locked node rows.
 */
import { randomUUID } from 'node:crypto';
import type { Logger } from 'pino';
import type { JobSpec } from '../spec/job.js';
import { ClusterView, toNodeView } from './cluster-view.js';
import type { SpecLookup } from './coordinator-types.js';
import {
  type Demand,
  type Failure,
  type NodeView,
  type PlacedInstance,
  type PlaceOptions,
  type Plan,
  Planner,
  type Snapshot,
  type Strategy,
  workloadDemand,
} from './core/place.js';
import { compareRank, type Preemptor, preempts, type Rank } from './core/preempt.js';
import type { NewJobInsert } from './job-submit.js';
import * as closures from './store/closures.js';
import type { Db, Queryable } from './store/db.js';
import * as nodes from './store/nodes.js';
import { applyStarts } from './store/placement-apply.js';
import * as wl from './store/workloads.js';

export interface ClusterSnapshot {
  nodes: NodeView[];
  placed: PlacedInstance[];
}

interface JobInfo {
  constraints: Record<string, string>;
  closure: { path: string; size: number }[];
  /** The job's role, production flag and priority: the order of pending work, and preemption. */
  rank: Rank;
}

/** A job spec's rank (Aurora's `production` and `priority`). */
function rankOf(spec: Pick<JobSpec, 'role' | 'production' | 'priority'> | null | undefined): Rank {
  return { role: spec?.role ?? '', production: spec?.production ?? false, priority: spec?.priority ?? 0 };
}

/**
 * Placements committed per transaction. Larger chunks cost PostgreSQL less per placement (each node's
 * usage row and outbox row are written once per transaction, whatever it places there): on 1,000 nodes,
 * 5,000 a chunk took 20% less apply CPU than 2,000.
 */
const APPLY_CHUNK = 5000;
/** Job versions whose constraints and closure are kept (both never change once written). */
const JOB_INFO_CACHE = 10_000;
/** Pending workloads a pass plans at most (the oldest). */
const PENDING_LIMIT = 100_000;
/** Batches of new jobs a pass plans from memory beside its applies at most (see applyAndPlanAhead). */
const AHEAD_BATCHES = 16;
/** Primed closure paths whose holders a pass reads in its first round; more wait for the second. */
const PRIMED_PATHS = 50_000;
/** Demands planned between two looks at the clock (see planInSlices). */
const PLAN_SLICE = 250;
/**
 * Planning time after which a pass lets the event loop run (see planInSlices): a plan of 100,000
 * demands was one synchronous run of ~2 s, with no heartbeat, request or agent message answered.
 */
const PLAN_YIELD_MS = 10;

/**
 * What a coordinator keeps between passes: the cluster view and, per job version, its constraints and
 * closure. One per coordinator; passes run one at a time.
 */
export class SchedulerState {
  readonly view = new ClusterView();
  private readonly jobInfo = new Map<string, Promise<JobInfo>>();
  /** Closure paths of the jobs primed since the last pass began: who holds them is read in its first round. */
  private primedPaths = new Set<string>();
  /** New jobs whose insert a submit here has sent since the last pass began (see expectNewJob). */
  private newJobs: NewJobInsert[] = [];
  /** What the last pass left pending, when the next may skip it (see SettledBacklog). */
  private settled: SettledBacklog | null = null;
  /**
   * Pending workloads that preempted (or await room being freed for them): planned before all others,
   * so the room made for them is theirs. Dropped once no longer pending.
   */
  readonly preempting = new Set<string>();

  /** The last pass's settled backlog, once (a pass that fails leaves none). */
  takeSettled(): SettledBacklog | null {
    const out = this.settled;
    this.settled = null;
    return out;
  }

  settle(backlog: SettledBacklog): void {
    this.settled = backlog;
  }

  /** What a submit just stored (the submitting coordinator's pass then reads neither back). */
  primeJob(jobId: string, version: number, spec: JobSpec, closure: readonly closures.ClosurePath[]): void {
    if (this.jobInfo.size >= JOB_INFO_CACHE) this.jobInfo.clear();
    // Only a head start: a path dropped here is read after the plan's closures are known, as any other.
    if (this.primedPaths.size < PRIMED_PATHS) for (const p of closure) this.primedPaths.add(p.path);
    this.jobInfo.set(
      `${jobId}/${version}`,
      Promise.resolve({
        constraints: spec.constraints ?? {},
        closure: closure.map((p) => ({ path: p.path, size: p.nar_size })),
        rank: rankOf(spec),
      }),
    );
  }

  /**
   * A submit's new job whose insert is on its way: the next pass reads the cluster while it commits,
   * then (once it has committed) plans its workloads from memory when its read did not see them.
   */
  expectNewJob(insert: NewJobInsert): void {
    this.newJobs.push(insert);
  }

  /** Whether new jobs are expected (see expectNewJob). */
  hasNewJobs(): boolean {
    return this.newJobs.length > 0;
  }

  /** How many workloads the new jobs expected now have. */
  newWorkloads(): number {
    let n = 0;
    for (const j of this.newJobs) n += j.workloads.length;
    return n;
  }

  /** The new jobs expected, once (see expectNewJob). */
  takeNewJobs(): NewJobInsert[] {
    const out = this.newJobs;
    this.newJobs = [];
    return out;
  }

  /** The primed closure paths, once (see primedPaths). */
  takePrimedPaths(): string[] {
    if (this.primedPaths.size === 0) return [];
    const out = [...this.primedPaths];
    this.primedPaths = new Set();
    return out;
  }

  /** Constraints and closure (with sizes) of each job version among the workloads. */
  async jobInfoFor(
    db: Queryable,
    specOf: SpecLookup,
    ws: readonly Pick<wl.WorkloadRow, 'job_id' | 'job_version'>[],
  ): Promise<Map<string, JobInfo>> {
    const keys = new Map<string, { job_id: string; job_version: number }>();
    let last: (typeof ws)[number] | undefined;
    for (const w of ws) {
      // A job's workloads come one after another (the pending list is in submit order): one key each run.
      if (last && last.job_id === w.job_id && last.job_version === w.job_version) continue;
      keys.set(`${w.job_id}/${w.job_version}`, w);
      last = w;
    }
    const out = new Map<string, JobInfo>();
    await Promise.all(
      [...keys].map(async ([k, w]) => {
        let p = this.jobInfo.get(k);
        if (!p) {
          p = readJobInfo(db, specOf, w.job_id, w.job_version);
          p.catch(() => this.jobInfo.delete(k));
          if (this.jobInfo.size >= JOB_INFO_CACHE) this.jobInfo.clear();
          this.jobInfo.set(k, p);
        }
        out.set(k, await p);
      }),
    );
    return out;
  }
}

async function readJobInfo(
  db: Queryable,
  specOf: SpecLookup,
  jobId: string,
  version: number,
): Promise<JobInfo> {
  const [spec, closure] = await Promise.all([
    specOf(jobId, version),
    closures.jobClosure(db, jobId, version),
  ]);
  return {
    constraints: spec?.constraints ?? {},
    closure: closure.map((p) => ({ path: p.path, size: p.nar_size })),
    rank: rankOf(spec),
  };
}

/**
 * A pass's pending work that it planned in full and could not place, kept so that the next pass (the
 * leader's sweep every 10 s, or one an event asked for) re-plans it only when something changed that
 * could make some of it fit: pending workloads were inserted since `watermark` (any coordinator's
 * submit, restart or update; pending rows are only ever inserted), a node could take more than the
 * plan saw (ClusterView.takeRoomGrown: joined, freed, changed), a new job was submitted here, or a
 * restart's back-off ends (`wakeAt`). Failures for a job's `limit:` are not kept (they wait on the job's
 * other instances, not on room). An unchanged backlog of 100,000 cost every sweep ~1 s of coordinator
 * CPU and a scan of the backlog in PostgreSQL; now one index probe and the nodes' delta read. Its
 * pending reasons are not rewritten meanwhile (a "max free" figure in them may lag until the next plan).
 */
interface SettledBacklog {
  /** The pending-insert watermark taken before the pass read the backlog (pendingInsertedSince). */
  watermark: string;
  /** Wall time at which a restart in the backlog ends its back-off (Infinity: none). */
  wakeAt: number;
}

export interface SchedulePassDeps {
  db: Db;
  log: Logger;
  strategy: Strategy;
  specOf: SpecLookup;
  /** The coordinator's view and caches, kept from pass to pass. */
  state: SchedulerState;
  /**
   * Called after each commit, in the same turn of the event loop as the commit's answer, with the
   * workloads it moved to starting, in order, and the outbox row that queued the starts of each node.
   */
  started: (ws: StartedWorkload[], commandOf: ReadonlyMap<string, number>) => void;
  /** Asks for another pass at this time: the earliest restart still waiting out its back-off. */
  wakeAt?: (at: number) => void;
  /** The deciding coordinator's id: no NOTIFY for the starts of agents it holds (it sends those itself). */
  holder?: string;
  /** Wall-clock time in ms (the coordinator's clock); Date.now when unset. */
  now?: () => number;
  /**
   * Set on the leader when preemption is on: given the pending workloads that fit nowhere and may
   * preempt (highest rank first), preempts for those pending long enough (preemption.ts) and returns
   * those that room is made for, and when the next of the others is due (Infinity: none).
   */
  preempt?: (candidates: Preemptor[]) => Promise<{ reserved: string[]; due: number }>;
}

/**
 * One scheduling pass: plan the pending workloads on the cluster view (brought up to date by a delta
 * read), apply, then the jobs submitted here meanwhile (applyAndPlanAhead), and replan on conflicts
 * with a view read afresh.
 */
export async function schedulePass(deps: SchedulePassDeps): Promise<void> {
  const { db, state } = deps;
  // First, whether anything changed since the last pass that could place some of what it left pending.
  const settled = state.takeSettled();
  const [since, nodesNow] = await Promise.all([
    wl.pendingInsertedSince(db, settled?.watermark ?? null),
    state.view.refresh(db),
  ]);
  const roomGrown = state.view.takeRoomGrown();
  if (
    settled &&
    !since.inserted &&
    !roomGrown &&
    !state.hasNewJobs() &&
    (deps.now?.() ?? Date.now()) < settled.wakeAt
  ) {
    state.settle({ watermark: since.watermark, wakeAt: settled.wakeAt });
    return;
  }
  let viewRead: readonly NodeView[] | null = nodesNow;
  for (let attempt = 0; attempt < 5; attempt++) {
    // One round: the pending work, the nodes changed since the last pass (read just before, on the first
    // attempt), where the pending jobs run, and which nodes hold the closures of the jobs submitted here
    // since the last pass (a submit's pass then needs no second round for them).
    const early = attempt === 0 ? state.takePrimedPaths() : [];
    // New jobs whose inserts submits here have sent: this round runs beside those inserts, and the pass
    // plans only once they have committed (the apply moves only workloads it finds pending).
    const newJobs = attempt === 0 ? state.takeNewJobs() : [];
    const [read, nodeViews, placedRows, heldEarly, committed] = await Promise.all([
      wl.listPending(db, PENDING_LIMIT),
      viewRead ??
        state.view.refresh(db).then((v) => {
          state.view.takeRoomGrown();
          return v;
        }),
      wl.activePlacementsOfPendingJobs(db),
      closures.holders(db, early),
      Promise.all(newJobs.map((j) => j.inserted)),
    ]);
    viewRead = null;
    // A full list may have left them out for being the newest: they wait for a later pass, as others do.
    const { all, unplaced } =
      read.length < PENDING_LIMIT
        ? withNewJobs(
            read,
            newJobs.filter((_, i) => committed[i]),
          )
        : { all: read, unplaced: [] };
    // Restarts of flapping tasks wait out their back-off (Aurora's THROTTLED): not planned before then.
    const now = deps.now?.() ?? Date.now();
    const waiting = all.filter((w) => w.not_before && w.not_before.getTime() > now);
    let wakeAt = Number.POSITIVE_INFINITY;
    for (const w of waiting) wakeAt = Math.min(wakeAt, w.not_before!.getTime());
    // What this pass plans is all there is to plan until something changes (see SettledBacklog). A full
    // list left the newest out: after placements, the next list holds others, so it is read again.
    const settle = (failures: readonly Failure[], placed: number) => {
      if ((read.length < PENDING_LIMIT || placed === 0) && !failures.some((f) => f.reasons.LIMIT))
        state.settle({ watermark: since.watermark, wakeAt });
    };
    if (waiting.length) {
      deps.wakeAt?.(wakeAt);
      await wl.setPendingReasons(
        db,
        waiting.map((w) => ({
          id: w.id,
          reason: `restart back-off: waiting until ${w.not_before!.toISOString()} (${w.restart_delay_ms} ms; the task is flapping)`,
        })),
      );
    }
    const throttled = new Set(waiting);
    const pending = waiting.length ? all.filter((w) => !throttled.has(w)) : all;
    if (pending.length === 0) {
      settle([], 0);
      return;
    }
    // A job that turned pending between the two reads is read now (rare), so limits always count.
    const covered = new Set([...placedRows.map((p) => p.job_id), ...unplaced]);
    const uncovered = [...new Set(pending.map((w) => w.job_id))].filter((j) => !covered.has(j));
    const [late, jobInfo] = await Promise.all([
      wl.activePlacementsOf(db, uncovered),
      state.jobInfoFor(db, deps.specOf, pending),
    ]);
    // Those room was made for first, then production work, then higher priorities, each in submit
    // order (a stable sort).
    const rankOfPending = (w: wl.PendingWorkload) => jobInfo.get(`${w.job_id}/${w.job_version}`)!.rank;
    const { preempting } = state;
    if (preempting.size) {
      const still = new Set(pending.map((w) => w.id));
      for (const id of preempting) if (!still.has(id)) preempting.delete(id);
    }
    if (preempting.size || [...jobInfo.values()].some((i) => i.rank.production || i.rank.priority !== 0))
      pending.sort(
        (a, b) =>
          Number(preempting.has(b.id)) - Number(preempting.has(a.id)) ||
          compareRank(rankOfPending(a), rankOfPending(b)),
      );
    const placed = [...placedRows, ...late].flatMap((p) =>
      p.node_id === null ? [] : [{ job_id: p.job_id, node_id: p.node_id, n: p.n }],
    );
    const wanted = [...new Set([...jobInfo.values()].flatMap((i) => i.closure.map((p) => p.path)))];
    const readEarly = new Set(early);
    const rest = wanted.filter((p) => !readEarly.has(p));
    const held = rest.length ? mergeHolders(heldEarly, await closures.holders(db, rest)) : heldEarly;
    const snapshot: ClusterSnapshot = {
      nodes: nodeViews.map((n) => (held.size ? { ...n, storePaths: held.get(n.id) ?? new Set() } : n)),
      placed: placed.map((p) => ({ jobId: p.job_id, nodeId: p.node_id, count: p.n })),
    };
    // Planned in slices, each applied as soon as planned (the database applies while the rest is planned).
    const pipeline = new ApplyPipeline(deps);
    let conflicts: number;
    let failures: Failure[];
    try {
      failures = await planInSlices(
        snapshot,
        pending,
        (w) => w,
        jobInfo,
        { strategy: deps.strategy, seed: randomUUID() },
        (ps) => pipeline.push(ps),
      );
      pipeline.flush();
      await wl.setPendingReasons(
        db,
        failures.map((f) => ({ id: f.workloadId, reason: f.summary })),
      );
      conflicts = pipeline.placed === 0 ? 0 : await applyAndPlanAhead(deps, pipeline, snapshot.nodes);
    } catch (err) {
      // No apply of this pass may outlive it (passes run one at a time).
      await pipeline.settled().catch(() => {});
      throw err;
    }
    if (conflicts === 0) {
      if (deps.preempt) {
        const { due, reserved } = await deps.preempt(preemptorsOf(failures, pending, jobInfo));
        for (const id of reserved) preempting.add(id);
        if (due < wakeAt) {
          wakeAt = due;
          deps.wakeAt?.(due);
        }
      }
      settle(failures, pipeline.placed);
      return;
    }
    // The view was stale (another coordinator placed, a node changed): replan on every node read afresh.
    state.view.invalidate();
    deps.log.info({ conflicts, attempt }, 'plan partly rejected on fresh state; replanning');
  }
}

/**
 * Plans the workloads as place() does in one call, but in slices with the event loop let run whenever
 * PLAN_YIELD_MS of planning have passed, so a big pass leaves heartbeats, requests and agent messages
 * answered (one Planner carries the plan from slice to slice: the plan is the same). Each workload is
 * turned into a pending one (`pendingOf`) and a demand only in its slice. Each slice's placements go
 * to `placed` as soon as it is planned; returns the failures.
 */
async function planInSlices<T>(
  snapshot: Snapshot,
  workloads: readonly T[],
  pendingOf: (w: T) => wl.PendingWorkload,
  jobInfo: ReadonlyMap<string, JobInfo>,
  opts: PlaceOptions,
  placed: (ps: PlannedPlacement[]) => void,
): Promise<Failure[]> {
  const failures: Failure[] = [];
  await forEachSlice(snapshot, workloads, opts, (planner, part) => {
    const slice = part.map(pendingOf);
    const plan = planner.plan(demandsOf(slice, jobInfo));
    if (plan.placements.length > 0) {
      const byId = new Map(slice.map((w) => [w.id, w]));
      placed(plan.placements.map((p) => ({ w: byId.get(p.workloadId)!, nodeId: p.nodeId })));
    }
    for (const f of plan.failures) failures.push(f);
  });
  return failures;
}

/**
 * place() of `demands`, the same plan, with the event loop let run whenever PLAN_YIELD_MS of planning
 * have passed (as a pass plans): for a dry run and a pre-warm, which plan up to a job's 10,000 instances.
 */
export async function placeYielding(
  snapshot: Snapshot,
  demands: readonly Demand[],
  opts: PlaceOptions,
): Promise<Plan> {
  const out: Plan = { placements: [], failures: [], coalescedFailures: 0 };
  await forEachSlice(snapshot, demands, opts, (planner, part) => {
    const plan = planner.plan(part);
    for (const p of plan.placements) out.placements.push(p);
    for (const f of plan.failures) out.failures.push(f);
    out.coalescedFailures += plan.coalescedFailures;
  });
  return out;
}

/**
 * Hands `items` to `each` PLAN_SLICE at a time with one Planner on `snapshot` (so the slices make the
 * plan one place() call would), letting the event loop run between slices once PLAN_YIELD_MS of planning
 * have passed.
 */
async function forEachSlice<T>(
  snapshot: Snapshot,
  items: readonly T[],
  opts: PlaceOptions,
  each: (planner: Planner, slice: readonly T[]) => void,
): Promise<void> {
  const planner = new Planner(snapshot, opts);
  const breathe = loopBreather();
  for (let i = 0; i < items.length; i += PLAN_SLICE) {
    await breathe();
    each(planner, items.slice(i, i + PLAN_SLICE));
  }
}

/** A function to await between slices of work: it lets the event loop run once PLAN_YIELD_MS have passed. */
function loopBreather(): () => Promise<void> {
  let since = performance.now();
  return async () => {
    if (performance.now() - since < PLAN_YIELD_MS) return;
    await new Promise((resolve) => setImmediate(resolve));
    since = performance.now();
  };
}

/**
 * The applies of a pass, in order, one at a time, while the pass plans what comes next: placements
 * pushed are applied APPLY_CHUNK at a time (the rest at `flush`), each once the one before has
 * committed. Keeps what every placement pushed takes per node (`added`), committed or not, for the
 * plans made beside the applies.
 */
class ApplyPipeline {
  readonly added = new Map<string, { cpu: number; memory_mb: number; disk_mb: number }>();
  /** Placements refused by an apply's re-check so far. */
  conflicts = 0;
  /** Placements pushed so far. */
  placed = 0;
  private queued: PlannedPlacement[] = [];
  private tail: Promise<void> = Promise.resolve();
  /** The applies flushed before the last one, committed. */
  private beforeLast: Promise<void> = Promise.resolve();
  private failure: { err: unknown } | null = null;

  constructor(private readonly deps: Pick<SchedulePassDeps, 'db' | 'holder' | 'started'>) {}

  push(ps: readonly PlannedPlacement[]): void {
    for (const p of ps) {
      const { w, nodeId } = p;
      const u = this.added.get(nodeId);
      if (u) {
        u.cpu += w.cpu;
        u.memory_mb += w.memory_mb;
        u.disk_mb += w.disk_mb;
      } else this.added.set(nodeId, { cpu: w.cpu, memory_mb: w.memory_mb, disk_mb: w.disk_mb });
      this.queued.push(p);
      if (this.queued.length >= APPLY_CHUNK) this.flush();
    }
    this.placed += ps.length;
  }

  /** Applies what is queued (after the applies before it). */
  flush(): void {
    if (this.queued.length === 0) return;
    const chunk = this.queued;
    this.queued = [];
    this.beforeLast = this.tail;
    this.tail = this.tail.then(async () => {
      if (this.failure) return;
      try {
        this.conflicts += (await applyPlacements(this.deps.db, chunk, this.deps)).conflicts;
      } catch (err) {
        this.failure = { err };
      }
    });
  }

  /** Resolves once every apply flushed before the last one has committed (the last may still run). */
  async allButLastSettled(): Promise<void> {
    await this.beforeLast;
    if (this.failure) throw this.failure.err;
  }

  /** Resolves once every apply flushed has committed; throws the first apply's failure. */
  async settled(): Promise<void> {
    await this.tail;
    if (this.failure) throw this.failure.err;
  }
}

/**
 * The pending list read, with the workloads of the committed new jobs it did not see (it ran before their
 * commit) added at its end, as the newest; such a job has no placement yet (`unplaced`). A new job the
 * read saw is left to the read (its workloads another coordinator placed meanwhile are not pending any
 * more). Should the read have run after another coordinator placed all of a job's workloads, they are
 * planned again from here, and the apply, which moves only pending workloads, skips them.
 */
function withNewJobs(
  read: wl.PendingWorkload[],
  newJobs: readonly NewJobInsert[],
): { all: wl.PendingWorkload[]; unplaced: string[] } {
  if (newJobs.length === 0) return { all: read, unplaced: [] };
  const seen = new Set(read.map((w) => w.job_id));
  const unseen = newJobs.filter((j) => !seen.has(j.jobId));
  return { all: [...read, ...unseen.flatMap(pendingOfNewJob)], unplaced: unseen.map((j) => j.jobId) };
}

/** A new job's workloads as the pending list would return them. */
function pendingOfNewJob(j: NewJobInsert): wl.PendingWorkload[] {
  return j.workloads.map(pendingOfNew);
}

/** A new workload as the pending list would return it. */
function pendingOfNew(w: NewJobInsert['workloads'][number]): wl.PendingWorkload {
  return {
    id: w.id,
    job_id: w.job_id,
    job_version: w.job_version,
    instance: w.instance,
    cpu: w.cpu,
    memory_mb: w.memory_mb,
    disk_mb: w.disk_mb,
    isolation: w.isolation,
    not_before: null,
    restart_delay_ms: 0,
  };
}

/** Pending workloads that may preempt (their rank, room short on some node), highest rank first. */
function preemptorsOf(
  failures: readonly Failure[],
  pending: readonly wl.PendingWorkload[],
  jobInfo: ReadonlyMap<string, JobInfo>,
): Preemptor[] {
  if (failures.length === 0 || ![...jobInfo.values()].some((i) => preempts(i.rank))) return [];
  const failed = new Map(failures.map((f) => [f.workloadId, f]));
  const out: Preemptor[] = [];
  // `pending` is in rank order already.
  for (const w of pending) {
    const f = failed.get(w.id);
    const info = jobInfo.get(`${w.job_id}/${w.job_version}`);
    if (!f || !info || !preempts(info.rank) || !(f.reasons.CPU || f.reasons.MEMORY || f.reasons.DISK))
      continue;
    out.push({ demand: workloadDemand(w, info.constraints, info.closure), rank: info.rank });
  }
  return out;
}

/** What the pure core plans for each pending workload. */
function demandsOf(pending: readonly wl.PendingWorkload[], jobInfo: ReadonlyMap<string, JobInfo>): Demand[] {
  return pending.map((w) => {
    const info = jobInfo.get(`${w.job_id}/${w.job_version}`);
    return workloadDemand(w, info?.constraints ?? {}, info?.closure);
  });
}

/**
 * Goes on after a pass's plan (its applies under way in `pipeline`) with the jobs that submits here have
 * sent since (their workloads are known from memory, see expectNewJob), batch after batch while such
 * jobs keep coming, reading nothing back. Once the new workloads are at least as many as the nodes, the
 * next batch is planned while the applies before it run in PostgreSQL (the coordinator plans while the
 * database applies) and applied once they have committed and their starts are sent; fewer wait for the
 * applies, to go in one bigger batch. The batches are planned on the nodes as the pass read them plus
 * everything the pass has placed since (`nodes` is not read again, so an apply is never counted twice
 * nor one in flight missed); a new job has no placement anywhere yet and all its workloads go in one
 * batch, so its limits and spread count right. What others changed meanwhile is caught by the apply's
 * re-check, as for any stale view. Returns the conflicts; the caller then replans on a fresh view. With
 * no new job, this waits for the applies.
 */
async function applyAndPlanAhead(
  deps: SchedulePassDeps,
  pipeline: ApplyPipeline,
  nodes: readonly NodeView[],
): Promise<number> {
  for (let batch = 0; batch < AHEAD_BATCHES; batch++) {
    // The starts the last commit queued go out (their sockets are uncorked on the next tick, which
    // would otherwise wait for this batch's plan) and the submits that came meanwhile are read in.
    await new Promise((resolve) => setImmediate(resolve));
    // Planned beside the applies only once the new workloads are at least as many as the nodes: fewer
    // wait for them to commit and go with those submitted meanwhile, in one bigger batch (an apply
    // writes a usage row and an outbox row, and its starts a socket write, for each node it touches).
    if (deps.state.newWorkloads() < nodes.length) await pipeline.settled();
    if (pipeline.conflicts > 0) break;
    const jobs = deps.state.takeNewJobs();
    if (jobs.length === 0) break;
    await planNewJobs(deps, jobs, nodes, pipeline);
    // One batch applying, the next one planned beside it at most: the jobs submitted meanwhile then go
    // in one bigger batch (fewer transactions, and fewer socket writes to each agent).
    await pipeline.allButLastSettled();
  }
  await pipeline.settled();
  return pipeline.conflicts;
}

/**
 * Plans new jobs (expectNewJob) once their inserts have committed, on `nodes` plus what the pipeline's
 * placements take, and pushes their placements into it.
 */
async function planNewJobs(
  deps: SchedulePassDeps,
  jobs: readonly NewJobInsert[],
  nodes: readonly NodeView[],
  pipeline: ApplyPipeline,
): Promise<void> {
  const committed = await Promise.all(jobs.map((j) => j.inserted));
  const inserted = jobs.filter((_, i) => committed[i]);
  if (inserted.length === 0) return;
  // Read per job version, not per workload: all of a job's new workloads share its version.
  const jobInfo = await deps.state.jobInfoFor(
    deps.db,
    deps.specOf,
    inserted.flatMap((j) => j.workloads.slice(0, 1)),
  );
  const paths = [...new Set([...jobInfo.values()].flatMap((i) => i.closure.map((p) => p.path)))];
  const held = paths.length ? await closures.holders(deps.db, paths) : null;
  const added = pipeline.added;
  const snapshot: ClusterSnapshot = {
    nodes: nodes.map((n) => {
      const u = added.get(n.id);
      if (!u && !held) return n;
      return {
        ...n,
        used: u
          ? {
              cpu: n.used.cpu + u.cpu,
              memory_mb: n.used.memory_mb + u.memory_mb,
              disk_mb: n.used.disk_mb + u.disk_mb,
            }
          : n.used,
        storePaths: held ? (held.get(n.id) ?? new Set()) : n.storePaths,
      };
    }),
    placed: [],
  };
  const failures = await planInSlices(
    snapshot,
    inserted.length === 1 ? inserted[0]!.workloads : inserted.flatMap((j) => j.workloads),
    pendingOfNew,
    jobInfo,
    { strategy: deps.strategy, seed: randomUUID() },
    (ps) => pipeline.push(ps),
  );
  pipeline.flush();
  await wl.setPendingReasons(
    deps.db,
    failures.map((f) => ({ id: f.workloadId, reason: f.summary })),
  );
}

/** Both reads of which nodes hold which paths, in one map (a is extended). */
function mergeHolders(a: Map<string, Set<string>>, b: Map<string, Set<string>>): Map<string, Set<string>> {
  for (const [node, paths] of b) {
    const s = a.get(node);
    if (s) for (const p of paths) s.add(p);
    else a.set(node, paths);
  }
  return a;
}

/**
 * The cluster as the pure core sees it, read in full from the workloads themselves (what the
 * incremental view must always equal): for dry runs, pre-warm and checks.
 */
export async function clusterSnapshot(q: Queryable): Promise<ClusterSnapshot> {
  const [rows, usage, placed] = await Promise.all([
    nodes.listNodes(q),
    wl.usageByNode(q),
    wl.activePlacements(q),
  ]);
  return {
    nodes: rows.map((n) => toNodeView(n, usage.get(n.id) ?? { cpu: 0, memory_mb: 0, disk_mb: 0 })),
    placed: placed.map((p) => ({ jobId: p.job_id, nodeId: p.node_id, count: p.n })),
  };
}

interface PlannedPlacement {
  /** The workload as the pass read it (its resources never change). */
  w: wl.PendingWorkload;
  nodeId: string;
}

/** A workload a pass moved to starting on `node_id`. */
export type StartedWorkload = wl.PendingWorkload & { status: 'starting'; node_id: string };

/**
 * Applies placements in statements of at most APPLY_CHUNK (each atomic on its own: one round trip, no
 * BEGIN/COMMIT), re-checking capacity on the node rows locked in id order (their trigger-kept usage is
 * exact under the lock), and reports each chunk's starts as soon as it commits. A placement that no
 * longer fits is a conflict, left pending (and replanned); a workload no longer pending (stopped
 * meanwhile) is skipped.
 */
async function applyPlacements(
  db: Db,
  placements: PlannedPlacement[],
  deps: Pick<SchedulePassDeps, 'holder' | 'started'>,
): Promise<{ conflicts: number }> {
  let conflicts = 0;
  for (let i = 0; i < placements.length; i += APPLY_CHUNK) {
    const chunk = placements.slice(i, i + APPLY_CHUNK);
    const r = await retryOnConflict(() => applyChunkOnce(db, chunk, deps.holder));
    // No await between the commit's answer and here: the coordinator sends these starts before any
    // other answer from the database (a drain's, a stop's) is handled.
    if (r.applied.length > 0) deps.started(r.applied, r.commandOf);
    conflicts += r.conflicts;
  }
  return { conflicts };
}

async function applyChunkOnce(
  db: Db,
  placements: PlannedPlacement[],
  holder?: string,
): Promise<{ applied: StartedWorkload[]; commandOf: Map<string, number>; conflicts: number }> {
  // One statement, so one round trip and atomic without BEGIN/COMMIT (see applyStarts).
  const r = await applyStarts(
    db,
    placements.map(({ w, nodeId }) => ({
      id: w.id,
      nodeId,
      cpu: w.cpu,
      memory_mb: w.memory_mb,
      disk_mb: w.disk_mb,
    })),
    holder,
  );
  const commandOf = new Map<string, number>();
  const applied = r.moved.map(({ index, commandId }): StartedWorkload => {
    const { w, nodeId } = placements[index]!;
    commandOf.set(nodeId, commandId);
    // Field by field, not `{ ...w }`: spreading a row as pg builds it cost 2.5–20 µs (its map's fields
    // start out null and change representation), a literal ~0.2 µs; 10% of the coordinator's CPU here.
    return {
      id: w.id,
      job_id: w.job_id,
      job_version: w.job_version,
      instance: w.instance,
      cpu: w.cpu,
      memory_mb: w.memory_mb,
      disk_mb: w.disk_mb,
      isolation: w.isolation,
      not_before: w.not_before,
      restart_delay_ms: w.restart_delay_ms,
      status: 'starting',
      node_id: nodeId,
    };
  });
  return { applied, commandOf, conflicts: placements.length - r.fitted };
}

/** Retries a transaction that PostgreSQL aborted for a deadlock or a serialization failure. */
export async function retryOnConflict<T>(fn: () => Promise<T>, attempts = 5): Promise<T> {
  for (let i = 1; ; i++) {
    try {
      return await fn();
    } catch (err) {
      const code = (err as { code?: string }).code;
      if (i >= attempts || (code !== '40P01' && code !== '40001')) throw err;
      await new Promise((r) => setTimeout(r, 5 * i + Math.random() * 20));
    }
  }
}
