/**
 * The host side of a microVM task: decides which process runs when (order constraints,
 * max_concurrency), restarts (max_failures, daemon, min_duration), when the task is over
 * (ephemeral processes are not waited for; task max_failures), and runs `final` processes at
 * teardown. The guest only executes; keeping the logic here keeps it in TypeScript, not sh.
 */
import type { Process, Task } from '../../spec/job.js';

export type ProcessState =
  | 'waiting'
  | 'starting'
  | 'running'
  | 'delayed'
  | 'success'
  | 'failed'
  | 'killed'
  | 'blocked';

export interface TaskRunnerHooks {
  start(process: string, run: number): void;
  kill(process: string, signal: 'TERM' | 'KILL'): void;
  /** A scheduling note about one process (shown as its `system` stream). */
  note(process: string, run: number, line: string): void;
  finish(result: { status: 'success' | 'failed' | 'stopped'; reason?: string }): void;
}

export interface ProcessReport {
  name: string;
  state: 'waiting' | 'running' | 'success' | 'failed' | 'killed';
  runs: number;
  failures: number;
  exit_code: number | null;
}

interface Proc {
  spec: Process;
  state: ProcessState;
  run: number;
  failures: number;
  exitCode: number | null;
  startedAt: number;
  timer?: NodeJS.Timeout;
  killWanted?: boolean;
}

type Phase = 'idle' | 'main' | 'stopping' | 'finalizing' | 'done';

const TERMINAL: ReadonlySet<ProcessState> = new Set(['success', 'failed', 'killed', 'blocked']);

export class TaskRunner {
  private readonly procs = new Map<string, Proc>();
  private readonly preds = new Map<string, Set<string>>();
  private phase: Phase = 'idle';
  private failedCount = 0;
  private outcome: { status: 'success' | 'failed' | 'stopped'; reason?: string } = { status: 'success' };
  private timers: NodeJS.Timeout[] = [];

  constructor(
    private readonly task: Task,
    private readonly hooks: TaskRunnerHooks,
    private readonly gracePeriodMs: number,
  ) {
    for (const p of task.processes) {
      this.procs.set(p.name, {
        spec: p,
        state: 'waiting',
        run: 0,
        failures: 0,
        exitCode: null,
        startedAt: 0,
      });
      this.preds.set(p.name, new Set());
    }
    for (const c of task.constraints) {
      for (let i = 1; i < c.order.length; i++) this.preds.get(c.order[i]!)?.add(c.order[i - 1]!);
    }
  }

  /** The guest is ready: start what has no predecessors. */
  begin(): void {
    if (this.phase !== 'idle') return;
    this.phase = 'main';
    this.schedule();
  }

  get done(): boolean {
    return this.phase === 'done';
  }

  /** Per-process state, in the shape of the agent's workload_status report. */
  states(): ProcessReport[] {
    const shown: Record<ProcessState, ProcessReport['state']> = {
      waiting: 'waiting',
      blocked: 'waiting',
      delayed: 'waiting',
      starting: 'running',
      running: 'running',
      success: 'success',
      failed: 'failed',
      killed: 'killed',
    };
    return [...this.procs.values()].map((p) => ({
      name: p.spec.name,
      state: shown[p.state],
      runs: p.run,
      failures: p.failures,
      exit_code: p.exitCode,
    }));
  }

  onStarted(name: string, run: number): void {
    const p = this.procs.get(name);
    if (!p || p.run !== run || p.state !== 'starting') return;
    p.state = 'running';
    if (p.killWanted) this.hooks.kill(name, 'TERM');
  }

  onExit(name: string, run: number, exitCode: number): void {
    const p = this.procs.get(name);
    if (!p || p.run !== run || (p.state !== 'running' && p.state !== 'starting')) return;
    p.exitCode = exitCode;
    if (p.killWanted) {
      p.state = 'killed';
      this.hooks.note(name, run, `stopped (exit code ${exitCode})`);
    } else if (exitCode === 0) {
      if (p.spec.daemon && this.phase === 'main') {
        this.hooks.note(name, run, 'exited successfully; restarting (daemon)');
        this.restart(p);
      } else {
        p.state = 'success';
      }
    } else {
      p.failures++;
      const budget = p.spec.max_failures;
      if (this.phase === 'main' && (budget === 0 || p.failures < budget)) {
        this.hooks.note(
          name,
          run,
          `exited with code ${exitCode}; failure ${p.failures}${budget ? ` of ${budget}` : ''}, restarting`,
        );
        this.restart(p);
      } else {
        p.state = 'failed';
        this.hooks.note(name, run, `failed with exit code ${exitCode}`);
        if (!p.spec.final) this.processFailed(name);
        else
          this.outcome = {
            status: 'failed',
            reason: `final process ${name} failed with exit code ${exitCode}`,
          };
      }
    }
    this.schedule();
  }

  /** Stops the task: TERM (then KILL after the grace period) to what runs, then the final processes. */
  stop(reason = 'stopped'): void {
    if (this.phase === 'idle') {
      this.outcome = { status: 'stopped', reason };
      this.finalize();
      return;
    }
    if (this.phase !== 'main') return;
    this.outcome = { status: 'stopped', reason };
    this.endMain();
  }

