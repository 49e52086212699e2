/**
 * Submits on the placed-submit path (scheduler/placed-submit.ts: a small job inserted already placed,
 * with its node locks and re-check) while a coordinator process is SIGKILLed: every job is then fully
 * there (all its instances, node usage equal to what its workloads hold, within capacity, starts
 * delivered or sent again) or not there at all, and the agents end up running exactly the workloads the
 * database says run there, none twice. Two coordinators placing submits onto the same nodes, one of
 * them killed part way, never over-commit a node. Real `mxc coordinator` processes, PostgreSQL, and
 * protocol-level agents (test/helpers/protocol-agent.ts) that reconnect as a real agent does.
 */
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { openPglite } from '../../scheduler/store/db.js';
import { plainJob } from '../helpers/coordinator.js';
import { type DaemonProcess, listeningUrl, MXC_BIN, startDaemon } from '../helpers/daemon-process.js';
import { createPostgresDb, dropPostgresDb, seedPgliteDataDir } from '../helpers/db.js';
import { eventually, ProtocolAgent } from '../helpers/protocol-agent.js';

const cleanup: (() => Promise<unknown>)[] = [];
let work: string;

beforeAll(async () => {
  work = await mkdtemp(join(tmpdir(), 'mxc-submit-kill-'));
  cleanup.push(() => rm(work, { recursive: true, force: true }));
  // The migrated PGlite template, made once here rather than in the first PGlite test.
  await seedPgliteDataDir(join(work, 'warm-up'));
}, 60_000);
afterAll(async () => {
  for (const f of cleanup.reverse()) await f().catch(() => {});
});

/** A fresh database, and a client on it for the checks. */
async function database(): Promise<{ databaseUrl: string; db: pg.Client }> {
  const { url, name } = await createPostgresDb();
  cleanup.push(() => dropPostgresDb(name));
  const db = new pg.Client({ connectionString: url });
  await db.connect();
  cleanup.push(() => db.end());
  return { databaseUrl: url, db };
}

/** A coordinator process: on PostgreSQL, or on PGlite in its data dir when `databaseUrl` is null. */
function coordinator(databaseUrl: string | null, dataDir: string): DaemonProcess {
  const d = startDaemon(process.execPath, [MXC_BIN, 'coordinator', '--port', '0', '--data-dir', dataDir], {
    ...(databaseUrl ? { DATABASE_URL: databaseUrl } : {}),
    MXC_UI_ENABLED: 'false',
    MXC_LEADER_LEASE: '1.5',
    MXC_HEARTBEAT_TTL: '5',
  });
  cleanup.push(() => d.stop());
  return d;
}

function agent(url: string, name: string, cpu: number): ProtocolAgent {
  const a = new ProtocolAgent({ url, name, cpu, memory_mb: 4096 });
  cleanup.push(async () => a.close());
  return a;
}

/** A small service job (placed by its submit): `instances` of `cpu` each. */
const smallJob = (name: string, instances: number, cpu: number) =>
  plainJob({
    name,
    instances,
    task: {
      name: 't',
      processes: [{ name: 'p', cmdline: 'sleep 1000' }],
      resources: { cpu, ram: 16 * 1024 * 1024, disk: 1024 * 1024 },
    },
  });

interface Answer {
  name: string;
  /** The HTTP status, or null when the request failed (the coordinator died). */
  status: number | null;
}

/** POSTs the jobs at once; `onAnswer` hears each answer as it comes. */
function submitAll(
  urls: string[],
  jobs: ReturnType<typeof smallJob>[],
  onAnswer: (a: Answer) => void,
): Promise<Answer[]> {
  return Promise.all(
    jobs.map(async (job, i) => {
      const answer: Answer = { name: job.name, status: null };
      try {
        const r = await fetch(`${urls[i % urls.length]}/api/jobs`, {
          method: 'POST',
          headers: { 'content-type': 'application/json' },
          body: JSON.stringify(job),
        });
        await r.arrayBuffer();
        answer.status = r.status;
      } catch {
        // The coordinator was killed with the request in flight.
      }
      onAnswer(answer);
      return answer;
    }),
  );
}

interface Row {
  id: string;
  job: string;
  status: string;
  node_id: string | null;
  cpu: number;
  instance: number;
}

/** A read of the database (PostgreSQL while the coordinators run; PGlite once its coordinator stopped). */
type Query = <T>(sql: string) => Promise<T[]>;

const queryOf =
  (db: pg.Client): Query =>
  async <T>(sql: string) =>
    (await db.query(sql)).rows as T[];

async function workloads(q: Query): Promise<Row[]> {
  return q<Row>(
    `SELECT w.id, j.name AS job, w.status, w.node_id, w.cpu::float8 AS cpu, w.instance
       FROM workloads w JOIN jobs j ON j.id = w.job_id ORDER BY j.name, w.instance`,
  );
}

const ACTIVE = ['starting', 'running', 'stopping'];

/**
 * What a user must see once things settle: each job whole (all its instances, each once), each node's
 * usage what its active workloads hold and within its capacity, each agent running exactly the
 * workloads placed on it (none twice, none on two agents), the outbox drained.
 */
