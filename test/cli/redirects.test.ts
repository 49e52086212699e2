/**
 * The CLI's client follows redirects as fetch did (a coordinator behind a proxy that moved it): the real CLI
 * against a real coordinator reached through small node:http servers that redirect and record what reached
 * them. The token goes only to the origin the CLI was pointed at; 303 (and 301/302 after a POST) turns into
 * a GET without the body; a redirect loop ends with a coded exit, not a hang.
 */
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startTestCoordinator, type TestCoordinator } from '../helpers/coordinator.js';
import { mxc } from './up-harness.js';

const ADMIN = 'redirect-admin-token';

interface Seen {
  method: string;
  url: string;
  authorization?: string;
  body: string;
}

/** A server on 127.0.0.1 that records each request and answers it with `answer`'s status and Location. */
async function recorder(answer: (req: http.IncomingMessage) => { status: number; location: string }) {
  const seen: Seen[] = [];
  const server = http.createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      seen.push({
        method: req.method ?? '',
        url: req.url ?? '',
        authorization: req.headers.authorization,
        body: Buffer.concat(chunks).toString(),
      });
      const a = answer(req);
      res.writeHead(a.status, { location: a.location }).end();
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  return { seen, url, close: () => new Promise<void>((resolve) => server.close(() => resolve())) };
}

describe('the CLI follows redirects', () => {
  let c: TestCoordinator;
  const servers: { close(): Promise<void> }[] = [];
  beforeAll(async () => {
    c = await startTestCoordinator('postgres', { tokens: { api: ADMIN } });
  });
  afterAll(async () => {
    await Promise.all(servers.map((s) => s.close()));
    await c?.stop();
  });
  const cli = (url: string, ...args: string[]) =>
    mxc([...args, '--coordinator', url], { env: { MXC_API_TOKEN: ADMIN, MXC_API_TOKEN_FILE: '' } });

  it('moves within its own origin with the token, and sends the token to no other origin', async () => {
    // Its own origin: /old/… → /new/… (same server), then on to the coordinator (another origin).
    const front = await recorder((req) =>
      req.url!.startsWith('/old/')
        ? { status: 308, location: req.url!.replace('/old/', '/new/') }
        : { status: 307, location: `${c.url}${req.url!.replace('/new', '')}` },
    );
    servers.push(front);
    const moved = await cli(`${front.url}/old`, 'cluster', 'status', '--json');
    // The coordinator wants a token it did not get across origins: refused, and said so (exit 3).
    expect(moved.exitCode, moved.stderr).toBe(3);
    expect(front.seen.map((s) => [s.url, s.authorization])).toEqual([
      ['/old/api/cluster/status', `Bearer ${ADMIN}`],
      ['/new/api/cluster/status', `Bearer ${ADMIN}`],
    ]);
    // Straight at the coordinator the same command works: the token was all that was missing.
    const direct = await cli(c.url, 'cluster', 'status', '--json');
    expect(direct.exitCode, direct.stderr).toBe(0);
  });

  it('turns a POST into a GET without its body on 303, keeps both on 307, and gives up on a loop', async () => {
    const see = await recorder((req) =>
      req.url!.startsWith('/seen')
        ? { status: 404, location: '/' }
        : { status: 303, location: `/seen${req.url}` },
    );
    servers.push(see);
    await cli(see.url, 'tokens', 'create', 'alice');
    expect(see.seen.map((s) => [s.method, s.url])).toEqual([
      ['POST', '/api/tokens'],
      ['GET', '/seen/api/tokens'],
    ]);
    expect(JSON.parse(see.seen[0]!.body)).toMatchObject({ name: 'alice' });
    expect(see.seen[1]!.body).toBe('');

    const keep = await recorder((req) =>
      req.url!.startsWith('/kept')
        ? { status: 404, location: '/' }
        : { status: 307, location: `/kept${req.url}` },
    );
    servers.push(keep);
    await cli(keep.url, 'tokens', 'create', 'bob');
    expect(keep.seen.map((s) => [s.method, s.url])).toEqual([
      ['POST', '/api/tokens'],
      ['POST', '/kept/api/tokens'],
    ]);
    expect(JSON.parse(keep.seen[1]!.body)).toMatchObject({ name: 'bob' });

    const loop = await recorder((req) => ({ status: 302, location: req.url! }));
    servers.push(loop);
    const looped = await cli(loop.url, 'cluster', 'status');
    expect(looped.exitCode).toBe(1);
    expect(looped.stderr).toMatch(/cannot reach the coordinator .*more than 5 redirects/);
    expect(loop.seen).toHaveLength(6);
  });
});
