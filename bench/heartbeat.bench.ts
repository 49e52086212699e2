/**
 * Heartbeat load (issue 4): N simulated agents (default 10,000, over worker threads) heartbeating every
 * 5 s to a coordinator child process. Prints the coordinator's CPU and memory in steady state, nodes
 * wrongly marked down, and how long after its last heartbeat a silent agent (socket left open) is seen
 * `down` through GET /api/nodes, minus the TTL. Anchors: Nomad processes at most 50 heartbeats/s by
 * design and runs a 200–400 s TTL at 10,000 clients.
 * Options: MXC_BENCH_AGENTS, MXC_BENCH_HEARTBEAT_TTL (s, default 15), MXC_BENCH_HEARTBEAT_MS (default
 * 5000), MXC_BENCH_WINDOW (s of steady state measured, default 30), MXC_BENCH_WORKERS (default 4).
 */
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { startCoordinatorProcess } from './lib/coordinator-process.js';
import { getAllPages, getJson } from './lib/http.js';
import { createBenchDb } from './lib/pg.js';
import { cpuMark, RssSampler, rssBytes } from './lib/proc.js';
import { Report } from './lib/report.js';
import { subscribeEvents } from './lib/sse.js';
import { envInt, fmt, fmtMiB, sleep } from './lib/stats.js';
import { agentName, type Swarm, startSwarm } from './lib/swarm.js';

const NOMAD_MAX_HEARTBEATS_PER_S = 50;
const NOMAD_TTL_AT_10K_S = 200;

