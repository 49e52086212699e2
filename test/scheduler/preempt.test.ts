/** The pure preemption core: Aurora's rule, the fewest victims, no room counted twice, properties. */
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { fits } from '../../scheduler/core/fit.js';
import type { Demand, NodeView } from '../../scheduler/core/place.js';
import {
  type ActiveWorkload,
  mayPreempt,
  planPreemptions,
  preempts,
  type Rank,
} from '../../scheduler/core/preempt.js';
import { nodeView } from '../helpers/node-view.js';

const node = nodeView;

const demand = (id: string, over: Partial<Demand> = {}): Demand => ({
  workloadId: id,
  jobId: `job-${id}`,
  cpu: 2,
  memory_mb: 512,
  disk_mb: 0,
  isolation: 'process',
  constraints: {},
  ...over,
});

const rank = (over: Partial<Rank> = {}): Rank => ({ role: 'web', production: false, priority: 0, ...over });

const active = (id: string, nodeId: string, over: Partial<ActiveWorkload> = {}): ActiveWorkload => ({
  workloadId: id,
  jobId: `job-${id}`,
  nodeId,
  status: 'running',
  cpu: 2,
  memory_mb: 512,
  disk_mb: 0,
  ...rank(),
  ...over,
});

/** A node whose used resources are those of `ws`. */
const full = (id: string, ws: ActiveWorkload[], over: Partial<NodeView> = {}) =>
  node(id, {
    used: ws.reduce(
      (u, w) => ({
        cpu: u.cpu + w.cpu,
        memory_mb: u.memory_mb + w.memory_mb,
        disk_mb: u.disk_mb + w.disk_mb,
      }),
      { cpu: 0, memory_mb: 0, disk_mb: 0 },
    ),
    ...over,
  });

describe('mayPreempt (Aurora: production over non-production; within a role, higher priority)', () => {
  it.each([
    [rank({ production: true }), rank({ role: 'other' }), true],
    [rank({ production: true }), rank({ production: true, role: 'other', priority: -5 }), false],
    [rank({ priority: 5 }), rank({ priority: 1 }), true],
    [rank({ priority: 5 }), rank({ priority: 1, role: 'other' }), false],
    [rank({ priority: 5 }), rank({ priority: 5 }), false],
    [rank({ priority: 9 }), rank({ production: true, priority: 1 }), false],
    [rank({ production: true, priority: 9 }), rank({ production: true, priority: 1 }), true],
    [rank(), rank({ priority: -1 }), true],
  ])('%o may preempt %o: %s', (p, v, want) => {
    expect(mayPreempt(p, v)).toBe(want);
  });

  it('only production work and priorities above 0 preempt', () => {
    expect(preempts(rank())).toBe(false);
    expect(preempts(rank({ priority: -3 }))).toBe(false);
    expect(preempts(rank({ priority: 1 }))).toBe(true);
    expect(preempts(rank({ production: true, priority: -3 }))).toBe(true);
  });
});

