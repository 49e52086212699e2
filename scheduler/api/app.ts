/**
 * The coordinator's HTTP app as one fastify plugin tree: infrastructure first (errors, auth, websocket),
 * then the binary cache, then the API routes one file per resource, then the dashboard.
 */
import { readFileSync } from 'node:fs';
import type { IncomingMessage, Server, ServerResponse } from 'node:http';
import { createServer as createHttpsServer } from 'node:https';
import { isIP, type Socket } from 'node:net';
import websocket from '@fastify/websocket';
import Fastify, {
  type FastifyBaseLogger,
  type FastifyInstance,
  type FastifyReply,
  type FastifyRequest,
  LogController,
} from 'fastify';
import type { Logger } from 'pino';
import { MAX_AGENT_MESSAGE_BYTES } from '../../spec/messages.js';
import type { Coordinator } from '../coordinator.js';
import { MxcError } from '../errors.js';
import { type Access, type Auth, allows, refusal, routeAccess } from './auth.js';
import { documentWebSockets, installContract } from './contract.js';
import { installErrorHandler, noRoute } from './error-handler.js';
import { badTextError, crowdedObjectError, findBadText, findCrowdedObject } from './input-check.js';
import { openApiRoutes } from './openapi.js';
import { agentSocketRoutes } from './routes/agent-ws.js';
import { clusterRoutes } from './routes/cluster.js';
import { eventRoutes } from './routes/events.js';
import { jobRoutes } from './routes/jobs.js';
import { nodeRoutes } from './routes/nodes.js';
import { tokenRoutes } from './routes/tokens.js';
import { workloadRoutes } from './routes/workloads.js';
import { maxStreamsFor, StreamSlots } from './stream-slots.js';

export interface AppOptions {
  coordinator: Coordinator;
  auth: Auth;
  logger: Logger;
  /** Largest JSON body accepted (job specs). */
  bodyLimit?: number;
  /** Extra plugins registered after the API (cache, dashboard), given the app. */
  plugins?: ((app: FastifyInstance) => Promise<void>)[];
  /** The coordinator's version, shown in the OpenAPI document. */
  version?: string;
  /** Serve HTTPS with this certificate chain and key (PEM); agents then use https:// and wss://. */
  tls?: { cert: Buffer; key: Buffer };
  /** Extra fields for /api/cluster/status (cache key, …). */
  statusExtra?: () => Promise<Record<string, unknown>>;
  /**
   * Host names an open API (no client token) answers besides IP addresses and `localhost`: the
   * advertise URL's, the listen address's, this machine's (see hostServesOpenApi).
   */
  openHosts?: readonly string[];
  /** Connections taken at once; default: as the open-file limit allows (maxConnectionsFor). */
  maxConnections?: number;
  /** Connections taken from one client address (MXC_MAX_CONNECTIONS_PER_ADDRESS); default half the above. */
  maxConnectionsPerAddress?: number;
}

/** One route of the app with the access it needs (for tests and audits of the route table). */
export interface RouteEntry {
  method: string;
  url: string;
  access: Access;
}

const routeTables = new WeakMap<FastifyInstance, RouteEntry[]>();

/** Every route of an app built by `buildApp`, with the access each needs. */
export function routeTableOf(app: FastifyInstance): RouteEntry[] {
  return routeTables.get(app) ?? [];
}

const SAFE_METHODS = new Set(['GET', 'HEAD', 'OPTIONS']);

/**
 * Longest path parameter the router takes (fastify's default, 100, refused a workload of a job named
 * with more than ~85 characters and most job keys): a job key is four names of up to 128 characters
 * (521 with its slashes escaped), a node name up to 253.
 */
export const MAX_PATH_PARAM_CHARS = 1024;

