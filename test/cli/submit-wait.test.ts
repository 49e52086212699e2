/**
 * An honest `mxc submit --wait`, with the real CLI against a real `mxc up`: 0 only when the job is really
 * up (a service running and healthy, a batch job finished), progress on stderr while waiting, a non-zero
 * exit with the reason as soon as an instance fails, within seconds when nothing can place a workload,
 * and a coded error (never "internal error") for a closure path missing from the local store.
 */
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { nixBuild } from '../../lib/nix.js';
import { repoPath } from '../../scheduler/paths.js';
import { mxc, startUpCluster, type UpCluster } from './up-harness.js';

/** A one-process job built from nixlib into the store; returns the store path of its JSON. */
async function buildJob(dir: string, name: string, cmdline: string, extra = '', cpu = '0.1') {
  const file = join(dir, `${name}.nix`);
  await writeFile(
    file,
    `let mxc = import ${repoPath('nixlib')} { }; in mxc.Job {
      name = "${name}"; cluster = "devcluster"; role = "www-data"; environment = "devel";
      ${extra}
      task = mxc.Task {
        processes = [ (mxc.Process { name = "main"; cmdline = ${JSON.stringify(cmdline)}; }) ];
        resources = mxc.Resources { cpu = ${cpu}; ram = 16 * mxc.MB; disk = 8 * mxc.MB; };
      };
    }`,
  );
  const [out] = await nixBuild([file]);
  return out!;
}

