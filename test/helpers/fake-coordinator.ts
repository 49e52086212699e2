/**
 * The coordinator's side of the agent protocol, scripted by the test: a real WebSocket server at
 * /api/agent/ws that welcomes a real Agent and lets the test send it any message (two starts back to
 * back, a stop) and read what it answers. Used where the real coordinator would never send the message.
 */
import { createServer, type IncomingHttpHeaders, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import WebSocket, { WebSocketServer } from 'ws';
import type { AgentMessage, CoordinatorMessage } from '../../spec/messages.js';

export class FakeCoordinator {
  readonly received: AgentMessage[] = [];
  /** The upgrade request's headers of each connection, in order. */
  readonly upgrades: IncomingHttpHeaders[] = [];
  private socket: WebSocket | null = null;
  private constructor(
    private readonly http: Server,
    private readonly wss: WebSocketServer,
    readonly url: string,
    welcome: { log_acks?: true },
  ) {
    wss.on('connection', (ws, req) => {
      this.socket = ws;
      this.upgrades.push(req.headers);
      ws.on('message', (raw) => {
        const m = JSON.parse(raw.toString()) as AgentMessage;
        this.received.push(m);
        if (m.type === 'hello')
          this.send({ type: 'welcome', node_id: 'n-fake', heartbeat_interval_ms: 1000, ...welcome });
      });
    });
  }

  /**
   * Listens on an ephemeral loopback port; every other HTTP route answers 404 (no cache key to trust).
   * `welcome` adds to each welcome (`log_acks`: a coordinator that acknowledges numbered log messages).
   */
  static async start(welcome: { log_acks?: true } = {}): Promise<FakeCoordinator> {
    const http = createServer((_req, res) => {
      res.statusCode = 404;
      res.end();
    });
    const wss = new WebSocketServer({ server: http, path: '/api/agent/ws' });
    await new Promise<void>((r) => http.listen(0, '127.0.0.1', r));
    const { port } = http.address() as AddressInfo;
    return new FakeCoordinator(http, wss, `http://127.0.0.1:${port}`, welcome);
  }

  send(msg: CoordinatorMessage): void {
    if (this.socket?.readyState !== WebSocket.OPEN) throw new Error('no agent is connected');
    this.socket.send(JSON.stringify(msg));
  }

  /** The workload_status messages received for `id`, in order. */
  statuses(id: string): Extract<AgentMessage, { type: 'workload_status' }>[] {
    return this.received.filter(
      (m): m is Extract<AgentMessage, { type: 'workload_status' }> =>
        m.type === 'workload_status' && m.workload_id === id,
    );
  }

  /** Ends the agent's socket at once, as a killed coordinator's host does (it reconnects here). */
  dropAgent(): void {
    this.socket?.terminate();
  }

  async close(): Promise<void> {
    for (const c of this.wss.clients) c.terminate();
    await new Promise((r) => this.wss.close(r));
    await new Promise((r) => this.http.close(r));
  }
}
