/**
 * The one Thermos task state machine. It decides which process runs when and how the task ends;
 * executors (local processes, the microVM guest) only carry out its `start`/`signal` hooks and tell
 * it when a run exits. No I/O and no global clock: time comes from the injected `Clock`, so the
 * same machine is driven by real timers in the agent and by a simulated clock in property tests.
 *
 * Semantics follow apache/aurora's thermos runner (runner.py, planner.py):
 * - ACTIVE: a regular process may start once every process ordered before it has finished
 *   (succeeded; an ephemeral process that ran out of failures counts as finished), at most
 *   `max_concurrency` at a time (0 = no limit). A run that exits 0 finishes the process, unless it
 *   is a daemon, which is run again. A run that fails is run again until the process has failed
 *   `max_failures` times (0 = forever); then the process has failed (an ephemeral one finishes
 *   instead). A restart waits until `min_duration` seconds after the previous run ended.
 * - The task fails as soon as `task.max_failures` processes have failed (0 = never), or when no
 *   process can ever run again before every non-ephemeral one has ended (deadlock, e.g. a successor
 *   of a failed process). Once every non-ephemeral regular process has ended, the task succeeds
 *   (fewer failed processes than `task.max_failures`).
 * - CLEANING: running processes get SIGTERM, SIGKILL after the grace period.
 * - FINALIZING: the `final` processes run, ordered among themselves, with the same restart rules,
 *   within `finalization_wait` seconds counted from the start of CLEANING (Thermos's budget); when it
 *   runs out, what runs is SIGKILLed and the rest never starts.
 * - `stop()` ends ACTIVE the same way; the task then ends `stopped`.
 * mxc keeps one rule of its own: a final process that fails turns a successful task into a failed
 * one (Thermos only logs it), so a failed cleanup is visible.
 */
import type { Process, Task } from '../../spec/job.js';

export type ProcessState = 'waiting' | 'running' | 'success' | 'failed' | 'killed';
export type TaskStatus = 'running' | 'success' | 'failed' | 'stopped';
export type Signal = 'TERM' | 'KILL';

export interface ProcessView {
  name: string;
  state: ProcessState;
  runs: number;
  failures: number;
  exit_code: number | null;
}

export interface TaskOutcome {
  status: Exclude<TaskStatus, 'running'>;
  reason?: string;
}

export interface MachineView {
  status: TaskStatus;
  reason?: string;
  processes: ProcessView[];
}

/** `process` of the notes that concern the task as a whole (not a valid process name). */
export const TASK_LOG_PROCESS = ':task';

export interface Clock {
  now(): number;
  setTimer(ms: number, fn: () => void): unknown;
  clearTimer(handle: unknown): void;
}

export const realClock: Clock = {
  now: () => Date.now(),
  setTimer: (ms, fn) => setTimeout(fn, ms),
  clearTimer: (h) => clearTimeout(h as NodeJS.Timeout),
};

export interface MachineHooks {
  /** Start run `run` of `process`; its end must be reported with `exited`. */
  start(process: string, run: number): void;
  /** Signal the whole tree of the run in progress of `process`. */
  signal(process: string, run: number, signal: Signal): void;
  /** A scheduling note about one process (run 0 and TASK_LOG_PROCESS for the task). */
  note(process: string, run: number, line: string): void;
  /** Called after every change of state. */
  changed?(): void;
  /** The task has ended and none of its runs is alive. Called once. */
  finished(outcome: TaskOutcome): void;
}

export interface MachineOptions {
  clock?: Clock;
  /** SIGTERM → SIGKILL delay (ms). */
  gracePeriodMs: number;
}

type Phase = 'idle' | 'active' | 'cleaning' | 'finalizing' | 'done';

interface Proc {
  spec: Process;
  state: ProcessState;
  /** Planner view: done for good (finished or failed), as opposed to waiting for a (re)start. */
  ended: 'finished' | 'failed' | null;
  runs: number;
  failures: number;
  exitCode: number | null;
  /** When the previous run ended: a restart waits until min_duration after it. */
  lastExit: number | null;
  /** A run is alive (started, its exit not reported yet). */
  live: boolean;
  /** We asked this run to stop: its exit is `killed`, never a failure or a restart. */
  killing: boolean;
}

