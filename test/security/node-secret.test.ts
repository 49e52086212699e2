/**
 * Node identity is more than a name: a hello for a known node without its node secret, or with a
 * wrong one, is refused with a coded error and changes nothing (node, workloads, the real node's
 * socket); an operator's removal lets the name join again; a real agent keeps its secret 0600.
 */
import { mkdtemp, rm, stat } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { Agent } from '../../agent/daemon.js';
import { plainJob, startTestCoordinator, type TestCoordinator } from '../helpers/coordinator.js';
import { ENGINES } from '../helpers/db.js';
import { captureLogger, testLogger } from '../helpers/logger.js';
import { eventually, ProtocolAgent } from '../helpers/protocol-agent.js';

const cleanup: (() => Promise<unknown>)[] = [];
afterAll(async () => {
  for (const f of cleanup.reverse()) await f().catch(() => {});
});

/** Connects an impersonator and returns the coded error it got and how its socket was closed. */
async function impersonate(url: string, name: string, secret: string | null) {
  const fake = new ProtocolAgent({ url, name, secret, cpu: 64, memory_mb: 999_999 });
  const err = await fake.connect().then(
    () => null,
    (e: Error) => e,
  );
  const refusal = fake.received.find((m) => m.type === 'error');
  fake.close();
  return { err, refusal, starts: fake.received.filter((m) => m.type === 'start').length };
}

describe.each(ENGINES)('node secrets on %s', (engine) => {
  let c: TestCoordinator;

  it('refuses a hello for a known node without its secret or with a wrong one, changing nothing', async () => {
    c = await startTestCoordinator(engine);
    cleanup.push(() => c.stop());
    const a1 = new ProtocolAgent({ url: c.url, name: 'a1' });
    await a1.connect();
    cleanup.push(async () => a1.close());
    const welcome = a1.received.find((m) => m.type === 'welcome');
    expect(welcome?.type === 'welcome' && welcome.node_secret).toMatch(/^[A-Za-z0-9_-]{40,}$/);

    const sub = await c.coordinator.submitJob(plainJob({ name: 'victim', instances: 1 }));
    const id = sub.workloads[0]!;
    await eventually(async () => (await c.api('GET', `/api/workloads/${id}`)).body.data.status === 'running');
    const nodeBefore = (await c.api('GET', `/api/nodes/${a1.nodeId}`)).body.data;
    const wlBefore = (await c.api('GET', `/api/workloads/${id}`)).body.data;
    const receivedBefore = a1.received.length;

    for (const secret of [null, 'not-the-secret', '']) {
      const r = await impersonate(c.url, 'a1', secret);
      expect(r.err?.message).toMatch(/closed by coordinator: 4403/);
      expect(r.refusal).toMatchObject({
        type: 'error',
        code: secret ? 'NODE_SECRET_MISMATCH' : 'NODE_SECRET_REQUIRED',
      });
      expect(r.starts).toBe(0); // no spec reached the impersonator
    }

    // Nothing changed: the node, its workload, the real agent's connection.
    const nodeAfter = (await c.api('GET', `/api/nodes/${a1.nodeId}`)).body.data;
    expect(nodeAfter).toMatchObject({
      id: nodeBefore.id,
      status: 'ready',
      cpu: nodeBefore.cpu,
      memory_mb: nodeBefore.memory_mb,
      updated_at: nodeBefore.updated_at,
      connected: true,
    });
    expect(nodeAfter).not.toHaveProperty('secret_hash');
    const wlAfter = (await c.api('GET', `/api/workloads/${id}`)).body.data;
    expect(wlAfter).toMatchObject({ status: 'running', node_id: a1.nodeId, restarts: wlBefore.restarts });
    expect(a1.ws.readyState).toBe(a1.ws.OPEN);
    // No stop, no second start reached the real node.
    expect(a1.received.slice(receivedBefore).filter((m) => m.type !== 'welcome')).toEqual([]);

    // The real agent reconnects with its secret: admitted, the workload stays where it is.
    a1.close();
    const again = new ProtocolAgent({ url: c.url, name: 'a1' });
    await again.connect([id]);
    cleanup.push(async () => again.close());
    expect(again.nodeId).toBe(a1.nodeId);
    expect(again.received.some((m) => m.type === 'welcome' && m.node_secret)).toBe(false);
    expect((await c.api('GET', `/api/workloads/${id}`)).body.data.status).toBe('running');
    again.close();
  });

  it('lets a removed node join again under its name with a new secret', async () => {
    const before = (await c.api('GET', '/api/nodes/a1')).body.data;
    const removed = await c.api('DELETE', '/api/nodes/a1');
    expect(removed.status).toBe(200);
    expect(removed.body.data).toMatchObject({ name: 'a1', lost: 1 });
    expect((await c.api('GET', '/api/nodes/a1')).status).toBe(404);
    const fresh = new ProtocolAgent({ url: c.url, name: 'a1', secret: null });
    await fresh.connect();
    cleanup.push(async () => fresh.close());
    expect(fresh.nodeId).not.toBe(before.id);
    expect(fresh.received.some((m) => m.type === 'welcome' && m.node_secret)).toBe(true);
    expect((await c.api('DELETE', '/api/nodes/nope')).body.error.code).toBe('NOT_FOUND');
    fresh.close();
  });
});

it('a real agent keeps its node secret 0600 in its state dir and rejoins with it; a copycat does not', async () => {
  const dir = await mkdtemp(join(tmpdir(), 'mxc-node-secret-'));
  cleanup.push(() => rm(dir, { recursive: true, force: true }));
  const c = await startTestCoordinator('postgres');
  cleanup.push(() => c.stop());
  const mk = (stateDir: string, logger = testLogger()) =>
    new Agent({
      coordinator: c.url,
      name: 'real',
      stateDir: join(dir, stateDir),
      logger,
      cgroups: false,
    });
  const first = mk('state');
  await first.start();
  await first.ready;
  const file = await stat(join(dir, 'state', 'node-secret.json'));
  expect(file.mode & 0o777).toBe(0o600);
  const nodeId = first.nodeId;
  await first.close({ stopWorkloads: false });

  const restarted = mk('state');
  cleanup.push(() => restarted.close());
  await restarted.start();
  await restarted.ready;
  expect(restarted.nodeId).toBe(nodeId);

  // Another machine claiming the name (a different state dir) is refused, again on every retry, and
  // never welcomed.
  const log = captureLogger('error');
  const copycat = mk('other-state', log.logger);
  cleanup.push(() => copycat.close());
  let welcomed = false;
  void copycat.ready.then(() => {
    welcomed = true;
  });
  await copycat.start();
  const refusals = () => log.records.filter((r) => /refused this node identity/.test(r.msg)).length;
  await eventually(async () => refusals() >= 2, 15_000, 'the copycat refused twice');
  expect(welcomed).toBe(false);
  const n = (await c.api('GET', '/api/nodes/real')).body.data;
  expect(n).toMatchObject({ id: nodeId, connected: true });
});
