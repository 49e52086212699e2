/**
 * The coordinator goes away and comes back on the same database: a real agent keeps its processes
 * running meanwhile, reconnects with backoff, reports what it runs, and nothing is rescheduled.
 */
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Logger } from 'pino';
import { afterAll, expect, it } from 'vitest';
import { Agent } from '../../agent/daemon.js';
import { pushClosure } from '../../compiler/push.js';
import { buildScript } from '../agent/helpers.js';
import { startTestCoordinator, type TestCoordinator } from '../helpers/coordinator.js';
import { createPostgresDb, dropPostgresDb } from '../helpers/db.js';
import { captureLogger } from '../helpers/logger.js';
import { eventually, scriptJob } from './harness.js';

const cleanup: (() => Promise<void>)[] = [];
afterAll(async () => {
  for (const f of cleanup.reverse()) await f().catch(() => {});
});

/**
 * A coordinator on a PostgreSQL database of its own and one real agent joined to it; `stopCoordinator`
 * takes the coordinator away (the database stays), `restartCoordinator` brings one back on the same port.
 */
async function coordinatorWithAgent(agentName: string, agentLogger: Logger) {
  const dir = await mkdtemp(join(tmpdir(), 'mxc-coord-restart-'));
  const { url: databaseUrl, name } = await createPostgresDb();
  cleanup.push(
    () => rm(dir, { recursive: true, force: true }),
    () => dropPostgresDb(name),
  );
  const dataDir = join(dir, 'coordinator');
  const c: TestCoordinator = await startTestCoordinator('postgres', { dataDir, databaseUrl });
  const port = Number(new URL(c.url).port);
  const agent = new Agent({
    coordinator: c.url,
    name: agentName,
    stateDir: join(dir, 'agent'),
    storeRoot: join(dir, 'store'),
    logger: agentLogger,
    gracePeriodMs: 500,
  });
  cleanup.push(() => agent.close());
  await agent.start();
  await agent.ready;
  return {
    dir,
    c,
    agent,
    async stopCoordinator() {
      await c.close(); // the server alone (its data dir let go): the database stays for the restart
    },
    async restartCoordinator(logger: Logger) {
      const again = await startTestCoordinator('postgres', { dataDir, databaseUrl, port, logger });
      cleanup.push(() => again.stop());
      return again;
    },
  };
}

it('keeps workloads running through a coordinator restart and reconciles on reconnect', async () => {
  const agentLog = captureLogger('debug');
  const setup = await coordinatorWithAgent('steady', agentLog.logger);
  const { agent } = setup;
  let c = setup.c;

  const s = await buildScript('coord-restart', 'echo up\nexec sleep 1000\n');
  await pushClosure({ coordinator: c.url, paths: [s.path] });
  const sub = await c.coordinator.submitJob(scriptJob('steady', s.path));
  const id = sub.workloads[0]!;
  await eventually(async () => (await c.api('GET', `/api/workloads/${id}`)).body.data.status === 'running');

  // The coordinator goes away; the process does not, through the agent's failed attempts to reconnect.
  await setup.stopCoordinator();
  const since = agentLog.records.length;
  const failedAttempts = () =>
    agentLog.records.slice(since).filter((r) => r.msg === 'coordinator connection error').length;
  await eventually(async () => failedAttempts() >= 2, 20_000, 'two failed reconnect attempts');
  expect(agent.runningIds()).toEqual([id]);
  // The session's end is one warning (it may come before `since`); the failed attempts after it are
  // not one each (once a minute).
  const warned = agentLog.records.filter((r) => r.level === 40 && /coordinator/.test(r.msg));
  expect(warned.map((r) => r.msg)).toEqual(['disconnected from coordinator; reconnecting']);
  expect(
    agentLog.records.slice(since).filter((r) => r.msg === 'connecting to the coordinator failed').length,
  ).toBeGreaterThanOrEqual(1);

  // Its log from the start: the agent may reconnect before anything could subscribe to its events.
  const coordinatorLog = captureLogger('debug');
  c = await setup.restartCoordinator(coordinatorLog.logger);
  // Settled means: the agent's hello was reconciled (every stop, start and loss it decides is sent and
  // written by then) and a scheduling pass ran after that (a replacement would have been placed).
  await eventually(
    async () => coordinatorLog.records.some((r) => r.msg === 'agent hello reconciled' && r.node === 'steady'),
    20_000,
    'the agent to reconnect and its hello to be reconciled',
  );
  await c.coordinator.evaluate();
  const ws = (await c.api('GET', '/api/workloads')).body.data;
  expect(ws.map((w: { id: string; status: string }) => [w.id, w.status])).toEqual([[id, 'running']]);
  expect(agent.runningIds()).toEqual([id]);
});

it('a task that ends while the coordinator is away is reported on reconnect: not lost, not run again', async () => {
  const setup = await coordinatorWithAgent('batch', captureLogger('debug').logger);
  const { dir, agent } = setup;
  let c = setup.c;

  // A batch task that waits for the test's signal, then fails with code 3 (its end must be told as it was).
  const go = join(dir, 'go');
  const s = await buildScript('coord-away', `while [ ! -e ${go} ]; do sleep 0.05; done\necho done\nexit 3\n`);
  await pushClosure({ coordinator: c.url, paths: [s.path] });
  const sub = await c.coordinator.submitJob(scriptJob('batch', s.path));
  const id = sub.workloads[0]!;
  await eventually(async () => (await c.api('GET', `/api/workloads/${id}`)).body.data.status === 'running');

  await setup.stopCoordinator();
  await writeFile(go, '');
  await eventually(async () => agent.runningIds().length === 0, 20_000, 'the task to end on the agent');

  c = await setup.restartCoordinator(captureLogger('debug').logger);
  const ended = await eventually(
    async () => {
      const w = (await c.api('GET', `/api/workloads/${id}`)).body.data;
      return w.status === 'failed' ? w : null;
    },
    20_000,
    'the end to be reported on reconnect',
  );
  expect(JSON.stringify(ended)).toMatch(/process main failed/);
  await c.coordinator.evaluate();
  // One workload, failed as it did (max_task_failures 1): none lost, none run again.
  const ws = (await c.api('GET', `/api/workloads?job=${sub.job.id}`)).body.data;
  expect(ws.map((w: { id: string; status: string }) => [w.id, w.status])).toEqual([[id, 'failed']]);
});
