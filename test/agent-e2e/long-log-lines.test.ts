/**
 * A workload writing long log lines fast must not cut its agent off the coordinator. The agent used to
 * cut what it sends into `logs` frames by count alone (5,000 lines): lines of 16 KB gathered while its
 * event loop was busy made one frame of tens of MB, the coordinator closed the socket (1009, over its
 * 8 MiB limit), the agent sent the next one on every reconnect, the lines were lost, and the node went
 * down with the other workloads on it.
 */
import { afterAll, beforeAll, expect, it } from 'vitest';
import type { Agent } from '../../agent/daemon.js';
import type { LogLine } from '../../spec/messages.js';
import { type Cluster, eventually, logLines, startCluster, TOKENS } from './harness.js';

let cluster: Cluster;
let agent: Agent;
beforeAll(async () => {
  cluster = await startCluster();
  agent = await cluster.agent('chatty-node', { storeRoot: undefined });
}, 180_000);
afterAll(async () => cluster?.stop());

const call = (method: string, path: string, body?: unknown) =>
  cluster.c.api(method, path, body, { authorization: `Bearer ${TOKENS.api}` });

const running = (id: string) =>
  eventually(
    async () => (await call('GET', `/api/workloads/${id}`)).body.data.status === 'running',
    30_000,
    `workload ${id} to run`,
  );

it('a burst of long lines arrives whole, in frames the coordinator takes, and the node stays up', async () => {
  const other = (await call('POST', '/api/workloads', { command: 'sleep 300', cpu: 0.1, memory_mb: 16 })).body
    .data.id as string;
  const chatty = (await call('POST', '/api/workloads', { command: 'sleep 300', cpu: 0.1, memory_mb: 16 }))
    .body.data.id as string;
  await running(other);
  await running(chatty);

  // 1,200 lines of 16,000 characters (~19 MB) queued in one turn of the event loop, as a workload's
  // output piles up while the agent is busy: what the agent does with them is what is tested.
  const conn = (agent as unknown as { conn: { queueLog(id: string, l: LogLine): void } }).conn;
  const text = 'a'.repeat(16_000);
  for (let i = 0; i < 1200; i++)
    conn.queueLog(chatty, { process: 'p', stream: 'stdout', run: 1, ts: Date.now(), line: `${i} ${text}` });

  await eventually(
    async () => (await logLines(cluster.c, chatty)).filter((l) => l.stream === 'stdout').length >= 1200,
    60_000,
    'all 1,200 lines at the coordinator',
  );
  const lines = (await logLines(cluster.c, chatty)).filter((l) => l.stream === 'stdout');
  expect(lines.map((l) => l.line)).toEqual(Array.from({ length: 1200 }, (_, i) => `${i} ${text}`));
  expect((await call('GET', '/api/nodes/chatty-node')).body.data.status).toBe('ready');
  for (const id of [other, chatty])
    expect((await call('GET', `/api/workloads/${id}`)).body.data.status).toBe('running');
}, 120_000);

it('a line holding NUL bytes (binary output) arrives with them replaced, not its whole frame refused', async () => {
  const id = (await call('POST', '/api/workloads', { command: 'sleep 300', cpu: 0.1, memory_mb: 16 })).body
    .data.id as string;
  await running(id);
  const conn = (agent as unknown as { conn: { queueLog(id: string, l: LogLine): void } }).conn;
  const base = { process: 'p', stream: 'stdout', run: 1, ts: Date.now() } as const;
  conn.queueLog(id, { ...base, line: 'before' });
  conn.queueLog(id, { ...base, line: 'bin\u0000ary' });
  conn.queueLog(id, { ...base, line: 'after' });
  const lines = await eventually(
    async () => {
      const got = (await logLines(cluster.c, id)).filter((l) => l.stream === 'stdout').map((l) => l.line);
      return got.length >= 3 ? got : null;
    },
    20_000,
    'the three lines',
  );
  expect(lines).toEqual(['before', 'bin\uFFFDary', 'after']);
});
