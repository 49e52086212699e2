/**
 * Log retention: an ended workload's logs stay on the agent after it ends, and are pruned once they
 * are older than the retention; a running workload's are never pruned, however old.
 */
import { existsSync } from 'node:fs';
import { readdir } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { buildScript } from '../agent/helpers.js';
import { type Cluster, eventually, push, scriptJob, startCluster, submit, waitWorkloads } from './harness.js';

let cluster: Cluster;
beforeAll(async () => {
  cluster = await startCluster();
});
afterAll(async () => {
  await cluster?.stop();
});

it('prunes ended workloads’ logs after the retention and never a running one’s', async () => {
  const name = 'retention';
  const agent = await cluster.agent(name, { logRetentionMs: 2000, housekeepingIntervalMs: 200 });
  const workloads = join(cluster.dir, name, 'state', 'workloads');
  const s = await buildScript('retention', 'echo up\nexec sleep 1000\n');
  await push(cluster.c, [s.path]);
  const keep = await submit(cluster.c, scriptJob('keep', s.path));
  const drop = await submit(cluster.c, scriptJob('drop', s.path));
  const running = (ws: { status: string }[]) => ws[0]?.status === 'running';
  const [kw] = await waitWorkloads(cluster.c, keep, running, 'keep to run');
  const [dw] = await waitWorkloads(cluster.c, drop, running, 'drop to run');

  await cluster.c.coordinator.stopJob(drop);
  await waitWorkloads(cluster.c, drop, (ws) => ws[0]?.status === 'stopped', 'drop to stop');
  await eventually(async () => !agent.runningIds().includes(dw!.id), 5000, 'the agent to let go of drop');
  // Ended, but within the retention: its logs are still there.
  expect((await readdir(join(workloads, dw!.id, 'logs'))).length).toBeGreaterThan(0);

  await eventually(async () => !existsSync(join(workloads, dw!.id)), 10_000, 'the ended logs to be pruned');
  // The running one wrote its last line before drop even started, so the pass that pruned drop found its
  // logs older than the retention too: they stay only because it runs. No wait needed.
  expect(existsSync(join(workloads, kw!.id, 'logs'))).toBe(true);
  expect(agent.runningIds()).toEqual([kw!.id]);
});
