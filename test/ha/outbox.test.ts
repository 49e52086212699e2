/**
 * The agent command outbox (issue 14): every decision writes its agents' commands in its own
 * transaction, and the coordinator holding the agent's socket delivers them. A decision committed by a
 * coordinator that never sends (here: a bare database handle that commits and closes, as a coordinator
 * killed right after its commit) still reaches the agent; a rolled-back decision queues nothing;
 * a workload's start never goes out after its stop; what was queued while the agent was away arrives after
 * its reconnect to another coordinator; a workload declared lost is stopped on its node through it.
 */

import type { Logger } from 'pino';
import { afterEach, describe, expect, it } from 'vitest';
import { recordSubmission } from '../../scheduler/job-submit.js';
import { SchedulerState, schedulePass } from '../../scheduler/placement.js';
import * as commands from '../../scheduler/store/agent-commands.js';
import { type Db, openPostgres } from '../../scheduler/store/db.js';
import * as jobs from '../../scheduler/store/jobs.js';
import { stopJobWorkloads } from '../../scheduler/workload-changes.js';
import { JobSpec, type JobSpecInput, jobKey } from '../../spec/job.js';
import { plainJob, startTestCoordinator, type TestCoordinator } from '../helpers/coordinator.js';
import { createPostgresDb, dropPostgresDb } from '../helpers/db.js';
import { captureLogger, testLogger } from '../helpers/logger.js';
import { eventually, ProtocolAgent } from '../helpers/protocol-agent.js';

const cleanup: (() => Promise<unknown>)[] = [];
// After each test: its coordinators' connection pools would otherwise add up to more than PostgreSQL's
// 100 connections, beside the other suites running at the same time.
afterEach(async () => {
  for (const f of cleanup.splice(0).reverse()) await f().catch(() => {});
});

/** A fresh PostgreSQL database for one test, dropped at the end; returns its URL. */
async function sharedDatabase(): Promise<string> {
  const { url, name } = await createPostgresDb();
  cleanup.push(() => dropPostgresDb(name));
  return url;
}

/** A coordinator on that database, stopped at the end. */
async function coordinatorOn(
  databaseUrl: string,
  heartbeatTtlMs?: number,
  logger?: Logger,
): Promise<TestCoordinator> {
  const c = await startTestCoordinator('postgres', { databaseUrl, heartbeatTtlMs, logger });
  cleanup.push(() => c.stop());
  return c;
}

const status = async (c: TestCoordinator, id: string) =>
  (await c.api('GET', `/api/workloads/${id}`)).body.data?.status as string | undefined;

/** A coordinator that decides and commits, then is gone before any after-commit step could send. */
async function decideAndDie<T>(databaseUrl: string, decide: (db: Db) => Promise<T>): Promise<T> {
  const db = await openPostgres(databaseUrl, { max: 2 });
  try {
    return await decide(db);
  } finally {
    await db.close();
  }
}

/** Submits and places a job the way a coordinator does, without sending anything after the commit. */
async function submitAndPlace(
  db: Db,
  input: JobSpecInput,
  closure: { path: string; nar_size: number }[] = [],
) {
  const spec = JobSpec.parse(input);
  const rec = await recordSubmission(db, jobKey(spec), spec, closure);
  await schedulePass({
    db,
    state: new SchedulerState(),
    log: testLogger(),
    strategy: 'spread',
    specOf: async (jobId, v) => (await jobs.getJobVersion(db, jobId, v))?.spec ?? null,
    started: () => {}, // the dying coordinator sends nothing
  });
  return rec;
}

const outboxRows = async (db: Db) =>
  Number((await db.query<{ n: number }>('SELECT count(*)::int AS n FROM agent_commands'))[0]!.n);

