/**
 * High availability, in one process on one PostgreSQL database: commands decided on one coordinator
 * reach an agent connected to another (outbox + NOTIFY), a stale socket holder is fenced out, a
 * deposed leader's fenced write fails, a slow database does not make the lease flap, and an event-loop
 * stall never marks a healthy agent down (really, and on a manual clock that shows the grace after
 * start and after a stall to the millisecond).
 */
import pg from 'pg';
import { afterAll, describe, expect, it } from 'vitest';
import { ManualClock } from '../../scheduler/engine/clock.js';
import { LeaderLease, leaseTimings } from '../../scheduler/leader-lease.js';
import { type Db, openPostgres } from '../../scheduler/store/db.js';
import { plainJob, startTestCoordinator, type TestCoordinator } from '../helpers/coordinator.js';
import { createPostgresDb, dropPostgresDb } from '../helpers/db.js';
import { captureLogger, testLogger } from '../helpers/logger.js';
import { eventually, ProtocolAgent } from '../helpers/protocol-agent.js';
import { proxiedPostgres } from '../helpers/tcp-proxy.js';

const cleanup: (() => Promise<unknown>)[] = [];
afterAll(async () => {
  for (const f of cleanup.reverse()) await f().catch(() => {});
});

const status = async (c: TestCoordinator, id: string) =>
  (await c.api('GET', `/api/workloads/${id}`)).body.data?.status as string | undefined;

describe('two coordinators on one database', () => {
  it('deliver starts and stops decided on one to an agent connected to the other', async () => {
    const { url: databaseUrl, name } = await createPostgresDb();
    cleanup.push(() => dropPostgresDb(name));
    const a = await startTestCoordinator('postgres', { databaseUrl, heartbeatTtlMs: 3000 });
    cleanup.push(() => a.stop());
    const b = await startTestCoordinator('postgres', { databaseUrl, heartbeatTtlMs: 3000 });
    cleanup.push(() => b.stop());
    const st = (await a.api('GET', '/api/cluster/status')).body.data;
    expect(st.leader).toBe(a.coordinator.opts.id);
    expect(st.coordinators.map((c: { id: string }) => c.id).sort()).toEqual(
      [a.coordinator.opts.id, b.coordinator.opts.id].sort(),
    );

    // The agent's socket is on b; the job is submitted (and placed) through a.
    const p1 = await new ProtocolAgent({ url: b.url, name: 'p1' }).connect();
    cleanup.push(async () => p1.close());
    const sub = await a.coordinator.submitJob(plainJob({ name: 'remote', instances: 1 }));
    const id = sub.workloads[0]!;
    await p1.waitFor((m) => m.type === 'start' && m.workload.id === id, 5000);
    await eventually(async () => (await status(a, id)) === 'running', 5000, 'running');
    const n = (await a.api('GET', `/api/nodes/${p1.nodeId}`)).body.data;
    expect(n.connected).toBe(true); // a knows b holds the socket

    // A stop through a reaches the agent through b.
    expect((await a.api('POST', `/api/workloads/${id}/stop`)).status).toBe(200);
    await p1.waitFor((m) => m.type === 'stop' && m.workload_id === id, 5000);
    await eventually(async () => (await status(a, id)) === 'stopped', 5000, 'stopped');

    // The leader (a) never blames p1, whose heartbeats b hears, for two TTLs.
    const until = Date.now() + 6000;
    while (Date.now() < until) {
      expect((await a.api('GET', `/api/nodes/${p1.nodeId}`)).body.data.status).toBe('ready');
      await new Promise((r) => setTimeout(r, 250));
    }

    // Silent for real: the leader declares it down within about a TTL.
    p1.stopHeartbeats();
    const silentAt = Date.now();
    await eventually(
      async () => (await a.api('GET', `/api/nodes/${p1.nodeId}`)).body.data.status === 'down',
      10_000,
      'p1 down',
    );
    const detected = Date.now() - silentAt - 3000;
    console.log(`dead agent detected at TTL + ${detected} ms (heartbeat every 1000 ms)`);
    expect(detected).toBeLessThan(2000);
  });

  it('fences a stale socket holder: reports over the superseded connection are dropped', async () => {
    const { url: databaseUrl, name } = await createPostgresDb();
    cleanup.push(() => dropPostgresDb(name));
    const { logger, records } = captureLogger('warn');
    const a = await startTestCoordinator('postgres', { databaseUrl, logger });
    cleanup.push(() => a.stop());
    const b = await startTestCoordinator('postgres', { databaseUrl });
    cleanup.push(() => b.stop());
    const old = await new ProtocolAgent({ url: a.url, name: 'moving', autoRun: false }).connect();
    cleanup.push(async () => old.close());
    const sub = await a.coordinator.submitJob(plainJob({ name: 'fenced', instances: 1 }));
    const id = sub.workloads[0]!;
    await old.waitFor((m) => m.type === 'start', 5000);
    // The agent says hello to b (a newer epoch) while its old socket on a is still open.
    const moved = await new ProtocolAgent({ url: b.url, name: 'moving', autoRun: false }).connect([id]);
    cleanup.push(async () => moved.close());
    const closed = new Promise<number>((r) => old.ws.once('close', (code) => r(code)));
    // A burst of stale reports (an agent flushing what it queued): dropped, and said once for the socket.
    for (const reason of ['stale', 'staler', 'stalest'])
      old.send({ type: 'workload_status', workload_id: id, status: 'failed', reason });
    expect(await closed).toBe(4409);
    expect(await status(a, id)).not.toBe('failed');
    expect(records.filter((r) => r.msg === 'dropped a report from a superseded connection')).toHaveLength(1);
  });
});

