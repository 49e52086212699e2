/**
 * Log lines are delivered at least once up to the database: a coordinator acknowledges an agent's
 * numbered log message only once its lines are committed, and a message sent again (its first
 * coordinator killed after reading it, or after committing it but before acknowledging) is stored once.
 * An agent that predates the numbering is neither welcomed with `log_acks` nor sent acknowledgements.
 * End to end: a real agent's coordinator process SIGKILLed after reading lines it could not commit (its
 * database stalled): they reach the database through the next coordinator, once each; and a
 * database restarted under the only coordinator loses none of the lines sent meanwhile.
 */
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, expect, it } from 'vitest';
import { Agent } from '../../agent/daemon.js';
import { pushClosure } from '../../compiler/push.js';
import * as logs from '../../scheduler/store/logs.js';
import { LOG_STREAM_HEADER, type LogLine } from '../../spec/messages.js';
import { buildScript } from '../agent/helpers.js';
import { scriptJob } from '../agent-e2e/harness.js';
import { plainJob, startTestCoordinator } from '../helpers/coordinator.js';
import { listeningUrl, MXC_BIN, startDaemon } from '../helpers/daemon-process.js';
import { createPostgresDb, dropPostgresDb } from '../helpers/db.js';
import { expectEachLineOnce, storedLineNumbers } from '../helpers/log-lines.js';
import { testLogger } from '../helpers/logger.js';
import { eventually, ProtocolAgent } from '../helpers/protocol-agent.js';
import { proxiedPostgres, startTcpProxy } from '../helpers/tcp-proxy.js';

const cleanup: (() => Promise<unknown>)[] = [];
afterAll(async () => {
  for (const f of cleanup.reverse()) await f().catch(() => {});
});

/** A real agent on `coordinator` (a comma-separated list), its state and store under `dir`, started and ready. */
async function startAgent(coordinator: string, name: string, dir: string): Promise<Agent> {
  const a = new Agent({
    coordinator,
    name,
    stateDir: join(dir, 'state'),
    storeRoot: join(dir, 'store'),
    logger: testLogger(),
    gracePeriodMs: 500,
    cgroups: false,
  });
  cleanup.push(() => a.close());
  await a.start();
  await a.ready;
  return a;
}

const line = (n: number): LogLine => ({
  process: 'main',
  stream: 'stdout',
  run: 1,
  ts: Date.now(),
  line: `line ${n}`,
});

it('acknowledges numbered log messages once stored, and stores one sent again (to another coordinator) once', async () => {
  const { url: databaseUrl, name } = await createPostgresDb();
  cleanup.push(() => dropPostgresDb(name));
  const a = await startTestCoordinator('postgres', { databaseUrl });
  cleanup.push(() => a.stop());
  const b = await startTestCoordinator('postgres', { databaseUrl });
  cleanup.push(() => b.stop());
  const headers = { [LOG_STREAM_HEADER]: 'stream-of-the-test-agent' };
  const first = await new ProtocolAgent({ url: a.url, name: 'numbered', headers }).connect();
  cleanup.push(async () => first.close());
  expect(first.received.find((m) => m.type === 'welcome')).toMatchObject({ log_acks: true });
  const id = (await a.coordinator.submitJob(plainJob({ name: 'numbered-logs', instances: 1 }))).workloads[0]!;
  await first.waitFor((m) => m.type === 'start');
  first.send({ type: 'logs', workload_id: id, lines: [line(0), line(1)], seq: 1 });
  first.send({ type: 'logs', workload_id: id, lines: [line(2)], seq: 2 });
  await first.waitFor((m) => m.type === 'logs_ack' && m.seq === 2);
  // Acknowledged after the commit: the lines are there by the time the ack is.
  const stored = async () => (await logs.readLogs(a.db, id, { limit: 100 })).map((l) => l.line);
  expect(await stored()).toEqual(['line 0', 'line 1', 'line 2']);

  // The agent lost the second ack (its coordinator died after the commit) and joins b: it sends the
  // message again, then a new one. The resend is acknowledged, not stored twice.
  first.close();
  const second = await new ProtocolAgent({ url: b.url, name: 'numbered', headers }).connect([id]);
  cleanup.push(async () => second.close());
  second.send({ type: 'logs', workload_id: id, lines: [line(2)], seq: 2 });
  second.send({ type: 'logs', workload_id: id, lines: [line(3)], seq: 3 });
  await second.waitFor((m) => m.type === 'logs_ack' && m.seq === 3);
  expect(
    second.received.filter((m) => m.type === 'logs_ack').map((m) => m.type === 'logs_ack' && m.seq),
  ).toEqual([2, 3]);
  expect(await stored()).toEqual(['line 0', 'line 1', 'line 2', 'line 3']);
});

