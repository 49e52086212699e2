/** The pure agent reconciliation on hello: table cases and fast-check properties (no database, no sleeps). */
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { isTerminal } from '../../scheduler/core/lifecycle.js';
import {
  type AgentSnapshot,
  lostOnHello,
  NOT_WANTED,
  reconcileHello,
  STOP_REQUESTED,
  type WantedWorkload,
} from '../../scheduler/core/reconcile/agent.js';
import { WORKLOAD_STATUSES, type WorkloadStatus } from '../../spec/messages.js';

const node = { id: 'n', name: 'edge' };

describe('reconciling an agent on hello', () => {
  it('stops strangers, re-sends starts, adopts reports, ends stopped stops and loses what vanished', () => {
    const c = reconcileHello({
      node,
      reported: [
        { workload_id: 'stranger', status: 'running' },
        { workload_id: 'adopt', status: 'running' },
        { workload_id: 'same', status: 'running' },
        { workload_id: 'still-stopping', status: 'running' },
        { workload_id: 'ended-there', status: 'failed' },
      ],
      wanted: [
        { id: 'adopt', status: 'starting' },
        { id: 'same', status: 'running' },
        { id: 'still-stopping', status: 'stopping' },
        { id: 'gone-stopping', status: 'stopping' },
        { id: 'never-started', status: 'starting' },
        { id: 'vanished', status: 'running' },
        { id: 'ended-there', status: 'running' },
      ],
    });
    expect(c.stop).toEqual([
      { workloadId: 'stranger', reason: NOT_WANTED },
      { workloadId: 'still-stopping', reason: STOP_REQUESTED },
    ]);
    expect(c.start).toEqual(['never-started']);
    // A terminal status in the hello is not taken over here: its own status message follows.
    expect(c.report).toEqual([
      { workloadId: 'adopt', status: 'running', reason: 'reported on reconnect' },
      { workloadId: 'gone-stopping', status: 'stopped', reason: 'agent no longer runs it' },
    ]);
    expect(c.lose).toEqual([
      { workloadId: 'vanished', from: 'running', to: 'lost', reason: 'agent edge no longer runs it' },
    ]);
  });

  it('re-decides a loss on the row as it is now: moved elsewhere or ended meanwhile, it stays', () => {
    expect(lostOnHello({ id: 'w', status: 'running', node_id: 'n' }, node)?.to).toBe('lost');
    expect(lostOnHello({ id: 'w', status: 'starting', node_id: 'n' }, node)?.to).toBe('lost');
    expect(lostOnHello({ id: 'w', status: 'running', node_id: 'other' }, node)).toBeNull();
    expect(lostOnHello({ id: 'w', status: 'failed', node_id: 'n' }, node)).toBeNull();
    expect(lostOnHello({ id: 'w', status: 'stopping', node_id: 'n' }, node)).toBeNull();
  });

  const STATUSES: readonly WorkloadStatus[] = WORKLOAD_STATUSES;
  const ids = fc.constantFrom(...Array.from({ length: 12 }, (_, i) => `w${i}`));
  const arbSnapshot: fc.Arbitrary<AgentSnapshot> = fc.record({
    node: fc.constant(node),
    reported: fc.uniqueArray(fc.record({ workload_id: ids, status: fc.constantFrom(...STATUSES) }), {
      selector: (r) => r.workload_id,
      maxLength: 12,
    }),
    wanted: fc.uniqueArray(
      fc.record({
        id: ids,
        status: fc.constantFrom('starting', 'running', 'stopping') as fc.Arbitrary<WorkloadStatus>,
      }),
      { selector: (w) => w.id, maxLength: 12 },
    ),
  });

  it('gives every workload at most one action, and each the right one', () => {
    fc.assert(
      fc.property(arbSnapshot, (s) => {
        const c = reconcileHello(s);
        const reported = new Map(s.reported.map((r) => [r.workload_id, r.status]));
        const wanted = new Map<string, WantedWorkload>(s.wanted.map((w) => [w.id, w]));
        const acted = [
          ...c.stop.map((x) => x.workloadId),
          ...c.start,
          ...c.report.map((x) => x.workloadId),
          ...c.lose.map((x) => x.workloadId),
        ];
        expect(new Set(acted).size).toBe(acted.length);
        // What runs there unwanted is stopped (what ended there lately needs no stop); nothing unwanted
        // is started, adopted or lost.
        for (const [id, status] of reported) {
          if (wanted.has(id)) continue;
          if (isTerminal(status)) expect(acted).not.toContain(id);
          else expect(c.stop).toContainEqual({ workloadId: id, reason: NOT_WANTED });
        }
        for (const id of [
          ...c.start,
          ...c.report.map((r) => r.workloadId),
          ...c.lose.map((l) => l.workloadId),
        ])
          expect(wanted.has(id)).toBe(true);
        // Never start or lose what the agent says it runs; never lose a workload being stopped.
        for (const id of [...c.start, ...c.lose.map((l) => l.workloadId)])
          expect(reported.has(id)).toBe(false);
        for (const l of c.lose) expect(wanted.get(l.workloadId)!.status).toBe('running');
        for (const id of c.start) expect(wanted.get(id)!.status).toBe('starting');
        // Adopted statuses are the agent's own, never terminal; a vanished stop ends as stopped.
        for (const r of c.report) {
          const w = wanted.get(r.workloadId)!;
          if (w.status === 'stopping') expect([r.status, reported.has(w.id)]).toEqual(['stopped', false]);
          else
            expect([r.status, isTerminal(r.status), r.status !== w.status]).toEqual([
              reported.get(w.id),
              false,
              true,
            ]);
        }
        // Every wanted workload the agent does not run gets an action.
        for (const w of s.wanted) if (!reported.has(w.id)) expect(acted).toContain(w.id);
      }),
    );
  });

  it('does not depend on the order of the report', () => {
    fc.assert(
      fc.property(arbSnapshot, (s) => {
        const reversed = { ...s, reported: [...s.reported].reverse() };
        const a = reconcileHello(s);
        const b = reconcileHello(reversed);
        const sorted = (x: ReturnType<typeof reconcileHello>) => ({
          stop: [...x.stop].sort((p, q) => p.workloadId.localeCompare(q.workloadId)),
          start: x.start,
          report: x.report,
          lose: x.lose,
        });
        expect(sorted(b)).toEqual(sorted(a));
      }),
    );
  });
});
