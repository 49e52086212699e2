// PostgreSQL that stops answering without closing anything (a network black hole, a hung proxy), under a
// running coordinator: /healthz answers 503 within seconds instead of never, and the coordinator lets
// its agents go (1011) within half a heartbeat TTL, so they join another coordinator before the leader
// declares them down and starts their workloads elsewhere (held here, they ran twice). Once the network
// is back, the coordinator works again without a restart. A database restarted for longer than a TTL
// under the only coordinator: once back, it grants the agents a TTL of grace to return (its own silence)
// instead of declaring every node down at its first tick.
import { afterAll, beforeAll, expect, it } from 'vitest';
import { plainJob, startTestCoordinator, type TestCoordinator } from '../helpers/coordinator.js';
import { dropPostgresDb } from '../helpers/db.js';
import { captureLogger } from '../helpers/logger.js';
import { eventually, ProtocolAgent } from '../helpers/protocol-agent.js';
import { proxiedPostgres, type TcpProxy } from '../helpers/tcp-proxy.js';

const TTL_MS = 2000;
let proxy: TcpProxy;
let c: TestCoordinator;
let dbName = '';
const { logger, records } = captureLogger('info');

beforeAll(async () => {
  let url: string;
  ({ proxy, url, dbName } = await proxiedPostgres());
  c = await startTestCoordinator('postgres', { databaseUrl: url, logger, heartbeatTtlMs: TTL_MS });
});
afterAll(async () => {
  await proxy?.restore();
  await c?.stop();
  await proxy?.close();
  if (dbName) await dropPostgresDb(dbName);
});

it('a silent database: healthz says so within seconds, the agents are let go within half a TTL', async () => {
  const agent = await new ProtocolAgent({ url: c.url, name: 'held' }).connect();
  await eventually(async () => (await c.api('GET', '/api/nodes')).body.data?.length === 1);
  const closed = new Promise<{ code: number; at: number }>((r) =>
    agent.ws.once('close', (code) => r({ code, at: Date.now() })),
  );
  await proxy.freeze();
  const frozenAt = Date.now();

  const t0 = Date.now();
  const health = await fetch(`${c.url}/healthz`);
  expect([health.status, ((await health.json()) as { error: { code: string } }).error.code]).toEqual([
    503,
    'DATABASE_UNAVAILABLE',
  ]);
  expect(Date.now() - t0).toBeLessThan(5000);

  const { code, at } = await closed;
  expect(code).toBe(1011);
  // Half a TTL after the last beat that reached the database (beats every TTL/4), plus a check's period.
  expect(at - frozenAt).toBeLessThan(TTL_MS);
  agent.close();
  expect(records.filter((r) => /closing the agent sockets/.test(String(r.msg)))).toHaveLength(1);

  await proxy.restore();
  await eventually(async () => (await fetch(`${c.url}/healthz`)).status === 200, 20_000, 'healthz ok');
  const back = await new ProtocolAgent({ url: c.url, name: 'held' }).connect();
  try {
    await eventually(
      async () => (await c.api('GET', '/api/nodes')).body.data?.[0]?.status === 'ready',
      10_000,
      'the node ready again',
    );
  } finally {
    back.close();
  }
}, 60_000);

it('a database restarted for longer than a TTL under the only coordinator marks no node down when it is back', async () => {
  const restart = await proxiedPostgres();
  const lone = await startTestCoordinator('postgres', { databaseUrl: restart.url, heartbeatTtlMs: TTL_MS });
  try {
    const agent = await new ProtocolAgent({ url: lone.url, name: 'patient' }).connect();
    const id = (await lone.coordinator.submitJob(plainJob({ name: 'through-restart', instances: 1 })))
      .workloads[0]!;
    await eventually(
      async () => (await lone.api('GET', `/api/workloads/${id}`)).body.data?.status === 'running',
      10_000,
      'running',
    );
    const closed = new Promise<number>((r) => agent.ws.once('close', (code) => r(code)));
    await restart.proxy.cut();
    const cutAt = Date.now();
    // The coordinator, unable to store the agent's heartbeats, lets it go; the agent retries meanwhile.
    expect(await closed).toBe(1011);
    agent.close();
    // The server stays down past a TTL (the condition is time itself).
    await new Promise((r) => setTimeout(r, TTL_MS * 1.5 - (Date.now() - cutAt)));
    await restart.proxy.restore();
    // Back: liveness ticks run again before the agent (its backoff grown meanwhile) reconnects. The
    // coordinator heard no one while its database was away: the silence is its own, not the node's.
    await eventually(async () => lone.db.query('SELECT 1').then(() => true), 20_000, 'the database back');
    for (let i = 0; i < 3; i++) await lone.coordinator.requestLiveness();
    expect((await lone.api('GET', `/api/nodes/${agent.nodeId}`)).body.data.status).toBe('ready');
    const back = await new ProtocolAgent({ url: lone.url, name: 'patient' }).connect([id]);
    back.close();
    expect((await lone.api('GET', `/api/workloads/${id}`)).body.data.status).toBe('running');
  } finally {
    await restart.proxy.restore();
    await lone.stop();
    await restart.proxy.close();
    await dropPostgresDb(restart.dbName);
  }
}, 60_000);
