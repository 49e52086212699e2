/**
 * Transaction helpers that create and stop workload rows: fresh instances of a job version,
 * replacements for lost or failed ones, and stops for a job's live workloads (also for rollouts).
 */
import { randomBytes } from 'node:crypto';
import { DEFAULT_RESOURCES, type JobSpec } from '../spec/job.js';
import type { RolloutHost } from './rollout.js';
import type { Queryable } from './store/db.js';
import * as jobs from './store/jobs.js';
import * as updates from './store/updates.js';
import * as wl from './store/workloads.js';

const MB = 1024 * 1024;

/** The workload rows for a job version (all instances, or the given ones). */
export function newWorkloads(
  jobId: string,
  version: number,
  spec: JobSpec,
  restarts: number,
  instances?: number[],
): wl.NewWorkload[] {
  const r = spec.task.resources ?? DEFAULT_RESOURCES;
  const list = instances ?? Array.from({ length: spec.instances }, (_, i) => i);
  return list.map((instance) => ({
    id: `${spec.name}-${instance}-${randomBytes(4).toString('hex')}`,
    job_id: jobId,
    job_version: version,
    instance,
    cpu: r.cpu,
    memory_mb: Math.ceil(r.ram / MB),
    disk_mb: Math.ceil(r.disk / MB),
    isolation: spec.mxc.isolation,
    restarts,
  }));
}

/** Moves every non-terminal workload of a job towards stopped; returns those an agent must stop. */
export async function stopJobWorkloads(
  q: Queryable,
  jobId: string,
  reason: string,
): Promise<wl.WorkloadRow[]> {
  const live = await wl.listWorkloads(q, {
    jobId,
    status: ['pending', 'starting', 'running'],
    limit: 100_000,
  });
  const toAgents: wl.WorkloadRow[] = [];
  for (const w of live) {
    if (w.status === 'pending') {
      await wl.transition(q, w, 'stopped', reason);
    } else {
      await wl.transition(q, w, 'stopping', reason);
      toAgents.push(w);
    }
  }
  return toAgents;
}

/** Creates pending replacements for workloads whose job is still active (same instance, next attempt). */
/**
 * An instance of the previous version that a rolling update has not reached yet still serves: lost or
 * failed, it is replaced at its own version until the rollout gets to it.
 */
async function awaitsRollout(q: Queryable, jobId: string, w: wl.WorkloadRow): Promise<boolean> {
  const [latest] = await updates.listUpdates(q, jobId);
  return (
    latest?.status === 'rolling' &&
    latest.from_version === w.job_version &&
    w.instance >= latest.next_instance
  );
}

export async function replaceWorkloads(
  q: Queryable,
  ws: wl.WorkloadRow[],
  reason: string,
  countAsFailure = false,
): Promise<number> {
  let n = 0;
  for (const w of ws) {
    const job = await jobs.getJob(q, w.job_id);
    if (!job || job.status !== 'active') continue;
    if (job.current_version !== w.job_version && !(await awaitsRollout(q, job.id, w))) continue;
    const v = await jobs.getJobVersion(q, w.job_id, w.job_version);
    if (!v) continue;
    const restarts = w.restarts + (countAsFailure ? 1 : 0);
    const [created] = newWorkloads(job.id, w.job_version, v.spec, restarts, [w.instance]);
    await wl.insertWorkloads(q, [created!], `${reason} (replaces ${w.id})`);
    n++;
  }
  return n;
}

/** How rolling updates stop old workloads and create new ones. */
export const rolloutHost: RolloutHost = {
  stopWorkloads: async (q, ws, reason) => {
    const toAgents: wl.WorkloadRow[] = [];
    for (const w of ws) {
      if (w.status === 'pending') await wl.transition(q, w, 'stopped', reason);
      else if (w.status === 'starting' || w.status === 'running') {
        await wl.transition(q, w, 'stopping', reason);
        toAgents.push(w);
      }
    }
    return toAgents;
  },
  createWorkloads: async (q, jobId, version, spec, instances, reason) => {
    await wl.insertWorkloads(q, newWorkloads(jobId, version, spec, 0, instances), reason);
  },
};
