/**
 * The coordinator's one coalescing evaluation queue: named kinds of work (a scheduling pass, a rollout
 * step, draining the outbox, the liveness tick, cron launches, retention). A request while that kind
 * runs coalesces into exactly one re-run; a failed run is logged and never crashes anything (and, for
 * work that asks for it, retried with a growing delay until a run succeeds); periodic work and "wake at"
 * requests run off the injected clock's timers; `close()` waits for what runs. A kind that keeps failing
 * (the database away for a while) is logged at its first failure, then at most once a minute with the
 * count, and once more when it runs again: not once a tick.
 */
import { FailureStreak } from '../../lib/failure-streak.js';
import { isDatabaseUnavailable } from '../store/db.js';
import type { Clock, Timer } from './clock.js';

/** Where a failed run is reported (a pino logger fits). */
export interface QueueLog {
  error(obj: object, msg: string): void;
  warn(obj: object, msg: string): void;
  info(obj: object, msg: string): void;
}

export interface WorkKind {
  /** One run of the work; a rejection is logged, and a re-run that was asked for still happens. */
  run: () => Promise<void>;
  /** Logged when a run fails, e.g. "scheduling pass failed". */
  failure: string;
  /**
   * Log level of a failure; `warn` for work whose next run repairs it. Default `error`, but `warn` for
   * any failure to reach the database: an outage (or a connection lost while this process was frozen) is
   * the operator's condition, said once in a while, not a fault of the work.
   */
  level?: 'error' | 'warn';
  /**
   * Retry a failed run by itself: after `firstMs`, doubling with each failure in a row up to `maxMs`
   * (a run that succeeds starts over). Without it a failed run waits for the next request.
   */
  retry?: { firstMs: number; maxMs: number };
}

interface KindState {
  /** The running loop: it settles once no re-run is owed. */
  loop: Promise<void> | null;
  again: boolean;
  runs: number;
  /** Failed runs in a row (the retry delay grows with them), and which of them are logged. */
  failures: FailureStreak;
  periodic: Timer | null;
  wake: { at: number; timer: Timer } | null;
}

export class EvaluationQueue<K extends string> {
  private readonly state = new Map<K, KindState>();
  private closing = false;

  constructor(
    private readonly kinds: Record<K, WorkKind>,
    private readonly clock: Clock,
    private readonly log: QueueLog,
  ) {
    for (const k of Object.keys(kinds) as K[]) {
      this.state.set(k, {
        loop: null,
        again: false,
        runs: 0,
        failures: new FailureStreak(),
        periodic: null,
        wake: null,
      });
    }
  }

  get closed(): boolean {
    return this.closing;
  }

  /**
   * Asks for a run of `kind`. Resolves (never rejects) once a run that started after this request has
   * ended: at once when idle, else after the one re-run that all requests during a run share. Work must
   * not await a request of its own kind (it would wait for itself).
   */
  request(kind: K): Promise<void> {
    const s = this.stateOf(kind);
    if (this.closing) return Promise.resolve();
    if (s.loop) {
      s.again = true;
      return s.loop;
    }
    s.loop = this.runLoop(kind, s);
    return s.loop;
  }

  /**
   * Asks for a run of `kind` at wall time `at` (ms since the epoch, as `clock.now()`); of several such
   * requests only the earliest is kept, since that run reconsiders everything.
   */
  requestAt(kind: K, at: number): void {
    const s = this.stateOf(kind);
    if (this.closing || (s.wake && at >= s.wake.at)) return;
    s.wake?.timer.cancel();
    const timer = this.clock.setTimer(Math.max(0, at - this.clock.now()), () => {
      if (s.wake?.timer === timer) s.wake = null;
      void this.request(kind);
    });
    s.wake = { at, timer };
  }

  /** Runs `kind` every `intervalMs` (coalescing with requests in between) until closed. */
  every(kind: K, intervalMs: number): void {
    const s = this.stateOf(kind);
    s.periodic?.cancel();
    if (this.closing) return;
    const arm = () => {
      s.periodic = this.clock.setTimer(intervalMs, () => {
        if (this.closing) return;
        arm();
        void this.request(kind);
      });
    };
    arm();
  }

  /** Whether `kind` is running now. */
  isRunning(kind: K): boolean {
    return this.stateOf(kind).loop !== null;
  }

  /** How many runs of `kind` have ended (successfully or not). */
  runs(kind: K): number {
    return this.stateOf(kind).runs;
  }

  /** Refuses further requests, cancels timers and waits for the runs in progress (re-runs owed are dropped). */
  async close(): Promise<void> {
    this.closing = true;
    for (const s of this.state.values()) {
      s.periodic?.cancel();
      s.periodic = null;
      s.wake?.timer.cancel();
      s.wake = null;
    }
    await Promise.all([...this.state.values()].map((s) => s.loop));
  }

  private async runLoop(kind: K, s: KindState): Promise<void> {
    const work = this.kinds[kind];
    // Start on the next microtask, so a request made synchronously after this one coalesces into it.
    await Promise.resolve();
    try {
      do {
        s.again = false;
        try {
          await work.run();
          const failedRuns = s.failures.ended();
          if (failedRuns > 1) this.log.info({ work: kind, failedRuns }, 'runs again after failing');
        } catch (err) {
          const logIt = s.failures.failed(this.clock.monotonic());
          const failedRuns = s.failures.count;
          const retryMs = work.retry && retryDelay(work.retry, failedRuns);
          if (logIt) {
            const streak = failedRuns > 1 ? { failedRuns } : {};
            this.log[isDatabaseUnavailable(err) ? 'warn' : (work.level ?? 'error')](
              { err, work: kind, ...streak, ...(retryMs ? { retryMs } : {}) },
              work.failure,
            );
          }
          if (retryMs) this.requestAt(kind, this.clock.now() + retryMs);
        } finally {
          s.runs++;
        }
      } while (s.again && !this.closing);
    } finally {
      s.loop = null;
      s.again = false;
    }
  }

  private stateOf(kind: K): KindState {
    const s = this.state.get(kind);
    if (!s) throw new Error(`unknown kind of work: ${kind}`);
    return s;
  }
}

/** The wait before retrying after `failures` failed runs in a row: firstMs, doubled each time, at most maxMs. */
function retryDelay(retry: { firstMs: number; maxMs: number }, failures: number): number {
  return Math.min(retry.maxMs, retry.firstMs * 2 ** Math.min(failures - 1, 30));
}
