/**
 * A protocol-level agent: a real WebSocket client speaking the agent protocol, which runs nothing.
 * Used to test the coordinator's scheduling and lifecycle with many nodes; real agents are tested end to end.
 */
import WebSocket from 'ws';
import type { CoordinatorMessage } from '../../spec/messages.js';

export interface ProtocolAgentOptions {
  url: string;
  name: string;
  token?: string;
  cpu?: number;
  memory_mb?: number;
  isolation?: ('process' | 'sandbox' | 'microvm')[];
  attributes?: Record<string, string>;
  /** Report `running` as soon as a start arrives (default true). */
  autoRun?: boolean;
  /** Decides what to report for a start (default: running when autoRun). */
  onStart?: (m: Extract<CoordinatorMessage, { type: 'start' }>) => 'running' | 'failed' | null;
  heartbeat?: boolean;
  /**
   * The node secret to present; default: the one this process was issued for this name, like a real
   * agent keeping it in its state directory. `null` presents none.
   */
  secret?: string | null;
  /** Further headers of the upgrade request (a log stream, say). */
  headers?: Record<string, string>;
}

/** What a node offering nothing but plain processes reports (no nix, bubblewrap, QEMU or cgroups). */
export const PLAIN_CAPABILITIES = {
  os: 'linux',
  arch: 'x64',
  nix: null,
  bubblewrap: false,
  qemu: false,
  kvm: false,
  cgroups: false,
  isolation: ['process' as const],
  attributes: {},
};

/** A raw agent hello for tests that send frames themselves; `extra` adds or overrides fields. */
export const helloFrame = (name: string, extra: Record<string, unknown> = {}) => ({
  type: 'hello',
  name,
  version: 't',
  resources: { cpu: 1, memory_mb: 512, disk_mb: 1000 },
  capabilities: PLAIN_CAPABILITIES,
  ...extra,
});

/** Node secrets issued to protocol agents in this process, by node name (a real agent's state dir). */
const issuedSecrets = new Map<string, string>();

export class ProtocolAgent {
  ws!: WebSocket;
  nodeId = '';
  readonly received: CoordinatorMessage[] = [];
  readonly running = new Set<string>();
  private timer: NodeJS.Timeout | null = null;
  private waiters: (() => void)[] = [];

  constructor(readonly opts: ProtocolAgentOptions) {}

  async connect(running: string[] = []): Promise<this> {
    const u = new URL(this.opts.url);
    u.protocol = 'ws:';
    u.pathname = '/api/agent/ws';
    this.ws = new WebSocket(u, {
      headers: {
        ...(this.opts.token ? { authorization: `Bearer ${this.opts.token}` } : {}),
        ...this.opts.headers,
      },
    });
    await new Promise<void>((resolve, reject) => {
      this.ws.once('open', () => resolve());
      this.ws.once('error', reject);
    });
    this.ws.on('message', (raw) => this.onMessage(JSON.parse(raw.toString()) as CoordinatorMessage));
    const secret = this.opts.secret === undefined ? issuedSecrets.get(this.opts.name) : this.opts.secret;
    this.send({
      type: 'hello',
      name: this.opts.name,
      ...(secret ? { secret } : {}),
      version: 'test',
      resources: { cpu: this.opts.cpu ?? 4, memory_mb: this.opts.memory_mb ?? 4096, disk_mb: 100_000 },
      capabilities: {
        os: 'linux',
        arch: 'x64',
        nix: '2.8',
        bubblewrap: true,
        qemu: false,
        kvm: false,
        cgroups: false,
        isolation: this.opts.isolation ?? ['process', 'sandbox'],
        attributes: this.opts.attributes ?? {},
      },
      running: running.map((id) => ({ workload_id: id, status: 'running' })),
    });
    await Promise.race([
      this.waitFor((m) => m.type === 'welcome'),
      new Promise((_, reject) =>
        this.ws.once('close', (code, reason) =>
          reject(new Error(`closed by coordinator: ${code} ${reason.toString()}`)),
        ),
      ),
    ]);
    return this;
  }

  send(msg: unknown) {
    this.ws.send(JSON.stringify(msg));
  }

  private onMessage(m: CoordinatorMessage) {
    this.received.push(m);
    if (m.type === 'welcome') {
      this.nodeId = m.node_id;
      if (m.node_secret) issuedSecrets.set(this.opts.name, m.node_secret);
      if (this.opts.heartbeat !== false) {
        this.timer = setInterval(() => this.send({ type: 'heartbeat' }), m.heartbeat_interval_ms);
      }
    }
    if (m.type === 'start') {
      const verdict = this.opts.onStart
        ? this.opts.onStart(m)
        : this.opts.autoRun !== false
          ? 'running'
          : null;
      if (verdict) {
        this.send({ type: 'workload_status', workload_id: m.workload.id, status: 'running' });
        if (verdict === 'running') this.running.add(m.workload.id);
        else
          this.send({
            type: 'workload_status',
            workload_id: m.workload.id,
            status: 'failed',
            reason: 'it broke',
          });
      }
    }
    if (m.type === 'stop') {
      this.running.delete(m.workload_id);
      this.send({
        type: 'workload_status',
        workload_id: m.workload_id,
        status: 'stopped',
        reason: 'stopped',
      });
    }
    for (const w of this.waiters.splice(0)) w();
  }

  /** Resolves with the first received message (past or future) matching `pred`. */
  async waitFor(pred: (m: CoordinatorMessage) => boolean, timeoutMs = 10_000): Promise<CoordinatorMessage> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const hit = this.received.find(pred);
      if (hit) return hit;
      if (Date.now() > deadline)
        throw new Error(`${this.opts.name}: no matching message within ${timeoutMs} ms`);
      await new Promise<void>((r) => {
        this.waiters.push(r);
        setTimeout(r, 100);
      });
    }
  }

  stopHeartbeats() {
    if (this.timer) clearInterval(this.timer);
    this.timer = null;
  }

  close() {
    this.stopHeartbeats();
    this.ws.close();
  }
}

/** Polls `fn` until it returns a truthy value. */
export async function eventually<T>(
  fn: () => Promise<T | null | undefined | false>,
  timeoutMs = 10_000,
  what = 'condition',
): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  let last: unknown;
  for (;;) {
    try {
      const v = await fn();
      if (v) return v;
    } catch (err) {
      last = err;
    }
    if (Date.now() > deadline)
      throw new Error(`timed out waiting for ${what}${last ? `: ${String(last)}` : ''}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}
