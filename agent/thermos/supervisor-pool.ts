/**
 * Idle task supervisors, each already in a fresh PID namespace of its own, so a task start takes one
 * instead of creating its namespace on the start path. A taken supervisor belongs to that one task
 * (nothing ran in it before; the task closes it, and with it the namespace); a replacement is spawned
 * a moment after the take, off the start path, because Node's spawn blocks the event loop until the
 * child has exec'd. Only launches that depend on nothing of the task can be pooled: the `process`
 * isolation's, not a sandbox (its mounts are the task's closure and work directory).
 */
import type { LaunchSpec } from './cmdline.js';
import { TaskSupervisor } from './task-supervisor.js';

export interface SupervisorPoolOptions {
  /** The command of one pooled supervisor (nothing of any task in it: cwd `/`, no environment of a task). */
  spec: LaunchSpec;
  /** Idle supervisors kept (default 1). */
  size?: number;
  /** Time after a take before a replacement is spawned (ms, default 25). */
  refillAfterMs?: number;
  /** A stderr line of an idle supervisor (bwrap's errors, say), or a note about the pool. */
  onDiagnostic: (line: string) => void;
}

/** Idle supervisors that died before saying they were up, in a row, after which the pool stops. */
const MAX_FAILED_STARTS = 3;

export class SupervisorPool {
  private readonly idle: TaskSupervisor[] = [];
  private readonly size: number;
  private readonly refillAfterMs: number;
  private timer: NodeJS.Timeout | null = null;
  private closed = false;
  private failedStarts = 0;

  constructor(private readonly opts: SupervisorPoolOptions) {
    this.size = Math.max(0, opts.size ?? 1);
    this.refillAfterMs = opts.refillAfterMs ?? 25;
    this.fill();
  }

  /** Idle supervisors ready to be taken now. */
  get available(): number {
    return this.idle.length;
  }

  /**
   * An idle supervisor for one task, its diagnostics now going to `onDiagnostic`; null when none is
   * idle (the caller starts one of its own). A replacement follows off the start path.
   */
  take(onDiagnostic: (line: string) => void): TaskSupervisor | null {
    let s = this.idle.shift();
    while (s && !s.alive) s = this.idle.shift();
    this.scheduleRefill();
    if (!s) return null;
    s.adopt(onDiagnostic);
    return s;
  }

  /** Ends every idle supervisor (and its namespace); nothing is spawned after this. */
  async close(): Promise<void> {
    this.closed = true;
    if (this.timer) clearTimeout(this.timer);
    this.timer = null;
    const idle = this.idle.splice(0);
    await Promise.all(idle.map((s) => s.close()));
  }

  /** A refill `refillAfterMs` from now; not pushed back by later takes, so a stream of starts gets one too. */
  private scheduleRefill(): void {
    if (this.closed || this.timer) return;
    this.timer = setTimeout(() => {
      this.timer = null;
      this.fill();
    }, this.refillAfterMs);
    this.timer.unref();
  }

  private fill(): void {
    while (!this.closed && this.idle.length < this.size && this.failedStarts < MAX_FAILED_STARTS) {
      const s = new TaskSupervisor(this.opts.spec, this.opts.onDiagnostic);
      this.idle.push(s);
      void s.closed.then(() => this.lost(s));
    }
  }

  /** An idle supervisor died (a taken one is its task's business). */
  private lost(s: TaskSupervisor): void {
    const at = this.idle.indexOf(s);
    if (at < 0 || this.closed) return;
    this.idle.splice(at, 1);
    if (s.ready) this.failedStarts = 0;
    else if (++this.failedStarts === MAX_FAILED_STARTS) {
      this.opts.onDiagnostic(
        `${MAX_FAILED_STARTS} pooled task supervisors in a row died before starting: tasks start their own from now on`,
      );
      return;
    }
    this.scheduleRefill();
  }
}