export async function main(): Promise<void> {
  const agentsN = envInt('MXC_BENCH_AGENTS', 10_000);
  const ttlS = envInt('MXC_BENCH_HEARTBEAT_TTL', 15);
  const beatMs = envInt('MXC_BENCH_HEARTBEAT_MS', 5000);
  const windowS = envInt('MXC_BENCH_WINDOW', 30);
  const workers = Math.max(1, envInt('MXC_BENCH_WORKERS', 4));
  const r = new Report('heartbeat');
  r.say(
    `  ${fmt(agentsN)} agents over ${workers} worker threads, heartbeat every ${beatMs} ms, TTL ${ttlS} s, ${windowS} s window`,
  );
  const db = await createBenchDb();
  const dataDir = await mkdtemp(join(tmpdir(), 'mxc-bench-heartbeat-'));
  const coord = await startCoordinatorProcess({
    dataDir,
    databaseUrl: db.url,
    env: { MXC_HEARTBEAT_TTL: String(ttlS) },
  });
  const rss = new RssSampler(coord.pid, 500);
  let swarm: Swarm | null = null;
  try {
    const idleRss = rssBytes(coord.pid);
    r.progress(`coordinator pid ${coord.pid}, idle RSS ${fmtMiB(idleRss)}`);
    const joinCpu = cpuMark(coord.pid, db.name);
    let lastShown = 0;
    swarm = await startSwarm({
      url: coord.url,
      count: agentsN,
      workers,
      heartbeatMs: beatMs,
      onProgress: (n) => {
        if (n - lastShown >= agentsN / 10) {
          lastShown = n;
          r.progress(`${fmt(n)} agents joined`);
        }
      },
    });
    const joined = joinCpu();
    r.progress(
      `${fmt(agentsN)} agents joined in ${joined.wall.toFixed(1)} s; RSS ${fmtMiB(rssBytes(coord.pid))}`,
    );

    // Let every agent's heartbeat phase come round once before measuring.
    await sleep(beatMs + 1000);
    const downBefore = await countDown(coord.url);
    r.progress(`steady state; measuring ${windowS} s`);
    const cpu = cpuMark(coord.pid, db.name);
    await sleep(windowS * 1000);
    const used = cpu();
    const downAfter = await countDown(coord.url);
    const steadyRss = rss.sample();

    // A dead agent: its socket stays open, its heartbeats stop. The moment the coordinator marks it
    // down is read off its event stream (what the dashboard and `mxc` follow); polling all 10,000 nodes
    // (about 0.4 s a read) would measure the poll instead. The node's own GET confirms it after.
    const victim = agentName(0);
    const victimNode = (await getAllPages<{ id: string; name: string }>(`${coord.url}/api/nodes`)).find(
      (n) => n.name === victim,
    );
    if (!victimNode) throw new Error(`${victim} is not in GET /api/nodes`);
    let downAt = 0;
    let sawDown: () => void = () => {};
    const down = new Promise<void>((resolve) => {
      sawDown = resolve;
    });
    const events = await subscribeEvents(coord.url, (e) => {
      if (downAt || e.kind !== 'node' || e.id !== victimNode.id || e.status !== 'down') return;
      downAt = Date.now();
      sawDown();
    });
    const lastBeat = await swarm.silence(victim);
    const silencedAt = Date.now();
    r.progress(`silenced ${victim} (last heartbeat ${silencedAt - lastBeat} ms ago); watching /api/events`);
    let timer: NodeJS.Timeout | undefined;
    await Promise.race([
      down,
      new Promise<void>((resolve) => {
        timer = setTimeout(resolve, (ttlS + 60) * 1000);
      }),
    ]);
    clearTimeout(timer);
    events.close();
    if (!downAt) throw new Error(`${victim} was not marked down within TTL + 60 s`);
    const shown = await getJson<{ status: string }>(`${coord.url}/api/nodes/${victimNode.id}`);
    if (shown.status !== 'down')
      throw new Error(`the event said down, GET /api/nodes/:id says ${shown.status}`);
    const pollTimes: number[] = [];
    for (let i = 0; i < 5; i++) {
      const t = performance.now();
      await getAllPages(`${coord.url}/api/nodes`);
      pollTimes.push(performance.now() - t);
    }
    const polls = pollTimes.length;
    const detectS = (downAt - lastBeat) / 1000;

    r.say('');
    const beatsPerS = agentsN / (beatMs / 1000);
    r.figure({
      name: 'heartbeats/s offered',
      value: beatsPerS,
      unit: '/s',
      anchor: { value: NOMAD_MAX_HEARTBEATS_PER_S, label: 'Nomad max by design', higherIsBetter: true },
    });
    r.figure({
      name: 'coordinator CPU (steady, % of one core)',
      value: (100 * used.coordinator) / used.wall,
      unit: '%',
    });
    r.figure({
      name: 'coordinator CPU per heartbeat',
      value: (1e6 * used.coordinator) / (beatsPerS * used.wall),
      unit: 'µs',
    });
    r.figure({
      name: 'PostgreSQL CPU (steady, % of one core)',
      value: (100 * used.postgres) / used.wall,
      unit: '%',
    });
    r.figure({
      name: 'load generator CPU (% of one core)',
      value: (100 * used.bench) / used.wall,
      unit: '%',
    });
    r.figure({ name: 'coordinator RSS idle', value: idleRss / 1024 / 1024, unit: 'MiB' });
    r.figure({ name: 'coordinator RSS steady', value: steadyRss / 1024 / 1024, unit: 'MiB' });
    r.figure({
      name: 'coordinator RSS per agent',
      value: (steadyRss - idleRss) / agentsN / 1024,
      unit: 'KiB',
    });
    r.figure({ name: 'coordinator RSS peak', value: rss.peak / 1024 / 1024, unit: 'MiB' });
    r.figure({ name: 'join: agents/s', value: agentsN / joined.wall, unit: '/s' });
    r.figure({
      name: 'nodes down (wrongly) before/after window',
      value: downAfter,
      unit: `(before: ${downBefore})`,
    });
    r.figure({
      name: 'TTL',
      value: ttlS,
      unit: 's',
      anchor: { value: NOMAD_TTL_AT_10K_S, label: 'Nomad TTL at 10k clients', higherIsBetter: false },
    });
    r.figure({ name: 'dead agent detected after last heartbeat', value: detectS, unit: 's' });
    r.figure({
      name: 'detection minus TTL',
      value: detectS - ttlS,
      unit: 's',
      anchor: { value: 1, label: 'issue 17 target', higherIsBetter: false },
      note: '(the liveness tick; seen on /api/events)',
    });
    r.figure({
      name: 'GET /api/nodes with all nodes, median',
      value: pollTimes.sort((a, b) => a - b)[Math.floor(pollTimes.length / 2)] ?? 0,
      unit: 'ms',
      note: `(${polls} polls)`,
    });
    r.save({ agents: agentsN, ttlS, beatMs, windowS });
  } finally {
    rss.stop();
    await swarm?.close().catch(() => {});
    await coord.stop();
    await db.drop().catch((e) => r.note(`could not drop ${db.name}: ${(e as Error).message}`));
    await rm(dataDir, { recursive: true, force: true });
  }
}

async function countDown(url: string): Promise<number> {
  const nodes = await getAllPages<{ status: string }>(`${url}/api/nodes`);
  return nodes.filter((n) => n.status === 'down').length;
}
