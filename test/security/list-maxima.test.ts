// Issue 12.3: every list in a request or agent message has a maximum. One past it is a coded refusal
// that changes nothing; at the maximum the request works (so the limit, not something else, refused).
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import WebSocket from 'ws';
import { MAX_OBJECT_KEYS } from '../../scheduler/api/input-check.js';
import { MAX_MISSING_PATHS } from '../../scheduler/cache/index.js';
import {
  MAX_ATTRIBUTE_NAME_CHARS,
  MAX_ATTRIBUTE_VALUE_CHARS,
  MAX_ENV_VARS,
  MAX_NODE_ATTRIBUTES,
} from '../../spec/job.js';
import {
  MAX_LOG_LINE_CHARS,
  MAX_REASON_CHARS,
  MAX_RUNNING_PER_NODE,
  MAX_STORE_PATHS_PER_MESSAGE,
  MAX_STORE_PATHS_PER_NODE,
} from '../../spec/messages.js';
import { plainJob, startTestCoordinator, type TestCoordinator } from '../helpers/coordinator.js';
import { eventually, helloFrame, PLAIN_CAPABILITIES, ProtocolAgent } from '../helpers/protocol-agent.js';
import { snapshot } from './helpers.js';

const ADMIN = 'lists-admin';
const auth = { authorization: `Bearer ${ADMIN}` };
const path = (i: number) =>
  `/nix/store/${i
    .toString(32)
    .padStart(32, '0')
    .replace(/[eotu]/g, 'a')}-p${i}`;

/** Sends agent frames; returns the first answer (welcome or error). */
async function agentAnswer(c: TestCoordinator, frame: unknown): Promise<{ type: string; code?: string }> {
  const ws = new WebSocket(`${c.url.replace('http', 'ws')}/api/agent/ws`, { headers: auth });
  await new Promise((r) => ws.once('open', r));
  const answer = new Promise<{ type: string; code?: string }>((r) =>
    ws.once('message', (m) => r(JSON.parse(m.toString()))),
  );
  ws.send(JSON.stringify(frame));
  const a = await answer;
  ws.close();
  return a;
}

let c: TestCoordinator;
beforeAll(async () => {
  c = await startTestCoordinator('postgres', { tokens: { api: ADMIN, agent: ADMIN } });
});
afterAll(async () => {
  await c?.stop();
});

