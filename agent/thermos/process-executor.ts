/**
 * The local executor of the Thermos machine (isolation `process` and `sandbox`): each run is a child
 * process leading its own group; signals go to the whole group; children a finished run left in its
 * group are stopped. A launcher with a `supervised` way starts one task supervisor inside the
 * isolation and every run through it (one namespace per task); others launch each run on its own.
 * The task logic lives in machine.ts.
 */
import type { Process, Task } from '../../spec/job.js';
import type { LogLine } from '../../spec/messages.js';
import { type Launcher, type LaunchSpec, plainLaunch, type SupervisedLaunch } from './cmdline.js';
import {
  type Clock,
  type MachineView,
  type ProcessView,
  TASK_LOG_PROCESS,
  ThermosMachine,
} from './machine.js';
import { liveGroupMembers, signalGroup, terminateGroup } from './process-group.js';
import { type RunExit, startRun } from './run-process.js';
import { type RunListener, type SupervisedRun, TaskSupervisor } from './task-supervisor.js';

export { TASK_LOG_PROCESS } from './machine.js';

export interface TaskRunnerOptions {
  workloadId: string;
  /** Parsed spec Task (defaults applied, order constraints checked at submit). */
  task: Task;
  /** Per-workload directory (exists, writable); the processes' cwd. */
  workDir: string;
  /** The complete environment of every process (nothing of the agent's own environment is added). */
  env: Record<string, string>;
  /** Turns a process into a command; isolation wraps here. Default: `plainLaunch`. */
  launch?: Launcher;
  /**
   * A task supervisor the caller started already for this task (from `launch.supervised`); the
   * runner then spawns through it and closes it at the end. Default: started with the first run.
   */
  supervisor?: TaskSupervisor;
  /** SIGTERM → SIGKILL delay (default 5000). */
  gracePeriodMs?: number;
  /** Every stdout/stderr line of every run, plus `system` lines about starts, exits and restarts. */
  onLog: (line: LogLine) => void;
  /** Called whenever any process state (or the task status) changes. */
  onChange?: (snapshot: TaskSnapshot) => void;
  clock?: Clock;
}

export interface ProcessSnapshot extends ProcessView {
  pid: number | null;
}

export interface TaskSnapshot extends Omit<MachineView, 'processes'> {
  processes: ProcessSnapshot[];
}

interface LiveRun {
  run: number;
  pid: number | null;
  startedAt: number;
  /** The group leader is a monitor (bubblewrap): SIGTERM spares it (see LaunchSpec.leaderIsMonitor). */
  leaderIsMonitor: boolean;
  /** Set when the run was started by the task supervisor (then `pid` is inside its namespace). */
  supervised?: SupervisedRun;
}

export class TaskRunner {
  /** Resolves when the task has finished (success, failed or stopped) and none of its processes is alive. */
  readonly done: Promise<TaskSnapshot>;
  private resolveDone!: (s: TaskSnapshot) => void;
  private readonly machine: ThermosMachine;
  private readonly launch: Launcher;
  private readonly supervised: SupervisedLaunch | null;
  /** The task supervisor, started with the first run; null until then and for unsupervised launchers. */
  private supervisor: TaskSupervisor | null = null;
  private supervisorClosed = false;
  private readonly graceMs: number;
  private readonly live = new Map<string, LiveRun>();
  private readonly byName: Map<string, Process>;
  /** Background stops of groups whose leader exited but left children behind, or were signalled. */
  private readonly cleanups = new Set<Promise<unknown>>();
  private started = false;

  constructor(private readonly opts: TaskRunnerOptions) {
    this.launch = opts.launch ?? plainLaunch;
    this.supervised = this.launch.supervised ?? null;
    this.supervisor = this.supervised ? (opts.supervisor ?? null) : null;
    this.graceMs = opts.gracePeriodMs ?? 5000;
    this.byName = new Map(opts.task.processes.map((p) => [p.name, p]));
    this.done = new Promise((resolve) => {
      this.resolveDone = resolve;
    });
    this.machine = new ThermosMachine(
      opts.task,
      {
        start: (name, run) => this.startRun(name, run),
        signal: (name, run, signal) => this.signal(name, run, signal),
        note: (process, run, line) => this.emit({ process, stream: 'system', run, ts: Date.now(), line }),
        changed: () => this.changed(),
        finished: () => {
          void Promise.all([...this.cleanups])
            .then(() => this.closeSupervisor())
            .then(() => {
              const snap = this.snapshot();
              this.taskLog(`task finished: ${snap.status}${snap.reason ? ` (${snap.reason})` : ''}`);
              this.changed();
              this.resolveDone(snap);
            });
        },
      },
      { gracePeriodMs: this.graceMs, clock: opts.clock },
    );
  }

  /** Starts the processes whose order constraints allow it. Call once. */
  start(): void {
    if (this.started) throw new Error(`workload ${this.opts.workloadId}: TaskRunner.start() called twice`);
    this.started = true;
    this.machine.begin();
  }

  /**
   * Stops the task: SIGTERM to every running process group, SIGKILL after the grace period, then
   * the final processes within finalization_wait. Resolves with the final snapshot (same as `done`).
   */
  stop(reason = 'stopped'): Promise<TaskSnapshot> {
    this.machine.stop(reason);
    return this.done;
  }

  snapshot(): TaskSnapshot {
    const v = this.machine.view();
    return { ...v, processes: v.processes.map((p) => ({ ...p, pid: this.live.get(p.name)?.pid ?? null })) };
  }

