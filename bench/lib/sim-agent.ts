/**
 * A lean simulated agent: one real WebSocket speaking the agent protocol (hello, heartbeats,
 * workload_status), running nothing. Cheap enough for thousands per process; what it receives is
 * handed to callbacks rather than kept.
 */
import WebSocket from 'ws';

export interface StartInfo {
  workloadId: string;
  jobId: string;
  jobName: string;
}

export interface SimAgentOptions {
  url: string;
  name: string;
  token?: string;
  cpu: number;
  memoryMb: number;
  /** Heartbeat period; default: what the coordinator's welcome asks for. */
  heartbeatMs?: number;
  /** Answer each start with `running`, as a real agent would (more load on the coordinator). */
  autoRun?: boolean;
  /** Called with the receive time (performance.now()) of each start. */
  onStart?: (s: StartInfo, atMs: number) => void;
  connectTimeoutMs?: number;
}

export class SimAgent {
  ws: WebSocket | null = null;
  nodeId = '';
  /** Epoch ms of the last heartbeat sent (0 before the first). */
  lastHeartbeatAt = 0;
  starts = 0;
  private timer: NodeJS.Timeout | null = null;

  constructor(readonly opts: SimAgentOptions) {}

  /** Opens the socket, says hello and resolves on `welcome`; rejects on close, error or timeout. */
  connect(): Promise<void> {
    const u = new URL(this.opts.url);
    u.protocol = u.protocol === 'https:' ? 'wss:' : 'ws:';
    u.pathname = '/api/agent/ws';
    const ws = new WebSocket(u, {
      headers: this.opts.token ? { authorization: `Bearer ${this.opts.token}` } : {},
      perMessageDeflate: false,
    });
    this.ws = ws;
    return new Promise<void>((resolve, reject) => {
      let welcomed = false;
      const timeout = setTimeout(() => {
        ws.terminate();
        reject(new Error(`${this.opts.name}: no welcome within ${this.opts.connectTimeoutMs ?? 60_000} ms`));
      }, this.opts.connectTimeoutMs ?? 60_000);
      ws.once('open', () => ws.send(JSON.stringify(this.hello())));
      ws.once('error', (err) => {
        clearTimeout(timeout);
        if (!welcomed) reject(new Error(`${this.opts.name}: ${err.message}`, { cause: err }));
      });
      ws.once('close', (code, reason) => {
        clearTimeout(timeout);
        this.stopHeartbeats();
        if (!welcomed) reject(new Error(`${this.opts.name}: closed by coordinator: ${code} ${reason}`));
      });
      ws.on('message', (raw: Buffer) => {
        // Most messages are starts: read their two fields without parsing the whole message (a start
        // carries its job's spec; parsing each was most of this process's CPU per start, and this
        // process shares the 2 cores with the coordinator and PostgreSQL it measures).
        const start = startOf(raw);
        if (start) {
          const at = performance.now();
          this.starts++;
          this.opts.onStart?.(start, at);
          if (this.opts.autoRun)
            this.send({ type: 'workload_status', workload_id: start.workloadId, status: 'running' });
          return;
        }
        const m = JSON.parse(raw.toString()) as {
          type: string;
          node_id?: string;
          heartbeat_interval_ms?: number;
          workload?: { id: string; job_id: string; spec: { name: string } };
          workload_id?: string;
          message?: string;
        };
        if (m.type === 'welcome') {
          welcomed = true;
          clearTimeout(timeout);
          this.nodeId = m.node_id!;
          this.startHeartbeats(this.opts.heartbeatMs ?? m.heartbeat_interval_ms!);
          resolve();
        } else if (m.type === 'start' && m.workload) {
          const at = performance.now();
          this.starts++;
          this.opts.onStart?.(
            { workloadId: m.workload.id, jobId: m.workload.job_id, jobName: m.workload.spec.name },
            at,
          );
          if (this.opts.autoRun)
            this.send({ type: 'workload_status', workload_id: m.workload.id, status: 'running' });
        } else if (m.type === 'stop' && m.workload_id) {
          this.send({
            type: 'workload_status',
            workload_id: m.workload_id,
            status: 'stopped',
            reason: 'stopped',
          });
        } else if (m.type === 'error') {
          process.stderr.write(`${this.opts.name}: coordinator error: ${m.message}\n`);
        }
      });
    });
  }

