/** Waiting for a job's workloads to run (`submit --wait`), with the reason when they cannot. */
import type { ApiClient } from '../client.js';
import { progress } from '../output.js';

interface WorkloadView {
  id: string;
  status: string;
  node?: string | null;
  pending_reason?: string | null;
  error?: string | null;
  job_version: number;
}

export async function waitForJob(
  client: ApiClient,
  jobId: string,
  opts: { timeoutMs: number; quiet?: boolean; batch?: boolean },
): Promise<{ ok: boolean; reason: string; workloads: WorkloadView[] }> {
  const deadline = Date.now() + opts.timeoutMs;
  let last: WorkloadView[] = [];
  for (;;) {
    const job = await client.get<{ current_version: number; workloads: WorkloadView[] }>(
      `/api/jobs/${encodeURIComponent(jobId)}`,
    );
    // The newest attempt per instance of the current version.
    const current = job.workloads.filter((w) => w.job_version === job.current_version);
    last = current;
    const failed = current.find(
      (w) => w.status === 'failed' && !current.some((o) => o !== w && o.status !== 'failed' && o.id > w.id),
    );
    const done = current.filter((w) => w.status === 'running' || (opts.batch && w.status === 'stopped'));
    const live = current.filter((w) => !['stopped', 'failed', 'lost'].includes(w.status));
    if (!opts.quiet) progress('waiting', done.length, Math.max(done.length, live.length, 1));
    if (live.length > 0 && live.every((w) => w.status === 'running'))
      return { ok: true, reason: '', workloads: current };
    if (opts.batch && live.length === 0 && current.some((w) => w.status === 'stopped') && !failed) {
      return { ok: true, reason: '', workloads: current };
    }
    if (failed && live.length === 0) {
      return {
        ok: false,
        reason: `workload ${failed.id} failed: ${failed.error ?? 'no reason given'}`,
        workloads: current,
      };
    }
    if (Date.now() > deadline) {
      const pending = current.find((w) => w.status === 'pending');
      const why = pending?.pending_reason ? `; ${pending.id} is pending: ${pending.pending_reason}` : '';
      return { ok: false, reason: `timed out waiting for the workloads to run${why}`, workloads: last };
    }
    await new Promise((r) => setTimeout(r, 200));
  }
}
