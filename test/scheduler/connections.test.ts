/**
 * The coordinator's connections: an idle kept-alive connection is let go after KEEP_ALIVE_TIMEOUT_MS;
 * idle connections are closed first when the connections run short, so public requests kept alive
 * cannot lock anyone out; one client address holds at most its share; refusals are logged; agent
 * sockets and event streams, long-lived by design, stay through all of it. Real servers and sockets.
 */
import { connect, type Socket } from 'node:net';
import { afterEach, describe, expect, it } from 'vitest';
import { KEEP_ALIVE_TIMEOUT_MS } from '../../scheduler/api/app.js';
import { startTestCoordinator, type TestCoordinator } from '../helpers/coordinator.js';
import { captureLogger } from '../helpers/logger.js';
import { eventually, ProtocolAgent } from '../helpers/protocol-agent.js';

const HEALTHZ = 'GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n';
/** A request that holds its connection for good: an event stream (what agents' and dashboards' are like). */
const EVENTS = 'GET /api/events HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n';

/** A request being served as long as the client likes: an upload whose body never comes whole. */
const SLOW_UPLOAD =
  'POST /api/jobs HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{';

/** A connection serving an event stream, once its stream began. */
async function streaming(url: string, localAddress?: string): Promise<Conn> {
  const c = await open(url, EVENTS, localAddress);
  await eventually(async () => c.text().includes(': connected'), 5000, 'the stream to begin');
  return c;
}

interface Conn {
  socket: Socket;
  text: () => string;
  /** Resolves with the ms from opening to the close, whoever closed it. */
  closed: Promise<number>;
}

/** A raw connection to `url` (from `localAddress`), sending `request` once connected. */
function open(url: string, request = '', localAddress?: string): Promise<Conn> {
  const { port } = new URL(url);
  return new Promise((resolve) => {
    const t0 = performance.now();
    let text = '';
    const socket = connect({ port: Number(port), host: '127.0.0.1', localAddress });
    let closedAt: (ms: number) => void = () => {};
    const closed = new Promise<number>((r) => {
      closedAt = r;
    });
    socket.on('data', (d) => {
      text += d.toString('latin1');
    });
    socket.on('error', () => {});
    socket.on('close', () => closedAt(performance.now() - t0));
    socket.once('connect', () => {
      if (request) socket.write(request);
      resolve({ socket, text: () => text, closed });
    });
    // Refused before it connected: resolved all the same, already closed.
    socket.once('close', () => resolve({ socket, text: () => text, closed }));
  });
}

/** A connection that made one public request, got its answer, and now sits idle, kept alive. */
async function idle(url: string): Promise<Conn> {
  const c = await open(url, HEALTHZ);
  await eventually(async () => {
    if (!c.text().includes('\r\n\r\n')) throw new Error('no answer yet');
    return true;
  }, 5000);
  return c;
}

/** One GET /healthz on a fresh connection: its status line, or `refused`. */
async function healthz(url: string, localAddress?: string): Promise<string> {
  const c = await open(
    url,
    'GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n',
    localAddress,
  );
  await c.closed;
  return c.text().split('\r\n')[0] || 'refused';
}