it('a deposed leader fails its fenced write, and a clean stop hands the lease over at once', async () => {
  const { url, name } = await createPostgresDb();
  cleanup.push(() => dropPostgresDb(name));
  const db = await openPostgres(url);
  cleanup.push(() => db.close());
  const t = leaseTimings(60_000);
  const l1 = new LeaderLease(db, 'one', t, testLogger());
  const l2 = new LeaderLease(db, 'two', t, testLogger());
  cleanup.push(
    () => l1.stop(),
    () => l2.stop(),
  );
  await l1.start();
  await l2.start();
  expect([l1.isLeader(), l2.isLeader()]).toEqual([true, false]);
  // One's lease runs out while it is frozen (its own clock has not noticed yet); two takes over.
  await db.query(`UPDATE mxc_leader SET expires_at = clock_timestamp() - interval '1 second'`);
  await l2.cycle();
  expect(l2.isLeader()).toBe(true);
  expect(l1.isLeader()).toBe(true); // it still believes it leads ...
  await expect(db.tx((q) => l1.fence(q))).rejects.toMatchObject({ code: 'NOT_LEADER' });
  expect(l1.isLeader()).toBe(false); // ... until its first fenced write fails: it steps down
  await db.tx((q) => l2.fence(q));
  // A clean stop releases the lease and NOTIFYs: one takes over without waiting for expiry.
  const elected = new Promise((r) => l1.events.once('elected', r));
  const stoppedAt = Date.now();
  await l2.stop();
  await elected;
  expect(Date.now() - stoppedAt).toBeLessThan(1000);
});

it('a leader keeps its lease, without flapping, while each statement takes most of the renew deadline', async () => {
  const { proxy, url, dbName } = await proxiedPostgres();
  cleanup.push(
    () => dropPostgresDb(dbName),
    () => proxy.close(),
  );
  const pool = await openPostgres(url, { max: 1 });
  cleanup.push(() => pool.close());
  let renewals = 0;
  const db: Db = {
    ...pool,
    query: async <T>(sql: string, params?: readonly unknown[], name?: string) => {
      const rows = await pool.query<T>(sql, params, name);
      if (sql.startsWith('UPDATE mxc_leader SET expires_at = clock_timestamp() +')) renewals++;
      return rows;
    },
  };
  const t = leaseTimings(6000); // renew deadline 4 s, retry 0.8 s
  const l = new LeaderLease(db, 'slow', t, testLogger());
  cleanup.push(() => l.stop());
  await l.start();
  expect(l.isLeader()).toBe(true);
  const changes: string[] = [];
  l.events.on('lost', () => changes.push('lost'));
  l.events.on('elected', () => changes.push('elected'));
  // A renewal now takes 3.4 s: with the retry period after it, 4.2 s from one renewal's start to the
  // next, past the deadline. A round that took longer than the retry period is followed at once.
  proxy.slow(3400);
  const from = renewals;
  await eventually(
    async () => changes.length > 0 || renewals >= from + 4,
    60_000,
    'four slow renewals, or a change of leader',
  );
  expect(changes).toEqual([]);
  expect(l.isLeader()).toBe(true);
}, 90_000);

