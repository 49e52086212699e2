/**
 * Shapes of the REST API's responses and query strings (bodies in are the job spec of job.ts and the
 * small request schemas here). The OpenAPI document at /api/openapi.json is generated from these.
 */
import { z } from 'zod';
import { JobSpec } from './job.js';
import { Capabilities, ProcessReport, WorkloadStatus } from './messages.js';

export const ApiError = z.object({
  error: z.object({ code: z.string(), message: z.string(), details: z.unknown().optional() }),
});

const Usage = z.object({ cpu: z.number(), memory_mb: z.number(), disk_mb: z.number() });

export const Node = z.object({
  id: z.string(),
  name: z.string(),
  status: z.enum(['ready', 'down', 'draining']),
  connected: z.boolean(),
  cpu: z.number(),
  memory_mb: z.number(),
  disk_mb: z.number(),
  used: Usage,
  /** What the node's store holds, as the agent reported it. */
  store: z.object({ paths: z.number().int() }),
  capabilities: Capabilities,
  version: z.string(),
  last_seen_at: z.string(),
});

export const WorkloadEvent = z.object({
  id: z.number(),
  workload_id: z.string(),
  ts: z.string(),
  from_status: WorkloadStatus.nullable(),
  to_status: WorkloadStatus,
  reason: z.string(),
});

export const Workload = z.object({
  id: z.string(),
  job_id: z.string(),
  job: z.string().describe('cluster/role/environment/name'),
  job_version: z.number().int(),
  instance: z.number().int(),
  status: WorkloadStatus,
  node_id: z.string().nullable(),
  node: z.string().nullable(),
  cpu: z.number(),
  memory_mb: z.number(),
  disk_mb: z.number(),
  isolation: z.enum(['process', 'sandbox', 'microvm']),
  pending_reason: z.string().nullable().describe('why the scheduler could not place it, per node reason'),
  error: z.string().nullable(),
  restarts: z.number().int(),
  health: z
    .enum(['unknown', 'healthy', 'unhealthy'])
    .nullable()
    .describe('last health check verdict, when the job has one'),
  fetched_paths: z
    .number()
    .int()
    .nullable()
    .describe('store paths realising the closure fetched from the cache'),
  fetched_bytes: z.number().int().nullable(),
  ports: z.record(z.string(), z.number()),
  processes: z.array(ProcessReport),
  created_at: z.string(),
  updated_at: z.string(),
  started_at: z.string().nullable(),
  finished_at: z.string().nullable(),
  outcome: z
    .enum(['finished', 'failed', 'stopped', 'lost'])
    .nullable()
    .describe('how it ended: finished (success), failed, stopped (by a user, an update or a drain), lost'),
  not_before: z.string().nullable().describe('a restart of a flapping task is not placed before this'),
  restart_delay_ms: z.number().int().describe('the back-off this restart waited (Aurora flapping delay)'),
});

export const Job = z.object({
  id: z.string(),
  key: z.string(),
  cluster: z.string(),
  role: z.string(),
  environment: z.string(),
  name: z.string(),
  current_version: z.number().int(),
  status: z.enum(['active', 'stopped']),
  created_at: z.string(),
  updated_at: z.string(),
  /** Cron jobs: the next scheduled run. */
  next_run_at: z.string().nullable(),
  /** Cron jobs: the run last launched (or skipped by CANCEL_NEW). */
  last_run_at: z.string().nullable(),
});

/** Workloads of a job per state: live ones by status, ended ones by how they ended. */
export const StateCounts = z.object({
  pending: z.number().int(),
  starting: z.number().int(),
  running: z.number().int(),
  stopping: z.number().int(),
  finished: z.number().int(),
  failed: z.number().int(),
  stopped: z.number().int(),
  lost: z.number().int(),
});

/** A job with its current spec, what it is doing and its workloads per state (`GET /api/jobs`). */
export const JobWithSpec = Job.extend({
  spec: JobSpec,
  state: z
    .enum(['running', 'complete', 'failed', 'stopped'])
    .describe('running while an instance is live; else failed, complete (all finished) or stopped'),
  counts: StateCounts.describe('workloads per state, history included'),
});

/** A rolling update (or restart, or rollback) of a job. */
export const JobUpdate = z.object({
  id: z.string(),
  job_id: z.string(),
  from_version: z.number().int(),
  to_version: z.number().int(),
  status: z.enum(['rolling', 'succeeded', 'failed', 'rolled_back', 'cancelled']),
  rollback: z.boolean(),
  restart: z.boolean(),
  next_instance: z.number().int(),
  message: z.string(),
  created_at: z.string(),
  updated_at: z.string(),
});

