/**
 * Reconciling what agents report with what the store wants: applies core/reconcile/agent's decision
 * for the workloads an agent runs when it (re)connects, and the status changes it reports, checked
 * against the lifecycle state machine.
 */

import type { Logger } from 'pino';
import { FailureStreak } from '../lib/failure-streak.js';
import type { WorkloadStatus } from '../spec/messages.js';
import type { AgentSession, ChangeEvent } from './coordinator-types.js';
import { ACTIVE_STATUSES, canTransition, isTerminal } from './core/lifecycle.js';
import { lostOnHello, reconcileHello } from './core/reconcile/agent.js';
import { type FlappingPolicy, restartDecision } from './core/restart.js';
import type { Db } from './store/db.js';
import * as jobs from './store/jobs.js';
import type * as nodes from './store/nodes.js';
import type { WorkloadRuntime } from './store/workloads.js';
import * as wl from './store/workloads.js';
import { replaceWorkloads } from './workload-changes.js';

export interface AgentReportDeps {
  db: Db;
  log: Logger;
  sessionOf: (nodeId: string) => AgentSession | undefined;
  emit: (e: ChangeEvent) => void;
  sendStart: (nodeId: string, w: wl.WorkloadRow) => void;
  requestRolloutStep: () => void;
  requestEvaluation: () => void;
  /** How ended workloads are restarted (Aurora's flapping back-off). */
  flapping: FlappingPolicy;
  /** Asks for a scheduling pass at this wall time (a restart waiting out its back-off). */
  wakeAt: (at: number) => void;
  /** Wall-clock time in ms (the coordinator's clock). */
  now: () => number;
  /**
   * Each node's refused reports in a row, said at most once a minute with their count: an agent can
   * repeat one in every message, and a warning each wrote its flood into the coordinator's log.
   */
  refusedReports: Map<string, FailureStreak>;
}

/**
 * Matches what a (re)connecting agent runs with what the store wants on its node: core/reconcile/agent
 * decides; this sends the stops and starts, applies adopted statuses as the agent's reports, and loses
 * (and replaces) what the agent no longer runs with guarded transitions. Returns the workloads whose
 * start this settled: wanted here and run by the agent, or sent their start now.
 */
export async function reconcileAgent(
  deps: AgentReportDeps,
  node: nodes.NodeRow,
  running: { workload_id: string; status: WorkloadStatus }[],
): Promise<Set<string>> {
  const session = deps.sessionOf(node.id);
  const wanted = await wl.listWorkloads(deps.db, {
    nodeId: node.id,
    status: [...ACTIVE_STATUSES],
    limit: 100_000,
  });
  const changes = reconcileHello({ node, reported: running, wanted });
  let sent = 0;
  for (const s of changes.stop) {
    session?.send({ type: 'stop', workload_id: s.workloadId, reason: s.reason });
    // A long report shares the event loop with everyone else.
    if (++sent % 500 === 0) await new Promise((r) => setImmediate(r));
  }
  for (const r of changes.report) await applyStatus(deps, node.id, r.workloadId, r.status, r.reason);
  const byId = new Map(wanted.map((w) => [w.id, w]));
  for (const id of changes.start) deps.sendStart(node.id, byId.get(id)!);
  const reported = new Set(running.map((r) => r.workload_id));
  const settled = new Set([...changes.start, ...wanted.flatMap((w) => (reported.has(w.id) ? [w.id] : []))]);
  if (changes.lose.length === 0) return settled;
  const moved = await deps.db.tx(async (q) => {
    const out: wl.WorkloadRow[] = [];
    for (const l of changes.lose) {
      // A report may have ended it meanwhile (failed, say): then that report's follow-up stands.
      const m = await wl.transitionWith(q, byId.get(l.workloadId)!, (cur) => {
        const d = lostOnHello(cur, node);
        return d && { to: d.to, reason: d.reason };
      });
      if (m) out.push(byId.get(l.workloadId)!);
    }
    await replaceWorkloads(q, out, 'rescheduled after loss');
    return out;
  });
  for (const w of moved) deps.emit({ kind: 'workload', id: w.id, status: 'lost' });
  return settled;
}

/** Applies a status an agent reported, when the state machine allows it; follows up failures. */
export async function applyStatus(
  deps: AgentReportDeps,
  nodeId: string,
  id: string,
  status: WorkloadStatus,
  reason: string,
  runtime?: WorkloadRuntime,
): Promise<void> {
  // What the report says of the workload's runtime (processes, ports, ...) is written in the same
  // transaction as its status: one commit per report, so a start's `running` waits for one flush of
  // PostgreSQL's log, not two, and nothing is read twice.
  let runtimeOf: WorkloadStatus | null = null;
  const outcome = await deps.db.tx(async (q) => {
    let w = await wl.getWorkload(q, id);
    if (w && w.node_id === nodeId && runtime) {
      await wl.setWorkloadRuntime(q, id, runtime);
      runtimeOf = w.status;
    }
    // Each attempt decides on the row as it is now; a lost race re-reads (bounded), never overwrites.
    for (let attempt = 0; attempt < 5 && w; attempt++) {
      if (w.node_id !== nodeId) return 'ignored' as const;
      if (w.status === status) return 'same' as const;
      // The answer to the stop queued when it was declared lost: it has ended on the agent too.
      if (w.status === 'lost' && (status === 'stopped' || status === 'failed')) return 'ignored' as const;
      if (!canTransition(w.status, status)) {
        // A late "running" for a workload we are stopping, or a report after loss: keep ours.
        const streak = deps.refusedReports.get(nodeId) ?? new FailureStreak();
        deps.refusedReports.set(nodeId, streak);
        if (streak.failed(performance.now()))
          deps.log.warn(
            { node: nodeId, workload: id, from: w.status, to: status, refused: streak.count },
            'refused invalid transition reported by agent',
          );
        if (w.status === 'stopping' && status === 'running') {
          deps.sessionOf(nodeId)?.send({ type: 'stop', workload_id: id, reason: 'stop requested' });
        }
        return 'refused' as const;
      }
      const to = w.status === 'stopping' && status === 'failed' ? 'stopped' : status;
      const moved = await wl.transition(q, w, to, reason, status === 'failed' ? { error: reason } : {});
      if (!moved) {
        w = await wl.getWorkload(q, id);
        continue;
      }
      if (moved.outcome === 'failed' || moved.outcome === 'finished') {
        const spec = (await jobs.getJobVersion(q, w.job_id, w.job_version))?.spec;
        const d = restartDecision(
          { ...moved, outcome: moved.outcome },
          { service: spec?.service ?? false, max_task_failures: spec?.max_task_failures ?? 1 },
          deps.flapping,
        );
        if (d.restart) {
          const now = deps.now();
          await replaceWorkloads(q, [w], d.reason, {
            countAsFailure: d.countAsFailure,
            delayMs: d.delayMs,
            now: new Date(now),
          });
          if (d.delayMs > 0) deps.wakeAt(now + d.delayMs);
        }
      }
      return 'applied' as const;
    }
    return 'ignored' as const;
  });
  if (runtimeOf) deps.emit({ kind: 'workload', id, status: runtimeOf });
  if (outcome === 'applied') {
    deps.emit({ kind: 'workload', id, status });
    deps.requestRolloutStep();
    if (isTerminal(status)) deps.requestEvaluation();
  }
}