it('a lease taken only after the renew deadline is renewed before it is led with, not announced twice', async () => {
  const { url, name } = await createPostgresDb();
  cleanup.push(() => dropPostgresDb(name));
  const db = await openPostgres(url);
  cleanup.push(() => db.close());
  const t = leaseTimings(1500); // renew deadline 1 s
  const one = new LeaderLease(db, 'one', t, testLogger());
  const two = new LeaderLease(db, 'two', t, testLogger());
  await one.cycle();
  expect(one.isLeader()).toBe(true);
  // One froze inside a leader transaction, its lease run out: its share lock on the row holds the
  // other's election until the server ends that session.
  await db.query(`UPDATE mxc_leader SET expires_at = clock_timestamp() - interval '1 second'`);
  const frozen = new pg.Client({ connectionString: url });
  await frozen.connect();
  cleanup.push(() => frozen.end());
  await frozen.query('BEGIN');
  await frozen.query(`SELECT 1 FROM mxc_leader FOR SHARE`);
  const changes: string[] = [];
  two.events.on('elected', (e) => changes.push(`elected ${e}`));
  two.events.on('lost', (e) => changes.push(`lost ${e}`));
  const round = two.cycle();
  await eventually(async () => {
    const r = await db.query<{ n: number }>(
      `SELECT count(*)::int AS n FROM pg_stat_activity WHERE datname = $1 AND wait_event_type = 'Lock'`,
      [name],
    );
    return r[0]!.n > 0;
  });
  const blockedAt = performance.now();
  // The renew deadline passes while it waits (the condition itself is time).
  await new Promise((r) => setTimeout(r, t.renewDeadlineMs - (performance.now() - blockedAt) + 50));
  await frozen.query('COMMIT');
  await round;
  expect(two.isLeader()).toBe(false); // taken, not yet led with
  await two.cycle();
  expect(two.isLeader()).toBe(true);
  await two.cycle();
  // Elected once, at the epoch it took; before, it was announced, stepped down and elected again.
  expect(changes).toEqual(['elected 2']);
  await two.stop();
});

it('an event-loop stall longer than the TTL marks no healthy agent down', async () => {
  // A TTL of 2 s: with 1 s, a heartbeat that a busy machine (the suite's other files) delayed by a
  // second after the stall's grace marked the node down, which is the TTL at work, not the stall.
  const c = await startTestCoordinator('postgres', { heartbeatTtlMs: 2000 });
  cleanup.push(() => c.stop());
  const p = await new ProtocolAgent({ url: c.url, name: 'patient' }).connect();
  cleanup.push(async () => p.close());
  // Past the start-up grace, so only the stall's grace can save the node.
  await new Promise((r) => setTimeout(r, 2500));
  const end = Date.now() + 5000;
  while (Date.now() < end) {
    // a synchronous stall: no timer, no socket read, no flush
  }
  const until = Date.now() + 4000;
  while (Date.now() < until) {
    expect((await c.api('GET', `/api/nodes/${p.nodeId}`)).body.data.status).toBe('ready');
    await new Promise((r) => setTimeout(r, 100));
  }
});

it('grants one TTL of grace after start and after an event-loop stall, and judges after it (manual clock)', async () => {
  const clock = new ManualClock();
  const c = await startTestCoordinator('postgres', { heartbeatTtlMs: 1000, clock });
  cleanup.push(() => c.stop());
  const p = await new ProtocolAgent({ url: c.url, name: 'judged' }).connect();
  cleanup.push(async () => p.close());
  p.stopHeartbeats();
  const nodeStatus = async () => (await c.api('GET', `/api/nodes/${p.nodeId}`)).body.data.status;
  // The database's clock judges silence: an hour ago is silent, an hour ahead stays heard while the
  // manual clock runs on.
  const lastSeen = (offset: '-' | '+') =>
    c.db.query(`UPDATE nodes SET last_seen_at = now() ${offset} interval '1 hour' WHERE id = $1`, [p.nodeId]);
  await c.coordinator.requestLiveness(); // what was heard before is written first

  // Start-up grace: silent, yet not judged within one TTL.
  await lastSeen('-');
  await clock.advance(900);
  await c.coordinator.requestLiveness();
  expect(await nodeStatus()).toBe('ready');
  await lastSeen('+');
  await clock.advance(300);
  await c.coordinator.requestLiveness();
  expect(await nodeStatus()).toBe('ready');

  // A 3 s stall (no tick ran), during which the node fell silent: the first tick after it grants a
  // fresh TTL of grace, since the coordinator could not have heard anyone meanwhile.
  clock.jump(3000);
  await lastSeen('-');
  await c.coordinator.requestLiveness();
  await clock.advance(900);
  await c.coordinator.requestLiveness();
  expect(await nodeStatus()).toBe('ready');

  // Past that grace, the silence is judged.
  await clock.advance(200);
  await c.coordinator.requestLiveness();
  expect(await nodeStatus()).toBe('down');
});