/** `GET /api/jobs/:id`: the job with its workloads and latest update. */
export const JobDetail = JobWithSpec.extend({ workloads: z.array(Workload), update: JobUpdate.nullable() });

/** One serving instance of a job, for service discovery (`GET /api/jobs/:id/endpoints`). */
export const InstanceEndpoint = z.object({
  instance: z.number().int(),
  workload_id: z.string(),
  node: z.string(),
  host: z.string().describe("the node's `host` attribute, else its name"),
  primary_port: z.number().int().nullable().describe("the announcer's primary port"),
  ports: z.record(z.string(), z.number().int()).describe('named ports, portmap aliases included'),
});

/** `GET /api/jobs/:id/endpoints`: the job's running (and, with a health check, healthy) instances. */
export const JobEndpoints = z.object({
  job: z.string(),
  primary_port: z.string().nullable(),
  instances: z.array(InstanceEndpoint),
});

/** `GET /api/workloads/:id`: the workload with its history. */
export const WorkloadDetail = Workload.extend({ events: z.array(WorkloadEvent) });

/** `GET /api/nodes/:id`: the node with its workloads. */
export const NodeDetail = Node.extend({ workloads: z.array(Workload.omit({ job: true, node: true })) });

export const SubmitResult = z.object({
  job: Job,
  version: z.number().int(),
  changed: z.boolean().describe('false when an identical spec was already current'),
  workloads: z.array(z.string()),
});

/** `POST /api/jobs/plan`: a spec, and optionally its closure with sizes (as the submitter's store has it). */
export const JobPlanRequest = z
  .object({
    spec: z.unknown(),
    closure: z
      .array(z.object({ path: z.string().max(400), nar_size: z.number().int().nonnegative() }).strict())
      .max(100_000)
      .optional(),
  })
  .strict();

/** What a submit of a spec would do, changing nothing (`mxc jobs plan`). */
export const JobPlan = z.object({
  job: z.string(),
  status: z.enum(['new', 'changed', 'unchanged']),
  current_version: z.number().int().nullable(),
  next_version: z.number().int().nullable(),
  rolling: z.boolean().describe('replaced batch by batch (update_config) rather than all at once'),
  instances: z.object({ place: z.number().int(), replace: z.number().int(), stop: z.number().int() }),
  closure: z.object({
    known: z.boolean().describe('false when neither the request nor the cache gave the whole closure'),
    missing_from_cache: z.array(z.string()),
    paths: z.number().int(),
    size: z.number().int(),
    added: z.array(z.string()),
    removed: z.array(z.string()),
    size_delta: z.number().int(),
  }),
  processes: z.object({
    added: z.array(z.string()),
    removed: z.array(z.string()),
    changed: z.array(z.string()),
  }),
  fits: z.boolean(),
  unplaced: z.number().int(),
  reasons: z.array(z.string()),
});

export const ClusterStatus = z.object({
  node_count: z.number(),
  nodes_ready: z.number(),
  nodes_down: z.number(),
  nodes_draining: z.number(),
  workload_count: z.number(),
  workloads_by_status: z.record(z.string(), z.number()),
  workloads_running: z.number(),
  total_cpu: z.number(),
  total_memory_mb: z.number(),
  total_disk_mb: z.number(),
  used_cpu: z.number(),
  used_memory_mb: z.number(),
  used_disk_mb: z.number(),
  database: z.enum(['postgres', 'pglite']),
  cache_public_key: z.string().optional(),
  cache_paths: z.number().optional(),
  /** High availability: the lease holder's id, and every live coordinator on this database. */
  leader: z.string().nullable().optional(),
  leader_epoch: z.number().nullable().optional(),
  coordinators: z
    .array(
      z.object({
        id: z.string(),
        url: z.string(),
        leader: z.boolean(),
        last_seen_at: z.union([z.string(), z.date()]),
      }),
    )
    .optional(),
  coordinator_id: z.string().optional(),
});

export const LogEntry = z.object({
  id: z.number(),
  workload_id: z.string(),
  process: z.string(),
  stream: z.enum(['stdout', 'stderr', 'system']),
  run: z.number().int(),
  ts: z.number(),
  line: z.string(),
});

export const WorkloadListQuery = z.object({
  status: z.string().optional().describe('comma-separated statuses'),
  job: z.string().optional().describe('job id or key'),
  node: z.string().optional().describe('node id or name'),
  limit: z.coerce.number().int().min(1).max(10000).optional(),
});

export const LogsQuery = z.object({
  process: z.string().optional(),
  after: z.coerce.number().int().min(0).optional().describe('only lines with a larger id'),
  limit: z.coerce.number().int().min(1).max(100000).optional(),
  follow: z.enum(['0', '1', 'true', 'false']).optional().describe('stream ndjson until the workload ends'),
});
