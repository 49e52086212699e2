/**
 * One step of a rolling update (Aurora's UpdateConfig) as a pure function: from a snapshot of the
 * update, its target version and the job's workloads at a time `now`, the changes to make: workloads
 * to stop or to fail, instances to create at the target version, and the update's progress or end.
 * No database, no clock: `scheduler/rollout.ts` reads the snapshot and applies the step, each change
 * guarded by the state it expects.
 *
 * The rules (Aurora's JobUpdateSettings): an instance of the new version is done once it has run for
 * `watch_secs` (and, when the job has a health check, reported healthy). An instance is retried until
 * it failed more than `max_per_shard_failures` (Aurora's maxPerInstanceFailures) times (a workload
 * lost with its node is placed again and is no failure); then it has failed the update for good: the
 * update no longer creates workloads for it and moves past it, as past a done one. More failed
 * instances than `max_total_failures` (maxFailedInstances) end the update: rolled back to the
 * previous version when `rollback_on_failure` (and this is not already a rollback), else marked
 * failed. An instance not running within `restart_threshold` seconds fails its update. With `wait_for_batch_completion` the next batch starts once the whole batch is done or
 * failed; without (Aurora's default) a window of `batch_size` instances slides: as soon as one is done
 * or failed, the next starts. Once every instance is done or failed (no more than
 * `max_total_failures` of them), the update has succeeded and instances beyond the new count stop.
 */
import type { WorkloadStatus } from '../../../spec/messages.js';

/** The update_config fields a step reads (defaults applied). */
export interface RolloutConfig {
  batch_size: number;
  watch_secs: number;
  max_total_failures: number;
  max_per_shard_failures: number;
  rollback_on_failure: boolean;
  restart_threshold: number;
  wait_for_batch_completion: boolean;
}

/** What a job without an update_config is rolled with (a rollback of one, say). */
export const DEFAULT_ROLLOUT_CONFIG: RolloutConfig = {
  batch_size: 1,
  watch_secs: 45,
  max_total_failures: 0,
  max_per_shard_failures: 0,
  rollback_on_failure: true,
  restart_threshold: 60,
  wait_for_batch_completion: false,
};

export interface RolloutUpdate {
  from_version: number;
  to_version: number;
  /** This update is itself a rollback (it never rolls back again). */
  rollback: boolean;
  /** A restart of the same version: only workloads created since the update began count. */
  restart: boolean;
  /** Instances below this one are done. */
  next_instance: number;
  /** When the update began (ms since the epoch). */
  created_at: number;
}

export interface RolloutWorkload {
  id: string;
  instance: number;
  job_version: number;
  status: WorkloadStatus;
  /** ms since the epoch */
  created_at: number;
  started_at: number | null;
  health: 'unknown' | 'healthy' | 'unhealthy' | null;
}

export interface RolloutSnapshot {
  update: RolloutUpdate;
  /** The target version, or null when it is gone. */
  target: { instances: number; config: RolloutConfig; health_checked: boolean } | null;
  /** The job's live workloads and those created since the update began. */
  workloads: RolloutWorkload[];
}

export type RolloutEnd =
  | { status: 'succeeded'; message: string }
  | { status: 'failed'; message: string }
  /** Ended for failures: the job goes back to `from_version`, rolled out by a new rollback update. */
  | { status: 'rolled_back'; message: string };

export interface RolloutStep {
  /** Live workloads to move towards stopped, with why. */
  stops: { workloadId: string; reason: string }[];
  /** Pending or starting workloads that did not reach running in time: they end failed. */
  fails: { workloadId: string; reason: string }[];
  /** Instances that get a new pending workload of the target version. */
  creates: { instance: number; reason: string }[];
  /** The update's new next_instance and message, when it moved on. */
  progress: { next_instance: number; message: string } | null;
  /** The update ends (succeeded: every instance is done, next_instance becomes the instance count). */
  end: RolloutEnd | null;
}

const LIVE = new Set<WorkloadStatus>(['pending', 'starting', 'running']);
export const isLive = (w: Pick<RolloutWorkload, 'status'>) => LIVE.has(w.status);

/**
 * Instances of the target version that failed more than max_per_shard_failures times since the
 * update began (such an instance has failed the update; until then it is retried). A lost workload
 * is not a failure of the version: its node went away (an agent killed, a host down) and it is placed
 * again, as a lost workload is outside an update (Aurora: LOST is rescheduled regardless).
 */
export function failedInstances(s: RolloutSnapshot, cfg: RolloutConfig): number {
  return failedInstanceSet(s, cfg).size;
}

/** The instances counted by `failedInstances`. */
export function failedInstanceSet(s: RolloutSnapshot, cfg: RolloutConfig): Set<number> {
  const perInstance = new Map<number, number>();
  for (const w of s.workloads) {
    if (
      w.job_version === s.update.to_version &&
      w.status === 'failed' &&
      w.created_at >= s.update.created_at
    ) {
      perInstance.set(w.instance, (perInstance.get(w.instance) ?? 0) + 1);
    }
  }
  return new Set([...perInstance].filter(([, n]) => n > cfg.max_per_shard_failures).map(([i]) => i));
}

/**
 * An instance's current workload of the update (the newest live one of the target version; for a
 * restart, one created since the restart began), if any, and its other live workloads.
 */
