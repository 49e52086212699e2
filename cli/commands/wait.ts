/**
 * `submit --wait`: follows a job until it is really up (services: every instance running and, with a
 * health check, healthy; batch jobs: every instance finished successfully), printing progress on stderr
 * (placement, closure realisation, health, rollout batches). Gives up with the reason as soon as an
 * instance fails, and within seconds when a workload cannot be placed.
 */
import * as z from 'zod';
import * as api from '../../spec/api.js';
import * as apiJobs from '../../spec/api-jobs.js';
import type { ApiClient } from '../client.js';
import { MiB, printableLine, workloadStatus } from '../output.js';

type W = Pick<
  z.infer<typeof api.Workload>,
  | 'id'
  | 'status'
  | 'node'
  | 'pending_reason'
  | 'error'
  | 'job_version'
  | 'instance'
  | 'health'
  | 'fetched_paths'
  | 'fetched_bytes'
  | 'created_at'
  | 'finished_at'
  | 'outcome'
>;

interface JobState {
  current_version: number;
  spec: { instances: number; service: boolean; health_check_config?: unknown };
  workloads: W[];
  update: { status: string; message: string; to_version: number } | null;
}

/**
 * Why a workload ended badly, in words: its error; else the reason of the event that ended it (a stop
 * by request leaves no error, only its event's "stopped by request"); a lost one's node went away.
 */
async function reasonOf(client: ApiClient, w: { id: string; status: string; error?: string | null }) {
  if (w.error) return w.error;
  if (w.status === 'lost') return 'its node went away (the agent stopped or cannot be reached)';
  const events = await client.get(
    `/api/workloads/${encodeURIComponent(w.id)}/events`,
    z.array(api.WorkloadEvent),
  );
  const last = events.filter((e) => e.to_status === w.status).sort((a, b) => b.id - a.id)[0];
  return last?.reason || 'no reason given';
}

export interface WaitResult {
  ok: boolean;
  reason: string;
  workloads: W[];
  update?: { status: string; message: string } | null;
}

export interface WaitOptions {
  timeoutMs: number;
  quiet?: boolean;
  /** Failures that ended before this (an earlier submit's) are history, not this submit's verdict. */
  since: number;
  /** How long a workload may stay pending with a reason while nothing in the cluster frees capacity. */
  unplaceableMs?: number;
  /** Wait for a rolling update to end instead of for the workloads alone. */
  rolling?: boolean;
  /**
   * The version this submit made: when the job no longer runs it (rolled back, or replaced by another
   * submit), the wait ends there, as a failure.
   */
  version?: number;
  pollMs?: number;
}

/** How an ended batch instance counts: `finished` (or a clean `stopped`) is success. */
/** A batch instance succeeded when it ended by finishing (not stopped by a user, an update or a drain). */
const succeeded = (w: W) => w.outcome === 'finished';
const ended = (w: W) => ['stopped', 'failed', 'lost'].includes(w.status);

/** The newest attempt of each instance of the current version. */
function newestPerInstance(job: JobState): W[] {
  const by = new Map<number, W>();
  for (const w of job.workloads) {
    if (w.job_version !== job.current_version) continue;
    const seen = by.get(w.instance);
    if (
      !seen ||
      w.created_at > seen.created_at ||
      (w.created_at.getTime() === seen.created_at.getTime() && w.id > seen.id)
    )
      by.set(w.instance, w);
  }
  return [...by.values()].sort((a, b) => a.instance - b.instance);
}

/** Says what changed about each workload since the last poll, one line each. */
class Progress {
  private seen = new Map<string, string>();
  private updateMessage = '';
  constructor(private readonly quiet: boolean) {}

  private say(key: string, state: string, line: string) {
    if (this.seen.get(key) === state) return;
    this.seen.set(key, state);
    // Reasons and errors are an agent's words: escaped, as every table cell is.
    if (!this.quiet) process.stderr.write(`${printableLine(line)}\n`);
  }

  workload(w: W, hasHealthCheck: boolean) {
    const id = w.id;
    if (w.status === 'pending')
      this.say(
        `${id}:p`,
        w.pending_reason ?? '',
        `${id}  pending${w.pending_reason ? `: ${w.pending_reason}` : ''}`,
      );
    if (w.node && w.status !== 'pending') this.say(`${id}:n`, w.node, `${id}  placed on ${w.node}`);
    if (w.status === 'starting' && w.fetched_paths === null)
      this.say(`${id}:s`, 'x', `${id}  realising its closure`);
    if (w.fetched_paths !== null)
      this.say(
        `${id}:f`,
        'x',
        `${id}  closure realised${w.fetched_paths ? ` (fetched ${w.fetched_paths} path(s), ${MiB(w.fetched_bytes ?? 0)})` : ' (already in the store)'}`,
      );
    if (w.status === 'running')
      this.say(`${id}:r`, 'x', `${id}  running${hasHealthCheck ? '; waiting for its health check' : ''}`);
    if (hasHealthCheck && w.health && w.health !== 'unknown')
      this.say(`${id}:h`, w.health, `${id}  ${w.health}`);
    if (ended(w))
      this.say(`${id}:e`, w.status, `${id}  ${workloadStatus(w, false)}${w.error ? `: ${w.error}` : ''}`);
  }

