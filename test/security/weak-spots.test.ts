// Issue 12.7, replayed: revoked tokens end open streams within a second; open mode refuses cross-site
// state changes, non-loopback token bootstrap and non-loopback listening; NUL bytes and lone surrogates
// are a coded 400; unsafe names, zero resources and host-like health endpoints are refused by the spec.
// Every refusal is checked to have changed nothing.
import { rm } from 'node:fs/promises';
import { hostname } from 'node:os';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import WebSocket from 'ws';
import { startCoordinator } from '../../scheduler/server.js';
import { plainJob, startTestCoordinator, type TestCoordinator } from '../helpers/coordinator.js';
import { captureLogger, testLogger } from '../helpers/logger.js';
import { eventually, helloFrame, PLAIN_CAPABILITIES, ProtocolAgent } from '../helpers/protocol-agent.js';
import { rawRequest, snapshot } from './helpers.js';

const ADMIN = 'weak-admin';
const asAdmin = { authorization: `Bearer ${ADMIN}` };

describe('revoked tokens', () => {
  let c: TestCoordinator;
  beforeAll(async () => {
    c = await startTestCoordinator('pglite', { tokens: { api: ADMIN } });
  });
  afterAll(async () => {
    await c?.stop();
  });

  test('an open event stream ends within a second of its token being revoked', async () => {
    const t = await c.api('POST', '/api/tokens', { name: 'watcher', kind: 'client', scope: 'read' }, asAdmin);
    const res = await fetch(`${c.url}/api/events`, {
      headers: { authorization: `Bearer ${t.body.data.token}` },
    });
    expect(res.status).toBe(200);
    const reader = res.body!.getReader();
    await reader.read(); // ": connected"
    const ended = (async () => {
      try {
        for (;;) if ((await reader.read()).done) return;
      } catch {
        return;
      }
    })();
    const t0 = Date.now();
    expect((await c.api('DELETE', '/api/tokens/watcher', undefined, asAdmin)).status).toBe(204);
    await ended;
    expect(Date.now() - t0).toBeLessThan(1000);
    // And the token opens nothing new.
    expect(
      (await fetch(`${c.url}/api/events`, { headers: { authorization: `Bearer ${t.body.data.token}` } }))
        .status,
    ).toBe(401);
  });

  test("an agent's socket closes within a second of its join token being revoked", async () => {
    const t = await c.api('POST', '/api/tokens', { name: 'rack-b', kind: 'agent' }, asAdmin);
    const a = await new ProtocolAgent({ url: c.url, name: 'revoked-a', token: t.body.data.token }).connect();
    const closed = new Promise<number>((r) => a.ws.once('close', (code) => r(code)));
    const t0 = Date.now();
    expect((await c.api('DELETE', '/api/tokens/rack-b', undefined, asAdmin)).status).toBe(204);
    expect(await closed).toBe(4401);
    expect(Date.now() - t0).toBeLessThan(1000);
  });
});

