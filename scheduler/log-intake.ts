/**
 * Where agents' log lines enter the coordinator's database: which lines of a workload are stored (a lost
 * workload's only up to the moment it was declared lost) and the bound on each workload's log (the
 * newest `keep` lines; older ones are deleted every `keep / 10` lines stored here).
 */
import type { LogLine } from '../spec/messages.js';
import type { Db, Queryable } from './store/db.js';
import * as logs from './store/logs.js';
import { getWorkload, type WorkloadRow } from './store/workloads.js';

/** The newest lines of a workload's log kept when MXC_LOG_LINES_KEPT is unset. */
export const DEFAULT_LOG_LINES_KEPT = 100_000;

/** Workloads counted at once; past that the counts start again (a count lost only delays a trim). */
const MAX_COUNTED = 50_000;

export class LogIntake {
  /** Lines stored here per workload since its last trim. */
  private readonly sinceTrim = new Map<string, number>();
  private readonly trimEvery: number;

  constructor(
    private readonly db: Db,
    readonly keep = DEFAULT_LOG_LINES_KEPT,
  ) {
    this.trimEvery = Math.max(100, Math.ceil(keep / 10));
  }

  /**
   * Stores the lines an agent sent for a workload on its node; returns how many were stored. Lines of
   * an ended workload are kept (a process prints, then exits, and its end may arrive before its last
   * lines), but a lost one's only up to when it was declared lost: the coordinator gave up on it and
   * replaced it, so what its process says later is not the workload's. A workload's log holds at most
   * `keep + keep / 10` lines (per coordinator it reached; each trims what it stored).
   */
  async take(w: Pick<WorkloadRow, 'id' | 'status' | 'finished_at'>, lines: LogLine[]): Promise<number> {
    const n = await this.insert(this.db, w, lines);
    await this.stored(w.id, n);
    return n;
  }

  /**
   * Stores the lines as `take` does, through `q` (the transaction that also records a numbered message as
   * stored, see takeNumbered); returns how many. `stored` counts them once that transaction committed.
   */
  private async insert(
    q: Queryable,
    w: Pick<WorkloadRow, 'id' | 'status' | 'finished_at'>,
    lines: LogLine[],
  ): Promise<number> {
    const lostAt = w.status === 'lost' ? (w.finished_at?.getTime() ?? 0) : Number.POSITIVE_INFINITY;
    const kept = lostAt === Number.POSITIVE_INFINITY ? lines : lines.filter((l) => l.ts <= lostAt);
    if (kept.length > 0) await logs.insertLogs(q, w.id, kept);
    return kept.length;
  }

  /**
   * Stores the lines of a numbered message (`seq` of the agent's log `stream`, see LOG_STREAM_HEADER) in
   * one transaction with the stream's mark, so a message sent again (its first coordinator died after
   * reading it, or after committing it but before acknowledging) is stored once. Returns how many lines
   * were stored (0 for a resend); the message is committed, and may be acknowledged, once it resolves.
   */
  async takeNumbered(
    nodeId: string,
    stream: string,
    seq: number,
    workloadId: string,
    lines: LogLine[],
  ): Promise<number> {
    const n = await this.db.tx(async (q) => {
      if (!(await logs.advanceLogStream(q, stream, nodeId, seq))) return 0;
      const w = await getWorkload(q, workloadId);
      if (!w || w.node_id !== nodeId) return 0;
      return this.insert(q, w, lines);
    });
    await this.stored(workloadId, n);
    return n;
  }

  /** Counts `n` lines stored for a workload and trims its log when that many are due. */
  private async stored(id: string, n: number): Promise<void> {
    if (n === 0) return;
    const since = (this.sinceTrim.get(id) ?? 0) + n;
    if (since < this.trimEvery) {
      if (this.sinceTrim.size >= MAX_COUNTED && !this.sinceTrim.has(id)) this.sinceTrim.clear();
      this.sinceTrim.set(id, since);
      return;
    }
    // Awaited: an agent that floods a workload's log is read no faster than its lines are trimmed.
    this.sinceTrim.delete(id);
    await logs.trimLogs(this.db, id, this.keep);
  }
}
