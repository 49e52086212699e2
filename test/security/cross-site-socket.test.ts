// Cross-site WebSocket hijacking: a browser opens a WebSocket to any address a page names, with no
// CORS check, and tells the server only its page's Origin. A page on any web site the user of an open
// `mxc up` visits reached the agent socket on 127.0.0.1 (an IP address passes the Host check) and
// joined as an agent: it was handed workloads, their environment included, and reported on them.
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import WebSocket from 'ws';
import { startTestCoordinator, type TestCoordinator } from '../helpers/coordinator.js';
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
    c = await startTestCoordinator('pglite', { port: 47231 });
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
