/**
 * Request stalls (issue 12.3): the longest event-loop stall one request or agent message can cause in
 * the coordinator. The coordinator runs in this process with `perf_hooks.monitorEventLoopDelay`; each
 * attack is sent from a child process (so building the payload costs us nothing) at the size the issue
 * used (200k paths, 240k store paths, 250k running) and at today's maximum, on PGlite and PostgreSQL.
 * Anchor: the idle loop's own longest stall over the same window, and the heartbeat TTL (a stall near it
 * marks healthy nodes down).
 * Options: MXC_BENCH_STALL_ENGINES (default "pglite,postgres").
 */
import { spawn } from 'node:child_process';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { monitorEventLoopDelay } from 'node:perf_hooks';
import { fileURLToPath } from 'node:url';
import pino from 'pino';
import { MAX_MISSING_PATHS } from '../scheduler/cache/index.js';
import { startCoordinator } from '../scheduler/server.js';
import { MAX_RUNNING_PER_NODE, MAX_STORE_PATHS_PER_MESSAGE } from '../spec/messages.js';
import { createBenchDb } from './lib/pg.js';
import { Report } from './lib/report.js';
import { sleep } from './lib/stats.js';

const CLIENT = fileURLToPath(new URL('./lib/stall-client.js', import.meta.url));

function runClient(url: string, kind: string, n: number): Promise<string> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [CLIENT, url, kind, String(n)], {
      stdio: ['ignore', 'pipe', 'inherit'],
    });
    let out = '';
    child.stdout.on('data', (d: Buffer) => {
      out += d.toString();
    });
    child.on('error', reject);
    child.on('exit', (code) =>
      code === 0 ? resolve(out.trim()) : reject(new Error(`client ${kind} exited ${code}`)),
    );
  });
}

export async function main(): Promise<void> {
  const r = new Report('request-stall');
  const engines = (process.env.MXC_BENCH_STALL_ENGINES ?? 'pglite,postgres').split(',');
  const attacks: [string, number][] = [
    ['missing', 200_000],
    ['missing', MAX_MISSING_PATHS],
    ['hello-store', 240_000],
    ['hello-store', MAX_STORE_PATHS_PER_MESSAGE],
    ['hello-running', 250_000],
    ['hello-running', MAX_RUNNING_PER_NODE],
    ['store-added', MAX_STORE_PATHS_PER_MESSAGE],
    ['submit-closure', 10_000],
  ];
  const h = monitorEventLoopDelay({ resolution: 5 });
  h.enable();
  let worst = 0;
  for (const engine of engines) {
    const dataDir = await mkdtemp(join(tmpdir(), 'mxc-bench-stall-'));
    const db = engine === 'postgres' ? await createBenchDb() : null;
    const server = await startCoordinator({
      port: 0,
      dataDir,
      databaseUrl: db?.url,
      tokens: {},
      logger: pino({ level: 'silent' }),
      heartbeatTtlMs: 5000,
    });
    try {
      await sleep(500);
      h.reset();
      await sleep(2000);
      const idle = h.max / 1e6;
      r.figure({ name: `${engine}: idle loop, longest stall over 2 s`, value: idle, unit: 'ms' });
      for (const [kind, n] of attacks) {
        await sleep(200);
        h.reset();
        const answer = await runClient(server.url, kind, n);
        // Work the request left behind (slices still being written) counts too.
        await sleep(1000);
        const stall = h.max / 1e6;
        worst = Math.max(worst, stall);
        r.figure({
          name: `${engine}: ${kind} ×${n}`,
          value: stall,
          unit: 'ms',
          anchor: { value: idle, label: 'idle', higherIsBetter: false },
          note: `answer ${JSON.parse(answer).answer}`,
        });
      }
    } finally {
      await server.close();
      await db?.drop();
      await rm(dataDir, { recursive: true, force: true });
    }
  }
  r.figure({
    name: 'longest stall of any one request',
    value: worst,
    unit: 'ms',
    anchor: { value: 5000, label: 'a 5 s heartbeat TTL', higherIsBetter: false },
  });
  r.save();
}
