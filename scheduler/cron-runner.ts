/**
 * Launching the cron jobs that are due: the decision is core/cron's `cronStep`; this applies it in
 * one transaction and records the run (jobs.last_run_at) and the next one.
 */
import type { Logger } from 'pino';
import { cronStep } from './core/cron.js';
import type { Db, Queryable } from './store/db.js';
import * as jobs from './store/jobs.js';
import * as wl from './store/workloads.js';
import { newWorkloads, stopJobWorkloads } from './workload-changes.js';

/**
 * A run launched this long after its time is said to be late (logged, and in its workloads' event): the
 * leader looks every second, and a fail-over takes a lease and a few retries, well under a minute.
 */
export const LATE_RUN_MS = 60_000;

/**
 * Launches the cron jobs that are due in one transaction: each run places `instances` new workloads,
 * after applying the job's collision policy to a previous run still alive (KILL_EXISTING stops it,
 * CANCEL_NEW skips this run, RUN_OVERLAP lets both run). Returns the workloads an agent must stop.
 */
export async function launchDueCronJobs(
  db: Db,
  log: Logger,
  now: Date,
  fence: (q: Queryable) => Promise<void> = async () => {},
): Promise<{ launched: number; stops: wl.WorkloadRow[] }> {
  return db.tx(async (q) => {
    await fence(q);
    let launched = 0;
    const stops: wl.WorkloadRow[] = [];
    for (const job of await jobs.dueCronJobs(q, now)) {
      const spec = (await jobs.getJobVersion(q, job.id, job.current_version))?.spec;
      if (!spec?.cron_schedule || !job.next_run_at) {
        await jobs.setNextRun(q, job.id, null);
        continue;
      }
      const live = await wl.listWorkloads(q, {
        jobId: job.id,
        status: ['pending', 'starting', 'running'],
        limit: 100_000,
      });
      const step = cronStep(
        {
          schedule: spec.cron_schedule,
          policy: spec.cron_collision_policy,
          nextRunAt: job.next_run_at,
          previousAlive: live.length > 0,
        },
        now,
      );
      if (!step.due) continue;
      await jobs.setCronRun(q, job.id, step.runAt, step.next);
      const lateS = Math.round((now.getTime() - step.runAt!.getTime()) / 1000);
      const late = lateS * 1000 >= LATE_RUN_MS;
      if (step.missed.length > 0) {
        log.warn(
          {
            job: job.key,
            missed: step.missed.length,
            first: step.missed[0]!.toISOString(),
            last: step.missed.at(-1)!.toISOString(),
            ...(late ? { run: step.runAt!.toISOString(), late_s: lateS } : {}),
            policy: spec.cron_collision_policy,
          },
          'cron runs fell due while no coordinator launched them; launching once for the latest',
        );
      } else if (late) {
        // The only run due, taken late (every coordinator down, or none leading, at its time).
        log.warn(
          { job: job.key, run: step.runAt!.toISOString(), late_s: lateS, policy: spec.cron_collision_policy },
          'a cron run fell due while no coordinator launched it; launching it late',
        );
      }
      if (step.action === 'skip') {
        log.info({ job: job.key }, 'cron run skipped: the previous run is still going (CANCEL_NEW)');
        continue;
      }
      if (step.action === 'kill_and_launch') {
        stops.push(...(await stopJobWorkloads(q, job.id, 'a new cron run replaces it (KILL_EXISTING)')));
      }
      const created = newWorkloads(job.id, job.current_version, spec, 0);
      const missed = step.missed.length ? `; ${step.missed.length} earlier run(s) missed` : '';
      await wl.insertWorkloads(
        q,
        created,
        `cron run for ${step.runAt!.toISOString().slice(0, 16)}Z${late ? `, launched ${lateS} s late` : ''}${missed}`,
      );
      launched++;
    }
    return { launched, stops };
  });
}