describe('planPreemptions', () => {
  it('stops the fewest, lowest-ranked workloads of one node that make room', () => {
    const on = [
      active('a-low', 'a', { cpu: 1, priority: -2 }),
      active('a-mid', 'a', { cpu: 1, priority: 0 }),
      active('a-prod', 'a', { cpu: 2, production: true }),
      active('b-one', 'b', { cpu: 4 }),
    ];
    const plan = planPreemptions(
      { nodes: [full('a', on.slice(0, 3)), full('b', on.slice(3))], placed: [] },
      on,
      [{ demand: demand('p', { cpu: 2 }), rank: rank({ production: true }) }],
    );
    // a: a-low then a-mid (2 victims; a-prod is production); b: b-one alone. The fewest: b.
    expect(plan.preemptions).toEqual([{ workloadId: 'p', nodeId: 'b', victims: ['b-one'] }]);
    expect(plan.awaiting).toEqual([]);
  });

  it('takes the lowest rank first on a node', () => {
    const on = [active('hi', 'a', { priority: 3 }), active('lo', 'a', { priority: 1 })];
    const plan = planPreemptions({ nodes: [full('a', on)], placed: [] }, on, [
      { demand: demand('p'), rank: rank({ priority: 5 }) },
    ]);
    expect(plan.preemptions).toEqual([{ workloadId: 'p', nodeId: 'a', victims: ['lo'] }]);
  });

  it('waits for workloads already stopping instead of preempting again', () => {
    const on = [active('going', 'a', { status: 'stopping' }), active('other', 'a')];
    const plan = planPreemptions({ nodes: [full('a', on)], placed: [] }, on, [
      { demand: demand('p'), rank: rank({ production: true }) },
    ]);
    expect(plan).toEqual({ preemptions: [], awaiting: [{ workloadId: 'p', nodeId: 'a' }] });
  });

  it('never counts one room twice: the second preemptor takes other victims', () => {
    const on = [active('x', 'a'), active('y', 'a')];
    const plan = planPreemptions({ nodes: [full('a', on)], placed: [] }, on, [
      { demand: demand('p1'), rank: rank({ production: true }) },
      { demand: demand('p2'), rank: rank({ production: true }) },
      { demand: demand('p3'), rank: rank({ production: true }) },
    ]);
    expect(plan.preemptions.map((p) => p.victims)).toEqual([['x'], ['y']]);
    expect(plan.awaiting).toEqual([]);
  });

  it('preempts nothing where the pending workload could not run anyway', () => {
    const on = [active('x', 'a'), active('y', 'b')];
    const plan = planPreemptions(
      {
        nodes: [
          full('a', on.slice(0, 1), { status: 'draining' }),
          full('b', on.slice(1), { isolation: ['process'] }),
        ],
        placed: [],
      },
      on,
      [
        { demand: demand('p', { isolation: 'sandbox' }), rank: rank({ production: true }) },
        { demand: demand('q', { constraints: { host: 'zz' } }), rank: rank({ production: true }) },
        { demand: demand('r', { cpu: 8 }), rank: rank({ production: true }) },
      ],
    );
    expect(plan).toEqual({ preemptions: [], awaiting: [] });
  });

  it('leaves workloads of its own job and of rank not below it alone', () => {
    const on = [active('same', 'a', { jobId: 'job-p', priority: 0 }), active('peer', 'b', { priority: 5 })];
    const plan = planPreemptions(
      { nodes: [full('a', on.slice(0, 1)), full('b', on.slice(1))], placed: [] },
      on,
      [{ demand: demand('p', { jobId: 'job-p' }), rank: rank({ priority: 5 }) }],
    );
    expect(plan.preemptions).toEqual([]);
  });

  it('property: the room made fits every preemptor, victims are distinct and rank below it', () => {
    const arb = fc.record({
      nodes: fc.array(
        fc.array(
          fc.record({
            cpu: fc.integer({ min: 1, max: 4 }),
            production: fc.boolean(),
            priority: fc.integer({ min: -2, max: 3 }),
            role: fc.constantFrom('a', 'b'),
            stopping: fc.boolean(),
          }),
          { maxLength: 4 },
        ),
        { minLength: 1, maxLength: 4 },
      ),
      pending: fc.array(
        fc.record({
          cpu: fc.integer({ min: 1, max: 6 }),
          production: fc.boolean(),
          priority: fc.integer({ min: -2, max: 3 }),
          role: fc.constantFrom('a', 'b'),
        }),
        { minLength: 1, maxLength: 5 },
      ),
    });
    fc.assert(
      fc.property(arb, ({ nodes, pending }) => {
        const ws: ActiveWorkload[] = [];
        const views = nodes.map((list, i) => {
          const mine = list.map((w, j) =>
            active(`w${i}-${j}`, `n${i}`, { ...w, status: w.stopping ? 'stopping' : 'running' }),
          );
          ws.push(...mine);
          // Nodes start within their capacity: 8 cores, or all that is on them.
          return full(`n${i}`, mine, {
            cpu: Math.max(
              8,
              mine.reduce((a, w) => a + w.cpu, 0),
            ),
          });
        });
        const preemptors = pending.map((p, i) => ({
          demand: demand(`p${i}`, { cpu: p.cpu }),
          rank: rank(p),
        }));
        const plan = planPreemptions({ nodes: views, placed: [] }, ws, preemptors);
        const byId = new Map(ws.map((w) => [w.workloadId, w]));
        const victims = plan.preemptions.flatMap((p) => p.victims);
        expect(new Set(victims).size).toBe(victims.length);
        // Per node: after every victim and stopping workload ends, all held demands fit at once.
        for (const v of views) {
          let used = v.used.cpu;
          for (const w of ws)
            if (w.nodeId === v.id && (w.status === 'stopping' || victims.includes(w.workloadId)))
              used -= w.cpu;
          const heldHere = [...plan.preemptions, ...plan.awaiting].filter((p) => p.nodeId === v.id);
          for (const h of heldHere)
            used += preemptors.find((p) => p.demand.workloadId === h.workloadId)!.demand.cpu;
          expect(fits(v, { ...v.used, cpu: used }, { cpu: 0, memory_mb: 0, disk_mb: 0 })).toBe(true);
        }
        for (const p of plan.preemptions) {
          const r = preemptors.find((x) => x.demand.workloadId === p.workloadId)!.rank;
          for (const id of p.victims) {
            const w = byId.get(id)!;
            expect(w.nodeId).toBe(p.nodeId);
            expect(w.status).toBe('running');
            expect(mayPreempt(r, w)).toBe(true);
          }
        }
      }),
    );
  });
});
