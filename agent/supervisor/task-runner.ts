/**
 * Runs one workload's task with Thermos semantics: order constraints, max_concurrency, per-process
 * max_failures / min_duration / daemon / ephemeral / final, finalization_wait, and group-wide stop.
 */
import type { Process, Task } from '../../spec/job.js';
import type { LogLine } from '../../spec/messages.js';
import { type LaunchContext, type LaunchSpec, plainLaunch } from './cmdline.js';
import { buildPredecessors, type Predecessors } from './order-graph.js';
import { liveGroupMembers, terminateGroup } from './process-group.js';
import { type RunExit, startRun } from './run-process.js';

export type { LaunchContext, LaunchSpec } from './cmdline.js';
export { directArgv, plainLaunch } from './cmdline.js';

export interface TaskRunnerOptions {
  workloadId: string;
  /** Parsed spec Task (defaults applied). */
  task: Task;
  /** Per-workload directory (exists, writable); the processes' cwd. */
  workDir: string;
  /** The complete environment of every process (nothing of the agent's own environment is added). */
  env: Record<string, string>;
  /** Turns a process into a command; isolation wraps here. Default: `plainLaunch`. */
  launch?: (proc: Process, ctx: LaunchContext) => LaunchSpec;
  /** SIGTERM → SIGKILL delay (default 5000). */
  gracePeriodMs?: number;
  /** Every stdout/stderr line of every run, plus `system` lines about starts, exits and restarts. */
  onLog: (line: LogLine) => void;
  /** Called whenever any process state (or the task status) changes. */
  onChange?: (snapshot: TaskSnapshot) => void;
}

export type ProcessState = 'waiting' | 'running' | 'success' | 'failed' | 'killed';

export interface ProcessSnapshot {
  name: string;
  state: ProcessState;
  runs: number;
  failures: number;
  exit_code: number | null;
  pid: number | null;
}

export interface TaskSnapshot {
  status: 'running' | 'success' | 'failed' | 'stopped';
  reason?: string;
  processes: ProcessSnapshot[];
}

/** `process` of the system log lines that concern the task as a whole (not a valid process name). */
export const TASK_LOG_PROCESS = ':task';

type Phase = 'idle' | 'regular' | 'teardown' | 'finalizing' | 'done';
type Outcome = { status: 'success' | 'failed' | 'stopped'; reason?: string };

interface ProcState {
  proc: Process;
  state: ProcessState;
  runs: number;
  failures: number;
  exit_code: number | null;
  pid: number | null;
  startedAt: number;
  /** Set while a restart waits for min_duration; the process is not eligible until it fires. */
  restartTimer: NodeJS.Timeout | null;
  /** The current run's exit, while one is running. */
  exited: Promise<RunExit> | null;
  /** We are stopping this run: its exit is 'killed', never a failure or a restart. */
  killing: boolean;
  /** The current run's group leader is a sandbox monitor (see LaunchSpec.leaderIsMonitor). */
  leaderIsMonitor: boolean;
}

export class TaskRunner {
  /** Resolves when the task has finished (success, failed or stopped) and none of its processes is alive. */
  readonly done: Promise<TaskSnapshot>;
  private resolveDone!: (s: TaskSnapshot) => void;
  private readonly procs: ProcState[];
  private readonly preds: Predecessors;
  private readonly launch: (proc: Process, ctx: LaunchContext) => LaunchSpec;
  private readonly graceMs: number;
  private phase: Phase = 'idle';
  private outcome: Outcome | null = null;
  private finalDeadline: NodeJS.Timeout | null = null;
  /** Background cleanups of groups whose leader exited but left children behind. */
  private readonly cleanups = new Set<Promise<unknown>>();

  constructor(private readonly opts: TaskRunnerOptions) {
    this.preds = buildPredecessors(opts.task);
    this.launch = opts.launch ?? plainLaunch;
    this.graceMs = opts.gracePeriodMs ?? 5000;
    this.procs = opts.task.processes.map((proc) => ({
      proc,
      state: 'waiting',
      runs: 0,
      failures: 0,
      exit_code: null,
      pid: null,
      startedAt: 0,
      restartTimer: null,
      exited: null,
      killing: false,
      leaderIsMonitor: false,
    }));
    this.done = new Promise((resolve) => {
      this.resolveDone = resolve;
    });
  }

