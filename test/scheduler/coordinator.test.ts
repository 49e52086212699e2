/**
 * The coordinator against a real database (PGlite and PostgreSQL) with protocol-level agents over real
 * WebSockets: submit, placement, pending reasons, lifecycle, no overcommit, TTL loss, drain, auth, bad input.
 */
import { afterEach, describe, expect, it } from 'vitest';
import { ManualClock } from '../../scheduler/engine/clock.js';
import { recordSubmission } from '../../scheduler/job-submit.js';
import { JobSpec, jobKey } from '../../spec/job.js';
import { plainJob, startTestCoordinator, type TestCoordinator } from '../helpers/coordinator.js';
import { ENGINES } from '../helpers/db.js';
import { eventually, ProtocolAgent } from '../helpers/protocol-agent.js';

describe.each(ENGINES)('coordinator on %s', (engine) => {
  let c: TestCoordinator;
  const agents: ProtocolAgent[] = [];
  const agent = async (
    o: Partial<ConstructorParameters<typeof ProtocolAgent>[0]> = {},
    running: string[] = [],
  ) => {
    const a = await new ProtocolAgent({ url: c.url, name: `node-${agents.length}`, ...o }).connect(running);
    agents.push(a);
    return a;
  };
  afterEach(async () => {
    for (const a of agents.splice(0)) a.close();
    await c?.stop();
  });

  const workload = async (id: string) => (await c.api('GET', `/api/workloads/${id}`)).body.data;

  it('refuses bad input with coded errors and keeps nothing', async () => {
    c = await startTestCoordinator(engine);
    const notJson = await c.api('POST', '/api/jobs', '{"name": ');
    expect(notJson.status).toBe(400);
    expect(notJson.body.error.code).toBe('BAD_REQUEST');
    expect(notJson.body.error.message).toMatch(/not valid JSON/);

    const unknown = await c.api('POST', '/api/jobs', {
      ...plainJob(),
      colour: 'blue',
      task: { ...plainJob().task, procs: [] },
    });
    expect(unknown.status).toBe(422);
    expect(unknown.body.error.code).toBe('VALIDATION_FAILED');
    expect(unknown.body.error.details.problems.join('\n')).toMatch(/colour/);
    expect(unknown.body.error.details.problems.join('\n')).toMatch(/task: .*procs/);

    const badOrder = await c.api('POST', '/api/jobs', {
      ...plainJob(),
      task: { ...plainJob().task, constraints: [{ order: ['web', 'ghost'] }] },
    });
    expect(badOrder.status).toBe(422);
    expect(badOrder.body.error.message).toMatch(/task.constraints.0.order.1: order names process "ghost"/);

    const huge = await c.api('POST', '/api/jobs', { ...plainJob(), contact: 'x'.repeat(5 * 1024 * 1024) });
    expect(huge.status).toBe(413);
    expect(huge.body.error.code).toBe('BODY_TOO_LARGE');

    expect((await c.api('GET', '/api/jobs')).body.data).toEqual([]);
    expect((await c.api('GET', '/api/workloads/nope')).status).toBe(404);
    expect((await c.api('GET', '/api/workloads/nope')).body.error.code).toBe('NOT_FOUND');
  });

  it('places a job on an agent, says why it was pending, and records every transition', async () => {
    c = await startTestCoordinator(engine);
    const sub = await c.api('POST', '/api/jobs', plainJob());
    expect(sub.status).toBe(201);
    const [id] = sub.body.data.workloads;
    const pending = await eventually(async () => {
      const w = await workload(id);
      return w.pending_reason ? w : null;
    });
    expect(pending.status).toBe('pending');
    expect(pending.pending_reason).toBe('no nodes have joined the cluster');

    const a = await agent();
    await a.waitFor((m) => m.type === 'start' && m.workload.id === id);
    await eventually(async () => (await workload(id)).status === 'running', 5000, 'running');
    const w = await workload(id);
    expect(w.node).toBe('node-0');
    expect(w.events.map((e: { to_status: string }) => e.to_status)).toEqual([
      'pending',
      'starting',
      'running',
    ]);

    // Identical resubmit: no-op.
    const again = await c.api('POST', '/api/jobs', plainJob());
    expect(again.status).toBe(200);
    expect(again.body.data.changed).toBe(false);

    // Stop: the agent is told, reports stopped.
    const stop = await c.api('POST', `/api/workloads/${id}/stop`);
    expect(stop.body.data.status).toBe('stopping');
    await eventually(async () => (await workload(id)).status === 'stopped', 5000, 'stopped');
    const stopTwice = await c.api('POST', `/api/workloads/${id}/stop`);
    expect(stopTwice.status).toBe(409);
    expect(stopTwice.body.error.code).toBe('NOT_STOPPABLE');
  });

  it('replaces the workloads of a changed job and keeps its versions', async () => {
    c = await startTestCoordinator(engine);
    const a = await agent();
    const v1 = await c.api('POST', '/api/jobs', plainJob());
    const [first] = v1.body.data.workloads;
    await eventually(async () => (await workload(first)).status === 'running');
    const v2 = await c.api('POST', '/api/jobs', plainJob({ instances: 2 }));
    expect(v2.body.data.version).toBe(2);
    expect(v2.body.data.workloads).toHaveLength(2);
    await eventually(async () => (await workload(first)).status === 'stopped');
    await a.waitFor((m) => m.type === 'stop' && m.workload_id === first);
    const versions = await c.api('GET', `/api/jobs/${v1.body.data.job.id}/versions`);
    expect(versions.body.data.map((v: { version: number }) => v.version)).toEqual([2, 1]);
    // Paged, newest first: a page of one, then the rest through its cursor.
    const first1 = await c.api('GET', `/api/jobs/${v1.body.data.job.id}/versions?limit=1`);
    expect(first1.body.data.map((v: { version: number }) => v.version)).toEqual([2]);
    const rest = await c.api(
      'GET',
      `/api/jobs/${v1.body.data.job.id}/versions?limit=1&cursor=${first1.body.next_cursor}`,
    );
    expect([rest.body.data.map((v: { version: number }) => v.version), rest.body.next_cursor]).toEqual([
      [1],
      null,
    ]);
  });

  it('never overcommits a node under many concurrent submits, and places the rest when capacity appears', async () => {
    c = await startTestCoordinator(engine);
    await agent({ cpu: 3, memory_mb: 4096 });
    const subs = await Promise.all(
      Array.from({ length: 12 }, (_, i) => c.api('POST', '/api/jobs', plainJob({ name: `job${i}` }))),
    );
    expect(subs.every((s) => s.status === 201)).toBe(true);
    await eventually(async () => {
      const ws = (await c.api('GET', '/api/workloads?status=running')).body.data;
      return ws.length === 3;
    });
    const nodes = (await c.api('GET', '/api/nodes')).body.data;
    expect(nodes[0].used.cpu).toBe(3);
    const pending = await eventually(async () => {
      const ws = (await c.api('GET', '/api/workloads?status=pending')).body.data;
      return ws.length === 9 && ws.every((w: { pending_reason: string | null }) => w.pending_reason)
        ? ws
        : null;
    });
    expect(pending).toHaveLength(9);
    expect(pending[0].pending_reason).toBe('1 node: insufficient cpu (need 1, max free 0)');

    // A second node joins: pending work is placed without a new submit.
    await agent({ name: 'node-big', cpu: 4, memory_mb: 8192 });
    await eventually(
      async () => (await c.api('GET', '/api/workloads?status=running')).body.data.length === 7,
    );
    const used = (await c.api('GET', '/api/nodes')).body.data.map(
      (n: { used: { cpu: number }; cpu: number }) => [n.used.cpu, n.cpu],
    );
    for (const [u, total] of used) expect(u).toBeLessThanOrEqual(total);
  });

  it('marks a silent node down, its workloads lost, and reschedules them elsewhere', async () => {
    // The liveness tick and the grace run on a manual clock: nothing is judged until the test says so.
    const clock = new ManualClock();
    c = await startTestCoordinator(engine, { heartbeatTtlMs: 600, clock });
    const silent = await agent({ name: 'silent' });
    const sub = await c.api('POST', '/api/jobs', plainJob());
    const [id] = sub.body.data.workloads;
    await eventually(async () => (await workload(id)).status === 'running');
    silent.stopHeartbeats();
    // Still inside the start-up grace (one TTL): the heartbeats heard so far are written, nobody is judged.
    await clock.advance(c.coordinator.tickMs);
    await c.coordinator.requestLiveness();
    // The silent node was last heard an hour ago by the database's clock; then the grace ends.
    await c.db.query(`UPDATE nodes SET last_seen_at = now() - interval '1 hour' WHERE name = 'silent'`);
    await c.coordinator.requestLiveness();
    expect((await workload(id)).status).toBe('running');
    await clock.advance(600);
    await c.coordinator.requestLiveness();
    expect((await workload(id)).status).toBe('lost');
    // A healthy node joins (after the verdict: its heartbeats are not on the manual clock's fast-forward).
    await agent({ name: 'healthy' });
    const nodes = (await c.api('GET', '/api/nodes')).body.data;
    expect(nodes.find((n: { name: string }) => n.name === 'silent').status).toBe('down');
    const replacement = await eventually(async () => {
      const ws = (await c.api('GET', '/api/workloads?status=running')).body.data;
      return ws.find((w: { id: string }) => w.id !== id);
    });
    expect(replacement.node).toBe('healthy');
    expect(replacement.instance).toBe(0);
  });

  it('drains a node: its workloads move and it takes no new ones', async () => {
    c = await startTestCoordinator(engine);
    const a = await agent({ name: 'a' });
    const sub = await c.api('POST', '/api/jobs', plainJob());
    const [id] = sub.body.data.workloads;
    await eventually(async () => (await workload(id)).status === 'running');
    await agent({ name: 'b' });
    const drained = await c.api('POST', '/api/nodes/a/drain');
    expect(drained.body.data.status).toBe('draining');
    await a.waitFor((m) => m.type === 'stop' && m.workload_id === id);
    await eventually(async () => {
      const ws = (await c.api('GET', '/api/workloads?status=running')).body.data;
      return ws.length === 1 && ws[0].node === 'b';
    });
    // A new job goes to b, though the drained a is the emptier node, and nothing more is started on a.
    const next = await c.api('POST', '/api/jobs', plainJob({ name: 'next' }));
    const [nextId] = next.body.data.workloads;
    await eventually(async () => (await workload(nextId)).status === 'running');
    expect((await workload(nextId)).node).toBe('b');
    expect(
      a.received.filter((m) => m.type === 'start').map((m) => m.type === 'start' && m.workload.id),
    ).toEqual([id]);
  });

  it('reconciles on reconnect: stops what it no longer wants, reschedules what the agent lost', async () => {
    c = await startTestCoordinator(engine);
    const a = await agent({ name: 'a' });
    const sub = await c.api('POST', '/api/jobs', plainJob());
    const [id] = sub.body.data.workloads;
    await eventually(async () => (await workload(id)).status === 'running');
    a.close();
    // The agent comes back without the workload, and with one the coordinator never heard of.
    const back = await agent({ name: 'a' }, ['stranger-0-deadbeef']);
    await back.waitFor((m) => m.type === 'stop' && m.workload_id === 'stranger-0-deadbeef');
    await eventually(async () => (await workload(id)).status === 'lost');
    await eventually(
      async () => (await c.api('GET', '/api/workloads?status=running')).body.data.length === 1,
    );
  });

  it('retries a failed scheduling pass by itself, and the leader places what no event asked for', async () => {
    const clock = new ManualClock();
    // A lease that outlasts the clock's jumps: the renewals' round trips are real, the jumps instant.
    c = await startTestCoordinator(engine, { clock, leaderLeaseMs: 600_000 });
    await agent({ name: 'a' });
    // The database refuses every placement (a real error in the apply's statement, or in a submit's insert
    // of a workload already placed) until the test lifts it.
    await c.db.query('CREATE TABLE refuse_placements (on_ boolean)');
    await c.db.query('INSERT INTO refuse_placements VALUES (true)');
    await c.db.query(`CREATE FUNCTION refuse_placement() RETURNS trigger LANGUAGE plpgsql AS $$
      BEGIN
        IF NEW.status = 'starting' AND (TG_OP = 'INSERT' OR NEW.status <> OLD.status)
           AND EXISTS (SELECT 1 FROM refuse_placements)
        THEN RAISE EXCEPTION 'placements refused by the test'; END IF;
        RETURN NEW;
      END $$`);
    await c.db.query(
      'CREATE TRIGGER refuse_placement BEFORE INSERT OR UPDATE ON workloads FOR EACH ROW EXECUTE FUNCTION refuse_placement()',
    );
    const sub = await c.api('POST', '/api/jobs', plainJob({ name: 'retried' }));
    expect(sub.status).toBe(201);
    const [id] = sub.body.data.workloads;
    await c.coordinator.evaluate();
    expect((await workload(id)).status).toBe('pending');
    // Lifted: no submit or agent event follows; the failed pass's own retry places it.
    await c.db.query('DELETE FROM refuse_placements');
    await clock.advance(1000);
    await eventually(async () => (await workload(id)).status === 'running');

    // A job committed without any pass asked for (its coordinator died right after the commit): the
    // leader's periodic pass places it.
    await c.coordinator.evaluate(); // nothing in flight any more
    const spec = JobSpec.parse(plainJob({ name: 'orphaned' }));
    const [orphan] = (await recordSubmission(c.db, jobKey(spec), spec, [])).workloads;
    expect((await workload(orphan!)).status).toBe('pending');
    await clock.advance(10_000);
    await eventually(async () => (await workload(orphan!)).status === 'running');
  });

  it('requires tokens when configured, compared exactly', async () => {
    c = await startTestCoordinator(engine, { tokens: { api: 'client-secret', agent: 'join-secret' } });
    const none = await c.api('GET', '/api/workloads');
    expect(none.status).toBe(401);
    expect(none.body.error.code).toBe('UNAUTHORIZED');
    expect(
      (await c.api('GET', '/api/workloads', undefined, { authorization: 'Bearer client-secreT' })).status,
    ).toBe(401);
    expect(
      (await c.api('GET', '/api/workloads', undefined, { authorization: 'Bearer client-secret' })).status,
    ).toBe(200);
    expect((await c.api('GET', '/healthz')).status).toBe(200);
    await expect(
      new ProtocolAgent({ url: c.url, name: 'intruder', token: 'wrong' }).connect(),
    ).rejects.toThrow();
    const ok = await agent({ token: 'join-secret' });
    expect(ok.nodeId).not.toBe('');
  });

  it('serves cluster status and Prometheus metrics', async () => {
    c = await startTestCoordinator(engine);
    await agent({ cpu: 2 });
    const s = (await c.api('GET', '/api/cluster/status')).body.data;
    expect(s).toMatchObject({ node_count: 1, nodes_ready: 1, total_cpu: 2, database: engine });
    const m = await c.api('GET', '/metrics');
    expect(m.body).toMatch(/mxc_nodes\{status="ready"\} 1/);
  });
});

