/**
 * A TCP proxy on 127.0.0.1 to a target port, which a test can cut (every connection dropped, and each
 * new one closed as soon as it is accepted), freeze (every connection, and each new one, kept open
 * with nothing passed either way: a network black hole) or slow down (what clients send is passed on
 * later), and restore: a database outage without stopping the PostgreSQL server other tests share. It
 * keeps its port meanwhile.
 */
import { createConnection, createServer, type Socket } from 'node:net';
import { Transform } from 'node:stream';

export interface TcpProxy {
  port: number;
  /** Drops every connection through the proxy and closes new ones at once until `restore`. */
  cut(): Promise<void>;
  /** Holds every connection, and each new one, open and silent until `restore`. */
  freeze(): Promise<void>;
  /**
   * Passes on each chunk a client sends `ms` after it came, in order, on every connection (a database
   * answering each statement that much later); 0 passes them on at once again.
   */
  slow(ms: number): void;
  /**
   * Bytes passed on so far, over every connection: `up` from clients to the target, `down` back: a test
   * sees what a peer sent and whether it answered after.
   */
  bytes(): { up: number; down: number };
  /** Forwards new connections again (the frozen ones are dropped, as when a network comes back to resets). */
  restore(): Promise<void>;
  close(): Promise<void>;
}

export async function startTcpProxy(
  targetPort: number,
  targetHost = '127.0.0.1',
  listenPort = 0,
): Promise<TcpProxy> {
  const sockets = new Set<Socket>();
  let cut = false;
  let frozen = false;
  let delayMs = 0;
  const passed = { up: 0, down: 0 };
  /** Holds each chunk `delayMs` from its arrival, never past one that came before it. */
  const delayer = () => {
    let held = 0;
    let lastDue = 0;
    let flushed: (() => void) | null = null;
    return new Transform({
      transform(chunk, _enc, done) {
        if (delayMs === 0 && held === 0) return done(null, chunk);
        held++;
        lastDue = Math.max(lastDue, performance.now() + delayMs);
        setTimeout(() => {
          this.push(chunk);
          if (--held === 0) flushed?.();
        }, lastDue - performance.now());
        done();
      },
      flush(done) {
        if (held === 0) done();
        else flushed = () => done();
      },
    });
  };
  const track = (socket: Socket, onError: () => void) => {
    sockets.add(socket);
    socket.on('close', () => sockets.delete(socket));
    socket.on('error', onError);
  };
  const server = createServer((client) => {
    if (cut) {
      client.destroy();
      return;
    }
    if (frozen) {
      track(client, () => client.destroy());
      client.pause();
      return;
    }
    const upstream = createConnection({ host: targetHost, port: targetPort });
    const both = () => {
      client.destroy();
      upstream.destroy();
    };
    track(client, both);
    track(upstream, both);
    client.on('data', (chunk: Buffer) => {
      passed.up += chunk.length;
    });
    upstream.on('data', (chunk: Buffer) => {
      passed.down += chunk.length;
    });
    client.pipe(delayer()).pipe(upstream).pipe(client);
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(listenPort, '127.0.0.1', () => resolve());
  });
  const address = server.address();
  const dropAll = () => {
    for (const socket of sockets) socket.destroy();
  };
  return {
    port: typeof address === 'object' && address ? address.port : 0,
    async cut() {
      cut = true;
      dropAll();
    },
    async freeze() {
      frozen = true;
      for (const socket of sockets) {
        socket.unpipe();
        socket.pause();
      }
    },
    slow(ms: number) {
      delayMs = ms;
    },
    bytes() {
      return { ...passed };
    },
    async restore() {
      if (frozen) dropAll();
      frozen = false;
      cut = false;
    },
    async close() {
      cut = true;
      dropAll();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}

/** A fresh PostgreSQL database reached through a proxy a test can cut or freeze: its URL through the proxy. */
export async function proxiedPostgres(
  listenPort = 0,
): Promise<{ proxy: TcpProxy; url: string; dbName: string }> {
  const { createPostgresDb } = await import('./db.js');
  const db = await createPostgresDb();
  const url = new URL(db.url);
  const proxy = await startTcpProxy(Number(url.port || 5432), url.hostname, listenPort);
  url.port = String(proxy.port);
  return { proxy, url: url.toString(), dbName: db.name };
}
