/**
 * An agent that crashes takes its workloads' processes with it (each runs in a PID namespace under
 * bubblewrap's --die-with-parent; without bubblewrap they would be orphans, which the agent started
 * next on the same state dir stops, as it cannot re-attach their output). The restarted agent reports
 * it runs nothing, and the coordinator marks the workload lost and places a replacement, which runs.
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

it('a crashed agent leaves no process behind, and the coordinator replaces the lost workload', async () => {
  const name = 'crashy';
  const stateDir = join(cluster.dir, name, 'state');
  // The real `mxc agent`, on the host store.
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

  // Crash: the agent dies at once; its process group dies with it instead of running unsupervised.
  first.kill('SIGKILL');
  await first;
  await eventually(async () => !isAlive(pid!), 5_000, "the crashed agent's processes to be gone");

  const agent = await cluster.agent(name, { stateDir, storeRoot: undefined });

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
