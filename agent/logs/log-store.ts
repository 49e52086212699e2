/**
 * One workload's log lines on disk: JSONL files in the workload's log directory, rotated by size
 * with a cap on the number of files, kept after the workload ends (pruned by age, see prune.ts).
 */
import { createReadStream } from 'node:fs';
import { appendFile, mkdir, rename, rm, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { LogLine } from '../../spec/messages.js';

export interface LogStoreOptions {
  /** A file is rotated before it would grow past this (default 4 MiB). */
  maxBytesPerFile?: number;
  /** Files kept, the current one included; the oldest rotated file is dropped beyond it (default 5). */
  maxFiles?: number;
  /** Appended lines reach the disk at most this long after `append` (default 200 ms). */
  flushIntervalMs?: number;
  /**
   * Bytes of lines waiting for the disk (queued and being written) past which new lines are dropped,
   * and counted in a line written once there is room again (default 16 MiB).
   */
  maxBacklogBytes?: number;
}

export interface LogQuery {
  /** Only lines of this process (`:task` for the supervisor's task-level lines). */
  process?: string;
  /** Only lines with `ts >= sinceTs` (ms since the epoch). */
  sinceTs?: number;
  /** At most this many lines: the most recent ones, still in chronological order. */
  limit?: number;
}

/** The current file; rotated files are `log.1.jsonl` (newest) … `log.<maxFiles-1>.jsonl` (oldest). */
export const CURRENT_FILE = 'log.jsonl';
const rotatedFile = (i: number): string => `log.${i}.jsonl`;

/** Flush early when this much is pending, so a chatty process does not pile up memory. */
const FLUSH_BYTES = 256 * 1024;

export class WorkloadLogStore {
  private readonly maxBytes: number;
  private readonly maxFiles: number;
  private readonly flushMs: number;
  private pending: string[] = [];
  private pendingBytes = 0;
  private readonly maxBacklog: number;
  /** Bytes appended and not yet on disk: pending, and in batches being written. */
  private backlog = 0;
  /** Lines dropped since the last one kept, for lack of room in the backlog. */
  private dropped = 0;
  private timer: NodeJS.Timeout | null = null;
  /** Writes are serialised through this chain. */
  private writing: Promise<void> = Promise.resolve();
  private currentSize: number | null = null;
  private closed = false;

  constructor(
    readonly dir: string,
    opts: LogStoreOptions = {},
  ) {
    this.maxBytes = opts.maxBytesPerFile ?? 4 * 1024 * 1024;
    this.maxFiles = opts.maxFiles ?? 5;
    this.flushMs = opts.flushIntervalMs ?? 200;
    this.maxBacklog = opts.maxBacklogBytes ?? 16 * 1024 * 1024;
    if (!Number.isFinite(this.maxBytes) || this.maxBytes < 1) {
      throw new Error(`maxBytesPerFile must be a positive number of bytes, got ${opts.maxBytesPerFile}`);
    }
    if (!Number.isInteger(this.maxFiles) || this.maxFiles < 1) {
      throw new Error(`maxFiles must be an integer of at least 1 (the current file), got ${opts.maxFiles}`);
    }
    // The directory is made with the first write, off the caller's path (a workload's start).
  }

  /**
   * Queues one line; it is written within flushIntervalMs, or on flush()/read()/close(). While more than
   * maxBacklogBytes wait for the disk (a process writing faster than the disk takes it: `yes`, `cat
   * /dev/urandom`), lines are dropped and then counted in a line of their own: the agent's memory does
   * not grow with the output (an attacker pass saw 3.3 GB in two minutes).
   */
  append(line: LogLine): void {
    if (this.closed)
      throw new Error(`log store ${this.dir} is closed; lines cannot be appended after close()`);
    const text = `${JSON.stringify(line)}\n`;
    const bytes = Buffer.byteLength(text);
    if (this.backlog + bytes > this.maxBacklog) {
      this.dropped++;
      this.timer ??= setTimeout(() => this.flush().catch(() => {}), this.flushMs);
      return;
    }
    this.noteDropped(line.ts);
    this.queue(text, bytes);
  }

  /** Queues the line that counts the lines dropped since the last one kept, if any were. */
  private noteDropped(ts: number): void {
    if (this.dropped === 0) return;
    const notice = `${JSON.stringify({
      process: 'mxc',
      stream: 'system',
      run: 0,
      ts,
      line: `${this.dropped} line(s) of output were not kept: the workload wrote them faster than the disk took them`,
    } satisfies LogLine)}\n`;
    this.dropped = 0;
    this.queue(notice, Buffer.byteLength(notice));
  }

  private queue(text: string, bytes: number): void {
    this.pending.push(text);
    this.pendingBytes += bytes;
    this.backlog += bytes;
    // Background flushes swallow errors: flush() already reported them as a warning.
    if (this.pendingBytes >= FLUSH_BYTES) this.flush().catch(() => {});
    else this.timer ??= setTimeout(() => this.flush().catch(() => {}), this.flushMs);
  }

  /** Writes everything appended so far; resolves once it is on disk, rejects if this batch could not be written. */
  flush(): Promise<void> {
    if (this.timer) clearTimeout(this.timer);
    this.timer = null;
    this.noteDropped(Date.now());
    const lines = this.pending;
    const bytes = this.pendingBytes;
    this.pending = [];
    this.pendingBytes = 0;
    if (lines.length === 0) return this.writing;
    const attempt = this.writing
      .then(() => this.write(lines))
      .finally(() => {
        this.backlog -= bytes;
      });
    // One failed batch must not wedge the chain for the ones after it.
    this.writing = attempt.catch((err: unknown) => {
      process.emitWarning(`log store ${this.dir}: ${lines.length} log lines lost: ${String(err)}`);
    });
    return attempt;
  }

  /** Lines matching `query`, oldest first, from all kept files. */
  async read(query: LogQuery = {}): Promise<LogLine[]> {
    await this.flush();
    const limit = query.limit ?? Number.POSITIVE_INFINITY;
    if (limit <= 0) return [];
    let out: LogLine[] = [];
    for (let i = this.maxFiles - 1; i >= 0; i--) {
      const file = join(this.dir, i === 0 ? CURRENT_FILE : rotatedFile(i));
      for await (const line of readJsonl(file)) {
        if (query.process !== undefined && line.process !== query.process) continue;
        if (query.sinceTs !== undefined && line.ts < query.sinceTs) continue;
        out.push(line);
        // Keep only the tail, trimming in batches rather than on every line.
        if (out.length >= 2 * limit) out = out.slice(out.length - limit);
      }
    }
    return out.length > limit ? out.slice(out.length - limit) : out;
  }

  /** Writes what is pending and refuses further appends. The files stay. */
  async close(): Promise<void> {
    const flushed = this.flush();
    this.closed = true;
    await flushed;
  }

  private async write(lines: string[]): Promise<void> {
    const file = join(this.dir, CURRENT_FILE);
    if (this.currentSize === null) {
      await mkdir(this.dir, { recursive: true });
      this.currentSize = await stat(file)
        .then((s) => s.size)
        .catch(() => 0);
    }
    let batch = '';
    let batchBytes = 0;
    for (const text of lines) {
      const bytes = Buffer.byteLength(text);
      if (this.currentSize + batchBytes + bytes > this.maxBytes && this.currentSize + batchBytes > 0) {
        if (batch) await appendFile(file, batch);
        batch = '';
        batchBytes = 0;
        await this.rotate();
      }
      batch += text;
      batchBytes += bytes;
    }
    if (batch) await appendFile(file, batch);
    this.currentSize += batchBytes;
  }

  private async rotate(): Promise<void> {
    const path = (i: number): string => join(this.dir, i === 0 ? CURRENT_FILE : rotatedFile(i));
    await rm(path(this.maxFiles - 1), { force: true });
    for (let i = this.maxFiles - 2; i >= 0; i--) {
      await rename(path(i), path(i + 1)).catch((err: NodeJS.ErrnoException) => {
        if (err.code !== 'ENOENT') throw err;
      });
    }
    this.currentSize = 0;
  }
}

/** The valid log lines of one JSONL file; a missing file is empty, a torn last line (crash) is skipped. */
async function* readJsonl(file: string): AsyncGenerator<LogLine> {
  const stream = createReadStream(file, { encoding: 'utf8' });
  const opened = await new Promise<boolean>((resolve) => {
    stream.once('open', () => resolve(true));
    stream.once('error', () => resolve(false));
  });
  if (!opened) return;
  for await (const text of createInterface({ input: stream, crlfDelay: Number.POSITIVE_INFINITY })) {
    if (!text) continue;
    let value: unknown;
    try {
      value = JSON.parse(text);
    } catch {
      continue;
    }
    const parsed = LogLine.safeParse(value);
    if (parsed.success) yield parsed.data;
  }
}