  /**
   * Host pids of process group leaders to kill should this agent die: each running process's, or
   * the task supervisor's launcher (its namespace holds every process) while it lives.
   */
  pids(): number[] {
    if (this.supervised) return this.supervisor?.pid && !this.supervisorClosed ? [this.supervisor.pid] : [];
    return [...this.live.values()].filter((r) => r.pid !== null).map((r) => r.pid!);
  }

  private taskSupervisor(supervised: SupervisedLaunch): TaskSupervisor {
    this.supervisor ??= new TaskSupervisor(
      supervised.supervisor({ workDir: this.opts.workDir, env: this.opts.env }),
      (line) => this.emit({ process: TASK_LOG_PROCESS, stream: 'stderr', run: 0, ts: Date.now(), line }),
    );
    return this.supervisor;
  }

  private async closeSupervisor(): Promise<void> {
    if (!this.supervisor || this.supervisorClosed) return;
    await this.supervisor.close();
    this.supervisorClosed = true;
  }

  private startSupervised(supervised: SupervisedLaunch, name: string, run: number): void {
    const proc = this.byName.get(name)!;
    const r: LiveRun = { run, pid: null, startedAt: Date.now(), leaderIsMonitor: false };
    this.live.set(name, r);
    const listener: RunListener = {
      onStart: (pid) => {
        r.pid = pid;
        this.procLog(name, run, `run ${run} started (pid ${pid} in the task's PID namespace)`);
      },
      onLine: (stream, line) => this.emit({ process: name, stream, run, ts: Date.now(), line }),
    };
    let handle: SupervisedRun;
    try {
      handle = this.taskSupervisor(supervised).spawn(
        supervised.argv(proc),
        this.opts.env,
        this.opts.workDir,
        listener,
      );
    } catch (err) {
      // The launcher refused (e.g. a command outside the closure): a failed run like any other.
      const error = err instanceof Error ? err : new Error(String(err));
      handle = { exited: Promise.resolve({ code: 127, signal: null, error }) };
    }
    r.supervised = handle;
    void handle.exited.then((result) => this.onExit(name, r, result));
  }

  private startRun(name: string, run: number): void {
    if (this.supervised) {
      this.startSupervised(this.supervised, name, run);
      return;
    }
    const proc = this.byName.get(name)!;
    let spec: LaunchSpec | null = null;
    let exited: Promise<RunExit>;
    let pid: number | null = null;
    try {
      spec = this.launch(proc, { workDir: this.opts.workDir, env: this.opts.env });
      const handle = startRun(spec, (stream, line) =>
        this.emit({ process: name, stream, run, ts: Date.now(), line }),
      );
      pid = handle.pid;
      exited = handle.exited;
    } catch (err) {
      // The launcher refused (e.g. a command outside the closure): a failed run like any other.
      exited = Promise.resolve({
        code: 127,
        signal: null,
        error: err instanceof Error ? err : new Error(String(err)),
      });
    }
    const r: LiveRun = { run, pid, startedAt: Date.now(), leaderIsMonitor: spec?.leaderIsMonitor ?? false };
    this.live.set(name, r);
    if (pid !== null) this.procLog(name, run, `run ${run} started (pid ${pid})`);
    void exited.then((result) => this.onExit(name, r, result));
  }

  private onExit(name: string, r: LiveRun, result: RunExit & { lingering?: boolean }): void {
    if (this.live.get(name) === r) this.live.delete(name);
    const took = ((Date.now() - r.startedAt) / 1000).toFixed(1);
    if (result.error) this.procLog(name, r.run, `run ${r.run} could not start: ${result.error.message}`);
    else if (result.signal)
      this.procLog(name, r.run, `run ${r.run} killed by ${result.signal} after ${took}s`);
    else this.procLog(name, r.run, `run ${r.run} exited with code ${result.code} after ${took}s`);
    if (r.supervised) {
      if (result.lingering) {
        this.procLog(name, r.run, `stopping processes left behind in group ${r.pid}`);
        this.track(this.supervisor!.terminateLeftovers(r.supervised, this.graceMs));
      }
    } else if (r.pid !== null && liveGroupMembers(r.pid).length > 0) {
      // No process outlives its run: children left behind in the group are stopped like the run would be.
      this.procLog(name, r.run, `stopping processes left behind in group ${r.pid}`);
      this.track(terminateGroup(r.pid, { graceMs: this.graceMs, spareLeader: r.leaderIsMonitor }));
    }
    this.machine.exited(name, r.run, result.code);
  }

  private signal(name: string, run: number, signal: 'TERM' | 'KILL'): void {
    const r = this.live.get(name);
    if (!r || r.run !== run) return;
    if (r.supervised) {
      // Also before its pid is known: the supervisor handles the start first.
      this.supervisor?.signal(r.supervised, signal);
      return;
    }
    if (r.pid === null) return;
    try {
      signalGroup(r.pid, signal === 'TERM' ? 'SIGTERM' : 'SIGKILL', { spareLeader: r.leaderIsMonitor });
    } catch (err) {
      this.procLog(name, run, `could not signal group ${r.pid}: ${String(err)}`);
    }
  }

  private track(p: Promise<unknown>): void {
    const tracked = p.catch((err) => this.taskLog(String(err)));
    this.cleanups.add(tracked);
    void tracked.finally(() => this.cleanups.delete(tracked));
  }

  private procLog(name: string, run: number, line: string): void {
    this.emit({ process: name, stream: 'system', run, ts: Date.now(), line });
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
