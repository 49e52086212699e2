/**
 * The agent's WebSocket to a coordinator: picks one from its list (or DNS), connects and fails over
 * to the next (backoff with jitter), says hello with its node secret, heartbeats, pings to notice a
 * frozen coordinator, parses what the coordinator sends, and batches workload log lines to it.
 */
import { randomBytes } from 'node:crypto';
import { readFile, rename, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import type { Logger } from 'pino';
import WebSocket from 'ws';
import { FailureStreak } from '../lib/failure-streak.js';
import {
  CoordinatorMessage,
  LOG_STREAM_HEADER,
  type LogLine,
  MAX_AGENT_MESSAGE_BYTES,
  MAX_LOG_LINES_PER_MESSAGE,
  MAX_STORE_PATHS_PER_MESSAGE,
  type WorkloadStatus,
} from '../spec/messages.js';
import { fetchCacheTrust } from './cache-trust.js';
import { detectCapabilities, detectResources } from './capabilities.js';
import { parseCoordinators, resolveCoordinators, shuffle } from './coordinators.js';
import { LogBuffer, logFrames } from './log-buffer.js';
import type { AgentOptions } from './options.js';
import type { CacheTrust } from './realise.js';
import { bubblewrapAvailable } from './sandbox.js';
import { listStorePaths } from './store-report.js';
import { AGENT_VERSION } from './version.js';

export interface ConnectionOptions {
  agent: AgentOptions;
  name: string;
  log: Logger;
  /** What the agent runs now, for the hello (the coordinator reconciles against it). */
  running: () => { workload_id: string; status: WorkloadStatus }[];
  /** Whether task limits are enforced with cgroups, for the hello's capabilities. */
  cgroups: () => boolean;
  /** Each valid coordinator message; `welcome` after the heartbeat is set up. */
  onMessage: (msg: CoordinatorMessage) => void;
}

/** Bytes of lines (by lineBytes) in one `logs` message: a quarter of what the coordinator takes. */
const LOG_FRAME_BYTES = MAX_AGENT_MESSAGE_BYTES / 4;
/**
 * Bytes the socket may hold unsent before log lines stop being handed to it: a coordinator slower than
 * a chatty workload then leaves them in the bounded buffer, which drops the oldest and says so.
 */
const LOG_BACKLOG_BYTES = 16 * 1024 * 1024;
/** Messages kept between a socket's opening and its welcome (sent after it, in order). */
const MAX_EARLY_MESSAGES = 10_000;

/**
 * Log lines sent on a socket, kept until the coordinator confirms them: with `log_acks` its `logs_ack`
 * says they are committed; an older coordinator's pong for a ping sent after them says only it read them.
 */
interface UnconfirmedFrame {
  /** The number of the first ping sent after this frame (its pong confirms the frame, without acks). */
  ping: number;
  /** Its number in this agent's log stream: sent again, it keeps it, so it is stored once. */
  seq: number;
  id: string;
  lines: LogLine[];
}

export class CoordinatorConnection {
  private ws: WebSocket | null = null;
  private heartbeat: NodeJS.Timeout | null = null;
  private reconnectTimer: NodeJS.Timeout | null = null;
  private closed = false;
  private trust: CacheTrust | null = null;
  private readonly pendingLogs: LogBuffer;
  private logFlush: NodeJS.Timeout | null = null;
  /**
   * Log frames sent on the joined socket and not yet confirmed: a coordinator killed after reading them
   * (but before its commit), or one that froze or whose host went away, never stores them, and the socket
   * ends with them unconfirmed; they are sent again, before newer lines and under the same numbers, to the
   * next coordinator, which stores them once (see LOG_STREAM_HEADER). A woken one drops them (its socket
   * is superseded by then).
   */
  private unconfirmed: UnconfirmedFrame[] = [];
  private unconfirmedLines = 0;
  /** Frames an ended socket never confirmed, sent first once joined again. */
  private resend: UnconfirmedFrame[] = [];
  /** This agent's log stream (one per process): its log messages are numbered in it. */
  private readonly logStream = randomBytes(12).toString('base64url');
  private nextSeq = 1;
  /** Whether the joined coordinator acknowledges numbered log messages once committed (`log_acks`). */
  private acks = false;
  /** The number the next ping carries (its pong echoes it). */
  private nextPing = 0;
  /**
   * Messages sent while the socket is open but not yet welcomed: the coordinator refuses anything
   * before the hello (HELLO_FIRST), so they go once the welcome came.
   */
  private early: string[] = [];
  private readonly opts: AgentOptions;
  private readonly log: Logger;

  constructor(private readonly c: ConnectionOptions) {
    this.opts = c.agent;
    this.log = c.log;
    this.servers = shuffle(parseCoordinators(c.agent.coordinator));
    if (this.servers.length === 0) throw new Error('no coordinator URL given');
    this.pendingLogs = new LogBuffer(c.agent.logBufferLines);
  }

  /** The cache to realise from and the key to trust, once learnt from the coordinator. */
  get cache(): CacheTrust | null {
    return this.trust;
  }

  /** The coordinators to try, in order (shuffled once; a failed one moves to the end). */
  private servers: string[];
  /**
   * The connections that ended without a welcome since the last one (or since start), the joined one
   * whose end began the streak included: the reconnect backoff grows with them, and a coordinator down
   * for an hour is said once a minute, not at every attempt.
   */
  private readonly unreachable = new FailureStreak();
  /** The socket that got the last welcome. */
  private joinedWs: WebSocket | null = null;
  /** Welcomes received so far (a new session, here or with another coordinator, counts one more). */
  private welcomes = 0;
  private joinWaiters: (() => void)[] = [];
  /** Called at every welcome after they subscribed (onNewSession). */
  private readonly sessionListeners = new Set<() => void>();
  private resolvedAt = 0;
  private lastPong = 0;
  private pinger: NodeJS.Timeout | null = null;

  /** The coordinator this agent talks to now (or tries next). */
  get current(): string {
    return this.servers[0]!;
  }

  private wsUrl() {
    const u = new URL(this.current);
    u.protocol = u.protocol === 'https:' ? 'wss:' : 'ws:';
    u.pathname = '/api/agent/ws';
    return u.toString();
  }

  connect(): void {
    if (this.closed) return;
    void this.discover().finally(() => this.open());
  }

  /** MXC_DNS_QUERY: refresh the list from DNS (at most every 10 s), keeping the static URLs too. */
  private async discover() {
    if (!this.opts.dnsQuery || Date.now() - this.resolvedAt < 10_000) return;
    this.resolvedAt = Date.now();
    try {
      const found = await resolveCoordinators(this.opts.dnsQuery, this.opts.dnsServer);
      const known = new Set(this.servers);
      const fresh = shuffle(found.filter((u) => !known.has(u)));
      const staticUrls = parseCoordinators(this.opts.coordinator);
      // Keep the one we use first; drop DNS-found servers that DNS no longer lists.
      this.servers = [...this.servers.filter((u) => found.includes(u) || staticUrls.includes(u)), ...fresh];
      if (this.servers.length === 0) this.servers = staticUrls;
      this.log.debug({ servers: this.servers }, 'coordinators from DNS');
    } catch (err) {
      this.log.warn(
        { err, query: this.opts.dnsQuery },
        'DNS discovery of coordinators failed; keeping the list',
      );
    }
  }

  private open(): void {
    if (this.closed) return;
    const ws = new WebSocket(this.wsUrl(), {
      headers: {
        ...(this.opts.token ? { authorization: `Bearer ${this.opts.token}` } : {}),
        [LOG_STREAM_HEADER]: this.logStream,
      },
      handshakeTimeout: 10_000,
    });
    this.ws = ws;
    ws.on('pong', (data) => {
      this.lastPong = performance.now();
      if (ws === this.joinedWs && !this.acks) this.confirmLogs(Number(data.toString()));
    });
    ws.on('open', () => {
      this.onOpen(ws).catch((err) => {
        this.log.error({ err }, 'could not introduce the agent to the coordinator; reconnecting');
        ws.close(1011, 'hello failed');
      });
    });
    ws.on('message', (raw) => {
      this.onMessage(raw.toString()).catch((err) =>
        this.log.error({ err }, 'handling a coordinator message failed'),
      );
    });
    ws.on('close', (code, reason) => {
      if (this.ws === ws) {
        this.ws = null;
        // The next hello reports what runs then; log lines wait in their buffer.
        this.early = [];
      }
      if (this.joinedWs === ws) this.requeueUnconfirmed();
      if (this.heartbeat) clearInterval(this.heartbeat);
      this.heartbeat = null;
      if (this.pinger) clearInterval(this.pinger);
      this.pinger = null;
      // This coordinator failed us: the next attempt goes to the next one on the list.
      const coordinator = this.current;
      if (this.servers.length > 1) this.servers.push(this.servers.shift()!);
      if (code === 4401)
        this.log.error(
          'the coordinator refused the agent token; check --token-file / --token (MXC_AGENT_TOKEN_FILE / MXC_AGENT_TOKEN) against the agent tokens the coordinator accepts',
        );
      if (code === 4403)
        this.log.error(
          'the coordinator refused this node identity: another machine joined under this name, or the state directory (node-secret.json) was lost; an operator can remove the node (mxc nodes remove) to let it join again',
        );
      if (!this.closed) {
        this.logDisconnect(coordinator, code, reason.toString(), this.joinedWs === ws);
        this.scheduleReconnect();
      }
    });
    ws.on('error', (err) => this.log.debug({ err }, 'coordinator connection error'));
  }

  /**
   * A joined session's end is a warning; a failed attempt after it is one only once a minute (with how
   * long and how many attempts), the others debug.
   */
  private logDisconnect(coordinator: string, code: number, reason: string, joined: boolean) {
    const now = performance.now();
    if (joined) this.unreachable.ended();
    if (!this.unreachable.failed(now)) {
      this.log.debug({ code, reason, coordinator }, 'connecting to the coordinator failed');
    } else if (this.unreachable.count === 1) {
      this.log.warn(
        { code, reason, coordinator, next: this.current },
        joined ? 'disconnected from coordinator; reconnecting' : 'cannot reach the coordinator; retrying',
      );
    } else {
      this.log.warn(
        {
          coordinator,
          seconds: Math.round((now - this.unreachable.since) / 1000),
          attempts: this.unreachable.count,
        },
        'still no coordinator to join; retrying',
      );
    }
  }

  private scheduleReconnect() {
    if (this.reconnectTimer || this.closed) return;
    // Exponential backoff with full jitter, capped at 10 s; another coordinator on the list is tried
    // at once (within 250 ms), the backoff grows only when a whole round of the list failed.
    const round = Math.floor((this.unreachable.count - 1) / this.servers.length);
    const base = Math.min(10_000, 250 * 2 ** round);
    const delay = Math.random() * base;
    this.reconnectTimer = setTimeout(() => {
      this.reconnectTimer = null;
      this.connect();
    }, delay);
  }

  private async onOpen(ws: WebSocket) {
    const [resources, capabilities] = await Promise.all([
      detectResources(this.opts.stateDir, {
        cpu: this.opts.cpu,
        memory_mb: this.opts.memoryMb,
        disk_mb: this.opts.diskMb,
      }),
      detectCapabilities({
        attributes: this.opts.attributes,
        bubblewrap: bubblewrapAvailable,
        hypervisor: this.opts.microvm?.detect,
        cgroups: this.c.cgroups(),
      }),
    ]);
    // The agent trusts the coordinator's cache key and nothing else.
    const trust = await fetchCacheTrust({ ...this.opts, coordinator: this.current }, this.log);
    if (trust) this.trust = trust;
    const storePaths = await listStorePaths(this.opts.storeRoot);
    const secret = await this.readNodeSecret();
    ws.send(
      JSON.stringify({
        type: 'hello',
        name: this.c.name,
        ...(secret ? { secret } : {}),
        version: AGENT_VERSION,
        resources,
        capabilities,
        running: this.c.running(),
        store_paths: storePaths.slice(0, MAX_STORE_PATHS_PER_MESSAGE),
      }),
    );
    // A large store goes in bounded messages, so no one message holds the coordinator for long.
    for (let i = MAX_STORE_PATHS_PER_MESSAGE; i < storePaths.length; i += MAX_STORE_PATHS_PER_MESSAGE) {
      ws.send(
        JSON.stringify({
          type: 'store_paths',
          added: storePaths.slice(i, i + MAX_STORE_PATHS_PER_MESSAGE),
          removed: [],
        }),
      );
    }
  }

  /** Whether the socket is open and the coordinator welcomed this agent on it. */
  private get joined(): boolean {
    return this.ws !== null && this.ws === this.joinedWs && this.ws.readyState === WebSocket.OPEN;
  }

  /** How many sessions this agent has had: one that ended and another that began say so. */
  get sessions(): number {
    return this.welcomes;
  }

  /** Calls `listener` at each session that begins from now on; returns the function that unsubscribes. */
  onNewSession(listener: () => void): () => void {
    this.sessionListeners.add(listener);
    return () => this.sessionListeners.delete(listener);
  }

  /** Resolves true once joined (at once when joined now), false after `timeoutMs` without. */
  whenJoined(timeoutMs: number): Promise<boolean> {
    if (this.joined) return Promise.resolve(true);
    return new Promise((resolve) => {
      const done = () => {
        clearTimeout(timer);
        resolve(true);
      };
      const timer = setTimeout(() => {
        this.joinWaiters = this.joinWaiters.filter((w) => w !== done);
        resolve(false);
      }, timeoutMs);
      this.joinWaiters.push(done);
    });
  }

  /** Sends a message once joined; between the socket's opening and the welcome it waits (see `early`). */
  send(msg: unknown): void {
    if (this.ws?.readyState !== WebSocket.OPEN) return;
    const text = JSON.stringify(msg);
    if (this.joined) this.ws.send(text);
    else if (this.early.push(text) > MAX_EARLY_MESSAGES) this.early.shift();
  }

  /** Store changes, in messages of bounded size (the coordinator refuses longer lists). */
  sendStorePaths(added: string[], removed: string[]): void {
    const n = MAX_STORE_PATHS_PER_MESSAGE;
    for (let i = 0; i < Math.max(added.length, removed.length); i += n) {
      this.send({ type: 'store_paths', added: added.slice(i, i + n), removed: removed.slice(i, i + n) });
    }
  }

  private async onMessage(raw: string) {
    let msg: CoordinatorMessage;
    try {
      msg = CoordinatorMessage.parse(JSON.parse(raw));
    } catch (err) {
      this.log.error({ err }, 'unreadable message from coordinator');
      return;
    }
    if (msg.type === 'welcome') {
      this.unreachable.ended();
      this.joinedWs = this.ws;
      this.acks = msg.log_acks === true;
      this.watchCoordinator(msg.heartbeat_interval_ms);
      if (msg.node_secret) await this.saveNodeSecret(msg.node_secret);
      if (this.heartbeat) clearInterval(this.heartbeat);
      this.heartbeat = setInterval(() => this.send({ type: 'heartbeat' }), msg.heartbeat_interval_ms);
      const early = this.early;
      this.early = [];
      for (const text of early) this.ws?.send(text);
      this.flushLogs();
      this.welcomes++;
      for (const w of this.joinWaiters.splice(0)) w();
      for (const l of [...this.sessionListeners]) l();
    }
    if (msg.type === 'logs_ack') return this.acknowledged(msg.seq);
    this.c.onMessage(msg);
  }

  /**
   * A coordinator that stops answering (frozen, or its host gone) leaves the socket open: ping it with
   * each heartbeat and move on when no pong came for three intervals (at least 2 s).
   */
  private watchCoordinator(intervalMs: number) {
    if (this.pinger) clearInterval(this.pinger);
    const ws = this.ws;
    if (!ws) return;
    this.lastPong = performance.now();
    const limit = Math.max(2000, intervalMs * 3);
    this.pinger = setInterval(
      () => {
        if (ws.readyState !== WebSocket.OPEN) return;
        if (performance.now() - this.lastPong > limit) {
          this.log.warn(
            { coordinator: this.current, ms: limit },
            'the coordinator stopped answering; trying another',
          );
          ws.terminate();
          return;
        }
        this.ping(ws);
      },
      Math.max(250, Math.min(intervalMs, limit / 3)),
    );
  }

  private get secretFile() {
    return join(this.opts.stateDir, 'node-secret.json');
  }

  /** The node secret issued to this node's name on its first join, if any. */
  private async readNodeSecret(): Promise<string | null> {
    try {
      const saved = JSON.parse(await readFile(this.secretFile, 'utf8')) as { name?: string; secret?: string };
      return saved.name === this.c.name && typeof saved.secret === 'string' ? saved.secret : null;
    } catch {
      return null; // first join
    }
  }

  /** Keeps the node secret owner-readable only; written whole (temp file + rename). */
  private async saveNodeSecret(secret: string) {
    const tmp = `${this.secretFile}.${randomBytes(4).toString('hex')}.tmp`;
    await writeFile(tmp, JSON.stringify({ name: this.c.name, secret }), { mode: 0o600 });
    await rename(tmp, this.secretFile);
    this.log.info('joined for the first time; node secret kept in the state directory');
  }

  queueLog(id: string, line: LogLine): void {
    // The coordinator takes no NUL byte (a frame holding one is refused whole): binary output (`cat
    // /dev/urandom`) lost every line of its frames. Lines are decoded from UTF-8, so no lone surrogate.
    this.pendingLogs.push(
      id,
      line.line.includes('\0') ? { ...line, line: line.line.replaceAll('\0', '\uFFFD') } : line,
    );
    if (this.pendingLogs.size >= MAX_LOG_LINES_PER_MESSAGE || this.pendingLogs.bytes >= LOG_FRAME_BYTES)
      this.flushLogs();
    if (!this.logFlush) this.logFlush = setTimeout(() => this.flushLogs(), 100);
  }

  flushLogs(): void {
    if (this.logFlush) clearTimeout(this.logFlush);
    this.logFlush = null;
    // Away from the coordinator (or before its welcome) the lines wait in the bounded buffer (see
    // log-buffer.ts) and go out once joined.
    if (!this.joined) return;
    if (this.ws!.bufferedAmount > LOG_BACKLOG_BYTES) {
      this.logFlush = setTimeout(() => this.flushLogs(), 100);
      return;
    }
    const ws = this.ws!;
    // What the last coordinator never confirmed goes first, in order, under its numbers.
    const resend = this.resend;
    this.resend = [];
    for (const f of resend) this.sendFrame(f);
    let sent = resend.length > 0;
    // Acknowledged after commits, unconfirmed lines wait on the database: the buffer's bound holds them
    // back meanwhile (its oldest are dropped, and said so), and the next acknowledgement flushes.
    if (!this.acks || this.unconfirmedLines < this.pendingLogs.maxLines) {
      for (const [id, lines] of this.pendingLogs.drain()) {
        for (const frame of logFrames(lines, MAX_LOG_LINES_PER_MESSAGE, LOG_FRAME_BYTES)) {
          this.sendFrame({ ping: 0, seq: this.nextSeq++, id, lines: frame });
          sent = true;
        }
      }
    }
    if (!sent || this.acks) return;
    // Kept within the buffer's bound: past it the oldest are taken as read (a pong is due by then).
    while (this.unconfirmedLines > this.pendingLogs.maxLines && this.unconfirmed.length > 1)
      this.unconfirmedLines -= this.unconfirmed.shift()!.lines.length;
    this.ping(ws);
  }

  /** Sends a log frame on the joined socket and keeps it until confirmed; numbered for a coordinator that acknowledges. */
  private sendFrame(f: UnconfirmedFrame) {
    f.ping = this.nextPing;
    this.send({ type: 'logs', workload_id: f.id, lines: f.lines, ...(this.acks ? { seq: f.seq } : {}) });
    this.unconfirmed.push(f);
    this.unconfirmedLines += f.lines.length;
  }

  /** `logs_ack`: every numbered frame up to `seq` is committed. */
  private acknowledged(seq: number) {
    while (this.unconfirmed.length > 0 && this.unconfirmed[0]!.seq <= seq)
      this.unconfirmedLines -= this.unconfirmed.shift()!.lines.length;
    if (this.pendingLogs.size > 0 && this.unconfirmedLines < this.pendingLogs.maxLines) this.flushLogs();
  }

  /** Pings the coordinator; the pong echoes the ping's number, confirming what was sent before it. */
  private ping(ws: WebSocket) {
    ws.ping(String(this.nextPing++));
  }

  /** The pong of ping `n`: the coordinator has read every frame sent before it. */
  private confirmLogs(n: number) {
    if (!Number.isInteger(n)) return;
    while (this.unconfirmed.length > 0 && this.unconfirmed[0]!.ping <= n)
      this.unconfirmedLines -= this.unconfirmed.shift()!.lines.length;
  }

  /** The joined socket ended: what it never confirmed goes to the next coordinator, in order, first. */
  private requeueUnconfirmed() {
    const frames = this.unconfirmed;
    this.unconfirmed = [];
    this.unconfirmedLines = 0;
    this.resend.push(...frames);
    if (frames.length > 0)
      this.log.debug({ frames: frames.length }, 'log lines the coordinator did not confirm are sent again');
  }

  /**
   * Stops reconnecting, sends what logs are pending and closes the socket. With `goodbye` (the agent
   * stops its workloads) it says so first, so the coordinator replaces them at once.
   */
  close(opts: { goodbye?: boolean } = {}): void {
    this.closed = true;
    if (this.reconnectTimer) clearTimeout(this.reconnectTimer);
    if (this.pinger) clearInterval(this.pinger);
    this.flushLogs();
    if (opts.goodbye && this.ws?.readyState === WebSocket.OPEN) this.send({ type: 'goodbye' });
    if (this.heartbeat) clearInterval(this.heartbeat);
    const ws = this.ws;
    this.ws = null;
    ws?.close(1000, 'agent shutting down');
  }
}
