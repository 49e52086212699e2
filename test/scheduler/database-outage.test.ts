// PostgreSQL out of reach under a running coordinator (through a TCP proxy this test cuts: the server
// other tests share stays up): requests that need it get a coded, retryable 503 and /healthz says so,
// the log says it once rather than once a request or tick, and once the database is back everything
// works again without a restart.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { pushClosure } from '../../compiler/push.js';
import { REPEATED_FAILURE_LOG_MS } from '../../lib/failure-streak.js';
import { nixBuild } from '../../lib/nix.js';
import { ManualClock } from '../../scheduler/engine/clock.js';
import { LeaderLease, leaseTimings } from '../../scheduler/leader-lease.js';
import { repoPath } from '../../scheduler/paths.js';
import { openPostgres } from '../../scheduler/store/db.js';
import { plainJob, startTestCoordinator, type TestCoordinator } from '../helpers/coordinator.js';
import { dropPostgresDb } from '../helpers/db.js';
import { captureLogger } from '../helpers/logger.js';
import { eventually, ProtocolAgent } from '../helpers/protocol-agent.js';
import { proxiedPostgres, type TcpProxy } from '../helpers/tcp-proxy.js';

let proxy: TcpProxy;
let c: TestCoordinator;
let dbName = '';
let proxiedUrl = '';
const { logger, records } = captureLogger('info');

let root = '';

beforeAll(async () => {
  [root] = (await nixBuild([repoPath('examples', 'hello_world')])) as [string];
  ({ proxy, url: proxiedUrl, dbName } = await proxiedPostgres());
  c = await startTestCoordinator('postgres', { databaseUrl: proxiedUrl, logger });
});
afterAll(async () => {
  await proxy?.restore();
  await c?.stop();
  await proxy?.close();
  if (dbName) await dropPostgresDb(dbName);
});

describe('database outage', () => {
  it('answers a coded 503 while PostgreSQL is out of reach, logs it once, and recovers by itself', async () => {
    expect((await c.api('POST', '/api/jobs', plainJob({ name: 'before' }))).status).toBe(201);
    await proxy.cut();
    const since = records.length;
    for (let i = 0; i < 10; i++) {
      const r = await c.api('GET', '/api/workloads');
      expect([r.status, r.body.error?.code]).toEqual([503, 'DATABASE_UNAVAILABLE']);
    }
    const health = await fetch(`${c.url}/healthz`);
    expect([health.status, health.headers.get('retry-after')]).toEqual([503, '1']);
    expect((await health.json()).error.code).toBe('DATABASE_UNAVAILABLE');
    const submit = await c.api('POST', '/api/jobs', plainJob({ name: 'during' }));
    expect([submit.status, submit.body.error?.code]).toEqual([503, 'DATABASE_UNAVAILABLE']);
    // A push's claims need the database too: the same retryable 503, not an internal error.
    await expect(pushClosure({ coordinator: c.url, paths: [root] })).rejects.toMatchObject({
      code: 'DATABASE_UNAVAILABLE',
      status: 503,
    });
    // Twelve refused requests, one line about them (and nothing logged as an internal error).
    const during = records.slice(since);
    expect(during.filter((r) => /database is unreachable/.test(r.msg))).toHaveLength(1);
    expect(during.filter((r) => /internal error/.test(r.msg))).toEqual([]);

    await proxy.restore();
    await eventually(async () => (await fetch(`${c.url}/healthz`)).status === 200, 15_000, 'healthz ok');
    const after = await c.api('POST', '/api/jobs', plainJob({ name: 'after' }));
    expect(after.status).toBe(201);
    const jobs = await c.api('GET', '/api/jobs');
    expect(jobs.body.data.map((j: { name: string }) => j.name).sort()).toEqual(['after', 'before']);
  });

  it('disconnects an agent whose report cannot be stored; its hello on reconnect says it again', async () => {
    const agent = await new ProtocolAgent({ url: c.url, name: 'outage-agent', autoRun: false }).connect();
    const start = await agent.waitFor((m) => m.type === 'start');
    const id = start.type === 'start' ? start.workload.id : '';
    await proxy.cut();
    const since = records.length;
    const closed = new Promise<number>((r) => agent.ws.once('close', (code) => r(code)));
    agent.send({ type: 'workload_status', workload_id: id, status: 'running' });
    expect(await closed).toBe(1011);
    agent.close();
    expect(records.slice(since).filter((r) => r.msg === 'agent message failed')).toEqual([]);
    await proxy.restore();
    await eventually(async () => (await fetch(`${c.url}/healthz`)).status === 200, 15_000, 'healthz ok');
    // The report that was lost is in the next hello: the workload is running without another report.
    const again = await new ProtocolAgent({ url: c.url, name: 'outage-agent', autoRun: false }).connect([id]);
    try {
      await eventually(
        async () => (await c.api('GET', `/api/workloads/${id}`)).body.data?.status === 'running',
        10_000,
        'the workload running after the hello',
      );
    } finally {
      again.close();
    }
  });

  it('a leader lease whose rounds keep failing says so once a minute, and once when they work again', async () => {
    const clock = new ManualClock();
    const lease = captureLogger('info');
    const db = await openPostgres(proxiedUrl);
    const l = new LeaderLease(db, 'outage', leaseTimings(60_000), lease.logger, clock);
    try {
      await proxy.cut();
      // A round every 2 s for two and a half minutes: 76 failed rounds.
      for (let i = 0; i < 76; i++) {
        await l.cycle();
        await clock.advance(2000);
      }
      const failed = lease.records.filter((r) => r.msg === 'leader election round failed');
      expect(failed.map((r) => r.failedRounds)).toEqual([
        undefined,
        REPEATED_FAILURE_LOG_MS / 2000 + 1,
        (2 * REPEATED_FAILURE_LOG_MS) / 2000 + 1,
      ]);
      await proxy.restore();
      // The coordinator above holds the lease: this one's rounds succeed without taking it.
      await eventually(async () => {
        await l.cycle();
        return lease.records.some((r) => r.msg === 'leader election rounds work again');
      });
      expect(lease.records.filter((r) => r.msg === 'leader election rounds work again')).toMatchObject([
        { failedRounds: expect.any(Number) },
      ]);
      expect(l.isLeader()).toBe(false);
    } finally {
      await proxy.restore();
      await l.stop();
      await db.close();
    }
  });
});
