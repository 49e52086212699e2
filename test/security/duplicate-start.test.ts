/**
 * Issue 12.6: a duplicate `start` for the same workload, sent back to back over the real protocol,
 * runs the task once; stop then leaves nothing of it behind.
 */
import { readFile, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, beforeAll, expect, test } from 'vitest';
import { buildScript } from '../agent/helpers.js';
import { agentWithFakeCoordinator, assignment, until, workloadProcesses } from './workload-tree.js';

let script: { path: string; closure: string[] };
const cleanups: (() => Promise<void>)[] = [];

beforeAll(async () => {
  // Each run appends a line to a file in the work dir, then stays up.
  script = await buildScript('count-runs', 'echo run >> runs\necho started\nexec sleep 300\n');
}, 120_000);

afterAll(async () => {
  for (const c of cleanups) await c();
});

test('two starts back to back run the task once, and stop kills everything', async () => {
  const { agent, coord, stateDir } = await agentWithFakeCoordinator();
  cleanups.push(async () => {
    await agent.close();
    await coord.close();
    await rm(stateDir, { recursive: true, force: true });
  });
  const a = assignment(script.path, [script.path]);
  // Same event-loop turn on our side, so they arrive in one burst: the agent's first start is still
  // awaiting its state directory when the second one is handled.
  coord.send({ type: 'start', workload: a });
  coord.send({ type: 'start', workload: a });
  await until(() => coord.statuses(a.id).find((s) => s.status === 'running'), 30_000, 'running');
  const runsFile = join(stateDir, 'workloads', a.id, 'work', 'runs');
  await until(() => workloadProcesses(a.id).some((p) => p.state !== 'Z'), 10_000, 'its process');
  // Give a second copy every chance to show up before counting: poll until the first run's line is
  // there, then until any second launch would have been reported.
  await until(async () => (await readFile(runsFile, 'utf8').catch(() => '')).length > 0, 10_000, 'the run');
  const starts = coord.received.filter(
    (m) => m.type === 'workload_status' && m.workload_id === a.id && m.reason === 'processes started',
  );
  expect(starts).toHaveLength(1);
  expect((await readFile(runsFile, 'utf8')).trim().split('\n')).toEqual(['run']);
  expect(agent.runningIds()).toEqual([a.id]);

  coord.send({ type: 'stop', workload_id: a.id, reason: 'test' });
  await until(() => workloadProcesses(a.id).length === 0, 5_000, 'every process to be gone');
  await until(() => coord.statuses(a.id).find((s) => s.status === 'stopped'), 10_000, 'stopped');
  expect(agent.runningIds()).toEqual([]);
  expect((await readFile(runsFile, 'utf8')).trim().split('\n')).toEqual(['run']);
}, 60_000);
