/**
 * microVM start-up cost: QEMU start → first line of output from a store script in the guest
 * (median of 5), next to the same closure started as a plain process. Anchor: Firecracker boots
 * to init in ≤ 125 ms with KVM; here KVM is usually unusable and the guest runs under TCG.
 */

import { spawn } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { loadavg, tmpdir } from 'node:os';
import { join } from 'node:path';
import {
  detectHypervisor,
  kvmBootsKernel,
  prepareMicroVmAssets,
  startMicroVm,
} from '../agent/microvm/index.js';
import { closureOf, nixBuild } from '../lib/nix.js';
import { repoPath } from '../scheduler/paths.js';
import { Task } from '../spec/job.js';

const RUNS = 5;
// From the repository root, not this file: the bench runs compiled from dist/bench.
const CACHE = process.env.MXC_MICROVM_CACHE ?? repoPath('.mxc', 'microvm-assets');
const FIXTURE = repoPath('test', 'microvm', 'fixtures', 'scripts.nix');

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.floor(s.length / 2)]!;
}

/**
 * Milliseconds from spawning the script as a plain process to its first stdout line. It runs in a
 * folder of its own (what it writes stays there), removed once it exited.
 */
function plainFirstLine(script: string): Promise<number> {
  const dir = mkdtempSync(join(tmpdir(), 'mxc-bench-plain-'));
  return new Promise((resolve, reject) => {
    const t0 = performance.now();
    const child = spawn(script, [], { stdio: ['ignore', 'pipe', 'ignore'], cwd: dir });
    child.stdout.once('data', () => resolve(performance.now() - t0));
    child.once('error', reject);
    child.once('close', () => rmSync(dir, { recursive: true, force: true }));
  });
}

/**
 * CPU time (user + system, ms) QEMU has used so far: the boot's own cost, which unlike wall time
 * does not grow when other work shares the machine's cores.
 */
function cpuMs(pid: number): number {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    return ((Number(f[11]) + Number(f[12])) * 1000) / 100; // clock ticks of 10 ms (USER_HZ 100)
  } catch {
    return Number.NaN;
  }
}

async function vmFirstLine(
  script: string,
  closure: string[],
  assets: Awaited<ReturnType<typeof prepareMicroVmAssets>>,
) {
  const workDir = await mkdtemp(join(tmpdir(), 'mxc-microvm-bench-'));
  try {
    const t0 = performance.now();
    let first = 0;
    let ready = 0;
    let readyCpu = 0;
    let pid = 0;
    const vm = await startMicroVm({
      assets,
      storeDir: '/nix/store',
      closure,
      workDir,
      task: Task.parse({ name: 'bench', processes: [{ name: 'probe', cmdline: script }] }),
      env: {},
      cpus: 1,
      memoryMb: 256,
      onLog: (l) => {
        if (l.process === 'vm' && l.line === 'guest ready' && !ready) {
          ready = performance.now() - t0;
          readyCpu = cpuMs(pid);
        }
        if (l.process === 'probe' && l.stream === 'stdout' && !first) first = performance.now() - t0;
      },
    });
    pid = vm.pid;
    await vm.done;
    return { first, ready, readyCpu, total: performance.now() - t0 };
  } finally {
    await rm(workDir, { recursive: true, force: true });
  }
}

export async function main(): Promise<void> {
  const hv = await detectHypervisor();
  if (!hv.qemu) {
    console.log('microvm: skipped (qemu-system-x86_64 is not installed)');
    return;
  }
  const assets = await prepareMicroVmAssets(CACHE, { onProgress: (m) => console.log(`microvm: ${m}`) });
  const [probe] = await nixBuild([FIXTURE, '-A', 'probe']);
  const closure = await closureOf([probe!]);
  // What startMicroVm will choose: KVM only when it really boots this kernel.
  const accel = hv.kvm && (await kvmBootsKernel(assets.kernel)) ? 'kvm' : 'tcg';

  const plain: number[] = [];
  for (let i = 0; i < RUNS; i++) plain.push(await plainFirstLine(probe!));
  const vm: { first: number; ready: number; readyCpu: number; total: number }[] = [];
  for (let i = 0; i < RUNS; i++) vm.push(await vmFirstLine(probe!, closure, assets));

  const vmFirst = median(vm.map((r) => r.first));
  const plainFirst = median(plain);
  console.log(`microvm (${accel}, kernel ${assets.kernelRelease}), median of ${RUNS}:`);
  console.log(`  plain process: start → first output  ${plainFirst.toFixed(1)} ms`);
  console.log(`  microVM:       QEMU start → init ready ${median(vm.map((r) => r.ready)).toFixed(0)} ms`);
  console.log(
    `  microVM:       QEMU start → first output ${vmFirst.toFixed(0)} ms (${(vmFirst / plainFirst).toFixed(0)}× plain)`,
  );
  console.log(`  microVM:       start → powered off ${median(vm.map((r) => r.total)).toFixed(0)} ms`);
  console.log(
    `  microVM:       QEMU CPU time until init ready ${median(vm.map((r) => r.readyCpu)).toFixed(0)} ms ` +
      `(load average ${loadavg()[0]!.toFixed(1)} on this machine: wall time grows with it, CPU time does not)`,
  );
  console.log('  anchor: Firecracker boots to init in ≤ 125 ms with KVM');
}
