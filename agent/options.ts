/**
 * The agent's options (what `mxc agent` and the tests configure) and the interface through which
 * the daemon runs microVMs without depending on QEMU code. Kept apart from the daemon so the
 * modules that read options do not import the daemon (and through it each other).
 */
import type { Logger } from 'pino';
import type { LogLine, WorkloadAssignment } from '../spec/messages.js';
import type { TaskSnapshot } from './thermos/process-executor.js';

export interface AgentOptions {
  /** One coordinator URL, or several separated by commas (failover in list order, shuffled). */
  coordinator: string;
  /** MXC_DNS_QUERY: find coordinators by DNS (`_mxc._tcp.example.org` SRV, or `host[:port]` A/AAAA). */
  dnsQuery?: string;
  /** A resolver to ask instead of the system's (`host:port`), e.g. for tests. */
  dnsServer?: string;
  token?: string;
  name?: string;
  cpu?: number;
  memoryMb?: number;
  /** Disk offered (MiB); default the free space of the state directory. */
  diskMb?: number;
  stateDir: string;
  storeRoot?: string;
  attributes?: Record<string, string>;
  logger: Logger;
  gracePeriodMs?: number;
  /** One file per secret, named as jobs reference them (`mxc.secrets`). */
  secretsDir?: string;
  /** Hooks for the microVM runner (set by the microVM module when present). */
  microvm?: MicroVmSupport;
  /**
   * The cache key to trust (`name:base64`), pinned out of band. Unset: the key the coordinator
   * serves at /api/cache/key (trust on first use of the connection).
   */
  cachePublicKey?: string;
  /**
   * Garbage-collect the store when its filesystem has less free space than this (MiB), checked
   * periodically and after each workload ends. Default: 1024 with `storeRoot` (the agent's own
   * store), 0 (never) on the host store, whose other users the agent does not know.
   */
  gcMinFreeMb?: number;
  /** How long an ended workload's logs are kept (ms); default 7 days. */
  logRetentionMs?: number;
  /** How often the housekeeping (low-space GC, log pruning) runs (ms); default 60 s. */
  housekeepingIntervalMs?: number;
  /**
   * Idle task supervisors kept for `process` tasks, each in a fresh PID namespace, so a start does
   * not wait for its namespace (default 1; 0: every task creates its own at start).
   */
  supervisorPool?: number;
  /** Enforce task memory/cpu limits with cgroup v2 when usable (default true). */
  cgroups?: boolean;
  /**
   * Log lines held for the coordinator while it is unreachable, over all workloads (default
   * 20,000): beyond it the oldest lines of the workload writing are dropped from the send queue
   * (its log on the agent's disk keeps every line), and the coordinator is told how many.
   */
  logBufferLines?: number;
}

export const DEFAULT_LOG_RETENTION_MS = 7 * 24 * 3600_000;

/** What the agent needs from the microVM module; kept as an interface so the daemon does not depend on QEMU. */
export interface MicroVmSupport {
  detect(): Promise<{ qemu: boolean; kvm: boolean }>;
  run(args: {
    assignment: WorkloadAssignment;
    workDir: string;
    storeDir: string;
    closure: string[];
    env: Record<string, string>;
    ports: { name: string; hostPort: number; guestPort: number }[];
    onLog: (l: LogLine) => void;
    gracePeriodMs: number;
  }): Promise<{ done: Promise<TaskSnapshot>; stop(): Promise<unknown> }>;
}
