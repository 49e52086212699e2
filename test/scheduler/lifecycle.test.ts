/**
 * Lifecycle across failures and restarts: the restart policy from the spec, nothing lost across a
 * coordinator restart, concurrent migrations, and the state machine refusing invalid transitions.
 */

import { randomUUID } from 'node:crypto';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import pg from 'pg';
import pino from 'pino';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { type AgentReportDeps, applyStatus, reconcileAgent } from '../../scheduler/agent-reports.js';
import { canTransition, InvalidTransitionError, isTerminal } from '../../scheduler/core/lifecycle.js';
import { ManualClock } from '../../scheduler/engine/clock.js';
import { recordSubmission } from '../../scheduler/job-submit.js';
import { markNodeDown } from '../../scheduler/liveness.js';
import { openPostgres } from '../../scheduler/store/db.js';
import { loadMigrations, migrate } from '../../scheduler/store/migrate.js';
import * as nodes from '../../scheduler/store/nodes.js';
import * as wl from '../../scheduler/store/workloads.js';
import { JobSpec } from '../../spec/job.js';
import { WORKLOAD_STATUSES, type WorkloadStatus } from '../../spec/messages.js';
import { plainJob, startTestCoordinator, type TestCoordinator } from '../helpers/coordinator.js';
import { dropPostgresDb, ENGINES, freshDb, PG_ADMIN_URL, urlFor } from '../helpers/db.js';
import { captureLogger } from '../helpers/logger.js';
import { eventually, PLAIN_CAPABILITIES, ProtocolAgent } from '../helpers/protocol-agent.js';

// The state machine as documented (spec/glossary): every pair not listed here must be refused.
const ALLOWED_PAIRS = new Set([
  'pending→starting',
  'pending→stopped',
  'pending→failed',
  'starting→running',
  'starting→stopping',
  'starting→stopped',
  'starting→failed',
  'starting→lost',
  'running→stopping',
  'running→stopped',
  'running→failed',
  'running→lost',
  'stopping→stopped',
  'stopping→failed',
  'stopping→lost',
]);
const PAIRS = WORKLOAD_STATUSES.flatMap((from) => WORKLOAD_STATUSES.map((to) => [from, to] as const));

describe('state machine', () => {
  it.each(PAIRS)('%s → %s is allowed only when documented', (from, to) => {
    expect(canTransition(from, to)).toBe(ALLOWED_PAIRS.has(`${from}→${to}`));
  });
});

const silent = pino({ level: 'silent' });
const testNode = {
  resources: { cpu: 64, memory_mb: 65_536, disk_mb: 100_000 },
  capabilities: PLAIN_CAPABILITIES,
  version: 'test',
};