describe('the agent command outbox', () => {
  it('delivers a placement and a stop committed by a coordinator that never sends, through the socket holder', async () => {
    const databaseUrl = await sharedDatabase();
    const holder = await coordinatorOn(databaseUrl);
    const p = await new ProtocolAgent({ url: holder.url, name: 'held' }).connect();
    cleanup.push(async () => p.close());

    const rec = await decideAndDie(databaseUrl, (db) => submitAndPlace(db, plainJob({ name: 'orphan' })));
    const id = rec.workloads[0]!;
    await p.waitFor((m) => m.type === 'start' && m.workload.id === id, 5000);
    await eventually(async () => (await status(holder, id)) === 'running', 5000, 'running');

    const stopped = await decideAndDie(databaseUrl, (db) =>
      db.tx((q) => stopJobWorkloads(q, rec.job.id, 'stopped by a coordinator that died after commit')),
    );
    expect(stopped.map((w) => w.id)).toEqual([id]);
    await p.waitFor((m) => m.type === 'stop' && m.workload_id === id, 5000);
    await eventually(async () => (await status(holder, id)) === 'stopped', 5000, 'stopped');
    const types = p.received.map((m) => m.type);
    expect(types.indexOf('start')).toBeLessThan(types.indexOf('stop'));
    expect(await outboxRows(holder.coordinator.db)).toBe(0);
  });

  it('queues nothing for a rolled-back decision', async () => {
    const databaseUrl = await sharedDatabase();
    const c = await coordinatorOn(databaseUrl);
    const p = await new ProtocolAgent({ url: c.url, name: 'steady' }).connect();
    cleanup.push(async () => p.close());
    const sub = await c.coordinator.submitJob(plainJob({ name: 'steady' }));
    const id = sub.workloads[0]!;
    await eventually(async () => (await status(c, id)) === 'running', 5000, 'running');
    // The placement's start row goes once its send is settled, which may come after the agent's
    // running report: start from an empty outbox.
    await eventually(async () => (await outboxRows(c.coordinator.db)) === 0, 5000, 'outbox empty');

    let queuedInside = 0;
    await expect(
      c.coordinator.db.tx(async (q) => {
        const moved = await stopJobWorkloads(q, sub.job.id, 'a decision that is rolled back');
        expect(moved).toHaveLength(1);
        queuedInside = Number(
          (await q.query<{ n: number }>('SELECT count(*)::int AS n FROM agent_commands'))[0]!.n,
        );
        throw new Error('abort the decision');
      }),
    ).rejects.toThrow('abort the decision');
    expect(queuedInside).toBe(1); // the stop was queued inside the transaction ...
    expect(await outboxRows(c.coordinator.db)).toBe(0); // ... and went with the rollback
    expect(await status(c, id)).toBe('running');
    // The next poll's drain has nothing to send: no stop ever reaches the agent.
    await c.coordinator.drainCommands();
    expect(p.received.some((m) => m.type === 'stop')).toBe(false);
  });

  it('sends the start of its own placement straight after the commit, once, and its row is deleted', async () => {
    const databaseUrl = await sharedDatabase();
    const c = await coordinatorOn(databaseUrl);
    const p = await new ProtocolAgent({ url: c.url, name: 'direct', autoRun: false }).connect();
    cleanup.push(async () => p.close());
    const db = c.coordinator.db;
    // With the socket epoch in the database moved on, no drain takes anything for this agent: the
    // starts that still arrive were sent from the placement itself.
    await db.query('UPDATE node_sessions SET conn_epoch = conn_epoch + 1000 WHERE node_id = $1', [p.nodeId]);
    const sub = await c.coordinator.submitJob(plainJob({ name: 'direct', instances: 3 }));
    for (const id of sub.workloads) await p.waitFor((m) => m.type === 'start' && m.workload.id === id, 5000);
    // Delivery back on: a drain deletes the rows the fenced delete kept, without sending them again.
    await db.query('UPDATE node_sessions SET conn_epoch = conn_epoch - 1000 WHERE node_id = $1', [p.nodeId]);
    await c.coordinator.drainCommands();
    await eventually(async () => (await outboxRows(db)) === 0, 5000, 'no rows left');
    const starts = p.received.flatMap((m) => (m.type === 'start' ? [m.workload.id] : []));
    expect(starts.sort()).toEqual([...sub.workloads].sort());
  });

  it("deletes a row sent straight after its commit only while the socket epoch is still the sender's", async () => {
    const databaseUrl = await sharedDatabase();
    const c = await coordinatorOn(databaseUrl);
    const p = await new ProtocolAgent({ url: c.url, name: 'fenced-delete' }).connect();
    cleanup.push(async () => p.close());
    const db = c.coordinator.db;
    const [session] = await db.query<{ conn_epoch: number }>(
      'SELECT conn_epoch FROM node_sessions WHERE node_id = $1',
      [p.nodeId],
    );
    const epoch = Number(session!.conn_epoch);
    // Rows queued while the holder keeps delivery back (its epoch in the database moved on).
    await db.query('UPDATE node_sessions SET conn_epoch = conn_epoch + 1000 WHERE node_id = $1', [p.nodeId]);
    const ids = await commands.enqueueCommands(db, [
      { nodeId: p.nodeId, message: { type: 'stop', workload_id: 'a' } },
      { nodeId: p.nodeId, message: { type: 'stop', workload_id: 'b' } },
    ]);
    expect(ids).toHaveLength(2);
    expect(ids[0]!).toBeLessThan(ids[1]!);
    const sent = ids.map((id) => ({ id, nodeId: p.nodeId, epoch }));
    expect(await commands.deleteSent(db, c.coordinator.opts.id, sent)).toEqual([]);
    expect(
      await commands.deleteSent(
        db,
        'another-coordinator',
        sent.map((x) => ({ ...x, epoch: epoch + 1000 })),
      ),
    ).toEqual([]);
    expect(await outboxRows(db)).toBe(2);
    const current = sent.map((x) => ({ ...x, epoch: epoch + 1000 }));
    expect((await commands.deleteSent(db, c.coordinator.opts.id, current)).sort()).toEqual(ids);
    expect(await outboxRows(db)).toBe(0);
  });

  it('never sends a start after its stop: queued in order, a start taken late is dropped', async () => {
    const databaseUrl = await sharedDatabase();
    const holder = await coordinatorOn(databaseUrl);
    const p = await new ProtocolAgent({ url: holder.url, name: 'ordered', autoRun: false }).connect();
    cleanup.push(async () => p.close());
    const db = holder.coordinator.db;
    // Hold delivery: while the socket epoch in the database is not the holder's, it takes nothing.
    const held = await db.query(
      'UPDATE node_sessions SET conn_epoch = conn_epoch + 1000 WHERE node_id = $1 RETURNING 1',
      [p.nodeId],
    );
    expect(held).toHaveLength(1);
    const rec = await decideAndDie(databaseUrl, (d) =>
      submitAndPlace(d, plainJob({ name: 'brief', instances: 2 })),
    );
    // Both placed (starting), their agent not yet told: the stop decided now is queued after the starts.
    await decideAndDie(databaseUrl, (d) => d.tx((q) => stopJobWorkloads(q, rec.job.id, 'changed our mind')));
    await holder.coordinator.drainCommands();
    const rows = await db.query<{ message: { type: string; workload_id?: string; workload_ids?: string[] } }>(
      'SELECT message FROM agent_commands ORDER BY id',
    );
    // One row carries the starts the apply transaction queued for the node, then one stop each.
    expect(rows).toHaveLength(1 + rec.workloads.length);
    expect(
      rows.flatMap((r) =>
        (r.message.workload_ids ?? [r.message.workload_id]).map((id) => `${r.message.type} ${id}`),
      ),
    ).toEqual([...rec.workloads.map((id) => `start_ref ${id}`), ...rec.workloads.map((id) => `stop ${id}`)]);

    await db.query('UPDATE node_sessions SET conn_epoch = conn_epoch - 1000 WHERE node_id = $1', [p.nodeId]);
    await holder.coordinator.drainCommands();
    for (const id of rec.workloads) await p.waitFor((m) => m.type === 'stop' && m.workload_id === id, 5000);
    for (const id of rec.workloads)
      await eventually(async () => (await status(holder, id)) === 'stopped', 5000, 'stopped');
    // A start by reference reads its workload when taken: one already stopping is not started after all.
    expect(p.received.filter((m) => m.type === 'start')).toEqual([]);
    expect(await outboxRows(db)).toBe(0);
  });

  it('delivers a pre-warm queued while the agent was away after it reconnects to another coordinator', async () => {
    const databaseUrl = await sharedDatabase();
    const a = await coordinatorOn(databaseUrl);
    const b = await coordinatorOn(databaseUrl);
    const first = await new ProtocolAgent({ url: a.url, name: 'roamer' }).connect();
    const path = '/nix/store/00000000000000000000000000000000-warm';
    const rec = await decideAndDie(databaseUrl, (d) =>
      submitAndPlace(d, plainJob({ name: 'warm' }), [{ path, nar_size: 1000 }]),
    );
    const id = rec.workloads[0]!;
    await eventually(async () => (await status(a, id)) === 'running', 5000, 'running');
    first.close();
    await eventually(async () => !a.coordinator.isConnected(first.nodeId!), 5000, 'a lets go of the socket');

    const res = await b.coordinator.prewarm(rec.job.id);
    expect(res.nodes).toEqual([{ node: 'roamer', missing_bytes: 1000, sent: true }]);
    expect(await outboxRows(b.coordinator.db)).toBe(1); // nobody holds the socket: it waits

    const back = await new ProtocolAgent({ url: b.url, name: 'roamer' }).connect([id]);
    cleanup.push(async () => back.close());
    const m = await back.waitFor((x) => x.type === 'prewarm', 5000);
    expect(m).toMatchObject({ type: 'prewarm', job_id: rec.job.id, paths: [path] });
    expect(first.received.some((x) => x.type === 'prewarm')).toBe(false);
  });

  it('lets go of an agent whose socket closes while its hello is still being handled', async () => {
    const databaseUrl = await sharedDatabase();
    const c = await coordinatorOn(databaseUrl);
    // The welcome comes before the hello's reconcile: the agent is gone before that ends.
    const p = await new ProtocolAgent({ url: c.url, name: 'brief' }).connect();
    p.close();
    await eventually(async () => !c.coordinator.isConnected(p.nodeId), 5000, 'the session let go');
    // Its row in node_sessions says no coordinator holds it (another may take it at once).
    await eventually(
      async () =>
        (
          await c.coordinator.db.query<{ n: number }>(
            'SELECT count(*)::int AS n FROM node_sessions WHERE coordinator_id IS NOT NULL',
          )
        )[0]!.n === 0,
      5000,
      'the session row released',
    );
  });

  // A coordinator placed the workload and sent its start, then was killed before deleting the start's
  // outbox row (test/ha/submit-kill.test.ts's B): the agent comes back to another with it running, or
  // without it (the start never arrived). Drains run all the while, as NOTIFYs and the poll may.
  it.each([
    ['runs it', true, 0],
    ['never got its start', false, 1],
  ] as const)(
    'an agent back after a kill whose hello says it %s gets the start queued before at most once, whenever drains run',
    async (_, runs, starts) => {
      const databaseUrl = await sharedDatabase();
      const c = await coordinatorOn(databaseUrl);
      const name = `back-${runs}`;
      const first = await new ProtocolAgent({ url: c.url, name }).connect();
      first.close();
      await eventually(async () => !c.coordinator.isConnected(first.nodeId), 5000, 'the socket let go');
      // The dying coordinator decided while the agent was still connected (its socket closed right after):
      // nothing is placed on a node known to be disconnected.
      const connected = async () =>
        (
          await c.coordinator.db.query<{ connected: boolean }>('SELECT connected FROM nodes WHERE id = $1', [
            first.nodeId,
          ])
        )[0]!.connected;
      await eventually(async () => !(await connected()), 5000, 'the node marked disconnected');
      await c.coordinator.db.query('UPDATE nodes SET connected = true WHERE id = $1', [first.nodeId]);
      const rec = await decideAndDie(databaseUrl, (d) => submitAndPlace(d, plainJob({ name })));
      const id = rec.workloads[0]!;
      expect(await outboxRows(c.coordinator.db)).toBe(1);

      let draining = true;
      const drains = (async () => {
        while (draining) {
          await c.coordinator.drainCommands();
          await new Promise((r) => setImmediate(r));
        }
      })();
      const back = new ProtocolAgent({ url: c.url, name });
      cleanup.push(async () => back.close());
      if (runs) back.running.add(id);
      await back.connect(runs ? [id] : []);
      await eventually(async () => (await status(c, id)) === 'running', 5000, 'running');
      await eventually(async () => (await outboxRows(c.coordinator.db)) === 0, 5000, 'the outbox drained');
      draining = false;
      await drains;
      expect(back.received.filter((m) => m.type === 'start').length).toBe(starts);
    },
  );

  it('stops a lost workload on its node in the verdict: an agent gone silent but still connected elsewhere is told at once', async () => {
    const databaseUrl = await sharedDatabase();
    const logs = [captureLogger('warn'), captureLogger('warn')];
    const a = await coordinatorOn(databaseUrl, 1500, logs[0]!.logger);
    const b = await coordinatorOn(databaseUrl, 1500, logs[1]!.logger);
    // The leader judges the silence; the other holds the agent's socket and keeps it open.
    const [leader, holder] = a.coordinator.isLeader() ? [a, b] : [b, a];
    expect(leader.coordinator.isLeader()).toBe(true);
    const p = await new ProtocolAgent({ url: holder.url, name: 'silent' }).connect();
    cleanup.push(async () => p.close());
    const sub = await holder.coordinator.submitJob(plainJob({ name: 'silent' }));
    const id = sub.workloads[0]!;
    await eventually(async () => (await status(holder, id)) === 'running', 5000, 'running');

    p.stopHeartbeats();
    const stop = await p.waitFor((m) => m.type === 'stop' && m.workload_id === id, 20_000);
    expect(stop).toMatchObject({
      reason: expect.stringMatching(/^declared lost: node silent missed heartbeats/),
    });
    expect(await status(leader, id)).toBe('lost');
    // Delivered while the socket is still open: no reconnect, no hello needed for it.
    expect(p.ws.readyState).toBe(p.ws.OPEN);
    expect(await outboxRows(holder.coordinator.db)).toBe(0);
    // The agent answered that stop with `stopped` on receipt; the holder handles a connection's
    // messages in order, so once it has refused a later bad one, it has taken the answer: quietly,
    // the workload stays lost.
    p.send({ type: 'not-a-message' });
    await p.waitFor((m) => m.type === 'error' && m.code === 'BAD_MESSAGE');
    expect(await status(leader, id)).toBe('lost');
    for (const l of logs)
      expect(l.records.map((r) => r.msg)).not.toContain('refused invalid transition reported by agent');
  });

  it('a node removed through another coordinator loses its socket on the holder, and rejoins as new', async () => {
    const databaseUrl = await sharedDatabase();
    const holder = await coordinatorOn(databaseUrl);
    const other = await coordinatorOn(databaseUrl);
    const p = await new ProtocolAgent({ url: holder.url, name: 'removed-elsewhere' }).connect();
    cleanup.push(async () => p.close());
    const closed = new Promise<number>((resolve) => p.ws.once('close', (code) => resolve(code)));
    const firstId = p.nodeId;

    const r = await other.api('DELETE', `/api/nodes/${firstId}`);
    expect(r.status).toBe(200);
    // The holder learns it at its next heartbeat flush, from the missing row.
    expect(await closed).toBe(4410);

    const again = await new ProtocolAgent({
      url: holder.url,
      name: 'removed-elsewhere',
      secret: '',
    }).connect();
    cleanup.push(async () => again.close());
    expect(again.nodeId).not.toBe(firstId);
  });
});