export function standing(
  s: RolloutSnapshot,
  instance: number,
): { current: RolloutWorkload | undefined; others: RolloutWorkload[] } {
  const mine = s.workloads.filter((w) => w.instance === instance).sort((a, b) => b.created_at - a.created_at);
  const current = mine.find(
    (w) =>
      w.job_version === s.update.to_version &&
      isLive(w) &&
      (!s.update.restart || w.created_at >= s.update.created_at),
  );
  return { current, others: mine.filter((w) => w !== current && isLive(w)) };
}

/** One step of a rolling update at `now` (ms since the epoch). */
export function rolloutStep(s: RolloutSnapshot, now: number): RolloutStep {
  const step: RolloutStep = { stops: [], fails: [], creates: [], progress: null, end: null };
  const { update: u, target } = s;
  if (!target) {
    step.end = { status: 'failed', message: `version ${u.to_version} is gone` };
    return step;
  }
  const cfg = target.config;
  const n = target.instances;

  const failed = failedInstanceSet(s, cfg);
  const failures = failed.size;
  if (failures > cfg.max_total_failures) {
    const why = `${failures} instance(s) of version ${u.to_version} failed (max_total_failures ${cfg.max_total_failures})`;
    step.end =
      cfg.rollback_on_failure && !u.rollback
        ? { status: 'rolled_back', message: `${why}; rolled back to version ${u.from_version}` }
        : { status: 'failed', message: why };
    return step;
  }

  const replacedBy = u.restart
    ? 'restarted (rolling restart)'
    : `replaced by version ${u.to_version} (rolling update)`;
  const created = u.restart
    ? `rolling restart of version ${u.to_version}`
    : `rolling update to version ${u.to_version}`;
  /** The old workloads stop, a new one is placed (capacity frees as they stop). */
  const replace = (instance: number, others: RolloutWorkload[]) => {
    for (const w of others) step.stops.push({ workloadId: w.id, reason: replacedBy });
    step.creates.push({ instance, reason: created });
  };
  /**
   * done: ran for watch_secs (and healthy when checked). One that did not reach running within
   * restart_threshold failed its update (Aurora): it ends failed, counts towards the failure limits
   * and is retried by the next step.
   */
  const settle = (current: RolloutWorkload, others: RolloutWorkload[]): 'done' | 'in_flight' => {
    for (const w of others)
      step.stops.push({ workloadId: w.id, reason: `replaced by version ${u.to_version}` });
    if (current.status !== 'running' && now - current.created_at > cfg.restart_threshold * 1000) {
      if (current.status === 'pending' || current.status === 'starting') {
        step.fails.push({
          workloadId: current.id,
          reason: `did not reach running within restart_threshold (${cfg.restart_threshold} s)`,
        });
      }
      return 'in_flight';
    }
    const watched =
      current.status === 'running' &&
      current.started_at !== null &&
      now - current.started_at >= cfg.watch_secs * 1000 &&
      (target.health_checked ? current.health === 'healthy' : current.health !== 'unhealthy');
    return watched ? 'done' : 'in_flight';
  };

  let next = u.next_instance;
  if (cfg.wait_for_batch_completion) {
    // Batch by batch: the next batch starts once every instance of this one is done.
    for (;;) {
      const batchEnd = Math.min(n, next + cfg.batch_size);
      let batchDone = true;
      for (let instance = next; instance < batchEnd; instance++) {
        if (failed.has(instance)) continue; // failed the update for good: settled, never retried
        const { current, others } = standing(s, instance);
        if (!current) {
          replace(instance, others);
          batchDone = false;
        } else if (settle(current, others) !== 'done') batchDone = false;
      }
      if (!batchDone) return step;
      if (batchEnd >= n) break;
      next = batchEnd;
      step.progress = { next_instance: next, message: `${next} of ${n} instance(s) updated` };
    }
  } else {
    // A sliding window: at most batch_size instances in flight; as soon as one is done, the next starts.
    let inFlight = 0;
    let firstNotDone = n;
    for (let instance = next; instance < n; instance++) {
      if (failed.has(instance)) continue; // failed the update for good: out of the window, never retried
      const { current, others } = standing(s, instance);
      if (current) {
        if (settle(current, others) === 'done') continue;
        inFlight++;
      } else {
        if (inFlight >= cfg.batch_size) {
          firstNotDone = Math.min(firstNotDone, instance);
          break;
        }
        replace(instance, others);
        inFlight++;
      }
      firstNotDone = Math.min(firstNotDone, instance);
    }
    if (firstNotDone > next) {
      step.progress = { next_instance: firstNotDone, message: `${firstNotDone} of ${n} instance(s) updated` };
    }
    if (firstNotDone < n) return step;
  }
  // Every instance runs the target version: instances beyond the new count go.
  for (const w of s.workloads) {
    if (w.instance >= n && isLive(w))
      step.stops.push({ workloadId: w.id, reason: `version ${u.to_version} has ${n} instance(s)` });
  }
  step.progress = null; // the end says it: next_instance becomes the instance count
  const within = `${failures} instance(s) failed (max_total_failures ${cfg.max_total_failures})`;
  step.end = {
    status: 'succeeded',
    message:
      failures > 0
        ? u.rollback
          ? `rolled back to version ${u.to_version}; ${within}`
          : u.restart
            ? `${n - failures} of ${n} instance(s) restarted; ${within}`
            : `${n - failures} of ${n} instance(s) run version ${u.to_version}; ${within}`
        : u.rollback
          ? `rolled back to version ${u.to_version}`
          : u.restart
            ? `all ${n} instance(s) restarted`
            : `all ${n} instance(s) run version ${u.to_version}`,
  };
  return step;
}
