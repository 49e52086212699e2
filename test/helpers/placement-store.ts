/**
 * Fixtures for tests of the placement statements on a real database: a ready node, a submitted job's
 * pending workloads (1 CPU, 256 MiB each), and the planned start of a pending workload on a node.
 */
import { recordSubmission } from '../../scheduler/job-submit.js';
import type { Db } from '../../scheduler/store/db.js';
import * as nodes from '../../scheduler/store/nodes.js';
import type { PlannedStart } from '../../scheduler/store/placement-apply.js';
import * as wl from '../../scheduler/store/workloads.js';
import { JobSpec } from '../../spec/job.js';
import { plainJob } from './coordinator.js';
import { PLAIN_CAPABILITIES } from './protocol-agent.js';

const MiB = 1024 * 1024;

/** A node named as its id, with plain capabilities. */
export async function addNode(
  db: Db,
  id: string,
  resources = { cpu: 8, memory_mb: 8192, disk_mb: 10_000 },
): Promise<void> {
  await nodes.upsertNode(db, { id, name: id, resources, capabilities: PLAIN_CAPABILITIES, version: 'test' });
}

/** Submits `test/www/prod/<name>` with `instances` one-CPU instances and returns its pending workloads. */
export async function submitPending(db: Db, name: string, instances: number): Promise<wl.PendingWorkload[]> {
  const spec = JobSpec.parse(
    plainJob({
      name,
      instances,
      task: { ...plainJob().task, resources: { cpu: 1, ram: 256 * MiB, disk: MiB } },
    }),
  );
  const { job } = await recordSubmission(db, `test/www/prod/${name}`, spec, []);
  return (await wl.listPending(db, 100)).filter((w) => w.job_id === job.id);
}

/** The apply's input for placing `w` on `nodeId`. */
export const plannedStart = (w: wl.PendingWorkload, nodeId: string): PlannedStart => ({
  id: w.id,
  nodeId,
  cpu: w.cpu,
  memory_mb: w.memory_mb,
  disk_mb: w.disk_mb,
});
