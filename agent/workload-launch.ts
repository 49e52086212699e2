/**
 * Starts one workload's task once its closure is in the store: builds its environment (ports,
 * secrets) and picks the launcher — plain, store view, sandbox, cgroup-wrapped, or a microVM.
 */
import { createServer } from 'node:net';
import os from 'node:os';
import { join } from 'node:path';
import { closureOf } from '../lib/nix.js';
import { expandBindings } from '../spec/bindings.js';
import type { Task } from '../spec/job.js';
import type { LogLine, WorkloadAssignment } from '../spec/messages.js';
import { cgroupLaunch, createWorkloadCgroup } from './cgroups.js';
import type { AgentOptions } from './options.js';
import { writePids } from './orphans.js';
import type { Running } from './running.js';
import { bubblewrapUsable, hostLaunch, sandboxLaunch } from './sandbox.js';
import { provideSecrets } from './secrets.js';
import { type Launcher, plainLaunch } from './thermos/cmdline.js';
import { TASK_LOG_PROCESS, TaskRunner, type TaskSnapshot } from './thermos/process-executor.js';
import { SupervisorPool } from './thermos/supervisor-pool.js';
import { TaskSupervisor, taskSupervisorBinary } from './thermos/task-supervisor.js';

/** The environment every process of the workload starts with; provides its secrets on the way. */
export async function workloadEnv(
  a: WorkloadAssignment,
  workDir: string,
  ports: Record<string, number>,
  secretsDir: string | undefined,
): Promise<Record<string, string>> {
  return {
    PATH: '/run/current-system/sw/bin:/usr/bin:/bin',
    HOME: workDir,
    ...a.spec.mxc.env,
    MXC_WORKLOAD_ID: a.id,
    MXC_JOB: a.spec.name,
    MXC_INSTANCE: String(a.instance),
    ...Object.fromEntries(Object.entries(ports).map(([n, p]) => [`MXC_PORT_${n.toUpperCase()}`, String(p)])),
    ...(await provideSecrets(
      a.spec.mxc.secrets,
      secretsDir,
      workDir,
      a.spec.mxc.isolation === 'microvm' ? '/work' : workDir,
    )),
  };
}

/**
 * The task with the Thermos bindings of its cmdlines expanded (`{{thermos.ports[http]}}` and the
 * like, see spec/bindings.ts). Submit refused unknown ones; one that still cannot be expanded fails
 * the start with a message naming the process and the binding.
 */
export function expandTask(a: WorkloadAssignment, ports: Record<string, number>): Task {
  const values = { ports, taskId: a.id, instance: a.instance, hostname: os.hostname() };
  return {
    ...a.spec.task,
    processes: a.spec.task.processes.map((p) => {
      try {
        return { ...p, cmdline: expandBindings(p.cmdline, values) };
      } catch (err) {
        throw new Error(`process ${p.name}: ${(err as Error).message}`, { cause: err });
      }
    }),
  };
}

export interface LaunchArgs {
  agent: Pick<AgentOptions, 'storeRoot' | 'microvm' | 'gracePeriodMs'>;
  /** `<cgroup2>/mxc` when task limits are enforced, else null. */
  cgroupRoot: string | null;
  /** The workload's state directory (pids.json lives there) and its working directory. */
  dir: string;
  workDir: string;
  env: Record<string, string>;
  /** The full closure of the job's roots, when the caller has computed it already. */
  fullClosure?: string[];
  /** The launcher from an earlier `prepareLaunch` (its supervisor already up), if the caller made one. */
  prepared?: Promise<PreparedLaunch | null> | null;
  onLog: (l: LogLine) => void;
  /** Told each change of the task's processes. */
  onChange: (processes: TaskSnapshot['processes']) => void;
}

export interface PreparedLaunch {
  launch: Launcher;
  /** The task supervisor, already starting, when the launcher has the supervised way. */
  supervisor: TaskSupervisor | null;
}

/**
 * The launcher of a plain or sandboxed task: its isolation, its cgroup (created here and set on
 * `entry`, so cleanup removes it) and, with a task supervisor, the supervisor started at once, so
 * a caller can bring the task's namespace up while it still prepares the rest. The work directory
 * must exist. Whoever does not launch the task after all closes the supervisor.
 */
export async function prepareLaunch(
  entry: Running,
  l: Pick<LaunchArgs, 'agent' | 'cgroupRoot' | 'workDir' | 'onLog'> & {
    fullClosure: () => Promise<string[]>;
    /** Idle supervisors of the `process` isolation (see `processSupervisorPool`). */
    pool?: SupervisorPool | null;
  },
): Promise<PreparedLaunch> {
  const a = entry.assignment;
  const storeRoot = l.agent.storeRoot;
  // One namespace per task with the supervisor; without it (no C compiler) one per process.
  const binary = (await taskSupervisorBinary()) ?? undefined;
  const isolated =
    a.spec.mxc.isolation === 'sandbox'
      ? sandboxLaunch({
          storeRoot,
          closure: await l.fullClosure(),
          workDir: l.workDir,
          network: a.spec.mxc.network,
          supervisor: binary,
        })
      : await processLaunch(storeRoot, binary, l.onLog);
  let launch = isolated;
  if (l.cgroupRoot) {
    const r = a.spec.task.resources;
    entry.cgroup = await createWorkloadCgroup(l.cgroupRoot, a.id, { ramBytes: r?.ram, cpu: r?.cpu });
    launch = cgroupLaunch(isolated, entry.cgroup);
  }
  if (!launch.supervised) return { launch, supervisor: null };
  const diagnostic = (line: string) =>
    l.onLog({ process: TASK_LOG_PROCESS, stream: 'stderr', run: 0, ts: Date.now(), line });
  // A plain task takes a supervisor whose namespace exists already; it enters the task's cgroup
  // itself, before its first fork.
  const pooled = a.spec.mxc.isolation === 'process' ? (l.pool?.take(diagnostic) ?? null) : null;
  if (pooled) {
    if (entry.cgroup) pooled.joinCgroup(entry.cgroup);
    return { launch, supervisor: pooled };
  }
  // The supervisor sees only the workload's id of the environment: each process gets its own.
  const supervisor = new TaskSupervisor(
    launch.supervised.supervisor({ workDir: l.workDir, env: { MXC_WORKLOAD_ID: a.id } }),
    diagnostic,
  );
  return { launch, supervisor };
}

