/**
 * Runs one workload in a microVM: builds its store view and initramfs, spawns QEMU in its own
 * process group, demultiplexes the console into LogLines, drives the guest with the Thermos machine, and
 * makes sure QEMU never outlives the workload (clean poweroff, then SIGKILL to the group).
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { appendFile, copyFile, mkdir, rm, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { dir as tmpDir } from 'tmp-promise';
import { lineSplitter } from '../../lib/line-reader.js';
import type { Task } from '../../spec/job.js';
import type { LogLine } from '../../spec/messages.js';
import { type ProcessView, type TaskOutcome, ThermosMachine } from '../thermos/machine.js';
import type { MicroVmAssets } from './assets.js';
import { guestOverlay } from './guest-files.js';
import { formatCommand, type HostCommand, parseGuestLine } from './guest-protocol.js';
import { detectHypervisor, kvmBootsKernel, QEMU } from './hypervisor.js';
import { qemuArgs } from './qemu-args.js';
import { buildStoreView } from './store-view.js';

export interface MicroVmOptions {
  assets: MicroVmAssets;
  /** Host directory holding the store paths (normally '/nix/store', or <storeRoot>/nix/store). */
  storeDir: string;
  /** Full store paths that must be visible in the guest; only these are. */
  closure: string[];
  /** Host per-workload dir, shared writable into the guest at /work. */
  workDir: string;
  task: Task;
  env: Record<string, string>;
  cpus: number;
  memoryMb: number;
  /** Forwarded with user-mode networking; the guest sees MXC_PORT_<NAME>=guestPort. */
  ports?: { name: string; hostPort: number; guestPort: number }[];
  onLog: (line: LogLine) => void;
  onProcessExit?: (e: { process: string; run: number; exitCode: number }) => void;
  /** TERM → KILL delay for the guest's processes (default 5 s). */
  gracePeriodMs?: number;
  /** Give the guest a network even without ports (default: only when ports are given). */
  network?: boolean;
  /** Address forwarded ports listen on (default 127.0.0.1). */
  hostAddress?: string;
  /** Where the store view, initramfs and pid file go (default: a new dir under the OS temp dir, removed at exit). */
  runDir?: string;
  /** Fail when the guest is not ready in this time (default 20 s with KVM, 90 s with TCG). */
  bootTimeoutMs?: number;
  /** Force an accelerator instead of detecting one. */
  accel?: 'kvm' | 'tcg';
}

export type MicroVmResult = TaskOutcome;

export interface MicroVmHandle {
  pid: number;
  done: Promise<MicroVmResult>;
  /** Asks the guest to stop its processes and power off; kills QEMU if it has not exited in time. */
  stop(): Promise<void>;
  /** Per-process state (for workload_status reports). */
  processes(): ProcessView[];
}

/** Margin for the guest to unmount and power off after its processes are gone. */
const SHUTDOWN_MARGIN_MS = 10_000;

function validate(o: MicroVmOptions): void {
  if (!Number.isInteger(o.cpus) || o.cpus < 1 || o.cpus > 64)
    throw new Error(`cpus must be an integer from 1 to 64, got ${o.cpus}`);
  if (!Number.isInteger(o.memoryMb) || o.memoryMb < 64) {
    throw new Error(
      `memoryMb must be an integer of at least 64 (the guest kernel needs it), got ${o.memoryMb}`,
    );
  }
  for (const p of o.ports ?? []) {
    for (const n of [p.hostPort, p.guestPort]) {
      if (!Number.isInteger(n) || n < 1 || n > 65535)
        throw new Error(`port ${p.name}: ${n} is not a TCP port (1-65535)`);
    }
  }
}

async function mustBeDir(what: string, p: string): Promise<void> {
  const st = await stat(p).catch(() => null);
  if (!st?.isDirectory())
    throw new Error(`${what} ${p} is not a directory; create it before starting the microVM`);
}

/** The environment inside the guest: the caller's, with guest ports and guest-sensible defaults. */
function guestEnv(o: MicroVmOptions): Record<string, string> {
  const env: Record<string, string> = { PATH: '/bin', HOME: '/work', TMPDIR: '/tmp', ...o.env };
  for (const p of o.ports ?? []) env[`MXC_PORT_${p.name.toUpperCase()}`] = String(p.guestPort);
  return env;
}

