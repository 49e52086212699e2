/**
 * Recording a submitted job: a new job in one statement (its workloads pending, or already placed when
 * the submit planned them: see SubmitPlacement); for a known job, one transaction that adds a version
 * when the spec changed, then either starts a rolling update or stops the old workloads and creates the
 * new ones (none for a cron job).
 */
import { createHash, randomUUID } from 'node:crypto';
import { nextRun, parseCron } from '../spec/cron.js';
import type { JobSpec } from '../spec/job.js';
import type { SubmitPlan } from './placed-submit.js';
import { startRollout } from './rollout.js';
import * as closures from './store/closures.js';
import type { Db } from './store/db.js';
import * as jobs from './store/jobs.js';
import { insertPlacedJob, type PlacedJob } from './store/placed-insert.js';
import * as updates from './store/updates.js';
import * as wl from './store/workloads.js';
import { newWorkloads, stopJobWorkloads } from './workload-changes.js';

export interface RecordedSubmission {
  job: jobs.JobRow;
  version: number;
  changed: boolean;
  workloads: string[];
  /** Workloads an agent must be told to stop. */
  stopped: wl.WorkloadRow[];
  /** A rolling update was started instead of replacing everything at once. */
  rolling: boolean;
  /** New workloads the submit's own insert placed (see SubmitPlacement), in order. */
  placed: PlacedOnSubmit[];
  /** How many its plan placed: more than `placed` when the insert's guard refused some. */
  planned: number;
  /** The refreshes of the view the plan was made on (ClusterView.took). */
  viewReads?: number;
}

/** A workload a submit's insert placed: it is starting on `nodeId`, queued in outbox row `commandId`. */
export interface PlacedOnSubmit {
  workload: wl.NewWorkload;
  nodeId: string;
  commandId: number;
}

/**
 * A submit that places a new job's workloads in its own insert (placed-submit.ts): `plan` is called with
 * the workloads before the insert is sent; when it returns null the job is inserted pending.
 */
export interface SubmitPlacement {
  plan: (created: readonly wl.NewWorkload[]) => SubmitPlan | null;
  /** The deciding coordinator (no NOTIFY for the agents it holds). */
  holder?: string;
  /** The placed insert failed: the job is then inserted pending, as without a plan. */
  failed?: (err: unknown) => void;
}

/** A new job's one-statement insert, as it is sent (before it commits). */
export interface NewJobInsert {
  jobId: string;
  /** Its workloads, all pending. */
  workloads: readonly wl.NewWorkload[];
  /** Whether the job was inserted (false: the key was known, or the insert failed); never rejects. */
  inserted: Promise<boolean>;
}

/**
 * Stores a validated spec under `key`; an identical spec of an active job is a no-op. `onNewJobInsert`
 * is told of the one-statement insert of a new job as soon as it is sent, so a scheduling pass can read
 * the cluster while it commits; with `placement`, a new job whose workloads its plan places is inserted
 * with them placed instead (no pass, and `onNewJobInsert` is not called).
 */
