/**
 * Scheduling throughput (issue 4): N simulated agents over real WebSockets, then M workload placements
 * submitted as jobs through POST /api/jobs and committed to PostgreSQL by a coordinator in a child
 * process. Prints placements/s (anchor: Nomad C1M/C2M), submit→placed p50/p99 per job, coordinator RSS
 * and the CPU split between coordinator, PostgreSQL and the load generator, and the coordinator's longest
 * event-loop stall while it places them (beside its idle loop's). With MXC_BENCH_BACKLOG=N, then the
 * CPU of the leader's periodic sweep with N pending workloads that fit nowhere (beside the same window
 * without them).
 * Scale: MXC_BENCH_AGENTS, MXC_BENCH_PLACEMENTS, MXC_BENCH_INSTANCES (per job), MXC_BENCH_CONCURRENCY
 * (POSTs in flight), MXC_BENCH_AUTORUN=1 (agents answer `running`), MXC_BENCH_PROFILE=1 (CPU profile).
 */
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { startCoordinatorProcess } from './lib/coordinator-process.js';
import { formatProfile, monotonicUs, summariseProfile } from './lib/cpu-profile.js';
import { getAllPages, KeptAliveClient, pool, postJson } from './lib/http.js';
import { createBenchDb, queryOnce } from './lib/pg.js';
import { type CpuSplit, cpuMark, RssSampler, rssBytes } from './lib/proc.js';
import { Report } from './lib/report.js';
import { connectAgents, SimAgent } from './lib/sim-agent.js';
import { envInt, fmt, fmtMiB, percentile, sleep } from './lib/stats.js';

const NOMAD_C1M = 3750;
const NOMAD_C2M = 1500;
const FULL_PLACEMENTS = 100_000;
/** The leader's sweep period (coordinator.ts SWEEP_MS): the backlog's CPU is measured over whole ones. */
const SWEEP_S = 10;
/** Sweeps in each window of the backlog's measurement. */
const SWEEPS_MEASURED = 3;
/** Instances per job of the backlog (the spec's maximum). */
const BACKLOG_INSTANCES = 10_000;

/** A valid job spec with `instances` copies of a no-op process, small enough that capacity never binds. */
export function benchJob(i: number, instances: number) {
  return {
    name: `bench-${i}`,
    role: 'bench',
    cluster: 'bench',
    environment: 'prod',
    instances,
    service: true,
    task: {
      name: 'noop',
      processes: [{ name: 'noop', cmdline: '/bin/true' }],
      resources: { cpu: 0.1, ram: 64 * 1024 * 1024, disk: 0 },
    },
  };
}

interface JobTiming {
  submitAt: number;
  respondedAt: number;
  starts: number;
  lastStartAt: number;
}