describe.each(ENGINES)('guarded transitions on %s', (engine) => {
  let db: Awaited<ReturnType<typeof freshDb>>;
  let jobId: string;
  let nodeId: string;
  beforeAll(async () => {
    db = await freshDb(engine);
    const sub = await recordSubmission(
      db,
      'test/www/prod/web',
      JobSpec.parse(plainJob({ service: false })),
      [],
    );
    jobId = sub.job.id;
    nodeId = (await nodes.upsertNode(db, { id: 'node-1', name: 'n1', ...testNode })).id;
  });
  afterAll(async () => db?.close());

  /** A workload put straight into `status` (placed on the node), as the store would hold it. */
  async function workloadIn(status: WorkloadStatus, restarts = 0): Promise<wl.WorkloadRow> {
    const id = `w-${randomUUID()}`;
    await wl.insertWorkloads(
      db,
      [
        {
          id,
          job_id: jobId,
          job_version: 1,
          instance: 0,
          cpu: 1,
          memory_mb: 1,
          disk_mb: 1,
          isolation: 'process',
          restarts,
        },
      ],
      'test',
    );
    await db.query('UPDATE workloads SET status = $2, node_id = $3 WHERE id = $1', [id, status, nodeId]);
    return (await wl.getWorkload(db, id))!;
  }

  it('moves every allowed pair in one guarded statement with its event, and refuses every other pair', async () => {
    for (const [from, to] of PAIRS) {
      const w = await workloadIn(from);
      if (ALLOWED_PAIRS.has(`${from}→${to}`)) {
        const moved = await wl.transition(db, w, to, `test ${from}→${to}`);
        expect(moved?.status, `${from}→${to}`).toBe(to);
        const events = await wl.listEvents(db, w.id);
        expect(events.at(-1)).toMatchObject({
          from_status: from,
          to_status: to,
          reason: `test ${from}→${to}`,
        });
        expect(moved!.finished_at !== null, `${from}→${to} finished_at`).toBe(isTerminal(to));
        // The same change again finds the row no longer in `from`: no row, nothing overwritten.
        expect(await wl.transition(db, w, to, 'again')).toBeNull();
        expect((await wl.listEvents(db, w.id)).length).toBe(events.length);
      } else {
        await expect(wl.transition(db, w, to, 'refused'), `${from}→${to}`).rejects.toBeInstanceOf(
          InvalidTransitionError,
        );
        expect((await wl.getWorkload(db, w.id))!.status).toBe(from);
      }
    }
  });

  it('never applies a change whose expected status is stale', async () => {
    for (const [from, to] of PAIRS.filter(([f, t]) => ALLOWED_PAIRS.has(`${f}→${t}`))) {
      // The row moved on (to any other status) after the caller read it as `from`.
      for (const actual of WORKLOAD_STATUSES.filter((s) => s !== from)) {
        const w = await workloadIn(actual);
        expect(await wl.transition(db, { id: w.id, status: from }, to, 'stale')).toBeNull();
        expect((await wl.getWorkload(db, w.id))!.status).toBe(actual);
      }
    }
  });

  const deps: AgentReportDeps = {
    get db() {
      return db;
    },
    log: silent,
    sessionOf: () => undefined,
    emit: () => {},
    sendStart: () => {},
    requestRolloutStep: () => {},
    requestEvaluation: () => {},
    flapping: { thresholdMs: 60_000, initialDelayMs: 0, maxDelayMs: 0 },
    wakeAt: () => {},
    now: () => Date.now(),
    refusedReports: new Map(),
  };

  it("writes a report's runtime in its status's transaction: one commit, nothing written outside it", async () => {
    // The real database, with what reaches it counted: statements outside a transaction, transactions.
    let outside = 0;
    let txs = 0;
    const counted = {
      ...db,
      query: (sql: string, params?: readonly unknown[]) => {
        outside++;
        return db.query(sql, params);
      },
      tx: <T>(fn: (q: typeof db) => Promise<T>) => {
        txs++;
        return db.tx(fn as never) as Promise<T>;
      },
    } as typeof db;
    const emitted: unknown[] = [];
    const d: AgentReportDeps = { ...deps, db: counted, emit: (e) => emitted.push(e) };
    const processes = [{ name: 'ping', state: 'running', runs: 1 }];

    const w = await workloadIn('starting');
    await applyStatus(d, nodeId, w.id, 'running', 'processes started', { processes, ports: {} });
    expect([outside, txs]).toEqual([0, 1]);
    expect(await wl.getWorkload(db, w.id)).toMatchObject({ status: 'running', processes });
    // Watchers hear of the runtime, then of the new status.
    expect(emitted).toEqual([
      { kind: 'workload', id: w.id, status: 'starting' },
      { kind: 'workload', id: w.id, status: 'running' },
    ]);

    // The same status again still writes the runtime (a process's change), in one transaction too.
    const later = [{ name: 'ping', state: 'success', runs: 1 }];
    await applyStatus(d, nodeId, w.id, 'running', 'reported by agent', { processes: later });
    expect([outside, txs]).toEqual([0, 2]);
    expect((await wl.getWorkload(db, w.id))!.processes).toEqual(later);

    // Another node's report changes nothing of it.
    await applyStatus(d, 'node-other', w.id, 'failed', 'not yours', { processes: [] });
    expect(await wl.getWorkload(db, w.id)).toMatchObject({ status: 'running', processes: later });
  });

  it.each(['agent reconnect', 'node down'] as const)(
    'a failure reported while the %s declares the workload lost is never overwritten nor replaced twice',
    async (race) => {
      // max_task_failures 1 (the default): a failed workload is not replaced, a lost one is.
      for (let round = 0; round < 15; round++) {
        await db.query(`UPDATE workloads SET status = 'stopped' WHERE status <> 'stopped'`);
        const w = await workloadIn('running');
        const node = (await nodes.getNode(db, nodeId))!;
        await Promise.all([
          applyStatus(deps, nodeId, w.id, 'failed', 'boom'),
          race === 'agent reconnect'
            ? reconcileAgent(deps, node, [])
            : markNodeDown(db, node, 1000).then(() => nodes.setNodeStatus(db, nodeId, 'ready')),
        ]);
        const row = (await wl.getWorkload(db, w.id))!;
        const terminal = (await wl.listEvents(db, w.id)).filter((e) => isTerminal(e.to_status));
        expect(terminal, `round ${round}`).toHaveLength(1);
        expect(terminal[0]!.to_status).toBe(row.status);
        const replacements = (await wl.listWorkloads(db, { jobId, status: ['pending'], limit: 1000 })).length;
        // Lost first: replaced once, the late failure refused. Failed first: kept failed, no replacement.
        expect(replacements, `round ${round} (${row.status})`).toBe(row.status === 'lost' ? 1 : 0);
        expect(row.status === 'failed' ? row.error : 'boom').toBe('boom');
      }
    },
  );
});

