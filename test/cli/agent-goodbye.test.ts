/**
 * A clean stop of an agent tells the coordinator at once (goodbye): its workloads are replaced now, not
 * after the heartbeat TTL. And a restart of `mxc up` leaves a calm `workloads list` (live workloads by
 * default; `--all` for history), with jobs showing their state and counts. Real CLI, real processes.
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { nixBuild } from '../../lib/nix.js';
import { repoPath } from '../../scheduler/paths.js';
import { eventually } from '../helpers/protocol-agent.js';
import { mxc, UpProcess, upDatabase } from './up-harness.js';

interface W {
  id: string;
  status: string;
  node: string | null;
  error: string | null;
}

describe('agent goodbye and a calm restart', () => {
  let dir: string;
  let db: Awaited<ReturnType<typeof upDatabase>>;
  let up: UpProcess;
  let other: ChildProcess | undefined;
  let env: Record<string, string>;
  const dataDir = () => join(dir, 'data');
  const list = async (...args: string[]) =>
    JSON.parse((await mxc(['workloads', 'list', '--json', ...args], { env })).stdout) as W[];

  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), 'mxc-goodbye-'));
    db = await upDatabase();
    // A long TTL: anything that happens within seconds is the goodbye's doing.
    up = await UpProcess.start({
      dataDir: dataDir(),
      databaseUrl: db.url,
      env: { MXC_HEARTBEAT_TTL: '120' },
    });
    env = { MXC_COORDINATOR: up.url, MXC_API_TOKEN: '' };
  });

  afterAll(async () => {
    if (other && other.exitCode === null) other.kill('SIGKILL');
    await up?.stop();
    await db?.drop();
    await rm(dir, { recursive: true, force: true });
  });

  it('replaces the workloads of an agent that stops cleanly at once', async () => {
    const token = (await readFile(join(dataDir(), 'local-token'), 'utf8')).trim();
    other = spawn(
      process.execPath,
      [repoPath('bin', 'mxc.js'), 'agent', '--name', 'other', '--state-dir', join(dir, 'other')],
      {
        env: { ...process.env, MXC_COORDINATOR: up.url, MXC_AGENT_TOKEN: token },
        stdio: 'ignore',
      },
    );
    await eventually(
      async () => {
        const nodes = JSON.parse((await mxc(['nodes', 'list', '--json'], { env })).stdout) as {
          name: string;
          connected: boolean;
        }[];
        return nodes.some((n) => n.name === 'other' && n.connected);
      },
      20_000,
      'agent other to join',
    );
    expect((await mxc(['nodes', 'drain', 'local'], { env })).exitCode).toBe(0);
    const [hello] = await nixBuild([repoPath('examples', 'hello_world')]);
    const sub = await mxc(['submit', hello!, '--wait', '--timeout', '60'], { env });
    expect(sub.exitCode, sub.stderr).toBe(0);
    expect(sub.stdout).toMatch(/running {2}on other/);
    const first = sub.stdout.trim().split(/\s+/)[0]!;
    expect((await mxc(['nodes', 'drain', 'local', '--undo'], { env })).exitCode).toBe(0);

    const t0 = Date.now();
    other.kill('SIGINT');
    const moved = await eventually(
      async () => {
        const live = await list();
        return live.length === 1 && live[0]!.status === 'running' && live[0]!.node === 'local' ? live : null;
      },
      20_000,
      'the workload to run on local',
    );
    expect(Date.now() - t0).toBeLessThan(20_000);
    expect(moved[0]!.id).not.toBe(first);
    const events = (await mxc(['workloads', 'events', first], { env })).stdout;
    expect(events).toMatch(/running → lost\s+agent other shut down/);
  }, 120_000);

  it('after a restart of mxc up, workloads list shows what runs; --all shows the history', async () => {
    await up.stop();
    up = await UpProcess.start({
      dataDir: dataDir(),
      databaseUrl: db.url,
      env: { MXC_HEARTBEAT_TTL: '120' },
    });
    env = { MXC_COORDINATOR: up.url, MXC_API_TOKEN: '' };
    const live = await eventually(
      async () => {
        const l = await list();
        return l.length === 1 && l[0]!.status === 'running' ? l : null;
      },
      30_000,
      'hello_world to run again',
    );
    expect(live[0]!.node).toBe('local');
    const table = (await mxc(['workloads', 'list'], { env })).stdout;
    expect(table).not.toMatch(/lost|failed/);
    const all = await list('--all');
    expect(all.filter((w) => w.status === 'lost').length).toBeGreaterThanOrEqual(2);

    const jobs = (await mxc(['jobs', 'list'], { env })).stdout;
    // Its one instance runs: the table counts instances by their newest workload; the two that agents
    // took away with them are lost in the history (the API's counts).
    expect(jobs).toMatch(
      /devcluster\/www-data\/devel\/hello_world\s+running\s+1\s+service\s+1\s+1\s+0\s+0\s+0\s+0\s/,
    );
    const [job] = JSON.parse((await mxc(['jobs', 'list', '--json'], { env })).stdout);
    expect(job.counts.lost).toBeGreaterThanOrEqual(2);
  }, 120_000);
});
