/** The pure node-down reconciliation: table cases and fast-check properties (no database, no sleeps). */
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import {
  goneNodeChanges,
  goneNodeMove,
  type JobReplacementView,
  judgeSilence,
  type NodeLivenessView,
  type NodeWorkloadView,
  replacementFor,
  silenceOf,
  silentSince,
} from '../../scheduler/core/reconcile/node.js';
import { WORKLOAD_STATUSES, type WorkloadStatus } from '../../spec/messages.js';

const NOW = Date.UTC(2030, 0, 1, 12);
const TTL = 10_000;
const DEAD = 4_000;

const node = (over: Partial<NodeLivenessView> = {}): NodeLivenessView => ({
  id: 'n1',
  name: 'n1',
  status: 'ready',
  lastSeenAt: NOW - 1000,
  holderBeatAt: NOW - 100,
  ...over,
});

const snapshot = (nodes: NodeLivenessView[], graceRemainingMs = 0) => ({
  nodes,
  now: NOW,
  ttlMs: TTL,
  coordinatorDeadMs: DEAD,
  graceRemainingMs,
});

describe('judging silence', () => {
  it.each([
    ['heard recently, holder alive', node(), false],
    ['silent past the TTL, holder alive', node({ lastSeenAt: NOW - TTL - 500 }), true],
    // The holder stopped beating 3 s ago (still alive by the 4 s rule): silence counts to its last beat.
    [
      'silent, holder alive but behind',
      node({ lastSeenAt: NOW - TTL - 500, holderBeatAt: NOW - 3000 }),
      false,
    ],
    // The holder is dead: the agent gets one TTL from the holder's last beat to reconnect elsewhere.
    ['holder dead recently', node({ lastSeenAt: NOW - 60_000, holderBeatAt: NOW - 5000 }), false],
    [
      'holder dead for longer than the TTL',
      node({ lastSeenAt: NOW - 60_000, holderBeatAt: NOW - TTL - 1 }),
      true,
    ],
    ['nobody holds it, silent', node({ lastSeenAt: NOW - TTL - 1, holderBeatAt: null }), true],
    ['nobody holds it, exactly the TTL', node({ lastSeenAt: NOW - TTL, holderBeatAt: null }), false],
    ['already down', node({ status: 'down', lastSeenAt: NOW - 60_000, holderBeatAt: null }), false],
    ['draining and silent', node({ status: 'draining', lastSeenAt: NOW - 60_000, holderBeatAt: null }), true],
  ])('%s', (_name, n, down) => {
    const verdicts = judgeSilence(snapshot([n]));
    expect(verdicts.map((v) => v.nodeId)).toEqual(down ? [n.id] : []);
    if (down) expect(verdicts[0]!.reason).toBe(`node ${n.name} missed heartbeats for ${TTL} ms`);
  });

  const arbNode = fc.record({
    id: fc.uuid(),
    name: fc.string({ minLength: 1, maxLength: 8 }),
    status: fc.constantFrom('ready', 'down', 'draining') as fc.Arbitrary<NodeLivenessView['status']>,
    lastSeenAt: fc.integer({ min: NOW - 120_000, max: NOW + 2000 }),
    holderBeatAt: fc.option(fc.integer({ min: NOW - 120_000, max: NOW + 2000 }), { nil: null }),
  });

  it('declares down exactly the nodes not down yet whose silence exceeds the TTL, never in grace', () => {
    fc.assert(
      fc.property(
        fc.array(arbNode, { maxLength: 30 }),
        fc.integer({ min: -5000, max: 5000 }),
        (nodes, grace) => {
          const got = judgeSilence(snapshot(nodes, grace)).map((v) => v.nodeId);
          const want =
            grace > 0
              ? []
              : nodes.filter((n) => n.status !== 'down' && silenceOf(n, NOW, DEAD) > TTL).map((n) => n.id);
          expect(got).toEqual(want);
        },
      ),
    );
  });

  it('never blames a node heard within the TTL, whatever its coordinator did', () => {
    fc.assert(
      fc.property(arbNode, (n) => {
        if (NOW - n.lastSeenAt <= TTL) expect(judgeSilence(snapshot([n]))).toEqual([]);
        // The cheap pre-filter of the store never drops a node the verdict would take.
        if (judgeSilence(snapshot([n])).length) expect(n.lastSeenAt).toBeLessThan(silentSince(NOW, TTL));
      }),
    );
  });

  it('gives a node whose holder died one TTL from the holder’s last beat', () => {
    fc.assert(
      fc.property(arbNode, (n) => {
        const holderDied = n.holderBeatAt !== null && n.holderBeatAt <= NOW - DEAD;
        if (holderDied && NOW - n.holderBeatAt! <= TTL) expect(judgeSilence(snapshot([n]))).toEqual([]);
      }),
    );
  });
});

const STATUSES: readonly WorkloadStatus[] = WORKLOAD_STATUSES;

const arbWorkload = (jobIds: string[]) =>
  fc.record({
    id: fc.uuid(),
    job_id: fc.constantFrom(...jobIds),
    job_version: fc.integer({ min: 1, max: 3 }),
    instance: fc.integer({ min: 0, max: 5 }),
    status: fc.constantFrom(...STATUSES),
    restarts: fc.integer({ min: 0, max: 4 }),
  }) as fc.Arbitrary<NodeWorkloadView>;

