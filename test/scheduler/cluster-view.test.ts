/**
 * The incremental cluster view against real PostgreSQL: after random sequences of node joins, status
 * changes and removals, submits, passes by two coordinators, agent reports and stops, each coordinator's
 * view (a delta read since its watermark) equals a fresh full snapshot summed from the workloads, and the
 * trigger-kept usage on node rows equals the sums. Two coordinators placing concurrently, with agents
 * reporting failures meanwhile, never overcommit a node.
 */
import fc from 'fast-check';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { NodeView } from '../../scheduler/core/place.js';
import { recordSubmission } from '../../scheduler/job-submit.js';
import { loseNodeWorkloads } from '../../scheduler/liveness.js';
import { clusterSnapshot, SchedulerState, schedulePass } from '../../scheduler/placement.js';
import type { Db } from '../../scheduler/store/db.js';
import * as nodes from '../../scheduler/store/nodes.js';
import * as wl from '../../scheduler/store/workloads.js';
import { JobSpec } from '../../spec/job.js';
import { plainJob } from '../helpers/coordinator.js';
import { freshDb } from '../helpers/db.js';
import { passDeps } from '../helpers/pass.js';
import { PLAIN_CAPABILITIES } from '../helpers/protocol-agent.js';

const MiB = 1024 * 1024;

/** What the core reads of a node, rounded where sums in different types may differ in float dust. */
const comparable = (ns: readonly NodeView[]) =>
  [...ns]
    .sort((a, b) => (a.id < b.id ? -1 : 1))
    .map((n) => ({
      ...n,
      used: {
        cpu: Math.round(n.used.cpu * 1e6) / 1e6,
        memory_mb: n.used.memory_mb,
        disk_mb: n.used.disk_mb,
      },
    }));

let joined = 0;
async function join(db: Db, cpu: number, rack: string) {
  const i = joined++;
  return nodes.upsertNode(db, {
    id: `node-${i}`,
    name: `n${String(i).padStart(3, '0')}`,
    resources: { cpu, memory_mb: cpu * 1024, disk_mb: 10_000 },
    capabilities: { ...PLAIN_CAPABILITIES, attributes: { rack } },
    version: 'test',
  });
}

let submitted = 0;
async function submit(db: Db, instances: number, cpu: number, limitPerHost: boolean) {
  const spec = JobSpec.parse(
    plainJob({
      name: `${limitPerHost ? 'lim' : 'job'}-${submitted++}`,
      instances,
      task: {
        ...plainJob().task,
        resources: { cpu, ram: 256 * MiB, disk: MiB },
      },
      ...(limitPerHost ? { constraints: { host: 'limit:1' } } : {}),
    }),
  );
  await recordSubmission(db, `test/www/prod/${spec.name}`, spec, []);
}

type Op =
  | { op: 'join'; cpu: number; rack: string }
  | { op: 'status'; pick: number; to: 'ready' | 'down' | 'draining' }
  | { op: 'remove'; pick: number }
  | { op: 'lose'; pick: number }
  | { op: 'submit'; instances: number; cpu: number; limit: boolean }
  | { op: 'pass'; by: 0 | 1 }
  | { op: 'report'; pick: number; to: 'running' | 'failed' | 'stopping' | 'stopped' };

const opArb: fc.Arbitrary<Op> = fc.oneof(
  fc.record({
    op: fc.constant('join' as const),
    cpu: fc.integer({ min: 1, max: 8 }),
    rack: fc.constantFrom('a', 'b'),
  }),
  fc.record({
    op: fc.constant('status' as const),
    pick: fc.nat(),
    to: fc.constantFrom('ready' as const, 'down' as const, 'draining' as const),
  }),
  fc.record({ op: fc.constant('remove' as const), pick: fc.nat() }),
  fc.record({ op: fc.constant('lose' as const), pick: fc.nat() }),
  fc.record({
    op: fc.constant('submit' as const),
    instances: fc.integer({ min: 1, max: 6 }),
    cpu: fc.constantFrom(0.1, 0.25, 0.5, 1, 2),
    limit: fc.boolean(),
  }),
  fc.record({ op: fc.constant('pass' as const), by: fc.constantFrom(0 as const, 1 as const) }),
  fc.record({
    op: fc.constant('report' as const),
    pick: fc.nat(),
    to: fc.constantFrom('running' as const, 'failed' as const, 'stopping' as const, 'stopped' as const),
  }),
);

async function run(db: Db, states: SchedulerState[], o: Op): Promise<void> {
  const all = await nodes.listNodes(db);
  const node = all.length ? all[('pick' in o ? o.pick : 0) % all.length]! : null;
  switch (o.op) {
    case 'join':
      await join(db, o.cpu, o.rack);
      return;
    case 'status':
      if (node) await nodes.setNodeStatus(db, node.id, o.to);
      return;
    case 'remove':
      if (!node) return;
      await db.tx(async (q) => {
        await loseNodeWorkloads(q, node, 'removed');
        await nodes.deleteNode(q, node.id);
      });
      return;
    case 'lose':
      if (node) await db.tx((q) => loseNodeWorkloads(q, node, 'lost'));
      return;
    case 'submit':
      await submit(db, o.instances, o.cpu, o.limit);
      return;
    case 'pass':
      await schedulePass(passDeps(db, states[o.by]!));
      return;
    case 'report': {
      const active = await wl.listWorkloads(db, { status: ['starting', 'running', 'stopping'], limit: 1000 });
      if (active.length === 0) return;
      const w = active[o.pick % active.length]!;
      const to =
        w.status === 'starting'
          ? o.to === 'stopped'
            ? 'failed'
            : o.to
          : w.status === 'running'
            ? o.to === 'running'
              ? 'failed'
              : o.to
            : 'stopped';
      await wl.transition(db, w, to, 'test report');
      return;
    }
  }
}