  /** Starts the processes whose order constraints allow it. Call once. */
  start(): void {
    if (this.phase !== 'idle')
      throw new Error(`workload ${this.opts.workloadId}: TaskRunner.start() called twice`);
    this.phase = 'regular';
    this.taskLog(`starting task ${this.opts.task.name} (${this.procs.length} processes)`);
    this.schedule();
  }

  /**
   * Stops the task: SIGTERM to every running process group, SIGKILL after the grace period, then
   * the final processes within finalization_wait. Resolves with the final snapshot (same as `done`).
   */
  stop(reason = 'stopped'): Promise<TaskSnapshot> {
    if (this.phase === 'idle') {
      this.outcome = { status: 'stopped', reason };
      this.finish();
    } else if (this.phase === 'regular') {
      this.beginTeardown({ status: 'stopped', reason });
    }
    // Already tearing down or finalizing: that ends within finalization_wait anyway.
    return this.done;
  }

  snapshot(): TaskSnapshot {
    const status = this.phase === 'done' && this.outcome ? this.outcome.status : 'running';
    const snap: TaskSnapshot = {
      status,
      processes: this.procs.map((p) => ({
        name: p.proc.name,
        state: p.state,
        runs: p.runs,
        failures: p.failures,
        exit_code: p.exit_code,
        pid: p.pid,
      })),
    };
    if (this.outcome?.reason !== undefined) snap.reason = this.outcome.reason;
    return snap;
  }

  /** Pids of the running processes' group leaders (each is also its group id). */
  pids(): number[] {
    return this.procs.filter((p) => p.pid !== null).map((p) => p.pid!);
  }

  // ---- scheduling -------------------------------------------------------------------------

  /** Moves the task forward after any change; synchronous, so its decisions see one consistent state. */
  private schedule(): void {
    if (this.phase === 'regular') {
      const outcome = this.regularOutcome();
      if (outcome) {
        this.beginTeardown(outcome);
        return;
      }
      this.startEligible((p) => !p.proc.final);
      const stuck = this.stuckReason((p) => !p.proc.final);
      if (stuck) this.beginTeardown({ status: 'failed', reason: stuck });
    } else if (this.phase === 'finalizing') {
      this.startEligible((p) => p.proc.final);
      const finals = this.procs.filter((p) => p.proc.final);
      const settled = finals.every(
        (p) => p.state !== 'running' && p.restartTimer === null && !this.canStart(p),
      );
      if (settled) this.finish();
    }
  }

  /** Success when every non-ephemeral regular process succeeded; failure when one ran out of failures. */
  private regularOutcome(): Outcome | null {
    const awaited = this.procs.filter((p) => !p.proc.final && !p.proc.ephemeral);
    const failed = awaited.find((p) => p.state === 'failed');
    if (failed) {
      return { status: 'failed', reason: `process ${failed.proc.name} failed (${failed.failures} failures)` };
    }
    if (awaited.every((p) => p.state === 'success')) return { status: 'success' };
    return null;
  }

  /** A waiting process none of whose runs can ever start (a predecessor failed): the task cannot finish. */
  private stuckReason(pool: (p: ProcState) => boolean): string | null {
    const members = this.procs.filter(pool);
    if (members.some((p) => p.state === 'running' || p.restartTimer !== null)) return null;
    const blocked = members.find((p) => p.state === 'waiting' && !p.proc.ephemeral);
    if (!blocked) return null;
    const bad = [...this.preds.get(blocked.proc.name)!].find((n) => this.byName(n).state !== 'success');
    return `process ${blocked.proc.name} can never start: ${bad ?? 'a predecessor'} did not succeed`;
  }

  private canStart(p: ProcState): boolean {
    if (p.state !== 'waiting' || p.restartTimer !== null) return false;
    for (const name of this.preds.get(p.proc.name)!) if (this.byName(name).state !== 'success') return false;
    return true;
  }

