/**
 * Types shared by the coordinator façade and the modules it delegates to; coordinator.ts re-exports
 * them, so the API layer keeps importing them from there.
 */
import type { z } from 'zod';
import type * as api from '../spec/api.js';
import type { JobSpec } from '../spec/job.js';
import type { CoordinatorMessage } from '../spec/messages.js';
import type { Strategy } from './core/place.js';
import type { FlappingPolicy } from './core/restart.js';
import type { Clock } from './engine/clock.js';
import type { LeaderLease } from './leader-lease.js';
import type * as closures from './store/closures.js';
import type { RetentionPolicy } from './store/retention.js';

export interface AgentSession {
  send(msg: CoordinatorMessage): void;
  /** Sends a message already serialised: the JSON text of a CoordinatorMessage. */
  sendText(text: string): void;
  close(code?: number, reason?: string): void;
  /**
   * The agent's log stream (its LOG_STREAM_HEADER): its log messages are numbered, stored once each and
   * acknowledged after the commit. Absent for an agent that predates it.
   */
  logStream?: string;
}

export interface CoordinatorOptions {
  /** This coordinator's id in the registry and the lease (stable across restarts of one data dir). */
  id: string;
  /** The address it serves on, as others should reach it (`--advertise-url`). */
  url?: string;
  /** The leader lease; leader-only work (liveness verdicts, cron, rollouts) runs only while it holds. */
  lease: LeaderLease;
  heartbeatTtlMs: number;
  heartbeatIntervalMs: number;
  strategy: Strategy;
  /** Restart back-off for flapping tasks; Aurora's defaults when unset. */
  flapping?: FlappingPolicy;
  /**
   * How long a pending workload that may preempt (production, or priority above 0) waits before the
   * leader stops lower-ranked workloads to make room; null: never preempt. Default 180 s.
   */
  preemptionDelayMs?: number | null;
  /** Retention of ended workloads (Nomad's core GC); 7 days and 100 per job when unset. */
  retention?: RetentionPolicy;
  /**
   * The newest lines of each workload's log the database keeps (older ones are deleted as new ones
   * come, counted in `workload_log_trims`); DEFAULT_LOG_LINES_KEPT when unset.
   */
  logLinesKept?: number;
  /**
   * Deletes the cache's orphan NARs (stored, never published); run by the leader's retention pass at
   * start and then at most hourly (it lists the whole cache). Returns what it deleted.
   */
  collectCache?: () => Promise<string[]>;
  /**
   * The full closure of a job (paths and NAR sizes) from the cache; throws a coded error listing what
   * is missing, so a job that could never start is refused before anything is replaced.
   */
  closureOf?: (spec: JobSpec) => Promise<closures.ClosurePath[]>;
  /**
   * Wall and monotonic time and timers for liveness, grace, cron launches, rollout steps, retention
   * and restart back-off; the system clock when unset (tests pass a manual one).
   */
  clock?: Clock;
}

/** What changed, for live views (dashboard, `--wait`). */
/** What changed, sent to live views (`/api/events`); its shape is spec/api.ts's ChangeEvent. */
export type ChangeEvent = z.infer<typeof api.ChangeEvent>;

/** Looks up a job version's spec (cached by the coordinator: versions never change once written). */
export type SpecLookup = (jobId: string, version: number) => Promise<JobSpec | null>;
