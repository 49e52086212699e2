/**
 * The agent's side of acknowledged log delivery (LOG_STREAM_HEADER): it names its log stream in the
 * upgrade request; to a coordinator that welcomes it with `log_acks` it numbers its log messages and
 * keeps each until acknowledged, sending the unacknowledged ones again, first and under the same numbers,
 * on its next session; to one that does not (an older coordinator, whose messages are strict) it sends
 * them unnumbered, as before.
 */
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, expect, test } from 'vitest';
import { Agent } from '../../agent/daemon.js';
import { type AgentMessage, LOG_STREAM_HEADER } from '../../spec/messages.js';
import { FakeCoordinator } from '../helpers/fake-coordinator.js';
import { testLogger } from '../helpers/logger.js';
import { eventually } from '../helpers/protocol-agent.js';

const cleanup: (() => Promise<unknown>)[] = [];
afterAll(async () => {
  for (const f of cleanup.reverse()) await f();
});

interface ConnectionInside {
  queueLog(id: string, l: { process: string; stream: 'stdout'; run: number; ts: number; line: string }): void;
  flushLogs(): void;
  readonly sessions: number;
}

async function agentOf(coord: FakeCoordinator, name: string) {
  const stateDir = await mkdtemp(join(tmpdir(), `mxc-${name}-`));
  cleanup.push(() => rm(stateDir, { recursive: true, force: true }));
  const agent = new Agent({ coordinator: coord.url, name, stateDir, logger: testLogger(), cgroups: false });
  cleanup.push(() => agent.close());
  await agent.start();
  await agent.ready;
  const conn = (agent as unknown as { conn: ConnectionInside }).conn;
  const say = (line: string) => {
    conn.queueLog('w-1', { process: 'p', stream: 'stdout', run: 1, ts: Date.now(), line });
    conn.flushLogs();
  };
  return { conn, say };
}

type Logs = Extract<AgentMessage, { type: 'logs' }>;
const logsOf = (coord: FakeCoordinator) => coord.received.filter((m): m is Logs => m.type === 'logs');

test('to a coordinator that acknowledges, log messages are numbered and the unacknowledged sent again first', async () => {
  const coord = await FakeCoordinator.start({ log_acks: true });
  cleanup.push(() => coord.close());
  const { conn, say } = await agentOf(coord, 'acked');
  const stream = coord.upgrades[0]![LOG_STREAM_HEADER];
  expect(stream).toMatch(/^[A-Za-z0-9_-]{16,64}$/);
  for (const l of ['one', 'two', 'three']) say(l);
  await eventually(async () => logsOf(coord).length === 3, 10_000, 'three messages');
  expect(logsOf(coord).map((m) => [m.seq, m.lines[0]!.line])).toEqual([
    [1, 'one'],
    [2, 'two'],
    [3, 'three'],
  ]);
  // The first is committed; the coordinator dies before acknowledging the others (or before committing).
  coord.send({ type: 'logs_ack', seq: 1 });
  // A heartbeat that came after the ack was sent: the agent has read it (one socket, in order).
  const acked = coord.received.length;
  await eventually(
    async () => coord.received.slice(acked).some((m) => m.type === 'heartbeat'),
    10_000,
    'a heartbeat after the ack',
  );
  const sessions = conn.sessions;
  coord.received.length = 0;
  coord.dropAgent();
  await eventually(async () => conn.sessions > sessions, 15_000, 'the next session');
  say('four');
  await eventually(async () => logsOf(coord).length === 3, 10_000, 'the resends and the new line');
  expect(logsOf(coord).map((m) => [m.seq, m.lines[0]!.line])).toEqual([
    [2, 'two'],
    [3, 'three'],
    [4, 'four'],
  ]);
  // Same stream on the new socket: the coordinator can tell the resends from new messages.
  expect(coord.upgrades[1]![LOG_STREAM_HEADER]).toBe(stream);
});

test('to a coordinator that does not acknowledge (an older one), log messages go unnumbered', async () => {
  const coord = await FakeCoordinator.start();
  cleanup.push(() => coord.close());
  const { say } = await agentOf(coord, 'unacked');
  say('plain');
  await eventually(async () => logsOf(coord).length === 1, 10_000, 'the message');
  const [m] = logsOf(coord);
  // Only what an older coordinator's strict schema takes.
  expect(Object.keys(m!).sort()).toEqual(['lines', 'type', 'workload_id']);
});