  private startEligible(pool: (p: ProcState) => boolean): void {
    const limit = this.opts.task.max_concurrency;
    let running = this.procs.filter((p) => pool(p) && p.state === 'running').length;
    for (const p of this.procs) {
      if (!pool(p) || !this.canStart(p)) continue;
      if (limit > 0 && running >= limit) break;
      this.startProcess(p);
      running++;
    }
  }

  private startProcess(p: ProcState): void {
    p.runs++;
    p.state = 'running';
    p.exit_code = null;
    const run = p.runs;
    let spec: LaunchSpec | null = null;
    let exited: Promise<RunExit>;
    try {
      spec = this.launch(p.proc, { workDir: this.opts.workDir, env: this.opts.env });
      const handle = startRun(spec, (stream, line) =>
        this.emit({ process: p.proc.name, stream, run, ts: Date.now(), line }),
      );
      p.pid = handle.pid;
      exited = handle.exited;
    } catch (err) {
      // The launcher refused (e.g. a command outside the closure): a failed run like any other.
      exited = Promise.resolve({
        code: 127,
        signal: null,
        error: err instanceof Error ? err : new Error(String(err)),
      });
    }
    p.exited = exited;
    // Counted from when the process exists: a fork slowed by load must not eat into min_duration.
    p.startedAt = Date.now();
    if (p.pid !== null) this.procLog(p, `run ${run} started (pid ${p.pid})`);
    p.leaderIsMonitor = spec?.leaderIsMonitor ?? false;
    const leaderIsMonitor = p.leaderIsMonitor;
    void exited.then((result) => this.onExit(p, run, result, leaderIsMonitor));
    this.changed();
  }

  private onExit(p: ProcState, run: number, result: RunExit, leaderIsMonitor: boolean): void {
    const pgid = p.pid;
    p.pid = null;
    p.exited = null;
    p.exit_code = result.code;
    const took = ((Date.now() - p.startedAt) / 1000).toFixed(1);
    if (result.error) this.procLog(p, `run ${run} could not start: ${result.error.message}`);
    else if (result.signal) this.procLog(p, `run ${run} killed by ${result.signal} after ${took}s`);
    else this.procLog(p, `run ${run} exited with code ${result.code} after ${took}s`);
    if (!p.killing && pgid !== null && liveGroupMembers(pgid).length > 0) {
      // No process outlives its run: children left behind in the group are stopped like the run would be.
      this.procLog(p, `stopping processes left behind in group ${pgid}`);
      this.track(terminateGroup(pgid, { graceMs: this.graceMs, spareLeader: leaderIsMonitor }));
    }
    // Only a process of the phase in progress may be restarted; anything else just records its end.
    const active =
      (this.phase === 'regular' && !p.proc.final) || (this.phase === 'finalizing' && p.proc.final);
    if (p.killing) {
      p.killing = false;
      p.state = 'killed';
    } else if (!active) {
      p.state = result.code === 0 ? 'success' : 'failed';
    } else if (result.code === 0 && !p.proc.daemon) {
      p.state = 'success';
    } else {
      if (result.code !== 0) p.failures++;
      const max = p.proc.max_failures;
      if (result.code !== 0 && max > 0 && p.failures >= max) {
        p.state = 'failed';
        this.procLog(p, `failed: ${p.failures} of max_failures ${max} used`);
      } else {
        this.scheduleRestart(p);
      }
    }
    this.changed();
    this.schedule();
  }

  /** A run shorter than min_duration is restarted only once min_duration has passed since it started. */
  private scheduleRestart(p: ProcState): void {
    p.state = 'waiting';
    const delay = Math.max(0, p.proc.min_duration * 1000 - (Date.now() - p.startedAt));
    const why =
      p.exit_code === 0 ? 'daemon' : `failure ${p.failures} of ${p.proc.max_failures || 'unlimited'}`;
    this.procLog(p, `restarting in ${(delay / 1000).toFixed(1)}s (${why})`);
    p.restartTimer = setTimeout(() => {
      p.restartTimer = null;
      this.schedule();
    }, delay);
  }

  // ---- teardown ---------------------------------------------------------------------------

