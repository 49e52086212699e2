/**
 * Shapes of the REST API's requests and responses (the job spec itself is job.ts; the answers that carry
 * one are api-jobs.ts). Each route declares these as its schemas: the coordinator validates and
 * serialises through them, the CLI parses answers with them, and /api/openapi.json is generated from them.
 */
import * as z from 'zod';
import { Capabilities, ProcessReport, WorkloadStatus } from './messages.js';

/**
 * A point in time: an ISO 8601 string on the wire, a Date on either side (the store's rows hold Dates;
 * the CLI gets Dates back when it parses).
 */
export const Timestamp = z.codec(z.iso.datetime({ offset: true }), z.date(), {
  decode: (s) => new Date(s),
  encode: (d) => d.toISOString(),
});

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
  last_seen_at: Timestamp,
  created_at: Timestamp,
  updated_at: Timestamp,
});

export const WorkloadEvent = z.object({
  id: z.number(),
  workload_id: z.string(),
  ts: Timestamp,
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
  created_at: Timestamp,
  updated_at: Timestamp,
  started_at: Timestamp.nullable(),
  finished_at: Timestamp.nullable(),
  outcome: z
    .enum(['finished', 'failed', 'stopped', 'lost'])
    .nullable()
    .describe('how it ended: finished (success), failed, stopped (by a user, an update or a drain), lost'),
  not_before: Timestamp.nullable().describe('a restart of a flapping task is not placed before this'),
  restart_delay_ms: z.number().int().describe('the back-off this restart waited (Aurora flapping delay)'),
  reason: z
    .string()
    .describe(
      'why it is in its status: the reason of its last status change (for a stopped one, why it was stopped: "job stopped")',
    ),
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
  created_at: Timestamp,
  updated_at: Timestamp,
  /** Cron jobs: the next scheduled run. */
  next_run_at: Timestamp.nullable(),
  /** Cron jobs: the run last launched (or skipped by CANCEL_NEW). */
  last_run_at: Timestamp.nullable(),
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

/** A rolling update (or restart, or rollback) of a job. */
export const JobUpdate = z.object({
  id: z.string(),
  job_id: z.string(),
  from_version: z.number().int(),
  to_version: z.number().int(),
  status: z.enum(['rolling', 'paused', 'succeeded', 'failed', 'rolled_back', 'cancelled']),
  rollback: z.boolean(),
  restart: z.boolean(),
  next_instance: z.number().int(),
  message: z.string(),
  created_at: Timestamp,
  updated_at: Timestamp,
});

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
export const NodeDetail = Node.extend({
  workloads: z.array(Workload.omit({ job: true, node: true, reason: true })),
});

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
  /**
   * Nodes not down whose agent is not connected now: within the heartbeat TTL they keep their status
   * (the agent may come back), and take no new work. Optional: a coordinator before it sent none.
   */
  nodes_not_connected: z.number().optional(),
  workload_count: z.number(),
  workloads_by_status: z.record(z.string(), z.number()),
  workloads_running: z.number(),
  total_cpu: z.number(),
  total_memory_mb: z.number(),
  total_disk_mb: z.number(),
  used_cpu: z.number(),
  used_memory_mb: z.number(),
  used_disk_mb: z.number(),
  nodes_healthy: z.number().int().describe('samrose/mxc: nodes that take work (ready)'),
  available_cpu: z.number().describe('samrose/mxc: cores not reserved on ready nodes'),
  available_memory: z.number().describe('samrose/mxc: MiB not reserved on ready nodes'),
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
        last_seen_at: Timestamp,
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

/** Paging of long lists: a page size (default 100, at most 1000) and the cursor the previous page gave. */
export const PageQuery = z.object({
  limit: z.coerce.number().int().min(1).max(1000).default(100),
  cursor: z.string().max(1024).optional().describe('next_cursor of the previous page'),
});

/** A page of a list: `next_cursor` is null on the last page. */
export const page = <T extends z.ZodType>(item: T) =>
  z.object({ data: z.array(item), next_cursor: z.string().nullable() });

export const WorkloadListQuery = z.object({
  status: z.string().optional().describe('comma-separated statuses'),
  job: z.string().optional().describe('job id or key'),
  node: z.string().optional().describe('node id or name'),
  /** What the CLI's prefix lookup asks for (cli/resolve.ts); a workload id is at most 200 characters. */
  id_prefix: z.string().min(1).max(200).optional().describe('only workloads whose id starts with this'),
  limit: z.coerce.number().int().min(1).max(10000).optional(),
});

/** The most lines one logs read asks for (`limit`), paged or not. */
export const MAX_LOG_LINES_ASKED = 100_000;

export const LogsQuery = z.object({
  process: z.string().optional(),
  after: z.coerce
    .number()
    .int()
    .min(0)
    .max(Number.MAX_SAFE_INTEGER)
    .optional()
    .describe('only lines with a larger id'),
  limit: z.coerce
    .number()
    .int()
    .min(0)
    .max(MAX_LOG_LINES_ASKED)
    .optional()
    .describe(
      'the newest lines wanted (default 1000; 0 with follow: only lines logged from now); an answer holds a page of them, follow next_cursor',
    ),
  cursor: z.string().max(1024).optional().describe('next_cursor of the previous answer (not with follow)'),
  follow: z.enum(['0', '1', 'true', 'false']).optional().describe('stream ndjson until the workload ends'),
});

/** At most this many lines in one logs answer (or one write of a follow). */
export const LOG_PAGE_LINES = 5000;
/** At most this many bytes of log entries (as JSON) in one logs answer (or one write of a follow). */
export const LOG_PAGE_BYTES = 1024 * 1024;

/** `GET /api/workloads/:id/logs` without follow: a page of the lines asked for, oldest first. */
export const LogsPage = z.object({
  data: z.array(LogEntry),
  next_cursor: z
    .string()
    .nullable()
    .describe('more of the lines asked for: pass it as cursor; null: no more'),
  dropped: z
    .number()
    .int()
    .min(0)
    .describe("the workload's older lines the coordinator dropped to keep its bound (MXC_LOG_LINES_KEPT)"),
});

/** `POST /api/jobs/:id/stop`. */
export const StopJobResult = z.object({
  job: Job,
  stopped: z.number().int().describe('workloads asked to stop'),
});

/** `POST /api/jobs/:id/restart`. */
export const RestartJobResult = z.object({
  job: Job,
  rolling: z.boolean().describe('true when the restart rolls batch by batch (the job has an update_config)'),
  workloads: z.array(z.string()).describe('workloads created at once (not rolling)'),
});

/** `POST /api/jobs/:id/update/{pause,resume,abort}`: the update as it now is. */
export const UpdateActionResult = z.object({ job: Job, update: JobUpdate });

/** `POST /api/jobs/:id/run`: a cron job's run launched now, outside its schedule. */
export const RunNowResult = z.object({
  job: Job,
  workloads: z.array(z.string()).describe("the run's new workloads"),
  stopped: z.number().int().describe('workloads of the previous run stopped (KILL_EXISTING)'),
});

/** `POST /api/jobs/:id/prewarm`. */
export const PrewarmResult = z.object({
  paths: z.number().int(),
  bytes: z.number(),
  nodes: z.array(z.object({ node: z.string(), missing_bytes: z.number(), sent: z.boolean() })),
});

/** A store path of a job's closure. */
export const ClosurePath = z.object({ path: z.string(), nar_size: z.number() });

/** `GET /api/store-paths`: where a store path is used. */
export const StorePathUse = ClosurePath.extend({
  job_id: z.string(),
  job: z.string(),
  version: z.number().int(),
  current: z.boolean(),
  workloads: z.array(z.object({ id: z.string(), status: z.string(), node: z.string().nullable() })),
  pushed_by: z
    .string()
    .nullable()
    .describe('the token that uploaded the path (null: pushed before this was recorded)'),
  pushed_at: Timestamp.nullable(),
});

export const ClosureQuery = z.object({
  version: z.coerce
    .number()
    .int()
    .min(1)
    .max(2 ** 31 - 1)
    .optional()
    .describe('a version number; the current one if absent'),
});

export const StorePathsQuery = z.object({
  contains: z.string().trim().min(1).max(4096).describe('a store path or part of a name, e.g. openssl'),
});

export const TokenKind = z.enum(['client', 'agent']);
/** What a client token may do: read < push (submit, upload) < admin (tokens, nodes). Agents: read. */
export const TokenScope = z.enum(['read', 'push', 'admin']);

export const CreateToken = z
  .object({
    name: z.string().regex(/^[A-Za-z0-9_.-]{1,64}$/, 'names are 1-64 letters, digits, _ . -'),
    kind: TokenKind,
    /** Client tokens only; default admin (what every token could do before scopes). */
    scope: TokenScope.optional(),
  })
  .strict();

/** A token as listed: never the token itself. */
export const Token = z.object({
  id: z.string(),
  name: z.string(),
  kind: TokenKind,
  scope: TokenScope,
  created_at: Timestamp,
});

/** A created token: shown this once. */
export const CreatedToken = z.object({
  name: z.string(),
  kind: TokenKind,
  scope: TokenScope,
  token: z.string(),
});

/** One server-sent event of `/api/events` (its `data:` line): what changed, for live views to re-read. */
export const ChangeEvent = z.object({
  kind: z.enum(['workload', 'node', 'job', 'log']),
  id: z.string(),
  status: z.string().optional(),
});

/** Browsers' EventSource and WebSocket cannot set headers: the token may come as ?token=. */
export const TokenQuery = z.object({ token: z.string().max(4096).optional() });

/**
 * samrose/mxc's workload request (`POST /api/workloads`): one command, run once as a one-process job.
 * `command` is a shell command line (the seed runs `/bin/sh -c "command args"`); `args` are appended as
 * shell words. Store paths in either are the job's closure (they must be in the coordinator's cache);
 * anything else resolves on the node (a plain process sees the host's PATH).
 */
export const SeedWorkloadRequest = z
  .object({
    type: z.enum(['process', 'microvm']).default('process'),
    command: z.string().min(1).max(65536),
    args: z.array(z.string().max(65536)).max(1024).default([]),
    env: z
      .record(
        z.string().regex(/^[A-Za-z_][A-Za-z0-9_]*$/, 'environment variable names are [A-Za-z_][A-Za-z0-9_]*'),
        z.string().max(65536),
      )
      .refine((e) => Object.keys(e).length <= 1024, 'at most 1024 variables')
      .default({}),
    cpu: z.number().positive().max(1024).default(1),
    memory_mb: z
      .number()
      .int()
      .positive()
      .max(16 * 1024 * 1024)
      .default(256),
    /** Node attributes that must match exactly (the seed matches its node capabilities). */
    constraints: z
      .record(
        z.string().regex(/^[A-Za-z0-9_.-]+$/, 'attribute names use letters, digits, _ . -'),
        z.string().min(1),
      )
      .refine((c) => Object.keys(c).length <= 64, 'at most 64 constraints')
      .default({}),
  })
  .strict();

/** samrose/mxc's workload fields (status in its vocabulary), with mxc's job key beside them. */
export const SeedWorkload = z.object({
  id: z.string(),
  type: z.enum(['process', 'microvm']),
  status: z.enum(['pending', 'starting', 'running', 'stopping', 'stopped', 'failed']),
  command: z.string(),
  args: z.array(z.string()),
  env: z.record(z.string(), z.string()),
  cpu_required: z.number(),
  memory_required: z.number().describe('MiB'),
  constraints: z.record(z.string(), z.string()),
  error: z.string().nullable(),
  ip: z.string().nullable().describe('the node address is not tracked: always null'),
  node_id: z.string().nullable(),
  started_at: Timestamp.nullable(),
  stopped_at: Timestamp.nullable(),
  inserted_at: Timestamp,
  updated_at: Timestamp,
  job: z.string().describe("mxc's job key (cluster/role/environment/name)"),
  job_id: z.string(),
});

/** `DELETE /api/nodes/:id`. */
export const RemovedNode = z.object({
  id: z.string(),
  name: z.string(),
  lost: z.number().int().describe('workloads that were still active on it, now lost'),
});