async function checkConsistent(
  q: Query,
  instancesOf: Map<string, number>,
  agents: { nodeId: string; running: ReadonlySet<string> }[],
): Promise<Row[]> {
  const rows = await workloads(q);
  const jobNames = (await q<{ name: string }>('SELECT name FROM jobs')).map((r) => r.name);
  expect(jobNames.length).toBe(new Set(jobNames).size);
  for (const name of jobNames) {
    const mine = rows.filter((r) => r.job === name);
    expect(
      mine.map((r) => r.instance),
      name,
    ).toEqual(Array.from({ length: instancesOf.get(name)! }, (_, i) => i));
  }
  const nodes = await q<{ id: string; cpu: number; used_cpu: number }>(
    'SELECT id, cpu::float8 AS cpu, used_cpu::float8 AS used_cpu FROM nodes',
  );
  for (const n of nodes) {
    const held = rows.filter((r) => r.node_id === n.id && ACTIVE.includes(r.status));
    expect(n.used_cpu).toBeCloseTo(
      held.reduce((s, r) => s + r.cpu, 0),
      9,
    );
    expect(n.used_cpu).toBeLessThanOrEqual(n.cpu + 1e-9);
  }
  const seen = new Set<string>();
  for (const a of agents) {
    const placedHere = rows.filter((r) => r.node_id === a.nodeId && r.status === 'running').map((r) => r.id);
    expect([...a.running].sort()).toEqual(placedHere.sort());
    for (const id of a.running) {
      expect(seen.has(id), `${id} runs on two agents`).toBe(false);
      seen.add(id);
    }
  }
  const [outbox] = await q<{ n: number }>('SELECT count(*)::int AS n FROM agent_commands');
  expect(outbox!.n).toBe(0);
  return rows;
}

/**
 * Every workload running or pending with a reason, and the agents running as many as the coordinator
 * says run on them (through the API: a PGlite database is the coordinator's alone while it runs).
 */
async function settled(url: string, agents: ProtocolAgent[]): Promise<boolean> {
  const r = await fetch(`${url}/api/workloads?limit=1000`);
  const ws = (
    (await r.json()) as { data: { status: string; pending_reason: string | null; node_id: string | null }[] }
  ).data;
  if (!ws.every((w) => w.status === 'running' || (w.status === 'pending' && w.pending_reason))) return false;
  return agents.every(
    (a) => a.running.size === ws.filter((w) => w.node_id === a.nodeId && w.status === 'running').length,
  );
}

/** Starts each agent received for workloads it said it runs when it said hello: none may come. */
function startsOfRunning(a: ProtocolAgent, runningAtHello: readonly string[]): string[] {
  return a.received.flatMap((m) =>
    m.type === 'start' && runningAtHello.includes(m.workload.id) ? [m.workload.id] : [],
  );
}

