/**
 * A submit that places its new job in its own insert (placed-submit.ts, store/placed-insert.ts), on both
 * engines: the guard re-checks the locked node rows, so a plan made on a stale view never overcommits a
 * node nor uses a node that went away or changed; what it refuses stays pending and a pass places it.
 * Through a coordinator: placed at once, the fallback placed by the pass, and never twice.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ClusterView } from '../../scheduler/cluster-view.js';
import { ManualClock } from '../../scheduler/engine/clock.js';
import { recordSubmission } from '../../scheduler/job-submit.js';
import { HolderCache, planSubmitted } from '../../scheduler/placed-submit.js';
import { SchedulerState, type StartedWorkload, schedulePass } from '../../scheduler/placement.js';
import type * as commands from '../../scheduler/store/agent-commands.js';
import type { Db } from '../../scheduler/store/db.js';
import * as jobs from '../../scheduler/store/jobs.js';
import * as nodes from '../../scheduler/store/nodes.js';
import { insertPlacedJob, type PlacedJobInsert } from '../../scheduler/store/placed-insert.js';
import * as wl from '../../scheduler/store/workloads.js';
import { JobSpec } from '../../spec/job.js';
import { plainJob, startTestCoordinator, type TestCoordinator } from '../helpers/coordinator.js';
import { ENGINES, freshDb } from '../helpers/db.js';
import { passDeps } from '../helpers/pass.js';
import { eventually, PLAIN_CAPABILITIES, ProtocolAgent } from '../helpers/protocol-agent.js';

let n = 0;

/** A new job of `count` workloads (1 cpu, 256 MiB, 1 MiB each) planned as `nodeOf` says. */
function jobInsert(nodeOf: (string | null)[], caps: Record<string, string>): PlacedJobInsert {
  const id = `placed-job-${++n}`;
  return {
    id,
    key: `test/www/prod/placed-${n}`,
    cluster: 'test',
    role: 'www',
    environment: 'prod',
    name: `placed-${n}`,
    specJson: JSON.stringify(plainJob({ name: `placed-${n}` })),
    specHash: `h${n}`,
    closure: [{ path: `/nix/store/${n}-x`, nar_size: 10 }],
    demand: { cpu: 1, memory_mb: 256, disk_mb: 1, isolation: 'process' },
    workloads: nodeOf.map((nodeId, i) => ({ id: `${id}-w${i}`, instance: i, nodeId })),
    nodes: [...new Set(nodeOf.filter((x): x is string => x !== null))].map((id) => ({
      id,
      capabilities: caps[id]!,
    })),
    reason: 'submitted (version 1)',
  };
}

async function addNode(db: Db, name: string, cpu: number): Promise<string> {
  await nodes.upsertNode(db, {
    id: name,
    name,
    resources: { cpu, memory_mb: 64 * 1024, disk_mb: 100_000 },
    capabilities: PLAIN_CAPABILITIES,
    version: 'test',
  });
  return JSON.stringify((await nodes.getNode(db, name))!.capabilities);
}