it('an agent that does not number its log messages gets neither log_acks nor acknowledgements', async () => {
  const c = await startTestCoordinator('postgres');
  cleanup.push(() => c.stop());
  const old = await new ProtocolAgent({ url: c.url, name: 'unnumbered' }).connect();
  cleanup.push(async () => old.close());
  expect(old.received.find((m) => m.type === 'welcome')).not.toHaveProperty('log_acks');
  const id = (await c.coordinator.submitJob(plainJob({ name: 'unnumbered-logs', instances: 1 })))
    .workloads[0]!;
  await old.waitFor((m) => m.type === 'start');
  old.send({ type: 'logs', workload_id: id, lines: [line(0)] });
  const read = async () => (await logs.readLogs(c.db, id, { limit: 100 })).map((l) => l.line);
  await eventually(async () => (await read()).length > 0, 10_000, 'the line stored');
  expect(await read()).toEqual(['line 0']);
  expect(old.received.filter((m) => m.type === 'logs_ack')).toEqual([]);
  expect(old.received.filter((m) => m.type === 'error')).toEqual([]);
});

it('lines a coordinator read but had not committed when it was SIGKILLed reach the database through the next one, once each', async () => {
  const dir = await mkdtemp(join(tmpdir(), 'mxc-log-kill-'));
  cleanup.push(() => rm(dir, { recursive: true, force: true }));
  const { url: databaseUrl, name } = await createPostgresDb();
  cleanup.push(() => dropPostgresDb(name));
  // The coordinator to kill is a process reaching the database through a proxy that can stall it; the
  // other runs here. The agent reaches each through a proxy that counts what passes.
  const pgUrl = new URL(databaseUrl);
  const dbProxy = await startTcpProxy(Number(pgUrl.port || 5432), pgUrl.hostname);
  cleanup.push(() => dbProxy.close());
  pgUrl.port = String(dbProxy.port);
  const doomed = startDaemon(
    process.execPath,
    [MXC_BIN, 'coordinator', '--port', '0', '--data-dir', join(dir, 'doomed')],
    { DATABASE_URL: pgUrl.toString(), MXC_UI_ENABLED: 'false' },
  );
  cleanup.push(() => doomed.stop());
  const doomedUrl = await listeningUrl(doomed);
  const other = await startTestCoordinator('postgres', { databaseUrl, heartbeatIntervalMs: 300 });
  cleanup.push(() => other.stop());
  const toDoomed = await startTcpProxy(Number(new URL(doomedUrl).port));
  const toOther = await startTcpProxy(Number(new URL(other.url).port));
  cleanup.push(
    () => toDoomed.close(),
    () => toOther.close(),
  );
  const script = await buildScript(
    'log-kill',
    'i=0\nwhile true; do echo "line $i"; i=$((i+1)); sleep 0.02; done\n',
  );
  for (const c of [doomedUrl, other.url]) await pushClosure({ coordinator: c, paths: [script.path] });
  // The agent joins the doomed one first (the other refuses connections until it is killed).
  await toOther.cut();
  const a = await startAgent(
    [toDoomed, toOther].map((p) => `http://127.0.0.1:${p.port}`).join(','),
    'witness',
    dir,
  );
  const id = (await other.coordinator.submitJob(scriptJob('log-kill', script.path))).workloads[0]!;
  const numbers = () => storedLineNumbers(other.db, id);
  await eventually(async () => (await numbers()).length >= 20, 30_000, 'the first lines');

  // Its database stalls: the coordinator reads the agent's lines (and answers its pings) but cannot
  // commit them. Once lines went to it and it answered something sent after them, it is killed.
  await dbProxy.freeze();
  const stalledAt = Math.max(...(await numbers()));
  const sentFrom = toDoomed.bytes().up;
  await eventually(async () => toDoomed.bytes().up > sentFrom + 2000, 10_000, 'lines sent to it');
  const answeredFrom = toDoomed.bytes();
  await eventually(
    async () => toDoomed.bytes().up > answeredFrom.up && toDoomed.bytes().down > answeredFrom.down,
    15_000,
    'an answer to something sent after them',
  );
  doomed.proc.kill('SIGKILL');
  await doomed.proc;
  await dbProxy.cut();
  await toOther.restore();

  await eventually(async () => other.coordinator.isConnected(a.nodeId!), 15_000, 'the move to the other');
  await eventually(
    async () => Math.max(...(await numbers())) > stalledAt + 300,
    30_000,
    'lines past the kill',
  );
  expectEachLineOnce(await numbers());
}, 120_000);

