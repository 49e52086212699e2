/**
 * Rolling updates (Aurora's UpdateConfig): a job resubmitted with an `update_config` while its previous
 * version runs is replaced `batch_size` instances at a time. An instance of the new version counts once
 * it has run for `watch_secs` (and, when the job has a health check, reported healthy). An instance is
 * retried until it failed more than `max_per_shard_failures` times; more failed instances than
 * `max_total_failures` end the update: rolled back to the previous version when
 * `rollback_on_failure`, else left as it is and marked failed. An instance not running within
 * `restart_threshold` seconds fails its update. With `wait_for_batch_completion` the next batch starts
 * once the whole batch is done; without (Aurora's default) a window of `batch_size` instances slides:
 * as soon as one is done, the next starts. Advanced by the coordinator's tick and
 * after every status change; every step is one transaction.
 */
import { randomUUID } from 'node:crypto';
import type { JobSpec } from '../spec/job.js';
import * as commands from './store/agent-commands.js';
import type { Queryable } from './store/db.js';
import * as jobs from './store/jobs.js';
import * as updates from './store/updates.js';
import type { WorkloadRow } from './store/workloads.js';
import * as wl from './store/workloads.js';

/** What a rollout needs from the coordinator. */
export interface RolloutHost {
  /** Moves live workloads towards stopped; returns those an agent must be told to stop. */
  stopWorkloads(q: Queryable, ws: WorkloadRow[], reason: string): Promise<WorkloadRow[]>;
  /** Creates pending workloads of `version` for the given instances. */
  createWorkloads(
    q: Queryable,
    jobId: string,
    version: number,
    spec: JobSpec,
    instances: number[],
    reason: string,
  ): Promise<void>;
}

export interface StepResult {
  stops: WorkloadRow[];
  created: boolean;
  changedJobs: string[];
}

const LIVE = new Set(['pending', 'starting', 'running']);

/** Starts a rollout from `from` to `to` (the caller has already made `to` the job's current version). */
export async function startRollout(
  q: Queryable,
  jobId: string,
  from: number,
  to: number,
  kind: 'update' | 'rollback' | 'restart' = 'update',
): Promise<void> {
  await updates.cancelRolling(
    q,
    jobId,
    `superseded by the ${kind === 'restart' ? 'restart' : `update to version ${to}`}`,
  );
  await updates.insertUpdate(q, {
    id: randomUUID(),
    job_id: jobId,
    from_version: from,
    to_version: to,
    rollback: kind === 'rollback',
    restart: kind === 'restart',
    message:
      kind === 'rollback'
        ? `rolling back to version ${to}`
        : kind === 'restart'
          ? `restarting version ${to}`
          : `updating from version ${from} to ${to}`,
  });
}

/** Advances every rolling update by what can be done now. */
export async function advanceRollouts(q: Queryable, host: RolloutHost, now: Date): Promise<StepResult> {
  const out: StepResult = { stops: [], created: false, changedJobs: [] };
  for (const u of await updates.lockRolling(q)) {
    const before = out.stops.length + Number(out.created);
    await advanceOne(q, host, u, now, out);
    if (out.stops.length + Number(out.created) !== before) out.changedJobs.push(u.job_id);
  }
  return out;
}