describe('list maxima', () => {
  test('POST /api/cache/missing: at most MAX_MISSING_PATHS paths', async () => {
    const many = Array.from({ length: MAX_MISSING_PATHS + 1 }, (_, i) => path(i));
    const r = await c.api('POST', '/api/cache/missing', { paths: many }, auth);
    expect([r.status, r.body.error.code]).toEqual([400, 'CACHE_BAD_REQUEST']);
    const ok = await c.api('POST', '/api/cache/missing', { paths: many.slice(1) }, auth);
    expect(ok.status).toBe(200);
    expect(ok.body.data.missing).toHaveLength(MAX_MISSING_PATHS);
  });

  test('agent hello: store_paths and running are bounded; a refused hello registers no node', async () => {
    const before = await snapshot(c.db);
    const store = Array.from({ length: MAX_STORE_PATHS_PER_MESSAGE + 1 }, (_, i) => path(i));
    const running = Array.from({ length: MAX_RUNNING_PER_NODE + 1 }, (_, i) => ({
      workload_id: `w-${i}-deadbeef`,
      status: 'running',
    }));
    expect(await agentAnswer(c, helloFrame('big-store', { store_paths: store }))).toMatchObject({
      type: 'error',
      code: 'BAD_MESSAGE',
    });
    expect(await agentAnswer(c, helloFrame('big-running', { running }))).toMatchObject({
      type: 'error',
      code: 'BAD_MESSAGE',
    });
    expect(await snapshot(c.db)).toBe(before);
    expect(await agentAnswer(c, helloFrame('max-store', { store_paths: store.slice(1) }))).toMatchObject({
      type: 'welcome',
    });
    const [{ n }] = await c.db.query<{ n: number }>(
      "SELECT count(*)::int AS n FROM node_store_paths s JOIN nodes n ON n.id = s.node_id WHERE n.name = 'max-store'",
    );
    expect(n).toBe(MAX_STORE_PATHS_PER_MESSAGE);
  });

  test('store_paths: a node is known to hold at most MAX_STORE_PATHS_PER_NODE paths, however many messages add them', async () => {
    const agent = await new ProtocolAgent({ url: c.url, name: 'hoarder', token: ADMIN }).connect();
    const count = async () =>
      (
        await c.db.query<{ n: number }>(
          'SELECT count(*)::int AS n FROM node_store_paths WHERE node_id = $1',
          [agent.nodeId],
        )
      )[0]!.n;
    try {
      const batch = (from: number) =>
        Array.from({ length: MAX_STORE_PATHS_PER_MESSAGE }, (_, i) => path(1_000_000 + from + i));
      const batches = MAX_STORE_PATHS_PER_NODE / MAX_STORE_PATHS_PER_MESSAGE;
      for (let b = 0; b < batches; b++)
        agent.send({ type: 'store_paths', added: batch(b * MAX_STORE_PATHS_PER_MESSAGE), removed: [] });
      // Paths it holds already take no room, and say nothing.
      agent.send({ type: 'store_paths', added: batch(0), removed: [] });
      await eventually(async () => (await count()) === MAX_STORE_PATHS_PER_NODE, 120_000, 'the paths stored');
      const over = batch(MAX_STORE_PATHS_PER_NODE);
      agent.send({ type: 'store_paths', added: over, removed: [] });
      const refused = await agent.waitFor((m) => m.type === 'error', 30_000);
      expect(refused).toMatchObject({ type: 'error', code: 'STORE_PATHS_LIMIT' });
      expect(agent.received.filter((m) => m.type === 'error')).toHaveLength(1);
      expect(await count()).toBe(MAX_STORE_PATHS_PER_NODE);
      // Paths removed make room again, for as many.
      agent.send({ type: 'store_paths', added: [], removed: batch(0).slice(0, 3) });
      agent.send({ type: 'store_paths', added: over, removed: [] });
      agent.send({ type: 'heartbeat' });
      await eventually(async () => {
        const [{ n }] = await c.db.query<{ n: number }>(
          'SELECT count(*)::int AS n FROM node_store_paths WHERE node_id = $1 AND path = ANY($2::text[])',
          [agent.nodeId, over],
        );
        return n === 3;
      });
      expect(await count()).toBe(MAX_STORE_PATHS_PER_NODE);
      // Said once a session, not once a message.
      expect(agent.received.filter((m) => m.type === 'error')).toHaveLength(1);
    } finally {
      agent.close();
    }
  }, 180_000);

  test('an object of more than MAX_OBJECT_KEYS keys is refused before any schema looks at its entries', async () => {
    const before = await snapshot(c.db);
    const keys = (n: number) => Object.fromEntries(Array.from({ length: n }, (_, i) => [`K${i}`, 'v']));
    const crowded = await c.api(
      'POST',
      '/api/jobs/plan',
      { spec: plainJob({ mxc: { env: keys(MAX_OBJECT_KEYS + 1) } }) },
      auth,
    );
    expect([crowded.status, crowded.body.error.code, crowded.body.error.details]).toEqual([
      400,
      'TOO_MANY_KEYS',
      { path: 'spec.mxc.env' },
    ]);
    const top = await c.api('POST', '/api/jobs', { ...plainJob(), ...keys(MAX_OBJECT_KEYS + 1) }, auth);
    expect([top.status, top.body.error.code]).toEqual([400, 'TOO_MANY_KEYS']);
    // At the bound the schemas judge it, as before.
    const most = await c.api('POST', '/api/jobs', plainJob({ mxc: { env: keys(MAX_OBJECT_KEYS) } }), auth);
    expect([most.status, most.body.error.code]).toEqual([422, 'VALIDATION_FAILED']);
    expect(
      await agentAnswer(c, {
        type: 'workload_status',
        workload_id: 'w',
        status: 'running',
        ports: keys(MAX_OBJECT_KEYS + 1),
      }),
    ).toMatchObject({
      type: 'error',
      code: 'BAD_MESSAGE',
      message: expect.stringMatching(/more than 4096 keys at ports/),
    });
    expect(await snapshot(c.db)).toBe(before);
  });

  test('agent hello: capability strings and node attributes are bounded; a refused hello registers no node', async () => {
    const before = await snapshot(c.db);
    const attrs = (n: number, name = 8, value = 8) =>
      Object.fromEntries(
        Array.from({ length: n }, (_, i) => [`${i}`.padStart(name, 'k'), `${i}`.padStart(value, 'v')]),
      );
    const withCaps = (name: string, caps: Record<string, unknown>) =>
      helloFrame(name, { capabilities: { ...PLAIN_CAPABILITIES, ...caps } });
    for (const frame of [
      withCaps('many-attrs', { attributes: attrs(MAX_NODE_ATTRIBUTES + 1) }),
      withCaps('long-attr-name', { attributes: attrs(1, MAX_ATTRIBUTE_NAME_CHARS + 1) }),
      withCaps('long-attr-value', { attributes: attrs(1, 8, MAX_ATTRIBUTE_VALUE_CHARS + 1) }),
      withCaps('long-os', { os: 'x'.repeat(65) }),
      helloFrame('long-version', { version: 'v'.repeat(129) }),
      helloFrame('long-running-id', { running: [{ workload_id: 'w'.repeat(201), status: 'running' }] }),
    ]) {
      expect(await agentAnswer(c, frame), frame.name).toMatchObject({ type: 'error', code: 'BAD_MESSAGE' });
    }
    expect(await snapshot(c.db)).toBe(before);
    const most = attrs(MAX_NODE_ATTRIBUTES, MAX_ATTRIBUTE_NAME_CHARS, MAX_ATTRIBUTE_VALUE_CHARS);
    expect(await agentAnswer(c, withCaps('most-attrs', { attributes: most }))).toMatchObject({
      type: 'welcome',
    });
    const [node] = await c.db.query<{ capabilities: { attributes: Record<string, string> } }>(
      "SELECT capabilities FROM nodes WHERE name = 'most-attrs'",
    );
    expect(node!.capabilities.attributes).toEqual(most);
  });

  test('job specs: processes, order constraints, ports, secrets and closure roots are bounded', async () => {
    const before = await snapshot(c.db);
    const procs = (n: number) => Array.from({ length: n }, (_, i) => ({ name: `p${i}`, cmdline: 'true' }));
    const res = { cpu: 0.1, ram: 1 << 20, disk: 0 };
    // Each refused for its bound, named by its JSON path (not for something else about it).
    const twoProcs = { name: 't', processes: procs(2), resources: res };
    for (const [spec, where] of [
      [plainJob({ task: { name: 't', processes: procs(257), resources: res } }), 'task.processes'],
      [
        plainJob({
          task: { ...twoProcs, constraints: Array.from({ length: 257 }, () => ({ order: ['p0', 'p1'] })) },
        }),
        'task.constraints',
      ],
      [
        plainJob({
          task: { ...twoProcs, constraints: [{ order: Array.from({ length: 257 }, (_, i) => `p${i}`) }] },
        }),
        'task.constraints.0.order',
      ],
      [plainJob({ mxc: { ports: Array.from({ length: 65 }, (_, i) => `p${i}`) } }), 'mxc.ports'],
      [plainJob({ mxc: { secrets: Array.from({ length: 257 }, (_, i) => `s${i}`) } }), 'mxc.secrets'],
      [plainJob({ mxc: { closure: Array.from({ length: 10_001 }, (_, i) => path(i)) } }), 'mxc.closure'],
      [
        plainJob({
          mxc: {
            env: Object.fromEntries(Array.from({ length: MAX_ENV_VARS + 1 }, (_, i) => [`V${i}`, 'x'])),
          },
        }),
        'mxc.env',
      ],
      [plainJob({ mxc: { ports: ['p'.repeat(64)] } }), 'mxc.ports.0'],
      [
        plainJob({ constraints: Object.fromEntries(Array.from({ length: 65 }, (_, i) => [`a${i}`, 'x'])) }),
        'constraints',
      ],
    ] as const) {
      const r = await c.api('POST', '/api/jobs', spec, auth);
      expect([r.status, r.body.error.code]).toEqual([422, 'VALIDATION_FAILED']);
      expect(r.body.error.details.problems, where).toContainEqual(
        expect.stringMatching(new RegExp(`^${where}: `)),
      );
    }
    expect(await snapshot(c.db)).toBe(before);
    const ok = await c.api(
      'POST',
      '/api/jobs',
      plainJob({ task: { name: 't', processes: procs(256), resources: res } }),
      auth,
    );
    expect(ok.status).toBe(201);
  });
  test('a status reason and a log line past their bounds are kept cut, not whole', async () => {
    const agent = await new ProtocolAgent({
      url: c.url,
      name: 'chatty',
      token: ADMIN,
      autoRun: false,
      attributes: { host: 'chatty' },
    }).connect();
    try {
      // Last in the file: its job's failed workload is replaced (a service), which the snapshots above
      // would see.
      const job = plainJob({ name: 'chatty', constraints: { host: 'chatty' } });
      const submitted = await c.api('POST', '/api/jobs', job, auth);
      expect(submitted.status).toBe(201);
      const start = await agent.waitFor((m) => m.type === 'start');
      const id = start.type === 'start' ? start.workload.id : '';
      const reason = `it broke: ${'r'.repeat(1024 * 1024)}`;
      const line = `${'l'.repeat(100_000)}`;
      agent.send({
        type: 'logs',
        workload_id: id,
        lines: [
          { process: 'web', stream: 'stdout', run: 1, ts: Date.now(), line },
          { process: 'web', stream: 'stdout', run: 1, ts: Date.now(), line: 'short' },
        ],
      });
      agent.send({ type: 'workload_status', workload_id: id, status: 'failed', reason });
      const row = await eventually(async () => {
        const [w] = await c.db.query<{ status: string; error: string | null }>(
          'SELECT status, error FROM workloads WHERE id = $1',
          [id],
        );
        return w?.status === 'failed' && w;
      });
      expect(row.error!.length).toBeLessThanOrEqual(MAX_REASON_CHARS);
      expect(row.error!.startsWith('it broke: rrr')).toBe(true);
      expect(row.error).toMatch(/cut: 1048586 characters in all\)$/);
      const events = await c.db.query<{ reason: string }>(
        "SELECT reason FROM workload_events WHERE workload_id = $1 AND to_status = 'failed'",
        [id],
      );
      expect(events.map((e) => e.reason.length <= MAX_REASON_CHARS)).toEqual([true]);
      const lines = await c.db.query<{ line: string }>(
        'SELECT line FROM workload_logs WHERE workload_id = $1 ORDER BY id',
        [id],
      );
      expect(lines.map((l) => l.line.length)).toEqual([MAX_LOG_LINE_CHARS, 5]);
      expect(lines[0]!.line.startsWith('lll')).toBe(true);
      expect(agent.received.filter((m) => m.type === 'error')).toEqual([]);
    } finally {
      agent.close();
    }
  });
});
