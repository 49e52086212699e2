/** SQL for `workload_logs`: process output streamed from agents, inserted in batches. */
import type { LogLine } from '../../spec/messages.js';
import type { Queryable } from './db.js';

export interface LogRow extends LogLine {
  id: number;
  workload_id: string;
}

export async function insertLogs(q: Queryable, workloadId: string, lines: LogLine[]): Promise<void> {
  if (lines.length === 0) return;
  await q.query(
    `INSERT INTO workload_logs (workload_id, process, stream, run, ts, line)
     SELECT $1, * FROM unnest($2::text[], $3::text[], $4::int[], $5::float8[], $6::text[])`,
    [
      workloadId,
      lines.map((l) => l.process),
      lines.map((l) => l.stream),
      lines.map((l) => l.run),
      lines.map((l) => l.ts),
      // PostgreSQL text cannot hold NUL.
      lines.map((l) => l.line.replaceAll('\u0000', '')),
    ],
  );
}

export async function readLogs(
  q: Queryable,
  workloadId: string,
  opts: { process?: string; afterId?: number; limit?: number; oldestFirst?: boolean } = {},
): Promise<LogRow[]> {
  const params: unknown[] = [workloadId, opts.afterId ?? 0];
  let where = 'workload_id = $1 AND id > $2';
  if (opts.process) {
    params.push(opts.process);
    where += ` AND process = $${params.length}`;
  }
  params.push(opts.limit ?? 1000);
  // Following pages forward through the oldest `limit` lines after `afterId`, so nothing is skipped.
  if (opts.oldestFirst)
    return q.query<LogRow>(
      `SELECT id, workload_id, process, stream, run, ts, line FROM workload_logs WHERE ${where}
         ORDER BY id LIMIT $${params.length}`,
      params,
    );
  // The newest `limit` lines after `afterId`, returned oldest first.
  return q.query<LogRow>(
    `SELECT * FROM (SELECT id, workload_id, process, stream, run, ts, line FROM workload_logs WHERE ${where}
       ORDER BY id DESC LIMIT $${params.length}) t ORDER BY id`,
    params,
  );
}