describe('open mode', () => {
  let c: TestCoordinator;
  beforeAll(async () => {
    c = await startTestCoordinator('pglite');
  });
  afterAll(async () => {
    await c?.stop();
  });

  test('cross-site state-changing requests are refused; same-origin ones and reads are not', async () => {
    const before = await snapshot(c.db);
    const host = new URL(c.url).host;
    for (const headers of [
      { origin: 'http://evil.example' },
      { origin: 'null' },
      { 'sec-fetch-site': 'cross-site' },
    ] as Record<string, string>[]) {
      const r = await c.api('POST', '/api/jobs', plainJob({ name: 'csrf' }), headers);
      expect([r.status, r.body.error.code]).toEqual([403, 'CROSS_SITE']);
      const t = await c.api('POST', '/api/tokens', { name: 'csrf', kind: 'client' }, headers);
      expect(t.status).toBe(403);
    }
    expect(await snapshot(c.db)).toBe(before);
    expect((await c.api('GET', '/api/jobs', undefined, { origin: 'http://evil.example' })).status).toBe(200);
    const ok = await c.api('POST', '/api/jobs', plainJob({ name: 'same-origin' }), {
      origin: `http://${host}`,
    });
    expect(ok.status).toBe(201);
  });

  test('a page on a rebound domain reaches nothing: an open API answers only its own host names', async () => {
    // DNS rebinding: the attacker's domain resolves to 127.0.0.1 once its page has loaded, so the
    // user's browser sends the page's requests to the coordinator, same-origin in its eyes: Origin and
    // Host both name the attacker's domain.
    const port = new URL(c.url).port;
    const evil = {
      host: `rebind.attacker.example:${port}`,
      origin: `http://rebind.attacker.example:${port}`,
    };
    const before = await snapshot(c.db);
    const json = { 'content-type': 'application/json' };
    const tries = [
      ['POST', '/api/jobs', JSON.stringify(plainJob({ name: 'rebound' }))],
      ['POST', '/api/tokens', JSON.stringify({ name: 'attacker', kind: 'client' })],
      ['GET', '/api/jobs', undefined],
      ['GET', '/api/tokens', undefined],
      ['GET', '/api/events', undefined],
    ] as const;
    for (const [method, path, body] of tries) {
      const r = await rawRequest(c.url, method, path, { headers: { ...evil, ...json }, body });
      expect([method, path, r.status, (r.json as { error?: { code?: string } })?.error?.code]).toEqual([
        method,
        path,
        403,
        'HOST_NOT_ALLOWED',
      ]);
    }
    // The agent socket too (it would be handed workloads).
    const ws = new WebSocket(`ws://127.0.0.1:${port}/api/agent/ws`, { headers: { host: evil.host } });
    const refused = await new Promise<string>((resolve) => {
      ws.on('unexpected-response', (req, res) => {
        req.destroy();
        resolve(String(res.statusCode));
      });
      ws.on('open', () => {
        ws.send(JSON.stringify(helloFrame('rebound-node')));
        ws.on('message', () => resolve('joined'));
        ws.on('close', (code) => resolve(String(code)));
      });
      ws.on('error', () => resolve('error'));
    });
    ws.terminate();
    expect(refused).toBe('403');
    expect(await snapshot(c.db)).toBe(before);
    // Its own names answer: an IP address, localhost, this machine's name.
    for (const host of [
      `127.0.0.1:${port}`,
      `localhost:${port}`,
      `LOCALHOST.:${port}`,
      `[::1]:${port}`,
      `${hostname()}:${port}`,
    ]) {
      const r = await rawRequest(c.url, 'GET', '/api/jobs', { headers: { host } });
      expect([host, r.status]).toEqual([host, 200]);
    }
    // Public routes (health, the dashboard's files) reveal nothing and answer any name.
    expect((await rawRequest(c.url, 'GET', '/healthz', { headers: { host: evil.host } })).status).toBe(200);
  });

  test('the first token can be minted only from loopback; an open API listens only on loopback', async () => {
    await expect(
      startCoordinator({
        port: 0,
        host: '0.0.0.0',
        dataDir: `${c.dataDir}-x`,
        tokens: {},
        logger: testLogger(),
      }),
    ).rejects.toMatchObject({ code: 'OPEN_API_NOT_LOOPBACK' });
    await rm(`${c.dataDir}-x`, { recursive: true, force: true });
    const wide = await startTestCoordinator('pglite', { host: '0.0.0.0', insecure: true });
    try {
      const port = new URL(wide.url).port;
      const before = await snapshot(wide.db);
      const remote = await rawRequest(`http://192.0.2.2:${port}`, 'POST', '/api/tokens', {
        body: JSON.stringify({ name: 'first', kind: 'client' }),
        headers: { 'content-type': 'application/json' },
      });
      expect([remote.status, remote.json?.error?.code]).toEqual([403, 'BOOTSTRAP_LOOPBACK_ONLY']);
      expect(await snapshot(wide.db)).toBe(before);
      const local = await wide.api('POST', '/api/tokens', { name: 'first', kind: 'client' });
      expect(local.status).toBe(201);
    } finally {
      await wide.stop();
    }
  });
});

