/**
 * The `sandbox` isolation: a launcher that wraps each process in bubblewrap with every namespace
 * unshared, only the workload's closure (path by path, read-only) and its work directory visible.
 */
import { existsSync } from 'node:fs';
import { isAbsolute, join } from 'node:path';
import { findOnPath as findOnPathOrNull, run } from '../lib/exec.js';
import type { Process } from '../spec/job.js';
import { directArgv, type Launcher } from './thermos/cmdline.js';
import { SUPERVISOR_ARG } from './thermos/task-supervisor.js';

export interface SandboxOptions {
  /** Directory containing `nix/store` (a separate store the agent realised into); default `/`, the host store. */
  storeRoot?: string;
  /** Store paths to expose, normally the full closure of the job's processes. */
  closure: string[];
  /** The workload's directory: bound writable at the same path, and the processes' cwd. */
  workDir: string;
  /** `host` keeps the host's network namespace; `none` leaves only a loopback interface. */
  network: 'host' | 'none';
  /** The bwrap executable; default: found on the agent's PATH. */
  bwrapPath?: string;
  /**
   * A shell inside the closure for cmdlines that are not a plain command (`$VAR`, pipes, …), as
   * [file, ...args before the script]. Default: the first closure path with `bin/sh`, or with a
   * `busybox` binary (run as `busybox sh`).
   */
  shell?: string[];
  /**
   * The task supervisor binary (thermos/task-supervisor.ts): with it the launcher also offers one
   * sandbox per task (`supervised`), the binary bound read-only at SANDBOX_SUPERVISOR inside.
   */
  supervisor?: string;
}

/** Where the task supervisor appears inside a sandbox. */
export const SANDBOX_SUPERVISOR = '/.mxc/task-supervisor';

const STORE_PATH = /^\/nix\/store\/[0-9a-df-np-sv-z]{32}-[A-Za-z0-9+\-._?=]+$/;

/** `name` on the agent's PATH, or the reason it cannot sandbox without it. */
function findOnPath(name: string): string {
  const path = findOnPathOrNull(name);
  if (path) return path;
  throw new Error(
    `${name} was not found on PATH; install bubblewrap (apt-get install bubblewrap) to use isolation "sandbox"`,
  );
}

function hostPath(storeRoot: string, storePath: string): string {
  return storeRoot === '/' ? storePath : join(storeRoot, storePath);
}

function findShell(storeRoot: string, closure: string[]): string[] | null {
  for (const p of closure) {
    if (existsSync(hostPath(storeRoot, `${p}/bin/sh`))) return [`${p}/bin/sh`];
    if (existsSync(hostPath(storeRoot, `${p}/busybox`))) return [`${p}/busybox`, 'sh'];
  }
  return null;
}

function validate(opts: SandboxOptions): void {
  const root = opts.storeRoot ?? '/';
  if (!isAbsolute(root)) throw new Error(`sandbox storeRoot must be an absolute path, got "${root}"`);
  if (!isAbsolute(opts.workDir))
    throw new Error(`sandbox workDir must be an absolute path, got "${opts.workDir}"`);
  for (const reserved of ['/nix', '/proc', '/dev']) {
    if (opts.workDir === reserved || opts.workDir.startsWith(`${reserved}/`)) {
      throw new Error(
        `sandbox workDir ${opts.workDir} lies under ${reserved}, which the sandbox provides itself; use a directory elsewhere`,
      );
    }
  }
  for (const p of opts.closure) {
    if (!STORE_PATH.test(p))
      throw new Error(`sandbox closure entry "${p}" is not a /nix/store/<hash>-<name> path`);
  }
}

/**
 * The bubblewrap arguments (everything before the command). Why each choice:
 * - `--unshare-all` (+ `--share-net` for network host): new user/pid/ipc/uts/cgroup/net namespaces.
 * - `--die-with-parent`: if the agent dies, its sandboxes die with it instead of running unsupervised.
 * - no `--new-session`: it exists to stop TIOCSTI injection into a controlling terminal, and our
 *   processes have none (the supervisor's spawn already calls setsid). Without it the payload stays
 *   in bwrap's process group, so the supervisor's group SIGTERM reaches it directly.
 * - each closure path bound read-only on its own: the rest of the store (other jobs' paths) stays
 *   invisible. `/tmp` is a private tmpfs; `/proc` and `/dev` are fresh; nothing else of the host.
 * - the work dir is bound writable at the same path, not at /work: the paths in the environment the
 *   agent builds (and in logs) then mean the same thing inside and outside.
 */
export function bwrapArgs(opts: SandboxOptions): string[] {
  validate(opts);
  const root = opts.storeRoot ?? '/';
  const args = ['--unshare-all'];
  if (opts.network === 'host') args.push('--share-net');
  args.push('--die-with-parent');
  for (const p of [...new Set(opts.closure)].sort()) args.push('--ro-bind', hostPath(root, p), p);
  args.push('--proc', '/proc', '--dev', '/dev', '--tmpfs', '/tmp');
  // After --tmpfs /tmp, so a work dir under /tmp is bound on top of the private tmpfs.
  args.push('--bind', opts.workDir, opts.workDir, '--chdir', opts.workDir);
  if (opts.supervisor) args.push('--ro-bind', opts.supervisor, SANDBOX_SUPERVISOR);
  // bwrap's root is a tmpfs on which it created the mount points (/nix/store among them); once they
  // exist, make it read-only so nobody adds files next to the store paths.
  args.push('--remount-ro', '/');
  return args;
}

