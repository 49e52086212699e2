/**
 * Connects the agent daemon to the microVM runner: hypervisor detection for the node's capabilities,
 * and running an assigned workload's task in a QEMU microVM (assets prepared once and cached).
 */
import os from 'node:os';
import { join } from 'node:path';
import { DEFAULT_RESOURCES } from '../spec/job.js';
import {
  detectHypervisor,
  keptKvmVerdict,
  prepareMicroVmAssets,
  readCached,
  startMicroVm,
} from './microvm/index.js';
import type { MicroVmSupport } from './options.js';

/** Kernel and initramfs are shared by every agent on the machine. */
export function microVmAssetDir(): string {
  return (
    process.env.MXC_MICROVM_ASSETS ??
    join(process.env.XDG_CACHE_HOME ?? join(os.homedir(), '.cache'), 'mxc', 'microvm')
  );
}

export function microVmSupport(_stateDir: string): MicroVmSupport {
  return {
    async detect() {
      const hv = await detectHypervisor();
      if (!hv.kvm) return { qemu: hv.qemu, kvm: false };
      // KVM opens; whether it boots the microVM kernel is known once a microVM has been started on
      // this host since its boot (see kvmBootsKernel): report that verdict when there is one.
      const assets = await readCached(microVmAssetDir());
      const kept = assets ? await keptKvmVerdict(assets.kernel) : undefined;
      return { qemu: hv.qemu, kvm: kept ?? true };
    },
    async run(args) {
      const assets = await prepareMicroVmAssets(microVmAssetDir(), {
        onProgress: (msg) =>
          args.onLog({ process: 'mxc', stream: 'system', run: 0, ts: Date.now(), line: msg }),
      });
      const r = args.assignment.spec.task.resources ?? DEFAULT_RESOURCES;
      const vm = await startMicroVm({
        assets,
        storeDir: args.storeDir,
        closure: args.closure,
        workDir: args.workDir,
        task: args.assignment.spec.task,
        env: args.env,
        cpus: Math.max(1, Math.ceil(r.cpu)),
        memoryMb: Math.max(128, Math.ceil(r.ram / 1048576)),
        ports: args.ports,
        onLog: args.onLog,
        gracePeriodMs: args.gracePeriodMs,
      });
      return {
        done: vm.done.then((res) => ({
          status: res.status,
          reason: res.reason,
          processes: vm.processes().map((p) => ({ ...p, pid: null })),
        })),
        stop: () => vm.stop(),
      };
    },
  };
}