it('a leader whose renewal comes after its renew deadline, its lease still unexpired, keeps its epoch: it pauses, it does not bounce', async () => {
  const { url, name } = await createPostgresDb();
  cleanup.push(() => dropPostgresDb(name));
  const db = await openPostgres(url);
  cleanup.push(() => db.close());
  const clock = new ManualClock();
  // A 60 s lease on the database's clock; the renew deadline (40 s) passes on the manual one.
  const t = leaseTimings(60_000);
  const one = new LeaderLease(db, 'one', t, testLogger(), clock);
  const two = new LeaderLease(db, 'two', t, testLogger(), clock);
  cleanup.push(
    () => one.stop(),
    () => two.stop(),
  );
  const changes: string[] = [];
  one.events.on('elected', (e) => changes.push(`elected ${e}`));
  one.events.on('lost', (e) => changes.push(`lost ${e}`));
  await one.cycle();
  expect(one.isLeader()).toBe(true);
  // Its event loop (or its database) held it past the renew deadline: it stops leading at once ...
  clock.jump(t.renewDeadlineMs + 1);
  expect(one.isLeader()).toBe(false);
  // ... and a fenced write begun just before refuses, without giving up a lease that is still its own.
  await expect(db.tx((q) => one.fence(q))).rejects.toMatchObject({ code: 'NOT_LEADER' });
  await two.cycle();
  expect(two.isLeader()).toBe(false); // no one else can take it meanwhile
  // The late round renews the lease at the epoch held and leads again: no second election, no grace.
  await one.cycle();
  expect(one.isLeader()).toBe(true);
  expect(changes).toEqual(['elected 1']);
  expect((await db.query<{ epoch: number }>('SELECT epoch FROM mxc_leader'))[0]!.epoch).toBe(1);
  await db.tx((q) => one.fence(q));
  // A lease that did run out meanwhile is lost for good: it steps down once.
  clock.jump(t.renewDeadlineMs + 1);
  await db.query(`UPDATE mxc_leader SET expires_at = clock_timestamp() - interval '1 second'`);
  await two.cycle();
  expect(two.isLeader()).toBe(true);
  await one.cycle();
  expect(one.isLeader()).toBe(false);
  expect(changes).toEqual(['elected 1', 'lost 1']);
});

it('a leader whose database went away past its renew deadline, and came back within the lease, leads on at its epoch', async () => {
  const { proxy, url, dbName } = await proxiedPostgres();
  cleanup.push(
    () => dropPostgresDb(dbName),
    () => proxy.close(),
  );
  const db = await openPostgres(url);
  cleanup.push(() => db.close());
  const clock = new ManualClock();
  const t = leaseTimings(60_000);
  const l = new LeaderLease(db, 'cut-off', t, testLogger(), clock);
  cleanup.push(() => l.stop());
  const changes: string[] = [];
  l.events.on('elected', (e) => changes.push(`elected ${e}`));
  l.events.on('lost', (e) => changes.push(`lost ${e}`));
  await l.cycle();
  expect(l.isLeader()).toBe(true);
  // The server restarts: the rounds past the renew deadline fail, and leader work stops.
  await proxy.cut();
  clock.jump(t.renewDeadlineMs + 1);
  await l.cycle();
  expect(l.isLeader()).toBe(false);
  await proxy.restore();
  // Back within the lease: renewed at the same epoch; it was lost, then taken again at a new one.
  await eventually(async () => {
    await l.cycle();
    return l.isLeader();
  });
  expect(changes).toEqual(['elected 1']);
  // A whole lease without a renewal: the lease may be another's by now, so it steps down.
  await proxy.cut();
  clock.jump(t.leaseMs);
  await l.cycle();
  expect(changes).toEqual(['elected 1', 'lost 1']);
});
