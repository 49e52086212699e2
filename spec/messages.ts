/**
 * The agent ⇄ coordinator protocol, one JSON message per WebSocket frame, discriminated by `type`.
 * The agent opens `/api/agent/ws` with `Authorization: Bearer <MXC_AGENT_TOKEN>` and sends `hello`.
 */
import * as z from 'zod';
import { JobSpec } from './job.js';

/**
 * Most entries one message may carry in a list (issue 12.3: no message may stall the coordinator). An
 * agent with more store paths sends the rest in `store_paths` messages of at most this many.
 */
export const MAX_STORE_PATHS_PER_MESSAGE = 20_000;
/** Most workloads an agent may report in its hello: far above what one node can run. */
export const MAX_RUNNING_PER_NODE = 5_000;

export const WORKLOAD_STATUSES = [
  'pending',
  'starting',
  'running',
  'stopping',
  'stopped',
  'failed',
  'lost',
] as const;
export const WorkloadStatus = z.enum(WORKLOAD_STATUSES);
export type WorkloadStatus = z.infer<typeof WorkloadStatus>;

/** What the agent knows about the machine and its abilities. */
export const Capabilities = z
  .object({
    os: z.string(),
    arch: z.string(),
    nix: z.string().nullable(),
    bubblewrap: z.boolean(),
    qemu: z.boolean(),
    kvm: z.boolean(),
    cgroups: z.boolean(),
    /** Isolations this node can run. */
    isolation: z.array(z.enum(['process', 'sandbox', 'microvm'])).max(3),
    /** Free-form attributes matched by placement constraints (host, rack, dedicated, …). */
    attributes: z.record(z.string(), z.string()).default({}),
  })
  .strict();
export type Capabilities = z.infer<typeof Capabilities>;

export const NodeResources = z
  .object({
    cpu: z.number().positive(),
    memory_mb: z.number().int().positive(),
    disk_mb: z.number().int().min(0),
  })
  .strict();
export type NodeResources = z.infer<typeof NodeResources>;

/** What the agent runs, as it reports on (re)connect. */
export const RunningReport = z.object({ workload_id: z.string(), status: WorkloadStatus }).strict();

export const AgentHello = z
  .object({
    type: z.literal('hello'),
    name: z.string().min(1).max(253),
    /** The node secret issued on this node's first join (absent on the first join). */
    secret: z.string().max(256).optional(),
    version: z.string(),
    resources: NodeResources,
    capabilities: Capabilities,
    running: z.array(RunningReport).max(MAX_RUNNING_PER_NODE).default([]),
    /** Store paths the node holds (full paths), for closure-aware placement. */
    store_paths: z.array(z.string().max(400)).max(MAX_STORE_PATHS_PER_MESSAGE).optional(),
  })
  .strict();

/** Changes to the node's store after realising or collecting garbage. */
export const AgentStorePaths = z
  .object({
    type: z.literal('store_paths'),
    added: z.array(z.string().max(400)).max(MAX_STORE_PATHS_PER_MESSAGE).default([]),
    removed: z.array(z.string().max(400)).max(MAX_STORE_PATHS_PER_MESSAGE).default([]),
  })
  .strict();

export const AgentHeartbeat = z.object({ type: z.literal('heartbeat') }).strict();

/** One process of a workload as the agent reports it. */
export const ProcessReport = z.object({
  name: z.string(),
  state: z.enum(['waiting', 'running', 'success', 'failed', 'killed']),
  runs: z.number().int(),
  failures: z.number().int(),
  exit_code: z.number().int().nullable(),
});

export const AgentWorkloadStatus = z
  .object({
    type: z.literal('workload_status'),
    workload_id: z.string(),
    status: WorkloadStatus,
    reason: z.string().optional(),
    /** What realising the closure had to fetch from the cache. */
    fetched: z.object({ paths: z.number().int().min(0), bytes: z.number().int().min(0) }).optional(),
    /** Named ports allocated for the workload. */
    ports: z.record(z.string(), z.number().int()).optional(),
    /** The HTTP health check's verdict, for jobs with a health_check_config. */
    health: z.enum(['unknown', 'healthy', 'unhealthy']).optional(),
    /** Per-process state, for the workload page. */
    processes: z.array(ProcessReport).max(1000).optional(),
  })
  .strict();

export const LogLine = z.object({
  process: z.string(),
  stream: z.enum(['stdout', 'stderr', 'system']),
  run: z.number().int(),
  ts: z.number(),
  line: z.string(),
});
export type LogLine = z.infer<typeof LogLine>;

export const AgentLogs = z
  .object({ type: z.literal('logs'), workload_id: z.string(), lines: z.array(LogLine).max(10000) })
  .strict();

/** A clean stop: the agent is stopping its workloads, so they can be replaced now, not after the TTL. */
export const AgentGoodbye = z.object({ type: z.literal('goodbye') }).strict();

export const AgentMessage = z.discriminatedUnion('type', [
  AgentHello,
  AgentHeartbeat,
  AgentWorkloadStatus,
  AgentLogs,
  AgentStorePaths,
  AgentGoodbye,
]);
export type AgentMessage = z.infer<typeof AgentMessage>;

/**
 * Workload ids name directories on agents: letters, digits and `_ . -` only, never `.` or `..`, so a
 * confused or hostile coordinator cannot point an agent outside its state directory.
 */
export const WorkloadId = z
  .string()
  .regex(/^[A-Za-z0-9_.-]{1,200}$/, 'workload ids are 1-200 letters, digits, _ . -')
  .refine((s) => s !== '.' && s !== '..', 'a workload id cannot be . or ..');

/** What the agent is told to run. */
export const WorkloadAssignment = z
  .object({
    id: WorkloadId,
    job_id: z.string(),
    instance: z.number().int().min(0),
    spec: JobSpec,
  })
  .strict();
export type WorkloadAssignment = z.infer<typeof WorkloadAssignment>;

export const CoordinatorWelcome = z
  .object({
    type: z.literal('welcome'),
    node_id: z.string(),
    heartbeat_interval_ms: z.number().int().positive(),
    /** Issued on a node's first join: keep it (0600) and present it in every later hello. */
    node_secret: z.string().max(256).optional(),
  })
  .strict();
export const CoordinatorStart = z.object({ type: z.literal('start'), workload: WorkloadAssignment }).strict();
export const CoordinatorStop = z
  .object({ type: z.literal('stop'), workload_id: WorkloadId, reason: z.string().optional() })
  .strict();
/** Realise these store paths now, ahead of a rollout (pre-warm). */
export const CoordinatorPrewarm = z
  .object({
    type: z.literal('prewarm'),
    job_id: z.string().regex(/^[A-Za-z0-9-]{1,100}$/, 'job ids are letters, digits and -'),
    // Handed to nix-store as arguments: only store paths, never something that reads as an option.
    paths: z
      .array(
        z
          .string()
          .regex(/^\/nix\/store\/[0-9a-df-np-sv-z]{32}-[A-Za-z0-9+\-._?=]+$/, 'must be a /nix/store path'),
      )
      .max(100_000),
  })
  .strict();
export const CoordinatorError = z
  .object({ type: z.literal('error'), code: z.string(), message: z.string() })
  .strict();

export const CoordinatorMessage = z.discriminatedUnion('type', [
  CoordinatorWelcome,
  CoordinatorStart,
  CoordinatorStop,
  CoordinatorPrewarm,
  CoordinatorError,
]);
export type CoordinatorMessage = z.infer<typeof CoordinatorMessage>;
