/**
 * Pre-warm: works out which nodes a job's workloads run on or would go to, and tells them to realise
 * the missing part of its closure now, so a later rollout does not wait for downloads.
 */
import { describeIssues, JobSpec, jobKey } from '../spec/job.js';
import type { SpecLookup } from './coordinator-types.js';
import { demandOf } from './core/fit.js';
import type { Strategy } from './core/place.js';
import { errors } from './errors.js';
import { clusterSnapshot, placeYielding } from './placement.js';
import * as commands from './store/agent-commands.js';
import * as closures from './store/closures.js';
import type { Db } from './store/db.js';
import * as jobs from './store/jobs.js';
import * as wl from './store/workloads.js';

export interface PrewarmDeps {
  db: Db;
  strategy: Strategy;
  closureOf?: (spec: JobSpec) => Promise<closures.ClosurePath[]>;
  specOf: SpecLookup;
  /** Called after the pre-warm commands are queued: the holders of these nodes' sockets send them. */
  deliverQueued: (nodeIds: string[]) => void;
}

export interface PrewarmResult {
  paths: number;
  bytes: number;
  nodes: { node: string; missing_bytes: number; sent: boolean }[];
}

/** Pre-warms a job's current version, or the next version's spec when `body` carries one. */
export async function prewarmJob(deps: PrewarmDeps, idOrKey: string, body?: unknown): Promise<PrewarmResult> {
  const { db } = deps;
  const job = await jobs.getJob(db, idOrKey);
  if (!job) throw errors.notFound('job', idOrKey);
  let spec: JobSpec;
  let closure: closures.ClosurePath[];
  if (body !== undefined && body !== null && !(typeof body === 'object' && Object.keys(body).length === 0)) {
    const parsed = JobSpec.safeParse(body);
    if (!parsed.success) throw errors.validation('job spec', describeIssues(parsed.error));
    spec = parsed.data;
    if (jobKey(spec) !== job.key) {
      throw errors.badRequest(
        `the spec is for ${jobKey(spec)}, not ${job.key}; pre-warm it under its own job`,
      );
    }
    closure = (await deps.closureOf?.(spec)) ?? [];
  } else {
    spec = (await deps.specOf(job.id, job.current_version))!;
    closure = await closures.jobClosure(db, job.id, job.current_version);
  }
  const snapshot = await clusterSnapshot(db);
  const held = await closures.holders(
    db,
    closure.map((p) => p.path),
  );
  for (const n of snapshot.nodes) n.storePaths = held.get(n.id) ?? new Set();
  // Where it runs now, and where a fresh placement of every instance would go.
  const targets = new Set(
    (await wl.listWorkloads(db, { jobId: job.id, status: ['starting', 'running'] }))
      .map((w) => w.node_id)
      .filter((n): n is string => n !== null),
  );
  const demand = demandOf(spec);
  const plan = await placeYielding(
    snapshot,
    Array.from({ length: spec.instances }, (_, i) => ({
      workloadId: `prewarm-${i}`,
      jobId: job.id,
      ...demand,
      isolation: spec.mxc.isolation,
      constraints: spec.constraints ?? {},
      closure: closure.map((p) => ({ path: p.path, size: p.nar_size })),
    })),
    { strategy: deps.strategy, seed: job.id },
  );
  for (const p of plan.placements) targets.add(p.nodeId);
  const paths = closure.map((p) => p.path);
  const out: PrewarmResult['nodes'] = [];
  const queued: commands.QueuedCommand[] = [];
  for (const nodeId of targets) {
    const node = snapshot.nodes.find((n) => n.id === nodeId);
    if (!node) continue;
    const missing = closure.filter((p) => !node.storePaths?.has(p.path));
    if (missing.length) queued.push({ nodeId, message: { type: 'prewarm', job_id: job.id, paths } });
    out.push({
      node: node.name,
      missing_bytes: missing.reduce((a, p) => a + p.nar_size, 0),
      sent: missing.length > 0,
    });
  }
  // Through the outbox: the agent may be connected to another coordinator, or reconnecting.
  await commands.enqueueCommands(db, queued);
  deps.deliverQueued(queued.map((c) => c.nodeId));
  return { paths: paths.length, bytes: closure.reduce((a, p) => a + p.nar_size, 0), nodes: out };
}
