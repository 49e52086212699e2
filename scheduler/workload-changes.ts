/**
 * Transaction helpers that create and stop workload rows: fresh instances of a job version,
 * replacements for lost or failed ones, and stops for a job's live workloads (also for rollouts).
 */
import { randomBytes } from 'node:crypto';
import type { JobSpec } from '../spec/job.js';
import { demandOf } from './core/fit.js';
import { type JobReplacementView, type Replacement, replacementFor } from './core/reconcile/node.js';
import type { RolloutHost } from './rollout.js';
import * as commands from './store/agent-commands.js';
import type { Queryable } from './store/db.js';
import * as jobs from './store/jobs.js';
import * as updates from './store/updates.js';
import * as wl from './store/workloads.js';

/** The workload rows for a job version (all instances, or the given ones). */
export function newWorkloads(
  jobId: string,
  version: number,
  spec: JobSpec,
  restarts: number,
  instances?: number[],
): wl.NewWorkload[] {
  const demand = demandOf(spec);
  const list = instances ?? Array.from({ length: spec.instances }, (_, i) => i);
  // One draw for all the ids' 4 random bytes: a randomBytes call each cost ~7 µs, 7% of the
  // coordinator's CPU in the 10,000-placement schedule bench.
  const random = randomBytes(4 * list.length).toString('hex');
  return list.map((instance, i) => ({
    id: `${spec.name}-${instance}-${random.slice(8 * i, 8 * i + 8)}`,
    job_id: jobId,
    job_version: version,
    instance,
    ...demand,
    isolation: spec.mxc.isolation,
    restarts,
  }));
}

/**
 * Moves a live workload towards stopped: pending → stopped, starting or running → stopping, queueing
 * the agent's stop command in the same transaction. Re-decides on the fresh row after a lost race;
 * returns the row when an agent was told to stop it.
 */
export async function stopWorkload(
  q: Queryable,
  w: wl.WorkloadRow,
  reason: string,
): Promise<wl.WorkloadRow | null> {
  const moved = await wl.transitionWith(q, w, (cur) => stopDecision(cur, reason));
  if (moved?.status !== 'stopping') return null;
  await queueStops(q, [moved]);
  return moved;
}

/** Queues the stop commands for workloads just moved to stopping (or ended before their agent knew). */
export async function queueStops(q: Queryable, ws: readonly wl.WorkloadRow[]): Promise<void> {
  await commands.enqueueCommands(
    q,
    ws.flatMap((w) =>
      w.node_id
        ? [
            {
              nodeId: w.node_id,
              message: { type: 'stop' as const, workload_id: w.id, reason: 'stop requested' },
            },
          ]
        : [],
    ),
  );
}

/** pending → stopped; starting or running → stopping (an agent must be told); anything else stays. */
function stopDecision(cur: wl.WorkloadRow, reason: string) {
  return cur.status === 'pending'
    ? { to: 'stopped' as const, reason }
    : cur.status === 'starting' || cur.status === 'running'
      ? { to: 'stopping' as const, reason }
      : null;
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
  return stopWorkloads(q, live, reason);
}

/** Moves the given workloads towards stopped, queueing their agents' stops; returns those. */
export async function stopWorkloads(
  q: Queryable,
  ws: wl.WorkloadRow[],
  reason: string,
): Promise<wl.WorkloadRow[]> {
  const toAgents: wl.WorkloadRow[] = [];
  for (const w of ws) {
    const moved = await wl.transitionWith(q, w, (cur) => stopDecision(cur, reason));
    if (moved?.status === 'stopping') toAgents.push(moved);
  }
  await queueStops(q, toAgents);
  return toAgents;
}

/** A job as replacement decisions see it (core/reconcile/node's `replacementFor`); undefined when gone. */
export async function jobReplacementView(
  q: Queryable,
  jobId: string,
): Promise<JobReplacementView | undefined> {
  const job = await jobs.getJob(q, jobId);
  if (!job) return undefined;
  const [latest] = job.status === 'active' ? await updates.listUpdates(q, jobId) : [];
  return {
    id: job.id,
    status: job.status,
    current_version: job.current_version,
    rolling:
      // Paused, the instances past next_instance still run the old version; a replacement keeps it.
      latest?.status === 'rolling' || latest?.status === 'paused'
        ? { from_version: latest.from_version, next_instance: latest.next_instance }
        : null,
  };
}

/** The job views for the given workloads' jobs, each read once. */
export async function jobReplacementViews(
  q: Queryable,
  ws: readonly { job_id: string }[],
): Promise<Map<string, JobReplacementView>> {
  const out = new Map<string, JobReplacementView>();
  for (const id of new Set(ws.map((w) => w.job_id))) {
    const v = await jobReplacementView(q, id);
    if (v) out.set(id, v);
  }
  return out;
}

/** Creates the decided replacements as pending workloads (same instance, the job version's demand). */
export async function insertReplacements(
  q: Queryable,
  rs: readonly Replacement[],
  opts: { delayMs?: number; now?: Date } = {},
): Promise<number> {
  const delayMs = opts.delayMs ?? 0;
  const notBefore = delayMs > 0 ? new Date((opts.now ?? new Date()).getTime() + delayMs) : null;
  let n = 0;
  for (const r of rs) {
    const v = await jobs.getJobVersion(q, r.jobId, r.version);
    if (!v) continue;
    const [created] = newWorkloads(r.jobId, r.version, v.spec, r.restarts, [r.instance]);
    await wl.insertWorkloads(
      q,
      [{ ...created!, not_before: notBefore, restart_delay_ms: delayMs }],
      r.reason,
    );
    n++;
  }
  return n;
}

/**
 * Creates pending replacements for workloads whose job still wants them (core/reconcile/node's
 * `replacementFor`: an active job, at its version or one a rollout has not reached; same instance).
 */
export async function replaceWorkloads(
  q: Queryable,
  ws: wl.WorkloadRow[],
  reason: string,
  opts: { countAsFailure?: boolean; delayMs?: number; now?: Date } = {},
): Promise<number> {
  const views = await jobReplacementViews(q, ws);
  const decided = ws.flatMap(
    (w) => replacementFor(w, views.get(w.job_id), reason, opts.countAsFailure) ?? [],
  );
  return insertReplacements(q, decided, opts);
}

/** How rolling updates stop old workloads and create new ones. */
export const rolloutHost: RolloutHost = {
  stopWorkloads,
  createWorkloads: async (q, jobId, version, spec, instances, reason) => {
    await wl.insertWorkloads(q, newWorkloads(jobId, version, spec, 0, instances), reason);
  },
};
