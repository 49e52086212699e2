// Cross-site WebSocket hijacking: a browser opens a WebSocket to any address a page names, with no
// CORS check, and tells the server only its page's Origin. A page on any web site the user of an open
// `mxc up` visits reached the agent socket on 127.0.0.1 (an IP address passes the Host check) and
// joined as an agent: it was handed workloads, their environment included, and reported on them.
import { connect } from 'node:net';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import WebSocket from 'ws';
import { plainJob, startTestCoordinator, type TestCoordinator } from '../helpers/coordinator.js';
import { helloFrame, ProtocolAgent } from '../helpers/protocol-agent.js';
import { snapshot } from './helpers.js';

/** Opens the agent socket with `headers` and sends a hello: the HTTP status of a refusal, or what came. */
function tryJoin(url: string, name: string, headers: Record<string, string>): Promise<string> {
  const u = new URL(url);
  const ws = new WebSocket(`ws://${u.host}/api/agent/ws`, { headers });
  return new Promise<string>((resolve) => {
    ws.on('unexpected-response', (req, res) => {
      req.destroy();
      resolve(String(res.statusCode));
    });
    ws.on('open', () => {
      ws.send(JSON.stringify(helloFrame(name)));
      ws.on('message', (raw) => resolve(JSON.parse(raw.toString()).type));
      ws.on('close', (code) => resolve(String(code)));
    });
    ws.on('error', () => resolve('error'));
  }).finally(() => ws.terminate());
}

describe('the agent socket from a web page', () => {
  let c: TestCoordinator;
  beforeAll(async () => {
    c = await startTestCoordinator('pglite');
  });
  afterAll(async () => {
    await c?.stop();
  });

  test('an open API refuses a socket a page of another origin opens, and changes nothing', async () => {
    const before = await snapshot(c.db);
    const host = new URL(c.url).host;
    for (const headers of [
      { origin: 'http://evil.example' },
      { origin: 'null' },
      { origin: 'http://localhost:8080' },
      { origin: 'http://evil.example', 'sec-fetch-site': 'cross-site' },
      { origin: `http://${host}`, 'sec-fetch-site': 'cross-site' },
    ] as Record<string, string>[]) {
      expect([headers, await tryJoin(c.url, 'page-node', headers)]).toEqual([headers, '403']);
    }
    expect(await snapshot(c.db)).toBe(before);
    // A real agent (no Origin) still joins, and so would a page of the coordinator's own origin.
    const a = await new ProtocolAgent({ url: c.url, name: 'real-agent' }).connect();
    a.close();
    expect(await tryJoin(c.url, 'own-origin', { origin: `http://${host}` })).toBe('welcome');
  });
});

/** Sends an upgrade to `path` over raw TCP: the status line, and whether the socket closed within 3 s. */
function rawUpgrade(url: string, path: string, extra = ''): Promise<{ status: string; closed: boolean }> {
  const u = new URL(url);
  return new Promise((resolve) => {
    const s = connect(Number(u.port), u.hostname, () =>
      s.write(
        `GET ${path} HTTP/1.1\r\nHost: ${u.host}\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n` +
          `Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n${extra}\r\n`,
      ),
    );
    let got = '';
    s.on('data', (d) => {
      got += d.toString('latin1');
    });
    // Never answers a close frame, as a client holding connections would not.
    const timer = setTimeout(() => {
      s.destroy();
      resolve({ status: got.split('\r\n')[0]!, closed: false });
    }, 3000);
    s.on('close', () => {
      clearTimeout(timer);
      resolve({ status: got.split('\r\n')[0]!, closed: true });
    });
    s.on('error', () => undefined);
  });
}

describe('upgrades of routes that are not WebSockets', () => {
  let c: TestCoordinator;
  beforeAll(async () => {
    c = await startTestCoordinator('pglite', { tokens: { api: 'upgrade-admin' } });
  });
  afterAll(async () => {
    await c?.stop();
  });

  test('are refused 400 and closed at once, without a token, on public routes too', async () => {
    // Before: a 101 and a close handshake the client need not answer, its connection held 30 s and
    // counted as serving, so connections without a token could hold every place the coordinator has.
    for (const path of ['/healthz', '/', '/api/openapi.json', '/ui/favicon.svg']) {
      expect([path, await rawUpgrade(c.url, path)]).toEqual([
        path,
        { status: 'HTTP/1.1 400 Bad Request', closed: true },
      ]);
    }
    // With a token, on a route that needs one, the same.
    expect(await rawUpgrade(c.url, '/api/jobs', 'Authorization: Bearer upgrade-admin\r\n')).toEqual({
      status: 'HTTP/1.1 400 Bad Request',
      closed: true,
    });
    // The agent socket is still one.
    const a = await new ProtocolAgent({ url: c.url, name: 'still-joins', token: 'upgrade-admin' }).connect();
    a.close();
  });
});

describe('credentials a browser adds by itself', () => {
  let c: TestCoordinator;
  beforeAll(async () => {
    c = await startTestCoordinator('pglite', { tokens: { api: 'basic-admin' } });
  });
  afterAll(async () => {
    await c?.stop();
  });

  test('a cross-site change with Basic credentials is refused; with a Bearer token it is not', async () => {
    // A browser keeps Basic credentials (a user who opened the cache with the token as the password)
    // and sends them with any page's form to the same origin: they prove no script holds the token.
    const basic = `Basic ${Buffer.from('mxc:basic-admin').toString('base64')}`;
    const before = await snapshot(c.db);
    for (const headers of [
      { authorization: basic, origin: 'http://evil.example' },
      { authorization: basic, 'sec-fetch-site': 'cross-site' },
    ] as Record<string, string>[]) {
      const r = await c.api('POST', '/api/jobs', plainJob({ name: 'basic-csrf' }), headers);
      expect([headers, r.status, r.body.error?.code]).toEqual([headers, 403, 'CROSS_SITE']);
    }
    expect(await snapshot(c.db)).toBe(before);
    // Basic from no other origin (the CLI, curl, nix) and Bearer from anywhere still work.
    expect(
      (await c.api('POST', '/api/jobs', plainJob({ name: 'basic-ok' }), { authorization: basic })).status,
    ).toBe(201);
    const bearer = { authorization: 'Bearer basic-admin', origin: 'http://evil.example' };
    expect((await c.api('POST', '/api/jobs', plainJob({ name: 'bearer-ok' }), bearer)).status).toBe(201);
  });
});
