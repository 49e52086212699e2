// Live streams (the event stream, followed logs) hold their connection as long as the client likes and
// never give it up to another: one token may hold MAX_STREAMS_PER_CALLER of them, all callers together
// half the connections the coordinator takes. Past either, a coded 429; a stream that closes frees its
// slot.
import { type ClientRequest, type IncomingMessage, request } from 'node:http';
import { afterEach, expect, test } from 'vitest';
import { MAX_STREAMS_PER_CALLER } from '../../scheduler/api/stream-slots.js';
import {
  clientTokens,
  plainJob,
  startTestCoordinator,
  type TestCoordinator,
} from '../helpers/coordinator.js';
import { eventually } from '../helpers/protocol-agent.js';

const ADMIN = 'streams-admin';

interface Opened {
  status: number;
  res: IncomingMessage;
  req: ClientRequest;
  /** The answer's body when it is not a stream (a refusal). */
  body: () => Promise<{ error: { code: string } }>;
}

/** Opens `path` with `token` and resolves once the answer's head came. */
function open(c: TestCoordinator, path: string, token: string): Promise<Opened> {
  const u = new URL(c.url);
  return new Promise((resolve, reject) => {
    const req = request(
      {
        host: u.hostname,
        port: u.port,
        path,
        headers: { authorization: `Bearer ${token}` },
        agent: false,
      },
      (res) => {
        const body = () =>
          new Promise<{ error: { code: string } }>((r) => {
            const chunks: Buffer[] = [];
            res.on('data', (b: Buffer) => chunks.push(b));
            res.on('end', () => r(JSON.parse(Buffer.concat(chunks).toString())));
          });
        resolve({ status: res.statusCode ?? 0, res, req, body });
      },
    );
    req.on('error', reject);
    req.end();
  });
}

let c: TestCoordinator | undefined;
const opened: Opened[] = [];
afterEach(async () => {
  for (const o of opened.splice(0)) o.req.destroy();
  await c?.stop();
  c = undefined;
});

test('one token holds at most MAX_STREAMS_PER_CALLER live streams; a closed one frees its slot', async () => {
  c = await startTestCoordinator('postgres', {
    tokens: { api: ADMIN },
    maxConnections: 400,
    maxConnectionsPerAddress: 400,
  });
  const { viewer, other } = await clientTokens(c, ADMIN, { viewer: 'read', other: 'read' });
  expect((await c.api('POST', '/api/jobs', plainJob(), { authorization: `Bearer ${ADMIN}` })).status).toBe(
    201,
  );
  const listed = await c.api('GET', '/api/workloads', undefined, { authorization: `Bearer ${ADMIN}` });
  const follow = `/api/workloads/${encodeURIComponent(listed.body.data[0].id)}/logs?follow=1`;

  // Event streams and log follows count together.
  for (let i = 0; i < MAX_STREAMS_PER_CALLER; i++) {
    const o = await open(c, i % 2 ? '/api/events' : follow, viewer!);
    opened.push(o);
    expect(o.status).toBe(200);
  }
  for (const path of ['/api/events', follow]) {
    const refused = await open(c, path, viewer!);
    expect(refused.status).toBe(429);
    expect((await refused.body()).error.code).toBe('TOO_MANY_STREAMS');
  }
  // Another token is not held back by this one's streams.
  const others = await open(c, '/api/events', other!);
  opened.push(others);
  expect(others.status).toBe(200);

  // A stream that closes frees its slot.
  opened.shift()!.req.destroy();
  const again = await eventually(async () => {
    const o = await open(c!, '/api/events', viewer!);
    if (o.status === 200) return o;
    await o.body();
    return null;
  });
  opened.push(again);
});

test('all callers together hold at most half the connections in live streams', async () => {
  c = await startTestCoordinator('postgres', {
    tokens: { api: ADMIN },
    maxConnections: 20,
    maxConnectionsPerAddress: 20,
  });
  const { a, b } = await clientTokens(c, ADMIN, { a: 'read', b: 'read' });
  for (let i = 0; i < 10; i++) {
    const o = await open(c, '/api/events', a!);
    opened.push(o);
    expect(o.status).toBe(200);
  }
  const refused = await open(c, '/api/events', b!);
  expect(refused.status).toBe(429);
  expect((await refused.body()).error.code).toBe('TOO_MANY_STREAMS');
  // The rest of the API still answers.
  expect((await c.api('GET', '/api/nodes', undefined, { authorization: `Bearer ${b}` })).status).toBe(200);
  opened.shift()!.req.destroy();
  const again = await eventually(async () => {
    const o = await open(c!, '/api/events', b!);
    if (o.status === 200) return o;
    await o.body();
    return null;
  });
  opened.push(again);
});
