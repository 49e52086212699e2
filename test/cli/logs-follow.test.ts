/**
 * `mxc workloads logs -f` on a workload that ends, with the real CLI against a real `mxc up`: every line
 * arrives, the burst just before the end and the exit lines included, and the command then ends by itself.
 * The dashboard follows through the same route (`followLogs` in the UI's api.js).
 */
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { execa } from 'execa';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { nixBuild } from '../../lib/nix.js';
import { repoPath } from '../../scheduler/paths.js';
import { eventually } from '../helpers/protocol-agent.js';
import { mxc, startUpCluster, type UpCluster } from './up-harness.js';

const LINES = 2000;

describe('mxc workloads logs -f', () => {
  let cluster: UpCluster;
  let dir: string;
  let env: Record<string, string>;

  beforeAll(async () => {
    cluster = await startUpCluster('logs');
    ({ dir, env } = cluster);
  });

  afterAll(async () => {
    await cluster?.stop();
  });

  /** Builds a one-process batch job running `cmdline` (Nix string) and submits it: its workload id. */
  const submitJob = async (name: string, cmdline: string) => {
    const file = join(dir, `${name}.nix`);
    await writeFile(
      file,
      `let mxc = import ${repoPath('nixlib')} { }; in mxc.Job {
        name = "${name}"; cluster = "devcluster"; role = "www-data"; environment = "devel";
        task = mxc.Task {
          processes = [ (mxc.Process { name = "${name}"; min_duration = 0; cmdline = ''${cmdline}''; }) ];
          resources = mxc.Resources { cpu = 0.1; ram = 16 * mxc.MB; disk = 8 * mxc.MB; };
        };
      }`,
    );
    const [job] = await nixBuild([file]);
    const submitted = await mxc(['submit', job!, '--json'], { env });
    expect(submitted.exitCode, submitted.stderr).toBe(0);
    return (JSON.parse(submitted.stdout).workloads as string[])[0]!;
  };

  it('delivers every line of an ending workload, its exit line last, then ends', async () => {
    // Waits for its follower, then prints a burst right before it exits.
    const id = await submitJob(
      'burst',
      `
            ${'$'}{mxc.busybox} sleep 2
            i=1; while [ $i -le ${LINES} ]; do echo "line $i"; i=$((i + 1)); done
            echo "the very last line"
          `,
    );

    const t0 = Date.now();
    const follow = await execa('node', [repoPath('bin', 'mxc.js'), 'workloads', 'logs', id, '-f'], {
      env,
      reject: false,
      timeout: 60_000,
    });
    expect(follow.exitCode, follow.stderr).toBe(0);
    expect(Date.now() - t0).toBeLessThan(30_000);
    const out = follow.stdout.split('\n');
    const mine = out.filter((l) => l.startsWith('[burst] line '));
    expect(mine).toHaveLength(LINES);
    expect(mine[LINES - 1]).toBe(`[burst] line ${LINES}`);
    expect(out).toContain('[burst] the very last line');
    // The exit lines: the process's and the task's.
    expect(follow.stdout).toMatch(/\[burst\] run 1 exited with code 0 after/);
    const finished = out.findIndex((l) => /task finished: success/.test(l));
    expect(finished).toBeGreaterThan(out.indexOf('[burst] the very last line'));
    // Then it says how the workload ended, on stderr, and why the follow stops.
    expect(follow.stderr).toBe(
      `mxc: ${id} stopped (finished): task finished successfully; no more lines will come`,
    );

    // With -p only that process, its exit line included; --timestamps prefixes each line with its time.
    const one = await mxc(['workloads', 'logs', id, '-p', 'burst', '-f', '--timestamps'], { env });
    expect(one.exitCode).toBe(0);
    const lines = one.stdout.trim().split('\n');
    expect(lines.every((l) => /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z \[burst\] /.test(l))).toBe(true);
    // (the agent may add a line about cleaning up the process group after it)
    expect(lines.some((l) => /\[burst\] run 1 exited with code 0/.test(l))).toBe(true);

    // An unknown process is a usage error naming the ones there are, not an empty log.
    const nope = await mxc(['workloads', 'logs', id, '-p', 'nope'], { env });
    expect(nope.exitCode).toBe(2);
    expect(nope.stderr).toMatch(/has no process "nope"; its processes: .*burst/);
  }, 120_000);

  it('-n 0 -f prints only the lines logged from then on; a bad -n is a usage error naming it', async () => {
    const id = await submitJob(
      'later',
      `
            echo "logged before"
            while [ ! -e ${join(dir, 'go-later')} ]; do ${'$'}{mxc.busybox} sleep 0.2; done
            echo "logged after"
          `,
    );
    await eventually(async () =>
      (await mxc(['workloads', 'logs', id], { env })).stdout.includes('[later] logged before'),
    );

    // Without -f, no lines at all.
    const none = await mxc(['workloads', 'logs', id, '-n', '0'], { env });
    expect([none.exitCode, none.stdout, none.stderr]).toEqual([0, '', '']);
    const follow = execa('node', [repoPath('bin', 'mxc.js'), 'workloads', 'logs', id, '-n', '0', '-f'], {
      env,
      reject: false,
      timeout: 60_000,
    });
    // The follow has begun (its request answered) before the workload logs again.
    await new Promise((r) => setTimeout(r, 2000));
    const shown = JSON.parse((await mxc(['workloads', 'show', id, '--json'], { env })).stdout);
    expect(shown.status).toBe('running');
    await writeFile(join(dir, 'go-later'), '');
    const r = await follow;
    expect(r.exitCode, r.stderr).toBe(0);
    expect(r.stdout).toContain('[later] logged after');
    expect(r.stdout).not.toContain('logged before');

    for (const bad of ['abc', '-1', '100001']) {
      const b = await mxc(['workloads', 'logs', id, '-n', bad], { env });
      expect(b.exitCode).toBe(2);
      expect(b.stderr).toMatch(/^mxc: -n\/--tail takes a number of lines from 0 to 100000/m);
    }
  }, 120_000);
});
