// An agent that sends faster than the coordinator can handle (a flood of reports while the database
// is slow, here held back by a lock) is held back by TCP once its backlog is full: the coordinator
// stops reading its socket instead of buffering whatever arrives, reads it again as the backlog drains,
// and handles every message, in order.
import pg from 'pg';
import { afterAll, beforeAll, expect, test } from 'vitest';
import WebSocket from 'ws';
import {
  AGENT_BACKLOG_BYTES,
  AGENT_BACKLOG_MESSAGES,
  AGENT_UNREAD_BYTES,
} from '../../scheduler/api/routes/agent-ws.js';
import { acceptedWhile, startTestCoordinator, type TestCoordinator } from '../helpers/coordinator.js';
import { captureLogger } from '../helpers/logger.js';
import { eventually, helloFrame, ProtocolAgent } from '../helpers/protocol-agent.js';

const HELD_BACK = 'an agent sends faster than its messages are handled; its socket is read as they are';
const log = captureLogger('warn');
let c: TestCoordinator;
beforeAll(async () => {
  c = await startTestCoordinator('postgres', { logger: log.logger });
});
afterAll(async () => {
  await c?.stop();
});

test('a flooding agent is read no faster than its messages are handled, and every one is handled', async () => {
  // The agent, and its connection as the coordinator holds it.
  const [p, theirs] = await acceptedWhile(c, () =>
    new ProtocolAgent({ url: c.url, name: 'flood', heartbeat: false }).connect(),
  );
  // Reports are handled in a transaction that reads the workload: held up while the table is locked.
  const lock = new pg.Client({ connectionString: c.databaseUrl! });
  await lock.connect();
  try {
    await lock.query('BEGIN');
    await lock.query('LOCK TABLE workloads IN ACCESS EXCLUSIVE MODE');
    // 64 MiB of reports (32 KiB each): four times the backlog's byte limit, beyond any socket buffer.
    const reason = 'x'.repeat(32 * 1024);
    const count = (4 * AGENT_BACKLOG_BYTES) / reason.length;
    for (let i = 0; i < count; i++)
      p.send({ type: 'workload_status', workload_id: `flood-0-${i}`, status: 'running', reason });
    // The coordinator stops reading once its backlog is full: the rest waits in the agent's buffers.
    await eventually(
      async () => log.records.some((r) => r.msg === HELD_BACK),
      10_000,
      'the coordinator to stop reading the flooding agent',
    );
    const held = log.records.find((r) => r.msg === HELD_BACK) as unknown as {
      messages: number;
      bytes: number;
    };
    // Held back at one limit or the other, never past them by more than the message that reached one.
    expect(held.messages === AGENT_BACKLOG_MESSAGES || held.bytes >= AGENT_BACKLOG_BYTES).toBe(true);
    expect(held.messages).toBeLessThanOrEqual(AGENT_BACKLOG_MESSAGES);
    expect(held.bytes).toBeLessThan(AGENT_BACKLOG_BYTES + reason.length + 1024);
    // And it has stopped reading: its end of the connection is paused, the rest waits in the agent's buffers.
    expect(theirs.isPaused()).toBe(true);
    expect(theirs.bytesRead).toBeLessThan(2 * AGENT_BACKLOG_BYTES);
    expect(p.ws.bufferedAmount).toBeGreaterThan(0);
  } finally {
    await lock.query('ROLLBACK');
    await lock.end();
  }
  // Read again as the backlog drains; a bad frame after the flood is answered only once every report
  // before it was handled (one connection's messages are handled in order).
  p.send({ type: 'not-a-message' });
  await p.waitFor((m) => m.type === 'error' && m.code === 'BAD_MESSAGE', 60_000);
  expect(p.ws.bufferedAmount).toBe(0);
  expect((await c.api('GET', '/api/nodes')).status).toBe(200);
  p.close();
}, 90_000);

test('an agent that sends bad frames and never reads the answers holds little of the coordinator', async () => {
  const [ws, theirs] = await acceptedWhile(c, async () => {
    const ws = new WebSocket(`${c.url.replace('http', 'ws')}/api/agent/ws`);
    await new Promise((r, j) => ws.once('open', r).once('error', j));
    return ws;
  });
  const welcome = new Promise((r) => ws.once('message', r));
  ws.send(JSON.stringify(helloFrame('deaf')));
  await welcome;
  // The agent reads nothing from now on.
  (ws as unknown as { _socket: import('node:net').Socket })._socket.pause();
  // Each of these frames is answered by an error naming its problems: 20,000 wrong entries named one
  // by one made a 1 MiB answer to a 40 KiB frame; a one-byte frame gets a hundred-byte answer.
  const wrong = JSON.stringify({ type: 'store_paths', added: Array.from({ length: 20_000 }, () => 1) });
  for (let i = 0; i < 40; i++) ws.send(wrong);
  for (let i = 0; i < 100_000; i++) ws.send('1');
  await new Promise<void>((r) => ws.send('1', () => r()));
  // The coordinator reads the frames until what it wrote and the agent did not take reaches its bound,
  // and then no further: what it holds for the agent stays near that bound.
  const NOT_READING =
    'an agent does not read what the coordinator sends; its socket is read no further until it does';
  // Until the coordinator reads no more: all of it read, or the rest left unread.
  let last = -1;
  await eventually(
    async () => {
      const now = theirs.bytesRead;
      const still = now === last;
      last = now;
      await new Promise((r) => setTimeout(r, 1000));
      return still;
    },
    60_000,
    'the coordinator to read no more',
  );
  expect(theirs.writableLength).toBeLessThan(AGENT_UNREAD_BYTES + 64 * 1024);
  expect(theirs.isPaused()).toBe(true);
  expect(log.records.filter((r) => r.msg === NOT_READING)).toHaveLength(1);
  ws.terminate();
}, 60_000);
