/**
 * An agent that crashes leaves its workloads' processes running; the agent started next on the same
 * state dir stops those orphans (it cannot re-attach their output), reports it runs nothing, and
 * the coordinator marks the workload lost and places a replacement, which runs.
 */
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { execa } from 'execa';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { repoPath } from '../../scheduler/paths.js';
import { isAlive } from '../agent/helpers.js';
import { type Cluster, eventually, startCluster, submit, TOKENS, waitWorkloads } from './harness.js';

let cluster: Cluster;
beforeAll(async () => {
  cluster = await startCluster();
});
afterAll(async () => {
  await cluster?.stop();
});

const pidsOf = async (stateDir: string, workloadId: string): Promise<number[]> => {
  const raw = JSON.parse(await readFile(join(stateDir, 'workloads', workloadId, 'pids.json'), 'utf8')) as {
    pid: number;
  }[];
  return raw.map((r) => r.pid);
};

it('a restarted agent stops the orphans of a crashed one, and the coordinator replaces the lost workload', async () => {
  const name = 'crashy';
  const stateDir = join(cluster.dir, name, 'state');
  // The real `mxc agent`, on the host store (plain processes outlive it; bubblewrap ones would not).
  const first = execa(
    'node',
    [
      repoPath('bin', 'mxc.js'),
      'agent',
      '--coordinator',
      cluster.c.url,
      '--token',
      TOKENS.agent,
      '--name',
      name,
      '--state-dir',
      stateDir,
    ],
    { reject: false, stdio: 'ignore' },
  );
  const jobId = await submit(cluster.c, {
    name: 'orphan',
    role: 'test',
    cluster: 'test',
    environment: 'test',
    service: true,
    task: {
      name: 'orphan',
      processes: [{ name: 'main', cmdline: '/bin/sleep 1000' }],
      resources: { cpu: 0.25, ram: 16 * 1024 * 1024, disk: 1024 * 1024 },
    },
  });
  const [before] = await waitWorkloads(
    cluster.c,
    jobId,
    (ws) => ws[0]?.status === 'running',
    'the workload to run',
    30_000,
  );
  const [pid] = await eventually(
    async () => {
      const pids = await pidsOf(stateDir, before!.id).catch(() => []);
      return pids.length ? pids : null;
    },
    10_000,
    'pids.json',
  );

  // Crash: the agent dies at once, its process keeps running without a supervisor.
  first.kill('SIGKILL');
  await first;
  expect(isAlive(pid!)).toBe(true);

  const agent = await cluster.agent(name, { stateDir, storeRoot: undefined });
  expect(isAlive(pid!), 'the orphan is stopped before the agent joins').toBe(false);

  const after = await waitWorkloads(
    cluster.c,
    jobId,
    (ws) =>
      ws.some((w) => w.id === before!.id && w.status === 'lost') && ws.some((w) => w.status === 'running'),
    'lost and replaced',
  );
  const replacement = after.find((w) => w.status === 'running')!;
  expect(replacement.id).not.toBe(before!.id);
  expect(replacement.instance).toBe(0);
  expect(agent.runningIds()).toEqual([replacement.id]);
  const [newPid] = await eventually(
    async () => {
      const pids = await pidsOf(stateDir, replacement.id).catch(() => []);
      return pids.length ? pids : null;
    },
    10_000,
    'the replacement pid',
  );
  expect(newPid).not.toBe(pid);
  expect(isAlive(newPid!)).toBe(true);
  await agent.close();
  expect(isAlive(newPid!)).toBe(false);
});
