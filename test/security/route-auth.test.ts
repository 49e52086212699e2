// Access is decided on the route fastify matched: every non-public route of the real app's route table
// answers 401 without a token, under every path-encoding trick, sent byte for byte; scopes hold.
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import WebSocket from 'ws';
import { routeTableOf } from '../../scheduler/api/app.js';
import {
  clientTokens,
  plainJob,
  startTestCoordinator,
  type TestCoordinator,
} from '../helpers/coordinator.js';
import { helloFrame } from '../helpers/protocol-agent.js';
import { rawRequest, snapshot, variants } from './helpers.js';

const ADMIN = 'admin-secret';
const AGENT = 'agent-secret';

/** A concrete path for a route pattern (`:id` and `*` filled in). */
const concrete = (url: string) => url.replace(/:[A-Za-z_]+/g, 'x').replace(/\*/g, 'x');

let c: TestCoordinator;
beforeAll(async () => {
  c = await startTestCoordinator('pglite', { tokens: { api: ADMIN, agent: AGENT } });
  // Something to lose: a job, so an unauthorised stop or resubmit would show in the snapshot.
  const sub = await c.api('POST', '/api/jobs', plainJob(), { authorization: `Bearer ${ADMIN}` });
  expect(sub.status).toBe(201);
});
afterAll(async () => {
  await c?.stop();
});

describe('the route table', () => {
  test('every route has a declared or derived access level, and the public ones are the expected few', () => {
    const table = routeTableOf(c.app);
    expect(table.length).toBeGreaterThan(30);
    const pub = table.filter((r) => r.access === 'public').map((r) => `${r.method} ${r.url}`);
    expect(pub.sort()).toEqual(
      [
        'GET /',
        'GET /api/openapi.json',
        'GET /healthz',
        'GET /ui/*',
        'HEAD /',
        'HEAD /api/openapi.json',
        'HEAD /healthz',
        'HEAD /ui/*',
      ].sort(),
    );
    expect(new Set(table.filter((r) => r.access === 'agent-socket').map((r) => r.url))).toEqual(
      new Set(['/api/agent/ws']),
    );
    expect(table.find((r) => r.url === '/metrics')?.access).toBe('read');
    expect(table.find((r) => r.method === 'POST' && r.url === '/api/tokens')?.access).toBe('admin');
    expect(table.find((r) => r.method === 'PUT' && r.url === '/api/cache/nar/*')?.access).toBe('push');
  });

  test('no non-public route answers without a token, under any spelling of its path', async () => {
    const before = await snapshot(c.db, `${c.dataDir}/cache`);
    const table = routeTableOf(c.app).filter((r) => r.access !== 'public' && r.access !== 'agent-socket');
    const leaks: string[] = [];
    const dropped = new Set<string>();
    const mustReachIndex = (i: number) => i <= 2;
    let refused = 0;
    let sent = 0;
    for (const r of table) {
      const path = concrete(r.url);
      for (const [i, p] of variants(path).entries()) {
        const body = r.method === 'GET' || r.method === 'HEAD' ? undefined : r.method === 'PUT' ? 'x' : '{}';
        const type = r.method === 'PUT' ? 'application/octet-stream' : 'application/json';
        sent++;
        const res = await rawRequest(c.url, r.method, p, {
          body,
          headers: body !== undefined ? { 'content-type': type } : {},
        }).catch((err: Error) => {
          // node's HTTP parser refuses some request lines before any route: that is a refusal too.
          if (mustReachIndex(i)) throw new Error(`${r.method} ${p}: ${err.message}`);
          return { status: 0, text: err.message, json: undefined, headers: {} };
        });
        if (res.status === 0) {
          dropped.add(p.replace(path, '<path>'));
          continue;
        }
        // The plain path and the %-encoded first letter reach the route: they must be refused by auth.
        const mustReach = mustReachIndex(i);
        const ok = mustReach
          ? res.status === 401
          : res.status === 401 || res.status === 404 || res.status === 400;
        if (!ok) leaks.push(`${r.method} ${p} → ${res.status} ${res.text.slice(0, 80)}`);
        if (res.status === 401) refused++;
        if (res.status === 401 && r.method !== 'HEAD') {
          expect(res.json?.error?.code, `${r.method} ${p}`).toMatch(/^(CACHE_)?UNAUTHORIZED$/);
        }
      }
    }
    expect(leaks).toEqual([]);
    expect(refused).toBeGreaterThan(table.length * 3);
    expect(await snapshot(c.db, `${c.dataDir}/cache`)).toBe(before);
    console.log(
      `route-auth: ${sent} raw requests over ${table.length} routes, ${refused} refused 401, none let through; dropped by the HTTP parser: ${[...dropped].join(' ')}`,
    );
  });

  test('the tricks that did get through before are refused: /%61pi/tokens, /%61pi/jobs, /%6detrics', async () => {
    const before = await snapshot(c.db);
    const mint = await rawRequest(c.url, 'POST', '/%61pi/tokens', {
      body: JSON.stringify({ name: 'evil', kind: 'client' }),
      headers: { 'content-type': 'application/json' },
    });
    expect(mint.status).toBe(401);
    const job = await rawRequest(c.url, 'POST', '/%61pi/jobs', {
      body: JSON.stringify(plainJob({ name: 'evil' })),
      headers: { 'content-type': 'application/json' },
    });
    expect(job.status).toBe(401);
    expect((await rawRequest(c.url, 'GET', '/%6detrics')).status).toBe(401);
    expect((await rawRequest(c.url, 'GET', '/%6Detrics')).status).toBe(401);
    expect(await snapshot(c.db)).toBe(before);
  });

  test('with the token the same routes answer (the refusals above come from auth)', async () => {
    const auth = { authorization: `Bearer ${ADMIN}` };
    expect((await rawRequest(c.url, 'GET', '/%6detrics', { headers: auth })).status).toBe(200);
    expect((await rawRequest(c.url, 'GET', '/%61pi/jobs', { headers: auth })).status).toBe(200);
    expect((await rawRequest(c.url, 'GET', '/api/cluster/status', { headers: auth })).status).toBe(200);
  });

  test('the agent socket refuses a connection without the agent token', async () => {
    const ws = new WebSocket(`${c.url.replace('http', 'ws')}/%61pi/agent/ws`);
    const code = await new Promise<number>((resolve, reject) => {
      ws.on('close', (code) => resolve(code));
      ws.on('error', reject);
    });
    expect(code).toBe(4401);
  });
});

