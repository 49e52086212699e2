// Resources have a maximum, as lists do. An agent's hello could offer 1e308 cores: two such nodes made
// the cluster's total CPU Infinity, and GET /api/cluster/status answered 500 to everyone until they were
// removed; a hello offering more MiB than the database's integer columns hold was never answered (an
// internal error in the log, the socket left open without its hello timer), and a job asking for 8 PiB
// of memory failed its submit with a 500 instead of a coded refusal.
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import WebSocket from 'ws';
import { MAX_CPU_CORES, MAX_RESOURCE_MB } from '../../spec/job.js';
import { plainJob, startTestCoordinator, type TestCoordinator } from '../helpers/coordinator.js';
import { eventually, helloFrame, ProtocolAgent } from '../helpers/protocol-agent.js';
import { snapshot } from './helpers.js';

const ADMIN = 'bounds-admin';
const auth = { authorization: `Bearer ${ADMIN}` };
const MiB = 1024 * 1024;

/** Sends a hello; the first answer's type and code, or "none" when nothing came within 3 s. */
async function helloAnswer(
  c: TestCoordinator,
  resources: Record<string, number>,
  name: string,
): Promise<string> {
  const ws = new WebSocket(`${c.url.replace('http', 'ws')}/api/agent/ws`, { headers: auth });
  await new Promise((r) => ws.once('open', r));
  const answer = new Promise<string>((resolve) => {
    ws.once('message', (m) => {
      const msg = JSON.parse(m.toString()) as { type: string; code?: string };
      resolve(msg.code ? `${msg.type} ${msg.code}` : msg.type);
    });
    setTimeout(() => resolve('none'), 3000);
  });
  ws.send(JSON.stringify(helloFrame(name, { resources })));
  const a = await answer;
  ws.terminate();
  return a;
}

describe('resource bounds', () => {
  let c: TestCoordinator;
  beforeAll(async () => {
    c = await startTestCoordinator('postgres', { tokens: { api: ADMIN, agent: ADMIN } });
  });
  afterAll(async () => {
    await c?.stop();
  });

  test("an agent's hello past the bounds is a coded error that registers no node", async () => {
    const before = await snapshot(c.db);
    for (const [i, resources] of [
      { cpu: 1e308, memory_mb: 512, disk_mb: 1000 },
      { cpu: 1e308, memory_mb: 512, disk_mb: 1000 },
      { cpu: 1, memory_mb: MAX_RESOURCE_MB + 1, disk_mb: 1000 },
      { cpu: 1, memory_mb: 512, disk_mb: MAX_RESOURCE_MB + 1 },
    ].entries()) {
      expect([resources, await helloAnswer(c, resources, `huge-${i}`)]).toEqual([
        resources,
        'error BAD_MESSAGE',
      ]);
    }
    expect(await snapshot(c.db)).toBe(before);
    const status = await c.api('GET', '/api/cluster/status', undefined, auth);
    expect(status.status).toBe(200);
    // At the bounds a node joins, and the cluster's totals still answer.
    const most = { cpu: MAX_CPU_CORES, memory_mb: MAX_RESOURCE_MB, disk_mb: MAX_RESOURCE_MB };
    expect(await helloAnswer(c, most, 'largest-a')).toBe('welcome');
    expect(await helloAnswer(c, most, 'largest-b')).toBe('welcome');
    expect((await c.api('GET', '/api/cluster/status', undefined, auth)).status).toBe(200);
    expect((await c.api('GET', '/api/nodes', undefined, auth)).status).toBe(200);
  });

  test('a job asking for more than the bounds is a coded 422 that changes nothing', async () => {
    const before = await snapshot(c.db);
    for (const resources of [
      { cpu: 1e308, ram: 64 * MiB, disk: 0 },
      { cpu: 1, ram: 2 ** 53 - 1, disk: 0 },
      { cpu: 1, ram: 64 * MiB, disk: (MAX_RESOURCE_MB + 1) * MiB },
    ]) {
      const spec = plainJob({ name: 'huge' });
      spec.task.resources = resources;
      const r = await c.api('POST', '/api/jobs', spec, auth);
      expect([resources, r.status, r.body.error?.code]).toEqual([resources, 422, 'VALIDATION_FAILED']);
    }
    expect(await snapshot(c.db)).toBe(before);
  });
});

describe('log lines an agent sends', () => {
  let c: TestCoordinator;
  beforeAll(async () => {
    c = await startTestCoordinator('postgres', { tokens: { api: ADMIN, agent: ADMIN } });
  });
  afterAll(async () => {
    await c?.stop();
  });

  test('a run or time past what is stored and shown is a coded BAD_MESSAGE, and nothing of the batch is kept', async () => {
    const agent = await new ProtocolAgent({ url: c.url, name: 'log-agent', token: ADMIN }).connect();
    try {
      expect((await c.api('POST', '/api/jobs', plainJob({ name: 'logged' }), auth)).status).toBe(201);
      const start = await agent.waitFor((m) => m.type === 'start');
      const id = start.type === 'start' ? start.workload.id : '';
      const line = { process: 'main', stream: 'stdout', run: 0, ts: Date.now(), line: 'fine' };
      for (const bad of [{ run: 2 ** 40 }, { ts: 1e308 }, { ts: -1e20 }]) {
        const seen = agent.received.length;
        agent.send({ type: 'logs', workload_id: id, lines: [line, { ...line, ...bad, line: 'bad' }] });
        const answer = await agent.waitFor((m) => agent.received.indexOf(m) >= seen && m.type === 'error');
        expect([bad, answer]).toMatchObject([bad, { type: 'error', code: 'BAD_MESSAGE' }]);
      }
      agent.send({ type: 'logs', workload_id: id, lines: [line] });
      await eventually(
        async () =>
          (await c.api('GET', `/api/workloads/${id}/logs`, undefined, auth)).body.data?.length === 1,
        10_000,
        'the good batch stored',
      );
      const logs = await c.api('GET', `/api/workloads/${id}/logs`, undefined, auth);
      expect(logs.body.data.map((l: { line: string }) => l.line)).toEqual(['fine']);
    } finally {
      agent.close();
    }
  });
});
