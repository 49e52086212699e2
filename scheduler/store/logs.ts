/**
 * SQL for `workload_logs`: process output streamed from agents, inserted in batches; a bounded tail of
 * each workload kept (trimLogs, the count of what it dropped in `workload_log_trims`); read a page at a
 * time, oldest first, each page bounded in lines and bytes.
 */
import type { LogLine } from '../../spec/messages.js';
import type { Queryable } from './db.js';

export interface LogRow extends LogLine {
  id: number;
  workload_id: string;
}

/** The lines as the columns both inserts unnest: process, stream, run, ts, line. */
function lineColumns(lines: readonly LogLine[]): unknown[] {
  return [
    lines.map((l) => l.process),
    lines.map((l) => l.stream),
    lines.map((l) => l.run),
    lines.map((l) => l.ts),
    // PostgreSQL text cannot hold NUL.
    lines.map((l) => l.line.replaceAll('\u0000', '')),
  ];
}

export async function insertLogs(q: Queryable, workloadId: string, lines: LogLine[]): Promise<void> {
  if (lines.length === 0) return;
  await q.query(
    `INSERT INTO workload_logs (workload_id, process, stream, run, ts, line)
     SELECT $1, * FROM unnest($2::text[], $3::text[], $4::int[], $5::float8[], $6::text[])`,
    [workloadId, ...lineColumns(lines)],
  );
}

/**
 * Stores the lines of message `seq` of an agent's log stream unless that message (or a later one) was
 * stored already: a resend, whose lines are not stored again. Returns whether the message was new. One
 * statement, the stream's mark and the lines together: a coordinator frozen between two statements of a
 * transaction would hold the mark's row lock, and the coordinator the agent moved to would wait on it
 * with that agent's every message (its heartbeats too). Two coordinators given one message at once are
 * ordered by that lock; the second sees the first's mark.
 */
export async function insertLogsOnce(
  q: Queryable,
  message: { stream: string; nodeId: string; seq: number },
  workloadId: string,
  lines: LogLine[],
): Promise<boolean> {
  const rows = await q.query<{ fresh: number }>(
    `WITH mark AS (
       INSERT INTO log_streams (stream, node_id, seq) VALUES ($1, $2, $3)
       ON CONFLICT (stream) DO UPDATE SET seq = EXCLUDED.seq, updated_at = now()
       WHERE log_streams.seq < EXCLUDED.seq AND log_streams.node_id = EXCLUDED.node_id
       RETURNING 1
     ), stored AS (
       INSERT INTO workload_logs (workload_id, process, stream, run, ts, line)
       SELECT $4, * FROM unnest($5::text[], $6::text[], $7::int[], $8::float8[], $9::text[])
       WHERE EXISTS (SELECT 1 FROM mark)
       RETURNING 1
     )
     SELECT (SELECT count(*) FROM mark)::int AS fresh`,
    [message.stream, message.nodeId, message.seq, workloadId, ...lineColumns(lines)],
  );
  return (rows[0]?.fresh ?? 0) > 0;
}

/** Forgets the marks of log streams silent for `olderThanMs` (their agents long restarted or acknowledged). */
export async function deleteStaleLogStreams(q: Queryable, olderThanMs: number): Promise<number> {
  const rows = await q.query(
    `DELETE FROM log_streams WHERE updated_at < now() - $1 * interval '1 millisecond' RETURNING 1`,
    [olderThanMs],
  );
  return rows.length;
}

/**
 * Deletes a workload's lines but the newest `keep`, counting what went in `workload_log_trims`.
 * Returns how many went. Finding the cut walks the (workload_id, id) index only.
 */
