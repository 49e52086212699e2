/** How rows are shown by the API: workloads with their job key and node name. */
import type { Queryable } from '../store/db.js';
import * as jobs from '../store/jobs.js';
import * as nodes from '../store/nodes.js';
import { lastReasons, type WorkloadRow } from '../store/workloads.js';

export type WorkloadView = WorkloadRow & { job: string; node: string | null; reason: string };

export async function presentWorkloads(db: Queryable, ws: WorkloadRow[]): Promise<WorkloadView[]> {
  const nodeNames = new Map((await nodes.listNodes(db)).map((n) => [n.id, n.name]));
  const jobKeys = new Map<string, string>();
  for (const w of ws) {
    if (!jobKeys.has(w.job_id)) jobKeys.set(w.job_id, (await jobs.getJob(db, w.job_id))?.key ?? w.job_id);
  }
  const reasons = await lastReasons(
    db,
    ws.map((w) => w.id),
  );
  return ws.map((w) => ({
    ...w,
    reason: reasons.get(w.id) ?? '',
    job: jobKeys.get(w.job_id)!,
    node: w.node_id ? (nodeNames.get(w.node_id) ?? null) : null,
  }));
}
