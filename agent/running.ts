/**
 * What the agent keeps for each workload it runs: its assignment, status, stop hook, logs, ports,
 * cgroup and health. Shared by the run bookkeeping (workload-run) and the launcher (workload-launch).
 */
import type { WorkloadAssignment, WorkloadStatus } from '../spec/messages.js';
import type { Health, HealthChecker } from './health.js';
import type { WorkloadLogStore } from './logs/log-store.js';

/** One workload the agent runs. */
export interface Running {
  assignment: WorkloadAssignment;
  status: WorkloadStatus;
  stop: (reason: string) => Promise<unknown>;
  logs: WorkloadLogStore;
  ports: Record<string, number>;
  stopping: boolean;
  /** The workload's cgroup directory, when limits are enforced. */
  cgroup?: string;
  /** What realising its closure fetched from the cache. */
  fetched?: { paths: number; bytes: number };
  /** The HTTP health check, for jobs with a health_check_config, and its verdict. */
  checker?: HealthChecker;
  health?: Health;
  /** Set when the health check failed the workload: it ends `failed` with this reason. */
  healthFailure?: string;
}
