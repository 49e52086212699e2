/**
 * One agent a state dir: a second one on it is refused before it touches anything (it took the first
 * one's live workloads for a previous run's orphans and killed them, and joined as the same node).
 */
import { join } from 'node:path';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { buildScript } from '../agent/helpers.js';
import {
  type Cluster,
  push,
  scriptJob,
  startCluster,
  submit,
  waitWorkloads,
  workloadsOf,
} from './harness.js';

let cluster: Cluster;
beforeAll(async () => {
  cluster = await startCluster();
});
afterAll(async () => {
  await cluster?.stop();
});

it("a second agent on a live agent's state dir is refused, and the first one's workload runs on", async () => {
  const first = await cluster.agent('held');
  const s = await buildScript('state-lock', 'exec sleep 1000\n');
  await push(cluster.c, [s.path]);
  const jobId = await submit(cluster.c, scriptJob('state-lock', s.path, { constraints: { host: 'held' } }));
  const [w] = await waitWorkloads(cluster.c, jobId, (ws) => ws[0]?.status === 'running', 'the job to run');
  await expect(
    cluster.agent('held-again', { stateDir: join(cluster.dir, 'held', 'state') }),
  ).rejects.toMatchObject({ code: 'DATA_DIR_IN_USE' });
  const [still] = await workloadsOf(cluster.c, jobId);
  expect([still!.id, still!.status]).toEqual([w!.id, 'running']);
  // Closed, the first gives the dir back.
  await first.close({ stopWorkloads: true });
  const next = await cluster.agent('held-next', { stateDir: join(cluster.dir, 'held', 'state') });
  await next.close({ stopWorkloads: true });
}, 60_000);
