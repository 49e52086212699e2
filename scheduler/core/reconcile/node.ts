/**
 * Node-down reconciliation, pure: from nodes with their last heartbeat and their socket holder's last
 * beat (on the database clock), the TTL and the judge's grace, which nodes go down; and for a node that
 * is gone (silent, said goodbye, removed) which of its workloads end, which are lost and which lost
 * ones get a replacement. No I/O, no clock: `now` is an input. The store applies the result with
 * guarded transitions (liveness.ts).
 */
import type { WorkloadStatus } from '../../../spec/messages.js';

/** A node as the liveness judge sees it; times are ms since the epoch on the database clock. */
export interface NodeLivenessView {
  id: string;
  name: string;
  status: 'ready' | 'down' | 'draining';
  /** The node's last heartbeat as stored. */
  lastSeenAt: number;
  /** The last registry beat of the coordinator holding its socket; null when nobody claims it. */
  holderBeatAt: number | null;
}

export interface LivenessSnapshot {
  nodes: readonly NodeLivenessView[];
  /** The database clock's now. */
  now: number;
  ttlMs: number;
  /** A coordinator whose registry row is silent this long counts as dead. */
  coordinatorDeadMs: number;
  /** The judge's remaining grace (after its start, an election or a stall): no verdict while > 0. */
  graceRemainingMs: number;
}

export interface DownVerdict {
  nodeId: string;
  silenceMs: number;
  reason: string;
}

/**
 * The silence of a node that its coordinator could have heard: while the socket holder beats the
 * registry, up to its last beat (its flushes precede its beats); once the holder is dead (or there is
 * none), from the later of the node's last heartbeat and the holder's last beat, so the agent has one
 * TTL to reconnect elsewhere.
 */
export function silenceOf(n: NodeLivenessView, now: number, coordinatorDeadMs: number): number {
  const holderAlive = n.holderBeatAt !== null && n.holderBeatAt > now - coordinatorDeadMs;
  if (holderAlive) return Math.min(n.holderBeatAt!, now) - n.lastSeenAt;
  return now - Math.max(n.lastSeenAt, n.holderBeatAt ?? n.lastSeenAt);
}

/**
 * A necessary condition for a verdict that the store can filter on cheaply: every node declared down
 * was last seen before this time (silence never exceeds `now - lastSeenAt`).
 */
export function silentSince(now: number, ttlMs: number): number {
  return now - ttlMs;
}

/** The nodes to declare down: not down yet, silent past the TTL, and the judge out of its grace. */
export function judgeSilence(s: LivenessSnapshot): DownVerdict[] {
  if (s.graceRemainingMs > 0) return [];
  const out: DownVerdict[] = [];
  for (const n of s.nodes) {
    if (n.status === 'down') continue;
    const silenceMs = silenceOf(n, s.now, s.coordinatorDeadMs);
    if (silenceMs > s.ttlMs)
      out.push({ nodeId: n.id, silenceMs, reason: `node ${n.name} missed heartbeats for ${s.ttlMs} ms` });
  }
  return out;
}

/** A workload on a node, as node-down reconciliation needs it. */
export interface NodeWorkloadView {
  id: string;
  job_id: string;
  job_version: number;
  instance: number;
  status: WorkloadStatus;
  restarts: number;
}

/** A job, as replacement decisions need it. */
export interface JobReplacementView {
  id: string;
  status: 'active' | 'stopped';
  current_version: number;
  /** The rolling update under way, if the latest one is rolling. */
  rolling: { from_version: number; next_instance: number } | null;
}

export interface WorkloadMove {
  workloadId: string;
  from: WorkloadStatus;
  to: WorkloadStatus;
  reason: string;
}

/** A pending workload to create in place of one that ended: same job version and instance. */
export interface Replacement {
  replaces: string;
  jobId: string;
  version: number;
  instance: number;
  restarts: number;
  reason: string;
}

/**
 * What happens to a workload whose node is gone: a stopping one has stopped (nothing runs it any
 * more); a starting or running one is lost; anything else stays as it is.
 */
export function goneNodeMove(
  w: Pick<NodeWorkloadView, 'id' | 'status'>,
  nodeName: string,
  why: string,
): WorkloadMove | null {
  if (w.status === 'stopping')
    return {
      workloadId: w.id,
      from: w.status,
      to: 'stopped',
      reason: `node ${nodeName} went away while stopping`,
    };
  if (w.status === 'starting' || w.status === 'running')
    return { workloadId: w.id, from: w.status, to: 'lost', reason: why };
  return null;
}

/**
 * Whether an ended workload is replaced: only while its job is active, at the job's current version,
 * or at the previous one for an instance a rolling update has not reached yet (it still serves until
 * the rollout gets to it). A lost workload's replacement does not count as a failure (Aurora: LOST is
 * rescheduled regardless of max_task_failures); a failed one's may (`countAsFailure`).
 */
export function replacementFor(
  w: Pick<NodeWorkloadView, 'id' | 'job_id' | 'job_version' | 'instance' | 'restarts'>,
  job: JobReplacementView | undefined,
  reason: string,
  countAsFailure = false,
): Replacement | null {
  if (!job || job.status !== 'active') return null;
  const awaitsRollout =
    job.rolling !== null &&
    job.rolling.from_version === w.job_version &&
    w.instance >= job.rolling.next_instance;
  if (job.current_version !== w.job_version && !awaitsRollout) return null;
  return {
    replaces: w.id,
    jobId: job.id,
    version: w.job_version,
    instance: w.instance,
    restarts: w.restarts + (countAsFailure ? 1 : 0),
    reason: `${reason} (replaces ${w.id})`,
  };
}

export interface GoneNodeSnapshot {
  node: { id: string; name: string };
  /** Its active workloads (starting, running, stopping). */
  workloads: readonly NodeWorkloadView[];
  jobs: ReadonlyMap<string, JobReplacementView>;
  /** Why the node is gone, for the lost workloads' events. */
  why: string;
}

export interface GoneNodeChanges {
  moves: WorkloadMove[];
  replacements: Replacement[];
  /**
   * Stops queued for the gone node, one per lost workload: an agent that is still connected (silent,
   * not gone) or comes back is told at once, before its replacement runs beside it for long.
   */
  stops: { workloadId: string; reason: string }[];
}

/** Why a lost workload's agent is told to stop it. */
export const lostStopReason = (why: string) => `declared lost: ${why}`;

/**
 * A gone node's workloads: each active one ends (stopped or lost); each lost one is stopped on the
 * node and, when its job still wants it, replaced.
 */
export function goneNodeChanges(s: GoneNodeSnapshot): GoneNodeChanges {
  const moves: WorkloadMove[] = [];
  const replacements: Replacement[] = [];
  const stops: GoneNodeChanges['stops'] = [];
  for (const w of s.workloads) {
    const move = goneNodeMove(w, s.node.name, s.why);
    if (!move) continue;
    moves.push(move);
    if (move.to !== 'lost') continue;
    stops.push({ workloadId: w.id, reason: lostStopReason(s.why) });
    const r = replacementFor(w, s.jobs.get(w.job_id), `rescheduled: ${s.why}`);
    if (r) replacements.push(r);
  }
  return { moves, replacements, stops };
}