const arbJob = (id: string) =>
  fc.record({
    id: fc.constant(id),
    status: fc.constantFrom('active', 'stopped') as fc.Arbitrary<'active' | 'stopped'>,
    current_version: fc.integer({ min: 1, max: 3 }),
    rolling: fc.option(
      fc.record({
        from_version: fc.integer({ min: 1, max: 3 }),
        next_instance: fc.integer({ min: 0, max: 6 }),
      }),
      { nil: null },
    ),
  }) as fc.Arbitrary<JobReplacementView>;

describe('a gone node’s workloads', () => {
  it('ends a stopping workload as stopped, loses a starting or running one, and replaces it', () => {
    const jobs = new Map<string, JobReplacementView>([
      ['j', { id: 'j', status: 'active', current_version: 2, rolling: null }],
    ]);
    const ws: NodeWorkloadView[] = [
      { id: 'a', job_id: 'j', job_version: 2, instance: 0, status: 'running', restarts: 1 },
      { id: 'b', job_id: 'j', job_version: 2, instance: 1, status: 'stopping', restarts: 0 },
      { id: 'c', job_id: 'j', job_version: 1, instance: 2, status: 'starting', restarts: 0 },
    ];
    const c = goneNodeChanges({ node: { id: 'n', name: 'n' }, workloads: ws, jobs, why: 'node n gone' });
    expect(c.moves).toEqual([
      { workloadId: 'a', from: 'running', to: 'lost', reason: 'node n gone' },
      { workloadId: 'b', from: 'stopping', to: 'stopped', reason: 'node n went away while stopping' },
      { workloadId: 'c', from: 'starting', to: 'lost', reason: 'node n gone' },
    ]);
    // c ran an old version no rollout is bringing along: not replaced.
    expect(c.replacements).toEqual([
      {
        replaces: 'a',
        jobId: 'j',
        version: 2,
        instance: 0,
        restarts: 1,
        reason: 'rescheduled: node n gone (replaces a)',
      },
    ]);
    // Every lost workload, replaced or not, is stopped on the node; a stopping one has stopped already.
    expect(c.stops).toEqual([
      { workloadId: 'a', reason: 'declared lost: node n gone' },
      { workloadId: 'c', reason: 'declared lost: node n gone' },
    ]);
  });

  it('replaces an old version only for an instance the rolling update has not reached', () => {
    const w = { id: 'w', job_id: 'j', job_version: 1, instance: 3, restarts: 0 };
    const job = (next_instance: number): JobReplacementView => ({
      id: 'j',
      status: 'active',
      current_version: 2,
      rolling: { from_version: 1, next_instance },
    });
    expect(replacementFor(w, job(3), 'x')?.version).toBe(1);
    expect(replacementFor(w, job(4), 'x')).toBeNull();
    expect(replacementFor(w, { ...job(0), status: 'stopped' }, 'x')).toBeNull();
    expect(replacementFor(w, undefined, 'x')).toBeNull();
    expect(replacementFor({ ...w, job_version: 2 }, job(0), 'x', true)?.restarts).toBe(1);
  });

  it('moves every active workload exactly once, stops every lost one and replaces exactly the lost ones whose job still wants them', () => {
    const jobIds = ['j1', 'j2', 'j3'];
    fc.assert(
      fc.property(
        fc.uniqueArray(arbWorkload(jobIds), { maxLength: 40, selector: (w) => w.id }),
        fc.tuple(arbJob('j1'), arbJob('j2')),
        (workloads, js) => {
          // j3 is unknown (deleted): its lost workloads are never replaced.
          const jobs = new Map(js.map((j) => [j.id, j]));
          const c = goneNodeChanges({ node: { id: 'n', name: 'n' }, workloads, jobs, why: 'gone' });
          const active = workloads.filter((w) => ['starting', 'running', 'stopping'].includes(w.status));
          expect(c.moves.map((m) => m.workloadId)).toEqual(active.map((w) => w.id));
          for (const m of c.moves) {
            expect(m.to).toBe(m.from === 'stopping' ? 'stopped' : 'lost');
            expect(goneNodeMove({ id: m.workloadId, status: m.from }, 'n', 'gone')).toEqual(m);
          }
          const lost = new Set(c.moves.filter((m) => m.to === 'lost').map((m) => m.workloadId));
          for (const r of c.replacements) {
            expect(lost.has(r.replaces)).toBe(true);
            const w = workloads.find((x) => x.id === r.replaces)!;
            const job = jobs.get(w.job_id)!;
            expect(job.status).toBe('active');
            // Same instance and version, and a loss is not a failure.
            expect([r.instance, r.version, r.restarts, r.jobId]).toEqual([
              w.instance,
              w.job_version,
              w.restarts,
              w.job_id,
            ]);
          }
          // Exactly the lost ones get a stop for the node, once each.
          expect(c.stops.map((x) => x.workloadId)).toEqual([...lost]);
          const replaced = new Set(c.replacements.map((r) => r.replaces));
          expect(replaced.size).toBe(c.replacements.length);
          for (const id of lost) {
            const w = workloads.find((x) => x.id === id)!;
            const job = jobs.get(w.job_id);
            const wanted =
              job?.status === 'active' &&
              (job.current_version === w.job_version ||
                (job.rolling?.from_version === w.job_version && w.instance >= job.rolling.next_instance));
            expect(replaced.has(id)).toBe(wanted);
          }
        },
      ),
    );
  });
});