export async function trimLogs(q: Queryable, workloadId: string, keep: number): Promise<number> {
  const rows = await q.query<{ n: number }>(
    `WITH cut AS (
       SELECT id FROM workload_logs WHERE workload_id = $1 ORDER BY id DESC OFFSET $2 LIMIT 1
     ), gone AS (
       DELETE FROM workload_logs WHERE workload_id = $1 AND id <= (SELECT id FROM cut) RETURNING id
     ), total AS (
       SELECT count(*)::int AS n, max(id) AS last FROM gone
     ), counted AS (
       INSERT INTO workload_log_trims (workload_id, dropped, before_id)
         SELECT $1, n, last + 1 FROM total WHERE n > 0
       ON CONFLICT (workload_id) DO UPDATE
         SET dropped = workload_log_trims.dropped + EXCLUDED.dropped,
             before_id = GREATEST(workload_log_trims.before_id, EXCLUDED.before_id)
     )
     SELECT n FROM total`,
    [workloadId, keep],
  );
  return rows[0]?.n ?? 0;
}

/** How many of a workload's older lines the coordinator dropped to keep its bound (0: none). */
export async function droppedLines(q: Queryable, workloadId: string): Promise<number> {
  const rows = await q.query<{ dropped: number }>(
    'SELECT dropped FROM workload_log_trims WHERE workload_id = $1',
    [workloadId],
  );
  return rows[0]?.dropped ?? 0;
}

export interface LogFilter {
  process?: string;
  /** Only lines with a larger id. */
  afterId?: number;
}

function whereOf(workloadId: string, f: LogFilter): { where: string; params: unknown[] } {
  const params: unknown[] = [workloadId, f.afterId ?? 0];
  let where = 'workload_id = $1 AND id > $2';
  if (f.process) {
    params.push(f.process);
    where += ` AND process = $${params.length}`;
  }
  return { where, params };
}

/**
 * Where the newest `lines` lines (after `afterId`) begin: the id to read on after, oldest first. The
 * index is walked, no line is read.
 */
export async function tailStart(
  q: Queryable,
  workloadId: string,
  f: LogFilter & { lines: number },
): Promise<number> {
  const { where, params } = whereOf(workloadId, f);
  params.push(f.lines);
  const rows = await q.query<{ id: number }>(
    `SELECT id FROM workload_logs WHERE ${where} ORDER BY id DESC OFFSET $${params.length} LIMIT 1`,
    params,
  );
  return rows[0]?.id ?? f.afterId ?? 0;
}

/**
 * The oldest lines after `afterId`: at most `limit`, and no more than `maxBytes` of line text (at least
 * one line). `more` is true when lines may follow the page.
 */
export async function readLogPage(
  q: Queryable,
  workloadId: string,
  f: LogFilter & { limit: number; maxBytes: number },
): Promise<{ rows: LogRow[]; more: boolean }> {
  const { where, params } = whereOf(workloadId, f);
  params.push(f.limit, f.maxBytes);
  const rows = await q.query<LogRow & { before: number; fetched: number }>(
    `SELECT id, workload_id, process, stream, run, ts, line, before, fetched FROM (
       SELECT *, sum(octet_length(line)) OVER (ORDER BY id) - octet_length(line) AS before,
              count(*) OVER () AS fetched FROM (
         SELECT id, workload_id, process, stream, run, ts, line FROM workload_logs WHERE ${where}
         ORDER BY id LIMIT $${params.length - 1}) l) t
     WHERE before = 0 OR before + octet_length(line) <= $${params.length}
     ORDER BY id`,
    params,
  );
  const fetched = rows[0]?.fetched ?? 0;
  return {
    rows: rows.map(({ before: _b, fetched: _f, ...r }) => r),
    more: fetched === f.limit || rows.length < fetched,
  };
}

/** The newest `limit` lines after `afterId`, oldest first, in one read (for tests and tools: unbounded in bytes). */
export async function readLogs(
  q: Queryable,
  workloadId: string,
  opts: LogFilter & { limit?: number } = {},
): Promise<LogRow[]> {
  const { where, params } = whereOf(workloadId, opts);
  params.push(opts.limit ?? 1000);
  return q.query<LogRow>(
    `SELECT * FROM (SELECT id, workload_id, process, stream, run, ts, line FROM workload_logs WHERE ${where}
       ORDER BY id DESC LIMIT $${params.length}) t ORDER BY id`,
    params,
  );
}