  /** Cancels timers; used when the VM went away underneath the runner. */
  abandon(): void {
    for (const t of this.timers) clearTimeout(t);
    for (const p of this.procs.values()) if (p.timer) clearTimeout(p.timer);
    this.phase = 'done';
  }

  private processFailed(name: string): void {
    this.failedCount++;
    const max = this.task.max_failures;
    if (max > 0 && this.failedCount >= max && this.phase === 'main') {
      this.outcome = {
        status: 'failed',
        reason: `process ${name} failed (${this.failedCount} failed of ${max} allowed)`,
      };
      this.endMain();
    }
  }

  private restart(p: Proc): void {
    const wait = Math.max(0, p.spec.min_duration * 1000 - (Date.now() - p.startedAt));
    p.state = 'delayed';
    p.timer = setTimeout(() => {
      p.timer = undefined;
      if (p.state === 'delayed' && this.phase === 'main') this.launch(p);
    }, wait);
  }

  private launch(p: Proc): void {
    p.run++;
    p.state = 'starting';
    p.startedAt = Date.now();
    p.killWanted = false;
    this.hooks.start(p.spec.name, p.run);
  }

  private regular(): Proc[] {
    return [...this.procs.values()].filter((p) => !p.spec.final);
  }

  private finals(): Proc[] {
    return [...this.procs.values()].filter((p) => p.spec.final);
  }

  private active(list: Proc[]): Proc[] {
    return list.filter((p) => p.state === 'starting' || p.state === 'running');
  }

  private schedule(): void {
    if (this.phase === 'main') this.scheduleMain();
    else if (this.phase === 'stopping') {
      if (this.active(this.regular()).length === 0) this.finalize();
    } else if (this.phase === 'finalizing') this.scheduleFinals();
  }

  private scheduleMain(): void {
    const limit = this.task.max_concurrency;
    let changed = true;
    while (changed) {
      changed = false;
      for (const p of this.regular()) {
        if (p.state !== 'waiting') continue;
        const before = [...this.preds.get(p.spec.name)!]
          .map((n) => this.procs.get(n)!)
          .filter((q) => !q.spec.final);
        if (before.some((q) => q.state === 'failed' || q.state === 'blocked')) {
          p.state = 'blocked';
          this.hooks.note(p.spec.name, 0, 'not started: a process it is ordered after failed');
          changed = true;
        } else if (before.every((q) => q.state === 'success')) {
          if (limit > 0 && this.active(this.regular()).length >= limit) continue;
          this.launch(p);
          changed = true;
        }
      }
    }
    // The task is over when every process that is waited for (not ephemeral) has finished.
    const waitedFor = this.regular().filter((p) => !p.spec.ephemeral);
    if (waitedFor.every((p) => TERMINAL.has(p.state))) {
      if (this.outcome.status === 'success' && this.failedCount > 0 && this.task.max_failures === 0) {
        this.outcome = {
          status: 'success',
          reason: `${this.failedCount} process(es) failed; the task allows unlimited failures`,
        };
      }
      this.endMain();
    }
  }

  private endMain(): void {
    this.phase = 'stopping';
    let signalled = false;
    for (const p of this.regular()) {
      if (p.timer) clearTimeout(p.timer);
      if (p.state === 'delayed' || p.state === 'waiting')
        p.state = p.state === 'delayed' ? 'killed' : 'blocked';
      if (p.state === 'running' || p.state === 'starting') {
        p.killWanted = true;
        if (p.state === 'running') this.hooks.kill(p.spec.name, 'TERM');
        signalled = true;
      }
    }
    if (signalled) {
      this.timers.push(
        setTimeout(() => {
          for (const p of this.active(this.regular())) this.hooks.kill(p.spec.name, 'KILL');
        }, this.gracePeriodMs),
      );
    }
    this.schedule();
  }

  private finalize(): void {
    this.phase = 'finalizing';
    if (this.finals().length > 0) {
      this.timers.push(
        setTimeout(() => {
          for (const p of this.finals()) {
            if (p.state === 'waiting') p.state = 'blocked';
            if (p.state === 'running' || p.state === 'starting') {
              p.killWanted = true;
              this.hooks.kill(p.spec.name, 'KILL');
            }
          }
          this.scheduleFinals();
        }, this.task.finalization_wait * 1000),
      );
    }
    this.scheduleFinals();
  }

  private scheduleFinals(): void {
    for (const p of this.finals()) {
      if (p.state !== 'waiting') continue;
      const before = [...this.preds.get(p.spec.name)!]
        .map((n) => this.procs.get(n)!)
        .filter((q) => q.spec.final);
      if (before.every((q) => TERMINAL.has(q.state))) this.launch(p);
    }
    const finals = this.finals();
    if (finals.every((p) => TERMINAL.has(p.state))) {
      this.abandon();
      this.hooks.finish(this.outcome);
    }
  }
}
