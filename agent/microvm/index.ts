/**
 * microVM workloads: a task's processes run inside a QEMU microvm whose /nix/store holds only the
 * job's closure. This is the module's public surface; the agent daemon calls only these.
 */

export type { ProcessView as ProcessReport } from '../thermos/machine.js';
export { type MicroVmAssets, type PrepareOptions, prepareMicroVmAssets, readCached } from './assets.js';
export { detectHypervisor, type Hypervisor, keptKvmVerdict, kvmBootsKernel } from './hypervisor.js';
export { type MicroVmHandle, type MicroVmOptions, type MicroVmResult, startMicroVm } from './start.js';
