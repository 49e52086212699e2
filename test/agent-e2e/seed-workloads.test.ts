/**
 * samrose/mxc's workload API end to end: the real CLI (`mxc workloads create FILE.json -f json`) against a
 * coordinator with a real agent; the command runs as the seed runs it (a shell line plus its arguments),
 * answers with the seed's fields, DELETE stops it, and cluster status has the seed's capacity fields.
 */
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { execa } from 'execa';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { repoPath } from '../../scheduler/paths.js';
import * as logs from '../../scheduler/store/logs.js';
import * as api from '../../spec/api.js';
import { eventually } from '../helpers/protocol-agent.js';
import { type Cluster, startCluster, TOKENS } from './harness.js';

let cluster: Cluster;
beforeAll(async () => {
  cluster = await startCluster();
  await cluster.agent('seed-node', { storeRoot: undefined });
}, 180_000);
afterAll(async () => cluster?.stop());

const mxc = (args: string[]) =>
  execa('node', [repoPath('bin', 'mxc.js'), ...args, '-c', cluster.c.url, '--token', TOKENS.api], {
    reject: false,
  });

const call = (method: string, path: string, body?: unknown) =>
  cluster.c.api(method, path, body, { authorization: `Bearer ${TOKENS.api}` });

const workload = async (id: string) => (await call('GET', `/api/workloads/${id}`)).body.data;

it('runs a seed workload file through the CLI: command + args in a shell, env, the seed fields', async () => {
  const file = join(cluster.dir, 'workload.json');
  await writeFile(
    file,
    JSON.stringify({
      type: 'process',
      command: 'echo "seed says $GREETING"',
      args: ['with space', "it's"],
      env: { GREETING: 'hello' },
      cpu: 0.5,
      memory_mb: 64,
    }),
  );
  const r = await mxc(['workloads', 'create', file, '-f', 'json']);
  expect(r.exitCode, r.stderr).toBe(0);
  const created = api.SeedWorkload.parse(JSON.parse(r.stdout));
  expect(created).toMatchObject({
    type: 'process',
    command: 'echo "seed says $GREETING"',
    args: ['with space', "it's"],
    env: { GREETING: 'hello' },
    cpu_required: 0.5,
    memory_required: 64,
    constraints: {},
    ip: null,
  });
  expect(['pending', 'starting']).toContain(created.status);
  expect(created.job).toMatch(/^api\/workloads\/default\/process-[0-9a-f]{8}$/);

  await eventually(
    async () => (await workload(created.id)).status === 'stopped',
    60_000,
    'the command to end',
  );
  const done = await workload(created.id);
  expect(done.outcome).toBe('finished');
  const lines = (await logs.readLogs(cluster.c.db, created.id, {})).map((l) => l.line);
  expect(lines).toContain("seed says hello with space it's");

  // A table too (the default of -f).
  const table = await mxc(['workloads', 'create', file, '-f', 'table']);
  expect(table.stdout).toMatch(/: (pending|starting) \(job api\/workloads\/default\/process-/);
});

it('DELETE stops a seed workload (204) and its job; cluster status has the seed capacity fields; bad input is coded', async () => {
  const res = await call('POST', '/api/workloads', { command: 'sleep 300' });
  expect(res.status).toBe(201);
  const id: string = res.body.data.id;
  await eventually(async () => (await workload(id)).status === 'running', 60_000, 'sleep to run');
  const status = api.ClusterStatus.parse((await call('GET', '/api/cluster/status')).body.data);
  expect(status.nodes_healthy).toBe(1);
  expect(status.available_cpu).toBe(status.total_cpu - status.used_cpu);
  expect(status.available_memory).toBeLessThan(status.total_memory_mb);

  const del = await call('DELETE', `/api/workloads/${id}`);
  expect(del.status).toBe(204);
  await eventually(async () => (await workload(id)).status === 'stopped', 30_000, 'sleep to stop');
  const job = (await call('GET', `/api/jobs/${res.body.data.job_id}`)).body.data;
  expect(job.status).toBe('stopped');
  // Again: still 204, nothing to do.
  expect((await call('DELETE', `/api/workloads/${id}`)).status).toBe(204);

  const bad = await call('POST', '/api/workloads', { command: 'true', type: 'vm', cpu: -1 });
  expect(bad.status).toBe(422);
  expect(bad.body.error.details.problems.join('\n')).toMatch(/^type: /m);
  expect(bad.body.error.details.problems.join('\n')).toMatch(/^cpu: /m);
});

it("takes the seed CLI's own forms: workloads deploy FILE, workloads ID [stop], workloads and nodes alone, nodes ID", async () => {
  const file = join(cluster.dir, 'sleep.json');
  await writeFile(file, JSON.stringify({ type: 'process', command: 'sleep 300' }));
  const deployed = await mxc(['workloads', 'deploy', file, '-f', 'json']);
  expect(deployed.exitCode, deployed.stderr).toBe(0);
  const id: string = JSON.parse(deployed.stdout).id;
  await eventually(async () => (await workload(id)).status === 'running', 60_000, 'sleep to run');

  const list = await mxc(['workloads', '-f', 'json']);
  expect(list.exitCode, list.stderr).toBe(0);
  expect(JSON.parse(list.stdout).map((w: { id: string }) => w.id)).toContain(id);
  expect((await mxc(['workloads'])).stdout).toMatch(/^ID +JOB +STATUS/);
  const shown = await mxc(['workloads', id, '-f', 'json']);
  expect([shown.exitCode, JSON.parse(shown.stdout).events.length > 0]).toEqual([0, true]);
  expect((await mxc(['nodes'])).stdout).toMatch(/^NAME +STATUS[^\n]*\nseed-node /);
  expect(JSON.parse((await mxc(['nodes', 'seed-node', '-f', 'json'])).stdout).name).toBe('seed-node');
  // Help is still help.
  expect((await mxc(['workloads', '--help'])).stdout).toMatch(/^Usage: mxc workloads/);

  const stopped = await mxc(['workloads', id, 'stop']);
  expect([stopped.exitCode, stopped.stdout]).toEqual([0, `${id}: stopping`]);
  await eventually(async () => (await workload(id)).status === 'stopped', 30_000, 'sleep to stop');
});