it.each(['postgres', 'pglite'] as const)(
  'one message stored through two coordinators at once is stored once (%s)',
  async (engine) => {
    const c = await startTestCoordinator(engine);
    cleanup.push(() => c.stop());
    const p = await new ProtocolAgent({ url: c.url, name: 'twice' }).connect();
    cleanup.push(async () => p.close());
    const id = (await c.coordinator.submitJob(plainJob({ name: 'twice-logs', instances: 1 }))).workloads[0]!;
    await p.waitFor((m) => m.type === 'start');
    const message = { stream: 'stream-stored-twice-at-once', nodeId: p.nodeId, seq: 7 };
    const fresh = await Promise.all(
      Array.from({ length: 4 }, () => logs.insertLogsOnce(c.db, message, id, [line(0), line(1)])),
    );
    expect(fresh.filter(Boolean)).toHaveLength(1);
    expect(await logs.insertLogsOnce(c.db, { ...message, seq: 6 }, id, [line(2)])).toBe(false);
    expect((await logs.readLogs(c.db, id, { limit: 100 })).map((l) => l.line)).toEqual(['line 0', 'line 1']);
  },
);

it('a database restarted under the only coordinator loses none of the lines its agent sent meanwhile', async () => {
  const dir = await mkdtemp(join(tmpdir(), 'mxc-log-restart-'));
  cleanup.push(() => rm(dir, { recursive: true, force: true }));
  const { proxy, url, dbName } = await proxiedPostgres();
  cleanup.push(
    () => dropPostgresDb(dbName),
    () => proxy.close(),
  );
  const c = await startTestCoordinator('postgres', { databaseUrl: url, heartbeatIntervalMs: 300 });
  cleanup.push(() => c.stop());
  const script = await buildScript(
    'log-restart',
    'i=0\nwhile true; do echo "line $i"; i=$((i+1)); sleep 0.02; done\n',
  );
  await pushClosure({ coordinator: c.url, paths: [script.path] });
  const a = await startAgent(c.url, 'through-restart', dir);
  const id = (await c.coordinator.submitJob(scriptJob('log-restart', script.path))).workloads[0]!;
  const numbers = () => storedLineNumbers(c.db, id);
  await eventually(async () => (await numbers()).length >= 20, 30_000, 'the first lines');

  // The server restarts: every connection ends, and new ones are refused until it is back. The
  // coordinator reads what the agent sends meanwhile (and answers its pings) but cannot store it.
  await proxy.cut();
  const read = await c.db.query('SELECT 1').then(
    () => true,
    () => false,
  );
  expect(read).toBe(false);
  await eventually(
    async () => c.coordinator.isConnected(a.nodeId!) === false,
    15_000,
    'the agent let go (its reports cannot be stored)',
  );
  await proxy.restore();
  const restoredAt = Math.max(
    ...(await eventually(async () => numbers().catch(() => null), 15_000, 'a read')),
  );
  await eventually(async () => c.coordinator.isConnected(a.nodeId!), 30_000, 'the agent back');
  await eventually(
    async () => Math.max(...(await numbers())) > restoredAt + 100,
    30_000,
    'lines past the restart',
  );
  expectEachLineOnce(await numbers());
}, 120_000);
