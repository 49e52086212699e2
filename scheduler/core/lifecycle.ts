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
