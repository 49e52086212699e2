// Issue 12.3: every list in a request or agent message has a maximum. One past it is a coded refusal
// that changes nothing; at the maximum the request works (so the limit, not something else, refused).
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import WebSocket from 'ws';
import { MAX_MISSING_PATHS } from '../../scheduler/cache/index.js';
import { MAX_RUNNING_PER_NODE, MAX_STORE_PATHS_PER_MESSAGE } from '../../spec/messages.js';
import { plainJob, startTestCoordinator, type TestCoordinator } from '../helpers/coordinator.js';
import { helloFrame } from '../helpers/protocol-agent.js';
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
});
