/**
 * The scheduling pass plumbing: a snapshot of the cluster for the pure core, the constraints and
 * closures of pending workloads, and applying placements in chunked transactions with a capacity re-check.
 */
import { randomUUID } from 'node:crypto';
import type { Logger } from 'pino';
import type { SpecLookup } from './coordinator-types.js';
import { fits, take } from './core/fit.js';
import { type Demand, type NodeView, type PlacedInstance, place, type Strategy } from './core/place.js';
import * as commands from './store/agent-commands.js';
import * as closures from './store/closures.js';
import type { Db, Queryable } from './store/db.js';
import * as nodes from './store/nodes.js';
import * as wl from './store/workloads.js';

export interface ClusterSnapshot {
  nodes: NodeView[];
  placed: PlacedInstance[];
}

interface JobInfo {
  constraints: Record<string, string>;
  closure: { path: string; size: number }[];
}
/** Placements committed per transaction. */
const APPLY_CHUNK = 2000;

export interface SchedulePassDeps {
  db: Db;
  log: Logger;
  strategy: Strategy;
  specOf: SpecLookup;
  /** Called after commit for each workload the pass moved to starting (its start command queued), in order. */
  started: (w: wl.WorkloadRow) => void;
  /** Asks for another pass at this time: the earliest restart still waiting out its back-off. */
  wakeAt?: (at: number) => void;
}

/** One scheduling pass: plan the pending workloads on a snapshot, apply, and replan on conflicts. */
export async function schedulePass(deps: SchedulePassDeps): Promise<void> {
  const { db } = deps;
  for (let attempt = 0; attempt < 5; attempt++) {
    const all = await wl.listWorkloads(db, { status: ['pending'], limit: 100_000 });
    // Restarts of flapping tasks wait out their back-off (Aurora's THROTTLED): not planned before then.
    const now = Date.now();
    const waiting = all.filter((w) => w.not_before && w.not_before.getTime() > now);
    if (waiting.length) {
      deps.wakeAt?.(Math.min(...waiting.map((w) => w.not_before!.getTime())));
      await wl.setPendingReasons(
        db,
        waiting.map((w) => ({
          id: w.id,
          reason: `restart back-off: waiting until ${w.not_before!.toISOString()} (${w.restart_delay_ms} ms; the task is flapping)`,
        })),
      );
    }
    const throttled = new Set(waiting);
    const pending = waiting.length ? all.filter((w) => !throttled.has(w)) : all;
    if (pending.length === 0) return;
    pending.sort((a, b) => a.created_at.getTime() - b.created_at.getTime() || a.instance - b.instance);
    const snapshot = await clusterSnapshot(db);
    const jobInfo = await jobInfoFor(db, deps.specOf, pending);
    const demands: Demand[] = pending.map((w) => {
      const info = jobInfo.get(`${w.job_id}/${w.job_version}`);
      return {
        workloadId: w.id,
        jobId: w.job_id,
        cpu: w.cpu,
        memory_mb: w.memory_mb,
        disk_mb: w.disk_mb,
        isolation: w.isolation,
        constraints: info?.constraints ?? {},
        closure: info?.closure,
      };
    });
    const wanted = [...new Set([...jobInfo.values()].flatMap((i) => i.closure.map((p) => p.path)))];
    const held = await closures.holders(db, wanted);
    for (const n of snapshot.nodes) n.storePaths = held.get(n.id) ?? new Set();
    const evalId = randomUUID();
    const plan = place(snapshot, demands, { strategy: deps.strategy, seed: evalId });
    await wl.setPendingReasons(
      db,
      plan.failures.map((f) => ({ id: f.workloadId, reason: f.summary })),
    );
    if (plan.placements.length === 0) return;
    const { applied, conflicts } = await applyPlacements(db, plan.placements);
    for (const a of applied) deps.started(a);
    if (conflicts === 0) return;
    deps.log.info({ conflicts, attempt }, 'plan partly rejected on fresh state; replanning');
  }
}

/** Constraints and closure (with sizes) of each job version among the workloads. */
async function jobInfoFor(
  db: Queryable,
  specOf: SpecLookup,
  ws: wl.WorkloadRow[],
): Promise<Map<string, JobInfo>> {
  const out = new Map<string, JobInfo>();
  for (const w of ws) {
    const k = `${w.job_id}/${w.job_version}`;
    if (out.has(k)) continue;
    const [spec, closure] = await Promise.all([
      specOf(w.job_id, w.job_version),
      closures.jobClosure(db, w.job_id, w.job_version),
    ]);
    out.set(k, {
      constraints: spec?.constraints ?? {},
      closure: closure.map((p) => ({ path: p.path, size: p.nar_size })),
    });
  }
  return out;
}