describe('scopes', () => {
  const tokens: Record<string, string> = {};
  beforeAll(async () => {
    for (const scope of ['read', 'push', 'admin'] as const) {
      const r = await c.api(
        'POST',
        '/api/tokens',
        { name: `t-${scope}`, kind: 'client', scope },
        { authorization: `Bearer ${ADMIN}` },
      );
      expect(r.status).toBe(201);
      expect(r.body.data.scope).toBe(scope);
      tokens[scope] = r.body.data.token;
    }
  });
  const as = (t: string) => ({ authorization: `Bearer ${t}` });

  test('read looks, push uploads, admin changes; agent tokens reach only the cache', async () => {
    const before = await snapshot(c.db, `${c.dataDir}/cache`);
    const missing = { paths: [`/nix/store/${'a'.repeat(32)}-x`] };
    // read
    expect((await c.api('GET', '/api/jobs', undefined, as(tokens.read!))).status).toBe(200);
    expect((await c.api('GET', '/cache/nix-cache-info', undefined, as(tokens.read!))).status).toBe(200);
    const r1 = await c.api('POST', '/api/cache/missing', missing, as(tokens.read!));
    expect([r1.status, r1.body.error.code]).toEqual([403, 'CACHE_FORBIDDEN']);
    const r2 = await c.api('POST', '/api/jobs', plainJob({ name: 'r' }), as(tokens.read!));
    expect([r2.status, r2.body.error.code]).toEqual([403, 'FORBIDDEN']);
    // push
    expect((await c.api('POST', '/api/cache/missing', missing, as(tokens.push!))).status).toBe(200);
    const p1 = await c.api('POST', '/api/jobs/web/stop', undefined, as(tokens.push!));
    expect([p1.status, p1.body.error.code]).toEqual([403, 'FORBIDDEN']);
    const p2 = await c.api('POST', '/api/tokens', { name: 'x', kind: 'client' }, as(tokens.push!));
    expect(p2.status).toBe(403);
    expect((await c.api('GET', '/api/tokens', undefined, as(tokens.push!))).status).toBe(403);
    // agent
    expect((await c.api('GET', '/cache/nix-cache-info', undefined, as(AGENT))).status).toBe(200);
    expect((await c.api('GET', '/api/jobs', undefined, as(AGENT))).status).toBe(403);
    expect((await c.api('POST', '/api/cache/missing', missing, as(AGENT))).status).toBe(403);
    expect(await snapshot(c.db, `${c.dataDir}/cache`)).toBe(before);
    // admin
    expect((await c.api('GET', '/api/tokens', undefined, as(tokens.admin!))).status).toBe(200);
  });

  test('a bad scope is a coded 4xx', async () => {
    const r = await c.api('POST', '/api/tokens', { name: 'bad', kind: 'client', scope: 'root' }, as(ADMIN));
    expect([r.status, r.body.error.code]).toEqual([422, 'VALIDATION_FAILED']);
    const a = await c.api('POST', '/api/tokens', { name: 'bad', kind: 'agent', scope: 'push' }, as(ADMIN));
    expect(a.status).toBe(400);
  });
});

describe('with no agent token', () => {
  let open: TestCoordinator;
  let tokens: Record<string, string>;
  beforeAll(async () => {
    open = await startTestCoordinator('pglite', { tokens: { api: ADMIN } });
    tokens = await clientTokens(open, ADMIN, { viewer: 'read', ci: 'push', ops: 'admin' });
  });
  afterAll(async () => {
    await open?.stop();
  });

  /** How the agent socket ends for a token: 4401 refused, or the welcome for a joined agent. */
  const join = async (token: string, name: string) => {
    const ws = new WebSocket(`${open.url.replace('http', 'ws')}/api/agent/ws`, {
      headers: { authorization: `Bearer ${token}` },
    });
    return new Promise<string>((resolve, reject) => {
      ws.on('open', () => ws.send(JSON.stringify(helloFrame(name))));
      ws.on('message', (raw) => {
        const m = JSON.parse(raw.toString()) as { type: string };
        if (m.type === 'welcome') {
          ws.close();
          resolve('welcome');
        }
      });
      ws.on('close', (code) => resolve(String(code)));
      ws.on('error', reject);
    });
  };

  test('a read or push token cannot join as an agent (it would be handed workloads and their env); admin can', async () => {
    expect(await join(tokens.viewer!, 'viewer-node')).toBe('4401');
    expect(await join(tokens.ci!, 'ci-node')).toBe('4401');
    expect(await join('wrong', 'nobody')).toBe('4401');
    const nodes = await open.api('GET', '/api/nodes', undefined, { authorization: `Bearer ${ADMIN}` });
    expect(nodes.body.data).toEqual([]);
    expect(await join(tokens.ops!, 'ops-node')).toBe('welcome');
    expect(await join(ADMIN, 'admin-node')).toBe('welcome');
  });
});