export async function recordSubmission(
  db: Db,
  key: string,
  spec: JobSpec,
  closure: closures.ClosurePath[],
  /** When it is submitted (the coordinator's clock): a cron job's first run is the next after it. */
  now: Date = new Date(),
  onNewJobInsert?: (insert: NewJobInsert) => void,
  placement?: SubmitPlacement,
): Promise<RecordedSubmission> {
  const specJson = JSON.stringify(spec);
  const hash = createHash('sha256').update(specJson).digest('hex');
  const nextRunAt = spec.cron_schedule ? nextRun(parseCron(spec.cron_schedule), now) : null;
  // A new job is one statement, committed on its own: no transaction to open, nothing to stop.
  const id = randomUUID();
  const created = spec.cron_schedule ? [] : newWorkloads(id, 1, spec, 0);
  const plan = created.length > 0 ? (placement?.plan(created) ?? null) : null;
  if (plan) {
    let r: PlacedJob | null | undefined;
    try {
      r = await insertPlacedJob(db, {
        id,
        key,
        cluster: spec.cluster,
        role: spec.role,
        environment: spec.environment,
        name: spec.name,
        specJson,
        specHash: hash,
        closure,
        demand: created[0]!,
        workloads: created.map((w, i) => ({ id: w.id, instance: w.instance, nodeId: plan.nodeOf[i]! })),
        nodes: plan.nodes,
        reason: 'submitted (version 1)',
        holder: placement?.holder,
      });
    } catch (err) {
      // Nothing was written: the job goes in pending, and a pass places it (or says why not).
      placement?.failed?.(err);
    }
    if (r) {
      return {
        job: r.job,
        version: 1,
        changed: true,
        workloads: created.map((w) => w.id),
        stopped: [],
        rolling: false,
        placed: r.placed.map((p) => ({
          workload: created[p.index]!,
          nodeId: p.nodeId,
          commandId: p.commandId,
        })),
        planned: plan.nodeOf.filter((n) => n !== null).length,
        viewReads: plan.reads,
      };
    }
    if (r === null) return recordKnownJob(db, key, spec, closure, hash, nextRunAt);
  }
  const inserting = jobs.insertNewJob(db, {
    id,
    key,
    spec,
    specHash: hash,
    closure,
    workloads: created,
    reason: 'submitted (version 1)',
    nextRunAt,
  });
  onNewJobInsert?.({
    jobId: id,
    workloads: created,
    inserted: inserting.then(
      (row) => row !== null,
      () => false,
    ),
  });
  const inserted = await inserting;
  if (inserted) {
    return {
      job: inserted,
      version: 1,
      changed: true,
      workloads: created.map((w) => w.id),
      stopped: [],
      rolling: false,
      placed: [],
      planned: 0,
    };
  }
  return recordKnownJob(db, key, spec, closure, hash, nextRunAt);
}

/** A submit under a key that exists (or a new job whose one-statement insert lost the key to another). */
function recordKnownJob(
  db: Db,
  key: string,
  spec: JobSpec,
  closure: closures.ClosurePath[],
  hash: string,
  nextRunAt: Date | null,
): Promise<RecordedSubmission> {
  const none = { placed: [] as PlacedOnSubmit[], planned: 0 };
  return db.tx(async (q) => {
    const locked = await jobs.lockJobForSubmit(q, key);
    let job: jobs.JobRow;
    let version = 1;
    let previous: number | null = null;
    if (!locked) {
      job = await jobs.insertJob(q, { id: randomUUID(), key, spec, specHash: hash });
    } else {
      const { current_hash, latest_version, ...row } = locked;
      job = row;
      if (current_hash === hash && job.status === 'active') {
        return {
          job,
          version: job.current_version,
          changed: false,
          workloads: [] as string[],
          stopped: [],
          rolling: false,
          ...none,
        };
      }
      previous = job.status === 'active' ? job.current_version : null;
      version = Math.max(job.current_version, Number(latest_version)) + 1;
      await jobs.insertJobVersion(q, job.id, version, spec, hash);
      await jobs.setJobVersion(q, job.id, version);
      job = { ...job, current_version: version, status: 'active' };
    }
    await closures.insertJobClosure(q, job.id, version, closure);
    // With an update_config, a running job is updated batch by batch instead of all at once.
    if (previous !== null && spec.update_config && !spec.cron_schedule) {
      const live = await wl.listWorkloads(q, { jobId: job.id, status: ['starting', 'running'], limit: 1 });
      if (live.length > 0) {
        await startRollout(q, job.id, previous, version);
        return {
          job,
          version,
          changed: true,
          workloads: [] as string[],
          stopped: [],
          rolling: true,
          ...none,
        };
      }
    }
    await updates.cancelRolling(q, job.id, `superseded by version ${version}`);
    const stopped = await stopJobWorkloads(q, job.id, `replaced by version ${version}`);
    // A cron job runs on its schedule, not on submit.
    const fresh = spec.cron_schedule ? [] : newWorkloads(job.id, version, spec, 0);
    await wl.insertWorkloads(q, fresh, `submitted (version ${version})`);
    await jobs.setNextRun(q, job.id, nextRunAt);
    return {
      job,
      version,
      changed: true,
      workloads: fresh.map((w) => w.id),
      stopped,
      rolling: false,
      ...none,
    };
  });
}