/**
 * Launches the task of `entry`: sets its `stop` (and `cgroup` once created, so cleanup removes it
 * even when the launch fails later) and returns the promise of the task's end.
 */
export async function launchWorkload(
  entry: Running,
  l: LaunchArgs,
): Promise<{ done: Promise<TaskSnapshot> }> {
  const a = entry.assignment;
  const closure = a.spec.mxc.closure;
  const storeRoot = l.agent.storeRoot;
  const grace = l.agent.gracePeriodMs ?? 5000;
  // The sandbox and the microVM expose every path of the closure, not only its roots.
  const fullClosure = async () => l.fullClosure ?? (await closureOf(closure, { store: storeRoot }));
  const task = expandTask(a, entry.ports);
  if (a.spec.mxc.isolation === 'microvm') {
    if (!l.agent.microvm) throw new Error('this agent cannot run microVM workloads');
    const vm = await l.agent.microvm.run({
      assignment: { ...a, spec: { ...a.spec, task } },
      workDir: l.workDir,
      storeDir: join(storeRoot ?? '/', 'nix', 'store'),
      closure: await fullClosure(),
      env: l.env,
      ports: Object.entries(entry.ports).map(([name, hostPort]) => ({
        name,
        hostPort,
        guestPort: hostPort,
      })),
      onLog: l.onLog,
      gracePeriodMs: grace,
    });
    entry.stop = () => vm.stop();
    return { done: vm.done };
  }
  const prepared = (await l.prepared) ?? (await prepareLaunch(entry, { ...l, fullClosure: fullClosure }));
  const launch = prepared.launch;
  // pids.json changes only when a group leader does: with the task supervisor, once per task.
  let recorded = '';
  const runner = new TaskRunner({
    workloadId: a.id,
    task,
    workDir: l.workDir,
    env: l.env,
    launch,
    supervisor: prepared.supervisor ?? undefined,
    gracePeriodMs: grace,
    onLog: l.onLog,
    onChange: (snap) => {
      const pids = runner.pids();
      if (pids.join(',') !== recorded) {
        recorded = pids.join(',');
        void writePids(l.dir, pids).catch(() => {});
      }
      l.onChange(snap.processes);
    },
  });
  runner.start();
  entry.stop = (reason: string) => runner.stop(reason);
  return { done: runner.done };
}

/**
 * The `process` isolation's launcher: the host in a PID namespace of its own (see `hostLaunch`).
 * Without a usable bubblewrap the processes run plainly, and the workload's log says what that costs.
 */
async function processLaunch(
  storeRoot: string | undefined,
  supervisor: string | undefined,
  onLog: (l: LogLine) => void,
): Promise<Launcher> {
  if (await bubblewrapUsable()) return hostLaunch({ storeRoot, supervisor });
  if (storeRoot)
    throw new Error("bubblewrap is needed to run workloads from the agent's own store (--store-root)");
  onLog({
    process: 'mxc',
    stream: 'system',
    run: 0,
    ts: Date.now(),
    line:
      'bubblewrap is not usable here: processes get no PID namespace of their own, so a process that ' +
      'leaves its process group (setsid) survives stop; install bubblewrap',
  });
  return plainLaunch;
}

/**
 * The pool of idle `process`-isolation supervisors (see supervisor-pool.ts), or null when tasks
 * cannot have one (no supervisor binary, no usable bubblewrap, or `size` 0). Its supervisors run at
 * `/` with no environment: nothing in them belongs to a task until one takes it.
 */
export async function processSupervisorPool(opts: {
  storeRoot: string | undefined;
  size: number;
  onDiagnostic: (line: string) => void;
}): Promise<SupervisorPool | null> {
  if (opts.size <= 0) return null;
  const binary = await taskSupervisorBinary();
  if (!binary || !(await bubblewrapUsable())) return null;
  const supervised = hostLaunch({ storeRoot: opts.storeRoot, supervisor: binary }).supervised;
  if (!supervised) return null;
  return new SupervisorPool({
    spec: supervised.supervisor({ workDir: '/', env: {} }),
    size: opts.size,
    onDiagnostic: opts.onDiagnostic,
  });
}

/** A free TCP port on the loopback (the OS picks it). */
export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = createServer();
    srv.unref();
    srv.on('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const addr = srv.address();
      srv.close(() => (typeof addr === 'object' && addr ? resolve(addr.port) : reject(new Error('no port'))));
    });
  });
}
