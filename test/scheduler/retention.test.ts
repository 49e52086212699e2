/** Retention (Nomad's core GC) on PostgreSQL and PGlite: what goes, what stays, and that events and logs go with it. */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { recordSubmission } from '../../scheduler/job-submit.js';
import * as logs from '../../scheduler/store/logs.js';
import { deleteExpiredWorkloads } from '../../scheduler/store/retention.js';
import * as wl from '../../scheduler/store/workloads.js';
import { JobSpec } from '../../spec/job.js';
import { plainJob } from '../helpers/coordinator.js';
import { ENGINES, freshDb } from '../helpers/db.js';

const HOUR = 3_600_000;
const now = new Date('2026-11-21T12:00:00Z');

describe.each(ENGINES)('retention on %s', (engine) => {
  let db: Awaited<ReturnType<typeof freshDb>>;
  let jobId: string;
  beforeAll(async () => {
    db = await freshDb(engine);
    jobId = (await recordSubmission(db, 'test/www/prod/gc', JobSpec.parse(plainJob({ name: 'gc' })), [])).job
      .id;
    await db.query('DELETE FROM workloads');
    await db.query('DELETE FROM workload_events');
  });
  afterAll(async () => db?.close());

  /** A workload of `instance` created `ageH` hours ago, in `status`, ended `endedH` hours ago. */
  async function workload(id: string, instance: number, status: string, ageH: number, endedH: number | null) {
    await wl.insertWorkloads(
      db,
      [
        {
          id,
          job_id: jobId,
          job_version: 1,
          instance,
          cpu: 1,
          memory_mb: 1,
          disk_mb: 1,
          isolation: 'process',
          restarts: 0,
        },
      ],
      'test',
    );
    await db.query('UPDATE workloads SET status = $2, created_at = $3, finished_at = $4 WHERE id = $1', [
      id,
      status,
      new Date(now.getTime() - ageH * HOUR).toISOString(),
      endedH === null ? null : new Date(now.getTime() - endedH * HOUR).toISOString(),
    ]);
    await logs.insertLogs(db, id, [{ process: 'p', stream: 'stdout', run: 1, ts: 1, line: `${id} says hi` }]);
  }

  it('deletes ended workloads past the period or beyond the per-job count, with their events and logs, keeping each instance newest', async () => {
    // Instance 0: three old attempts, the newest of which ended long ago (kept: newest of its instance).
    await workload('i0-a', 0, 'failed', 300, 299);
    await workload('i0-b', 0, 'failed', 250, 249);
    await workload('i0-c', 0, 'stopped', 200, 199);
    // Instance 1: an old failed attempt, replaced by a running one (the failed one goes: past the period).
    await workload('i1-a', 1, 'failed', 200, 199);
    await workload('i1-b', 1, 'running', 199, null);
    // Instance 2: recent failures; the per-job count (2) drops the oldest ended ones first.
    await workload('i2-a', 2, 'failed', 5, 4);
    await workload('i2-b', 2, 'failed', 4, 3);
    await workload('i2-c', 2, 'lost', 3, 2);
    await workload('i2-d', 2, 'pending', 1, null);

    const n = await deleteExpiredWorkloads(db, { periodMs: 168 * HOUR, perJob: 2 }, now);
    const left = (await db.query<{ id: string }>('SELECT id FROM workloads ORDER BY id')).map((r) => r.id);
    expect(left).toEqual(['i0-c', 'i1-b', 'i2-b', 'i2-c', 'i2-d']);
    expect(n).toBe(4);
    const orphans = await db.query<{ n: number }>(
      `SELECT (SELECT count(*) FROM workload_events WHERE workload_id NOT IN (SELECT id FROM workloads))
            + (SELECT count(*) FROM workload_logs WHERE workload_id NOT IN (SELECT id FROM workloads)) AS n`,
    );
    expect(orphans[0]!.n).toBe(0);
    expect((await db.query('SELECT 1 FROM workload_logs WHERE workload_id = $1', ['i2-b'])).length).toBe(1);
    // Nothing more to do: a second pass deletes nothing, and live workloads are never touched.
    expect(await deleteExpiredWorkloads(db, { periodMs: 168 * HOUR, perJob: 2 }, now)).toBe(0);
    expect(await deleteExpiredWorkloads(db, { periodMs: 0, perJob: 100 }, now)).toBe(2);
    const live = (await db.query<{ id: string }>('SELECT id FROM workloads ORDER BY id')).map((r) => r.id);
    expect(live).toEqual(['i0-c', 'i1-b', 'i2-d']);
  });
});