export async function startMicroVm(o: MicroVmOptions): Promise<MicroVmHandle> {
  validate(o);
  await mustBeDir('workDir', o.workDir);
  await mustBeDir('storeDir', o.storeDir);
  const hv = await detectHypervisor();
  if (!hv.qemu) throw new Error(`${QEMU} is not installed; install qemu-system-x86 to run microVM workloads`);
  const accel = o.accel ?? (hv.kvm && (await kvmBootsKernel(o.assets.kernel)) ? 'kvm' : 'tcg');
  if (hv.kvm && accel === 'tcg' && !o.accel)
    o.onLog({
      process: 'mxc',
      stream: 'system',
      run: 0,
      ts: Date.now(),
      line: `KVM opens but cannot boot kernel ${o.assets.kernelRelease} here (nested hypervisor?): using TCG`,
    });
  if (accel === 'kvm' && !hv.kvm)
    throw new Error('accel kvm was asked for, but KVM is not usable on this machine; use tcg');

  // A run directory of our own (none given) goes when the VM does.
  const own = o.runDir ? undefined : await tmpDir({ prefix: 'mxc-microvm-', unsafeCleanup: true });
  const runDir = o.runDir ?? own!.path;
  try {
    await mkdir(runDir, { recursive: true });
    const storeView = join(runDir, 'store');
    await rm(storeView, { recursive: true, force: true });
    await buildStoreView(o.storeDir, o.closure, storeView);
    const network = o.network ?? (o.ports ?? []).length > 0;
    const initramfs = join(runDir, 'initramfs.cpio');
    await copyFile(o.assets.initramfs, initramfs);
    await appendFile(initramfs, guestOverlay(o.task, guestEnv(o), network));
    const args = qemuArgs({
      accel,
      kernel: o.assets.kernel,
      initramfs,
      storeView,
      workDir: o.workDir,
      cpus: o.cpus,
      memoryMb: o.memoryMb,
      pidFile: join(runDir, 'qemu.pid'),
      network,
      ports: o.ports ?? [],
      hostAddress: o.hostAddress ?? '127.0.0.1',
    });
    const child = await spawnQemu(args);
    return supervise(o, child, accel, async () => {
      await own?.cleanup();
    });
  } catch (e) {
    await own?.cleanup();
    throw e;
  }
}

/**
 * QEMU in its own process group (so the whole group can be killed), under `setpriv --pdeathsig`
 * when available so it dies with the agent even if the agent is killed without cleanup.
 */
async function spawnQemu(args: string[]): Promise<ChildProcess> {
  const setpriv = await stat('/usr/bin/setpriv').then(
    () => true,
    () => false,
  );
  const [file, argv] = setpriv ? ['/usr/bin/setpriv', ['--pdeathsig', 'KILL', QEMU, ...args]] : [QEMU, args];
  const child = spawn(file, argv as string[], { detached: true, stdio: ['pipe', 'pipe', 'pipe'] });
  await new Promise<void>((resolve, reject) => {
    child.once('spawn', resolve);
    child.once('error', (e) => reject(new Error(`could not start ${QEMU}: ${e.message}`, { cause: e })));
  });
  return child;
}

