/**
 * The agent ⇄ coordinator protocol, one JSON message per WebSocket frame, discriminated by `type`.
 * The agent opens `/api/agent/ws` with `Authorization: Bearer <MXC_AGENT_TOKEN>` and sends `hello`.
 */
import * as z from 'zod';
import { cutAt, MAX_LINE_CHARS } from '../lib/line-reader.js';
import { boundedRecord } from './bounded.js';
import {
  AttributeName,
  CONTROL_CHARS,
  JobSpec,
  MAX_ATTRIBUTE_VALUE_CHARS,
  MAX_CPU_CORES,
  MAX_NODE_ATTRIBUTES,
  MAX_RESOURCE_MB,
} from './job.js';

/**
 * Most entries one message may carry in a list (issue 12.3: no message may stall the coordinator). An
 * agent with more store paths sends the rest in `store_paths` messages of at most this many.
 */
export const MAX_STORE_PATHS_PER_MESSAGE = 20_000;
/**
 * Most store paths the coordinator keeps for one node (closure locality only ranks nodes): far above
 * what a real store holds (a NixOS workstation's has some 20,000-60,000 paths), so an agent cannot grow
 * the coordinator's table without bound by reporting paths again and again. Reports past it are not
 * kept (said once a session with the error STORE_PATHS_LIMIT).
 */
export const MAX_STORE_PATHS_PER_NODE = 200_000;
/** Most workloads an agent may report in its hello: far above what one node can run. */
export const MAX_RUNNING_PER_NODE = 5_000;
/**
 * A status report's reason is kept (the workload's error, its event) up to this many characters; the
 * rest is cut, so an agent cannot make every workload list carry megabytes.
 */
export const MAX_REASON_CHARS = 8 * 1024;
/** The agent socket's largest message (its WebSocket maxPayload): a longer frame closes the socket (1009). */
export const MAX_AGENT_MESSAGE_BYTES = 8 * 1024 * 1024;
/** Most lines in one `logs` message. */
export const MAX_LOG_LINES_PER_MESSAGE = 5_000;
/** A log line is kept up to this many characters: the agent's line reader cuts longer ones into pieces of it. */
export const MAX_LOG_LINE_CHARS = MAX_LINE_CHARS;
/** Most named ports a status report may carry (a job names at most 64, its announcer's portmap a few more). */
const MAX_PORTS = 128;
/** Longest workload id an agent may name (ids are the coordinator's, 1-200 characters: WorkloadId). */
const ReportedWorkloadId = z.string().min(1).max(200);
/** Longest process name an agent may report (a job's process names are at most 128 characters). */
/** A process name as an agent reports it (the CLI prints it before each log line): no control characters. */
const ReportedProcessName = z
  .string()
  .min(1)
  .max(128)
  .refine((v) => !CONTROL_CHARS.test(v), 'process names hold no control characters');

/** `text` cut to `max` characters, saying so; never inside a character of two UTF-16 units. */
export function cutText(text: string, max: number): string {
  if (text.length <= max) return text;
  const note = ` … (cut: ${text.length} characters in all)`;
  return text.slice(0, cutAt(text, 0, max - note.length)) + note;
}

/** Node attributes for placement constraints: at most MAX_NODE_ATTRIBUTES, each name and value bounded. */
export const NodeAttributes = boundedRecord(
  AttributeName,
  z
    .string()
    .max(MAX_ATTRIBUTE_VALUE_CHARS)
    .refine((v) => !CONTROL_CHARS.test(v), 'attribute values hold no control characters'),
  MAX_NODE_ATTRIBUTES,
  'attributes',
);

/**
 * A node's name: hostname-like (letters, digits, `.`, `_`, `-`, starting with a letter or digit, at most
 * 253 characters, a DNS name's most), so it prints as it is and can stand as an endpoint's host. The
 * agent's MXC_AGENT_NAME setting takes the same.
 */
export const NodeName = z
  .string()
  .regex(
    /^[A-Za-z0-9][A-Za-z0-9._-]{0,252}$/,
    'must be 1-253 letters, digits, ".", "_" or "-", starting with a letter or digit',
  );

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
    os: z.string().max(64),
    arch: z.string().max(64),
    nix: z.string().max(256).nullable(),
    bubblewrap: z.boolean(),
    qemu: z.boolean(),
    kvm: z.boolean(),
    cgroups: z.boolean(),
    /** Isolations this node can run. */
    isolation: z.array(z.enum(['process', 'sandbox', 'microvm'])).max(3),
    /** Free-form attributes matched by placement constraints (host, rack, dedicated, …). */
    attributes: NodeAttributes.default({}),
  })
  .strict();