export class ThermosMachine {
  private readonly procs: Proc[];
  private readonly preds = new Map<string, string[]>();
  private readonly clock: Clock;
  private phase: Phase = 'idle';
  private outcome: TaskOutcome | null = null;
  private cleaningStart = 0;
  private wake: unknown = null;
  private wakeAt = Number.POSITIVE_INFINITY;
  private killTimer: unknown = null;
  private deadlineTimer: unknown = null;

  /** `task` must be a parsed spec Task: names, order constraints and their rules are checked at submit. */
  constructor(
    private readonly task: Task,
    private readonly hooks: MachineHooks,
    private readonly opts: MachineOptions,
  ) {
    this.clock = opts.clock ?? realClock;
    this.procs = task.processes.map((spec) => ({
      spec,
      state: 'waiting',
      ended: null,
      runs: 0,
      failures: 0,
      exitCode: null,
      lastExit: null,
      live: false,
      killing: false,
    }));
    for (const p of task.processes) this.preds.set(p.name, []);
    for (const c of task.constraints) {
      for (let i = 1; i < c.order.length; i++) this.preds.get(c.order[i]!)?.push(c.order[i - 1]!);
    }
  }

  /** Starts what may start. Call once. */
  begin(): void {
    if (this.phase !== 'idle') return;
    this.phase = 'active';
    this.note(TASK_LOG_PROCESS, 0, `starting task ${this.task.name} (${this.procs.length} processes)`);
    this.step();
  }

  /** Ends the task: SIGTERM (SIGKILL after the grace period) to what runs, then the final processes. */
  stop(reason = 'stopped'): void {
    if (this.phase === 'idle') {
      this.outcome = { status: 'stopped', reason };
      this.phase = 'done';
      this.finishIfQuiet();
    } else if (this.phase === 'active') {
      this.enterCleaning({ status: 'stopped', reason });
    }
    // Cleaning or finalizing already: that ends within finalization_wait anyway.
  }

  /** The executor's report that run `run` of `name` ended with `code` (128+n for signal n). */
  exited(name: string, run: number, code: number): void {
    const p = this.procs.find((q) => q.spec.name === name);
    if (!p || !p.live || p.runs !== run) return;
    p.live = false;
    p.exitCode = code;
    const now = this.clock.now();
    p.lastExit = now;
    if (p.killing) {
      p.killing = false;
      p.state = 'killed';
    } else if (!this.inPlay(p)) {
      // Its phase is over (cannot happen with live runs awaited, kept for safety): record only.
      p.state = code === 0 ? 'success' : 'failed';
    } else if (code === 0) {
      if (p.spec.daemon) {
        p.state = 'waiting';
        this.note(p.spec.name, run, `restarting in ${this.waitText(p)} (daemon)`);
      } else {
        p.state = 'success';
        p.ended = 'finished';
      }
    } else {
      p.failures++;
      const max = p.spec.max_failures;
      if (max === 0 || p.failures < max) {
        p.state = 'waiting';
        this.note(
          p.spec.name,
          run,
          `restarting in ${this.waitText(p)} (failure ${p.failures} of ${max || 'unlimited'})`,
        );
      } else {
        p.state = 'failed';
        p.ended = p.spec.ephemeral ? 'finished' : 'failed';
        this.note(p.spec.name, run, `failed: ${p.failures} of max_failures ${max} used`);
      }
    }
    this.step();
  }

  view(): MachineView {
    const status: TaskStatus = this.phase === 'done' && this.outcome ? this.outcome.status : 'running';
    const v: MachineView = {
      status,
      processes: this.procs.map((p) => ({
        name: p.spec.name,
        state: p.state,
        runs: p.runs,
        failures: p.failures,
        exit_code: p.exitCode,
      })),
    };
    if (status !== 'running' && this.outcome?.reason !== undefined) v.reason = this.outcome.reason;
    return v;
  }

  get ended(): boolean {
    return this.phase === 'done';
  }

  /** Forgets the task without finishing it (its executor went away underneath): cancels every timer. */
  abandon(): void {
    for (const t of [this.wake, this.killTimer, this.deadlineTimer]) if (t !== null) this.clock.clearTimer(t);
    this.wake = this.killTimer = this.deadlineTimer = null;
    this.wakeAt = Number.POSITIVE_INFINITY;
    this.phase = 'done';
    this.finished = true;
  }