export async function main(): Promise<void> {
  const agentsN = envInt('MXC_BENCH_AGENTS', 1000);
  const placementsN = envInt('MXC_BENCH_PLACEMENTS', 10_000);
  const instances = Math.min(envInt('MXC_BENCH_INSTANCES', 100), placementsN);
  const concurrency = envInt('MXC_BENCH_CONCURRENCY', 4);
  const autoRun = process.env.MXC_BENCH_AUTORUN === '1';
  const profile = process.env.MXC_BENCH_PROFILE === '1';
  const jobsN = Math.ceil(placementsN / instances);
  const total = jobsN * instances;
  const r = new Report('schedule');
  r.say(
    `  ${fmt(agentsN)} agents (cpu 64, 256 GiB each), ${fmt(jobsN)} jobs × ${instances} instances = ${fmt(total)} placements, ${concurrency} POSTs in flight, agents ${autoRun ? 'answer running' : 'stay silent after start'}`,
  );

  const db = await createBenchDb();
  const dataDir = await mkdtemp(join(tmpdir(), 'mxc-bench-schedule-'));
  const coord = await startCoordinatorProcess({
    dataDir,
    databaseUrl: db.url,
    cpuProfDir: profile ? join(dataDir, 'prof') : undefined,
    stallProbe: true,
  });
  const rss = new RssSampler(coord.pid);
  let agents: SimAgent[] = [];
  try {
    r.progress(
      `coordinator pid ${coord.pid} on ${coord.url}, database ${db.name}; idle RSS ${fmtMiB(rssBytes(coord.pid))}`,
    );

    const timings = new Map<string, JobTiming>();
    let starts = 0;
    // The CPU split is read as the last start arrives: read after the progress loop's next 1 s poll, its
    // "% of a core" was diluted by up to a second of idle (a 1.35 s run showed ~1.1 cores busy, not ~1.7).
    let cpu: (() => CpuSplit) | null = null;
    let usedAtLastStart: CpuSplit | null = null;
    let lastStartAt = 0;
    const onStart = (s: { jobName: string }, at: number) => {
      starts++;
      if (starts === total && cpu && !usedAtLastStart) usedAtLastStart = cpu();
      lastStartAt = at;
      const t = timings.get(s.jobName);
      if (t) {
        t.starts++;
        t.lastStartAt = at;
      }
    };
    const tc = performance.now();
    agents = await connectAgents(
      agentsN,
      (i) =>
        new SimAgent({
          url: coord.url,
          name: `sim-${String(i).padStart(5, '0')}`,
          cpu: 64,
          memoryMb: 256 * 1024,
          autoRun,
          onStart,
        }),
      20,
      (n) => r.progress(`${fmt(n)} agents joined`),
    );
    const joinS = (performance.now() - tc) / 1000;
    const nodes = await getAllPages<{ status: string }>(`${coord.url}/api/nodes`);
    const ready = nodes.filter((n) => n.status === 'ready').length;
    if (ready < agentsN) throw new Error(`only ${ready} of ${agentsN} nodes are ready after joining`);
    r.progress(
      `${fmt(agentsN)} agents joined in ${joinS.toFixed(1)} s; coordinator RSS ${fmtMiB(rssBytes(coord.pid))}`,
    );
    const rssAfterJoin = rssBytes(coord.pid);
    // The anchor of the stall: the idle loop's longest over 2 s (the agents' hellos handled before).
    await sleep(1000);
    await coord.stallWindow();
    await sleep(2000);
    const idleStall = await coord.stallWindow();

    cpu = cpuMark(coord.pid, db.name);
    const t0 = performance.now();
    const t0Us = monotonicUs();
    // A failed POST is counted, not fatal: the job may be stored and placed by a later pass anyway.
    const postErrors: string[] = [];
    // node:http, a kept-alive socket per POST in flight: fetch cost this process (which shares the 2
    // cores with the coordinator and PostgreSQL) about 0.5 ms of CPU more per POST.
    const client = new KeptAliveClient(concurrency);
    const submitting = pool(jobsN, concurrency, async (i) => {
      const name = `bench-${i}`;
      const t: JobTiming = { submitAt: performance.now(), respondedAt: 0, starts: 0, lastStartAt: 0 };
      timings.set(name, t);
      try {
        await client.postJson(`${coord.url}/api/jobs`, benchJob(i, instances));
      } catch (err) {
        postErrors.push((err as Error).message);
      }
      t.respondedAt = performance.now();
    });
    // Progress, and a stall guard: the run fails when nothing is placed for a minute.
    let lastSeen = 0;
    let lastChange = performance.now();
    let submitted = false;
    void submitting.then(() => {
      submitted = true;
    });
    while (starts < total) {
      await sleep(1000);
      if (starts !== lastSeen) {
        lastSeen = starts;
        lastChange = performance.now();
      } else if (performance.now() - lastChange > 60_000) {
        throw new Error(`no placement for 60 s at ${fmt(starts)} of ${fmt(total)}; see ${coord.logFile}`);
      }
      const el = (performance.now() - t0) / 1000;
      if (Math.round(el) % 5 === 0)
        r.progress(
          `${fmt(starts)} / ${fmt(total)} placed (${fmt(starts / el, 0)}/s), ${submitted ? 'all' : fmt(timings.size)} jobs sent, ${postErrors.length} POST errors, RSS ${fmtMiB(rss.last)}`,
        );
    }
    await submitting;
    client.close();
    const passStall = await coord.stallWindow();
    const placedS = (lastStartAt - t0) / 1000;
    const used = usedAtLastStart ?? cpu();
    // The database's own count: what was committed, whatever the agents saw.
    const counts = await queryOnce<{ status: string; n: number }>(
      db.url,
      'SELECT status, count(*)::int AS n FROM workloads GROUP BY status ORDER BY status',
    );
    const committed = counts.filter((c) => c.status !== 'pending').reduce((a, c) => a + c.n, 0);
    // Each apply transaction stamps its placements' events with its own now(): one distinct ts each.
    const [applies] = await queryOnce<{ n: number }>(
      db.url,
      "SELECT count(DISTINCT ts)::int AS n FROM workload_events WHERE to_status = 'starting'",
    );
    rss.sample();

    const perJob = [...timings.values()].map((t) => t.lastStartAt - t.submitAt);
    const postLat = [...timings.values()].map((t) => t.respondedAt - t.submitAt);
    const rate = total / placedS;
    r.say('');
    r.figure({
      name: 'placements/s (first submit → last start)',
      value: rate,
      unit: 'placements/s',
      anchor: { value: NOMAD_C1M, label: 'Nomad C1M', higherIsBetter: true },
    });
    r.figure({
      name: '  vs Nomad C2M',
      value: rate,
      unit: 'placements/s',
      anchor: { value: NOMAD_C2M, label: 'Nomad C2M', higherIsBetter: true },
    });
    r.figure({ name: 'placements committed (not pending) in DB', value: committed, unit: 'workloads' });
    r.figure({ name: 'wall time for all placements', value: placedS, unit: 's' });
    r.figure({
      name: 'placements per apply transaction (mean)',
      value: committed / Math.max(1, applies?.n ?? 0),
      unit: 'placements',
      note: `${fmt(applies?.n ?? 0)} transactions`,
    });
    r.figure({
      name: 'submit→placed p50 (job: POST → its last start)',
      value: percentile(perJob, 0.5),
      unit: 'ms',
    });
    r.figure({ name: 'submit→placed p99', value: percentile(perJob, 0.99), unit: 'ms' });
    r.figure({
      name: 'longest event-loop stall while placing',
      value: passStall.cpuMs,
      unit: 'ms CPU',
      anchor: { value: idleStall.cpuMs, label: 'idle loop over 2 s', higherIsBetter: false },
      note: `wall ${fmt(passStall.wallMs, 0)} ms (idle ${fmt(idleStall.wallMs, 0)} ms)`,
    });
    r.figure({ name: 'POST /api/jobs latency p50', value: percentile(postLat, 0.5), unit: 'ms' });
    r.figure({ name: 'POST /api/jobs latency p99', value: percentile(postLat, 0.99), unit: 'ms' });
    r.figure({ name: 'coordinator RSS after agents joined', value: rssAfterJoin / 1024 / 1024, unit: 'MiB' });
    r.figure({ name: 'coordinator RSS peak', value: rss.peak / 1024 / 1024, unit: 'MiB' });
    r.figure({ name: 'coordinator RSS at end', value: rss.last / 1024 / 1024, unit: 'MiB' });
    r.figure({
      name: 'CPU: coordinator',
      value: used.coordinator,
      unit: 's',
      note: `${fmt((100 * used.coordinator) / used.wall, 0)}% of a core`,
    });
    r.figure({
      name: 'CPU: PostgreSQL (all backends)',
      value: used.postgres,
      unit: 's',
      note: `${fmt((100 * used.postgres) / used.wall, 0)}% of a core`,
    });
    r.figure({
      name: 'CPU: load generator (this process)',
      value: used.bench,
      unit: 's',
      note: `${fmt((100 * used.bench) / used.wall, 0)}% of a core`,
    });
    r.figure({ name: 'coordinator CPU per placement', value: (1000 * used.coordinator) / total, unit: 'ms' });
    r.figure({ name: 'PostgreSQL CPU per placement', value: (1000 * used.postgres) / total, unit: 'ms' });
    if (total < FULL_PLACEMENTS) {
      r.note(
        `scaled run: ${fmt(total)} placements; at this rate ${fmt(FULL_PLACEMENTS)} would take ${fmt(FULL_PLACEMENTS / rate, 0)} s (passes read only changed nodes and pending work, so the rate should hold as active workloads grow)`,
      );
    }
    if (postErrors.length)
      r.note(`${postErrors.length} POST /api/jobs failed (jobs still placed later); first: ${postErrors[0]}`);
    r.note(`workloads by status: ${counts.map((c) => `${c.status} ${c.n}`).join(', ')}`);
    const backlogN = envInt('MXC_BENCH_BACKLOG', 0);
    if (backlogN > 0) await measureBacklogSweeps(r, coord, db, backlogN);
    for (const a of agents) a.close();
    agents = [];
    const prof = await coord.stop();
    // The profile of the measured phase only (first POST → last start), not the start-up and the join.
    const window = { fromUs: t0Us, toUs: t0Us + (lastStartAt - t0) * 1000 };
    if (prof) for (const line of formatProfile(summariseProfile(prof, 15, window))) r.say(`  ${line}`);
    r.save({ agents: agentsN, jobs: jobsN, instances, concurrency, autoRun, profile: prof });
  } finally {
    rss.stop();
    for (const a of agents) a.close();
    await coord.stop();
    await db.drop().catch((e) => r.note(`could not drop ${db.name}: ${(e as Error).message}`));
    if (!profile) await rm(dataDir, { recursive: true, force: true });
    else r.note(`coordinator log and profile kept in ${dataDir}`);
  }
}

