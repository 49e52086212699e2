/**
 * `mxc jobs plan` (a dry run: new / changed / unchanged, instances, closure diff, fit; nothing changes)
 * and `mxc jobs revert`, with the real CLI against a real `mxc up`.
 */
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { nixBuild } from '../../lib/nix.js';
import { repoPath } from '../../scheduler/paths.js';
import { mxc, startUpCluster, type UpCluster } from './up-harness.js';

/** hello_world with another greeting and cpu: the same job key, a changed spec. */
async function helloVariant(dir: string, greeting: string, cpu: string): Promise<string> {
  const file = join(dir, `hello-${greeting}-${cpu}.nix`);
  await writeFile(
    file,
    `let mxc = import ${repoPath('nixlib')} { }; in mxc.Service {
      cluster = "devcluster"; role = "www-data"; environment = "devel";
      task = mxc.Task {
        processes = [ (mxc.Process { name = "hello_world"; cmdline = ''
          echo "${greeting}"
          while true; do \${mxc.busybox} sleep 3600; done
        ''; }) ];
        resources = mxc.Resources { cpu = ${cpu}; ram = 32 * mxc.MB; disk = 8 * mxc.MB; };
      };
    }`,
  );
  const [out] = await nixBuild([file]);
  return out!;
}

describe('mxc jobs plan and revert', () => {
  let cluster: UpCluster;
  let dir: string;
  let env: Record<string, string>;
  const plan = async (path: string) => {
    const r = await mxc(['jobs', 'plan', path, '--json'], { env });
    expect(r.exitCode, r.stderr).toBe(0);
    return JSON.parse(r.stdout);
  };

  beforeAll(async () => {
    cluster = await startUpCluster('plan');
    ({ dir, env } = cluster);
  });

  afterAll(async () => {
    await cluster?.stop();
  });

  it('says what a submit would do and changes nothing', async () => {
    const [v1] = await nixBuild([repoPath('examples', 'hello_world')]);
    const fresh = await plan(v1!);
    expect(fresh).toMatchObject({
      job: 'devcluster/www-data/devel/hello_world',
      status: 'new',
      next_version: 1,
      instances: { place: 1, replace: 0, stop: 0 },
      fits: true,
    });
    // The scripts, busybox and the sidecar with mxc's fields; none of it in the cache yet.
    expect(fresh.closure.paths).toBeGreaterThanOrEqual(2);
    expect(fresh.closure.missing_from_cache.length).toBeGreaterThan(0);
    // Nothing was submitted or uploaded.
    expect(JSON.parse((await mxc(['jobs', 'list', '--json'], { env })).stdout)).toEqual([]);
    const status = JSON.parse((await mxc(['cluster', 'status', '--json'], { env })).stdout);
    expect(status.cache_paths).toBe(0);

    expect((await mxc(['submit', v1!, '--wait', '--timeout', '60'], { env })).exitCode).toBe(0);
    const same = await plan(v1!);
    expect(same).toMatchObject({ status: 'unchanged', instances: { place: 0, replace: 0, stop: 0 } });

    const v2 = await helloVariant(dir, 'Hello again', '0.5');
    const changed = await plan(v2);
    expect(changed).toMatchObject({
      status: 'changed',
      current_version: 1,
      next_version: 2,
      rolling: false,
      instances: { place: 0, replace: 1, stop: 0 },
      fits: true,
    });
    expect(changed.closure.added).toHaveLength(1);
    expect(changed.closure.removed).toHaveLength(1);
    expect(changed.closure.added[0]).toMatch(
      /-mxc-process-devcluster-www-data-devel-hello_world-hello_world$/,
    );
    expect(changed.processes.changed).toContain('hello_world');
    const table = await mxc(['jobs', 'plan', v2], { env });
    expect(table.stdout).toMatch(/hello_world: changed \(version 1 → 2\)/);
    expect(table.stdout).toMatch(/instances {2}0 to place, 1 to replace, 0 to stop/);
    expect(table.stdout).toMatch(/closure {4}\d+ path\(s\), .*: \d+ added, \d+ removed/);
    expect(table.stdout).toMatch(/store paths changed: .*hello_world/);

    const huge = await plan(await helloVariant(dir, 'Hello big', '64'));
    expect(huge.fits).toBe(false);
    expect(huge.reasons[0]).toMatch(/insufficient cpu \(need 64/);

    // Still version 1, still running.
    const job = JSON.parse((await mxc(['jobs', 'show', 'hello_world', '--json'], { env })).stdout);
    expect(job.current_version).toBe(1);
  }, 120_000);

  it('reverts a job to an earlier version’s spec', async () => {
    const v2 = await helloVariant(dir, 'Hello again', '0.5');
    expect((await mxc(['submit', v2, '--wait', '--timeout', '60'], { env })).exitCode).toBe(0);
    const r = await mxc(['jobs', 'revert', 'devcluster/www-data/devel/hello_world', '1'], { env });
    expect(r.exitCode, r.stderr).toBe(0);
    expect(r.stdout).toMatch(/reverted to the spec of version 1, now version 3/);
    const versions = JSON.parse(
      (await mxc(['jobs', 'versions', 'devcluster/www-data/devel/hello_world', '--json'], { env })).stdout,
    ) as { version: number; spec: unknown }[];
    const byVersion = new Map(versions.map((v) => [v.version, JSON.stringify(v.spec)]));
    expect(byVersion.get(3)).toBe(byVersion.get(1));
    // Named by a short name, the job is said by its key, not by the id the lookup found.
    const bad = await mxc(['jobs', 'revert', 'hello_world', '9'], { env });
    expect(bad.exitCode).toBe(2);
    expect(bad.stderr).toMatch(
      /^mxc: job devcluster\/www-data\/devel\/hello_world has no version 9; its versions: 3, 2, 1$/m,
    );
  }, 120_000);
});
