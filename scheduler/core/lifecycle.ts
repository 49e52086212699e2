/**
 * The workload state machine, enforced in this one place. Every status change in the store goes
 * through `checkTransition`; an invalid one is refused (and logged by the caller).
 */
import type { WorkloadStatus } from '../../spec/messages.js';

const ALLOWED: Record<WorkloadStatus, readonly WorkloadStatus[]> = {
  pending: ['starting', 'stopped', 'failed'],
  starting: ['running', 'stopping', 'stopped', 'failed', 'lost'],
  running: ['stopping', 'stopped', 'failed', 'lost'],
  stopping: ['stopped', 'failed', 'lost'],
  stopped: [],
  failed: [],
  lost: [],
};

/** Statuses in which a workload holds resources on its node. */
export const ACTIVE_STATUSES: readonly WorkloadStatus[] = ['starting', 'running', 'stopping'];
/** Statuses a workload never leaves. */
export const TERMINAL_STATUSES: readonly WorkloadStatus[] = ['stopped', 'failed', 'lost'];

export function isTerminal(s: WorkloadStatus): boolean {
  return TERMINAL_STATUSES.includes(s);
}

export function canTransition(from: WorkloadStatus, to: WorkloadStatus): boolean {
  return ALLOWED[from].includes(to);
}

export class InvalidTransitionError extends Error {
  constructor(
    readonly from: WorkloadStatus,
    readonly to: WorkloadStatus,
  ) {
    super(`invalid workload transition ${from} → ${to}`);
    this.name = 'InvalidTransitionError';
  }
}

export function checkTransition(from: WorkloadStatus, to: WorkloadStatus): void {
  if (!canTransition(from, to)) throw new InvalidTransitionError(from, to);
}

/** How an ended workload ended (Aurora's FINISHED / FAILED / KILLED / LOST). */
export type Outcome = 'finished' | 'failed' | 'stopped' | 'lost';

/**
 * The outcome a move to a terminal status records: a workload that reaches `stopped` without being
 * asked to stop (from starting or running) finished on its own; from pending or stopping it was stopped.
 */
export function outcomeOf(from: WorkloadStatus, to: WorkloadStatus): Outcome | null {
  if (to === 'failed' || to === 'lost') return to;
  if (to !== 'stopped') return null;
  return from === 'starting' || from === 'running' ? 'finished' : 'stopped';
}

/** A workload's state for counting: its status while live, how it ended once terminal. */
export const WORKLOAD_STATES = [
  'pending',
  'starting',
  'running',
  'stopping',
  'finished',
  'failed',
  'stopped',
  'lost',
] as const;
export type WorkloadState = (typeof WORKLOAD_STATES)[number];
export type StateCounts = Record<WorkloadState, number>;

/** What a job is doing, from its status and the latest workload of each instance. */
export type JobState = 'running' | 'complete' | 'failed' | 'stopped';

/**
 * running while any instance is live (or a cron job waits for its next run); once none is: failed when
 * an instance's last workload failed or was lost, complete when they finished, stopped when stopped.
 */
export function jobState(
  job: { status: 'active' | 'stopped'; cron: boolean },
  latest: StateCounts,
): JobState {
  if (job.status === 'stopped') return 'stopped';
  if (latest.pending + latest.starting + latest.running + latest.stopping > 0) return 'running';
  if (latest.failed + latest.lost > 0) return 'failed';
  if (job.cron) return 'running';
  if (latest.finished > 0) return 'complete';
  return latest.stopped > 0 ? 'stopped' : 'running';
}

export function emptyCounts(): StateCounts {
  return Object.fromEntries(WORKLOAD_STATES.map((s) => [s, 0])) as StateCounts;
}
