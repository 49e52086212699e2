/**
 * What a due cron job does now, as a pure function of its schedule, its stored next run, whether a
 * previous run is alive and the time: the runs that fell due (several when no coordinator ran for a
 * while), one launch for the latest of them under the collision policy (KILL_EXISTING stops the live
 * run, CANCEL_NEW skips this one, RUN_OVERLAP lets both run), and the next run. Missed runs are not
 * replayed one by one (as Nomad's periodic dispatcher and Aurora's cron do): they are reported.
 */
import { nextRun, parseCron, runsDue } from '../../spec/cron.js';

export type CollisionPolicy = 'KILL_EXISTING' | 'CANCEL_NEW' | 'RUN_OVERLAP';

export interface CronJobState {
  schedule: string;
  policy: CollisionPolicy;
  /** The run the store says is next. */
  nextRunAt: Date;
  /** A previous run still has live workloads. */
  previousAlive: boolean;
}

export interface CronStep {
  /** Nothing is due yet. */
  due: boolean;
  /** The run this step is for (the latest one due). */
  runAt: Date | null;
  /** Earlier runs that fell due while no coordinator launched them. */
  missed: Date[];
  /** launch: new workloads; kill_and_launch: stop the live run first; skip: CANCEL_NEW with a live run. */
  action: 'none' | 'launch' | 'kill_and_launch' | 'skip';
  /** What the store keeps as the next run. */
  next: Date;
}

/** What a run does under the collision policy, with or without a previous run still alive. */
export function collisionAction(
  policy: CollisionPolicy,
  previousAlive: boolean,
): 'launch' | 'kill_and_launch' | 'skip' {
  if (!previousAlive || policy === 'RUN_OVERLAP') return 'launch';
  return policy === 'CANCEL_NEW' ? 'skip' : 'kill_and_launch';
}

export function cronStep(job: CronJobState, now: Date): CronStep {
  const c = parseCron(job.schedule);
  const runs = runsDue(c, job.nextRunAt, now, 1000);
  if (runs.length === 0) return { due: false, runAt: null, missed: [], action: 'none', next: job.nextRunAt };
  const runAt = runs.at(-1)!;
  const action = collisionAction(job.policy, job.previousAlive);
  return { due: true, runAt, missed: runs.slice(0, -1), action, next: nextRun(c, now) };
}