/** The cluster as the pure core sees it. */
export async function clusterSnapshot(q: Queryable): Promise<ClusterSnapshot> {
  const [rows, usage, placed] = await Promise.all([
    nodes.listNodes(q),
    wl.usageByNode(q),
    wl.activePlacements(q),
  ]);
  return {
    nodes: rows.map((n) => toNodeView(n, usage.get(n.id))),
    placed: placed.map((p) => ({ jobId: p.job_id, nodeId: p.node_id, count: p.n })),
  };
}

/**
 * Applies placements in transactions of at most APPLY_CHUNK, re-checking capacity under row locks
 * (nodes, then workloads, in id order). A placement that no longer fits is a conflict, left pending.
 */
async function applyPlacements(
  db: Db,
  placements: { workloadId: string; nodeId: string }[],
): Promise<{ applied: wl.WorkloadRow[]; conflicts: number }> {
  const applied: wl.WorkloadRow[] = [];
  let conflicts = 0;
  for (let i = 0; i < placements.length; i += APPLY_CHUNK) {
    const chunk = placements.slice(i, i + APPLY_CHUNK);
    const r = await retryOnConflict(() => applyChunkOnce(db, chunk));
    applied.push(...r.applied);
    conflicts += r.conflicts;
  }
  return { applied, conflicts };
}

async function applyChunkOnce(
  db: Db,
  placements: { workloadId: string; nodeId: string }[],
): Promise<{ applied: wl.WorkloadRow[]; conflicts: number }> {
  return db.tx(async (q) => {
    const nodeIds = [...new Set(placements.map((p) => p.nodeId))];
    const locked = new Map((await nodes.lockNodes(q, nodeIds)).map((n) => [n.id, n]));
    const usage = await wl.usageByNode(q, nodeIds);
    const pending = new Map(
      (
        await wl.lockPending(
          q,
          placements.map((p) => p.workloadId),
        )
      ).map((w) => [w.id, w]),
    );
    const accepted: { w: wl.WorkloadRow; node: nodes.NodeRow }[] = [];
    let conflicts = 0;
    for (const p of placements) {
      const node = locked.get(p.nodeId);
      const w = pending.get(p.workloadId);
      if (!w) continue; // stopped or placed meanwhile
      const used = usage.get(p.nodeId) ?? { cpu: 0, memory_mb: 0, disk_mb: 0 };
      if (!node || node.status !== 'ready' || !fits(node, used, w)) {
        conflicts++;
        continue;
      }
      take(used, w);
      usage.set(p.nodeId, used);
      accepted.push({ w, node });
    }
    const moved = new Set(
      await wl.transitionMany(
        q,
        accepted.map(({ w, node }) => ({ id: w.id, node_id: node.id, reason: `placed on ${node.name}` })),
        'pending',
        'starting',
      ),
    );
    const applied = accepted
      .filter(({ w }) => moved.has(w.id))
      .map(({ w, node }) => ({ ...w, status: 'starting' as const, node_id: node.id }));
    // The agents' start commands commit with the placement (the outbox); the socket holder sends them.
    await commands.enqueueCommands(
      q,
      applied.map((w) => ({ nodeId: w.node_id, message: { type: 'start_ref', workload_id: w.id } })),
    );
    return { applied, conflicts };
  });
}

/** Retries a transaction that PostgreSQL aborted for a deadlock or a serialization failure. */
export async function retryOnConflict<T>(fn: () => Promise<T>, attempts = 5): Promise<T> {
  for (let i = 1; ; i++) {
    try {
      return await fn();
    } catch (err) {
      const code = (err as { code?: string }).code;
      if (i >= attempts || (code !== '40P01' && code !== '40001')) throw err;
      await new Promise((r) => setTimeout(r, 5 * i + Math.random() * 20));
    }
  }
}

export function toNodeView(
  n: nodes.NodeRow,
  used?: { cpu: number; memory_mb: number; disk_mb: number },
): NodeView {
  return {
    id: n.id,
    name: n.name,
    status: n.status,
    cpu: n.cpu,
    memory_mb: n.memory_mb,
    disk_mb: n.disk_mb,
    used: used ?? { cpu: 0, memory_mb: 0, disk_mb: 0 },
    isolation: n.capabilities.isolation ?? ['process'],
    attributes: {
      ...(n.capabilities.attributes ?? {}),
      host: n.name,
      os: n.capabilities.os,
      arch: n.capabilities.arch,
    },
  };
}