function supervise(
  o: MicroVmOptions,
  child: ChildProcess,
  accel: 'kvm' | 'tcg',
  cleanup: () => Promise<void>,
): MicroVmHandle {
  const pid = child.pid!;
  const grace = o.gracePeriodMs ?? 5_000;
  const log = (process: string, stream: LogLine['stream'], run: number, line: string) =>
    o.onLog({ process, stream, run, ts: Date.now(), line });
  let ready = false;
  let exited = false;
  let fatal: string | undefined;
  let result: MicroVmResult | null = null;
  let killTimer: NodeJS.Timeout | undefined;

  const send = (c: HostCommand) => {
    if (!exited && child.stdin?.writable) child.stdin.write(formatCommand(c));
  };
  const killGroup = () => {
    try {
      process.kill(-pid, 'SIGKILL');
    } catch {
      // already gone
    }
  };
  const killAfter = (ms: number) => {
    if (killTimer) clearTimeout(killTimer);
    killTimer = setTimeout(() => {
      log('vm', 'system', 0, `microVM did not power off in ${ms} ms; killing QEMU`);
      killGroup();
    }, ms);
  };

  // The guest learns of a run only when its `run` command arrives: a signal for a run it has not
  // reported started yet is held until it has, so it cannot be lost.
  const guestStarted = new Map<string, number>();
  const heldSignal = new Map<string, { run: number; signal: 'TERM' | 'KILL' }>();
  const machine = new ThermosMachine(
    o.task,
    {
      start: (process, run) => send({ kind: 'run', process, run }),
      signal: (process, run, signal) => {
        if (guestStarted.get(process) === run) send({ kind: 'kill', process, signal });
        else heldSignal.set(process, { run, signal });
      },
      note: (process, run, line) => log(process, 'system', run, line),
      finished: (r) => {
        result = r;
        send({ kind: 'off' });
        killAfter(SHUTDOWN_MARGIN_MS);
      },
    },
    { gracePeriodMs: grace },
  );

  const bootTimeout = o.bootTimeoutMs ?? (accel === 'kvm' ? 20_000 : 90_000);
  const bootTimer = setTimeout(() => {
    if (ready) return;
    fatal = `the guest was not ready after ${bootTimeout} ms`;
    killGroup();
  }, bootTimeout);

  const stdout = lineSplitter((raw) => {
    const ev = parseGuestLine(raw);
    switch (ev.kind) {
      case 'ready':
        ready = true;
        clearTimeout(bootTimer);
        log('vm', 'system', 0, 'guest ready');
        machine.begin();
        break;
      case 'started': {
        guestStarted.set(ev.process, ev.run);
        const held = heldSignal.get(ev.process);
        heldSignal.delete(ev.process);
        if (held?.run === ev.run) send({ kind: 'kill', process: ev.process, signal: held.signal });
        break;
      }
      case 'output':
        log(ev.process, ev.stream, ev.run, ev.line);
        break;
      case 'exit':
        o.onProcessExit?.({ process: ev.process, run: ev.run, exitCode: ev.exitCode });
        machine.exited(ev.process, ev.run, ev.exitCode);
        break;
      case 'warning':
        log('vm', 'system', 0, ev.line);
        break;
      case 'fatal':
        fatal = ev.line;
        log('vm', 'system', 0, ev.line);
        break;
      case 'noise':
        if (ev.line.trim()) log('vm', 'system', 0, ev.line);
        break;
    }
  });
  const stderr = lineSplitter((l) => {
    if (l.trim()) log('vm', 'system', 0, `qemu: ${l}`);
  });
  child.stdout!.on('data', (c: Buffer) => stdout.write(c));
  child.stderr!.on('data', (c: Buffer) => stderr.write(c));
  child.stdin!.on('error', () => {}); // EPIPE once QEMU is gone; the exit handler reports it

  const done = new Promise<MicroVmResult>((resolve) => {
    child.once('exit', (code, signal) => {
      exited = true;
      clearTimeout(bootTimer);
      if (killTimer) clearTimeout(killTimer);
      stdout.end();
      stderr.end();
      machine.abandon();
      killGroup(); // anything QEMU left in its group
      const how = signal ? `signal ${signal}` : `exit code ${code}`;
      const final: MicroVmResult = result ?? {
        status: stopping ? 'stopped' : 'failed',
        reason:
          fatal ??
          (stopping ? 'stopped before the task finished' : `QEMU exited (${how}) before the task finished`),
      };
      log(
        'vm',
        'system',
        0,
        `microVM exited (${how}): ${final.status}${final.reason ? ` (${final.reason})` : ''}`,
      );
      cleanup().then(
        () => resolve(final),
        () => resolve(final),
      );
    });
  });

  let stopping = false;
  const stop = async () => {
    if (!exited && !stopping) {
      stopping = true;
      if (!ready) {
        killGroup(); // nothing has run yet; no clean shutdown to wait for
      } else {
        machine.stop('stopped');
        const finals = o.task.processes.some((p) => p.final) ? o.task.finalization_wait * 1000 : 0;
        killAfter(grace + finals + SHUTDOWN_MARGIN_MS);
      }
    }
    await done;
  };
  return { pid, done, stop, processes: () => machine.view().processes };
}
