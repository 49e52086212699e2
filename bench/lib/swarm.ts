/**
 * Many simulated agents spread over worker threads (see swarm-worker.ts): join them, silence one
 * (its socket stays open, its heartbeats stop), close them all.
 */
import { Worker } from 'node:worker_threads';
import type { SwarmCommand, SwarmEvent, SwarmWorkerData } from './swarm-worker.js';

export interface SwarmOptions {
  url: string;
  count: number;
  workers: number;
  heartbeatMs?: number;
  token?: string;
  /** Handshakes in flight per worker. */
  concurrency?: number;
  onProgress?: (joined: number) => void;
}

export interface Swarm {
  names: string[];
  /** Stops one agent's heartbeats; resolves with the epoch ms of its last heartbeat. */
  silence(name: string): Promise<number>;
  close(): Promise<void>;
}

export const agentName = (i: number): string => `sim-${String(i).padStart(5, '0')}`;

export async function startSwarm(opts: SwarmOptions): Promise<Swarm> {
  const names = Array.from({ length: opts.count }, (_, i) => agentName(i));
  const workers: Worker[] = [];
  const joined: number[] = [];
  const owner = new Map<string, Worker>();
  const ready: Promise<void>[] = [];
  for (let w = 0; w < opts.workers; w++) {
    const share = names.filter((_, i) => i % opts.workers === w);
    if (share.length === 0) continue;
    const data: SwarmWorkerData = {
      url: opts.url,
      names: share,
      heartbeatMs: opts.heartbeatMs,
      concurrency: opts.concurrency ?? 10,
      token: opts.token,
    };
    const worker = new Worker(new URL('./swarm-worker.js', import.meta.url), {
      workerData: data,
      execArgv: [],
    });
    workers.push(worker);
    for (const n of share) owner.set(n, worker);
    const idx = joined.push(0) - 1;
    ready.push(
      new Promise<void>((resolve, reject) => {
        worker.on('message', (e: SwarmEvent) => {
          if (e.type === 'progress') {
            joined[idx] = e.joined;
            opts.onProgress?.(joined.reduce((a, b) => a + b, 0));
          } else if (e.type === 'ready') resolve();
          else if (e.type === 'error') reject(new Error(`agent swarm: ${e.message}`));
        });
        worker.once('error', reject);
      }),
    );
  }
  const terminate = () => Promise.all(workers.map((w) => w.terminate())).then(() => {});
  try {
    await Promise.all(ready);
  } catch (err) {
    await terminate();
    throw err;
  }
  const ask = <T extends SwarmEvent['type']>(w: Worker, cmd: SwarmCommand, type: T) =>
    new Promise<Extract<SwarmEvent, { type: T }>>((resolve) => {
      const on = (e: SwarmEvent) => {
        if (e.type === type) {
          w.off('message', on);
          resolve(e as Extract<SwarmEvent, { type: T }>);
        }
      };
      w.on('message', on);
      w.postMessage(cmd);
    });
  return {
    names,
    async silence(name) {
      const w = owner.get(name);
      if (!w) throw new Error(`no simulated agent named ${name}`);
      return (await ask(w, { cmd: 'silence', name }, 'silenced')).lastHeartbeatAt;
    },
    async close() {
      await Promise.all(workers.map((w) => ask(w, { cmd: 'close' }, 'closed')));
      await terminate();
    },
  };
}
