// A client that subscribes to /api/events and stops reading (a laptop asleep, or one that never reads)
// is dropped once it leaves EVENTS_UNREAD_MAX unread, instead of the coordinator holding every change
// since in memory; a subscriber that reads keeps up through the same burst. A log follow whose client
// stops reading stops reading the logs until it reads again, and then gets every line.
import { connect } from 'node:net';
import { Worker } from 'node:worker_threads';
import { afterAll, beforeAll, expect, test } from 'vitest';
import { EVENTS_UNREAD_MAX } from '../../scheduler/api/routes/events.js';
import { insertLogs } from '../../scheduler/store/logs.js';
import {
  acceptedWhile,
  plainJob,
  startTestCoordinator,
  type TestCoordinator,
} from '../helpers/coordinator.js';
import { captureLogger } from '../helpers/logger.js';
import { eventually } from '../helpers/protocol-agent.js';

const READER = `
const { parentPort, workerData } = require('node:worker_threads');
(async () => {
  const res = await fetch(workerData);
  const dec = new TextDecoder();
  let rest = '';
  let n = 0;
  for await (const chunk of res.body) {
    rest += dec.decode(chunk, { stream: true });
    const lines = rest.split('\\n');
    rest = lines.pop();
    const more = lines.filter((l) => l.startsWith('data: ')).length;
    if (more) parentPort.postMessage((n += more));
  }
})();`;
const DROPPED = 'dropped an event subscriber that stopped reading; it may reconnect';
const log = captureLogger('debug');
let c: TestCoordinator;
beforeAll(async () => {
  c = await startTestCoordinator('pglite', { logger: log.logger });
});
afterAll(async () => {
  await c?.stop();
});

test('an event subscriber that stops reading is dropped, one that reads is not', async () => {
  const changes = () => c.coordinator.events.listenerCount('change');
  const before = changes();
  const { port } = new URL(c.url);
  // The stalled one: sends its request, then never reads.
  const stalled = connect(Number(port), '127.0.0.1');
  await new Promise((r) => stalled.once('connect', r));
  stalled.pause();
  stalled.write('GET /api/events HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n');
  // The reader, in a thread of its own (as a dashboard in a browser reads): reads everything, counting
  // the events, and posts the count whenever it grows.
  const reader = new Worker(READER, { eval: true, workerData: `${c.url}/api/events` });
  let received = 0;
  reader.on('message', (n: number) => {
    received = n;
  });
  await eventually(async () => changes() === before + 2, 5000, 'both subscribed');

  // A burst of changes, 1,000 to a turn of the event loop (as a scheduling pass emits them), ~250 bytes
  // each: 8 times the limit, beyond what the sockets' buffers take.
  const id = 'w'.repeat(200);
  const total = Math.ceil((8 * EVENTS_UNREAD_MAX) / 250 / 1000) * 1000;
  for (let i = 0; i < total; i += 1000) {
    for (let j = 0; j < 1000; j++)
      c.coordinator.events.emit('change', { kind: 'workload', id: `${id}-${i + j}`, status: 'running' });
    await new Promise((r) => setImmediate(r));
  }
  // The stalled subscriber was dropped and its listener removed; the reader got every event.
  await eventually(async () => changes() === before + 1, 10_000, 'the stalled subscriber dropped');
  expect(log.records.filter((r) => r.msg === DROPPED)).toHaveLength(1);
  await eventually(async () => received === total, 10_000, `all ${total} events read`);
  await reader.terminate();
  stalled.destroy();
  await eventually(async () => changes() === before, 5000, 'the reader unsubscribed');
}, 60_000);

/** A connection that reads nothing, and the coordinator's end of it. */
async function pausedClient() {
  const { port } = new URL(c.url);
  const [client, theirs] = await acceptedWhile(c, async () => {
    const s = connect(Number(port), '127.0.0.1');
    await new Promise((r) => s.once('connect', r));
    return s;
  });
  client.pause();
  return [client, theirs] as const;
}

/** Stores `total` lines `<n> <text>` for a workload, `batch` to a statement, as an agent's reports would. */
async function fillLogs(id: string, total: number, batch: number, text: string) {
  for (let i = 0; i < total; i += batch)
    await insertLogs(
      c.coordinator.db,
      id,
      Array.from({ length: batch }, (_, j) => ({
        process: 'p',
        stream: 'stdout' as const,
        run: 0,
        ts: Date.now(),
        line: `${i + j} ${text}`,
      })),
    );
}

test('a log follow whose client stops reading waits for it, then sends every line', async () => {
  const sub = await c.coordinator.submitJob(plainJob({ name: 'chatty' }));
  const id = sub.workloads[0]!;
  // ~10 MiB of logs: ten of the route's reads of 1,000 lines.
  const text = 'y'.repeat(1000);
  const total = 10_000;
  await fillLogs(id, total, 2000, text);
  // The client, and its connection as the coordinator holds it.
  const [client, theirs] = await pausedClient();
  client.write(`GET /api/workloads/${id}/logs?follow=1&after=0 HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n`);
  await eventually(
    async () => log.records.some((r) => r.msg === 'a log follow waits for its client to read'),
    10_000,
    'the follow to wait for its client',
  );
  // What it holds unsent is about one read's worth, not the whole log.
  expect(theirs.writableLength).toBeLessThan(3 * 1024 * 1024);
  // Read again: every line arrives, in order.
  let seen = 0;
  let rest = '';
  let inOrder = true;
  client.on('data', (chunk: Buffer) => {
    rest += chunk.toString('latin1');
    const lines = rest.split('\n');
    rest = lines.pop()!;
    for (const l of lines) {
      const m = /"line":"(\d+) /.exec(l);
      if (!m) continue;
      if (Number(m[1]) !== seen) inOrder = false;
      seen++;
    }
  });
  client.resume();
  await eventually(async () => seen === total, 20_000, `all ${total} lines read`);
  expect(inOrder).toBe(true);
  client.destroy();
}, 60_000);

test('a tail follow (no after, limit 100,000) of wide lines holds one page for a client that does not read', async () => {
  const sub = await c.coordinator.submitJob(plainJob({ name: 'wide-tail' }));
  const id = sub.workloads[0]!;
  // 3,000 lines of 16 KiB (the most an agent sends): 47 MiB, all of it in the tail asked for.
  const wide = 'z'.repeat(16 * 1024 - 10);
  const total = 3000;
  await fillLogs(id, total, 500, wide);
  const waits = () => log.records.filter((r) => r.msg === 'a log follow waits for its client to read').length;
  const before = waits();
  const [client, theirs] = await pausedClient();
  client.write(`GET /api/workloads/${id}/logs?follow=1&limit=100000 HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n`);
  await eventually(async () => waits() > before, 10_000, 'the follow to wait for its client');
  // Unsent, it holds about one page (1 MiB of entries), not the 47 MiB asked for.
  expect(theirs.writableLength).toBeLessThan(2 * 1024 * 1024);
  let seen = 0;
  let rest = '';
  client.on('data', (chunk: Buffer) => {
    rest += chunk.toString('latin1');
    const lines = rest.split('\n');
    rest = lines.pop()!;
    seen += lines.filter((l) => l.includes('"line":"')).length;
  });
  client.resume();
  await eventually(async () => seen === total, 30_000, `all ${total} lines read`);
  client.destroy();
}, 60_000);
