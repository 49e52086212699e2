/**
 * The coordinator's sense of time, injectable: wall time (`now`, for what is stored and compared with
 * stored times), monotonic time (`monotonic`, for intervals, grace and stall detection) and timers.
 * `systemClock` is the real one; `ManualClock` is moved by tests, so timing needs no sleeps.
 */

/** A pending timer; cancelling it twice, or after it fired, does nothing. */
export interface Timer {
  cancel(): void;
}

export interface Clock {
  /** Wall-clock time in ms since the epoch (what `Date.now()` says). */
  now(): number;
  /** Monotonic time in ms from an arbitrary origin; never goes back. */
  monotonic(): number;
  /** Calls `fn` once, `ms` from now (on the monotonic clock). */
  setTimer(ms: number, fn: () => void): Timer;
}

/** The real clock: Date, performance.now and setTimeout. */
export const systemClock: Clock = {
  now: () => Date.now(),
  monotonic: () => performance.now(),
  setTimer(ms, fn) {
    const t = setTimeout(fn, Math.max(0, ms));
    return { cancel: () => clearTimeout(t) };
  },
};

interface ManualTimer {
  at: number;
  seq: number;
  fn: () => void;
  cancelled: boolean;
}

/** Lets callbacks that timers started run on: a macrotask turn, so promise chains and I/O callbacks advance. */
const turn = () => new Promise<void>((r) => setImmediate(r));

/**
 * A clock that moves only when told to. Timers fire in time order (then in the order they were set)
 * during `advance`, with a macrotask turn after each, so the work they start gets going before the
 * next fires. Wall and monotonic time move together.
 */
export class ManualClock implements Clock {
  private wall: number;
  private mono = 0;
  private seq = 0;
  private timers: ManualTimer[] = [];

  /** Starts at `start` (wall time; by default the real now, so it agrees with the database's clock). */
  constructor(start: Date | number = Date.now()) {
    this.wall = typeof start === 'number' ? start : start.getTime();
  }

  now(): number {
    return this.wall;
  }

  monotonic(): number {
    return this.mono;
  }

  setTimer(ms: number, fn: () => void): Timer {
    const t: ManualTimer = { at: this.mono + Math.max(0, ms), seq: this.seq++, fn, cancelled: false };
    this.timers.push(t);
    return {
      cancel: () => {
        t.cancelled = true;
      },
    };
  }

  /** How many timers are waiting to fire. */
  get pendingTimers(): number {
    return this.timers.filter((t) => !t.cancelled).length;
  }

  /** When the next timer fires, in ms from now, or null when none waits. */
  nextTimerIn(): number | null {
    const next = this.nextDue(Number.POSITIVE_INFINITY);
    return next ? next.at - this.mono : null;
  }

  /**
   * Moves time forward by `ms`, firing every timer that falls due on the way (including those set by
   * callbacks, when they fall due within the window) at its own time.
   */
  async advance(ms: number): Promise<void> {
    if (ms < 0) throw new Error(`a clock does not go back (advance by ${ms} ms)`);
    const end = this.mono + ms;
    for (;;) {
      const next = this.nextDue(end);
      if (!next) break;
      this.moveTo(next.at);
      this.timers = this.timers.filter((t) => t !== next);
      next.fn();
      await turn();
    }
    this.moveTo(end);
    await turn();
  }

  /**
   * Moves time forward by `ms` without firing anything, as a stalled event loop lives it: the timers
   * that fell due fire (late) at the next `advance`.
   */
  jump(ms: number): void {
    if (ms < 0) throw new Error(`a clock does not go back (jump by ${ms} ms)`);
    this.moveTo(this.mono + ms);
  }

  /** Sets the wall clock alone (a jump, as when NTP corrects it); monotonic time stays. */
  setWall(at: Date | number): void {
    this.wall = typeof at === 'number' ? at : at.getTime();
  }

  private moveTo(mono: number) {
    if (mono <= this.mono) return;
    this.wall += mono - this.mono;
    this.mono = mono;
  }

  private nextDue(until: number): ManualTimer | null {
    this.timers = this.timers.filter((t) => !t.cancelled);
    let best: ManualTimer | null = null;
    for (const t of this.timers) {
      if (t.at > until) continue;
      if (!best || t.at < best.at || (t.at === best.at && t.seq < best.seq)) best = t;
    }
    return best;
  }
}