describe.each(ENGINES)('stored tokens on %s', (engine) => {
  it('are created once, turn auth on, let agents join, and stop working when revoked', async () => {
    const c = await startTestCoordinator(engine);
    try {
      // Open until a client token exists.
      expect((await c.api('GET', '/api/tokens')).status).toBe(200);
      const admin = await c.api('POST', '/api/tokens', { name: 'admin', kind: 'client' });
      expect(admin.status).toBe(201);
      const token: string = admin.body.data.token;
      expect(token).toMatch(/^mxc_c_/);
      const bearer = { authorization: `Bearer ${token}` };
      expect((await c.api('GET', '/api/workloads')).status).toBe(401);
      expect((await c.api('GET', '/api/workloads', undefined, bearer)).status).toBe(200);

      const joining = await c.api('POST', '/api/tokens', { name: 'rack-a', kind: 'agent' }, bearer);
      const agentToken: string = joining.body.data.token;
      const dup = await c.api('POST', '/api/tokens', { name: 'rack-a', kind: 'agent' }, bearer);
      expect(dup.status).toBe(409);
      expect(dup.body.error.code).toBe('TOKEN_EXISTS');
      const bad = await c.api('POST', '/api/tokens', { name: 'x y', kind: 'root' }, bearer);
      expect(bad.status).toBe(422);

      const listed = (await c.api('GET', '/api/tokens', undefined, bearer)).body.data;
      expect(listed.map((t: { name: string; kind: string }) => [t.name, t.kind])).toEqual([
        ['admin', 'client'],
        ['rack-a', 'agent'],
      ]);
      expect(JSON.stringify(listed)).not.toContain(agentToken);
      // Agents join with their token, not with a client token.
      const a = await new ProtocolAgent({ url: c.url, name: 'n', token: agentToken }).connect();
      a.close();
      await expect(new ProtocolAgent({ url: c.url, name: 'm', token }).connect()).rejects.toThrow(/4401/);

      expect((await c.api('DELETE', '/api/tokens/rack-a', undefined, bearer)).status).toBe(204);
      await expect(
        new ProtocolAgent({ url: c.url, name: 'n', token: agentToken }).connect(),
      ).rejects.toThrow();
      expect((await c.api('DELETE', '/api/tokens/rack-a', undefined, bearer)).status).toBe(404);
    } finally {
      await c.stop();
    }
  });
});