  // ---- planning ---------------------------------------------------------------------------

  private regular(): Proc[] {
    return this.procs.filter((p) => !p.spec.final);
  }

  private finals(): Proc[] {
    return this.procs.filter((p) => p.spec.final);
  }

  /** Whether `p` belongs to the plan of the current phase. */
  private inPlay(p: Proc): boolean {
    return (this.phase === 'active' && !p.spec.final) || (this.phase === 'finalizing' && p.spec.final);
  }

  private byName(name: string): Proc {
    return this.procs.find((p) => p.spec.name === name)!;
  }

  /** Not ended, not running, and every predecessor finished: may run once min_duration allows. */
  private eligible(p: Proc): boolean {
    if (p.ended !== null || p.live) return false;
    return this.preds.get(p.spec.name)!.every((n) => this.byName(n).ended === 'finished');
  }

  private readyAt(p: Proc): number {
    return p.lastExit === null ? 0 : p.lastExit + p.spec.min_duration * 1000;
  }

  private waitText(p: Proc): string {
    return `${(Math.max(0, this.readyAt(p) - this.clock.now()) / 1000).toFixed(1)}s`;
  }

  /** Starts what may start in `plan`; returns whether anything can still happen (running or runnable later). */
  private runPlan(plan: Proc[]): boolean {
    const now = this.clock.now();
    const limit = this.task.max_concurrency;
    let running = plan.filter((p) => p.live).length;
    let nextWake = Number.POSITIVE_INFINITY;
    let pending = false;
    for (const p of plan) {
      if (!this.eligible(p)) continue;
      pending = true;
      const at = this.readyAt(p);
      if (at > now) {
        nextWake = Math.min(nextWake, at);
        continue;
      }
      if (limit > 0 && running >= limit) continue;
      this.launch(p);
      running++;
    }
    this.setWake(nextWake);
    return running > 0 || pending;
  }

  private launch(p: Proc): void {
    p.runs++;
    p.state = 'running';
    p.exitCode = null;
    p.live = true;
    p.killing = false;
    this.hooks.start(p.spec.name, p.runs);
  }

  private setWake(at: number): void {
    if (at === this.wakeAt) return;
    if (this.wake !== null) this.clock.clearTimer(this.wake);
    this.wake = null;
    this.wakeAt = at;
    if (Number.isFinite(at)) {
      this.wake = this.clock.setTimer(Math.max(0, at - this.clock.now()), () => {
        this.wake = null;
        this.wakeAt = Number.POSITIVE_INFINITY;
        this.step();
      });
    }
  }

  /** Moves the task forward after any event; synchronous, so each decision sees one consistent state. */
  private step(): void {
    if (this.phase === 'active') this.stepActive();
    else if (this.phase === 'cleaning') {
      if (!this.regular().some((p) => p.live)) this.enterFinalizing();
    } else if (this.phase === 'finalizing') this.stepFinalizing();
    else if (this.phase === 'done') this.finishIfQuiet();
    this.hooks.changed?.();
  }

  private stepActive(): void {
    const regular = this.regular();
    const failed = regular.filter((p) => p.ended === 'failed');
    const max = this.task.max_failures;
    if (max > 0 && failed.length >= max) {
      const last = failed[failed.length - 1]!;
      this.enterCleaning({
        status: 'failed',
        reason:
          `process ${last.spec.name} failed (${last.failures} failures); ` +
          `${failed.length} of task max_failures ${max} processes failed`,
      });
      return;
    }
    const complete = regular.every((p) => p.spec.ephemeral || p.ended !== null);
    if (complete) {
      this.enterCleaning(
        failed.length === 0
          ? { status: 'success' }
          : {
              status: 'success',
              reason: `${failed.length} process(es) failed, fewer than task max_failures ${max || 'unlimited'}`,
            },
      );
      return;
    }
    if (!this.runPlan(regular)) {
      const blocked = regular.find((p) => p.ended === null && !p.spec.ephemeral)!;
      const bad = this.preds.get(blocked.spec.name)!.find((n) => this.byName(n).ended !== 'finished');
      this.enterCleaning({
        status: 'failed',
        reason: `process ${blocked.spec.name} can never start: ${bad ?? 'a predecessor'} did not succeed`,
      });
    }
  }