/** Sums from the workloads themselves equal the trigger-kept usage on every node row. */
async function expectUsageColumnsExact(db: Db) {
  const fresh = await clusterSnapshot(db);
  const rows = new Map((await nodes.listNodes(db)).map((n) => [n.id, n]));
  for (const n of fresh.nodes) {
    const row = rows.get(n.id)!;
    expect(row.used_cpu, n.name).toBeCloseTo(n.used.cpu, 9);
    expect(row.used_memory_mb, n.name).toBe(n.used.memory_mb);
    expect(row.used_disk_mb, n.name).toBe(n.used.disk_mb);
  }
}

describe('the incremental cluster view on postgres', () => {
  let db: Awaited<ReturnType<typeof freshDb>>;
  beforeAll(async () => {
    db = await freshDb('postgres');
  });
  afterAll(async () => db?.close());

  it('equals a fresh full snapshot after random submits, passes, reports, stops and node changes', async () => {
    await fc.assert(
      fc.asyncProperty(fc.array(opArb, { minLength: 10, maxLength: 30 }), async (ops) => {
        // Two coordinators, each with its own view; every op is seen by both through their delta reads.
        const states = [new SchedulerState(), new SchedulerState()];
        for (const s of states) await s.view.refresh(db);
        for (const o of ops) {
          await run(db, states, o);
          const fresh = comparable((await clusterSnapshot(db)).nodes);
          for (const s of states)
            expect(comparable(await s.view.refresh(db)), JSON.stringify(o)).toEqual(fresh);
        }
        await expectUsageColumnsExact(db);
        // `host: limit:1` held across passes of both coordinators (counts read per pass, not kept).
        const stacked = await db.query(
          `SELECT w.job_id, w.node_id FROM workloads w JOIN jobs j ON j.id = w.job_id
           WHERE j.name LIKE 'lim-%' AND w.status IN ('starting', 'running', 'stopping')
           GROUP BY w.job_id, w.node_id HAVING count(*) > 1`,
        );
        expect(stacked).toEqual([]);
        // Per-job placements read for the jobs of a pass equal the full read.
        const full = await wl.activePlacements(db);
        const some = await wl.activePlacementsOf(db, [...new Set(full.map((p) => p.job_id))]);
        const key = (p: { job_id: string; node_id: string; n: number }) => `${p.job_id} ${p.node_id} ${p.n}`;
        expect(some.map(key).sort()).toEqual(full.map(key).sort());
        const pendingJobs = new Set(
          (await wl.listWorkloads(db, { status: ['pending'], limit: 10_000 })).map((w) => w.job_id),
        );
        const ofPending = (await wl.activePlacementsOfPendingJobs(db)).filter((p) => p.node_id !== null);
        expect(ofPending.map((p) => key(p as (typeof full)[number])).sort()).toEqual(
          full
            .filter((p) => pendingJobs.has(p.job_id))
            .map(key)
            .sort(),
        );
      }),
      { numRuns: 6 },
    );
  });

  it('two coordinators placing concurrently, with failures reported meanwhile, never overcommit', async () => {
    await db.query(
      `UPDATE workloads SET status = 'stopped' WHERE status IN ('pending', 'starting', 'running', 'stopping')`,
    );
    await db.query(`UPDATE nodes SET status = 'down'`);
    const fresh: nodes.NodeRow[] = [];
    for (let i = 0; i < 6; i++) fresh.push(await join(db, 4, 'c'));
    for (let j = 0; j < 10; j++) await submit(db, 5, 1, false); // 50 instances of 1 cpu for 24 cpus
    const states = [new SchedulerState(), new SchedulerState(), new SchedulerState()];
    const failSome = async () => {
      for (let k = 0; k < 10; k++) {
        const [w] = await wl.listWorkloads(db, { status: ['starting'], limit: 1 });
        if (w) await wl.transition(db, w, 'failed', 'test: failed meanwhile');
      }
    };
    // Three coordinators at once, each running its passes one after the other, as a coordinator does
    // (its evaluation queue). The test ran two at once on each state, which no coordinator does; CI saw
    // it once leave a node at 3 of 4 after the quiet pass (not reproduced in 8 runs under load, before
    // or after): a pass's settled backlog and room-grown flag assume passes of a state do not overlap.
    await Promise.all([
      ...states.map(async (s) => {
        await schedulePass(passDeps(db, s));
        await schedulePass(passDeps(db, s));
      }),
      failSome(),
    ]);
    // Whatever a conflict left pending, a quiet pass places.
    await schedulePass(passDeps(db, states[0]!));
    const snap = await clusterSnapshot(db);
    for (const n of snap.nodes.filter((x) => fresh.some((f) => f.id === x.id))) {
      expect(n.used.cpu, n.name).toBeLessThanOrEqual(n.cpu);
      expect(n.used.cpu, `${n.name} is full`).toBe(4);
    }
    await expectUsageColumnsExact(db);
  });
});
