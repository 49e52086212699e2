/**
 * Rolling updates (Aurora's UpdateConfig): starting one, and advancing each by one step. The step's
 * decision is core/reconcile/rollout's pure `rolloutStep` on a snapshot read here (the update row,
 * locked, its target version and the job's live and recent workloads); this applies it in the same
 * transaction, every change guarded by the state it expects. Advanced by the leader's tick and after
 * every status change.
 */
import { randomUUID } from 'node:crypto';
import type { JobSpec } from '../spec/job.js';
import {
  DEFAULT_ROLLOUT_CONFIG,
  type RolloutSnapshot,
  type RolloutStep,
  rolloutStep,
} from './core/reconcile/rollout.js';
import * as commands from './store/agent-commands.js';
import type { Queryable } from './store/db.js';
import * as jobs from './store/jobs.js';
import * as updates from './store/updates.js';
import type { WorkloadRow } from './store/workloads.js';
import * as wl from './store/workloads.js';

/** What a rollout needs from the coordinator. */
export interface RolloutHost {
  /** Moves live workloads towards stopped, queueing their agents' stops; returns those. */
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
  /** Workloads moved to stopping (or failed on a node): their stops are queued. */
  stops: WorkloadRow[];
  created: boolean;
  changedJobs: string[];
}

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
    const target = (await jobs.getJobVersion(q, u.job_id, u.to_version))?.spec ?? null;
    // Only what a step decides on: live workloads and those created since the update began.
    const rows = target ? await wl.rolloutWorkloads(q, u.job_id, u.created_at) : [];
    const step = rolloutStep(rolloutSnapshot(u, target, rows), now.getTime());
    if (await applyStep(q, host, u, target, rows, step, out)) out.changedJobs.push(u.job_id);
  }
  return out;
}

/** The pure core's view of one rolling update. */
export function rolloutSnapshot(
  u: updates.UpdateRow,
  target: JobSpec | null,
  rows: WorkloadRow[],
): RolloutSnapshot {
  const cfg = target?.update_config;
  return {
    update: {
      from_version: u.from_version,
      to_version: u.to_version,
      rollback: u.rollback,
      restart: u.restart,
      next_instance: u.next_instance,
      created_at: u.created_at.getTime(),
    },
    target: target && {
      instances: target.instances,
      config: cfg
        ? {
            batch_size: cfg.batch_size,
            watch_secs: cfg.watch_secs,
            max_total_failures: cfg.max_total_failures,
            max_per_shard_failures: cfg.max_per_shard_failures,
            rollback_on_failure: cfg.rollback_on_failure,
            restart_threshold: cfg.restart_threshold,
            wait_for_batch_completion: cfg.wait_for_batch_completion,
          }
        : DEFAULT_ROLLOUT_CONFIG,
      health_checked: !!target.health_check_config,
    },
    workloads: rows.map((w) => ({
      id: w.id,
      instance: w.instance,
      job_version: w.job_version,
      status: w.status,
      created_at: w.created_at.getTime(),
      started_at: w.started_at?.getTime() ?? null,
      health: w.health,
    })),
  };
}

/**
 * Applies one step in the caller's transaction: first the update row (guarded: still rolling), then
 * the workloads (each transition guarded by the status it expects, re-decided on a lost race), then a
 * rollback's new update. Returns whether anything changed for the job's workloads.
 */
async function applyStep(
  q: Queryable,
  host: RolloutHost,
  u: updates.UpdateRow,
  target: JobSpec | null,
  rows: WorkloadRow[],
  step: RolloutStep,
  out: StepResult,
): Promise<boolean> {
  const fields = step.end
    ? {
        status: step.end.status,
        message: step.end.message,
        ...(step.end.status === 'succeeded' ? { next_instance: target?.instances ?? u.next_instance } : {}),
      }
    : step.progress;
  if (fields && !(await updates.moveRolling(q, u.id, fields))) return false; // ended meanwhile
  const byId = new Map(rows.map((w) => [w.id, w]));
  const byReason = new Map<string, WorkloadRow[]>();
  for (const s of step.stops) {
    const w = byId.get(s.workloadId);
    if (w) byReason.set(s.reason, [...(byReason.get(s.reason) ?? []), w]);
  }
  let changed = false;
  for (const [reason, ws] of byReason) {
    const moved = await host.stopWorkloads(q, ws, reason);
    out.stops.push(...moved);
    changed ||= moved.length > 0;
  }
  for (const f of step.fails) {
    const w = byId.get(f.workloadId);
    if (!w) continue;
    const failed = await wl.transitionWith(q, w, (cur) =>
      cur.status === 'pending' || cur.status === 'starting'
        ? { to: 'failed', reason: f.reason, error: f.reason }
        : null,
    );
    if (!failed?.node_id) continue;
    await commands.enqueueCommand(q, failed.node_id, {
      type: 'stop',
      workload_id: failed.id,
      reason: 'stop requested',
    });
    out.stops.push(failed);
    changed = true;
  }
  if (step.creates.length > 0 && target) {
    const byCreateReason = new Map<string, number[]>();
    for (const c of step.creates)
      byCreateReason.set(c.reason, [...(byCreateReason.get(c.reason) ?? []), c.instance]);
    for (const [reason, instances] of byCreateReason)
      await host.createWorkloads(q, u.job_id, u.to_version, target, instances, reason);
    out.created = true;
    changed = true;
  }
  if (step.end?.status === 'rolled_back') {
    await jobs.setJobVersion(q, u.job_id, u.from_version);
    await startRollout(q, u.job_id, u.to_version, u.from_version, 'rollback');
  }
  return changed;
}