describe('submits placed in their insert, with a coordinator killed', () => {
  // Killed as the first answer arrives (most submits in flight), or later (some placed, more waiting).
  it.each([
    ['PostgreSQL', 1],
    ['PostgreSQL', 6],
    ['PGlite', 3],
  ] as const)(
    'on %s, killed at answer %i: after a restart every job is whole or absent, and runs once',
    async (engine, killAt) => {
      const pgDb = engine === 'PostgreSQL' ? await database() : null;
      const databaseUrl = pgDb?.databaseUrl ?? null;
      const dataDir = join(work, `single-${engine}-${killAt}`);
      if (!pgDb) await seedPgliteDataDir(dataDir);
      const first = coordinator(databaseUrl, dataDir);
      const url = await listeningUrl(first);
      const before = [agent(url, `${engine}-${killAt}-1`, 4), agent(url, `${engine}-${killAt}-2`, 4)];
      for (const a of before) await a.connect();
      // 24 jobs of 1–3 instances of a quarter cpu: 12 cpu asked of 8, so some wait for room.
      const jobs = Array.from({ length: 24 }, (_, i) => smallJob(`kill-${i}`, 1 + (i % 3), 0.25));
      const instancesOf = new Map(jobs.map((j) => [j.name, j.instances!]));
      let answered = 0;
      const got = await submitAll([url], jobs, (a) => {
        if (a.status !== null && ++answered === killAt) first.proc.kill('SIGKILL');
      });
      await first.proc;
      const accepted = got.filter((a) => a.status !== null && a.status < 300).map((a) => a.name);
      expect(accepted.length).toBeGreaterThanOrEqual(killAt);

      const second = coordinator(databaseUrl, dataDir);
      const url2 = await listeningUrl(second);
      const runningAtHello = before.map((a) => [...a.running]);
      for (const a of before) a.close();
      const after = before.map((a) => agent(url2, a.opts.name, 4));
      for (const [i, a] of after.entries()) {
        for (const id of runningAtHello[i]!) a.running.add(id);
        await a.connect(runningAtHello[i]!);
      }
      // Every accepted job survived the kill.
      const listed = async () =>
        ((await (await fetch(`${url2}/api/jobs`)).json()) as { data: { name: string }[] }).data.map(
          (j) => j.name,
        );
      for (const name of accepted) expect(await listed(), name).toContain(name);
      // A user submits again what got no answer: accepted once (an unchanged job is not a second job).
      const retried = got.filter((a) => a.status === null || a.status >= 500).map((a) => a.name);
      const again = await submitAll(
        [url2],
        jobs.filter((j) => retried.includes(j.name)),
        () => {},
      );
      for (const a of again) expect(a.status, a.name).toBeLessThan(300);

      await eventually(() => settled(url2, after), 20_000, 'every workload running or waiting with a reason');
      for (const [i, a] of after.entries()) expect(startsOfRunning(a, runningAtHello[i]!)).toEqual([]);
      const agentsSeen = after.map((a) => ({ nodeId: a.nodeId, running: new Set(a.running) }));
      let rows: Row[];
      if (pgDb) rows = await checkConsistent(queryOf(pgDb.db), instancesOf, agentsSeen);
      else {
        // PGlite: read once its coordinator stopped (the database is that process's alone).
        await second.stop();
        const db = await openPglite(join(dataDir, 'db'));
        try {
          rows = await checkConsistent((sql) => db.query(sql), instancesOf, agentsSeen);
        } finally {
          await db.close();
        }
      }
      expect(new Set(rows.map((r) => r.job)).size).toBe(jobs.length);
    },
    60_000,
  );

  // The agents talk to the survivor A (B's placements reach them through the outbox and NOTIFY), or to
  // the killed B (they reconnect to A with what they run, as a real agent fails over).
  it.each([
    ['the survivor', 'A'],
    ['the killed one', 'B'],
  ] as const)(
    'two coordinators placing submits onto the same nodes, one killed part way, never over-commit (agents on %s)',
    async (_, on) => {
      const { databaseUrl, db } = await database();
      const a = coordinator(databaseUrl, join(work, `ha-a-${on}`));
      const b = coordinator(databaseUrl, join(work, `ha-b-${on}`));
      const [urlA, urlB] = [await listeningUrl(a), await listeningUrl(b)];
      const first = [
        agent(on === 'A' ? urlA : urlB, `h1-${on}`, 2),
        agent(on === 'A' ? urlA : urlB, `h2-${on}`, 2),
      ];
      for (const x of first) await x.connect();
      await eventually(
        async () => {
          const r = await fetch(`${urlB}/api/nodes`);
          const nodes = ((await r.json()) as { data: { status: string }[] }).data;
          return nodes.filter((n) => n.status === 'ready').length === 2;
        },
        10_000,
        'B to see both nodes ready',
      );
      // Watched while it happens: no node ever holds more than its capacity.
      let watching = true;
      let worst = 0;
      const watch = (async () => {
        while (watching) {
          const r = await db.query<{ over: number }>('SELECT max(used_cpu - cpu)::float8 AS over FROM nodes');
          worst = Math.max(worst, r.rows[0]!.over ?? 0);
          await new Promise((r) => setTimeout(r, 5));
        }
      })();
      // 32 one-instance jobs of half a cpu through both: 16 cpu asked of 4.
      const jobs = Array.from({ length: 32 }, (_, i) => smallJob(`ha-${i}`, 1, 0.5));
      const instancesOf = new Map(jobs.map((j) => [j.name, 1]));
      let answeredByB = 0;
      const got = await submitAll([urlA, urlB], jobs, (x) => {
        const fromB = jobs.findIndex((j) => j.name === x.name) % 2 === 1;
        if (fromB && x.status !== null && ++answeredByB === 3) b.proc.kill('SIGKILL');
      });
      await b.proc;
      let agents = first;
      let runningAtHello: string[][] = first.map(() => []);
      if (on === 'B') {
        runningAtHello = first.map((x) => [...x.running]);
        for (const x of first) x.close();
        agents = first.map((x) => agent(urlA, x.opts.name, 2));
        for (const [i, x] of agents.entries()) {
          for (const id of runningAtHello[i]!) x.running.add(id);
          await x.connect(runningAtHello[i]!);
        }
      }
      // What B got no answer for, submitted again through A.
      const retried = got.filter((x) => x.status === null || x.status >= 500).map((x) => x.name);
      const again = await submitAll(
        [urlA],
        jobs.filter((j) => retried.includes(j.name)),
        () => {},
      );
      for (const x of again) expect(x.status, x.name).toBeLessThan(300);
      await eventually(
        () => settled(urlA, agents),
        20_000,
        'every workload running or waiting with a reason',
      );
      watching = false;
      await watch;
      expect(worst).toBeLessThanOrEqual(1e-9);
      const rows = await checkConsistent(queryOf(db), instancesOf, agents);
      expect(new Set(rows.map((r) => r.job)).size).toBe(jobs.length);
      for (const [i, x] of agents.entries()) expect(startsOfRunning(x, runningAtHello[i]!)).toEqual([]);
      // Full, and no more: 4 cpu of half-cpu workloads.
      expect(rows.filter((r) => r.status === 'running')).toHaveLength(8);
    },
    60_000,
  );
});