describe('bad characters and unsafe specs', () => {
  let c: TestCoordinator;
  beforeAll(async () => {
    c = await startTestCoordinator('postgres', { tokens: { api: ADMIN } });
  });
  afterAll(async () => {
    await c?.stop();
  });

  test('NUL bytes and lone surrogates anywhere are 400 BAD_CHARACTERS, never 500', async () => {
    const before = await snapshot(c.db);
    const json = (over: string) => JSON.stringify(plainJob()).replace('"name":"web"', over);
    for (const body of [
      json('"name":"a\\u0000b"'),
      json('"name":"web","mxc":{"env":{"X":"\\ud800"}}'),
      json('"name":"web","contact":"\\udc00x"'),
      json('"name":"web","mxc":{"env":{"X\\u0000":"1"}}'),
    ]) {
      const r = await rawRequest(c.url, 'POST', '/api/jobs', {
        body,
        headers: { ...asAdmin, 'content-type': 'application/json' },
      });
      expect([r.status, r.json?.error?.code], body.slice(0, 60)).toEqual([400, 'BAD_CHARACTERS']);
    }
    for (const path of [
      '/api/jobs/a%00b',
      '/api/store-paths?contains=%00',
      '/api/workloads/%ED%A0%80',
      '/api/nodes/x%00',
    ]) {
      const r = await rawRequest(c.url, 'GET', path, { headers: asAdmin });
      expect(r.status, path).toBe(400);
    }
    const tok = await rawRequest(c.url, 'POST', '/api/tokens', {
      body: '{"name":"a\\u0000","kind":"client"}',
      headers: { ...asAdmin, 'content-type': 'application/json' },
    });
    expect(tok.status).toBe(400);
    expect(await snapshot(c.db)).toBe(before);
  });

  test('an agent message with a NUL byte is refused on the socket and changes nothing', async () => {
    const before = await snapshot(c.db);
    const ws = new WebSocket(`${c.url.replace('http', 'ws')}/api/agent/ws`, { headers: asAdmin });
    await new Promise((r) => ws.once('open', r));
    const answer = new Promise<{ type: string; code: string }>((r) =>
      ws.once('message', (m) => r(JSON.parse(m.toString()))),
    );
    ws.send(JSON.stringify(helloFrame('nul\u0000node', { resources: { cpu: 1, memory_mb: 1, disk_mb: 1 } })));
    expect(await answer).toMatchObject({ type: 'error', code: 'BAD_MESSAGE' });
    ws.close();
    expect(await snapshot(c.db)).toBe(before);
  });

  test('a process name with terminal escapes in an agent’s logs is refused on the socket; nothing is stored', async () => {
    const agent = await new ProtocolAgent({
      url: c.url,
      name: 'esc-logs',
      token: ADMIN,
      autoRun: false,
    }).connect();
    try {
      const sub = await c.api('POST', '/api/jobs', plainJob({ name: 'esc-logs' }), asAdmin);
      const [id] = sub.body.data.workloads as string[];
      await agent.waitFor((m) => m.type === 'start');
      const line = { stream: 'stdout', run: 0, ts: Date.now(), line: 'hello' };
      agent.send({ type: 'logs', workload_id: id, lines: [{ ...line, process: '\u001b[2J\r\nfake' }] });
      expect(await agent.waitFor((m) => m.type === 'error')).toMatchObject({ code: 'BAD_MESSAGE' });
      agent.send({ type: 'logs', workload_id: id, lines: [{ ...line, process: 'web' }] });
      const stored = await eventually(async () => {
        const logs = await c.api('GET', `/api/workloads/${id}/logs`, undefined, asAdmin);
        return logs.body.data.length > 0 ? logs.body.data : null;
      });
      expect(stored.map((l: { process: string }) => l.process)).toEqual(['web']);
    } finally {
      agent.close();
    }
  });

  test('terminal escapes and forged rows in a node name or attribute are refused on the socket; a hostname is taken', async () => {
    const before = await snapshot(c.db);
    const caps = (attributes: Record<string, string>) => ({
      capabilities: { ...PLAIN_CAPABILITIES, attributes },
    });
    const hostile = [
      helloFrame('\u001b]0;pwned\u0007\u001b[2Jnode'),
      helloFrame('evil\r\nfake-node   ready'),
      helloFrame('tab\tnode'),
      helloFrame('csi\u009bnode'),
      helloFrame('has space'),
      helloFrame('-dash-first'),
      helloFrame('n'.repeat(254)),
      helloFrame('attr-key', caps({ 'rack\u001b[2J': 'a' })),
      helloFrame('attr-value', caps({ rack: 'a\u001b]0;pwned\u0007' })),
      helloFrame('attr-value-c1', caps({ rack: 'a\u0085b' })),
    ];
    for (const frame of hostile) {
      const ws = new WebSocket(`${c.url.replace('http', 'ws')}/api/agent/ws`, { headers: asAdmin });
      await new Promise((r) => ws.once('open', r));
      const answer = new Promise<{ type: string; code: string }>((r) =>
        ws.once('message', (m) => r(JSON.parse(m.toString()))),
      );
      ws.send(JSON.stringify(frame));
      expect(await answer, JSON.stringify(frame.name)).toMatchObject({ type: 'error', code: 'BAD_MESSAGE' });
      ws.close();
    }
    expect(await snapshot(c.db)).toBe(before);
    // What a hostname is (an FQDN up to 253 characters, attribute values with spaces and unicode) still joins.
    const fqdn = `${'a'.repeat(60)}.${'b'.repeat(60)}.${'c'.repeat(60)}.${'d'.repeat(60)}.example_1-x`.slice(
      0,
      253,
    );
    const ok = await new ProtocolAgent({
      url: c.url,
      name: fqdn,
      token: ADMIN,
      attributes: { rack: 'Zürich rack 2' },
    }).connect();
    ok.close();
  });

  test('job names like .., zero resources, a secret named .., host-like health endpoints: 422', async () => {
    const before = await snapshot(c.db);
    const res = { cpu: 1, ram: 1 << 20, disk: 0 };
    const bad = [
      plainJob({ name: '..' }),
      plainJob({ name: '.' }),
      plainJob({ name: '.hidden' }),
      plainJob({ role: '..' }),
      plainJob({ environment: '-rf' }),
      plainJob({
        task: {
          name: 't',
          processes: [{ name: 'p', cmdline: 'true' }],
          resources: { cpu: 0, ram: 0, disk: 0 },
        },
      }),
      plainJob({
        task: { name: 't', processes: [{ name: 'p', cmdline: 'true' }], resources: { ...res, cpu: 0 } },
      }),
      plainJob({ mxc: { secrets: ['..'] } }),
      plainJob({ mxc: { secrets: ['../etc/passwd'] } }),
      ...['@127.0.0.1:5432/', '//evil.example/x', 'http://evil.example/', '/ok@evil', 'health', '/a b'].map(
        (endpoint) => plainJob({ health_check_config: { endpoint } }),
      ),
    ];
    for (const spec of bad) {
      const r = await c.api('POST', '/api/jobs', spec, asAdmin);
      expect([r.status, r.body.error?.code], JSON.stringify(spec).slice(0, 200)).toEqual([
        422,
        'VALIDATION_FAILED',
      ]);
    }
    expect(await snapshot(c.db)).toBe(before);
    const fine = await c.api(
      'POST',
      '/api/jobs',
      plainJob({ health_check_config: { endpoint: '/health?deep=1' } }),
      asAdmin,
    );
    expect(fine.status).toBe(201);
  });
});

describe('an open API closing', () => {
  test('an agent that joined without a token is disconnected, and both sides are told why', async () => {
    const { logger, records } = captureLogger('warn');
    const c = await startTestCoordinator('pglite', { logger });
    try {
      const a = await new ProtocolAgent({ url: c.url, name: 'tokenless' }).connect();
      const closed = new Promise<[number, string]>((r) =>
        a.ws.once('close', (code, reason) => r([code, reason.toString()])),
      );
      expect((await c.api('POST', '/api/tokens', { name: 'first', kind: 'client' })).status).toBe(201);
      expect(await closed).toEqual([4401, 'the API now needs a token']);
      expect(records.map((r) => r.msg)).toContainEqual(
        expect.stringMatching(/joined the open API without a token is disconnected/),
      );
    } finally {
      await c.stop();
    }
  });
});