/**
 * A state-changing request a browser could have been tricked into sending: one whose credential the
 * browser adds by itself (open mode: none; a `?token=` in the URL; Basic credentials it keeps) from a
 * page of another origin. A WebSocket handshake is a GET, but a browser opens one from any page with
 * no CORS check, and the agent socket acts: an open API's agent socket joined a page of any web site
 * as an agent.
 */
function crossSite(req: FastifyRequest): boolean {
  if (SAFE_METHODS.has(req.method) && req.headers.upgrade === undefined) return false;
  // Basic credentials a browser keeps and adds by itself (a user who opened the cache with its token
  // as the password); a Bearer header only a script that holds the token can set.
  if (req.headers.authorization?.startsWith('Bearer ')) return false;
  if (req.headers['sec-fetch-site'] === 'cross-site') return true;
  const origin = req.headers.origin;
  if (origin === undefined) return false;
  try {
    return new URL(origin).host !== req.headers.host;
  } catch {
    return true;
  }
}

/**
 * Whether a request's Host header may reach an open API (no client token, so every caller is admin):
 * an IP address, `localhost` (and `*.localhost`), or one of `names`. A page on a domain its owner
 * points at 127.0.0.1 after loading (DNS rebinding) reaches a loopback-only coordinator from the
 * user's own browser, same-origin as far as the browser knows; its Host is still that domain. A
 * request without a Host (HTTP/1.0, not a browser) passes.
 */
export function hostServesOpenApi(host: string | undefined, names: ReadonlySet<string>): boolean {
  if (host === undefined) return true;
  let name: string;
  try {
    name = new URL(`http://${host}`).hostname.toLowerCase();
  } catch {
    return false;
  }
  if (name.endsWith('.')) name = name.slice(0, -1);
  if (name.startsWith('[') || isIP(name) !== 0) return true;
  return name === 'localhost' || name.endsWith('.localhost') || names.has(name);
}

/** How long a client may take to send a request's headers. */
export const HEADERS_TIMEOUT_MS = 10_000;
/**
 * How long a whole request may take to arrive (fastify's default, 0, is none): a backstop for slow
 * bodies on routes that take them, all behind a token; long, as a batch upload of 256 MiB of NARs
 * over a slow link is a legitimate request.
 */
export const REQUEST_TIMEOUT_MS = 30 * 60_000;
/**
 * How long a kept-alive connection stays open with no request (Node's default). fastify's 72 s let one
 * public request a minute hold a connection forever, and enough of them every connection there is.
 * Agent sockets and streams (events, followed logs) are not idle and stay.
 */
export const KEEP_ALIVE_TIMEOUT_MS = 5000;
const SERVER_TIMEOUTS = {
  headersTimeout: HEADERS_TIMEOUT_MS,
  requestTimeout: REQUEST_TIMEOUT_MS,
  keepAliveTimeout: KEEP_ALIVE_TIMEOUT_MS,
  // Node checks both every 30 s by default, so a slow client kept its connection up to 40 s.
  connectionsCheckingInterval: 1000,
};

/** This process's soft limit of open files (/proc/self/limits), or 1024 when it cannot be read. */
export function openFileLimit(): number {
  try {
    const line = readFileSync('/proc/self/limits', 'utf8')
      .split('\n')
      .find((l) => l.startsWith('Max open files'));
    const soft = line?.slice('Max open files'.length).trim().split(/\s+/)[0];
    if (soft === 'unlimited') return 1 << 20;
    const n = Number(soft);
    return Number.isInteger(n) && n > 0 ? n : 1024;
  } catch {
    return 1024;
  }
}

/** Connections the API takes with `fdLimit` descriptors: an eighth of them (at least 256) kept for the rest. */
export function maxConnectionsFor(fdLimit: number): number {
  return Math.max(64, fdLimit - Math.max(256, Math.floor(fdLimit / 8)));
}

/**
 * A connection that has not yet sent a whole request is kept at least this long before another may
 * take its place (a client's headers are on their way); one that was answered and sits idle, kept
 * alive, may go at once.
 */
