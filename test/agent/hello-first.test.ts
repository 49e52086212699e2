/**
 * The coordinator takes nothing before an agent's hello (it answers HELLO_FIRST and drops the message).
 * What the agent sends between its socket's opening and the welcome (a workload's status, log lines:
 * under `mxc up` they came before the hello) waits and goes after the welcome, in order.
 */
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, expect, test } from 'vitest';
import WebSocket from 'ws';
import { Agent } from '../../agent/daemon.js';
import type { LogLine } from '../../spec/messages.js';
import { FakeCoordinator } from '../helpers/fake-coordinator.js';
import { testLogger } from '../helpers/logger.js';
import { eventually } from '../helpers/protocol-agent.js';

const cleanup: (() => Promise<unknown>)[] = [];
afterAll(async () => {
  for (const f of cleanup.reverse()) await f();
});

interface ConnectionInside {
  ws: WebSocket | null;
  send(msg: unknown): void;
  queueLog(id: string, l: LogLine): void;
  flushLogs(): void;
}

test('messages sent before the welcome go after the hello, in order; none is lost', async () => {
  const coord = await FakeCoordinator.start();
  cleanup.push(() => coord.close());
  const stateDir = await mkdtemp(join(tmpdir(), 'mxc-hello-first-'));
  cleanup.push(() => rm(stateDir, { recursive: true, force: true }));
  const agent = new Agent({
    coordinator: coord.url,
    name: 'early',
    stateDir,
    logger: testLogger(),
    gracePeriodMs: 500,
    cgroups: false,
  });
  cleanup.push(() => agent.close());
  const conn = (agent as unknown as { conn: ConnectionInside }).conn;
  await agent.start();

  // The socket is open; the hello is still being put together (resources, the cache key, the store).
  await eventually(async () => conn.ws?.readyState === WebSocket.OPEN, 10_000, 'the socket to open');
  expect(coord.received, 'the hello went before the test could send first').toEqual([]);
  conn.send({ type: 'workload_status', workload_id: 'w-early', status: 'running' });
  conn.queueLog('w-early', { process: 'p', stream: 'stdout', run: 1, ts: 1, line: 'said early' });
  conn.flushLogs();

  await agent.ready;
  await eventually(async () => coord.received.some((m) => m.type === 'logs'), 10_000, 'the early log line');
  const kinds = coord.received.map((m) => m.type);
  expect(kinds[0]).toBe('hello');
  expect(kinds.indexOf('workload_status')).toBeGreaterThan(0);
  expect(kinds.indexOf('logs')).toBeGreaterThan(kinds.indexOf('workload_status'));
  const logs = coord.received.find((m) => m.type === 'logs');
  expect(logs).toMatchObject({ workload_id: 'w-early', lines: [{ line: 'said early' }] });
});
