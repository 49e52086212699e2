/**
 * Agent reconciliation on hello, pure: what a (re)connecting agent reports running against what the
 * store wants on its node → which workloads the agent is told to stop, which starts are (re)sent, which
 * statuses are taken over from the agent's report (adopted) and which workloads are lost. No I/O;
 * agent-reports.ts sends the messages and applies the rest with guarded transitions.
 */
import type { WorkloadStatus } from '../../../spec/messages.js';
import { isTerminal } from '../lifecycle.js';
import type { WorkloadMove } from './node.js';

/** A workload the agent says it runs. */
export interface ReportedWorkload {
  workload_id: string;
  status: WorkloadStatus;
}

/** An active workload (starting, running, stopping) the store has on this node. */
export interface WantedWorkload {
  id: string;
  status: WorkloadStatus;
}

export interface AgentSnapshot {
  node: { id: string; name: string };
  reported: readonly ReportedWorkload[];
  wanted: readonly WantedWorkload[];
}

export interface AgentChanges {
  /** Stop messages to send: to what runs there unwanted, and again to what we are stopping. */
  stop: { workloadId: string; reason: string }[];
  /** Workloads placed here whose start the agent never got: sent again. */
  start: string[];
  /** Statuses to apply as reports of the agent (through the lifecycle checks and their follow-ups). */
  report: { workloadId: string; status: WorkloadStatus; reason: string }[];
  /** Workloads the agent no longer runs: lost (and replaced when their job still wants them). */
  lose: WorkloadMove[];
}

export const NOT_WANTED = 'not wanted by the coordinator';
export const STOP_REQUESTED = 'stop requested';

/** Why a workload is lost when its agent reconnects without it. */
export const lostOnReconnect = (nodeName: string) => `agent ${nodeName} no longer runs it`;

/**
 * Whether a workload the agent does not report is lost: only a running one (a starting one's start
 * may not have arrived, so it is sent again; a stopping one has simply stopped).
 */
export function lostOnHello(
  w: { id: string; status: WorkloadStatus; node_id?: string | null },
  node: { id: string; name: string },
): WorkloadMove | null {
  if (w.node_id !== undefined && w.node_id !== node.id) return null;
  if (w.status !== 'starting' && w.status !== 'running') return null;
  return { workloadId: w.id, from: w.status, to: 'lost', reason: lostOnReconnect(node.name) };
}

/** Matches what the agent runs with what the store wants on its node. */
export function reconcileHello(s: AgentSnapshot): AgentChanges {
  const reported = new Map(s.reported.map((r) => [r.workload_id, r.status]));
  const wantedIds = new Set(s.wanted.map((w) => w.id));
  const out: AgentChanges = { stop: [], start: [], report: [], lose: [] };
  // Running on the agent but no longer wanted here: stop it. (An agent also lists what ended lately,
  // so that an end this coordinator missed is not taken for a loss; those need no stop.)
  for (const [id, status] of reported) {
    if (!wantedIds.has(id) && !isTerminal(status)) out.stop.push({ workloadId: id, reason: NOT_WANTED });
  }
  for (const w of s.wanted) {
    const st = reported.get(w.id);
    if (w.status === 'stopping') {
      if (st) out.stop.push({ workloadId: w.id, reason: STOP_REQUESTED });
      else out.report.push({ workloadId: w.id, status: 'stopped', reason: 'agent no longer runs it' });
    } else if (st) {
      // Adopt what the agent says (starting → running, say); an end it reports arrives as its own status message.
      if (st !== w.status && !isTerminal(st))
        out.report.push({ workloadId: w.id, status: st, reason: 'reported on reconnect' });
    } else if (w.status === 'starting') {
      out.start.push(w.id);
    } else {
      const lost = lostOnHello(w, s.node);
      if (lost) out.lose.push(lost);
    }
  }
  return out;
}