/**
 * A TaskRunner launcher running each process under bubblewrap (see `bwrapArgs`); with
 * `opts.supervisor`, also one bubblewrap per task with the task supervisor in it.
 */
export function sandboxLaunch(opts: SandboxOptions): Launcher {
  const prefix = bwrapArgs({ ...opts, supervisor: undefined });
  const bwrap = opts.bwrapPath ?? findOnPath('bwrap');
  const root = opts.storeRoot ?? '/';
  // Looked for only when a cmdline needs it (most are a store script, run directly).
  let shell: string[] | null | undefined = opts.shell;
  const inClosure = (file: string): boolean =>
    opts.closure.some((p) => file === p || file.startsWith(`${p}/`));
  const argv = (proc: Process): string[] => {
    const direct = directArgv(proc.cmdline);
    let command: string[];
    if (direct) {
      if (!inClosure(direct.file)) {
        throw new Error(
          `process ${proc.name}: ${direct.file} is not inside the workload's closure, so the sandbox cannot see it; ` +
            'use a store path from the job (mxc.closure)',
        );
      }
      command = [direct.file, ...direct.args];
    } else {
      shell ??= findShell(root, opts.closure);
      if (!shell) {
        throw new Error(
          `process ${proc.name}: cmdline is a shell command line but the closure has no shell (bin/sh or busybox); ` +
            'make the process a store script, or add a shell to the closure',
        );
      }
      command = [...shell, '-c', proc.cmdline];
    }
    return command;
  };
  const launch: Launcher = (proc, ctx) => ({
    file: bwrap,
    args: [...prefix, '--', ...argv(proc)],
    env: ctx.env,
    cwd: ctx.workDir,
    leaderIsMonitor: true,
  });
  if (opts.supervisor) {
    const withSupervisor = bwrapArgs(opts);
    launch.supervised = {
      argv,
      supervisor: (ctx) => ({
        file: bwrap,
        args: [...withSupervisor, '--', SANDBOX_SUPERVISOR, SUPERVISOR_ARG],
        env: ctx.env,
        cwd: ctx.workDir,
      }),
    };
  }
  return launch;
}

let probed: Promise<boolean> | null = null;

/** `bubblewrapAvailable()` for the agent's own bwrap, probed once per agent process. */
export function bubblewrapUsable(): Promise<boolean> {
  probed ??= bubblewrapAvailable();
  return probed;
}

/** Whether bubblewrap exists and can create its namespaces here (a real sandbox start, not just --version). */
export async function bubblewrapAvailable(bwrapPath?: string): Promise<boolean> {
  try {
    const bwrap = bwrapPath ?? findOnPath('bwrap');
    const probe = [
      '--unshare-all',
      '--die-with-parent',
      '--ro-bind',
      '/',
      '/',
      '--proc',
      '/proc',
      '--dev',
      '/dev',
    ];
    await run(bwrap, [...probe, '--', 'true'], { timeoutMs: 10_000 });
    return true;
  } catch {
    return false;
  }
}

/**
 * The `process` isolation: the host as it is, in a PID namespace of its own. The namespace is what
 * makes stop complete: when the payload exits (or is killed), bubblewrap's init inside the namespace
 * exits and the kernel kills every process left in it, including a `setsid` child that left the
 * process group the supervisor signals. bwrap's init (not the payload) is pid 1 there, so the payload
 * gets SIGTERM like anywhere else (a pid 1 ignores signals it has no handler for). `/proc` is the
 * namespace's own, so the pids a process sees and the ones it can read agree. With `storeRoot` (the
 * agent's own chroot store), `/nix/store` is that store, so processes run exactly what it realised.
 */
export function hostLaunch(
  opts: { storeRoot?: string; bwrapPath?: string; supervisor?: string } = {},
): Launcher {
  if (opts.storeRoot !== undefined && !isAbsolute(opts.storeRoot))
    throw new Error(`storeRoot must be an absolute path, got "${opts.storeRoot}"`);
  const bwrap = opts.bwrapPath ?? findOnPath('bwrap');
  const prefix = ['--dev-bind', '/', '/', '--unshare-pid', '--die-with-parent', '--proc', '/proc'];
  if (opts.storeRoot && opts.storeRoot !== '/')
    prefix.push('--ro-bind', join(opts.storeRoot, 'nix', 'store'), '/nix/store');
  const argv = (proc: Process): string[] => {
    const direct = directArgv(proc.cmdline);
    return direct ? [direct.file, ...direct.args] : ['/bin/sh', '-c', proc.cmdline];
  };
  const launch: Launcher = (proc, ctx) => ({
    file: bwrap,
    args: [...prefix, '--chdir', ctx.workDir, '--', ...argv(proc)],
    env: ctx.env,
    cwd: ctx.workDir,
    leaderIsMonitor: true,
  });
  const supervisor = opts.supervisor;
  // A supervisor in the host store would be hidden behind the agent's own store: skip it there.
  if (supervisor && !(opts.storeRoot && opts.storeRoot !== '/' && supervisor.startsWith('/nix/store/'))) {
    // One PID namespace for the whole task: the supervisor forks each process inside it.
    launch.supervised = {
      argv,
      supervisor: (ctx) => ({
        file: bwrap,
        args: [...prefix, '--chdir', ctx.workDir, '--', supervisor, SUPERVISOR_ARG],
        env: ctx.env,
        cwd: ctx.workDir,
      }),
    };
  }
  return launch;
}