async function advanceOne(q: Queryable, host: RolloutHost, u: updates.UpdateRow, now: Date, out: StepResult) {
  const target = (await jobs.getJobVersion(q, u.job_id, u.to_version))?.spec;
  if (!target)
    return updates.setUpdate(q, u.id, { status: 'failed', message: `version ${u.to_version} is gone` });
  const cfg = target.update_config ?? {
    batch_size: 1,
    watch_secs: 45,
    max_total_failures: 0,
    max_per_shard_failures: 0,
    rollback_on_failure: true,
    restart_threshold: 60,
    wait_for_batch_completion: false,
  };
  // Only what a step decides on: live workloads and those created since the update began.
  const all = await wl.rolloutWorkloads(q, u.job_id, u.created_at);
  // An instance whose new workloads failed more than max_per_shard_failures times has failed the
  // update (until then it is retried); more failed instances than max_total_failures end it.
  const failuresPerInstance = new Map<number, number>();
  for (const w of all) {
    if (
      w.job_version === u.to_version &&
      (w.status === 'failed' || w.status === 'lost') &&
      w.created_at >= u.created_at
    ) {
      failuresPerInstance.set(w.instance, (failuresPerInstance.get(w.instance) ?? 0) + 1);
    }
  }
  const failures = [...failuresPerInstance.values()].filter((n) => n > cfg.max_per_shard_failures).length;

  if (failures > cfg.max_total_failures) {
    const why = `${failures} instance(s) of version ${u.to_version} failed (max_total_failures ${cfg.max_total_failures})`;
    if (cfg.rollback_on_failure && !u.rollback) {
      await updates.setUpdate(q, u.id, {
        status: 'rolled_back',
        message: `${why}; rolled back to version ${u.from_version}`,
      });
      await jobs.setJobVersion(q, u.job_id, u.from_version);
      await startRollout(q, u.job_id, u.to_version, u.from_version, 'rollback');
    } else {
      await updates.setUpdate(q, u.id, { status: 'failed', message: why });
    }
    return;
  }

  const n = target.instances;
  const reason = u.restart
    ? 'restarted (rolling restart)'
    : `replaced by version ${u.to_version} (rolling update)`;
  /** Where an instance stands: its current workload of the update (if any) and the others still live. */
  const standing = (instance: number) => {
    const mine = all
      .filter((w) => w.instance === instance)
      .sort((a, b) => b.created_at.getTime() - a.created_at.getTime());
    // The instance's current workload: the target version, and for a restart one started after it began.
    const newest = mine.find(
      (w) =>
        w.job_version === u.to_version && LIVE.has(w.status) && (!u.restart || w.created_at >= u.created_at),
    );
    return { newest, others: mine.filter((w) => w !== newest && LIVE.has(w.status)) };
  };
  /** Replaces an instance: the old workload stops, the new one is placed (capacity frees as it stops). */
  const replace = async (instance: number, others: WorkloadRow[]) => {
    out.stops.push(...(await host.stopWorkloads(q, others, reason)));
    await host.createWorkloads(
      q,
      u.job_id,
      u.to_version,
      target,
      [instance],
      u.restart ? `rolling restart of version ${u.to_version}` : `rolling update to version ${u.to_version}`,
    );
    out.created = true;
  };
  /**
   * done: ran for watch_secs (and healthy when checked). An instance that did not reach running within
   * restart_threshold failed its update (Aurora): it ends failed, counts towards the failure limits and
   * is retried by the next step.
   */
  const settle = async (newest: WorkloadRow, others: WorkloadRow[]): Promise<'done' | 'in_flight'> => {
    if (others.length)
      out.stops.push(...(await host.stopWorkloads(q, others, `replaced by version ${u.to_version}`)));
    if (
      newest.status !== 'running' &&
      now.getTime() - newest.created_at.getTime() > cfg.restart_threshold * 1000
    ) {
      const why = `did not reach running within restart_threshold (${cfg.restart_threshold} s)`;
      const failed = await wl.transitionWith(q, newest, (cur) =>
        cur.status === 'pending' || cur.status === 'starting'
          ? { to: 'failed', reason: why, error: why }
          : null,
      );
      if (failed?.node_id) {
        await commands.enqueueCommand(q, failed.node_id, {
          type: 'stop',
          workload_id: failed.id,
          reason: 'stop requested',
        });
        out.stops.push(failed);
      }
      return 'in_flight';
    }
    const watched =
      newest.status === 'running' &&
      newest.started_at !== null &&
      now.getTime() - newest.started_at.getTime() >= cfg.watch_secs * 1000 &&
      (target.health_check_config ? newest.health === 'healthy' : newest.health !== 'unhealthy');
    return watched ? 'done' : 'in_flight';
  };

  if (cfg.wait_for_batch_completion) {
    // Batch by batch: the next batch starts once every instance of this one is done.
    const batchEnd = Math.min(n, u.next_instance + cfg.batch_size);
    let batchDone = true;
    for (let instance = u.next_instance; instance < batchEnd; instance++) {
      const { newest, others } = standing(instance);
      if (!newest) {
        await replace(instance, others);
        batchDone = false;
      } else if ((await settle(newest, others)) !== 'done') batchDone = false;
    }
    if (!batchDone) return;
    if (batchEnd < n) {
      await updates.setUpdate(q, u.id, {
        next_instance: batchEnd,
        message: `${batchEnd} of ${n} instance(s) updated`,
      });
      return advanceOne(q, host, { ...u, next_instance: batchEnd }, now, out);
    }
  } else {
    // A sliding window (Aurora's default): at most batch_size instances in flight; as soon as one is
    // done, the next instance starts.
    let inFlight = 0;
    let firstNotDone = n;
    for (let instance = u.next_instance; instance < n; instance++) {
      const { newest, others } = standing(instance);
      if (newest) {
        if ((await settle(newest, others)) === 'done') continue;
        inFlight++;
      } else {
        if (inFlight >= cfg.batch_size) {
          firstNotDone = Math.min(firstNotDone, instance);
          break;
        }
        await replace(instance, others);
        inFlight++;
      }
      firstNotDone = Math.min(firstNotDone, instance);
    }
    if (firstNotDone > u.next_instance) {
      await updates.setUpdate(q, u.id, {
        next_instance: firstNotDone,
        message: `${firstNotDone} of ${n} instance(s) updated`,
      });
    }
    if (firstNotDone < n) return;
  }
  // Every instance runs the target version: instances beyond the new count go.
  const extra = all.filter(
    (w) => w.instance >= n && (w.status === 'pending' || w.status === 'starting' || w.status === 'running'),
  );
  out.stops.push(...(await host.stopWorkloads(q, extra, `version ${u.to_version} has ${n} instance(s)`)));
  await updates.setUpdate(q, u.id, {
    status: 'succeeded',
    next_instance: n,
    message: u.rollback
      ? `rolled back to version ${u.to_version}`
      : u.restart
        ? `all ${n} instance(s) restarted`
        : `all ${n} instance(s) run version ${u.to_version}`,
  });
}
