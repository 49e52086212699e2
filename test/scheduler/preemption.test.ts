/**
 * Priority and preemption through a real coordinator and real agent sockets, on both engines: a
 * production job takes the place of a non-production one on a full node (the victim stopped with the
 * reason, its instance replaced by a pending workload), a higher priority does so within its role but
 * not across roles, the default rank never preempts, the delay is waited out, and pending work is
 * placed highest rank first.
 */
import { execa } from 'execa';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { repoPath } from '../../scheduler/paths.js';
import type { JobSpecInput } from '../../spec/job.js';
import { plainJob, startTestCoordinator, type TestCoordinator } from '../helpers/coordinator.js';
import { ENGINES } from '../helpers/db.js';
import { eventually, ProtocolAgent } from '../helpers/protocol-agent.js';

interface Workload {
  id: string;
  status: string;
  instance: number;
  node_id: string | null;
  pending_reason: string | null;
  created_at: string;
}

for (const engine of ENGINES) {
  describe(`preemption on ${engine}`, () => {
    let c: TestCoordinator;
    const agents: ProtocolAgent[] = [];
    beforeAll(async () => {
      c = await startTestCoordinator(engine, { preemptionDelayMs: 0 });
    });
    afterAll(async () => {
      for (const a of agents) a.close();
      await c?.stop();
    });

    /** A node of `cpu` cores that only the jobs constrained to it use. */
    const agent = async (name: string, cpu: number, on: TestCoordinator = c) => {
      const a = await new ProtocolAgent({ url: on.url, name, cpu }).connect();
      agents.push(a);
      return a;
    };
    /** A job of `instances` one-core instances on node `host`. */
    const job = (name: string, host: string, over: Partial<JobSpecInput> = {}) =>
      plainJob({ name, instances: 1, constraints: { host }, ...over });
    const submit = async (spec: JobSpecInput, on: TestCoordinator = c) => {
      const r = await on.api('POST', '/api/jobs', spec);
      expect(r.status, JSON.stringify(r.body)).toBeLessThan(300);
      return r.body.data.job.key as string;
    };
    const workloadsOf = async (key: string, on: TestCoordinator = c) =>
      (await on.api<{ data: Workload[] }>('GET', `/api/workloads?job=${encodeURIComponent(key)}`)).body.data;
    const eventsOf = async (id: string, on: TestCoordinator = c) =>
      (await on.api<{ data: { to_status: string; reason: string }[] }>('GET', `/api/workloads/${id}/events`))
        .body.data;
    let last: unknown;
    const running = (key: string, n: number, on: TestCoordinator = c) =>
      eventually(
        async () => {
          const all = await workloadsOf(key, on);
          last = all;
          const ws = all.filter((w) => w.status === 'running');
          return ws.length === n ? ws : null;
        },
        10_000,
        `${n} running of ${key}: ${JSON.stringify(last)}`,
      );

    it('a production job takes the place of a non-production one; the victim is replaced and waits', async () => {
      const node = await agent('pre-a', 2);
      const low = await submit(job('batchy', 'pre-a', { instances: 2, role: 'www' }));
      const before = await running(low, 2);
      const prod = await submit(job('prod', 'pre-a', { role: 'ads', production: true }));
      const [placed] = await running(prod, 1);
      expect(placed!.node_id).toBe(node.nodeId);
      const ws = await workloadsOf(low);
      const victim = ws.find((w) => w.status === 'stopped')!;
      expect(before.map((w) => w.id)).toContain(victim.id);
      const events = await eventsOf(victim.id);
      expect(events.map((e) => e.reason)).toContainEqual(
        expect.stringMatching(/^preempted for prod-0-\w+ \(production\) on pre-a$/),
      );
      // Its instance is replaced, and the replacement waits for room (the node is full).
      const replacement = await eventually(
        async () => {
          const r = (await workloadsOf(low)).find(
            (w) => w.instance === victim.instance && w.status === 'pending' && w.pending_reason,
          );
          return r ?? null;
        },
        10_000,
        'the replacement pending with a reason',
      );
      expect(replacement.pending_reason).toMatch(/insufficient cpu/);
      // The replacement preempts nothing: the default rank never does.
      expect((await workloadsOf(prod)).filter((w) => w.status === 'running')).toHaveLength(1);
      // The CLI shows the rank of a job that has one, and none for the default.
      const show = (key: string) =>
        execa('node', [repoPath('bin', 'mxc.js'), 'jobs', 'show', key], {
          env: { MXC_COORDINATOR: c.url, NO_COLOR: '1' },
        });
      expect((await show(prod)).stdout).toMatch(/^rank +production, priority 0$/m);
      expect((await show(low)).stdout).not.toMatch(/^rank/m);
    });

    it('within a role a higher priority preempts; across roles it does not; pending work is placed by rank', async () => {
      await agent('pre-b', 1);
      const low = await submit(job('low', 'pre-b', { role: 'www', priority: 0 }));
      await running(low, 1);
      // Another role's priority 5 waits without preempting.
      const other = await submit(job('other-role', 'pre-b', { role: 'ads', priority: 5 }));
      await eventually(
        async () => (await workloadsOf(other))[0]?.pending_reason?.includes('insufficient cpu') ?? false,
        10_000,
        'the other role pending for room',
      );
      // The same role's priority 3 takes the node: ranked above `low`, it preempts; the room made is
      // its own though `other-role` (priority 5, older) waits too.
      const high = await submit(job('high', 'pre-b', { role: 'www', priority: 3 }));
      await running(high, 1);
      expect((await workloadsOf(other))[0]!.status).toBe('pending');
      expect((await workloadsOf(low)).map((w) => w.status).sort()).toEqual(['pending', 'stopped']);
    });

    // Two more coordinators: on PostgreSQL only (PGlite makes each a database of its own, ~10 s here).
    it.runIf(engine === 'postgres')(
      'waits out the preemption delay; with preemption off, never preempts',
      async () => {
        const slow = await startTestCoordinator(engine, { preemptionDelayMs: 1500 });
        const off = await startTestCoordinator(engine, { preemptionDelayMs: null });
        try {
          for (const [co, name] of [
            [slow, 'pre-slow'],
            [off, 'pre-off'],
          ] as const) {
            await agent(name, 1, co);
            await running(await submit(job('low', name), co), 1, co);
          }
          const prodOff = await submit(job('prod', 'pre-off', { production: true }), off);
          const prodSlow = await submit(job('prod', 'pre-slow', { production: true }), slow);
          const [w] = await running(prodSlow, 1, slow);
          const submitted = Date.parse((await workloadsOf(prodSlow, slow))[0]!.created_at);
          const preempted = (await slow.api('GET', `/api/workloads/${w!.id}/events`)).body.data as {
            ts: string;
            to_status: string;
          }[];
          const started = Date.parse(preempted.find((e) => e.to_status === 'starting')!.ts);
          expect(started - submitted).toBeGreaterThanOrEqual(1500);
          // The same wait has passed for the coordinator with preemption off: its job still waits.
          const [pendingOff] = await workloadsOf(prodOff, off);
          expect(pendingOff!.status).toBe('pending');
        } finally {
          await slow.stop();
          await off.stop();
        }
      },
    );
  });
}