/**
 * The leader's periodic sweep with `n` pending workloads that fit nowhere: coordinator and PostgreSQL
 * CPU over SWEEPS_MEASURED sweep periods, beside the same window before the backlog was submitted (the
 * agents' heartbeats and an empty sweep), and the longest event-loop stall in each.
 */
async function measureBacklogSweeps(
  r: Report,
  coord: Awaited<ReturnType<typeof startCoordinatorProcess>>,
  db: Awaited<ReturnType<typeof createBenchDb>>,
  n: number,
): Promise<void> {
  const windowS = SWEEP_S * SWEEPS_MEASURED;
  const measure = async () => {
    await coord.stallWindow();
    const mark = cpuMark(coord.pid, db.name);
    await sleep(windowS * 1000);
    return { cpu: mark(), stall: await coord.stallWindow() };
  };
  r.progress(`backlog: ${windowS} s without it`);
  const without = await measure();
  const jobs = Math.ceil(n / BACKLOG_INSTANCES);
  for (let i = 0; i < jobs; i++) {
    const job = benchJob(1_000_000 + i, Math.min(BACKLOG_INSTANCES, n - i * BACKLOG_INSTANCES));
    // More cpu than any agent has: it fits nowhere, ever.
    job.task.resources.cpu = 1000;
    await postJson(`${coord.url}/api/jobs`, job);
  }
  // Every one planned once (its reason written) before the window starts.
  for (;;) {
    const [w] = await queryOnce<{ n: number }>(
      db.url,
      "SELECT count(*)::int AS n FROM workloads WHERE status = 'pending' AND pending_reason LIKE '%insufficient cpu%'",
    );
    if ((w?.n ?? 0) >= n) break;
    await sleep(500);
  }
  r.progress(`backlog: ${fmt(n)} pending workloads that fit nowhere; ${windowS} s with it`);
  const withIt = await measure();
  const per = (s: number) => s / SWEEPS_MEASURED;
  r.figure({
    name: `sweep with ${fmt(n)} unplaceable: coordinator CPU`,
    value: per(withIt.cpu.coordinator),
    unit: 's/sweep',
    anchor: { value: per(without.cpu.coordinator), label: 'no backlog', higherIsBetter: false },
  });
  r.figure({
    name: `sweep with ${fmt(n)} unplaceable: PostgreSQL CPU`,
    value: per(withIt.cpu.postgres),
    unit: 's/sweep',
    anchor: { value: per(without.cpu.postgres), label: 'no backlog', higherIsBetter: false },
  });
  r.figure({
    name: '  longest event-loop stall with the backlog',
    value: withIt.stall.cpuMs,
    unit: 'ms CPU',
    anchor: { value: without.stall.cpuMs, label: 'no backlog', higherIsBetter: false },
    note: `wall ${fmt(withIt.stall.wallMs, 0)} ms (no backlog ${fmt(without.stall.wallMs, 0)} ms)`,
  });
}