for (const engine of ENGINES) {
  describe(`a new job inserted already placed, on ${engine}`, () => {
    let db: Db;
    const caps: Record<string, string> = {};
    beforeAll(async () => {
      db = await freshDb(engine);
      for (const [name, cpu] of [
        ['small', 2],
        ['big', 64],
        ['leaving', 64],
        ['changing', 64],
      ] as const) {
        caps[name] = await addNode(db, name, cpu);
      }
    });
    afterAll(async () => {
      await db?.close();
    });

    it('places what fits: starting on its node, with its events, its usage and its outbox row', async () => {
      const before = (await nodes.getNode(db, 'big'))!;
      const j = jobInsert(['big', 'big'], caps);
      const r = (await insertPlacedJob(db, j))!;
      expect(r.job.id).toBe(j.id);
      expect(r.placed.map((p) => [p.index, p.nodeId])).toEqual([
        [0, 'big'],
        [1, 'big'],
      ]);
      for (const w of j.workloads) {
        const row = (await wl.getWorkload(db, w.id))!;
        expect([row.status, row.node_id, row.job_id]).toEqual(['starting', 'big', j.id]);
        const events = await wl.listEvents(db, w.id);
        expect(events.map((e) => [e.from_status, e.to_status, e.reason])).toEqual([
          [null, 'pending', 'submitted (version 1)'],
          ['pending', 'starting', 'placed on big'],
        ]);
      }
      const after = (await nodes.getNode(db, 'big'))!;
      expect(after.used_cpu - before.used_cpu).toBeCloseTo(2, 9);
      const queued = await db.query<{ id: number; message: commands.OutboxMessage }>(
        'SELECT id, message FROM agent_commands WHERE id = $1',
        [r.placed[0]!.commandId],
      );
      expect(queued[0]!.message).toEqual({ type: 'start_ref', workload_ids: j.workloads.map((w) => w.id) });
      expect((await jobs.getJobVersion(db, j.id, 1))?.spec_hash).toBe(j.specHash);
    });

    it('never overcommits a node the stale plan thought empty: the rest stays pending, and a pass places it', async () => {
      // The plan puts 3 on "small" (2 cpus): the first two fit, the third (and nothing else) waits.
      const before = (await nodes.getNode(db, 'small'))!;
      const j = jobInsert(['small', 'small', 'small'], caps);
      const r = (await insertPlacedJob(db, j))!;
      expect(r.placed.map((p) => p.index)).toEqual([0, 1]);
      const third = (await wl.getWorkload(db, j.workloads[2]!.id))!;
      expect([third.status, third.node_id]).toEqual(['pending', null]);
      expect((await wl.listEvents(db, third.id)).map((e) => e.to_status)).toEqual(['pending']);
      const full = (await nodes.getNode(db, 'small'))!;
      expect(full.used_cpu - before.used_cpu).toBeCloseTo(2, 9);
      // Planned again on the full node (the view has not seen the first insert): nothing moves.
      const again = jobInsert(['small'], caps);
      const r2 = (await insertPlacedJob(db, again))!;
      expect(r2.placed).toEqual([]);
      expect((await nodes.getNode(db, 'small'))!.used_cpu).toBeCloseTo(full.used_cpu, 9);
      expect(await db.query('SELECT 1 FROM agent_commands WHERE node_id = $1', ['small'])).toHaveLength(1);
      // The pass places both where there is room, once.
      const started: StartedWorkload[] = [];
      await schedulePass(passDeps(db, new SchedulerState(), started));
      const ids = [third.id, again.workloads[0]!.id];
      expect(started.filter((w) => ids.includes(w.id)).map((w) => w.node_id)).not.toContain('small');
      for (const id of ids) {
        expect((await wl.getWorkload(db, id))?.status).toBe('starting');
        expect((await wl.listEvents(db, id)).filter((e) => e.to_status === 'starting')).toHaveLength(1);
      }
      expect((await nodes.getNode(db, 'small'))!.used_cpu).toBeLessThanOrEqual(2);
    });

    it('uses no node that is no longer ready or whose capabilities changed since the plan', async () => {
      const used = async (node: string) => (await nodes.getNode(db, node))!.used_cpu;
      const before = { leaving: await used('leaving'), changing: await used('changing') };
      await nodes.setNodeStatus(db, 'leaving', 'draining');
      await nodes.upsertNode(db, {
        id: 'changing',
        name: 'changing',
        resources: { cpu: 64, memory_mb: 64 * 1024, disk_mb: 100_000 },
        capabilities: { ...PLAIN_CAPABILITIES, attributes: { rack: 'r2' } },
        version: 'test',
      });
      const j = jobInsert(['leaving', 'changing', 'big'], caps);
      const r = (await insertPlacedJob(db, j))!;
      expect(r.placed.map((p) => [p.index, p.nodeId])).toEqual([[2, 'big']]);
      for (const w of j.workloads.slice(0, 2))
        expect((await wl.getWorkload(db, w.id))?.status).toBe('pending');
      expect({ leaving: await used('leaving'), changing: await used('changing') }).toEqual(before);
    });

    it('changes nothing for a key that exists', async () => {
      const j = jobInsert(['big'], caps);
      await insertPlacedJob(db, j);
      const before = (await nodes.getNode(db, 'big'))!;
      const twin = { ...jobInsert(['big'], caps), key: j.key };
      expect(await insertPlacedJob(db, twin)).toBeNull();
      expect(await wl.getWorkload(db, twin.workloads[0]!.id)).toBeNull();
      expect(await jobs.getJob(db, twin.id)).toBeNull();
      expect((await nodes.getNode(db, 'big'))!.used_cpu).toBeCloseTo(before.used_cpu, 9);
    });

    it("counts a submit's placement in the view once, and reads afresh when a refresh came between", async () => {
      const view = new ClusterView();
      await view.refresh(db);
      const seen = () => view.current()!.find((x) => x.id === 'big')!.used.cpu;
      const actual = async () => (await nodes.getNode(db, 'big'))!.used_cpu;
      const demand = { cpu: 1, memory_mb: 256, disk_mb: 1 };
      let reads = view.reads;
      await insertPlacedJob(db, jobInsert(['big'], caps));
      view.took('big', demand, reads);
      expect(seen()).toBeCloseTo(await actual(), 9);
      await view.refresh(db); // the row is read again, and replaces the estimate
      expect(seen()).toBeCloseTo(await actual(), 9);
      // A refresh taken in between the plan and the commit's answer may have read it: not added twice.
      reads = view.reads;
      await insertPlacedJob(db, jobInsert(['big'], caps));
      await view.refresh(db);
      view.took('big', demand, reads);
      expect(view.current()).toBeNull();
      await view.refresh(db);
      expect(seen()).toBeCloseTo(await actual(), 9);
    });

    it('keeps no watermark from a refresh whose read an invalidation overtook', async () => {
      const view = new ClusterView();
      await view.refresh(db);
      const reading = view.refresh(db);
      view.invalidate();
      await reading;
      expect(view.current()).toBeNull();
      await view.refresh(db);
      expect(view.current()).not.toBeNull();
    });

    it('plans on the view as it stands, with the capabilities it saw', async () => {
      const view = new ClusterView();
      expect(planSubmitted(view, {}, [], [], new Map(), 'spread')).toBeNull();
      await view.refresh(db);
      const created = [
        {
          id: 'planned-0',
          job_id: 'planned',
          job_version: 1,
          instance: 0,
          cpu: 1,
          memory_mb: 256,
          disk_mb: 1,
          isolation: 'process' as const,
          restarts: 0,
        },
      ];
      const plan = planSubmitted(view, { constraints: { host: 'big' } }, [], created, new Map(), 'spread')!;
      expect(plan.nodeOf).toEqual(['big']);
      expect(plan.nodes).toEqual([
        { id: 'big', capabilities: JSON.stringify((await nodes.getNode(db, 'big'))!.capabilities) },
      ]);
      expect(
        planSubmitted(view, { constraints: { host: 'nowhere' } }, [], created, new Map(), 'spread'),
      ).toBeNull();
      view.invalidate();
      expect(view.current()).toBeNull();
    });
  });
}

