/**
 * Whether an ended workload is started again, and after what delay (Aurora's semantics, pure): a
 * service restarts whenever an instance ends, successfully or not, for as long as its job is active; other
 * jobs restart a failed instance until `max_task_failures`. A task that ran for less than the flapping
 * threshold is flapping and waits a delay that starts at the initial flapping delay and doubles up to the
 * maximum (Aurora's RescheduleCalculator with its TruncatedBinaryBackoff).
 */

export interface FlappingPolicy {
  /** A task that ran for less than this is flapping (Aurora `-flapping_task_threshold`). */
  thresholdMs: number;
  /** First delay before restarting a flapping task (`-initial_flapping_task_delay`). */
  initialDelayMs: number;
  /** Largest delay between restarts of a flapping task (`-max_flapping_task_delay`). */
  maxDelayMs: number;
}

/** Aurora's scheduler defaults: 5 minutes, 30 seconds, 5 minutes. */
export const AURORA_FLAPPING: FlappingPolicy = {
  thresholdMs: 5 * 60_000,
  initialDelayMs: 30_000,
  maxDelayMs: 5 * 60_000,
};

export interface EndedWorkload {
  outcome: 'finished' | 'failed';
  /** Failures so far, this one not included. */
  restarts: number;
  started_at: Date | null;
  finished_at: Date | null;
  /** The delay this workload itself waited before it was placed (0 when none). */
  restart_delay_ms: number;
}

export interface RestartDecision {
  restart: boolean;
  /** The restart counts as a failure (max_task_failures). */
  countAsFailure: boolean;
  /** How long the replacement waits before it may be placed. */
  delayMs: number;
  /** Why, for the replacement's first event. */
  reason: string;
}

/** The delay before restarting `w`: none when it ran long enough, else the next step of the back-off. */
export function flappingDelay(w: EndedWorkload, policy: FlappingPolicy): number {
  const ranMs = w.started_at && w.finished_at ? w.finished_at.getTime() - w.started_at.getTime() : 0;
  if (ranMs >= policy.thresholdMs) return 0;
  if (w.restart_delay_ms <= 0) return policy.initialDelayMs;
  return Math.min(policy.maxDelayMs, Math.max(policy.initialDelayMs, w.restart_delay_ms * 2));
}

export function restartDecision(
  w: EndedWorkload,
  job: { service: boolean; max_task_failures: number },
  policy: FlappingPolicy,
): RestartDecision {
  const failed = w.outcome === 'failed';
  const n = w.restarts + 1;
  const delayMs = flappingDelay(w, policy);
  const after =
    delayMs > 0 ? ` in ${formatMs(delayMs)} (flapping: ran under ${formatMs(policy.thresholdMs)})` : '';
  if (job.service) {
    return {
      restart: true,
      countAsFailure: failed,
      delayMs,
      reason: failed
        ? `service restarted after failure ${n}${after}`
        : `service restarted after it finished${after}`,
    };
  }
  const max = job.max_task_failures;
  if (failed && (max === -1 || n < max)) {
    return {
      restart: true,
      countAsFailure: true,
      delayMs,
      reason: `restarted after failure ${n}${max === -1 ? '' : ` of ${max}`}${after}`,
    };
  }
  return { restart: false, countAsFailure: false, delayMs: 0, reason: '' };
}

function formatMs(ms: number): string {
  return ms % 60_000 === 0 && ms >= 60_000
    ? `${ms / 60_000} min`
    : ms % 1000 === 0
      ? `${ms / 1000} s`
      : `${ms} ms`;
}
