/**
 * Resource limits with cgroup v2: each workload's processes go into `<cgroup2 mount>/mxc/<workload>`
 * with `memory.max` and `cpu.max` from the task's resources. Used only where the unified hierarchy
 * offers the memory and cpu controllers and the agent may write it; elsewhere limits are not enforced
 * and the capabilities say so (`cgroups: false`).
 */
import { mkdir, readFile, rmdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import type { Launcher, LaunchSpec } from './thermos/cmdline.js';

/** The cgroup2 mount points listed in /proc/mounts, /sys/fs/cgroup first. */
async function cgroup2Mounts(): Promise<string[]> {
  const mounts = await readFile('/proc/mounts', 'utf8').catch(() => '');
  const out = mounts
    .split('\n')
    .map((l) => l.split(' '))
    .filter((f) => f[2] === 'cgroup2')
    .map((f) => f[1]!);
  return out.sort((a, b) => Number(b === '/sys/fs/cgroup') - Number(a === '/sys/fs/cgroup'));
}

const hasControllers = (text: string) => {
  const set = new Set(text.trim().split(/\s+/));
  return set.has('memory') && set.has('cpu');
};

/**
 * Prepares `<mount>/mxc` with the memory and cpu controllers enabled for its children, and proves a
 * child can be made with them. Returns that directory, or null when cgroup v2 limits are not usable.
 */
export async function prepareCgroupRoot(): Promise<string | null> {
  for (const mount of await cgroup2Mounts()) {
    try {
      if (!hasControllers(await readFile(join(mount, 'cgroup.controllers'), 'utf8'))) continue;
      const root = join(mount, 'mxc');
      await mkdir(root, { recursive: true });
      // The top cgroup may delegate controllers while holding processes; our `mxc` one holds none.
      await writeFile(join(mount, 'cgroup.subtree_control'), '+memory +cpu');
      await writeFile(join(root, 'cgroup.subtree_control'), '+memory +cpu');
      const probe = join(root, `probe-${process.pid}`);
      await mkdir(probe, { recursive: true });
      const ok = hasControllers(await readFile(join(probe, 'cgroup.controllers'), 'utf8'));
      await rmdir(probe);
      if (ok) return root;
    } catch {
      // not writable here, or the controllers are bound to a v1 hierarchy: try the next mount
    }
  }
  return null;
}

export interface CgroupLimits {
  /** Bytes of memory (memory.max); swap is disabled so the limit is a real one. */
  ramBytes?: number;
  /** Cores (cpu.max quota per 100 ms period). */
  cpu?: number;
}

/** Creates the workload's cgroup with its limits; returns its directory. */
export async function createWorkloadCgroup(
  root: string,
  workloadId: string,
  limits: CgroupLimits,
): Promise<string> {
  if (!/^[A-Za-z0-9_.-]+$/.test(workloadId))
    throw new Error(`workload id "${workloadId}" is not a valid cgroup name`);
  const dir = join(root, workloadId);
  await mkdir(dir, { recursive: true });
  if (limits.ramBytes && limits.ramBytes > 0) {
    await writeFile(join(dir, 'memory.max'), String(Math.floor(limits.ramBytes)));
    await writeFile(join(dir, 'memory.swap.max'), '0').catch(() => {}); // absent without swap accounting
  }
  if (limits.cpu && limits.cpu > 0) {
    const period = 100_000;
    await writeFile(join(dir, 'cpu.max'), `${Math.max(1000, Math.round(limits.cpu * period))} ${period}`);
  }
  return dir;
}

/** Kills anything left in the cgroup (cgroup.kill, Linux ≥ 5.14) and removes it. */
export async function removeWorkloadCgroup(dir: string): Promise<void> {
  await writeFile(join(dir, 'cgroup.kill'), '1').catch(() => {});
  for (let i = 0; i < 50; i++) {
    try {
      await rmdir(dir);
      return;
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code;
      if (code === 'ENOENT') return;
      if (code !== 'EBUSY') throw err;
      await new Promise((r) => setTimeout(r, 20));
    }
  }
}

/** `spec` entering the cgroup before it execs (see `cgroupLaunch`). */
function inCgroup(spec: LaunchSpec, cgroupDir: string): LaunchSpec {
  return {
    ...spec,
    file: '/bin/sh',
    args: [
      '-c',
      'echo $$ > "$1/cgroup.procs" && shift && exec "$@"',
      'mxc-cgroup',
      cgroupDir,
      spec.file,
      ...spec.args,
    ],
  };
}

/**
 * Wraps a launcher so each run enters the cgroup before it execs: a fixed `/bin/sh` line writes its
 * own pid into `cgroup.procs` and execs the real command (passed as arguments, never interpolated),
 * so every child it forks is born inside the cgroup. With a task supervisor only the supervisor is
 * wrapped, once per task: the processes it forks are born inside.
 */
export function cgroupLaunch(inner: Launcher, cgroupDir: string): Launcher {
  const launch: Launcher = (proc, ctx) => inCgroup(inner(proc, ctx), cgroupDir);
  const supervised = inner.supervised;
  if (supervised) {
    launch.supervised = {
      argv: supervised.argv,
      supervisor: (ctx) => inCgroup(supervised.supervisor(ctx), cgroupDir),
    };
  }
  return launch;
}
