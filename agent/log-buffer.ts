/**
 * Workload log lines waiting to be sent to the coordinator, in memory and bounded by lines and by
 * bytes. While the coordinator is unreachable the queue would otherwise grow without limit; past a
 * bound the oldest queued lines of the workload that writes are dropped (a chatty workload loses its
 * own lines, not the others'), and the next send tells the coordinator how many. Every line is also in
 * the workload's log on the agent's disk (logs/log-store.ts), which drops nothing. Also cuts what is
 * sent into frames the coordinator takes (`logFrames`).
 */
import type { LogLine } from '../spec/messages.js';

export const DEFAULT_LOG_BUFFER_LINES = 20_000;
/** Bytes of queued lines (as `lineBytes` counts them): 20,000 lines of 16 KiB would be ~2 GB. */
export const DEFAULT_LOG_BUFFER_BYTES = 64 * 1024 * 1024;

/**
 * The most bytes a line can take in a `logs` message's JSON: 6 a UTF-16 unit (`\u001b`, a lone
 * surrogate) for its text and process name, plus the object's keys, stream and numbers.
 */
export function lineBytes(line: LogLine): number {
  return 6 * (line.line.length + line.process.length) + 128;
}

/**
 * A workload's lines as frames of at most `maxLines` lines and `maxBytes` bytes of lines (by
 * `lineBytes`), in order. The coordinator closes the socket on a message over its payload limit,
 * and a frame cut by count alone (5,000 lines of 16 KiB) was ~80 MiB.
 */
export function logFrames(lines: readonly LogLine[], maxLines: number, maxBytes: number): LogLine[][] {
  const frames: LogLine[][] = [];
  let frame: LogLine[] = [];
  let bytes = 0;
  for (const line of lines) {
    const b = lineBytes(line);
    if (frame.length > 0 && (frame.length >= maxLines || bytes + b > maxBytes)) {
      frames.push(frame);
      frame = [];
      bytes = 0;
    }
    frame.push(line);
    bytes += b;
  }
  if (frame.length > 0) frames.push(frame);
  return frames;
}

export class LogBuffer {
  private readonly queues = new Map<string, LogLine[]>();
  private readonly dropped = new Map<string, number>();
  private total = 0;
  private totalBytes = 0;

  constructor(
    readonly maxLines = DEFAULT_LOG_BUFFER_LINES,
    readonly maxBytes = DEFAULT_LOG_BUFFER_BYTES,
  ) {
    if (!Number.isInteger(maxLines) || maxLines < 1)
      throw new Error(`the log buffer holds at least 1 line, got ${maxLines}`);
  }

  /** Queues a line. */
  push(id: string, line: LogLine): void {
    let q = this.queues.get(id);
    if (!q) {
      q = [];
      this.queues.set(id, q);
    }
    q.push(line);
    this.total++;
    this.totalBytes += lineBytes(line);
    // Within both bounds before this line: dropping this workload's oldest lines (this one last) is enough.
    while (q.length > 0 && (this.total > this.maxLines || this.totalBytes > this.maxBytes)) {
      this.totalBytes -= lineBytes(q.shift()!);
      this.total--;
      this.dropped.set(id, (this.dropped.get(id) ?? 0) + 1);
    }
  }

  /**
   * Puts lines taken earlier back before the workload's queued ones (sent to a coordinator that never
   * confirmed them); past a bound the oldest go first, counted as dropped.
   */
  requeue(id: string, lines: readonly LogLine[]): void {
    if (lines.length === 0) return;
    const q = [...lines, ...(this.queues.get(id) ?? [])];
    this.queues.set(id, q);
    this.total += lines.length;
    for (const line of lines) this.totalBytes += lineBytes(line);
    while (q.length > 0 && (this.total > this.maxLines || this.totalBytes > this.maxBytes)) {
      this.totalBytes -= lineBytes(q.shift()!);
      this.total--;
      this.dropped.set(id, (this.dropped.get(id) ?? 0) + 1);
    }
  }

  /** Lines queued over all workloads. */
  get size(): number {
    return this.total;
  }

  /** Their bytes, as `lineBytes` counts them. */
  get bytes(): number {
    return this.totalBytes;
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
            `${lost} log line(s) were not sent: the coordinator was unreachable or took them slower than they came (the agent keeps at most ` +
            `${this.maxLines} lines and ${this.maxBytes >> 20} MiB for it); the agent's own log of this workload (its last 20 MiB, on the agent) may still have them`,
        });
      }
      out.push([id, lines]);
    }
    this.queues.clear();
    this.dropped.clear();
    this.total = 0;
    this.totalBytes = 0;
    return out;
  }
}
