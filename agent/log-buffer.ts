/**
 * Workload log lines waiting to be sent to the coordinator, in memory and bounded. While the
 * coordinator is unreachable the queue would otherwise grow without limit; past the bound the
 * oldest queued lines of the workload that writes are dropped (a chatty workload loses its own
 * lines, not the others'), and the next send tells the coordinator how many. Every line is also in
 * the workload's log on the agent's disk (logs/log-store.ts), which drops nothing.
 */
import type { LogLine } from '../spec/messages.js';

export const DEFAULT_LOG_BUFFER_LINES = 20_000;

export class LogBuffer {
  private readonly queues = new Map<string, LogLine[]>();
  private readonly dropped = new Map<string, number>();
  private total = 0;

  constructor(readonly maxLines = DEFAULT_LOG_BUFFER_LINES) {
    if (!Number.isInteger(maxLines) || maxLines < 1)
      throw new Error(`the log buffer holds at least 1 line, got ${maxLines}`);
  }

  /** Queues a line; returns how many lines that workload has queued. */
  push(id: string, line: LogLine): number {
    let q = this.queues.get(id);
    if (!q) {
      q = [];
      this.queues.set(id, q);
    }
    q.push(line);
    this.total++;
    if (this.total > this.maxLines) {
      q.shift();
      this.total--;
      this.dropped.set(id, (this.dropped.get(id) ?? 0) + 1);
    }
    return q.length;
  }

  /** Lines queued over all workloads. */
  get size(): number {
    return this.total;
  }

  /**
   * Takes every queued line, per workload, with a `system` line first for each workload that lost
   * lines saying how many.
   */
  drain(now = Date.now()): [string, LogLine[]][] {
    const out: [string, LogLine[]][] = [];
    for (const [id, lines] of this.queues) {
      const lost = this.dropped.get(id);
      if (lost) {
        lines.unshift({
          process: 'mxc',
          stream: 'system',
          run: 0,
          ts: lines[0]?.ts ?? now,
          line:
            `${lost} log line(s) were not sent while the coordinator was unreachable (the agent keeps at most ` +
            `${this.maxLines} for it); the agent's own log of this workload has them`,
        });
      }
      out.push([id, lines]);
    }
    this.queues.clear();
    this.dropped.clear();
    this.total = 0;
    return out;
  }
}