describe('the holders kept for submits', () => {
  it('answers only for known, fresh paths; applies changes heard; drops a read that raced one', () => {
    const c = new HolderCache(1000);
    expect(c.lookup(['/a'], 0)).toBeNull();
    c.record(['/a', '/b'], new Map([['n1', new Set(['/a'])]]), 0, c.mark());
    expect(c.lookup(['/a', '/b'], 500)).toEqual(new Map([['n1', new Set(['/a'])]]));
    expect(c.lookup(['/a', '/c'], 500)).toBeNull();
    expect(c.lookup(['/a'], 1001)).toBeNull();
    c.changed('n2', ['/b'], []);
    c.changed('n1', [], ['/a']);
    expect(c.lookup(['/a', '/b'], 500)).toEqual(new Map([['n2', new Set(['/b'])]]));
    const mark = c.mark();
    c.changed('n3', ['/z'], []);
    c.record(['/z'], new Map(), 600, mark);
    expect(c.lookup(['/z'], 600)).toBeNull();
    c.clear();
    expect(c.lookup(['/b'], 500)).toBeNull();
  });
});

for (const engine of ENGINES) {
  describe(`a coordinator placing a submit in its insert, on ${engine}`, () => {
    let c: TestCoordinator;
    let agent: ProtocolAgent;
    beforeAll(async () => {
      // A manual clock: no periodic pass (the leader's sweep) can run beside a submit and take its place.
      c = await startTestCoordinator(engine, { clock: new ManualClock(), leaderLeaseMs: 600_000 });
      agent = await new ProtocolAgent({ url: c.url, name: 'solo', cpu: 4 }).connect();
      await c.coordinator.evaluate();
    });
    afterAll(async () => {
      agent?.close();
      await c?.stop();
    });

    it('places a small new job in its submit, and a stale plan falls back to a pass that places it once', async () => {
      const res = await c.coordinator.submitJob(
        plainJob({
          name: 'at-once',
          task: { ...plainJob().task, resources: { cpu: 1, ram: 1 << 20, disk: 1 << 20 } },
        }),
      );
      // Its insert placed it: created and placed in one transaction (one now()).
      await agent.waitFor((m) => m.type === 'start' && m.workload.id === res.workloads[0], 5000);
      const [created, placed] = await wl.listEvents(c.coordinator.db, res.workloads[0]!);
      expect([created?.to_status, placed?.to_status, placed?.reason]).toEqual([
        'pending',
        'starting',
        'placed on solo',
      ]);
      expect(placed!.ts.getTime()).toBe(created!.ts.getTime());

      // Another coordinator fills the node behind this one's back: its view still shows room.
      const other = new SchedulerState();
      const filler = await c.coordinator.db.query<{ id: string }>('SELECT id FROM nodes');
      const nodeId = filler[0]!.id;
      const big = plainJob({
        name: 'filler',
        task: { ...plainJob().task, resources: { cpu: 3, ram: 1 << 20, disk: 1 << 20 } },
      });
      await recordSubmission(c.coordinator.db, 'test/www/prod/filler', JobSpec.parse(big), []);
      await schedulePass(passDeps(c.coordinator.db, other));
      expect((await nodes.getNode(c.coordinator.db, nodeId))!.used_cpu).toBeCloseTo(4, 9);

      const late = await c.coordinator.submitJob(
        plainJob({
          name: 'late',
          task: { ...plainJob().task, resources: { cpu: 1, ram: 1 << 20, disk: 1 << 20 } },
        }),
      );
      const id = late.workloads[0]!;
      await eventually(
        async () => (await wl.getWorkload(c.coordinator.db, id))?.pending_reason != null,
        5000,
        'the pass says why it waits',
      );
      expect((await nodes.getNode(c.coordinator.db, nodeId))!.used_cpu).toBeCloseTo(4, 9);
      // Room appears: the pass places it, once.
      await c.coordinator.stopJob('test/www/prod/at-once');
      await eventually(
        async () =>
          ['starting', 'running'].includes((await wl.getWorkload(c.coordinator.db, id))?.status ?? ''),
        5000,
        'placed by a pass',
      );
      const events = await wl.listEvents(c.coordinator.db, id);
      expect(events.filter((e) => e.to_status === 'starting')).toHaveLength(1);
      expect(events.at(-1)!.ts.getTime()).toBeGreaterThan(events[0]!.ts.getTime());
      expect((await nodes.getNode(c.coordinator.db, nodeId))!.used_cpu).toBeLessThanOrEqual(4 + 1e-9);
    });
  });
}