describe('migrations', () => {
  it('succeed when two coordinators migrate one database at once', async () => {
    const name = `mxc_test_mig_${Date.now()}`;
    const admin = new pg.Client({ connectionString: PG_ADMIN_URL });
    await admin.connect();
    await admin.query(`CREATE DATABASE ${name}`);
    await admin.end();
    try {
      const [a, b] = await Promise.all([openPostgres(urlFor(name)), openPostgres(urlFor(name))]);
      const [ra, rb] = await Promise.all([migrate(a), migrate(b)]);
      expect([...ra, ...rb].sort()).toEqual(loadMigrations().map((m) => m.name));
      await a.close();
      await b.close();
    } finally {
      await dropPostgresDb(name);
    }
  });
});

describe.each(ENGINES)('lifecycle on %s', (engine) => {
  let c: TestCoordinator | undefined;
  const agents: ProtocolAgent[] = [];
  afterEach(async () => {
    for (const a of agents.splice(0)) a.close();
    await c?.stop();
    c = undefined;
  });

  it('restarts a failed task up to max_task_failures, then keeps it failed with the last error', async () => {
    c = await startTestCoordinator(engine);
    const a = new ProtocolAgent({ url: c.url, name: 'n', autoRun: false });
    agents.push(await a.connect());
    const sub = await c.api('POST', '/api/jobs', plainJob({ max_task_failures: 3, service: false }));
    expect(sub.status).toBe(201);
    const failed = new Set<string>();
    for (let attempt = 1; attempt <= 3; attempt++) {
      const start = await a.waitFor((m) => m.type === 'start' && !failed.has(m.workload.id));
      if (start.type !== 'start') throw new Error('unreachable');
      a.send({ type: 'workload_status', workload_id: start.workload.id, status: 'running' });
      a.send({
        type: 'workload_status',
        workload_id: start.workload.id,
        status: 'failed',
        reason: `boom ${attempt}`,
      });
      failed.add(start.workload.id);
    }
    const all = await eventually(async () => {
      const ws = (await c!.api('GET', '/api/workloads')).body.data;
      return ws.length === 3 && ws.every((w: { status: string }) => w.status === 'failed') ? ws : null;
    });
    const last = all.find((w: { restarts: number }) => w.restarts === 2);
    expect(last.error).toBe('boom 3');
    // No fourth attempt: a replacement would have been created with the third failure; a pass begun
    // since has nothing to place either.
    await c.coordinator.evaluate();
    expect((await c.api('GET', '/api/workloads')).body.data).toHaveLength(3);
    const events = (await c.api('GET', `/api/workloads/${last.id}/events`)).body.data;
    expect(events[0].reason).toMatch(/restarted after failure 2 of 3/);
  });

  it('restarts a service whenever an instance ends, with a flapping back-off that doubles to its maximum, while the job is active', async () => {
    c = await startTestCoordinator(engine, {
      flapping: { thresholdMs: 60_000, initialDelayMs: 50, maxDelayMs: 200 },
    });
    const a = new ProtocolAgent({ url: c.url, name: 'n', autoRun: false });
    agents.push(await a.connect());
    const sub = await c.api('POST', '/api/jobs', plainJob({ name: 'svc' }));
    const jobId = sub.body.data.job.id;
    const seen = new Set<string>();
    // finished, failed, finished, failed, failed: every end starts it again, successes included.
    const ends = ['stopped', 'failed', 'stopped', 'failed', 'failed'] as const;
    for (const end of ends) {
      const start = await a.waitFor((m) => m.type === 'start' && !seen.has(m.workload.id));
      if (start.type !== 'start') throw new Error('unreachable');
      seen.add(start.workload.id);
      a.send({ type: 'workload_status', workload_id: start.workload.id, status: 'running' });
      a.send({
        type: 'workload_status',
        workload_id: start.workload.id,
        status: end,
        reason: `${end} on purpose`,
      });
    }
    const last = await a.waitFor((m) => m.type === 'start' && !seen.has(m.workload.id));
    if (last.type !== 'start') throw new Error('unreachable');
    a.send({ type: 'workload_status', workload_id: last.workload.id, status: 'running' });
    // The report is handled after the send returns: read once it was.
    await eventually(
      async () => (await c!.api('GET', `/api/workloads/${last.workload.id}`)).body.data.status === 'running',
      5000,
      'the last instance running',
    );
    const ws = (await c.api('GET', `/api/workloads?job=${jobId}`)).body.data as {
      id: string;
      status: string;
      outcome: string | null;
      restart_delay_ms: number;
      restarts: number;
      created_at: string;
    }[];
    ws.sort((x, y) => x.created_at.localeCompare(y.created_at));
    expect(ws.map((w) => w.outcome)).toEqual(['finished', 'failed', 'finished', 'failed', 'failed', null]);
    // The first start waits for nothing; each flapping restart waits twice the last, up to the maximum.
    expect(ws.map((w) => w.restart_delay_ms)).toEqual([0, 50, 100, 200, 200, 200]);
    // It really waited: placed no sooner than its back-off after it was created.
    for (const w of ws.slice(1)) {
      const ev = (await c.api('GET', `/api/workloads/${w.id}/events`)).body.data as {
        to_status: string;
        ts: string;
      }[];
      const created = Date.parse(ev.find((e) => e.to_status === 'pending')!.ts);
      const placed = Date.parse(ev.find((e) => e.to_status === 'starting')!.ts);
      expect(placed - created).toBeGreaterThanOrEqual(w.restart_delay_ms - 5);
    }
    // Only failures count towards max_task_failures.
    expect(ws.map((w) => w.restarts)).toEqual([0, 0, 1, 1, 2, 3]);
    const events = (await c.api('GET', `/api/workloads/${ws[1]!.id}/events`)).body.data;
    expect(events[0].reason).toMatch(/service restarted after it finished in 50 ms \(flapping/);
    const job = (await c.api('GET', `/api/jobs/${jobId}`)).body.data;
    expect(job.state).toBe('running');
    expect(job.counts).toMatchObject({ finished: 2, failed: 3, running: 1, lost: 0 });

    // Stopped by a user: it ends stopped, and nothing starts again.
    await c.api('POST', `/api/jobs/${jobId}/stop`);
    await eventually(async () => {
      const w = (await c!.api('GET', `/api/workloads/${last.workload.id}`)).body.data;
      return w.outcome === 'stopped' ? w : null;
    });
    const after = (await c.api('GET', `/api/jobs/${jobId}`)).body.data;
    expect(after.state).toBe('stopped');
    expect(after.counts).toMatchObject({ stopped: 1, running: 0, pending: 0 });
  });

  it('says how batch jobs ended: complete when every instance finished, failed when one failed', async () => {
    c = await startTestCoordinator(engine);
    const a = new ProtocolAgent({ url: c.url, name: 'n', autoRun: false });
    agents.push(await a.connect());
    const ids: Record<string, string> = {};
    for (const [name, end] of [
      ['ok', 'stopped'],
      ['bad', 'failed'],
    ] as const) {
      const sub = await c.api('POST', '/api/jobs', plainJob({ name, service: false, instances: 2 }));
      ids[name] = sub.body.data.job.id;
      for (const id of sub.body.data.workloads as string[]) {
        await a.waitFor((m) => m.type === 'start' && m.workload.id === id);
        a.send({ type: 'workload_status', workload_id: id, status: 'running' });
      }
      const [first, second] = sub.body.data.workloads as string[];
      a.send({ type: 'workload_status', workload_id: first!, status: 'stopped', reason: 'exit 0' });
      a.send({ type: 'workload_status', workload_id: second!, status: end, reason: 'the end' });
    }
    const list = await eventually(async () => {
      const jobs = (await c!.api('GET', '/api/jobs')).body.data as { id: string; state: string }[];
      const byId = new Map(jobs.map((j) => [j.id, j]));
      return byId.get(ids.ok!)?.state === 'complete' && byId.get(ids.bad!)?.state === 'failed' ? byId : null;
    });
    expect((list.get(ids.ok!) as unknown as { counts: object }).counts).toMatchObject({
      finished: 2,
      failed: 0,
    });
    expect((list.get(ids.bad!) as unknown as { counts: object }).counts).toMatchObject({
      finished: 1,
      failed: 1,
    });
  });

  it('keeps jobs, workloads, placements and history across a coordinator restart', async () => {
    const dataDir = await mkdtemp(join(tmpdir(), 'mxc-restart-'));
    c = await startTestCoordinator(engine, { dataDir });
    const keepDb = { databaseUrl: c.databaseUrl, dbName: c.dbName };
    const port = Number(new URL(c.url).port);
    const a = await new ProtocolAgent({ url: c.url, name: 'n' }).connect();
    const sub = await c.api('POST', '/api/jobs', plainJob());
    const [id] = sub.body.data.workloads;
    await eventually(
      async () => (await c!.api('GET', `/api/workloads/${id}`)).body.data.status === 'running',
    );
    a.close();
    await c.close(); // the server alone: its database stays for the restart
    c = undefined;

    const c2 = await startTestCoordinator(engine, { dataDir, databaseUrl: keepDb.databaseUrl, port });
    try {
      const w = (await c2.api('GET', `/api/workloads/${id}`)).body.data;
      expect(w.status).toBe('running');
      expect(w.node).toBe('n');
      expect(w.events.map((e: { to_status: string }) => e.to_status)).toEqual([
        'pending',
        'starting',
        'running',
      ]);
      // The agent comes back still running it: nothing is rescheduled. Settled means: its hello was
      // reconciled (the node event that follows reconcile) and a scheduling pass ran after that.
      const nodeEvents: { kind: string; id?: string; status?: string }[] = [];
      c2.coordinator.events.on('change', (e) => nodeEvents.push(e));
      const back = await new ProtocolAgent({ url: c2.url, name: 'n' }).connect([id]);
      agents.push(back);
      await eventually(
        async () => nodeEvents.some((e) => e.kind === 'node' && e.id === back.nodeId && e.status),
        10_000,
        'the hello to be reconciled',
      );
      await c2.coordinator.evaluate();
      const ws = (await c2.api('GET', '/api/workloads')).body.data;
      expect(ws.map((x: { id: string; status: string }) => [x.id, x.status])).toEqual([[id, 'running']]);
    } finally {
      await c2.stop();
      if (keepDb.dbName) await dropPostgresDb(keepDb.dbName);
      await rm(dataDir, { recursive: true, force: true });
    }
  });
});

describe('cron jobs', () => {
  let c: TestCoordinator | undefined;
  afterEach(async () => {
    await c?.stop();
    c = undefined;
  });

  const cronJob = (policy: 'KILL_EXISTING' | 'CANCEL_NEW' | 'RUN_OVERLAP') =>
    plainJob({
      name: `cron-${policy.toLowerCase()}`,
      service: false,
      cron_schedule: '*/5 * * * *',
      cron_collision_policy: policy,
    });
  const live = async (jobId: string) =>
    (await c!.api('GET', `/api/workloads?job=${jobId}`)).body.data.filter((w: { status: string }) =>
      ['pending', 'starting', 'running'].includes(w.status),
    );

  it('run on their schedule, not on submit, and apply the collision policy', async () => {
    // A manual clock: the coordinator's own cron launches never run between the test's, and the first
    // run falls at a known time (the next five-minute mark after 00:02:30).
    const clock = new ManualClock(new Date('2030-01-01T00:02:30Z'));
    c = await startTestCoordinator('postgres', { clock });
    const bad = await c.api('POST', '/api/jobs', { ...cronJob('RUN_OVERLAP'), cron_schedule: '*/5 * * *' });
    expect(bad.status).toBe(422);
    expect(bad.body.error.message).toMatch(/cron_schedule: "\*\/5 \* \* \*" has 4 field/);

    const ids: Record<string, string> = {};
    for (const policy of ['KILL_EXISTING', 'CANCEL_NEW', 'RUN_OVERLAP'] as const) {
      const sub = await c.api('POST', '/api/jobs', cronJob(policy));
      expect(sub.status).toBe(201);
      expect(sub.body.data.workloads).toEqual([]);
      ids[policy] = sub.body.data.job.id;
      const job = (await c.api('GET', `/api/jobs/${ids[policy]}`)).body.data;
      expect(new Date(job.next_run_at).getUTCMinutes() % 5).toBe(0);
    }
    const first = new Date((await c.api('GET', `/api/jobs/${ids.KILL_EXISTING}`)).body.data.next_run_at);
    expect(first).toEqual(new Date('2030-01-01T00:05:00Z'));
    clock.setWall(first.getTime() - 1000);
    expect(await c.coordinator.runDueCronJobs()).toBe(0);
    clock.setWall(first);
    expect(await c.coordinator.runDueCronJobs()).toBe(3);
    for (const id of Object.values(ids)) expect(await live(id)).toHaveLength(1);
    const second = new Date(first.getTime() + 5 * 60_000);
    expect(new Date((await c.api('GET', `/api/jobs/${ids.KILL_EXISTING}`)).body.data.next_run_at)).toEqual(
      second,
    );

    // The next run while the first is still pending (no node): each policy does its thing.
    const before = (await live(ids.KILL_EXISTING))[0].id;
    expect(await c.coordinator.runDueCronJobs(second)).toBe(2);
    const killed = await live(ids.KILL_EXISTING);
    expect(killed).toHaveLength(1);
    expect(killed[0].id).not.toBe(before);
    expect(await live(ids.CANCEL_NEW)).toHaveLength(1);
    expect(await live(ids.RUN_OVERLAP)).toHaveLength(2);

    expect(new Date((await c.api('GET', `/api/jobs/${ids.CANCEL_NEW}`)).body.data.last_run_at)).toEqual(
      second,
    );

    // The coordinator was away for three runs: one run for the latest, under the collision policy.
    const third = new Date(second.getTime() + 5 * 60_000);
    const away = new Date(second.getTime() + 3 * 5 * 60_000 + 30_000);
    expect(await c.coordinator.runDueCronJobs(away)).toBe(2);
    expect(await live(ids.CANCEL_NEW)).toHaveLength(1);
    expect(await live(ids.RUN_OVERLAP)).toHaveLength(3);
    const overlap = (await c.api('GET', `/api/jobs/${ids.RUN_OVERLAP}`)).body.data;
    expect(new Date(overlap.last_run_at)).toEqual(new Date(third.getTime() + 2 * 5 * 60_000));
    expect(new Date(overlap.next_run_at)).toEqual(new Date(third.getTime() + 3 * 5 * 60_000));
    const newest = (await live(ids.RUN_OVERLAP)).sort(
      (x: { created_at: string }, y: { created_at: string }) => y.created_at.localeCompare(x.created_at),
    )[0];
    const ev = (await c.api('GET', `/api/workloads/${newest.id}/events`)).body.data;
    expect(ev[0].reason).toMatch(/cron run for .*; 2 earlier run\(s\) missed/);

    // A stopped cron job never runs again.
    await c.api('POST', `/api/jobs/${ids.RUN_OVERLAP}/stop`);
    expect((await c.api('GET', `/api/jobs/${ids.RUN_OVERLAP}`)).body.data.next_run_at).toBeNull();
  });

  it('a run launched late is logged and says so, though no earlier run was missed', async () => {
    const clock = new ManualClock(new Date('2030-01-01T00:02:30Z'));
    const log = captureLogger();
    c = await startTestCoordinator('pglite', { clock, logger: log.logger });
    const id = (await c.api('POST', '/api/jobs', cronJob('RUN_OVERLAP'))).body.data.job.id;
    // No coordinator ran from before 00:05 until 00:08: the 00:05 run is the only one due, 3 min late.
    clock.setWall(new Date('2030-01-01T00:08:00Z'));
    expect(await c.coordinator.runDueCronJobs()).toBe(1);
    const [w] = await live(id);
    const ev = (await c.api('GET', `/api/workloads/${w.id}/events`)).body.data;
    expect(ev[0].reason).toBe('cron run for 2030-01-01T00:05Z, launched 180 s late');
    const said = log.records.filter((r) => /cron run/.test(String(r.msg)) && r.level >= 40);
    expect(said).toMatchObject([
      { job: expect.stringContaining('cron-run_overlap'), run: '2030-01-01T00:05:00.000Z', late_s: 180 },
    ]);
    // On time (within the minute) is not late.
    clock.setWall(new Date('2030-01-01T00:10:30Z'));
    expect(await c.coordinator.runDueCronJobs()).toBe(1);
    const newest = (await live(id)).find((x: { id: string }) => x.id !== w.id);
    const ev2 = (await c.api('GET', `/api/workloads/${newest.id}/events`)).body.data;
    expect(ev2[0].reason).toBe('cron run for 2030-01-01T00:10Z');
    expect(log.records.filter((r) => /cron run/.test(String(r.msg)) && r.level >= 40)).toHaveLength(1);
  });

  it('start a run now, outside the schedule, under the collision policy (Aurora cron start)', async () => {
    const clock = new ManualClock(new Date('2030-01-01T00:02:30Z'));
    c = await startTestCoordinator('pglite', { clock });
    const ids: Record<string, string> = {};
    for (const policy of ['KILL_EXISTING', 'CANCEL_NEW', 'RUN_OVERLAP'] as const)
      ids[policy] = (await c.api('POST', '/api/jobs', cronJob(policy))).body.data.job.id;
    const nextRun = (await c.api('GET', `/api/jobs/${ids.KILL_EXISTING}`)).body.data.next_run_at;
    for (const policy of ['KILL_EXISTING', 'CANCEL_NEW', 'RUN_OVERLAP'] as const) {
      const r = await c.api('POST', `/api/jobs/${ids[policy]}/run`);
      expect([r.status, r.body.data.workloads.length, r.body.data.stopped]).toEqual([200, 1, 0]);
    }
    // Again while the first runs are live: replaced, refused, beside it.
    const kill = await c.api('POST', `/api/jobs/${ids.KILL_EXISTING}/run`);
    expect([kill.status, kill.body.data.stopped]).toEqual([200, 1]);
    const cancel = await c.api('POST', `/api/jobs/${ids.CANCEL_NEW}/run`);
    expect([cancel.status, cancel.body.error.code]).toEqual([409, 'RUN_IN_PROGRESS']);
    expect((await c.api('POST', `/api/jobs/${ids.RUN_OVERLAP}/run`)).status).toBe(200);
    expect((await live(ids.KILL_EXISTING)).length).toBe(1);
    expect((await live(ids.CANCEL_NEW)).length).toBe(1);
    expect((await live(ids.RUN_OVERLAP)).length).toBe(2);
    // The schedule is untouched; a job that is not cron has nothing to start.
    expect((await c.api('GET', `/api/jobs/${ids.KILL_EXISTING}`)).body.data.next_run_at).toBe(nextRun);
    const plain = (await c.api('POST', '/api/jobs', plainJob({ name: 'not-cron' }))).body.data.job.id;
    expect((await c.api('POST', `/api/jobs/${plain}/run`)).body.error.code).toBe('NOT_CRON');
  });
});
