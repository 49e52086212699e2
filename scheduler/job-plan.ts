/**
 * A dry run of a submit (`mxc jobs plan`, Nomad's `job plan`): what submitting a spec would do, changing
 * nothing. New / changed / unchanged, the instances to place, replace and stop, the closure diff against
 * the current version (store paths added and removed, size delta, processes whose store paths changed),
 * and whether the instances fit, asked of the same pure planner a scheduling pass uses.
 */
import { createHash, randomUUID } from 'node:crypto';
import type { z } from 'zod';
import type { JobPlan } from '../spec/api.js';
import { type JobSpec, jobKey } from '../spec/job.js';
import { demandOf } from './core/fit.js';
import type { Strategy } from './core/place.js';
import { clusterSnapshot, placeYielding } from './placement.js';
import * as closures from './store/closures.js';
import type { Db } from './store/db.js';
import * as jobs from './store/jobs.js';
import * as wl from './store/workloads.js';

type Plan = z.infer<typeof JobPlan>;

export interface PlanInput {
  spec: JobSpec;
  /** The new closure with sizes; null when unknown (then only what the cache knows is compared). */
  closure: closures.ClosurePath[] | null;
  /** Paths of the closure the coordinator's cache lacks (a submit uploads them first). */
  missing: string[];
}

const LIVE: wl.WorkloadRow['status'][] = ['pending', 'starting', 'running'];

/** Processes by name → their command line (store paths are in the command lines). */
const processMap = (spec: JobSpec) => new Map(spec.task.processes.map((p) => [p.name, p.cmdline]));

export async function planJob(db: Db, input: PlanInput, strategy: Strategy): Promise<Plan> {
  const { spec } = input;
  const key = jobKey(spec);
  const hash = createHash('sha256').update(JSON.stringify(spec)).digest('hex');
  const job = await jobs.getJobByKey(db, key);
  const current = job ? await jobs.getJobVersion(db, job.id, job.current_version) : null;
  const active = job?.status === 'active';
  const status: Plan['status'] = !job
    ? 'new'
    : current?.spec_hash === hash && active
      ? 'unchanged'
      : 'changed';
  const live =
    job && active ? await wl.listWorkloads(db, { jobId: job.id, status: LIVE, limit: 100_000 }) : [];
  const liveCount = new Set(live.map((w) => w.instance)).size;

  const rolling =
    status === 'changed' && active && !!spec.update_config && !spec.cron_schedule && liveCount > 0;
  const wanted = spec.cron_schedule ? 0 : spec.instances;
  const instances =
    status === 'unchanged'
      ? { place: 0, replace: 0, stop: 0 }
      : {
          place: Math.max(0, wanted - liveCount),
          replace: Math.min(wanted, liveCount),
          stop: Math.max(0, liveCount - wanted),
        };

  // Closure diff against the current version.
  const before = job && current ? await closures.jobClosure(db, job.id, job.current_version) : [];
  const after = input.closure ?? [];
  const beforeSet = new Map(before.map((p) => [p.path, p.nar_size]));
  const afterSet = new Map(after.map((p) => [p.path, p.nar_size]));
  const added = input.closure ? [...afterSet.keys()].filter((p) => !beforeSet.has(p)).sort() : [];
  const removed = input.closure ? [...beforeSet.keys()].filter((p) => !afterSet.has(p)).sort() : [];
  const size = after.reduce((n, p) => n + p.nar_size, 0);
  const sizeBefore = before.reduce((n, p) => n + p.nar_size, 0);

  const oldProcs = current ? processMap(current.spec) : new Map<string, string>();
  const newProcs = processMap(spec);
  const processes = {
    added: [...newProcs.keys()].filter((n) => !oldProcs.has(n)),
    removed: [...oldProcs.keys()].filter((n) => !newProcs.has(n)),
    changed: [...newProcs.keys()].filter((n) => oldProcs.has(n) && oldProcs.get(n) !== newProcs.get(n)),
  };

  // Fit: the new instances on the cluster as it would be once this job's live workloads are replaced.
  const snapshot = await clusterSnapshot(db);
  const mine = status === 'unchanged' ? [] : live.filter((w) => w.node_id);
  for (const w of mine) {
    const n = snapshot.nodes.find((x) => x.id === w.node_id);
    if (!n) continue;
    n.used = {
      cpu: n.used.cpu - w.cpu,
      memory_mb: n.used.memory_mb - w.memory_mb,
      disk_mb: n.used.disk_mb - w.disk_mb,
    };
  }
  if (job) snapshot.placed = snapshot.placed.filter((p) => p.jobId !== job.id || status === 'unchanged');
  const demand = demandOf(spec);
  const count = status === 'unchanged' ? 0 : wanted;
  const placement = await placeYielding(
    snapshot,
    Array.from({ length: count }, (_, i) => ({
      workloadId: `plan-${i}`,
      jobId: job?.id ?? `plan-${randomUUID()}`,
      ...demand,
      isolation: spec.mxc.isolation,
      constraints: spec.constraints ?? {},
    })),
    { strategy, seed: key },
  );
  const reasons = [...new Set(placement.failures.map((f) => f.summary))];

  return {
    job: key,
    status,
    current_version: job?.current_version ?? null,
    next_version: status === 'unchanged' ? (job?.current_version ?? null) : (job?.current_version ?? 0) + 1,
    rolling,
    instances,
    closure: {
      known: input.closure !== null,
      missing_from_cache: input.missing,
      paths: after.length,
      size,
      added,
      removed,
      size_delta: input.closure ? size - sizeBefore : 0,
    },
    processes,
    fits: placement.failures.length === 0,
    unplaced: placement.failures.length,
    reasons,
  };
}
