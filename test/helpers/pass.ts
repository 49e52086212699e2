/** What a scheduling pass run directly by a test needs: a real database, specs read back from it, starts collected. */
import type { SchedulerState, StartedWorkload } from '../../scheduler/placement.js';
import type { Db } from '../../scheduler/store/db.js';
import * as jobs from '../../scheduler/store/jobs.js';
import { testLogger } from './logger.js';

export function passDeps(db: Db, state: SchedulerState, started: StartedWorkload[] = []) {
  return {
    db,
    log: testLogger(),
    strategy: 'spread' as const,
    state,
    specOf: async (jobId: string, version: number) =>
      (await jobs.getJobVersion(db, jobId, version))?.spec ?? null,
    started: (ws: StartedWorkload[]) => {
      started.push(...ws);
    },
  };
}