  private hello() {
    return {
      type: 'hello',
      name: this.opts.name,
      version: 'bench',
      resources: { cpu: this.opts.cpu, memory_mb: this.opts.memoryMb, disk_mb: 10_000_000 },
      capabilities: {
        os: 'linux',
        arch: 'x64',
        nix: '2.8',
        bubblewrap: true,
        qemu: false,
        kvm: false,
        cgroups: false,
        isolation: ['process', 'sandbox'],
        attributes: {},
      },
      running: [],
    };
  }

  private startHeartbeats(everyMs: number) {
    this.stopHeartbeats();
    // A random phase, as real agents that joined at different times would have.
    const beat = () => {
      this.lastHeartbeatAt = Date.now();
      this.send({ type: 'heartbeat' });
    };
    const first = setTimeout(() => {
      beat();
      this.timer = setInterval(beat, everyMs);
    }, Math.random() * everyMs);
    this.timer = first;
  }

  stopHeartbeats(): void {
    if (this.timer) {
      clearTimeout(this.timer);
      clearInterval(this.timer);
    }
    this.timer = null;
  }

  send(msg: unknown): void {
    if (this.ws?.readyState === WebSocket.OPEN) this.ws.send(JSON.stringify(msg));
  }

  close(): void {
    this.stopHeartbeats();
    this.ws?.close();
  }
}

const START_PREFIX = Buffer.from('{"type":"start","workload":{"id":');
const JOB_ID = Buffer.from(',"job_id":');
const INSTANCE = Buffer.from(',"instance":');
const SPEC_NAME = Buffer.from(',"spec":{"name":"');
const QUOTE = 0x22;

/**
 * A start message's workload id, job id and job name, read from the coordinator's text (scheduler/
 * start-message.ts: the workload's id, job_id, instance, then the spec, whose first field is its name)
 * without parsing the spec; null for any other message, and for a start laid out otherwise (the caller
 * parses that one whole). The markers hold an unescaped quote, so none can occur inside a JSON string.
 */
export function startOf(raw: Buffer): StartInfo | null {
  if (raw.length < START_PREFIX.length || START_PREFIX.compare(raw, 0, START_PREFIX.length) !== 0)
    return null;
  const idEnd = raw.indexOf(JOB_ID, START_PREFIX.length);
  const jobEnd = idEnd < 0 ? -1 : raw.indexOf(INSTANCE, idEnd + JOB_ID.length);
  const nameStart = jobEnd < 0 ? -1 : raw.indexOf(SPEC_NAME, jobEnd + INSTANCE.length);
  // A name is letters, digits, _ . - (spec/job.ts SafeName): it ends at the next quote.
  const nameEnd = nameStart < 0 ? -1 : raw.indexOf(QUOTE, nameStart + SPEC_NAME.length);
  if (nameEnd < 0) return null;
  const backslash = raw.indexOf(0x5c, nameStart + SPEC_NAME.length);
  if (backslash >= 0 && backslash < nameEnd) return null;
  try {
    return {
      workloadId: JSON.parse(raw.toString('utf8', START_PREFIX.length, idEnd)),
      jobId: JSON.parse(raw.toString('utf8', idEnd + JOB_ID.length, jobEnd)),
      jobName: raw.toString('latin1', nameStart + SPEC_NAME.length, nameEnd),
    };
  } catch {
    return null;
  }
}

/**
 * Connects `count` agents made by `make(i)`, `concurrency` handshakes at a time; calls `progress` now
 * and then. Rejects on the first agent that cannot join.
 */
export async function connectAgents(
  count: number,
  make: (i: number) => SimAgent,
  concurrency: number,
  progress?: (done: number) => void,
): Promise<SimAgent[]> {
  const agents: SimAgent[] = [];
  let next = 0;
  let done = 0;
  const lane = async () => {
    while (next < count) {
      const a = make(next++);
      agents.push(a);
      await a.connect();
      done++;
      if (progress && done % Math.max(1, Math.floor(count / 10)) === 0) progress(done);
    }
  };
  await Promise.all(Array.from({ length: Math.min(concurrency, count) }, lane));
  return agents;
}
