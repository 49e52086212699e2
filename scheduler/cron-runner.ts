/**
 * Launching the cron jobs that are due, applying each job's collision policy to a previous run
 * that is still alive.
 */
import type { Logger } from 'pino';
import { nextRun, parseCron } from '../spec/cron.js';
import type { Db, Queryable } from './store/db.js';
import * as jobs from './store/jobs.js';
import * as wl from './store/workloads.js';
import { newWorkloads, stopJobWorkloads } from './workload-changes.js';

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
      if (!spec?.cron_schedule) {
        await jobs.setNextRun(q, job.id, null);
        continue;
      }
      await jobs.setNextRun(q, job.id, nextRun(parseCron(spec.cron_schedule), now));
      const live = await wl.listWorkloads(q, {
        jobId: job.id,
        status: ['pending', 'starting', 'running'],
        limit: 100_000,
      });
      if (live.length > 0 && spec.cron_collision_policy === 'CANCEL_NEW') {
        log.info({ job: job.key }, 'cron run skipped: the previous run is still going (CANCEL_NEW)');
        continue;
      }
      if (live.length > 0 && spec.cron_collision_policy === 'KILL_EXISTING') {
        stops.push(...(await stopJobWorkloads(q, job.id, 'a new cron run replaces it (KILL_EXISTING)')));
      }
      const created = newWorkloads(job.id, job.current_version, spec, 0);
      await wl.insertWorkloads(q, created, `cron run for ${now.toISOString().slice(0, 16)}Z`);
      launched++;
    }
    return { launched, stops };
  });
}