const FRESH_KEPT_MS = 1000;
/** Waiting connections looked at for one to close, oldest first, before a new one is refused. */
const EVICTION_SCAN = 64;
/** Past the limit, connections the kernel hands over before ours is enforced (closed at once). */
const ACCEPT_SLACK = 64;
/** While connections are being refused, the log says so at most this often. */
const REFUSED_LOG_MS = 10_000;

/** What the guard knows of a connection: since when it waits for a request, and whether it had one. */
interface Waiting {
  socket: Socket;
  since: number;
  served: boolean;
}

/**
 * A connection's key: its peer's address and port, the same for the TCP socket the server accepts and
 * the TLS socket a request of an https coordinator comes on.
 */
const keyOf = (socket: { remoteAddress?: string; remotePort?: number }) =>
  `${socket.remoteAddress ?? ''}|${socket.remotePort ?? ''}`;

/**
 * Caps the server's connections, in all and per client address, without letting connections that do
 * nothing lock everyone out. A connection either serves a request (its headers are in: handled,
 * streaming, or an agent's WebSocket) or waits for one: new and silent, sending its headers slowly, or
 * idle after an answer. When the limit (or the address's share) is reached, a new connection takes the
 * place of the one that has waited longest (a new one after FRESH_KEPT_MS, an idle one at once); when
 * none may go, the new one is refused. Requests in flight, agent sockets and event streams never go.
 * Refusals and closings are logged, at most every REFUSED_LOG_MS, with their counts.
 */
function guardConnections(server: Server, log: FastifyBaseLogger, limit: number, perAddress: number): void {
  // The kernel's accept stays open a little past the limit: this guard decides who stays.
  server.maxConnections = limit + ACCEPT_SLACK;
  let open = 0;
  /** The connections open, by key (see keyOf). */
  const sockets = new Map<string, Socket>();
  /** Waiting connections by key, in the order they began to wait (a Map keeps insertion order). */
  const waiting = new Map<string, Waiting>();
  const waitingAt = new Map<string, Map<string, Waiting>>();
  const openAt = new Map<string, number>();
  const counts = { refusedAtLimit: 0, refusedPerAddress: 0, closedWaiting: 0 };
  let loggedAt = Number.NEGATIVE_INFINITY;
  const report = () => {
    const now = performance.now();
    if (now - loggedAt < REFUSED_LOG_MS) return;
    loggedAt = now;
    log.warn(
      { ...counts, maxConnections: limit, maxConnectionsPerAddress: perAddress, open },
      'connections refused or closed: the coordinator is at its connection limit, or a client address at its own',
    );
    counts.refusedAtLimit = 0;
    counts.refusedPerAddress = 0;
    counts.closedWaiting = 0;
  };
  const stopWaiting = (key: string, address: string) => {
    waiting.delete(key);
    const mine = waitingAt.get(address);
    mine?.delete(key);
    if (mine?.size === 0) waitingAt.delete(address);
  };
  const startWaiting = (key: string, address: string, served: boolean) => {
    const socket = sockets.get(key);
    if (!socket || socket.destroyed) return;
    stopWaiting(key, address);
    const w = { socket, since: performance.now(), served };
    let mine = waitingAt.get(address);
    if (!mine) {
      mine = new Map();
      waitingAt.set(address, mine);
    }
    waiting.set(key, w);
    mine.set(key, w);
  };
  /** Closes the connection of `among` that has waited longest and may go; false when none may. */
  const closeOneWaiting = (among: Map<string, Waiting> | undefined): boolean => {
    if (!among) return false;
    const now = performance.now();
    let looked = 0;
    for (const [key, w] of among) {
      if (looked++ >= EVICTION_SCAN) break;
      if (!w.served && now - w.since < FRESH_KEPT_MS) continue;
      stopWaiting(key, w.socket.remoteAddress ?? '');
      w.socket.destroy();
      counts.closedWaiting++;
      return true;
    }
    return false;
  };
  server.on('drop', () => {
    counts.refusedAtLimit++;
    report();
  });
  // Ahead of the HTTP server's own listener: a refused connection never reaches it.
  server.prependListener('connection', (socket: Socket) => {
    const address = socket.remoteAddress ?? '';
    const key = keyOf(socket);
    if (open >= limit && !closeOneWaiting(waiting)) {
      counts.refusedAtLimit++;
      socket.destroy();
      report();
      return;
    }
    if ((openAt.get(address) ?? 0) >= perAddress && !closeOneWaiting(waitingAt.get(address))) {
      counts.refusedPerAddress++;
      socket.destroy();
      report();
      return;
    }
    open++;
    openAt.set(address, (openAt.get(address) ?? 0) + 1);
    sockets.set(key, socket);
    startWaiting(key, address, false);
    socket.once('close', () => {
      open--;
      const left = (openAt.get(address) ?? 1) - 1;
      if (left === 0) openAt.delete(address);
      else openAt.set(address, left);
      if (sockets.get(key) === socket) sockets.delete(key);
      stopWaiting(key, address);
    });
  });
  // A request's headers are in: the connection serves until its answer is sent, then waits again.
  server.on('request', (req: IncomingMessage, res: ServerResponse) => {
    const key = keyOf(req.socket);
    const address = req.socket.remoteAddress ?? '';
    stopWaiting(key, address);
    res.once('finish', () => startWaiting(key, address, true));
  });
  // An agent's WebSocket (or any upgrade) serves for as long as it is open.
  server.on('upgrade', (req: IncomingMessage) =>
    stopWaiting(keyOf(req.socket), req.socket.remoteAddress ?? ''),
  );
}