  /** Kills every regular (and ephemeral) process, then runs the final ones. */
  private beginTeardown(outcome: Outcome): void {
    this.phase = 'teardown';
    this.outcome = outcome;
    this.taskLog(
      outcome.status === 'success'
        ? 'all processes succeeded; tearing down'
        : `tearing down: ${outcome.status}${outcome.reason ? ` (${outcome.reason})` : ''}`,
    );
    const regular = this.procs.filter((p) => !p.proc.final);
    for (const p of regular) this.cancelRestart(p);
    void this.killAll(regular).then(() => this.beginFinalizing());
    this.changed();
  }

  private beginFinalizing(): void {
    const finals = this.procs.filter((p) => p.proc.final);
    this.phase = 'finalizing';
    if (finals.length > 0) {
      const waitS = this.opts.task.finalization_wait;
      this.taskLog(`running ${finals.length} final process(es) within finalization_wait ${waitS}s`);
      this.finalDeadline = setTimeout(() => {
        this.finalDeadline = null;
        if (this.phase !== 'finalizing') return;
        this.taskLog(`finalization_wait ${waitS}s elapsed: killing final processes`);
        for (const p of finals) this.cancelRestart(p);
        this.phase = 'teardown';
        void this.killAll(finals, 0).then(() => this.finish());
      }, waitS * 1000);
    }
    this.schedule();
  }

  private cancelRestart(p: ProcState): void {
    if (p.restartTimer) clearTimeout(p.restartTimer);
    p.restartTimer = null;
  }

  /** Stops the running processes among `list` and waits for them (and leftover groups) to be gone. */
  private async killAll(list: ProcState[], graceMs = this.graceMs): Promise<void> {
    const waits: Promise<unknown>[] = [];
    for (const p of list) {
      if (p.state !== 'running' || p.exited === null) continue;
      p.killing = true;
      const pgid = p.pid;
      if (pgid !== null) {
        const stopping = terminateGroup(pgid, { graceMs, spareLeader: p.leaderIsMonitor });
        waits.push(stopping.catch((err) => this.procLog(p, String(err))));
      }
      waits.push(p.exited);
    }
    await Promise.all(waits);
    // Let the exit handlers run (they are queued behind `exited`) before moving on.
    await new Promise((r) => setImmediate(r));
    await Promise.all([...this.cleanups]);
  }

  private finish(): void {
    if (this.phase === 'done') return;
    if (this.finalDeadline) clearTimeout(this.finalDeadline);
    this.finalDeadline = null;
    for (const p of this.procs) this.cancelRestart(p);
    this.phase = 'done';
    const outcome = this.outcome ?? { status: 'stopped' };
    const failedFinal = this.procs.find((p) => p.proc.final && p.state === 'failed');
    if (outcome.status === 'success' && failedFinal) {
      this.outcome = { status: 'failed', reason: `final process ${failedFinal.proc.name} failed` };
    }
    void Promise.all([...this.cleanups]).then(() => {
      const snap = this.snapshot();
      this.taskLog(`task finished: ${snap.status}${snap.reason ? ` (${snap.reason})` : ''}`);
      this.changed();
      this.resolveDone(snap);
    });
  }

  private track(p: Promise<unknown>): void {
    const tracked = p.catch((err) => this.taskLog(String(err)));
    this.cleanups.add(tracked);
    void tracked.finally(() => this.cleanups.delete(tracked));
  }

  // ---- reporting --------------------------------------------------------------------------

  private byName(name: string): ProcState {
    return this.procs.find((p) => p.proc.name === name)!;
  }

  private procLog(p: ProcState, line: string): void {
    this.emit({ process: p.proc.name, stream: 'system', run: p.runs, ts: Date.now(), line });
  }

  private taskLog(line: string): void {
    this.emit({ process: TASK_LOG_PROCESS, stream: 'system', run: 0, ts: Date.now(), line });
  }

  private emit(line: LogLine): void {
    try {
      this.opts.onLog(line);
    } catch (err) {
      process.emitWarning(`workload ${this.opts.workloadId}: onLog threw: ${String(err)}`);
    }
  }

  private changed(): void {
    if (!this.opts.onChange) return;
    try {
      this.opts.onChange(this.snapshot());
    } catch (err) {
      process.emitWarning(`workload ${this.opts.workloadId}: onChange threw: ${String(err)}`);
    }
  }
}
