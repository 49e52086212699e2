/**
 * Process starts through the agent's executor alone (no coordinator, no network): a task of K
 * processes run one after another (an order chain), in each launch mode, rounds interleaved so
 * every mode sees the same load. Gives each mode's cost per process start next to a bare spawn
 * through the same executor, and the one-time cost of a task's namespace (K = 1 against K = 10).
 */
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { hostLaunch, sandboxLaunch } from '../../agent/sandbox.js';
import { type Launcher, plainLaunch } from '../../agent/thermos/cmdline.js';
import { TaskRunner } from '../../agent/thermos/process-executor.js';
import { SupervisorPool } from '../../agent/thermos/supervisor-pool.js';
import { type TaskSupervisor, taskSupervisorBinary } from '../../agent/thermos/task-supervisor.js';
import { Task } from '../../spec/job.js';
import { median } from './stats.js';

export interface ModeCost {
  mode: string;
  /** Median ms of a K = 1 task (namespace + one process) and the extra ms per further process. */
  oneProcessTask: number;
  perFurtherProcess: number;
}

const LONG = 10;

function chain(k: number, cmdline: string): Task {
  const names = Array.from({ length: k }, (_, i) => `p${i}`);
  return Task.parse({
    name: 'chain',
    processes: names.map((name) => ({ name, cmdline, min_duration: 0 })),
    constraints: k > 1 ? [{ order: names }] : [],
  });
}

async function runTask(
  task: Task,
  launch: Launcher,
  workDir: string,
  pool?: SupervisorPool,
): Promise<number> {
  const t0 = performance.now();
  let supervisor: TaskSupervisor | undefined;
  if (pool) {
    supervisor = pool.take(() => {}) ?? undefined;
    if (!supervisor) throw new Error('the bench pool had no idle supervisor');
  }
  const runner = new TaskRunner({
    workloadId: 'bench',
    task,
    workDir,
    env: { PATH: '/usr/bin:/bin' },
    launch,
    supervisor,
    onLog: () => {},
  });
  runner.start();
  const snap = await runner.done;
  if (snap.status !== 'success') throw new Error(`bench task failed: ${snap.reason ?? snap.status}`);
  const took = performance.now() - t0;
  // The replacement is spawned off the start path, as in the agent: not inside another mode's time.
  while (pool && pool.available === 0) await new Promise((r) => setTimeout(r, 2));
  return took;
}

/**
 * `busybox` (a static binary inside `closure`, run as `busybox true`) is the process every mode
 * starts, so the sandbox can see it too.
 */
export async function executorStarts(
  busybox: string,
  closure: string[],
  rounds: number,
): Promise<ModeCost[]> {
  const supervisor = (await taskSupervisorBinary()) ?? undefined;
  const workDir = await mkdtemp(join(tmpdir(), 'mxc-bench-exec-'));
  const cmdline = `${busybox} true`;
  const modes: [string, Launcher, SupervisorPool?][] = [
    ['bare spawn (no namespace)', plainLaunch],
    ['process, a namespace per process', hostLaunch()],
    ['sandbox, a sandbox per process', sandboxLaunch({ closure, workDir, network: 'none' })],
  ];
  let pool: SupervisorPool | undefined;
  if (supervisor) {
    const perTask = hostLaunch({ supervisor });
    modes.push(['process, one namespace per task', perTask]);
    // The agent's way for plain tasks: the namespace taken from a pool, created before the task.
    pool = new SupervisorPool({
      spec: perTask.supervised!.supervisor({ workDir: '/', env: {} }),
      refillAfterMs: 0,
      onDiagnostic: () => {},
    });
    modes.push(['process, one pooled namespace per task', perTask, pool]);
    modes.push([
      'sandbox, one sandbox per task',
      sandboxLaunch({ closure, workDir, network: 'none', supervisor }),
    ]);
  }
  const one = new Map<string, number[]>();
  const ten = new Map<string, number[]>();
  try {
    for (let i = 0; i < rounds; i++) {
      for (const [mode, launch, p] of modes) {
        one.set(mode, [...(one.get(mode) ?? []), await runTask(chain(1, cmdline), launch, workDir, p)]);
        ten.set(mode, [...(ten.get(mode) ?? []), await runTask(chain(LONG, cmdline), launch, workDir, p)]);
      }
    }
  } finally {
    await pool?.close();
    await rm(workDir, { recursive: true, force: true });
  }
  return modes.map(([mode]) => {
    const t1 = median(one.get(mode)!);
    const t10 = median(ten.get(mode)!);
    return { mode, oneProcessTask: t1, perFurtherProcess: (t10 - t1) / (LONG - 1) };
  });
}