export async function buildApp(opts: AppOptions): Promise<FastifyInstance> {
  const openHosts = new Set((opts.openHosts ?? []).map((h) => h.toLowerCase()));
  const app = Fastify({
    loggerInstance: opts.logger as FastifyBaseLogger,
    bodyLimit: opts.bodyLimit ?? 4 * 1024 * 1024,
    // Requests are not logged one by one (agents poll and heartbeat); errors are.
    logController: new LogController({ disableRequestLogging: true }),
    // Live streams (events, followed logs) must not hold a shutdown open.
    forceCloseConnections: true,
    routerOptions: { maxParamLength: MAX_PATH_PARAM_CHARS },
    // What the router refuses before any route runs is coded like every other error.
    frameworkErrors: (err, _req, res) => {
      const tooLong = err.code === 'FST_ERR_MAX_PARAM_LENGTH';
      const reply = res as unknown as FastifyReply;
      return reply.status(tooLong ? 414 : 400).send({
        error: tooLong
          ? {
              code: 'URL_TOO_LONG',
              message: `a path parameter is longer than ${MAX_PATH_PARAM_CHARS} characters`,
            }
          : { code: 'BAD_URL', message: err.message },
      });
    },
    // What Node's HTTP parser refuses (headers over 16 KiB, a malformed request line) never reaches a
    // route: it is answered here, coded like every other error, and the connection closed.
    clientErrorHandler: (err, socket) => {
      const e = err as NodeJS.ErrnoException;
      if (e.code === 'ECONNRESET' || socket.destroyed || !socket.writable) {
        socket.destroy();
        return;
      }
      const [status, code, message] =
        e.code === 'HPE_HEADER_OVERFLOW'
          ? [
              '431 Request Header Fields Too Large',
              'HEADERS_TOO_LARGE',
              'the request line and headers exceed 16 KiB',
            ]
          : e.code === 'ERR_HTTP_REQUEST_TIMEOUT'
            ? [
                '408 Request Timeout',
                'REQUEST_TIMEOUT',
                `the request's headers took over ${HEADERS_TIMEOUT_MS} ms`,
              ]
            : ['400 Bad Request', 'BAD_REQUEST', `the request could not be parsed (${e.code ?? 'bad HTTP'})`];
      const body = JSON.stringify({ error: { code, message } });
      socket.end(
        `HTTP/1.1 ${status}\r\nContent-Type: application/json; charset=utf-8\r\n` +
          `Content-Length: ${Buffer.byteLength(body)}\r\nConnection: close\r\n\r\n${body}`,
      );
    },
    http: SERVER_TIMEOUTS,
    requestTimeout: REQUEST_TIMEOUT_MS,
    keepAliveTimeout: KEEP_ALIVE_TIMEOUT_MS,
    // TLS through a server factory keeps the app's types those of a plain HTTP server.
    ...(opts.tls
      ? {
          serverFactory: (handler: (req: IncomingMessage, res: ServerResponse) => void) =>
            createHttpsServer(
              { cert: opts.tls!.cert, key: opts.tls!.key, ...SERVER_TIMEOUTS },
              handler,
            ) as unknown as Server,
        }
      : {}),
  });
  // A client that opens connections and never finishes its headers held each for Node's 60 s, and
  // ~20,000 of them took every file descriptor, the database's connections included: headers get 10 s,
  // and connections past what the descriptors allow (leaving room for the database, files and the
  // cache) are refused as they come instead of starving the coordinator.
  // Idle kept-alive connections go after 5 s, and first when connections run short; one address may
  // hold at most its share (half by default: agents behind one NAT share an address).
  app.server.keepAliveTimeout = KEEP_ALIVE_TIMEOUT_MS;
  const limit = opts.maxConnections ?? maxConnectionsFor(openFileLimit());
  guardConnections(
    app.server,
    app.log,
    limit,
    opts.maxConnectionsPerAddress ?? Math.max(1, Math.floor(limit / 2)),
  );
  // Event streams and followed logs never give their connection up: a bound per token and in all.
  const streams = new StreamSlots(maxStreamsFor(limit));
  installErrorHandler(app);
  await installContract(app, opts.version ?? '0.0.0');

  // Access is decided on the route fastify matched (its config), never on the URL text: fastify decodes
  // and normalises paths, so any test of `req.url` can be walked around (`/%61pi/…`).
  const routeTable: RouteEntry[] = [];
  app.addHook('onRoute', (r) => {
    for (const method of [r.method].flat()) {
      routeTable.push({ method, url: r.url, access: routeAccess(method, r.config?.access) });
    }
  });
  app.decorateRequest('principal', null);
  /**
   * A refused request's connection ends with its answer: its body is never read (sent a byte at a
   * time it held the connection), and an upgrade's socket, which the HTTP parser no longer owns, is
   * destroyed once the answer is written (a refused upgrade otherwise stayed open for minutes).
   */
  const endWithAnswer = (req: FastifyRequest, reply: FastifyReply) => {
    reply.header('connection', 'close');
    if (req.headers.upgrade) reply.raw.once('finish', () => req.raw.socket?.destroy());
  };
  // Callback hooks, not async ones: every request passes here (each narinfo GET of a substitution), and
  // an async hook costs a promise and its resolution per request.
  app.addHook('onRequest', (req, reply, done) => {
    // A body where no route, only a public one, or a GET takes none is refused before it is read, token
    // or not: sent a byte at a time it held the connection up to the request timeout, and enough of
    // them, without any token, every connection the coordinator would take.
    const url = req.routeOptions.url;
    const body =
      req.headers['transfer-encoding'] !== undefined || Number(req.headers['content-length'] ?? 0) > 0;
    if (
      body &&
      (url === undefined || req.routeOptions.config.access === 'public' || SAFE_METHODS.has(req.method))
    ) {
      endWithAnswer(req, reply);
      return done(
        url === undefined
          ? new MxcError('NOT_FOUND', 404, noRoute(req.method, req.url))
          : new MxcError('BODY_NOT_ALLOWED', 400, `${req.method} ${url} takes no request body`),
      );
    }
    // No route matched: the not-found handler answers, and it reveals nothing.
    if (url === undefined) return done();
    const access = routeAccess(req.method, req.routeOptions.config.access);
    const principal = opts.auth.identify(req);
    req.principal = principal;
    if (!allows(principal, access)) {
      const cache = url.startsWith('/cache/') || url.startsWith('/api/cache/');
      endWithAnswer(req, reply);
      return done(refusal(principal, access, cache));
    }
    if (
      access !== 'public' &&
      principal?.kind === 'anonymous' &&
      !hostServesOpenApi(req.headers.host, openHosts)
    ) {
      endWithAnswer(req, reply);
      return done(
        new MxcError(
          'HOST_NOT_ALLOWED',
          403,
          `this coordinator's API is open (no client token), so it answers only requests addressed to it by an IP address, localhost or its own names, not "${req.headers.host}": create a token (mxc tokens create) or set --advertise-url to the name clients use`,
        ),
      );
    }
    if (access !== 'public' && crossSite(req)) {
      endWithAnswer(req, reply);
      return done(
        new MxcError(
          'CROSS_SITE',
          403,
          `a ${req.method} from origin ${req.headers.origin ?? '(cross-site)'} is refused: state-changing requests come from the CLI or the dashboard on this coordinator's own origin`,
        ),
      );
    }
    // Only the agent socket is a WebSocket. An upgrade of any other route was switched (101) and then
    // closed by a close handshake the client need never answer: 30 s a connection, counted as serving
    // (never given up for another), and reachable without a token on the public routes (/healthz, /).
    if (req.headers.upgrade !== undefined && req.routeOptions.config.access !== 'agent-socket') {
      endWithAnswer(req, reply);
      return done(new MxcError('NOT_A_WEBSOCKET', 400, `${req.method} ${url} is not a WebSocket`));
    }
    // A revoked token's open streams (events, followed logs, NAR downloads) end at once, not when the
    // client leaves. Only responses already streaming are cut: an answer being computed finishes.
    if (access !== 'public' && access !== 'agent-socket') opts.auth.watch(req, reply.raw);
    done();
  });

  // A frame is parsed in one go: its size bounds how long one agent message can hold the event loop
  // (a hello of 20,000 store paths is about 1.5 MiB; log batches stay far below).
  // NUL bytes and lone surrogates anywhere in the input are a coded 400, before any handler.
  app.addHook('preValidation', (req, _reply, done) => {
    let found = findBadText(req.params);
    if (found) return done(badTextError('the URL', found));
    found = findBadText(req.query);
    if (found) return done(badTextError('the query', found));
    found = req.body === undefined ? null : findBadText(req.body);
    if (found) return done(badTextError('the body', found));
    const crowded = req.body === undefined ? null : findCrowdedObject(req.body);
    if (crowded) return done(crowdedObjectError('the body', crowded));
    done();
  });

  await app.register(websocket, { options: { maxPayload: MAX_AGENT_MESSAGE_BYTES } });
  documentWebSockets(app);

  await app.register(agentSocketRoutes, { coordinator: opts.coordinator, auth: opts.auth });
  await app.register(tokenRoutes, { auth: opts.auth, db: opts.coordinator.db });
  await app.register(jobRoutes, { coordinator: opts.coordinator });
  await app.register(workloadRoutes, { coordinator: opts.coordinator, streams });
  await app.register(nodeRoutes, { coordinator: opts.coordinator });
  await app.register(clusterRoutes, { coordinator: opts.coordinator, extra: opts.statusExtra });
  await app.register(eventRoutes, { coordinator: opts.coordinator, streams });
  await app.register(openApiRoutes);
  for (const p of opts.plugins ?? []) await p(app);
  routeTables.set(app, routeTable);
  return app;
}
