/**
 * Which failures of a streak to log: the first at once, then one at most every `everyMs`, so work that
 * keeps failing (a database or coordinator away for a while) is said once a minute with a count, not at
 * every attempt; and how long the streak was once it ends.
 */
/** How often a failure of a streak is logged at most, by default (the first at once). */
export const REPEATED_FAILURE_LOG_MS = 60_000;

export class FailureStreak {
  /** Failures in a row so far. */
  count = 0;
  /** When the streak began (the clock the caller passes). */
  since = 0;
  private loggedAt = 0;

  constructor(private readonly everyMs = REPEATED_FAILURE_LOG_MS) {}

  /** Counts a failure at `now`; whether to log this one. */
  failed(now: number): boolean {
    this.count++;
    if (this.count === 1) this.since = now;
    if (this.count > 1 && now - this.loggedAt < this.everyMs) return false;
    this.loggedAt = now;
    return true;
  }

  /** Ends the streak (a success); how many failures it had. */
  ended(): number {
    const n = this.count;
    this.count = 0;
    return n;
  }
}
