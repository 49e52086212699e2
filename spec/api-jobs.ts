/**
 * The REST API's answers that carry a job spec (JobSpec, job.ts): apart from api.ts so that a command
 * that shows no job's spec (`mxc workloads list`, `mxc nodes list`, …) does not build the job spec's
 * schemas when it starts (bundled: esbuild leaves out of a command file what it never reaches, and a
 * dynamic import is evaluated only when it runs): `mxc workloads list` 77 -> 69 ms, 80 -> 67 ms of CPU
 * (30 interleaved runs each against a local coordinator).
 */
import * as z from 'zod';
import { Job, JobUpdate, StateCounts, Timestamp, Workload } from './api.js';
import { JobSpec } from './job.js';

/** A job with its current spec, what it is doing and its workloads per state (`GET /api/jobs`). */
export const JobWithSpec = Job.extend({
  spec: JobSpec,
  state: z
    .enum(['running', 'complete', 'failed', 'stopped'])
    .describe('running while an instance is live; else failed, complete (all finished) or stopped'),
  counts: StateCounts.describe('workloads per state, history included'),
  latest: StateCounts.describe(
    "each instance's newest workload per state: what the job is doing now (mxc jobs list shows these)",
  ),
});

/** `GET /api/jobs/:id`: the job with its workloads and latest update. */
export const JobDetail = JobWithSpec.extend({ workloads: z.array(Workload), update: JobUpdate.nullable() });

/** `GET /api/jobs/:id/versions`: every submitted version. */
export const JobVersion = z.object({
  job_id: z.string(),
  version: z.number().int(),
  spec: JobSpec,
  spec_hash: z.string(),
  created_at: Timestamp,
});
