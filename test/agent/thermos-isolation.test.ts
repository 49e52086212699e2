/**
 * One table of tasks run through every isolation mode — plain processes in a PID namespace, the
 * bubblewrap sandbox (each one per process, or one per task with the task supervisor), a QEMU
 * microVM (TCG here, so the table is small) — with identical outcomes: the one Thermos machine
 * decides, only the executor differs.
 */
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { startMicroVm } from '../../agent/microvm/index.js';
import { hostLaunch, sandboxLaunch } from '../../agent/sandbox.js';
import { TaskRunner } from '../../agent/thermos/process-executor.js';
import { taskSupervisorBinary } from '../../agent/thermos/task-supervisor.js';
import { closureOf } from '../../lib/nix.js';
import { Task } from '../../spec/job.js';
import { testAssets } from '../microvm/assets-helper.js';
import type { TaskInput } from '../microvm/task-input.js';
import { buildScript } from './helpers.js';

let step: string;
let closure: string[];
let supervisor: string | undefined;
const dirs: string[] = [];

beforeAll(async () => {
  // `step SECONDS CODE`: sleeps, then exits with CODE. The same store path runs in every mode.
  const s = await buildScript('thermos-step', 'sleep "$1"\nexit "$2"\n');
  step = s.path;
  closure = await closureOf([s.path]);
  supervisor = (await taskSupervisorBinary()) ?? undefined;
}, 120_000);

afterAll(async () => {
  for (const d of dirs) await rm(d, { recursive: true, force: true });
});

async function workDir(): Promise<string> {
  const d = await mkdtemp(join(tmpdir(), 'mxc-thermos-table-'));
  dirs.push(d);
  return d;
}

interface Case {
  what: string;
  task: (step: string) => TaskInput;
  status: 'success' | 'failed';
  states: string[];
  runs: number[];
}

const cases: Case[] = [
  {
    what: 'task max_failures 2 tolerates one failed process (was success in a microVM, failed as a process)',
    task: (s) => ({
      name: 't',
      max_failures: 2,
      processes: [
        { name: 'a', cmdline: `${s} 0 0`, min_duration: 0 },
        { name: 'b', cmdline: `${s} 0 1`, min_duration: 0 },
        { name: 'c', cmdline: `${s} 0.5 0`, min_duration: 0 },
      ],
    }),
    status: 'success',
    states: ['success', 'failed', 'success'],
    runs: [1, 1, 1],
  },
  {
    what: 'a process retried up to its max_failures fails the task; the final still runs',
    task: (s) => ({
      name: 't',
      processes: [
        { name: 'a', cmdline: `${s} 0 3`, max_failures: 2, min_duration: 0 },
        { name: 'fin', cmdline: `${s} 0 0`, final: true, min_duration: 0 },
      ],
    }),
    status: 'failed',
    states: ['failed', 'success'],
    runs: [2, 1],
  },
  {
    what: 'a final ordered after a failed final never starts (was started in a microVM)',
    task: (s) => ({
      name: 't',
      processes: [
        { name: 'a', cmdline: `${s} 0 0`, min_duration: 0 },
        { name: 'f1', cmdline: `${s} 0 1`, final: true, min_duration: 0 },
        { name: 'f2', cmdline: `${s} 0 0`, final: true, min_duration: 0 },
      ],
      constraints: [{ order: ['f1', 'f2'] }],
    }),
    status: 'failed',
    states: ['success', 'failed', 'waiting'],
    runs: [1, 1, 0],
  },
];

type Mode = 'process' | 'sandbox' | 'process per task' | 'sandbox per task' | 'microvm';

async function runIn(mode: Mode, input: TaskInput) {
  const task = Task.parse(input);
  const wd = await workDir();
  if (mode === 'microvm') {
    const vm = await startMicroVm({
      assets: await testAssets(),
      storeDir: '/nix/store',
      closure,
      workDir: wd,
      task,
      env: {},
      cpus: 1,
      memoryMb: 256,
      onLog: () => {},
      gracePeriodMs: 1000,
    });
    const r = await vm.done;
    return { status: r.status, processes: vm.processes() };
  }
  // "per task": one namespace (sandbox) for the whole task, processes forked by the task supervisor.
  const perTask = mode.endsWith(' per task');
  if (perTask && !supervisor) throw new Error('the task supervisor could not be compiled');
  const sup = perTask ? supervisor : undefined;
  const launch = mode.startsWith('process')
    ? hostLaunch({ supervisor: sup })
    : sandboxLaunch({ closure, workDir: wd, network: 'none', supervisor: sup });
  const runner = new TaskRunner({
    workloadId: 'w-table',
    task,
    workDir: wd,
    env: { PATH: '/usr/bin:/bin' },
    launch,
    gracePeriodMs: 1000,
    onLog: () => {},
  });
  runner.start();
  const snap = await runner.done;
  return { status: snap.status, processes: snap.processes };
}

describe.each(['process', 'sandbox', 'process per task', 'sandbox per task', 'microvm'] as const)(
  'isolation %s',
  (mode) => {
    test.each(cases)(
      '$what',
      async ({ task, status, states, runs }) => {
        const r = await runIn(mode, task(step));
        expect({
          status: r.status,
          states: r.processes.map((p) => p.state),
          runs: r.processes.map((p) => p.runs),
        }).toEqual({ status, states, runs });
      },
      120_000,
    );
  },
);
