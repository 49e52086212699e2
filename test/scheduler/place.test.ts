/** The pure placement core: table-driven cases and fast-check properties. */
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { demandOf, fits, take } from '../../scheduler/core/fit.js';
import {
  CHECKERS,
  type CheckContext,
  type Demand,
  firstRejection,
  type NodeView,
  Planner,
  place,
} from '../../scheduler/core/place.js';
import { nodeView } from '../helpers/node-view.js';

const node = nodeView;

const demand = (id: string, over: Partial<Demand> = {}): Demand => ({
  workloadId: id,
  jobId: 'job',
  cpu: 1,
  memory_mb: 512,
  disk_mb: 100,
  isolation: 'process',
  constraints: {},
  ...over,
});

const opts = { strategy: 'spread' as const, seed: 'seed' };

describe('place', () => {
  it('explains why nothing fits, with the largest free amount', () => {
    const plan = place(
      {
        nodes: [node('a', { memory_mb: 256 }), node('b', { memory_mb: 256 }), node('c', { memory_mb: 256 })],
        placed: [],
      },
      [demand('w', { memory_mb: 512 })],
      opts,
    );
    expect(plan.placements).toEqual([]);
    expect(plan.failures[0]!.summary).toBe('3 nodes: insufficient memory (need 512 MiB, max free 256 MiB)');
    expect(plan.failures[0]!.reasons).toEqual({ MEMORY: 3 });
  });

  it('says when no node has joined', () => {
    expect(place({ nodes: [], placed: [] }, [demand('w')], opts).failures[0]!.summary).toBe(
      'no nodes have joined the cluster',
    );
  });

  it.each([
    ['down nodes', node('a', { status: 'down' }), {}, 'NODE_DOWN'],
    ['draining nodes', node('a', { status: 'draining' }), {}, 'NODE_DRAINING'],
    ['cpu', node('a', { cpu: 0.5 }), {}, 'CPU'],
    ['disk', node('a', { disk_mb: 10 }), {}, 'DISK'],
    ['isolation', node('a'), { isolation: 'microvm' as const }, 'ISOLATION'],
    [
      'value constraint',
      node('a', { attributes: { host: 'a', rack: 'r1' } }),
      { constraints: { rack: 'r2' } },
      'CONSTRAINT',
    ],
    [
      'negated constraint',
      node('a', { attributes: { host: 'a', rack: 'r1' } }),
      { constraints: { rack: '!r1' } },
      'CONSTRAINT',
    ],
    ['dedicated node', node('a', { attributes: { host: 'a', dedicated: 'db/x' } }), {}, 'DEDICATED'],
    ['dedicated job', node('a'), { constraints: { dedicated: 'db/x' } }, 'DEDICATED'],
  ])('rejects %s', (_name, n, over, code) => {
    const plan = place({ nodes: [n], placed: [] }, [demand('w', over)], opts);
    expect(plan.placements).toEqual([]);
    expect(Object.keys(plan.failures[0]!.reasons)).toEqual([code]);
  });

  it('matches value and dedicated constraints', () => {
    const plan = place(
      {
        nodes: [
          node('a', { attributes: { host: 'a', rack: 'r1' } }),
          node('b', { attributes: { host: 'b', rack: 'r2', dedicated: 'db/x' } }),
        ],
        placed: [],
      },
      [
        demand('w1', { constraints: { rack: 'r2', dedicated: 'db/x' } }),
        demand('w2', { constraints: { rack: '!r2' } }),
      ],
      opts,
    );
    expect(plan.placements.map((p) => [p.workloadId, p.nodeId])).toEqual([
      ['w1', 'b'],
      ['w2', 'a'],
    ]);
  });

  it('enforces limit:N per attribute value, counting what is already placed', () => {
    const nodes = [node('a'), node('b')];
    const plan = place(
      { nodes, placed: [{ jobId: 'job', nodeId: 'a' }] },
      [
        demand('w1', { constraints: { host: 'limit:1' } }),
        demand('w2', { constraints: { host: 'limit:1' } }),
      ],
      opts,
    );
    expect(plan.placements.map((p) => p.nodeId)).toEqual(['b']);
    expect(plan.failures[0]!.reasons).toEqual({ LIMIT: 2 });
  });

  it('spreads instances of one job and packs with pack', () => {
    const nodes = [node('a'), node('b'), node('c')];
    const ds = [demand('w1'), demand('w2'), demand('w3')];
    const spread = place({ nodes, placed: [] }, ds, opts);
    expect(new Set(spread.placements.map((p) => p.nodeId)).size).toBe(3);
    const packed = place(
      { nodes: [node('a', { used: { cpu: 2, memory_mb: 2048, disk_mb: 0 } }), node('b')], placed: [] },
      [demand('w', { jobId: 'other' })],
      {
        strategy: 'pack',
        seed: 's',
      },
    );
    expect(packed.placements[0]!.nodeId).toBe('a');
  });

  const arbNode = fc.record({
    id: fc.uuid(),
    cpu: fc.integer({ min: 1, max: 16 }),
    memory_mb: fc.integer({ min: 128, max: 16384 }),
    disk_mb: fc.integer({ min: 0, max: 100_000 }),
    usedFrac: fc.double({ min: 0, max: 1, noNaN: true }),
    status: fc.constantFrom('ready', 'ready', 'ready', 'down', 'draining'),
  });
  const arbDemand = fc.record({
    cpu: fc.constantFrom(0.1, 0.25, 0.5, 1, 2, 4),
    memory_mb: fc.integer({ min: 1, max: 8192 }),
    disk_mb: fc.integer({ min: 0, max: 20_000 }),
    jobId: fc.constantFrom('j1', 'j2', 'j3'),
  });
  // Coarse values, so that demands alike (job, resources, isolation, constraints) come up often.
  const arbAlike = fc.record({
    cpu: fc.constantFrom(1, 2, 8),
    memory_mb: fc.constantFrom(256, 4096, 16384),
    disk_mb: fc.constantFrom(0, 50_000),
    jobId: fc.constantFrom('j1', 'j2'),
    constraints: fc.constantFrom<Record<string, string>>({}, { host: 'limit:1' }, { host: 'n0' }),
  });
  type ArbNode = typeof arbNode extends fc.Arbitrary<infer T> ? T : never;
  type ArbDemand = typeof arbDemand extends fc.Arbitrary<infer T> ? T : never;
  const build = (ns: ArbNode[], ds: ArbDemand[]) => ({
    nodes: ns.map((n, i) =>
      node(`n${i}`, {
        cpu: n.cpu,
        memory_mb: n.memory_mb,
        disk_mb: n.disk_mb,
        status: n.status as NodeView['status'],
        used: {
          cpu: Math.floor(n.cpu * n.usedFrac),
          memory_mb: Math.floor(n.memory_mb * n.usedFrac),
          disk_mb: Math.floor(n.disk_mb * n.usedFrac),
        },
      }),
    ),
    demands: ds.map((d, i) => demand(`w${i}`, d)),
  });

  it('never places over capacity, never on an unready node, and every unplaced demand has a reason', () => {
    fc.assert(
      fc.property(
        fc.array(arbNode, { maxLength: 40 }),
        fc.array(arbDemand, { maxLength: 40 }),
        fc.string(),
        (ns, ds, seed) => {
          const { nodes, demands } = build(ns, ds);
          const plan = place({ nodes, placed: [] }, demands, { strategy: 'spread', seed });
          const used = new Map(nodes.map((n) => [n.id, { ...n.used }]));
          for (const p of plan.placements) {
            const n = nodes.find((x) => x.id === p.nodeId)!;
            const d = demands.find((x) => x.workloadId === p.workloadId)!;
            expect(n.status).toBe('ready');
            const u = used.get(n.id)!;
            u.cpu += d.cpu;
            u.memory_mb += d.memory_mb;
            u.disk_mb += d.disk_mb;
            expect(u.cpu).toBeLessThanOrEqual(n.cpu + 1e-9);
            expect(u.memory_mb).toBeLessThanOrEqual(n.memory_mb);
            expect(u.disk_mb).toBeLessThanOrEqual(n.disk_mb);
          }
          expect(plan.placements.length + plan.failures.length).toBe(demands.length);
          for (const f of plan.failures) {
            expect(f.summary.length).toBeGreaterThan(0);
            expect(Object.values(f.reasons).reduce((a, b) => a + b, 0)).toBe(nodes.length);
          }
        },
      ),
      { numRuns: 300 },
    );
  });

  it("the applier's fits() accepts every placement of a plan, and refuses one more of a rejected demand", () => {
    fc.assert(
      fc.property(fc.array(arbNode, { maxLength: 20 }), fc.array(arbDemand, { maxLength: 30 }), (ns, ds) => {
        const { nodes, demands } = build(ns, ds);
        const plan = place({ nodes, placed: [] }, demands, { strategy: 'pack', seed: 's' });
        const used = new Map(nodes.map((n) => [n.id, { ...n.used }]));
        for (const p of plan.placements) {
          const n = nodes.find((x) => x.id === p.nodeId)!;
          const d = demands.find((x) => x.workloadId === p.workloadId)!;
          expect(fits(n, used.get(n.id)!, d)).toBe(true);
          take(used.get(n.id)!, d);
        }
        // A demand refused only for resources fits on no ready node, by the same function.
        for (const f of plan.failures) {
          const d = demands.find((x) => x.workloadId === f.workloadId)!;
          const onlyResources = Object.keys(f.reasons).every((r) =>
            ['CPU', 'MEMORY', 'DISK', 'NODE_DOWN', 'NODE_DRAINING'].includes(r),
          );
          if (onlyResources)
            for (const n of nodes.filter((x) => x.status === 'ready'))
              expect(fits(n, used.get(n.id)!, d)).toBe(false);
        }
      }),
      { numRuns: 300 },
    );
  });

  it('a demand like one that failed, nothing placed since, fails as it would looking at every node again', () => {
    let coalesced = 0;
    fc.assert(
      fc.property(fc.array(arbNode, { maxLength: 6 }), fc.array(arbAlike, { maxLength: 30 }), (ns, ds) => {
        const { nodes } = build(ns, []);
        const demands = ds.map((d, i) => demand(`w${i}`, d));
        const plan = place({ nodes, placed: [] }, demands, opts);
        coalesced += plan.coalescedFailures;
        // The reference: each demand planned alone on what the plan placed before it.
        const state = nodes.map((n) => ({ ...n, used: { ...n.used } }));
        const placed: { jobId: string; nodeId: string }[] = [];
        const byWorkload = new Map(plan.placements.map((p) => [p.workloadId, p.nodeId]));
        const failed = new Map(plan.failures.map((f) => [f.workloadId, f]));
        for (const d of demands) {
          const alone = place({ nodes: state, placed }, [d], opts);
          expect(alone.placements[0]?.nodeId).toBe(byWorkload.get(d.workloadId));
          expect(alone.failures[0]?.summary).toBe(failed.get(d.workloadId)?.summary);
          expect(alone.failures[0]?.reasons).toEqual(failed.get(d.workloadId)?.reasons);
          const nodeId = byWorkload.get(d.workloadId);
          if (nodeId) {
            take(state.find((n) => n.id === nodeId)!.used, d);
            placed.push({ jobId: d.jobId, nodeId });
          }
        }
      }),
      { numRuns: 300 },
    );
    expect(coalesced).toBeGreaterThan(0);
  });

  it('a Planner given the demands in slices makes the plan place() makes of them in one call', () => {
    fc.assert(
      fc.property(
        fc.array(arbNode, { maxLength: 8 }),
        fc.array(arbAlike, { maxLength: 40 }),
        fc.array(fc.integer({ min: 1, max: 7 }), { minLength: 1, maxLength: 10 }),
        fc.constantFrom<'spread' | 'pack'>('spread', 'pack'),
        (ns, ds, sizes, strategy) => {
          const { nodes } = build(ns, []);
          const demands = ds.map((d, i) => demand(`w${i}`, d));
          const placed = nodes.length ? [{ jobId: 'j1', nodeId: nodes[0]!.id, count: 1 }] : [];
          const whole = place({ nodes, placed }, demands, { strategy, seed: 's' });
          const planner = new Planner({ nodes, placed }, { strategy, seed: 's' });
          const parts = { placements: [] as typeof whole.placements, failures: [] as typeof whole.failures };
          for (let i = 0, k = 0; i < demands.length; k++) {
            const size = sizes[k % sizes.length]!;
            const part = planner.plan(demands.slice(i, i + size));
            parts.placements.push(...part.placements);
            parts.failures.push(...part.failures);
            i += size;
          }
          expect(parts.placements).toEqual(whole.placements);
          expect(parts.failures).toEqual(whole.failures);
          // The planner kept its own copy: the snapshot's nodes are as they were.
          expect(nodes).toEqual(build(ns, []).nodes);
        },
      ),
      { numRuns: 300 },
    );
  });

  it('coalesces the failures of a backlog that fits nowhere, each with its reason', () => {
    const plan = place(
      { nodes: [node('a', { cpu: 1 }), node('b', { cpu: 1 })], placed: [] },
      [
        ...Array.from({ length: 5 }, (_, i) => demand(`big${i}`, { cpu: 2 })),
        demand('small', { cpu: 1 }),
        demand('other-job', { cpu: 2, jobId: 'other' }),
      ],
      opts,
    );
    expect(plan.placements.map((p) => p.workloadId)).toEqual(['small']);
    expect(plan.failures.map((f) => f.workloadId)).toEqual([
      'big0',
      'big1',
      'big2',
      'big3',
      'big4',
      'other-job',
    ]);
    for (const f of plan.failures) expect(f.summary).toBe('2 nodes: insufficient cpu (need 2, max free 1)');
    // big1..big4 answered from big0's failure; after a placement, and for another job, the nodes are
    // looked at afresh.
    expect(plan.coalescedFailures).toBe(4);
  });

  it('demandOf rounds the spec up to MiB and falls back to the defaults', () => {
    expect(demandOf({ task: { resources: { cpu: 0.5, ram: 1, disk: 1024 * 1024 + 1 } } } as never)).toEqual({
      cpu: 0.5,
      memory_mb: 1,
      disk_mb: 2,
    });
    expect(demandOf({ task: {} } as never)).toEqual({ cpu: 1, memory_mb: 256, disk_mb: 1024 });
  });

  it('firstRejection answers as the first of CHECKERS, in their order, that rejects, for every combination', () => {
    let cases = 0;
    for (const status of ['ready', 'down', 'draining'] as const)
      for (const cpu of [0.5, 1, 4])
        for (const memory_mb of [256, 4096])
          for (const disk_mb of [50, 10_000])
            for (const isolation of [['process'], ['process', 'sandbox']] as NodeView['isolation'][])
              for (const rack of ['r1', 'r2'])
                for (const dedicated of [undefined, 'x'])
                  for (const d of [
                    { cpu: 0.25, memory_mb: 128, isolation: 'process' as const },
                    { cpu: 2, memory_mb: 1024, isolation: 'sandbox' as const },
                    { cpu: 1, memory_mb: 1024, isolation: 'process' as const },
                  ])
                    for (const constraints of [
                      {},
                      { rack: 'r1' },
                      { rack: '!r1' },
                      { rack: 'limit:1' },
                      { dedicated: 'x' },
                    ])
                      for (const placedHere of [0, 1]) {
                        const ctx: CheckContext = {
                          node: node('n', {
                            status,
                            cpu,
                            memory_mb,
                            disk_mb,
                            isolation,
                            attributes: { host: 'n', rack, ...(dedicated ? { dedicated } : {}) },
                          }),
                          demand: demand('w', { ...d, constraints: constraints as Record<string, string> }),
                          countFor: () => placedHere,
                        };
                        let looped = null;
                        for (const check of CHECKERS) {
                          looped = check(ctx);
                          if (looped) break;
                        }
                        expect(firstRejection(ctx)).toBe(looped);
                        cases++;
                      }
    expect(cases).toBe(8640);
  });

  it('is deterministic for a given seed', () => {
    fc.assert(
      fc.property(
        fc.array(arbNode, { maxLength: 40 }),
        fc.array(arbDemand, { maxLength: 20 }),
        fc.string(),
        (ns, ds, seed) => {
          const { nodes, demands } = build(ns, ds);
          const a = place({ nodes, placed: [] }, demands, { strategy: 'spread', seed });
          const b = place({ nodes, placed: [] }, demands, { strategy: 'spread', seed });
          expect(a).toEqual(b);
        },
      ),
      { numRuns: 100 },
    );
  });
});

describe('closure locality', () => {
  it('prefers the node missing the fewest bytes of the closure, and says how much it must fetch', () => {
    const closure = [
      { path: '/nix/store/a-big', size: 900 },
      { path: '/nix/store/b-small', size: 100 },
    ];
    const nodes = [
      node('empty'),
      node('has-small', { storePaths: new Set(['/nix/store/b-small']) }),
      node('has-big', { storePaths: new Set(['/nix/store/a-big']) }),
    ];
    const plan = place({ nodes, placed: [] }, [demand('w', { closure })], opts);
    expect(plan.placements[0]).toMatchObject({ nodeId: 'has-big', missingBytes: 100 });
  });

  it('still spreads when locality is equal', () => {
    const closure = [{ path: '/nix/store/a', size: 10 }];
    const held = new Set(['/nix/store/a']);
    const nodes = [node('a', { storePaths: held }), node('b', { storePaths: held })];
    const plan = place({ nodes, placed: [] }, [demand('w1', { closure }), demand('w2', { closure })], opts);
    expect(new Set(plan.placements.map((p) => p.nodeId)).size).toBe(2);
  });
});