  private stepFinalizing(): void {
    const finals = this.finals();
    const live = this.runPlan(finals);
    if (!live && !finals.some((p) => p.live)) this.enterDone();
  }

  // ---- teardown ---------------------------------------------------------------------------

  private enterCleaning(outcome: TaskOutcome): void {
    this.phase = 'cleaning';
    this.outcome = outcome;
    this.cleaningStart = this.clock.now();
    this.setWake(Number.POSITIVE_INFINITY);
    this.note(
      TASK_LOG_PROCESS,
      0,
      outcome.status === 'success'
        ? 'all processes succeeded; tearing down'
        : `tearing down: ${outcome.status}${outcome.reason ? ` (${outcome.reason})` : ''}`,
    );
    const finals = this.finals();
    if (finals.length > 0) {
      this.deadlineTimer = this.clock.setTimer(this.task.finalization_wait * 1000, () => this.deadline());
    }
    this.terminate(this.regular());
    this.step();
  }

  /** SIGTERM to the live runs of `list`, SIGKILL to those still alive after the grace period. */
  private terminate(list: Proc[]): void {
    const live = list.filter((p) => p.live);
    for (const p of live) {
      p.killing = true;
      this.hooks.signal(p.spec.name, p.runs, this.opts.gracePeriodMs > 0 ? 'TERM' : 'KILL');
    }
    if (live.length > 0 && this.opts.gracePeriodMs > 0) {
      if (this.killTimer !== null) this.clock.clearTimer(this.killTimer);
      this.killTimer = this.clock.setTimer(this.opts.gracePeriodMs, () => {
        this.killTimer = null;
        for (const p of list) if (p.live) this.hooks.signal(p.spec.name, p.runs, 'KILL');
      });
    }
  }

  private enterFinalizing(): void {
    if (this.killTimer !== null) this.clock.clearTimer(this.killTimer);
    this.killTimer = null;
    const finals = this.finals();
    if (finals.length === 0) {
      this.enterDone();
      return;
    }
    const left = this.cleaningStart + this.task.finalization_wait * 1000 - this.clock.now();
    if (left <= 0) {
      this.note(
        TASK_LOG_PROCESS,
        0,
        `finalization_wait ${this.task.finalization_wait}s elapsed: final processes skipped`,
      );
      this.enterDone();
      return;
    }
    this.phase = 'finalizing';
    this.note(
      TASK_LOG_PROCESS,
      0,
      `running ${finals.length} final process(es) within finalization_wait ${this.task.finalization_wait}s`,
    );
    this.stepFinalizing();
  }

  /** finalization_wait is over: SIGKILL whatever runs; nothing more starts. */
  private deadline(): void {
    this.deadlineTimer = null;
    if (this.phase !== 'cleaning' && this.phase !== 'finalizing') return;
    this.note(
      TASK_LOG_PROCESS,
      0,
      `finalization_wait ${this.task.finalization_wait}s elapsed: killing final processes`,
    );
    const live = this.procs.filter((p) => p.live);
    for (const p of live) {
      p.killing = true;
      this.hooks.signal(p.spec.name, p.runs, 'KILL');
    }
    this.enterDone();
  }

  private enterDone(): void {
    this.phase = 'done';
    this.setWake(Number.POSITIVE_INFINITY);
    if (this.deadlineTimer !== null) this.clock.clearTimer(this.deadlineTimer);
    this.deadlineTimer = null;
    const failedFinal = this.finals().find((p) => p.state === 'failed');
    if (this.outcome?.status === 'success' && failedFinal) {
      this.outcome = { status: 'failed', reason: `final process ${failedFinal.spec.name} failed` };
    }
    this.finishIfQuiet();
  }

  private finished = false;

  /** Reports the end once no run is alive any more. */
  private finishIfQuiet(): void {
    if (this.finished || this.procs.some((p) => p.live)) return;
    if (this.killTimer !== null) this.clock.clearTimer(this.killTimer);
    this.killTimer = null;
    this.finished = true;
    this.hooks.finished(this.outcome ?? { status: 'stopped' });
  }

  private note(process: string, run: number, line: string): void {
    this.hooks.note(process, run, line);
  }
}