  update(u: JobState['update']) {
    if (u && u.message !== this.updateMessage) {
      this.updateMessage = u.message;
      if (!this.quiet) process.stderr.write(`rolling update: ${printableLine(u.message)}\n`);
    }
  }
}

/** Whether anything in the cluster is about to free capacity (a stop in progress). */
async function capacityComing(client: ApiClient): Promise<boolean> {
  const stopping = await client.get('/api/workloads?status=stopping', z.array(api.Workload));
  return stopping.length > 0;
}

export async function waitForJob(client: ApiClient, jobId: string, opts: WaitOptions): Promise<WaitResult> {
  const deadline = Date.now() + opts.timeoutMs;
  const unplaceableMs = opts.unplaceableMs ?? 3000;
  const progress = new Progress(opts.quiet === true);
  const pendingSince = new Map<string, number>();
  for (;;) {
    const job = await client.get(`/api/jobs/${encodeURIComponent(jobId)}`, apiJobs.JobDetail);
    if (opts.version !== undefined && job.current_version !== opts.version) {
      progress.update(job.update);
      const why =
        job.update && job.update.from_version === opts.version
          ? job.update.message
          : `the job moved to version ${job.current_version}`;
      return {
        ok: false,
        reason: `version ${opts.version} is no longer the job's: ${why}`,
        workloads: [],
        update: job.update,
      };
    }
    const hasHealth = job.spec.health_check_config != null;
    const current = newestPerInstance(job);
    const all = job.workloads.filter((w) => w.job_version === job.current_version);
    for (const w of all) progress.workload(w, hasHealth);
    progress.update(job.update);
    const result = (ok: boolean, reason: string): WaitResult => ({
      ok,
      reason,
      workloads: current,
      update: job.update,
    });

    // A failure of this submit, at once: any attempt of the current version that failed after it.
    const failed = all.find(
      (w) =>
        (w.status === 'failed' || w.status === 'lost') &&
        (w.finished_at === null || w.finished_at.getTime() >= opts.since),
    );
    if (failed)
      return result(false, `workload ${failed.id} ${failed.status}: ${await reasonOf(client, failed)}`);
    if (job.update && job.update.status !== 'rolling' && opts.rolling) {
      if (job.update.status !== 'succeeded')
        return result(false, `the rolling update ${job.update.status}: ${job.update.message}`);
    }

    const rollingOn = opts.rolling && job.update?.status === 'rolling';
    const complete = current.length >= job.spec.instances;
    if (!rollingOn && complete) {
      if (job.spec.service) {
        if (current.every((w) => w.status === 'running' && (!hasHealth || w.health === 'healthy')))
          return result(true, '');
        const gone = current.find(ended);
        if (gone) return result(false, `workload ${gone.id} ${gone.status}: ${await reasonOf(client, gone)}`);
      } else if (current.every(succeeded)) return result(true, '');
      else {
        const bad = current.find((w) => ended(w) && !succeeded(w));
        if (bad) return result(false, `workload ${bad.id} ${bad.status}: ${await reasonOf(client, bad)}`);
      }
    }

    // Pending with a reason while nothing is stopping: no node can take it now, and waiting will not help.
    const now = Date.now();
    for (const w of current) {
      if (w.status !== 'pending' || !w.pending_reason) pendingSince.delete(w.id);
      else if (!pendingSince.has(w.id)) pendingSince.set(w.id, now);
    }
    const stuck = current.find(
      (w) =>
        w.status === 'pending' && w.pending_reason && now - (pendingSince.get(w.id) ?? now) >= unplaceableMs,
    );
    if (stuck && !(await capacityComing(client))) {
      return result(
        false,
        `workload ${stuck.id} cannot be placed: ${stuck.pending_reason}. The job stays submitted and is placed when capacity appears (mxc workloads show ${stuck.id})`,
      );
    }

    if (now > deadline) {
      const pending = current.find((w) => w.status === 'pending');
      const unhealthy = current.find((w) => w.status === 'running' && hasHealth && w.health !== 'healthy');
      const why = pending?.pending_reason
        ? `; ${pending.id} is pending: ${pending.pending_reason}`
        : unhealthy
          ? `; ${unhealthy.id} is ${unhealthy.health ?? 'not yet'} healthy`
          : rollingOn
            ? `; the rolling update is at: ${job.update?.message}`
            : '';
      return result(
        false,
        `timed out after ${Math.round(opts.timeoutMs / 1000)} s waiting for the job to be up${why}`,
      );
    }
    await new Promise((r) => setTimeout(r, opts.pollMs ?? 200));
  }
}
