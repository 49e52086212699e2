/**
 * Worker-thread entry for `startSwarm`: connects its share of simulated agents and heartbeats them,
 * so ten thousand sockets are spread over several event loops. Commands arrive as messages.
 */
import { parentPort, workerData } from 'node:worker_threads';
import { connectAgents, SimAgent } from './sim-agent.js';

export interface SwarmWorkerData {
  url: string;
  names: string[];
  heartbeatMs?: number;
  concurrency: number;
  token?: string;
}

export type SwarmCommand = { cmd: 'silence'; name: string } | { cmd: 'close' };
export type SwarmEvent =
  | { type: 'progress'; joined: number }
  | { type: 'ready' }
  | { type: 'error'; message: string }
  | { type: 'silenced'; name: string; lastHeartbeatAt: number }
  | { type: 'closed' };

const data = workerData as SwarmWorkerData;
const port = parentPort!;
const post = (e: SwarmEvent) => port.postMessage(e);
const byName = new Map<string, SimAgent>();

connectAgents(
  data.names.length,
  (i) => {
    const a = new SimAgent({
      url: data.url,
      name: data.names[i]!,
      token: data.token,
      cpu: 8,
      memoryMb: 32 * 1024,
      heartbeatMs: data.heartbeatMs,
      connectTimeoutMs: 120_000,
    });
    byName.set(a.opts.name, a);
    return a;
  },
  data.concurrency,
  (joined) => post({ type: 'progress', joined }),
)
  .then(() => post({ type: 'ready' }))
  .catch((err: Error) => post({ type: 'error', message: err.message }));

port.on('message', (c: SwarmCommand) => {
  if (c.cmd === 'silence') {
    const a = byName.get(c.name);
    a?.stopHeartbeats();
    post({ type: 'silenced', name: c.name, lastHeartbeatAt: a?.lastHeartbeatAt ?? 0 });
  } else if (c.cmd === 'close') {
    for (const a of byName.values()) a.close();
    post({ type: 'closed' });
    setTimeout(() => process.exit(0), 100);
  }
});