describe('connections', () => {
  let c: TestCoordinator | undefined;
  const conns: Conn[] = [];
  afterEach(async () => {
    for (const x of conns.splice(0)) x.socket.destroy();
    await c?.stop();
    c = undefined;
  });

  it('lets an idle kept-alive connection go after the keep-alive time, not fastify’s 72 s', async () => {
    c = await startTestCoordinator('pglite');
    const x = await idle(c.url);
    conns.push(x);
    expect(x.text()).toMatch(new RegExp(`\r\nKeep-Alive: timeout=${KEEP_ALIVE_TIMEOUT_MS / 1000}\r\n`, 'i'));
    const ms = await Promise.race([x.closed, new Promise<number>((r) => setTimeout(() => r(-1), 15_000))]);
    expect(ms).toBeGreaterThanOrEqual(KEEP_ALIVE_TIMEOUT_MS - 500);
    expect(ms).toBeLessThan(KEEP_ALIVE_TIMEOUT_MS + 3000);
  }, 30_000);

  it('public requests kept alive on every connection lock nobody out: the idle ones go first', async () => {
    c = await startTestCoordinator('pglite', { maxConnections: 40, maxConnectionsPerAddress: 40 });
    for (let i = 0; i < 40; i++) conns.push(await idle(c.url));
    // Every connection was taken by an idle one; new ones are served all the same.
    for (let i = 0; i < 5; i++) expect(await healthz(c.url)).toBe('HTTP/1.1 200 OK');
  }, 30_000);

  it('an address at its share with idle connections is served too: its idle ones go first', async () => {
    c = await startTestCoordinator('pglite', { maxConnections: 40, maxConnectionsPerAddress: 10 });
    for (let i = 0; i < 10; i++) conns.push(await idle(c.url));
    for (let i = 0; i < 3; i++) expect(await healthz(c.url)).toBe('HTTP/1.1 200 OK');
  }, 30_000);

  it('connections that never finish their headers, or send nothing, give their places up to new ones', async () => {
    c = await startTestCoordinator('pglite', { maxConnections: 20, maxConnectionsPerAddress: 20 });
    // Every place taken: half by silent connections, half by requests whose headers never end.
    const silent: Conn[] = [];
    const slow: Conn[] = [];
    for (let i = 0; i < 10; i++) silent.push(await open(c.url));
    for (let i = 0; i < 10; i++) slow.push(await open(c.url, 'GET /healthz HTTP/1.1\r\nHost: x\r\n'));
    conns.push(...silent, ...slow);
    // A new one takes the place of the one that has waited longest, once it waited a second.
    expect(await eventually(async () => (await healthz(c!.url)) === 'HTTP/1.1 200 OK', 10_000)).toBe(true);
    await silent[0]!.closed;
    for (let i = 0; i < 5; i++) expect(await healthz(c.url)).toBe('HTTP/1.1 200 OK');
    // The same within one address's share.
    await c.stop();
    c = await startTestCoordinator('pglite', { maxConnections: 40, maxConnectionsPerAddress: 10 });
    for (let i = 0; i < 10; i++) conns.push(await open(c.url, 'GET /healthz HTTP/1.1\r\n'));
    expect(await eventually(async () => (await healthz(c!.url)) === 'HTTP/1.1 200 OK', 10_000)).toBe(true);
  }, 60_000);

  it('refusals at the limit are logged, with their count, at most every 10 s', async () => {
    const log = captureLogger('warn');
    c = await startTestCoordinator('pglite', {
      maxConnections: 20,
      maxConnectionsPerAddress: 20,
      logger: log.logger,
    });
    // Requests being served hold their connections: a new one has no place. Event streams may take
    // half of them (TOO_MANY_STREAMS past that), uploads whose bodies come slowly the rest.
    for (let i = 0; i < 10; i++) conns.push(await streaming(c.url));
    for (let i = 0; i < 10; i++) conns.push(await open(c.url, SLOW_UPLOAD));
    await eventually(async () => (await healthz(c!.url)) === 'refused', 5000);
    for (let i = 0; i < 2; i++) expect(await healthz(c.url)).toBe('refused');
    await eventually(async () => {
      const warned = log.records.filter((r) => /connections refused/.test(r.msg));
      expect(warned).toHaveLength(1);
      expect(warned[0]).toMatchObject({ level: 40, refusedAtLimit: 1, maxConnections: 20 });
      return true;
    }, 5000);
  }, 30_000);

  it('one client address holds at most its share; others still get in; the refusal is logged', async () => {
    const log = captureLogger('warn');
    c = await startTestCoordinator('pglite', {
      maxConnections: 40,
      maxConnectionsPerAddress: 10,
      logger: log.logger,
    });
    for (let i = 0; i < 10; i++) conns.push(await streaming(c.url));
    expect(await healthz(c.url)).toBe('refused');
    expect(await healthz(c.url, '127.0.0.2')).toBe('HTTP/1.1 200 OK');
    await eventually(async () => {
      expect(log.records.find((r) => /connections refused/.test(r.msg))).toMatchObject({
        refusedPerAddress: 1,
        maxConnectionsPerAddress: 10,
      });
      return true;
    }, 5000);
  }, 30_000);

  it('the per-address share defaults to half the limit, room for many agents behind one NAT', async () => {
    c = await startTestCoordinator('pglite', { maxConnections: 40 });
    for (let i = 0; i < 20; i++) conns.push(await streaming(c.url));
    expect(await healthz(c.url)).toBe('refused');
    expect(await healthz(c.url, '127.0.0.2')).toBe('HTTP/1.1 200 OK');
  }, 30_000);

  it('an agent socket and an event stream stay past the keep-alive time and through the shedding', async () => {
    c = await startTestCoordinator('pglite', { maxConnections: 20, maxConnectionsPerAddress: 20 });
    const agent = await new ProtocolAgent({ url: c.url, name: 'stays' }).connect();
    const events = await open(c.url, 'GET /api/events HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n');
    conns.push(events);
    await eventually(async () => events.text().includes(': connected'), 5000);
    // A kept-alive probe let go marks the keep-alive time passed.
    const probe = await idle(c.url);
    // Connections run short: every new one closes the idle ones, the probe's among them at the latest.
    for (let i = 0; i < 25; i++) conns.push(await idle(c.url));
    await probe.closed;
    const late = await idle(c.url);
    conns.push(late);
    await late.closed;
    expect(agent.ws.readyState).toBe(agent.ws.OPEN);
    expect(events.socket.destroyed).toBe(false);
    // Both still carry messages: the agent leaves, and the stream tells of it.
    const before = events.text().length;
    agent.close();
    await eventually(async () => /data: .*"stays"|data: .*node/.test(events.text().slice(before)), 10_000);
  }, 60_000);
});