describe('two coordinators placing submits in their inserts on one database', () => {
  it('never overcommit the node both plan on, and a pass places the rest once room appears', async () => {
    const { createPostgresDb, dropPostgresDb } = await import('../helpers/db.js');
    const { url: databaseUrl, name } = await createPostgresDb();
    const a = await startTestCoordinator('postgres', { databaseUrl });
    const b = await startTestCoordinator('postgres', { databaseUrl });
    const agent = await new ProtocolAgent({ url: a.url, name: 'shared', cpu: 4, autoRun: false }).connect();
    try {
      await a.coordinator.evaluate();
      await b.coordinator.evaluate();
      const job = (i: number) =>
        plainJob({
          name: `both-${i}`,
          task: { ...plainJob().task, resources: { cpu: 1, ram: 1 << 20, disk: 1 << 20 } },
        });
      // Each coordinator's view shows the node empty: both plan every submit of theirs onto it.
      const subs = await Promise.all(
        [0, 1, 2, 3, 4, 5].map((i) => (i % 2 ? b : a).coordinator.submitJob(job(i))),
      );
      const ids = subs.map((s) => s.workloads[0]!);
      const db = a.coordinator.db;
      const statuses = async () => Promise.all(ids.map(async (id) => (await wl.getWorkload(db, id))!.status));
      await eventually(
        async () => (await statuses()).filter((s) => s === 'starting').length === 4,
        10_000,
        'four placed',
      );
      expect((await statuses()).filter((s) => s === 'pending')).toHaveLength(2);
      expect((await nodes.getNode(db, agent.nodeId))!.used_cpu).toBeCloseTo(4, 9);
      // Two end: the two waiting are placed, each once, and the node stays within its capacity.
      const placed = [];
      for (const id of ids) if ((await wl.getWorkload(db, id))!.status === 'starting') placed.push(id);
      for (const id of placed.slice(0, 2)) {
        agent.send({ type: 'workload_status', workload_id: id, status: 'stopped', reason: 'done' });
      }
      await eventually(
        async () => {
          const now = await statuses();
          return (
            now.filter((s) => s === 'stopped').length === 2 &&
            now.filter((s) => s === 'starting').length === 4
          );
        },
        10_000,
        'the waiting two placed',
      );
      expect((await nodes.getNode(db, agent.nodeId))!.used_cpu).toBeCloseTo(4, 9);
      for (const id of ids) {
        expect((await wl.listEvents(db, id)).filter((e) => e.to_status === 'starting')).toHaveLength(1);
      }
    } finally {
      agent.close();
      await a.stop();
      await b.stop();
      await dropPostgresDb(name);
    }
  });
});
