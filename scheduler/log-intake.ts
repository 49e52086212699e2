/**
 * Where agents' log lines enter the coordinator's database: which lines of a workload are stored (a lost
 * workload's only up to the moment it was declared lost) and the bound on each workload's log (the
 * newest `keep` lines; older ones are deleted every `keep / 10` lines stored here).
 */
import type { LogLine } from '../spec/messages.js';
import type { Queryable } from './store/db.js';
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
    private readonly db: Queryable,
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
    const kept = this.kept(w, lines);
    if (kept.length > 0) await logs.insertLogs(this.db, w.id, kept);
    await this.stored(w.id, kept.length);
    return kept.length;
  }

  /** The lines of `lines` a workload keeps: all, but a lost one's only up to when it was declared lost. */
  private kept(w: Pick<WorkloadRow, 'status' | 'finished_at'>, lines: LogLine[]): LogLine[] {
    const lostAt = w.status === 'lost' ? (w.finished_at?.getTime() ?? 0) : Number.POSITIVE_INFINITY;
    return lostAt === Number.POSITIVE_INFINITY ? lines : lines.filter((l) => l.ts <= lostAt);
  }

  /**
   * Stores the lines of a numbered message (`seq` of the agent's log `stream`, see LOG_STREAM_HEADER)
   * with the stream's mark, so a message sent again (its first coordinator died after reading it, or
   * after committing it but before acknowledging) is stored once. Returns how many lines were stored (0
   * for a resend); the message is committed, and may be acknowledged, once it resolves.
   */
  async takeNumbered(
    message: { stream: string; nodeId: string; seq: number },
    workloadId: string,
    lines: LogLine[],
  ): Promise<number> {
    const w = await getWorkload(this.db, workloadId);
    // Not this node's workload: nothing to store, but the number is taken (the message is handled).
    const kept = w && w.node_id === message.nodeId ? this.kept(w, lines) : [];
    const fresh = await logs.insertLogsOnce(this.db, message, workloadId, kept);
    const n = fresh ? kept.length : 0;
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