describe('mxc submit --wait', () => {
  let cluster: UpCluster;
  let dir: string;
  let env: Record<string, string>;

  beforeAll(async () => {
    cluster = await startUpCluster('wait');
    ({ dir, env } = cluster);
  });

  afterAll(async () => {
    await cluster?.stop();
  });

  it('a bad --timeout is a usage error before anything is pushed or submitted', async () => {
    const job = await buildJob(dir, 'bad-timeout', 'sleep 60');
    const r = await mxc(['submit', job, '--wait', '--timeout', 'abc'], { env });
    expect(r.exitCode).toBe(2);
    expect(r.stderr).toMatch(/--timeout takes a number of seconds, got "abc"/);
    expect(r.stderr).not.toMatch(/submitted|unchanged/);
    const jobs = JSON.parse((await mxc(['jobs', 'list', '--json'], { env })).stdout) as { name: string }[];
    expect(jobs.map((j) => j.name)).not.toContain('bad-timeout');
  }, 60_000);

  it('a service with a health check: 0 once it is healthy, with progress on the way', async () => {
    const [web] = await nixBuild([repoPath('examples', 'web')]);
    const r = await mxc(['submit', web!, '--wait', '--timeout', '60'], { env });
    expect(r.exitCode, r.stderr).toBe(0);
    expect(r.stderr).toMatch(/waiting until it is up/);
    expect(r.stderr).toMatch(/web-0-\S+ {2}placed on local/);
    expect(r.stderr).toMatch(/web-0-\S+ {2}closure realised/);
    expect(r.stderr).toMatch(/web-0-\S+ {2}running; waiting for its health check/);
    expect(r.stderr).toMatch(/web-0-\S+ {2}healthy/);
    expect(r.stdout).toMatch(/^web-0-\S+ {2}running {2}on local {2}healthy$/m);
    // It was really healthy when --wait returned.
    const id = r.stdout.trim().split(/\s+/)[0]!;
    const shown = JSON.parse((await mxc(['workloads', 'show', id, '--json'], { env })).stdout);
    expect([shown.status, shown.health]).toEqual(['running', 'healthy']);
  }, 90_000);

  it('a batch job: 0 once every instance has finished', async () => {
    const [batch] = await nixBuild([repoPath('examples', 'batch')]);
    const r = await mxc(['submit', batch!, '--wait', '--timeout', '60'], { env });
    expect(r.exitCode, r.stderr).toBe(0);
    const rows = r.stdout.trim().split('\n');
    expect(rows).toHaveLength(2);
    // A finished instance says so: `stopped` alone reads as if someone had stopped it.
    for (const row of rows) expect(row).toMatch(/^batch-[01]-\S+ {2}stopped \(finished\) {2}on local$/);
    expect(r.stderr).toMatch(/^batch-0-\S+ {2}stopped \(finished\)$/m);
    const list = (await mxc(['workloads', 'list', '--all', '--job', 'batch'], { env })).stdout;
    expect(
      list.match(/^batch-[01]-\S+ +devcluster\/www-data\/devel\/batch +stopped \(finished\) +local /gm),
    ).toHaveLength(2);
    const job = (await mxc(['jobs', 'show', 'batch'], { env })).stdout;
    expect(job.match(/^batch-[01]-\S+ +1 +stopped \(finished\)$/gm)).toHaveLength(2);
    const node = (await mxc(['nodes', 'show', 'local'], { env })).stdout;
    expect(node).toMatch(/^batch-0-\S+ +stopped \(finished\)$/m);
  }, 90_000);

  it('exits 1 with the reason as soon as an instance fails', async () => {
    const job = await buildJob(dir, 'fails', 'echo about to fail; exit 3');
    const t0 = Date.now();
    const r = await mxc(['submit', job, '--wait', '--timeout', '120'], { env });
    expect(r.exitCode).toBe(1);
    expect(r.stderr).toMatch(/mxc: workload fails-0-\S+ failed: /);
    expect(r.stderr).not.toMatch(/internal error|timed out/);
    expect(Date.now() - t0).toBeLessThan(30_000);
  }, 60_000);

  it('exits 1 within seconds, with the pending reason, when no node can place a workload', async () => {
    const job = await buildJob(dir, 'huge', 'sleep 100', 'service = true;', '64');
    const t0 = Date.now();
    const r = await mxc(['submit', job, '--wait', '--timeout', '120'], { env });
    expect(r.exitCode).toBe(1);
    expect(r.stderr).toMatch(/huge-0-\S+ {2}pending: 1 node: insufficient cpu \(need 64/);
    expect(r.stderr).toMatch(/mxc: workload huge-0-\S+ cannot be placed: 1 node: insufficient cpu/);
    expect(Date.now() - t0).toBeLessThan(15_000);
  }, 60_000);

  it('a closure path missing from the local store is a coded error, not an internal one', async () => {
    // The full spec (Aurora's fields joined with mxc's), as `mxc build --json` prints it.
    const built = await mxc(['build', repoPath('examples', 'hello_world'), '--json']);
    expect(built.exitCode, built.stderr).toBe(0);
    const spec = JSON.parse(built.stdout);
    spec.mxc.closure.push('/nix/store/00000000000000000000000000000000-not-built-here');
    const file = join(dir, 'missing.json');
    await writeFile(file, JSON.stringify(spec));
    const r = await mxc(['submit', file, '--wait'], { env });
    expect(r.exitCode).toBe(2);
    expect(r.stderr).toMatch(
      /not-built-here is not in this machine's Nix store: build it here first .*\[PUSH_PATH_MISSING\]/,
    );
    expect(r.stderr).not.toMatch(/internal error/);
  });

  it('an unchanged submit of a service whose instance was stopped by hand says how to start it again', async () => {
    const job = await buildJob(dir, 'stopped-by-hand', 'sleep 600', 'service = true;');
    expect((await mxc(['submit', job, '--wait', '--timeout', '60'], { env })).exitCode).toBe(0);
    const list = JSON.parse((await mxc(['workloads', 'list', '--json'], { env })).stdout) as {
      id: string;
      job: string;
      status: string;
    }[];
    const mine = list.find((w) => w.job.endsWith('/stopped-by-hand') && w.status === 'running')!;
    expect((await mxc(['workloads', 'stop', mine.id], { env })).exitCode).toBe(0);
    const again = await mxc(['submit', job], { env });
    expect(again.exitCode, again.stderr).toBe(0);
    expect(again.stdout).toMatch(
      /is unchanged \(version 1\); but 0 of its 1 instance\(s\) run: `mxc jobs restart devcluster\/www-data\/devel\/stopped-by-hand` starts them again/,
    );
    // --wait says why the instance ended: its stop event's reason (a stop leaves no error of its own).
    const waited = await mxc(['submit', job, '--wait', '--timeout', '30'], { env });
    expect(waited.exitCode).toBe(1);
    expect(waited.stderr).toContain(`mxc: workload ${mine.id} stopped: stop requested`);
  }, 60_000);
});