export type Capabilities = z.infer<typeof Capabilities>;

export const NodeResources = z
  .object({
    cpu: z.number().positive().max(MAX_CPU_CORES),
    memory_mb: z.number().int().positive().max(MAX_RESOURCE_MB),
    disk_mb: z.number().int().min(0).max(MAX_RESOURCE_MB),
  })
  .strict();
export type NodeResources = z.infer<typeof NodeResources>;

/** What the agent runs, as it reports on (re)connect. */
export const RunningReport = z.object({ workload_id: ReportedWorkloadId, status: WorkloadStatus }).strict();

export const AgentHello = z
  .object({
    type: z.literal('hello'),
    name: NodeName,
    /** The node secret issued on this node's first join (absent on the first join). */
    secret: z.string().max(256).optional(),
    version: z.string().max(128),
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
  name: ReportedProcessName,
  state: z.enum(['waiting', 'running', 'success', 'failed', 'killed']),
  runs: z.number().int().min(0),
  failures: z.number().int().min(0),
  exit_code: z.number().int().nullable(),
});

export const AgentWorkloadStatus = z
  .object({
    type: z.literal('workload_status'),
    workload_id: ReportedWorkloadId,
    status: WorkloadStatus,
    reason: z
      .string()
      .transform((r) => cutText(r, MAX_REASON_CHARS))
      .optional(),
    /** What realising the closure had to fetch from the cache. */
    fetched: z.object({ paths: z.number().int().min(0), bytes: z.number().int().min(0) }).optional(),
    /** Named ports allocated for the workload. */
    ports: boundedRecord(
      z.string().min(1).max(128),
      z.number().int().min(0).max(65535),
      MAX_PORTS,
      'ports',
    ).optional(),
    /** The HTTP health check's verdict, for jobs with a health_check_config. */
    health: z.enum(['unknown', 'healthy', 'unhealthy']).optional(),
    /** Per-process state, for the workload page. */
    processes: z.array(ProcessReport).max(1000).optional(),
  })
  .strict();
export type AgentWorkloadStatus = z.input<typeof AgentWorkloadStatus>;

/** The latest time a Date holds (ms since 1970): a log line's `ts` past it is not a time any reader can show. */
const MAX_TS_MS = 8.64e15;

export const LogLine = z.object({
  process: ReportedProcessName,
  stream: z.enum(['stdout', 'stderr', 'system']),
  // What the database's integer column holds: a run past it failed the whole batch's insert (a 500 in
  // the log, the agent never told), and a `ts` no Date holds broke every reader that formats it.
  run: z
    .number()
    .int()
    .min(0)
    .max(2 ** 31 - 1),
  ts: z.number().min(0).max(MAX_TS_MS),
  line: z.string().transform((l) => cutText(l, MAX_LOG_LINE_CHARS)),
});
export type LogLine = z.infer<typeof LogLine>;

/**
 * The upgrade header with which an agent numbers its `logs` messages (its value names the agent's stream
 * of them, one per agent process): a coordinator that knows it welcomes it with `log_acks` and answers
 * each numbered message with `logs_ack` once its lines are committed; the agent keeps a message until
 * then and sends it again (same stream, same number) to whichever coordinator it joins next, which stores
 * it once. Negotiated so, since both sides' messages are strict: an older coordinator ignores the header
 * (and is sent no numbers), an older agent sends none (and is sent neither `log_acks` nor `logs_ack`).
 */
export const LOG_STREAM_HEADER = 'x-mxc-log-stream';
export const LogStreamId = z
  .string()
  .regex(/^[A-Za-z0-9_-]{16,64}$/, 'a log stream id is 16-64 letters, digits, _ or -');

export const AgentLogs = z
  .object({
    type: z.literal('logs'),
    workload_id: ReportedWorkloadId,
    lines: z.array(LogLine).max(MAX_LOG_LINES_PER_MESSAGE),
    /** The message's number in the agent's log stream (see LOG_STREAM_HEADER), increasing; only with `log_acks`. */
    seq: z.number().int().min(1).max(Number.MAX_SAFE_INTEGER).optional(),
  })
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
    /** Sent to an agent that numbers its log messages (LOG_STREAM_HEADER): they are acknowledged once stored. */
    log_acks: z.literal(true).optional(),
  })
  .strict();
/** Every numbered `logs` message up to `seq` of this connection's stream is committed (or was before). */
export const CoordinatorLogsAck = z
  .object({ type: z.literal('logs_ack'), seq: z.number().int().min(1).max(Number.MAX_SAFE_INTEGER) })
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
  CoordinatorLogsAck,
]);
export type CoordinatorMessage = z.infer<typeof CoordinatorMessage>;
